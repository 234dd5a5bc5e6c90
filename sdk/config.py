"""Configuration of the dense CLIP pipeline: frozen groups of settings, the methods, and per-dataset presets.

``DenseConfig`` holds five groups, each a frozen dataclass validated on construction:

    attention    the last-block attention (base, residual, ResCLIP's RCS and SFR weights): baked into exported graphs
    feedback     host-side inputs of that attention: NACLIP's window std and ResCLIP's SFR first pass
    schedule     resizing, sliding windows and the multi-scale / flip ensemble
    post         logits to labels: temperature, thresholds, optional output PAMR
    calibration  optional visual calibration (ExCEL SVC, kNN)
    rfclip       RF-CLIP's settings (``clipsam.method_config``; used when attention.base == "rfclip")
    corrclip     CorrCLIP's settings (``clipsam.method_config``; used when attention.base == "corrclip")

``dense_config(method, preset, **overrides)`` returns the reference configuration of a method on a dataset
(``docs/algorithms.md``, "Presets"). Overrides and ``DenseConfig.replace`` take the flat field names of the groups
(``slide_crop=224``, ``prob_thd=0.2``, ``calibration="knn"``) or whole groups (``schedule=ScheduleConfig(...)``);
reading a flat name (``cfg.slide_crop``) reads through to its group.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

from .config_kinds import check_fields
from .errors import ConfigError
from .method_config import FIELD_KINDS as _METHOD_FIELD_KINDS
from .method_config import CorrClipConfig, RFClipConfig
from .text import resolve_templates


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, else ``ConfigError`` naming the option and the value (a run-time option such as
    ``max_batch`` or ``batch_size``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a finite float > 0, else ``ConfigError`` (e.g. ``max_memory_mb``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


MULTI_SCALE_5 = (0.5, 0.75, 1.0, 1.25, 1.5)  # the named multi-scale setting; paper presets stay single-scale

Base = Literal["clip", "sclip", "clearclip", "naclip", "rfclip", "corrclip"]
PathCheck = Literal["prefix", "full", "none"]
Blur = Literal["raster", "2d"]
Upsample = Literal["two_step", "one_step"]
Combine = Literal["prob_mean", "weighted", "logit_mean"]
Calibration = Literal["none", "excel", "knn"]

# rfclip and corrclip are whole encoders of their own (clipsam.dense.rfclip, clipsam.dense.corrclip), not
# last-block variants of DenseEncoder; their settings are the rfclip / corrclip groups
BASES: tuple[str, ...] = ("clip", "sclip", "clearclip", "naclip", "rfclip", "corrclip")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


# The type of every option (checked first, so a wrong type is a ConfigError naming the option, not a TypeError from
# a comparison), by its flat name: a kind, with "?" when None is allowed too.
_FIELD_KINDS = {
    **dict.fromkeys(("residual", "rcs", "sfr", "pad_crops", "flip"), "bool"),
    **dict.fromkeys(
        (
            "sfr_pamr_iters",
            "short_side",
            "long_side",
            "slide_crop",
            "slide_stride",
            "pamr_iters",
            "calibration_blocks",
            "knn_k",
            "pad_multiple",
        ),
        "int",
    ),
    **dict.fromkeys(("rcs_layers", "sfr_pamr_dilations", "pamr_dilations"), "ints"),
    **dict.fromkeys(("temp_thd", "gaussian_std", "logit_scale", "prob_thd", "knn_quantile"), "real"),
    **dict.fromkeys(("rcs_weights", "sfr_weights", "scales"), "reals"),
    "area_thd": "real?",
    "scale_weights": "reals?",
    "vocabulary": "str?",
    "preset": "str?",
    "templates": "templates",
    **dict.fromkeys(("base", "sfr_path_check", "sfr_blur", "upsample", "combine", "calibration", "method"), "str"),
    **_METHOD_FIELD_KINDS,
}
_GROUP_NAMES = {"mode": "calibration", "blocks": "calibration_blocks"}  # CalibrationConfig field -> option name


def _check_types(obj: Any) -> None:
    """ConfigError naming the option when a field of ``obj`` (a group or DenseConfig) has the wrong type."""
    if isinstance(obj, DenseConfig):
        check_fields(obj, _FIELD_KINDS, skip=_GROUPS)
    else:
        check_fields(obj, _FIELD_KINDS, rename=_GROUP_NAMES if isinstance(obj, CalibrationConfig) else None)


@dataclass(frozen=True)
class AttentionConfig:
    """The last-block attention. Every field is baked into the exported dense graphs."""

    base: Base = "naclip"  # clip | sclip | clearclip | naclip | rfclip | corrclip (own encoders)
    residual: bool = False  # last block keeps residual + FFN ('w_resi': clip, sclip) or not ('wo_resi')
    rcs: bool = True  # ResCLIP residual cross-correlation attention
    rcs_layers: tuple[int, ...] = (5, 6, 7, 8)  # 0-based trunk blocks averaged for A_c (blocks 6-9)
    rcs_weights: tuple[float, float] = (2.0, 0.3)  # (tau_rcs, lambda_rcs)
    sfr: bool = True  # ResCLIP semantic feedback refinement (two passes of the last block)
    sfr_weights: tuple[float, float] = (2.2, 0.7)  # (tau_sfr, lambda_sfr)

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("base", self.base, BASES)
        if not self.rcs_layers or min(self.rcs_layers) < 0 or len(set(self.rcs_layers)) != len(self.rcs_layers):
            raise ConfigError(
                f"rcs_layers must be distinct 0-based trunk block indices (default (5, 6, 7, 8)), got {self.rcs_layers}"
            )
        for name, (tau, lam) in (
            ("rcs_weights", _pair(self, "rcs_weights")),
            ("sfr_weights", _pair(self, "sfr_weights")),
        ):
            if not 0 < tau <= _MAX_TAU or not 0.0 <= lam <= 1.0:
                raise ConfigError(
                    f"{name} must be (tau, lambda) with tau in (0, {_MAX_TAU:g}] (a temperature multiplying attention "
                    f"logits; beyond that they overflow to inf and the scores to NaN) and lambda in [0, 1] (a blend "
                    f"weight), got {getattr(self, name)}"
                )


_MAX_TAU = 100.0  # RCS / SFR temperatures (the methods use about 2)
_MIN_STD = 0.01  # NACLIP / SFR Gaussian std in patches


def _pair(obj: Any, name: str) -> tuple[float, float]:
    value = getattr(obj, name)
    if len(value) != 2:
        raise ConfigError(f"{name} must be a pair (tau, lambda), got {value}")
    return float(value[0]), float(value[1])


def _check_dilations(name: str, value: tuple[int, ...]) -> None:
    """PAMR's neighbour distances in pixels: at least one, each >= 1 (0 would make a pixel its own neighbour)."""
    if not value or min(value) < 1:
        raise ConfigError(f"{name} must be a non-empty tuple of pixel distances >= 1 (default (8, 16)), got {value}")


