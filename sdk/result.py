"""The result of segmenting one image: labels, scores, and ways to look at and store them.

Large results are drawn and written in row strips of bounded memory (``max_memory_mb``, the segmenter's budget):
the overlay is blended with integer arithmetic (exactly the float formula's values for alphas that are multiples of
1/256, such as the default 0.5) and ``save`` streams both PNGs strip by strip (``clipsam.png``), so writing an
8000 x 6000 result never holds it in float32 or twice in PIL's layout.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import positive_number
from .errors import InvalidInputError


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: (n, 3) uint8, class 0 black."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def _overlay_colours(n: int) -> np.ndarray:
    # VOC colours, but class 0 gets a visible grey so that it is not confused with "no overlay".
    pal = palette(max(n, 1)).copy()
    pal[0] = (128, 128, 128)
    return pal


def _describe(a) -> str:
    """ "int64 array (3, 4)" or the type's name, for error messages."""
    return f"{a.dtype} array {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


@dataclass
class SegmentationResult:
    """Per-pixel labels for one image.

    Attributes:
        labels: (H, W) int32 class indices into ``classes``.
        scores: (H, W) float32 probability of the chosen class (empty when a server's reply did not include them).
        classes: class display names.
        image: (H, W, 3) uint8 RGB input (for overlays), or None; read-only (it may share the caller's image):
            copy it to draw on it.
        info: configuration, timing and backend details (JSON-serialisable).
        dense_labels: (H, W) int32 dense CLIP labels before SAM2 refinement (None without refinement).
        instances: SAM2 instances (``clipsam.refine.Instance``: mask, class_id, score, box, area) after merging.
        max_memory_mb: memory budget of ``overlay`` and ``save`` (the segmenter's ``max_memory_mb``), beyond the
            result's own arrays.
    """

    labels: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]
    image: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    dense_labels: np.ndarray | None = None
    instances: list = field(default_factory=list)
    max_memory_mb: float | None = None  # working memory of overlay() and save() (default: 64 MiB strips)

    def __post_init__(self) -> None:
        """Arrays that ``overlay``, ``save`` and the statistics can use: checked once here, so that a result built
        by hand (or decoded from a server's reply) fails with the reason, not inside numpy or PIL later."""
        labels, scores = self.labels, self.scores
        if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype.kind not in "iu":
            raise InvalidInputError(
                f"SegmentationResult.labels must be an (H, W) integer array, got {_describe(labels)}"
            )
        if not isinstance(scores, np.ndarray) or (scores.shape != labels.shape and scores.size):
            raise InvalidInputError(
                f"SegmentationResult.scores must be an array of the labels' shape {labels.shape} (or empty), got "
                f"{_describe(scores)}"
            )
        if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes):
            raise InvalidInputError("SegmentationResult.classes must be a sequence of class-name strings")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise InvalidInputError(
                f"SegmentationResult.labels hold values in [{int(labels.min())}, {int(labels.max())}], but "
                f"there are {len(self.classes)} classes: every label must index classes (0 .. "
                f"{len(self.classes) - 1})"
            )
        for name in ("image", "dense_labels"):
            a = getattr(self, name)
            want = labels.shape + ((3,) if name == "image" else ())
            if a is not None and (not isinstance(a, np.ndarray) or a.shape != want):
                raise InvalidInputError(
                    f"SegmentationResult.{name} must be None or of shape {want}, got {_describe(a)}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)

    def pixel_fractions(self) -> dict[str, float]:
        """Fraction of the image covered by each class present (descending)."""
        counts = np.zeros(len(self.classes), np.int64)
        for r0, r1 in self._strips(8):  # bincount casts to int64: per strip, not for the whole map
            counts += np.bincount(self.labels[r0:r1].ravel(), minlength=len(self.classes))[: len(self.classes)]
        total = max(int(self.labels.size), 1)
        pairs = [(self.classes[i], counts[i] / total) for i in np.flatnonzero(counts)]
        return dict(sorted(pairs, key=lambda p: -p[1]))

    def summary(self) -> dict:
        """JSON-serialisable summary: classes, pixel fractions, mean score, info."""
        return {
            "classes": list(self.classes),
            "height": int(self.labels.shape[0]),
            "width": int(self.labels.shape[1]),
            "pixel_fractions": {k: round(float(v), 6) for k, v in self.pixel_fractions().items()},
            "mean_score": float(self.scores.mean()) if self.scores.size else 0.0,
            **({"instances": len(self.instances)} if self.dense_labels is not None else {}),
            **self.info,
        }

    def label_image(self):
        """The labels as a palette PIL image (mode 'P', VOC colours); needs fewer than 256 classes."""
        from PIL import Image

        if len(self.classes) > 256:
            raise InvalidInputError(
                f"a palette PNG holds at most 256 classes, this result has {len(self.classes)}; "
                "save the labels as .npy instead (save() does so by itself)"
            )
        img = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        img.putpalette(palette().ravel().tolist())
        return img

    def _strips(self, bytes_per_pixel: float, max_memory_mb: float | None = None):
        """Row ranges whose working buffers (``bytes_per_pixel`` per pixel) fit the budget (default: 64 MiB)."""
        h, w = self.labels.shape[:2]
        budget = (max_memory_mb or self.max_memory_mb or 256.0) * 2**20 / 4  # a quarter, as the finalising strips
        rows = int(max(1, min(h, budget // max(1.0, bytes_per_pixel * w))))
        return [(r0, min(h, r0 + rows)) for r0 in range(0, h, rows)]

    def _blend(self, r0: int, r1: int, alpha: float, colours: np.ndarray) -> np.ndarray:
        """Overlay rows [r0, r1): floor(image * (1 - alpha) + colour * alpha) as uint8."""
        labels = self.labels[r0:r1]
        if self.image is None:
            base = np.zeros(labels.shape + (3,), np.uint8)
        else:
            base = self.image[r0:r1]
            base = np.clip(base, 0, 255).astype(np.uint8) if base.dtype != np.uint8 else base
        colour = colours[labels]
        k = alpha * 256
        if k == int(k) and 0 <= k <= 256:  # exact in integers: (b (256 - k) + c k) >> 8 == floor of the float formula
            k = int(k)
            mixed = base.astype(np.uint16) * np.uint16(256 - k)
            mixed += colour.astype(np.uint16) * np.uint16(k)
            return (mixed >> 8).astype(np.uint8)
        return (base.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)

    def _legend(self, width: int, colours: np.ndarray):
        """The legend under the overlay: a white PIL image with one row per class present."""
        from PIL import Image, ImageDraw

        present = list(self.pixel_fractions().items())
        row, pad = 14, 4
        img = Image.new("RGB", (width, pad * 2 + row * len(present)), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for i, (name, frac) in enumerate(present):
            y = pad + i * row
            c = tuple(int(v) for v in colours[self.classes.index(name)])
            draw.rectangle([pad, y + 1, pad + 10, y + 11], fill=c, outline=(0, 0, 0))
            draw.text((pad + 16, y), f"{name}  {100 * frac:.1f}%", fill=(0, 0, 0))
        return img

    def overlay(self, alpha: float = 0.5, legend: bool = True, max_memory_mb: float | None = None):
        """The image blended with class colours, with a legend of the classes present (PIL RGB image).

        Blended in row strips (``max_memory_mb``, default the result's) with integer arithmetic: only the returned
        image is full size.
        """
        from PIL import Image

        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise InvalidInputError(
                f"alpha must be a number in [0, 1] (the weight of the class colours), got {alpha!r:.40}"
            )
        if max_memory_mb is not None:
            positive_number(max_memory_mb, "max_memory_mb")
        colours = _overlay_colours(len(self.classes))
        h, w = self.labels.shape[:2]
        below = self._legend(w, colours) if legend else None
        canvas = Image.new("RGB", (w, h + (below.height if below is not None else 0)), (255, 255, 255))
        for r0, r1 in self._strips(32, max_memory_mb):
            canvas.paste(Image.fromarray(self._blend(r0, r1, alpha, colours), mode="RGB"), (0, r0))
        if below is not None:
            canvas.paste(below, (0, h))
        return canvas

    def save(
        self, out_dir: str | os.PathLike, stem: str = "result", max_memory_mb: float | None = None
    ) -> dict[str, Path]:
        """Write ``<stem>_labels.png`` (palette), ``<stem>_overlay.png`` and ``<stem>.json``; returns the paths.

        Both PNGs are written strip by strip (``max_memory_mb``, default the result's budget), so saving needs
        memory for one strip, not for the image.
        """
        from .paths import output_dir
        from .png import PngWriter

        if max_memory_mb is not None:
            positive_number(max_memory_mb, "max_memory_mb")
        if not isinstance(stem, str) or not stem.strip() or Path(stem).is_absolute() or ".." in Path(stem).parts:
            raise InvalidInputError(
                f"stem {stem!r} must name the files inside the output folder: a name or a relative path without "
                "'..' (e.g. 'photo' or 'album/photo')"
            )
        out = output_dir(out_dir, "output folder")  # a file, read-only or unwritable: OutputError naming it
        if Path(str(stem)).parent != Path("."):  # a stem with sub-folders ("a/b"): created like the output folder
            output_dir(out / Path(str(stem)).parent, "output folder")
        paths = {
            "labels": out / f"{stem}_labels.png",
            "overlay": out / f"{stem}_overlay.png",
            "summary": out / f"{stem}.json",
        }
        h, w = self.labels.shape[:2]
        if len(self.classes) <= 256:
            with open(paths["labels"], "wb") as f:
                png = PngWriter(f, w, h, palette=palette())
                for r0, r1 in self._strips(6, max_memory_mb):
                    png.write(self.labels[r0:r1].astype(np.uint8))
                png.close()
        else:
            paths["labels"] = out / f"{stem}_labels.npy"
            np.save(paths["labels"], self.labels)
        colours = _overlay_colours(len(self.classes))
        below = np.asarray(self._legend(w, colours))
        with open(paths["overlay"], "wb") as f:
            png = PngWriter(f, w, h + len(below))
            for r0, r1 in self._strips(32, max_memory_mb):
                png.write(self._blend(r0, r1, 0.5, colours))
            png.write(below)
            png.close()
        paths["summary"].write_text(json.dumps(self.summary(), indent=2))
        if self.dense_labels is not None:
            paths["instances"] = out / f"{stem}_instances.json"
            paths["instances"].write_text(json.dumps(self.instances_json()))
        return paths

    def instances_json(self) -> list[dict]:
        """Instances as JSON: class name, score, box (x0, y0, x1, y1, inclusive), area, COCO RLE mask."""
        return [
            {
                "class": self.classes[int(inst.class_id)],
                "class_id": int(inst.class_id),
                "score": float(inst.score),
                "box": [int(v) for v in inst.box],
                "area": int(inst.area),
                "segmentation": inst.to_coco_rle(),
            }
            for inst in self.instances
        ]


def save_atomic(result: SegmentationResult, out_dir: str | os.PathLike, name: str) -> list[str]:
    """Write ``result`` as ``out_dir/<name>_*`` with the summary ``<name>.json`` last: a file set whose summary
    exists is complete (an interrupted write leaves no summary, so a resumed run redoes the image). ``name`` may
    hold '/' (sub-folders are created). Returns the paths written."""
    target = Path(out_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".partial-{target.name}-{os.getpid()}"
    paths = result.save(tmp, target.name)
    summary = paths.pop("summary")
    final = []
    for p in list(paths.values()) + [summary]:
        dst = target.parent / p.name
        os.replace(p, dst)
        final.append(str(dst))
    tmp.rmdir()
    return final


def written_for(out_dir: str | os.PathLike, name: str, image: str) -> bool | None:
    """Whether the outputs ``out_dir/<name>*`` (``save_atomic``) are ``image``'s: None when there is no readable
    summary ``<name>.json``, False when it records another image, True when it records ``image`` or none (a summary
    written by hand or by another tool is trusted by its name). Paths compare as given or resolved."""
    summary = Path(out_dir) / f"{name}.json"
    try:
        recorded = json.loads(summary.read_text(encoding="utf-8")).get("image")
    except (OSError, ValueError, AttributeError):  # missing, unreadable, or not a summary object
        return None
    if recorded is None:
        return True
    return recorded == image or os.path.realpath(str(recorded)) == os.path.realpath(image)
