"""Published mIoU of the reference methods (the methods' READMEs), as data, with their sources.

Every number is copied from a method's public README or paper (the commits named in ``docs/algorithms.md``); none
was reproduced here. RF-CLIP's repository publishes no numbers: its rows are the RF-CLIP paper's table as quoted in
clipsam's issue 17, not checked against the paper. ``published(method, dataset)`` returns the rows an evaluation report puts beside its
own mIoU. The ResCLIP README's NACLIP rows are NACLIP *without* PAMR; the NACLIP README's own numbers
use PAMR (clipsam's ``naclip`` presets run it, so those are the like-for-like rows).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES = {
    "resclip": "ResCLIP README (yvhangyang/ResCLIP 0e085f7, figs/main_results_w.png and main_results_wo.png)",
    "sclip": "SCLIP README (wangf3014/SCLIP b56bd30)",
    "naclip": "NACLIP README (sinahmr/NACLIP 0cac3a6), with PAMR",
    "clearclip": "ClearCLIP README (mc-lan/ClearCLIP ad68a40), Table 2 (appendix), CLIP + ClearCLIP",
    "rfclip": "RF-CLIP paper (AAAI 2026) table as quoted in clipsam issue 17; UNVERIFIED (liblacklucy/RF-CLIP "
    "c2b333e has no numbers)",
    "corrclip": "CorrCLIP README (zdk258/CorrCLIP 103bc18, CorrCLIPv1 Results, ViT-B), MetaCLIP B/16",
}


@dataclass(frozen=True)
class PublishedResult:
    """One published mIoU (percent) of a method on a dataset."""

    method: str  # clipsam method name (resclip, resclip_sclip, resclip_clearclip, naclip, sclip, clearclip, rfclip, corrclip)
    dataset: str  # clipsam dataset / preset name
    backbone: str  # "B/16" or "L/14"
    miou: float
    source: str  # key of SOURCES
    setting: str = ""  # how the published setting differs from clipsam's preset, if it does

    @property
    def citation(self) -> str:
        return SOURCES[self.source]


_DS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")
# ResCLIP README, columns VOC21 PC60 Obj VOC20 PC59 Stuff City ADE.
_RESCLIP = {
    ("B/16", "sclip"): (59.1, 30.4, 30.5, 80.4, 34.2, 22.4, 32.2, 16.1),
    ("B/16", "resclip_sclip"): (60.7, 32.9, 34.3, 84.6, 35.8, 23.9, 34.4, 17.6),
    ("B/16", "clearclip"): (51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7),
    ("B/16", "resclip_clearclip"): (59.0, 32.9, 34.0, 87.1, 36.4, 24.3, 34.5, 17.8),
    ("B/16", "naclip"): (58.9, 32.2, 33.2, 79.7, 35.2, 23.3, 35.5, 17.4),
    ("B/16", "resclip"): (61.1, 33.5, 35.0, 86.0, 36.8, 24.7, 35.9, 18.0),
    ("L/14", "sclip"): (44.4, 22.3, 24.9, 60.3, 20.5, 13.1, 17.0, 7.1),
    ("L/14", "resclip_sclip"): (52.8, 28.7, 30.9, 83.9, 30.6, 21.2, 32.2, 15.8),
    ("L/14", "clearclip"): (48.7, 28.3, 29.7, 80.0, 29.6, 19.9, 27.9, 15.0),
    ("L/14", "resclip_clearclip"): (50.7, 29.8, 31.1, 84.2, 33.4, 22.3, 34.1, 17.9),
    ("L/14", "naclip"): (52.2, 28.7, 29.9, 78.7, 32.1, 21.4, 31.4, 17.3),
    ("L/14", "resclip"): (54.1, 30.9, 32.5, 85.5, 34.5, 23.4, 33.7, 18.2),
}
_SCLIP_README = dict(
    ade20k=16.45,
    cityscapes=32.34,
    coco_object=33.52,
    coco_stuff10k=25.91,
    coco_stuff164k=22.77,
    context59=34.46,
    context60=31.74,
    voc20=81.54,
    voc21=59.63,
)
_NACLIP_README = dict(
    voc21=64.07,
    context60=34.99,
    coco_object=36.19,
    voc20=83.03,
    cityscapes=38.27,
    context59=38.35,
    ade20k=19.05,
    coco_stuff164k=25.69,
)
# ClearCLIP README: VOC20 / PC59 / Stuff / City / ADE.
_CLEARCLIP_README = {
    "B/16": dict(voc20=80.9, context59=35.9, coco_stuff164k=23.9, cityscapes=30.0, ade20k=16.7),
    "L/14": dict(voc20=80.0, context59=29.6, coco_stuff164k=19.9, cityscapes=27.9, ade20k=15.0),
}


# RF-CLIP paper (as quoted in issue 17), without and with PAMR; columns as _RESCLIP
_RFCLIP = {
    "": (64.8, 36.4, 37.9, 87.0, 39.8, 26.3, 41.3, 20.4),
    "with PAMR (pamr_iters=10)": (67.2, 37.9, 39.1, 87.0, 41.4, 27.5, 43.0, 21.0),
}
# CorrCLIP v1 README, ViT-B rows: pre-generated SAM2 masks (32 points per side; clipsam's default is the code's
# dynamic 8-point path) and the dynamic SAM2 8-point row; columns as _RESCLIP
_CORRCLIP = {
    "SAM2 masks, 32 points per side, pre-generated (pass them as masks=)": (
        74.8,
        44.2,
        43.7,
        88.8,
        48.8,
        31.6,
        49.4,
        26.9,
    ),
    "SAM2 automatic masks, 8 points per side (the preset)": (73.9, 43.7, 43.6, 87.6, 48.0, 31.8, 47.9, 26.5),
}


def _build() -> tuple[PublishedResult, ...]:
    rows = []
    for (bb, method), values in _RESCLIP.items():
        setting = "without PAMR (clipsam's naclip presets run PAMR)" if method == "naclip" else ""
        rows += [PublishedResult(method, ds, bb, v, "resclip", setting) for ds, v in zip(_DS, values)]
    rows += [PublishedResult("sclip", ds, "B/16", v, "sclip") for ds, v in _SCLIP_README.items()]
    rows += [PublishedResult("naclip", ds, "B/16", v, "naclip", "with PAMR") for ds, v in _NACLIP_README.items()]
    for bb, table in _CLEARCLIP_README.items():
        rows += [PublishedResult("clearclip", ds, bb, v, "clearclip") for ds, v in table.items()]
    for setting, values in _RFCLIP.items():
        rows += [PublishedResult("rfclip", ds, "B/16", v, "rfclip", setting) for ds, v in zip(_DS, values)]
    for setting, values in _CORRCLIP.items():
        rows += [PublishedResult("corrclip", ds, "B/16", v, "corrclip", setting) for ds, v in zip(_DS, values)]
    return tuple(rows)


PUBLISHED: tuple[PublishedResult, ...] = _build()


def backbone_of(arch: str | None) -> str | None:
    """ "B/16" for "ViT-B-16" (and the like), "L/14" for "ViT-L-14"; None for any other architecture."""
    name = (arch or "").upper().replace("_", "-").replace("/", "-")
    for bb in ("B-16", "L-14"):
        if f"VIT-{bb}" in name:
            return bb.replace("-", "/")
    return None


def published(method: str, dataset: str, backbone: str | None = None) -> list[PublishedResult]:
    """The published rows for ``method`` on ``dataset``, optionally only one backbone ("B/16", "L/14")."""
    return [
        r
        for r in PUBLISHED
        if r.method == method and r.dataset == dataset and (backbone is None or r.backbone == backbone)
    ]