@dataclass(frozen=True)
class FeedbackConfig:
    """Inputs of the last block computed on the host: NACLIP's window and ResCLIP's SFR first pass."""

    gaussian_std: float = 5.0  # NACLIP window and SFR blur std, in patches
    temp_thd: float = 0.5  # pixels whose max first-pass probability is below this join query 0
    sfr_pamr_iters: int = 10  # PAMR inside SFR's first pass (upstream runs it although pamr_steps=0)
    sfr_pamr_dilations: tuple[int, ...] = (8, 16)
    sfr_path_check: PathCheck = "prefix"  # "prefix" (upstream quirk) | "full" | "none"
    sfr_blur: Blur = "raster"  # "raster" (upstream, wraps across rows) | "2d"

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("sfr_path_check", self.sfr_path_check, ("prefix", "full", "none"))
        _choice("sfr_blur", self.sfr_blur, ("raster", "2d"))
        if not self.gaussian_std >= _MIN_STD:
            raise ConfigError(
                f"gaussian_std must be >= {_MIN_STD:g} patches (smaller is already a single patch; near 0 the "
                f"Gaussian's normaliser underflows and the scores become NaN), got {self.gaussian_std}"
            )
        if not 0.0 <= self.temp_thd <= 1.0:
            raise ConfigError(f"temp_thd is a probability threshold and must be in [0, 1], got {self.temp_thd}")
        if self.sfr_pamr_iters < 0:
            raise ConfigError("PAMR iteration counts must be >= 0")
        _check_dilations("sfr_pamr_dilations", self.sfr_pamr_dilations)


