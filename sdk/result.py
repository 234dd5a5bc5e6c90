"""The result of segmenting one image: labels, scores, and ways to look at and store them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SegmentationResult", "palette"]


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


@dataclass
class SegmentationResult:
    """Per-pixel labels for one image.

    Attributes:
        labels: (H, W) int32 class indices into ``classes``.
        scores: (H, W) float32 probability of the chosen class.
        classes: class display names.
        image: (H, W, 3) uint8 RGB input (for overlays), or None; read-only (it may share the caller's image):
            copy it to draw on it.
        info: configuration, timing and backend details (JSON-serialisable).
        dense_labels: (H, W) int32 dense CLIP labels before SAM2 refinement (None without refinement).
        instances: SAM2 instances (``clipsam.refine.Instance``: mask, class_id, score, box, area) after merging.
    """

    labels: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]
    image: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    dense_labels: np.ndarray | None = None
    instances: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)

    def pixel_fractions(self) -> dict[str, float]:
        """Fraction of the image covered by each class present (descending)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.classes))
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
            raise ValueError("a palette PNG holds at most 256 classes; save labels as .npy instead")
        img = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        img.putpalette(palette().ravel().tolist())
        return img

    def overlay(self, alpha: float = 0.5, legend: bool = True):
        """The image blended with class colours, with a legend of the classes present (PIL RGB image)."""
        from PIL import Image, ImageDraw

        colours = _overlay_colours(len(self.classes))
        base = self.image if self.image is not None else np.zeros(self.labels.shape + (3,), np.uint8)
        base = np.clip(base, 0, 255).astype(np.uint8) if base.dtype != np.uint8 else base
        mixed = (base.astype(np.float32) * (1 - alpha) + colours[self.labels].astype(np.float32) * alpha).astype(np.uint8)
        img = Image.fromarray(mixed, mode="RGB")
        if not legend:
            return img
        present = list(self.pixel_fractions().items())
        row, pad = 14, 4
        width = max([img.width] + [0])
        legend_h = pad * 2 + row * len(present)
        canvas = Image.new("RGB", (width, img.height + legend_h), (255, 255, 255))
        canvas.paste(img, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, (name, frac) in enumerate(present):
            y = img.height + pad + i * row
            c = tuple(int(v) for v in colours[self.classes.index(name)])
            draw.rectangle([pad, y + 1, pad + 10, y + 11], fill=c, outline=(0, 0, 0))
            draw.text((pad + 16, y), f"{name}  {100 * frac:.1f}%", fill=(0, 0, 0))
        return canvas

    def save(self, out_dir: str | os.PathLike, stem: str = "result") -> dict[str, Path]:
        """Write ``<stem>_labels.png`` (palette), ``<stem>_overlay.png`` and ``<stem>.json``; returns the paths."""
        from .paths import output_dir

        out = output_dir(out_dir, "output folder")  # a file, read-only or unwritable: OutputError naming it
        paths = {"labels": out / f"{stem}_labels.png", "overlay": out / f"{stem}_overlay.png", "summary": out / f"{stem}.json"}
        if len(self.classes) <= 256:
            self.label_image().save(paths["labels"])
        else:
            paths["labels"] = out / f"{stem}_labels.npy"
            np.save(paths["labels"], self.labels)
        self.overlay().save(paths["overlay"])
        paths["summary"].write_text(json.dumps(self.summary(), indent=2))
        if self.dense_labels is not None:
            paths["instances"] = out / f"{stem}_instances.json"
            paths["instances"].write_text(json.dumps(self.instances_json()))
        return paths

    def instances_json(self) -> list[dict]:
        """Instances as JSON: class name, score, box (x0, y0, x1, y1, inclusive), area, COCO RLE mask."""
        return [
            {"class": self.classes[int(inst.class_id)], "class_id": int(inst.class_id), "score": float(inst.score),
             "box": [int(v) for v in inst.box], "area": int(inst.area), "segmentation": inst.to_coco_rle()}
            for inst in self.instances
        ]
