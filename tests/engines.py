"""Engine folders for the tests, exported once per session (fixtures in tests/conftest.py).

Models: the tiny 12-block test ViT (random weights, ``tests/configs/clipsam-test-vit.json``) and SAM2.1 hiera-t, the
real architecture, built at 256 px instead of 1024 (16x cheaper; every shape follows ``image_size``). Two templates
keep the text encoder cheap. ``build`` is memoised at module level.
"""

from __future__ import annotations

import warnings

TEMPLATES = ("a photo of a {}.", "a sketch of the {}.")
SAM2_SIZE = 256
SPECS = {
    "resclip": dict(method="resclip", preset="voc21", sam2=True),  # SFR split + SAM2
    "resclip_fp16": dict(method="resclip", preset="voc21", sam2=True, precision="fp16"),
    "naclip": dict(method="naclip", preset="voc21"),  # whole image, Omega, final PAMR
    "clearclip": dict(method="clearclip", preset="context59"),  # sliding, padded crops, plain vocabulary
    "sclip": dict(method="sclip", preset="voc21"),  # sliding, residual last block, area_thd
}
_CACHE: dict = {}


def tiny_sam2():
    """A Sam2Refiner: SAM2.1 hiera-t at 256 px, random weights (seed 0)."""
    if "sam2" not in _CACHE:
        import torch
        from sam2.build_sam import build_sam2

        from clipsam.refine.sam2_backend import MODELS, Sam2Refiner

        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            model = build_sam2(
                MODELS["sam2.1_hiera_t"][0],
                None,
                device="cpu",
                hydra_overrides_extra=[f"++model.image_size={SAM2_SIZE}"],
            )
        _CACHE["sam2"] = Sam2Refiner(model, "sam2.1_hiera_t")
    return _CACHE["sam2"]


def build(name: str, tiny_clip, tmp_path_factory):
    """Path of the engine folder ``name`` (``SPECS``), exported on first use."""
    if name not in _CACHE:
        from clipsam.export import export_engines

        spec = dict(SPECS[name])
        sam2 = tiny_sam2() if spec.pop("sam2", False) else None
        out = tmp_path_factory.mktemp(f"engine_{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_engines(out, clip=tiny_clip, sam2=sam2, templates=TEMPLATES, log=None, **spec)
        _CACHE[name] = out
    return _CACHE[name]