@dataclass(frozen=True)
class ScheduleConfig:
    """Resizing, sliding windows and the ensemble of scales and flips."""

    short_side: int = 336  # Resize(scale=(long_side, short_side), keep_ratio=True)
    long_side: int = 2048
    slide_crop: int = 0  # 0: one pass over the whole image; else square crop size in pixels
    slide_stride: int = 112
    pad_crops: bool = False  # pad windows to a patch multiple with zeros (ClearCLIP) instead of dropping the remainder
    pad_multiple: int = 0  # with pad_crops: pad to a multiple of this many pixels instead (0: the patch; CorrCLIP 56)
    upsample: Upsample = "two_step"  # "two_step" (grid -> input -> original) | "one_step" (grid -> original)
    scales: tuple[float, ...] = (1.0,)  # multi-scale ensemble: short/long sides times each scale (MULTI_SCALE_5)
    scale_weights: tuple[float, ...] | None = None  # per-scale weights, normalised (None: equal); "weighted" needs them
    combine: Combine = "prob_mean"  # scales/flips: "prob_mean" | "weighted" (probabilities) | "logit_mean"
    flip: bool = False  # also run the horizontally flipped image and average (in the combine space)

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("upsample", self.upsample, ("two_step", "one_step"))
        _choice("combine", self.combine, ("prob_mean", "weighted", "logit_mean"))
        if self.slide_crop < 0 or (self.slide_crop > 0 and self.slide_stride <= 0):
            raise ConfigError("slide_crop must be >= 0 and slide_stride > 0 when sliding")
        if self.slide_crop > 0 and self.slide_stride > self.slide_crop:
            raise ConfigError(
                f"slide_stride ({self.slide_stride}) is larger than slide_crop ({self.slide_crop}): windows farther "
                "apart than their size leave pixels that no window covers; set slide_stride <= slide_crop (the "
                "presets use half the window, e.g. slide_crop=224, slide_stride=112)"
            )
        if self.short_side <= 0 or self.long_side <= 0:
            raise ConfigError("short_side and long_side must be positive")
        if self.pad_multiple < 0:
            raise ConfigError(f"pad_multiple must be >= 0 (0: the patch size), got {self.pad_multiple}")
        reach = self.slide_crop or self.long_side  # a window, or the whole resized image
        if self.pad_multiple > reach:
            what = "window (slide_crop)" if self.slide_crop else "resized image (long_side)"
            raise ConfigError(
                f"pad_multiple {self.pad_multiple} is larger than the {what} {reach}: each one would be padded with "
                f"more zeros than it has pixels. Use a multiple up to {reach} (CorrCLIP's presets use 56; 0 means "
                "the patch size)"
            )
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"scales must be a non-empty tuple of positive factors, got {self.scales}")
        smallest = min(self.scales)
        if round(self.short_side * smallest) < 1:
            raise ConfigError(
                f"scale {smallest} makes the short side {self.short_side} x {smallest} round to 0 pixels: use scales "
                "whose product with short_side is at least the patch size (e.g. 0.5 to 1.75)"
            )
        if self.combine == "weighted" and (self.scale_weights is None or len(self.scale_weights) != len(self.scales)):
            raise ConfigError("combine='weighted' needs scale_weights with one weight per scale")
        if self.scale_weights is not None and (
            len(self.scale_weights) != len(self.scales) or min(self.scale_weights) < 0
        ):
            raise ConfigError("scale_weights must give one non-negative weight per scale")
        if self.scale_weights is not None and not sum(self.scale_weights) > 0:
            raise ConfigError(
                f"scale_weights {tuple(self.scale_weights)} sum to 0: give at least one scale a positive weight "
                "(they are normalised to sum to 1)"
            )


@dataclass(frozen=True)
class PostConfig:
    """From logits to labels."""

    logit_scale: float = 40.0  # softmax temperature of the post-processing (and of SFR's first pass)
    prob_thd: float = 0.0  # pixels whose max class probability is below this get class 0
    area_thd: float | None = None  # SCLIP: foreground classes under this fraction of foreground pixels are dropped
    pamr_iters: int = 0  # optional PAMR on the final logits (NACLIP's own default is 10)
    pamr_dilations: tuple[int, ...] = (8, 16)

    def __post_init__(self) -> None:
        _check_types(self)
        if not 0.0 <= self.prob_thd <= 1.0:
            raise ConfigError(f"prob_thd must be in [0, 1], got {self.prob_thd}")
        if self.logit_scale <= 0:
            raise ConfigError(
                f"logit_scale is the softmax's inverse temperature and must be > 0, got {self.logit_scale}"
            )
        if self.area_thd is not None and not 0.0 <= self.area_thd <= 1.0:
            raise ConfigError(f"area_thd must be in [0, 1] or None, got {self.area_thd}")
        if self.pamr_iters < 0:
            raise ConfigError("PAMR iteration counts must be >= 0")
        _check_dilations("pamr_dilations", self.pamr_dilations)


