"""Dataset-level evaluation of a segmenter: resumable, with JSON and Markdown reports.

``evaluate(segmenter, dataset, out_path)`` segments every sample with the dataset's own vocabulary,
accumulates ``SegmentationMetric`` and writes ``out_path`` (JSON) and ``out_path`` with suffix ``.md``.
Every ``save_every`` images, and when interrupted or stopped by an error, the state so far (metric
counts, names of the images done, the run's configuration) goes atomically to ``<out stem>.partial.json``;
the next run with the same configuration continues from it, so no image is segmented twice.

The segmenter is a ``clipsam.Segmenter`` or any object with the same ``segment(image, classes=None)``
and ``config`` (a ``DenseConfig``); ``arch``, ``weights_id``, ``precision`` and ``device`` are read when present.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidImageError, InvalidInputError
from ..paths import output_file
from ..vocabulary import Vocabulary, builtin_vocabulary
from .datasets import Dataset, DatasetNotFoundError, Sample
from .machine import machine_info, versions
from .metrics import MetricResult, SegmentationMetric
from .published import backbone_of, published

_PARTIAL_FORMAT = "clipsam.eval.partial"
_REPORT_FORMAT = "clipsam.eval.report"
_BAD_SAMPLE = (InvalidImageError, DatasetNotFoundError, FileNotFoundError)  # per-file problems --skip-bad may skip


def report_path(out_path, what: str = "out_path") -> Path:
    """``out_path`` checked as the JSON report's path: writable (``paths.output_file``), and not a name that the
    Markdown report (``.md`` beside it) or the partial state (``.partial.json``) would overwrite."""
    path = output_file(out_path, what)
    partial = path.name.lower().endswith(".partial.json")
    if partial or path.suffix.lower() == ".md":
        stem = path.name[: -len(".partial.json")] if partial else path.stem
        raise ConfigError(
            f"{what} {str(out_path)!r} names the JSON report, which gets a Markdown report beside it ({stem}.md) "
            f"and, while running, a partial state ({stem}.partial.json): this name would be overwritten by one of "
            f"them. Give the JSON file, e.g. {what} {path.with_name(stem + '.json')}"
        )
    return path


def partial_path(out_path) -> Path:
    """Where the partial state of a run writing ``out_path`` lives: ``results.json`` -> ``results.partial.json``."""
    return Path(out_path).with_suffix(".partial.json")


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: tuples become lists, NaN/inf floats become None, numpy scalars become Python ones."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _run_config(segmenter, dataset: Dataset, classes) -> dict[str, Any]:
    """What the results depend on; a partial state is resumed only when this matches exactly."""
    cfg = segmenter.config
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    return _jsonable(
        {
            "dataset": dataset.spec.name,
            "split": dataset.split,
            "root": str(Path(dataset.root).resolve()),
            "backend": f"{type(segmenter).__module__}.{type(segmenter).__qualname__}",
            "clip": getattr(segmenter, "arch", None),
            "weights": getattr(segmenter, "weights_id", None),
            "precision": getattr(segmenter, "precision", None),
            "classes": classes,
            "config": cfg_dict,
            **({"prompts": segmenter.prompt_info} if getattr(segmenter, "prompt_info", None) is not None else {}),
        }
    )


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(prefix + k)
    return keys


def _class_groups(classes) -> list[list[str]]:
    """Explicit classes (names, synonym lists or "a, b, c") as one list of synonyms per class."""
    vocab = Vocabulary.from_names(classes)
    groups: list[list[str]] = [[] for _ in vocab.classes]
    for query, c in zip(vocab.queries, vocab.query_to_class):
        groups[c].append(query)
    return groups


def check_classes(dataset: Dataset, classes) -> list[list[str]] | None:
    """Explicit classes as synonym groups, one per label index of ``dataset`` (``ConfigError`` otherwise); None stays
    None. Cheap: the CLI calls it before building a segmenter."""
    if classes is None:
        return None
    groups = _class_groups(classes)
    spec = dataset.spec
    if len(groups) != spec.num_classes:
        raise ConfigError(
            f"{len(groups)} classes were given, but '{spec.name}' scores {spec.num_classes} classes; give one "
            "class per label index, in label order."
        )
    return groups


def _check_vocabulary(segmenter, dataset: Dataset, classes: list[list[str]] | None) -> tuple[str, ...]:
    """The class names of the report; raises unless the segmenter's vocabulary is the dataset's."""
    spec = dataset.spec
    groups = check_classes(dataset, classes)
    if groups is not None:
        return tuple(g[0] for g in groups)
    vocab = getattr(segmenter.config, "vocabulary", None)
    if vocab not in (spec.name, f"{spec.name}_plain", f"{spec.name}_corrclip"):
        raise ConfigError(
            f"the segmenter's vocabulary is {vocab!r}, but dataset '{spec.name}' needs '{spec.name}' (or its "
            f"'{spec.name}_plain' / '{spec.name}_corrclip' variant, which the ClearCLIP family and CorrCLIP use): "
            f"build it with preset='{spec.name}', or pass the dataset's classes explicitly."
        )
    return builtin_vocabulary(f"{spec.name}_plain").classes


def _bad_sample_error(e: Exception, path: Path) -> Exception:
    return e if str(path) in str(e) else InvalidImageError(f"{path}: {e}")


@dataclass
class EvalReport:
    """The outcome of ``evaluate``: dataset-level metrics and everything needed to reproduce them."""

    dataset: str
    split: str
    metric: MetricResult
    class_names: tuple[str, ...]
    config: dict[str, Any]  # the run configuration (dataset, backend, clip, weights, DenseConfig fields)
    versions: dict[str, Any]
    machine: dict[str, Any]
    timing: dict[str, Any]  # wall_s, segment_s, images_per_s, ms_per_image, resumed_images
    images: int  # images scored
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"name", "path", "error"}
    json_path: Path | None = None
    md_path: Path | None = None

    @property
    def summary(self) -> dict[str, float]:
        return self.metric.summary()

    def published(self) -> list[dict[str, Any]]:
        cfg = self.config["config"]
        ours = backbone_of(self.config.get("clip"))
        return [
            dict(
                source=r.citation,
                backbone=r.backbone,
                setting=r.setting,
                mIoU=r.miou,
                same_backbone=r.backbone == ours,
                same_preset=cfg.get("preset") == self.dataset,
            )
            for r in published(cfg.get("method", ""), self.dataset)
        ]

    def to_dict(self) -> dict[str, Any]:
        m = self.metric
        per_class = [
            dict(name=n, IoU=float(i) * 100, Acc=float(a) * 100, area_label=int(al), area_pred=int(ap))
            for n, i, a, al, ap in zip(self.class_names, m.iou, m.acc, m.area_label, m.area_pred_label)
        ]
        return _jsonable(
            {
                "format": _REPORT_FORMAT,
                "version": 1,
                "dataset": self.dataset,
                "split": self.split,
                "mIoU": m.mIoU,
                "aAcc": m.aAcc,
                "mAcc": m.mAcc,
                "per_class": per_class,
                "published": self.published(),
                "config": self.config,
                "versions": self.versions,
                "machine": self.machine,
                "timing": self.timing,
                "images": self.images,
                "skipped": self.skipped,
            }
        )

    def to_markdown(self) -> str:
        cfg, m = self.config, self.metric
        dense = cfg["config"]

        def pct(v: float) -> str:
            return "nan" if v is None or math.isnan(v) else f"{v:.2f}"

        lines = [
            f"# clipsam evaluation: {self.dataset} ({self.split})",
            "",
            f"Method **{dense.get('method')}**, preset {dense.get('preset')}, CLIP {cfg.get('clip')} "
            f"(weights {cfg.get('weights')}), {cfg.get('precision')}, backend `{cfg.get('backend')}`. "
            f"{self.images} images scored, {len(self.skipped)} skipped; "
            f"{self.timing['images_per_s']:.2f} img/s ({self.timing['ms_per_image']:.0f} ms per image).",
            "",
            "| mIoU | mAcc | aAcc |",
            "|---:|---:|---:|",
            f"| {pct(m.mIoU)} | {pct(m.mAcc)} | {pct(m.aAcc)} |",
            "",
            "## Published mIoU (the methods' READMEs)",
            "",
        ]
        rows = self.published()
        if rows:
            lines += ["| Source | Backbone | Setting | mIoU | ours - published |", "|---|---|---|---:|---:|"]
            for r in rows:
                bb = r["backbone"] + (" (ours)" if r["same_backbone"] else "")
                delta = m.mIoU - r["mIoU"] if not math.isnan(m.mIoU) else math.nan
                lines.append(f"| {r['source']} | {bb} | {r['setting'] or '-'} | {r['mIoU']:.2f} | {pct(delta)} |")
            if not rows[0]["same_preset"]:
                lines += ["", f"Note: preset {dense.get('preset')!r} is not the dataset's own; not comparable."]
        else:
            lines.append(f"No published number for method {dense.get('method')!r} on {self.dataset}.")
        lines += ["", "## Per class", "", m.per_class_table(self.class_names), ""]
        if self.skipped:
            lines += ["## Skipped samples", ""] + [f"- `{s['path']}`: {s['error']}" for s in self.skipped] + [""]
        lines += [
            "## Configuration",
            "",
            "```json",
            json.dumps(cfg, indent=1),
            "```",
            "",
            "## Versions and machine",
            "",
            "```json",
            json.dumps({"versions": self.versions, "machine": self.machine, "timing": self.timing}, indent=1),
            "```",
            "",
        ]
        return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    """Write atomically: a temporary file in the same folder, then one rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _load_partial(path: Path, run_config: dict, names: set[str]) -> dict:
    try:
        state = json.loads(path.read_text())
        if state.get("format") != _PARTIAL_FORMAT:
            raise ValueError("not a clipsam partial-results file")
        metric = SegmentationMetric.from_dict(state["metric"])
        done = list(state["done"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(
            f"cannot resume from {path}: {e}. Delete it, or run with --no-resume (resume=False) to start over."
        ) from e
    differs = _diff_keys(state.get("run_config", {}), run_config)
    if differs:
        raise ConfigError(
            f"partial results in {path} come from a different configuration (differs in: {', '.join(differs[:8])}). "
            "Delete it, or run with --no-resume (resume=False) to start over."
        )
    outside = [n for n in done if n not in names]
    if outside or metric.num_images != len(done):
        raise InvalidInputError(
            f"partial results in {path} do not match this run's samples ({len(outside)} done images are not among "
            f"them, e.g. {outside[:3]}; a smaller limit?). Delete it, or run with --no-resume (resume=False)."
        )
    return dict(metric=metric, done=done, elapsed=state.get("elapsed", {}))


def evaluate(
    segmenter,
    dataset: Dataset,
    out_path,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    resume: bool = True,
    classes: Sequence | None = None,
    save_every: int = 10,
) -> EvalReport:
    """Segment every sample of ``dataset`` and score the predictions at dataset level.

    Arguments:
        segmenter: ``clipsam.Segmenter`` (or same API) built with the dataset's preset vocabulary.
        dataset: from ``open_dataset``.
        out_path: the JSON report; the Markdown report goes beside it (``.md``), the partial state to
            ``partial_path(out_path)`` while running (removed at the end).
        limit: score only the first ``limit`` samples.
        skip_bad: skip (and report) samples whose image or label is missing or unreadable; otherwise
            such a sample raises an error naming its path.
        progress: show a tqdm bar with the running mIoU and images/s (on stderr).
        resume: continue from the partial state of an interrupted run with the same configuration.
        classes: explicit classes (one name or synonym list per label index, or "a, b, c") instead of the
            segmenter's preset vocabulary.
        save_every: images between two saves of the partial state.

    Returns:
        EvalReport (also written to ``out_path`` and its ``.md`` sibling).
    """
    out_path = report_path(out_path)
    classes = None if classes is None else _class_groups(classes)
    class_names = _check_vocabulary(segmenter, dataset, classes)
    samples: list[Sample] = list(dataset.samples[:limit])
    run_config = _run_config(segmenter, dataset, classes)
    part = partial_path(out_path)
    metric, done, elapsed = SegmentationMetric(dataset.spec.num_classes, dataset.spec.ignore_index), [], {}
    if resume and part.is_file():
        state = _load_partial(part, run_config, {s.name for s in samples})
        metric, done, elapsed = state["metric"], state["done"], state["elapsed"]
    resumed, skipped = len(done), []
    wall0, seg_s = float(elapsed.get("wall_s", 0.0)), float(elapsed.get("segment_s", 0.0))
    t_start = time.perf_counter()

    def save() -> None:
        _write_json(
            part,
            {
                "format": _PARTIAL_FORMAT,
                "version": 1,
                "run_config": run_config,
                "metric": metric.to_dict(),
                "done": done,
                "elapsed": {"wall_s": wall0 + time.perf_counter() - t_start, "segment_s": seg_s},
            },
        )

    from tqdm.auto import tqdm

    done_set = set(done)
    todo = [s for s in samples if s.name not in done_set]
    bar = tqdm(
        total=len(samples),
        initial=len(done),
        disable=not progress,
        unit="img",
        desc=dataset.spec.name,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        for i, sample in enumerate(todo):
            try:
                gt = dataset.load_label(sample)
                t0 = time.perf_counter()
                res = segmenter.segment(str(sample.image_path), classes=classes)
                seg_s += time.perf_counter() - t0
                pred = np.asarray(res.labels)
                if pred.shape != gt.shape:
                    raise InvalidImageError(
                        f"image {sample.image_path} is {pred.shape[0]}x{pred.shape[1]} but its label "
                        f"{sample.label_path} is {gt.shape[0]}x{gt.shape[1]}"
                    )
            except _BAD_SAMPLE as e:
                path = sample.label_path if str(sample.label_path) in str(e) else sample.image_path
                if not skip_bad:
                    raise _bad_sample_error(e, path) from e
                skipped.append({"name": sample.name, "path": str(path), "error": str(e)})
                bar.update(1)
                continue
            metric.update(pred, gt)
            done.append(sample.name)
            bar.update(1)
            if progress:
                rate = (len(done) - resumed) / max(time.perf_counter() - t_start, 1e-9)
                miou = metric.compute().mIoU
                bar.set_postfix_str(
                    f"mIoU {miou:.2f}  {rate:.2f} img/s" if not math.isnan(miou) else f"{rate:.2f} img/s"
                )
            if (i + 1) % save_every == 0:
                save()
    except BaseException:
        save()  # interrupted or stopped by an error: keep what is done
        raise
    finally:
        bar.close()
    wall = wall0 + time.perf_counter() - t_start
    n = len(done)
    report = EvalReport(
        dataset=dataset.spec.name,
        split=dataset.split,
        metric=metric.compute(),
        class_names=tuple(class_names),
        config={**run_config, "device": str(getattr(segmenter, "device", "")), "limit": limit},
        versions=versions(),
        machine=machine_info(),
        timing={
            "wall_s": wall,
            "segment_s": seg_s,
            "images_per_s": n / wall if wall > 0 else 0.0,
            "ms_per_image": 1000 * seg_s / n if n else 0.0,
            "resumed_images": resumed,
        },
        images=n,
        skipped=skipped,
        json_path=out_path,
        md_path=out_path.with_suffix(".md"),
    )
    _write_json(out_path, report.to_dict())
    out_path.with_suffix(".md").write_text(report.to_markdown())
    part.unlink(missing_ok=True)
    return report
