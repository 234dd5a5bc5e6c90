"""clipsam on Ray Data: a callable class for ``Dataset.map_batches`` that loads a segmenter once per actor.

    import ray
    from clipsam.integrations.ray import SegmentImages, segment_dataset

    ds = ray.data.from_items([{"path": p} for p in paths])
    out = segment_dataset(ds, model=dict(clip="ViT-B-16", clip_weights="openai", method="resclip", preset="voc21",
                                         device="cuda"), concurrency=4, num_gpus=1)
    # or: ds.map_batches(SegmentImages, fn_constructor_kwargs=dict(model=...), concurrency=4, num_gpus=1,
    #                    batch_size=8)

Input columns: ``path`` (image files) or ``image`` (HxWx3 / HxW / HxWx4 arrays, e.g. from
``ray.data.read_images(..., include_paths=True)``: then ``path`` only names the rows); an optional ``name`` column
gives the output stem when writing files (default: the file name's stem; a row whose stem already names another
image's outputs in ``out_dir`` then fails rather than overwrite them, so files of one name in several folders need
a ``name`` column; with neither ``path`` nor ``name``, ``out_dir`` is refused). Output columns, one row per input
row, in order:

    ok (bool), error (str, "" when ok), path or index, and either
    labels (H, W) int32, scores (H, W) float32, classes (JSON list), instances (JSON, COCO RLE; "[]" without SAM2)
    or, with ``out_dir``: outputs (JSON list of the files written, ``<name>_labels.png``, ``<name>_overlay.png``,
    ``<name>.json``, ``<name>_instances.json`` with SAM2), the summary JSON written last and atomically.

A row whose image cannot be read or segmented gets ``ok=False`` and the error; the batch goes on. Each actor
builds its segmenter from ``model`` (``Segmenter.from_pretrained`` keyword arguments), ``engines`` (an engine
folder for ``Segmenter.from_engines``, with ``engine_options``) or ``segmenter`` (any picklable zero-argument
callable returning a segmenter). Ray itself is only needed by ``segment_dataset`` (``pip install 'clipsam[ray]'``);
``SegmentImages`` runs without it, which is how ``clipsam batch`` runs in-process with the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ClipSamError, ConfigError, missing_dependency
from ..result import save_atomic, written_for

__all__ = ["SegmentImages", "segment_dataset", "require_ray"]


def require_ray():
    """Import Ray Data, or raise naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise missing_dependency(
            "ray", "ray", "Running clipsam on Ray (clipsam.integrations.ray, clipsam batch --ray)"
        ) from None
    return ray