@dataclass(frozen=True)
class CalibrationConfig:
    """Visual calibration of the dense features (``clipsam.dense.calibration``); none in the published methods."""

    mode: Calibration = "none"  # "none" | "excel" (ExCEL SVC) | "knn"
    blocks: int = 5  # excel: the last N blocks get ExCEL's second attention path (ExCEL: 5)
    knn_k: int = 8  # knn: high-confidence neighbours averaged into each low-confidence patch
    knn_quantile: float = 0.5  # knn: fraction of each crop's patches, least confident first, that are replaced

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("calibration", self.mode, ("none", "excel", "knn"))
        if self.blocks < 1:
            raise ConfigError(f"calibration_blocks must be >= 1, got {self.blocks}")
        if self.knn_k < 1:
            raise ConfigError(f"knn_k must be >= 1, got {self.knn_k}")
        if not 0.0 < self.knn_quantile < 1.0:
            raise ConfigError(f"knn_quantile must be in (0, 1), got {self.knn_quantile}")


_GROUPS: dict[str, type] = {
    "attention": AttentionConfig,
    "feedback": FeedbackConfig,
    "schedule": ScheduleConfig,
    "post": PostConfig,
    "calibration": CalibrationConfig,
    "rfclip": RFClipConfig,
    "corrclip": CorrClipConfig,
}
# flat option name -> (group, field); the calibration group's fields keep their historical flat names
_FLAT: dict[str, tuple[str, str]] = {f.name: (g, f.name) for g, cls in _GROUPS.items() for f in dataclasses.fields(cls)}
for _name in ("mode", "blocks"):
    del _FLAT[_name]
_FLAT.update(calibration=("calibration", "mode"), calibration_blocks=("calibration", "blocks"))


