"""Configuration groups of the methods with their own encoders: RF-CLIP (``rfclip``) and CorrCLIP (``corrclip``).

Each group is a frozen dataclass of ``clipsam.config.DenseConfig`` (``cfg.rfclip``, ``cfg.corrclip``). Field names
carry the method's prefix (``rf_``, ``corr_``) so that they are also the flat option names
(``dense_config("rfclip", "voc21", rf_global_weight=0.2)``). The arithmetic they set is in ``docs/algorithms.md``
(sections 15 and 16); the defaults are the upstream code's constants, and each preset sets its per-dataset values.

Which fields are baked into an exported graph and which are host-side is stated per field ("graph" / "host").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config_kinds import check_fields
from .errors import ConfigError

# RF-CLIP's feature-denoising channels, hard-coded upstream for ViT-B/16 (width 768)
RF_SINK_CHANNELS_B16 = (4, 162, 189, 326, 429, 474, 633, 713)
# RFClipConfig fields baked into RF-CLIP's exported graph (``clip_dense_rfclip``); the others are host-side
RFCLIP_GRAPH_FIELDS = (
    "rf_sink_channels",
    "rf_sink_sigma",
    "rf_denoise_alpha",
    "rf_denoise_exact_identity",
    "rf_enhance_beta",
    "rf_renormalise_attention",
)
# CorrClipConfig fields baked into CorrCLIP's exported graph (``clip_dense_corrclip``); merging, the scope rule and
# tau, the masks and the vote are host-side
CORRCLIP_GRAPH_FIELDS = ("corr_spatial_blocks", "corr_branch_weights")

GlobalSource = Literal["image", "window"]
MaskSource = Literal["sam2", "given", "none"]
MergeDistance = Literal["max_minus", "one_minus"]
Unsegmented = Literal["smallest", "zero"]
PaintOrder = Literal["ascending_area", "descending_area"]

# flat name -> kind, for clipsam.config's type check (same kinds as there)
FIELD_KINDS = {
    **dict.fromkeys(
        ("rf_denoise_exact_identity", "rf_renormalise_attention", "corr_amg_multimask", "corr_mask_vote"), "bool"
    ),
    **dict.fromkeys(("rf_topk", "corr_amg_points_per_side", "corr_amg_points_per_batch"), "int"),
    **dict.fromkeys(("rf_sink_channels", "corr_spatial_blocks"), "ints"),
    **dict.fromkeys(
        (
            "rf_sink_sigma",
            "rf_denoise_alpha",
            "rf_enhance_beta",
            "rf_cluster_threshold",
            "rf_text_alpha",
            "rf_global_weight",
            "corr_amg_pred_iou_thresh",
            "corr_amg_stability_thresh",
            "corr_amg_stability_offset",
            "corr_amg_box_nms_thresh",
            "corr_merge_eps",
            "corr_scope_tau",
        ),
        "real",
    ),
    "corr_branch_weights": "reals",
    **dict.fromkeys(
        ("rf_global_source", "corr_mask_source", "corr_merge_distance", "corr_unsegmented", "corr_paint_order"), "str"
    ),
}


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


def _unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class RFClipConfig:
    """RF-CLIP (``liblacklucy/RF-CLIP`` c2b333e): feature denoising, the kk-attention last block, query clustering,
    image-adaptive text and global-semantics weighting. Defaults: the upstream constants and the VOC21 preset."""

    # graph: the dimension-specific denoising after every block
    rf_sink_channels: tuple[int, ...] = RF_SINK_CHANNELS_B16  # channels whose share of a token flags it
    rf_sink_sigma: float = 5.0  # a token is flagged when max share over the channels > sigma / width
    rf_denoise_alpha: float = 0.4  # x <- (1 - alpha) x + alpha f', f' = 3x3 mean where flagged, else x
    rf_denoise_exact_identity: bool = False  # correction: leave unflagged tokens bit-exact (upstream: 0.6x + 0.4x)
    # graph: the last block
    rf_enhance_beta: float = 0.4  # cosine similarities of the guide below this are zeroed
    rf_renormalise_attention: bool = False  # correction: rows of the averaged kk maps renormalised to sum to 1
    # host: text side
    rf_cluster_threshold: float = 0.10  # complete-linkage cut on cosine distance (upstream h_threshold)
    rf_text_alpha: float = 0.03  # weight of the mean of the top patches in the adjusted query (mean_vector_weight)
    rf_topk: int = 2  # patches averaged per adjusted query
    rf_global_weight: float = 0.10  # logits <- (1 - w) logits + w * global similarity (global_semantics_weight)
    rf_global_source: GlobalSource = "image"  # sliding windows: whole image's CLS ("image") or the window's own

    def __post_init__(self) -> None:
        check_fields(self, FIELD_KINDS)
        _choice("rf_global_source", self.rf_global_source, ("image", "window"))
        if not self.rf_sink_channels or min(self.rf_sink_channels) < 0:
            raise ConfigError(f"rf_sink_channels must be non-negative channel indices, got {self.rf_sink_channels}")
        for name in ("rf_denoise_alpha", "rf_text_alpha", "rf_global_weight"):
            _unit(name, getattr(self, name))
        if self.rf_topk < 1:
            raise ConfigError(f"rf_topk must be >= 1, got {self.rf_topk}")
        if not -1.0 <= self.rf_enhance_beta < 1.0:  # >= 1 zeroes every similarity, a patch's own included
            raise ConfigError(
                "rf_enhance_beta is a cosine-similarity cut and must be in [-1, 1) (default 0.4), "
                f"got {self.rf_enhance_beta}"
            )
        if self.rf_sink_sigma <= 0:
            raise ConfigError(f"rf_sink_sigma must be > 0 (default 5.0), got {self.rf_sink_sigma}")
        if self.rf_cluster_threshold < 0:
            raise ConfigError(f"rf_cluster_threshold must be >= 0, got {self.rf_cluster_threshold}")


@dataclass(frozen=True)
class CorrClipConfig:
    """CorrCLIP v1 (``zdk258/CorrCLIP``): region masks, DINO-scoped value attention, mask class tokens, mask vote."""

    # host: where the region masks come from when a call passes none
    corr_mask_source: MaskSource = "sam2"  # "sam2" automatic masks | "given" (masks required per call) | "none"
    corr_amg_points_per_side: int = 8  # SAM2 automatic masks: point grid (upstream's dynamic path: 8)
    corr_amg_points_per_batch: int = 64  # points per decoder call
    corr_amg_pred_iou_thresh: float = 0.4  # keep predicted IoU > this
    corr_amg_stability_thresh: float = 0.4  # keep stability >= this
    corr_amg_stability_offset: float = 1.0
    corr_amg_box_nms_thresh: float = 0.7
    corr_amg_multimask: bool = False  # three masks per point (all kept, as sam2's generator) instead of one
    corr_paint_order: PaintOrder = "ascending_area"  # ids painted small to large: larger masks overwrite smaller
    # graph/host: the attention scope
    corr_merge_eps: float = 0.2  # regions whose mean DINO features chain within this distance share an id
    corr_merge_distance: MergeDistance = "max_minus"  # "max_minus": max(G) - G as upstream; "one_minus": 1 - G
    corr_unsegmented: Unsegmented = "smallest"  # the smallest id present is "unsegmented" (upstream) or only id 0
    corr_scope_tau: float = 4.0  # temperature of the DINO similarity softmax
    corr_spatial_blocks: tuple[int, ...] = ()  # 0-based blocks averaged into the spatial branch; () = upstream's rule
    #                                             for the depth (12 blocks: 5..9; see spatial_blocks)
    corr_branch_weights: tuple[float, float] = (1.0, 0.5)  # weights of the spatial and the semantic branch
    # host: post-processing
    corr_mask_vote: bool = True  # each mask's pixels take their most frequent label

    def __post_init__(self) -> None:
        check_fields(self, FIELD_KINDS)
        _choice("corr_mask_source", self.corr_mask_source, ("sam2", "given", "none"))
        _choice("corr_merge_distance", self.corr_merge_distance, ("max_minus", "one_minus"))
        _choice("corr_unsegmented", self.corr_unsegmented, ("smallest", "zero"))
        _choice("corr_paint_order", self.corr_paint_order, ("ascending_area", "descending_area"))
        if self.corr_amg_points_per_side < 1 or self.corr_amg_points_per_batch < 1:
            raise ConfigError("corr_amg_points_per_side and corr_amg_points_per_batch must be >= 1")
        for name in ("corr_amg_pred_iou_thresh", "corr_amg_stability_thresh", "corr_amg_box_nms_thresh"):
            _unit(name, getattr(self, name))
        if self.corr_spatial_blocks and min(self.corr_spatial_blocks) < 0:
            raise ConfigError(f"corr_spatial_blocks must be non-negative block indices, got {self.corr_spatial_blocks}")
        if len(self.corr_branch_weights) != 2:
            raise ConfigError(f"corr_branch_weights must be (spatial, semantic), got {self.corr_branch_weights}")
        if self.corr_scope_tau <= 0 or self.corr_merge_eps < 0:
            raise ConfigError("corr_scope_tau must be > 0 and corr_merge_eps >= 0")


def spatial_blocks(cfg: CorrClipConfig, depth: int) -> tuple[int, ...]:
    """The trunk blocks whose outputs CorrCLIP's spatial branch averages: ``cfg.corr_spatial_blocks``, or upstream's
    rule: n = 5, 12, 28 for 12, 24, 32 blocks (else depth - 4), blocks depth-2-n .. depth-3."""
    if cfg.corr_spatial_blocks:
        return tuple(cfg.corr_spatial_blocks)
    n = {12: 5, 24: 12, 32: 28}.get(depth, depth - 4)
    return tuple(range(max(depth - 2 - n, 0), depth - 2))