class SegmentImages:
    """``map_batches`` callable: segment a batch of rows with a segmenter built once per actor (see module doc).

    Arguments:
        model: keyword arguments of ``clipsam.Segmenter.from_pretrained``.
        engines: engine folder (``clipsam export``) for ``Segmenter.from_engines``; ``engine_options`` its kwargs.
        segmenter: zero-argument callable returning a segmenter (picklable for Ray).
        classes, class_file: the vocabulary (default: the preset's).
        out_dir: write label PNGs, overlays and JSON there instead of returning arrays.
        mask_dir: ``method="corrclip"``: a folder with each row's region masks, found by the row's ``name``
            (``clipsam.mask_files``); a row whose mask file is missing or unreadable fails alone.
    """

    def __init__(
        self,
        *,
        model: dict | None = None,
        engines: str | None = None,
        engine_options: dict | None = None,
        segmenter=None,
        classes=None,
        class_file: str | None = None,
        out_dir: str | None = None,
        mask_dir: str | None = None,
    ):
        given = [x is not None for x in (model, engines, segmenter)]
        if sum(given) != 1:
            raise ConfigError(
                "SegmentImages needs exactly one of model={...from_pretrained kwargs}, engines=FOLDER "
                "or segmenter=<callable returning a segmenter>"
            )
        if out_dir is not None:
            from ..paths import output_dir

            output_dir(out_dir, "out_dir")  # before the segmenter loads
        if segmenter is not None:
            self.segmenter = segmenter()
        elif engines is not None:
            from ..segmenter import Segmenter

            self.segmenter = Segmenter.from_engines(engines, **(engine_options or {}))
        else:
            from ..segmenter import Segmenter

            self.segmenter = Segmenter.from_pretrained(**(model or {}))
        self.vocab = self.segmenter.vocabulary(classes, class_file)  # validated once, before the first batch
        self.classes = self.vocab  # every batch uses exactly this vocabulary (synonyms included)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.mask_dir = mask_dir

    def __call__(self, batch: dict) -> dict:
        from ..preprocess import load_image

        if "image" in batch:  # decoded already (e.g. ray.data.read_images); a path column then only names rows
            sources = list(batch["image"])
        elif "path" in batch:
            sources = [str(p) for p in batch["path"]]
        else:
            raise ConfigError(f"a batch needs a 'path' or an 'image' column; got columns {sorted(batch)}")
        keys = [str(p) for p in batch["path"]] if "path" in batch else list(range(len(sources)))
        if self.out_dir is not None and "path" not in batch and "name" not in batch:
            raise ConfigError(
                "out_dir needs each row's output name: a 'path' column (e.g. ray.data.read_images(..., "
                "include_paths=True)) or a 'name' column; row numbers restart with every batch, so outputs named "
                "after them would overwrite each other"
            )
        stems = "name" not in batch  # output names from the file names alone: two folders may share one
        names = (
            [str(n) for n in batch["name"]]
            if "name" in batch
            else [Path(k).stem if isinstance(k, str) else f"image_{k}" for k in keys]
        )
        n = len(keys)
        errors = [""] * n
        rgbs: dict[int, np.ndarray] = {}
        for i, src in enumerate(sources):
            try:
                rgbs[i] = load_image(src, what=f"image {keys[i]}")
            except (ClipSamError, OSError, ValueError, TypeError) as e:
                errors[i] = f"{type(e).__name__}: {e}"
        masks = self._masks(rgbs, names, errors)
        results = self._segment(rgbs, errors, masks)
        out = {"ok": np.array([not e for e in errors]), "error": np.array(errors, dtype=object)}
        out["path" if isinstance(keys[0], str) else "index"] = np.array(keys, dtype=object)
        if self.out_dir is not None:
            written = []
            for i in range(n):
                files: list[str] = []
                if i in results:
                    files, errors[i] = _write(results[i], keys[i], names[i], self.out_dir, stems)
                    if errors[i]:
                        out["ok"][i], out["error"][i] = False, errors[i]
                written.append(json.dumps(files))
            out["outputs"] = np.array(written, dtype=object)
            return out
        empty_l, empty_s = np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
        out["labels"] = _objects([results[i].labels if i in results else empty_l for i in range(n)])
        out["scores"] = _objects([results[i].scores if i in results else empty_s for i in range(n)])
        out["classes"] = np.array(
            [json.dumps(list(results[i].classes)) if i in results else "[]" for i in range(n)], dtype=object
        )
        out["instances"] = np.array(
            [json.dumps(results[i].instances_json()) if i in results else "[]" for i in range(n)], dtype=object
        )
        return out

    def _masks(self, rgbs: dict, names: list[str], errors: list) -> dict | None:
        """Each readable row's region masks from ``mask_dir`` (rows whose file fails are dropped from ``rgbs``)."""
        if self.mask_dir is None:
            return None
        from ..mask_files import mask_file, read_mask_file

        out = {}
        for i in sorted(rgbs):
            try:
                out[i] = read_mask_file(mask_file(self.mask_dir, names[i]))
            except ClipSamError as e:
                errors[i] = f"{type(e).__name__}: {e}"
                del rgbs[i]
        return out

    def _segment(self, rgbs: dict, errors: list, masks: dict | None = None) -> dict:
        """Segment the readable images together; if that fails, one by one, so one bad image fails alone."""
        if not rgbs:
            return {}
        idx = sorted(rgbs)
        extra = {} if masks is None else {"masks": [masks[i] for i in idx]}
        try:
            res = self.segmenter.segment_batch([rgbs[i] for i in idx], classes=self.classes, **extra)
            return dict(zip(idx, res))
        except (ClipSamError, RuntimeError, ValueError, MemoryError):
            pass
        out = {}
        for i in idx:
            try:
                one = {} if masks is None else {"masks": masks[i]}
                out[i] = self.segmenter.segment(rgbs[i], classes=self.classes, **one)
            except (ClipSamError, RuntimeError, ValueError, MemoryError) as e:
                errors[i] = f"{type(e).__name__}: segmentation failed: {e}"
        return out


def _write(res, key, name: str, out_dir: Path, stems: bool) -> tuple[list[str], str]:
    """Save one row's outputs as ``out_dir/<name>*``: (the files written, "" or the row's error). With ``stems``
    (names from the file names alone) a name whose outputs record another image is that row's error."""
    if isinstance(key, str):
        res.info["image"] = key
        if stems and written_for(out_dir, name, key) is False:  # another image's outputs
            return [], (
                f"OutputError: the output name {name!r} is taken by another image's outputs ({out_dir / name}.json): "
                "images of the same file name in different folders need a 'name' column with distinct output names "
                "(e.g. each path relative to the dataset's root, without its suffix)"
            )
    try:
        return save_atomic(res, out_dir, name), ""
    except OSError as e:
        return [], f"{type(e).__name__}: cannot write outputs: {e}"


def _objects(arrays: list) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def segment_dataset(
    ds, *, concurrency: int = 1, num_gpus: float = 0, batch_size: int = 8, num_cpus: float = 1, **kwargs
):
    """``ds.map_batches(SegmentImages, ...)`` with ``concurrency`` actors, each with ``num_gpus`` GPUs and
    ``num_cpus`` CPUs, ``batch_size`` rows per call; ``kwargs`` are ``SegmentImages``'s (model=..., out_dir=...)."""
    ray = require_ray()
    if concurrency < 1 or batch_size < 1:
        raise ConfigError(f"concurrency and batch_size must be >= 1, got {concurrency} and {batch_size}")
    return ds.map_batches(
        SegmentImages,
        fn_constructor_kwargs=kwargs,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="numpy",
    )