@dataclass(frozen=True)
class DenseConfig:
    """Dense CLIP prediction settings (defaults: ResCLIP on NACLIP, VOC21, whole image), in groups."""

    attention: AttentionConfig = field(default_factory=AttentionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    post: PostConfig = field(default_factory=PostConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    rfclip: RFClipConfig = field(default_factory=RFClipConfig)
    corrclip: CorrClipConfig = field(default_factory=CorrClipConfig)
    templates: tuple[str, ...] | str = "openai80"  # template-set name or explicit templates
    vocabulary: str | None = "voc21"  # built-in vocabulary of the preset (None: classes must be given)
    preset: str | None = None  # name of the preset this config came from (informational)
    method: str = "resclip"  # name of the method this config came from (informational)

    def __post_init__(self) -> None:
        for name, cls in _GROUPS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"DenseConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}"
                )
        _check_types(self)
        resolve_templates(self.templates)  # a template str.format cannot fill fails here, not at the first image
        if self.calibration.mode == "excel" and (self.attention.rcs or self.attention.sfr):
            raise ConfigError(
                "calibration='excel' replaces the method's last block with ExCEL's second attention path, "
                "so ResCLIP's RCS and SFR cannot apply: use method 'naclip', 'sclip', 'clearclip' or "
                "'clip' with it, or calibration='knn', which works with every method"
            )
        att = self.attention
        if att.base in ("rfclip", "corrclip"):
            if att.rcs or att.sfr or att.residual:
                raise ConfigError(
                    f"base={att.base!r} is a whole method with its own last block: ResCLIP's RCS/SFR and "
                    "the residual last block do not apply (set rcs=False, sfr=False, residual=False, or "
                    f"use method={att.base!r})"
                )
            if self.calibration.mode != "none":
                raise ConfigError(
                    f"calibration={self.calibration.mode!r} changes DenseEncoder's last block, which "
                    f"{att.base!r} does not use: use calibration='none' with it"
                )
        if att.base == "corrclip" and self.schedule.slide_crop == 0:
            raise ConfigError(
                "corrclip runs sliding windows, as upstream (its presets use slide_crop=336, Cityscapes "
                "224); slide_crop=0 (one window over the whole image) is not supported: set slide_crop"
            )

    def __getattr__(self, name: str) -> Any:
        """Flat names read through to their group: ``cfg.slide_crop`` is ``cfg.schedule.slide_crop``."""
        flat = _FLAT.get(name)
        if flat is None:
            raise AttributeError(f"DenseConfig has no field {name!r}")
        return getattr(getattr(self, flat[0]), flat[1])

    def replace(self, **changes: Any) -> DenseConfig:
        """A copy with fields replaced: flat names (``slide_crop=224``), groups, or the top-level fields."""
        top = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - top - set(_FLAT)
        if unknown:
            raise ConfigError(f"unknown DenseConfig option(s): {', '.join(sorted(unknown))}")
        direct = {
            k: v
            for k, v in changes.items()
            if k in top and not (k == "calibration" and not isinstance(v, CalibrationConfig))
        }
        per_group: dict[str, dict[str, Any]] = {}
        for k, v in changes.items():
            if k not in direct:
                group, name = _FLAT[k]
                per_group.setdefault(group, {})[name] = v
        for group, kw in per_group.items():
            direct[group] = dataclasses.replace(direct.get(group, getattr(self, group)), **kw)
        return dataclasses.replace(self, **direct)

    def options(self) -> dict[str, Any]:
        """Every option by its flat name (what overrides take): ``dense_config(**cfg.options())`` rebuilds it."""
        out: dict[str, Any] = {name: getattr(getattr(self, g), f) for name, (g, f) in _FLAT.items()}
        out.update(templates=self.templates, vocabulary=self.vocabulary, preset=self.preset, method=self.method)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the flat option names (``from_dict`` reads it back)."""
        return json_safe(self.options())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenseConfig:
        """The config of a ``to_dict`` dict (lists become tuples)."""
        return cls().replace(**_tuples(data))


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def json_safe(value: Any) -> Any:
    """Tuples to lists, recursively (what ``json.dumps`` then writes)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# method -> (base, residual, rcs+sfr, family). Family selects the per-dataset settings.
METHODS: dict[str, tuple[str, bool, bool, str]] = {
    "clip": ("clip", True, False, "sclip"),
    "sclip": ("sclip", True, False, "sclip"),
    "clearclip": ("clearclip", False, False, "clearclip"),
    "naclip": ("naclip", False, False, "naclip"),
    "resclip": ("naclip", False, True, "resclip"),
    "resclip_sclip": ("sclip", True, True, "resclip"),
    "resclip_clearclip": ("clearclip", False, True, "resclip"),
    "rfclip": ("rfclip", False, False, "rfclip"),
    "corrclip": ("corrclip", False, False, "corrclip"),
}

DATASETS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")
_SCLIP_LOGIT = dict(voc21=65.0, context60=50.0, coco_object=50.0)
_PROB = dict(voc21=0.1, context60=0.1, coco_object=0.1)
_CLEARCLIP_PROB = dict(voc21=0.5, context60=0.15, coco_object=0.4)
# ResCLIP: temp_thd, (tau, lambda)_rcs, (tau, lambda)_sfr
_RESCLIP = dict(
    voc21=(0.50, (2.0, 0.3), (2.2, 0.7)),
    context60=(0.30, (2.0, 0.3), (1.8, 0.7)),
    coco_object=(0.11, (2.0, 0.4), (1.8, 0.7)),
    voc20=(0.10, (2.0, 0.6), (2.1, 0.6)),
    context59=(0.25, (2.0, 0.4), (1.8, 0.7)),
    coco_stuff164k=(0.11, (2.0, 0.4), (1.8, 0.7)),
    cityscapes=(0.10, (2.0, 0.2), (2.1, 0.6)),
    ade20k=(0.25, (2.0, 0.3), (2.1, 0.7)),
)
_WHOLE_IMAGE = ("voc21", "voc20")  # NACLIP and ResCLIP run these without sliding
# RF-CLIP (configs/cfg_*.py at c2b333e): prob_thd, global_semantics_weight, mean_vector_weight, h_threshold, whole image
_RFCLIP = dict(
    voc21=(0.1, 0.10, 0.03, 0.10, True),
    context60=(0.1, 0.25, 0.04, 0.09, False),
    coco_object=(0.1, 0.25, 0.01, 0.10, False),
    voc20=(0.0, 0.40, 0.02, 0.10, False),
    context59=(0.0, 0.25, 0.04, 0.09, False),
    coco_stuff164k=(0.0, 0.20, 0.02, 0.02, True),
    cityscapes=(0.0, 0.10, 0.03, 0.14, False),
    ade20k=(0.0, 0.30, 0.05, 0.06, False),
)
# CorrCLIP v1 (CorrCLIPv1/configs/cfg_*.py): prob_thd; short side 448 and crop 224 where noted in _corrclip_schedule
_CORRCLIP_PROB = dict(voc21=0.2, context60=0.15, coco_object=0.25)


def _method_preset(family: str, ds: str) -> dict[str, Any]:
    """RF-CLIP's and CorrCLIP's per-dataset settings (``docs/algorithms.md`` sections 15.6 and 16.8)."""
    if family == "rfclip":
        prob, gw, alpha, h, whole = _RFCLIP[ds]
        return dict(
            short_side=560 if ds == "cityscapes" else 336,
            slide_crop=0 if whole else 224,
            slide_stride=112,
            logit_scale=40.0,
            prob_thd=prob,
            rf_global_weight=gw,
            rf_text_alpha=alpha,
            rf_cluster_threshold=h,
            rf_global_source="window" if ds == "cityscapes" else "image",
        )
    return dict(
        short_side=448 if ds in ("cityscapes", "ade20k") else 336,
        slide_crop=224 if ds == "cityscapes" else 336,
        slide_stride=112,
        pad_crops=True,
        pad_multiple=56,
        logit_scale=40.0,
        prob_thd=_CORRCLIP_PROB.get(ds, 0.0),
        vocabulary=f"{ds}_corrclip",
    )


def _preset(method: str, ds: str) -> DenseConfig:
    base, residual, res, family = METHODS[method]
    kw: dict[str, Any] = dict(base=base, residual=residual, rcs=res, sfr=res, preset=ds, method=method, vocabulary=ds)
    if family in ("rfclip", "corrclip"):
        kw.update(_method_preset(family, ds))
    elif family == "clearclip":
        # ClearCLIP's whole-image path (slide_crop=0, unused by its presets) resizes the grid to the original size
        # in one step, as SCLIP's does (upstream forward_feature(inputs, ori_shape))
        kw.update(
            short_side=448,
            slide_crop=448,
            slide_stride=224,
            logit_scale=50.0,
            prob_thd=_CLEARCLIP_PROB.get(ds, 0.0),
            vocabulary=f"{ds}_plain",
            pad_crops=True,
            upsample="one_step",
        )
        if ds == "cityscapes":  # only slide_crop=224 is set upstream: the stride stays 224 (no overlap)
            kw.update(slide_crop=224, slide_stride=224)
    else:
        short = 560 if ds == "cityscapes" else 336
        if family == "sclip" and ds == "coco_stuff164k":
            short = 448
        kw.update(short_side=short, prob_thd=_PROB.get(ds, 0.0))
        whole = family in ("naclip", "resclip") and ds in _WHOLE_IMAGE
        kw.update(slide_crop=0 if whole else 224, slide_stride=112)
        if family == "sclip":
            # SCLIP's whole-image path (slide_crop=0, unused by its presets) upsamples in one step
            kw.update(
                logit_scale=_SCLIP_LOGIT.get(ds, 40.0), area_thd=0.1 if ds == "voc21" else None, upsample="one_step"
            )
        else:
            kw.update(logit_scale=40.0)
        if family == "naclip":
            kw.update(pamr_iters=10, pamr_dilations=(8, 16))
        if family == "resclip":
            thd, rcs_w, sfr_w = _RESCLIP[ds]
            kw.update(temp_thd=thd, rcs_weights=rcs_w, sfr_weights=sfr_w)
    return DenseConfig().replace(**kw)


PRESETS: dict[str, tuple[str, ...]] = {m: DATASETS for m in METHODS}


def dense_config(method: str = "resclip", preset: str | None = "voc21", **overrides: Any) -> DenseConfig:
    """The reference configuration of ``method`` on dataset ``preset``, with field overrides.

    Arguments:
        method: one of ``METHODS`` ("resclip" = NACLIP + RCS + SFR, the default).
        preset: dataset name (``PRESETS[method]``), or None for open-vocabulary use: the method's settings for a
            dataset without background class (PASCAL Context 59: sliding windows, prob_thd 0), no built-in
            vocabulary (classes are given at segment time).
        overrides: DenseConfig fields to replace (flat names such as ``slide_crop``, or groups).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if preset is None:
        cfg = _preset(method, "context59").replace(vocabulary=None, preset=None)
    elif preset not in DATASETS:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(DATASETS)}, or None for open vocabulary (no "
            "built-in classes; the CLI spells it --preset none)"
        )
    else:
        cfg = _preset(method, preset)
    return cfg.replace(**overrides) if overrides else cfg
