"""Configuration of CLIP-guided SAM2 refinement.

One frozen dataclass, shared by every backend (PyTorch SAM2, ONNX Runtime). Every step it controls is
deterministic: there is no seed because nothing is sampled at random. The same labels, probabilities and
config always give the same prompts, and the same masks give the same merge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

SAM2_MODELS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")  # what refinement builds
# SAM 2.0 models, for CorrCLIP's automatic masks (its upstream uses sam2_hiera_l)
SAM2_AUTOMASK_MODELS = SAM2_MODELS + ("sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l")
SAM2_MEAN, SAM2_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as sam2's SAM2Transforms


def _class_tuple(name: str, value: Iterable[int] | None) -> tuple[int, ...] | None:
    """Normalise a class-index collection to a sorted tuple of unique non-negative ints (or None)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"RefineConfig.{name} must be a tuple of class indices or None, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"RefineConfig.{name} must hold non-negative integer class indices, got {v!r}")
        out.append(int(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class RefineConfig:
    """How dense CLIP labels become SAM2 prompts and how SAM2 masks are merged back.

    The first group of fields drives ``clipsam.refine.extract_prompts``; the last three drive decoding and
    ``clipsam.refine.merge_masks``. Class filters: with ``thing_classes`` set, only those classes are
    refined; otherwise every class except ``stuff_classes`` is. Listing a class in both is an error.
    Values are validated on construction (``ConfigError``); class lists are stored as sorted tuples.
    """

    # Prompt extraction:
    min_confidence: float = 0.5  # a pixel seeds a region only if its class probability is >= this
    min_region_frac: float = 0.001  # regions smaller than this fraction of H*W get no prompt
    points_per_region: int = 3  # max positive points per region (1 for small regions)
    area_per_point_frac: float = 0.02  # one extra positive point per this fraction of H*W of region area
    interior_frac: float = 0.5  # extra points only where the distance to the edge >= this * the region's max
    negative_points: bool = False  # add negative points: interior points of the nearest other-class regions
    negatives_per_region: int = 2  # max negative points per prompt when negative_points is on
    use_boxes: bool = False  # also prompt with the region's bounding box
    max_prompts_per_image: int = 64  # keep at most this many prompts (the largest regions)
    thing_classes: tuple[int, ...] | None = None  # classes to refine; None: all except stuff_classes
    stuff_classes: tuple[int, ...] | None = None  # classes never refined (keep their dense labels)
    # Decoding and merging:
    multimask: bool = True  # decode 3 candidate masks per prompt and keep the best predicted IoU
    min_mask_score: float = 0.1  # drop masks whose score (SAM score * mean CLIP prob) is below this
    dedup_iou: float = 0.8  # same-class masks with IoU above this are merged (union, max score)

    def __post_init__(self) -> None:
        for name in (
            "min_confidence",
            "min_region_frac",
            "area_per_point_frac",
            "interior_frac",
            "min_mask_score",
            "dedup_iou",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ConfigError(f"RefineConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"RefineConfig.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("points_per_region", "negatives_per_region", "max_prompts_per_image"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"RefineConfig.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("negative_points", "use_boxes", "multimask"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"RefineConfig.{name} must be True or False, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))

        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"RefineConfig.min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0.0 <= self.min_region_frac < 1.0:
            raise ConfigError(f"RefineConfig.min_region_frac must be in [0, 1), got {self.min_region_frac}")
        if not 0.0 < self.area_per_point_frac <= 1.0:
            raise ConfigError(f"RefineConfig.area_per_point_frac must be in (0, 1], got {self.area_per_point_frac}")
        if not 0.0 <= self.interior_frac <= 1.0:
            raise ConfigError(f"RefineConfig.interior_frac must be in [0, 1], got {self.interior_frac}")
        if self.points_per_region < 1:
            raise ConfigError(f"RefineConfig.points_per_region must be >= 1, got {self.points_per_region}")
        if self.negatives_per_region < 0:
            raise ConfigError(f"RefineConfig.negatives_per_region must be >= 0, got {self.negatives_per_region}")
        if self.max_prompts_per_image < 1:
            raise ConfigError(f"RefineConfig.max_prompts_per_image must be >= 1, got {self.max_prompts_per_image}")
        if not 0.0 < self.dedup_iou <= 1.0:
            raise ConfigError(f"RefineConfig.dedup_iou must be in (0, 1] (1 disables merging), got {self.dedup_iou}")

        things = _class_tuple("thing_classes", self.thing_classes)
        stuff = _class_tuple("stuff_classes", self.stuff_classes)
        if things is not None and stuff is not None and set(things) & set(stuff):
            raise ConfigError(
                "RefineConfig.thing_classes and stuff_classes overlap on classes "
                f"{sorted(set(things) & set(stuff))}; a class is either refined (thing) or not (stuff)"
            )
        object.__setattr__(self, "thing_classes", things)
        object.__setattr__(self, "stuff_classes", stuff)

    def check_classes(self, num_classes: int) -> None:
        """``ConfigError`` when ``thing_classes`` / ``stuff_classes`` name an index the vocabulary does not have
        (a filter that matches no class would refine nothing, or everything, in silence)."""
        for name in ("thing_classes", "stuff_classes"):
            ids = getattr(self, name)
            beyond = sorted(c for c in ids or () if c >= num_classes)
            if beyond:
                raise ConfigError(
                    f"RefineConfig.{name} names class indices {beyond}, but the vocabulary has {num_classes} classes "
                    f"(indices 0 to {num_classes - 1}); give indices into this vocabulary's classes"
                )

    def refines(self, class_id: int) -> bool:
        """Whether regions of ``class_id`` get SAM2 prompts under the thing/stuff filters."""
        if self.thing_classes is not None:
            return class_id in self.thing_classes
        return self.stuff_classes is None or class_id not in self.stuff_classes

    @property
    def num_points(self) -> int:
        """K, the padded number of point slots per prompt (positives plus optional negatives)."""
        return self.points_per_region + (self.negatives_per_region if self.negative_points else 0)
