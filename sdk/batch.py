"""``run_batch``: label every image of folders or globs; resumable; in-process or on a Ray cluster
(the library behind ``clipsam batch``, ``clipsam.cli.batch``).

Outputs mirror the input tree: ``photos/a/b.jpg`` -> ``labels/a/b_labels.png``, ``b_overlay.png``, ``b.json``
(``b_instances.json`` with --refine). Each image's files are written with the summary JSON last and atomically, so
an image whose JSON exists is complete: a rerun skips it and finishes the rest (nothing redone twice, nothing
lost). An unreadable image is reported with its path (stderr and ``batch_report.json``) and the run goes on; the
exit code is 1 when an image failed. Both modes run the same ``clipsam.integrations.ray.SegmentImages`` code;
on Ray, every actor builds its own segmenter from the same options and writes to ``--out`` itself (on several
machines, ``--out`` and the inputs must be on a shared file system).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from .config import positive_int
from .errors import ConfigError, Interrupted, OutputError, first_line
from .inputs import expand_inputs
from .paths import output_dir
from .result import written_for


def pending_rows(rows: list[dict], out: Path) -> list[dict]:
    """The rows not done yet under ``out``: no summary JSON of their output name, or one that records another
    image (``result.written_for``). Output names depend on the other inputs (``a.png`` is ``a`` alone, ``a_png``
    beside an ``a.jpg``), so a name alone does not say which image a previous run wrote there; that image is then
    segmented again."""
    return [r for r in rows if written_for(out, r["name"], r["path"]) is not True]


def run_batch(
    inputs: list[str],
    out,
    *,
    segmenter=None,
    model: dict | None = None,
    engines: str | None = None,
    engine_options: dict | None = None,
    classes=None,
    class_file: str | None = None,
    ray=False,
    actors: int = 1,
    gpus_per_actor: float = 0,
    batch_size: int = 8,
    progress: bool = True,
    log=None,
    mask_dir=None,
    decode_workers: int | None = None,
) -> dict:
    """Segment every input image that has no output yet; returns the report (also written to batch_report.json).

    Arguments:
        inputs: folders (recursive), image files or glob patterns.
        out: output folder (mirrors the input tree).
        segmenter / model / engines (+ engine_options): how to build the segmenter (``SegmentImages``); on Ray
            ``segmenter`` must be a picklable zero-argument callable.
        ray: False (in this process), True or None (a local Ray cluster, or the one ``RAY_ADDRESS`` names), or an
            address ("auto", "ray://host:10001").
        actors, gpus_per_actor: Ray actors and GPUs per actor.
        batch_size: images per segmenter call.
        decode_workers: in-process runs: threads that read and decode the next chunk's images while the current
            one is segmented (``clipsam.prefetch.decode_workers``: default 2 with a GPU model, else 0). Ray Data
            pipelines reading itself.
        mask_dir: ``method="corrclip"``: the folder of each image's region masks (``clipsam.mask_files``, same
            names as the outputs); every pending image must have one, checked before any model loads.

    Returns:
        {"total", "skipped", "done", "failed", "failures": [{"path", "error"}], "seconds", "images_per_s", "mode",
        "interrupted"}. On Ctrl-C the report (``interrupted: true``) is written and ``clipsam.errors.Interrupted``
        (a KeyboardInterrupt saying what was finished and how to resume) is raised.
    """
    from .integrations.ray import SegmentImages

    positive_int(batch_size, "batch_size")
    positive_int(actors, "actors")
    if decode_workers is not None:
        if ray is not False:
            raise ConfigError("decode_workers applies to in-process runs; on Ray, Ray Data reads ahead itself")
        from .prefetch import decode_workers as workers_for

        workers_for(decode_workers, False)  # a bad value fails now, before the segmenter loads
    log = log or (lambda msg: print(msg, file=sys.stderr))
    rows = [{"path": im.path, "name": im.name} for im in expand_inputs(inputs, out=out)]
    out = output_dir(out, "output folder")  # a file, a read-only or unwritable place: now, before any image is done
    todo = pending_rows(rows, out)
    if mask_dir is not None:
        from .mask_files import require_mask_files

        mask_dir = str(require_mask_files(mask_dir, [r["name"] for r in todo], "mask_dir"))
    for stale in out.rglob(".partial-*"):  # left by an interrupted run (one run per output folder at a time)
        shutil.rmtree(stale, ignore_errors=True)
    kwargs = dict(
        segmenter=segmenter,
        model=model,
        engines=engines,
        engine_options=engine_options,
        classes=classes,
        class_file=class_file,
        out_dir=str(out),
        mask_dir=mask_dir,
    )
    failures, done = [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), initial=len(rows) - len(todo), unit="img", desc="clipsam batch")
    t0 = time.perf_counter()
    interrupted = False
    try:
        for row in _results(todo, kwargs, ray, actors, gpus_per_actor, batch_size, SegmentImages, decode_workers):
            if row["ok"]:
                done += 1
            else:
                failures.append({"path": row["path"], "error": row["error"]})
                (bar.write if bar is not None else log)(f"clipsam batch: {row['path']}: {row['error']}")
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    report = {
        "total": len(rows),
        "skipped": len(rows) - len(todo),
        "done": done,
        "failed": len(failures),
        "failures": failures,
        "seconds": round(dt, 3),
        "images_per_s": round(done / dt, 4) if dt > 0 else None,
        "mode": "in-process" if ray is False else f"ray ({actors} actor(s))",
        "interrupted": interrupted,
    }
    _write_report(out, report)
    if interrupted:
        raise Interrupted(
            f"{done} image(s) were segmented and saved in {out} in this run ({report['skipped']} were done before, "
            f"{len(failures)} failed); {len(todo) - done - len(failures)} were not. Run the same command again to "
            "continue: finished images are skipped."
        )
    return report


def _write_report(out: Path, report: dict) -> None:
    try:
        (out / "batch_report.json").write_text(json.dumps(report, indent=2))
    except OSError as e:
        raise OutputError(
            f"cannot write {out / 'batch_report.json'} ({first_line(e)}); {report['done']} image(s) "
            f"were segmented and saved, {report['failed']} failed."
        ) from e


def _decoded(chunk: list[dict]) -> dict:
    """A batch of rows with each image decoded (or its path where decoding failed: the mapper then reads it again
    and reports the same error for that row alone)."""
    from .preprocess import load_image

    images: list = []
    for r in chunk:
        try:
            images.append(load_image(r["path"], what=f"image {r['path']}"))
        except Exception:  # noqa: BLE001 - the mapper re-raises and reports it per row
            images.append(r["path"])
    return {"path": [r["path"] for r in chunk], "name": [r["name"] for r in chunk], "image": images}


def _results(todo, kwargs, ray, actors, gpus, batch_size, mapper_cls, decode_workers=None):
    """Yield one {"path", "ok", "error"} per pending row, in this process or from Ray Data."""
    if not todo:
        return
    if ray is False:
        from .prefetch import decode_workers as workers_for
        from .prefetch import prefetched

        mapper = mapper_cls(**kwargs)
        workers = workers_for(decode_workers, mapper.segmenter._runs_on_gpu())
        chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        batches = (
            prefetched(_decoded, chunks, 1, workers)
            if workers
            else ({"path": [r["path"] for r in c], "name": [r["name"] for r in c]} for c in chunks)
        )
        for chunk in batches:
            res = mapper(chunk)
            yield from (
                {"path": p, "ok": bool(ok), "error": e} for p, ok, e in zip(res["path"], res["ok"], res["error"])
            )
        return
    from .integrations.ray import require_ray, segment_dataset

    rt = require_ray()
    if not rt.is_initialized():
        rt.init(address=None if ray is True or ray is None else ray, log_to_driver=False, configure_logging=False)
    ctx = rt.data.DataContext.get_current()  # clipsam's own bar and failure lines instead of Ray Data's progress logs
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = rt.data.from_items(todo)
    mapped = segment_dataset(ds, concurrency=actors, num_gpus=gpus, batch_size=batch_size, **kwargs)
    for row in mapped.select_columns(["path", "ok", "error"]).iter_rows():
        yield {"path": str(row["path"]), "ok": bool(row["ok"]), "error": str(row["error"])}
