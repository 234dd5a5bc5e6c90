"""TensorRT shape profiles of every graph, and the ``trtexec`` command lines written next to the graphs.

Profiles follow the pipeline's plan (``clipsam.pipeline.plan``): the dense graphs' batch axis spans
``batch_sizes`` (1 .. max_batch windows, opt = the windows of a typical 4:3 image; 1 for whole-image presets) and
their crops ``crop_sizes`` (one patch .. one crop, or .. max_side for whole images); token counts follow from the
crop (N1 = 1 + (H/p)(W/p)). The same profiles are passed to ONNX Runtime's TensorRT provider at run time
(``trt_profile_{min,opt,max}_shapes``) and written as ``--minShapes/--optShapes/--maxShapes`` for users who build
engines on the device with ``trtexec`` (Jetson).
"""

from __future__ import annotations

from clipsam.config import DenseConfig
from clipsam.pipeline.windows import pad_to_patch, window_grid
from clipsam.preprocess import resize_shape

_LEVELS = ("min", "opt", "max")
TYPICAL_ASPECT = 4 / 3  # the "opt" profile shape: a landscape 4:3 photo


def _typical(cfg: DenseConfig) -> tuple[int, int]:
    sc = cfg.schedule
    return resize_shape(sc.short_side, int(round(sc.short_side * TYPICAL_ASPECT)), sc.short_side, sc.long_side)


def batch_sizes(cfg: DenseConfig, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) windows per encoder call: opt = the windows of one typical 4:3 image (x flips), capped.

    Whole-image windows batch only across images (and flips) of identical size, so their opt is 1 (x flips).
    """
    sc = cfg.schedule
    h, w = _typical(cfg)
    n = len(window_grid(h, w, sc.slide_crop, sc.slide_stride)) if sc.slide_crop > 0 else 1
    n *= 2 if sc.flip else 1
    return 1, max(1, min(n, max_batch)), max_batch


def crop_sizes(cfg: DenseConfig, patch: int, max_side: int):
    """(min, opt, max) encoder input (H, W): one patch .. a full (padded) crop, or .. ``max_side`` (whole image).

    RF-CLIP's graph also encodes whole images when its sliding windows take the image's CLS embedding (and a run may
    switch to that): its max is ``max_side`` for every preset.
    """
    sc = cfg.schedule
    if sc.slide_crop > 0:
        c = sc.slide_crop
        multiple = sc.pad_multiple or patch
        full = c + sum(pad_to_patch(c, c, multiple)[:2]) if sc.pad_crops else c
        if cfg.attention.base == "rfclip":
            full = max(full, max_side)
        low = multiple if cfg.attention.base == "corrclip" else patch  # CorrCLIP pads every window to 56
        return (low, low), (c, c), (full, full)
    return (patch, patch), _typical(cfg), (max_side, max_side)


def _tokens(hw, patch: int) -> int:
    return 1 + (hw[0] // patch) * (hw[1] // patch)


def dense_profile(
    inputs,
    cfg: DenseConfig,
    clip: dict,
    max_batch: int,
    max_side: int,
    queries: tuple[int, int, int],
    dino_width: int = 0,
):
    """min/opt/max shapes of a dense graph's inputs (``inputs``: the graph's input names). CorrCLIP's inputs use
    its DINO grid (stride 8, ``dino_width`` channels): cells = (H/8)(W/8); mask class tokens from 1 (min) to one per
    CLIP patch (max)."""
    p, width, heads = clip["patch"], clip["width"], clip["heads"]
    layers = len(cfg.attention.rcs_layers)
    batches, crops = batch_sizes(cfg, max_batch), crop_sizes(cfg, p, max_side)
    out = {}
    for level, b, hw, q in zip(_LEVELS, batches, crops, queries):
        n1 = _tokens(hw, p)
        cells = (hw[0] // 8) * (hw[1] // 8)
        shapes = {
            "crops": (b, 3, *hw),
            "pos_embed": (n1, width),
            "window_bias": (n1, n1),
            "text_embeddings": (q, clip["embed_dim"]),
            "tokens": (b, n1, width),
            "rcs_q": (layers, b, heads, n1, width // heads),
            "rcs_k": (layers, b, heads, n1, width // heads),
            "sfr_bias": (b, n1, n1),
            "dino_pos_embed": (1 + cells, dino_width),
            "scope_attention": (b, cells, cells),
            "mct_allow": (b, {"min": 1, "opt": min(16, n1 - 1), "max": n1 - 1}[level], n1),
            "mct_index": (b, cells),
        }
        out[level] = {name: list(shapes[name]) for name in inputs}
    return out


def text_profile(context_length: int, chunk: int):
    """token_ids (prompts, length): one short prompt .. a full chunk of full-length prompts."""
    return {
        "min": {"token_ids": [1, 2]},
        "opt": {"token_ids": [chunk, 16]},
        "max": {"token_ids": [chunk, context_length]},
    }


def sam2_encoder_profile(image_size: int, max_images: int):
    s = image_size
    return {"min": {"image": [1, 3, s, s]}, "opt": {"image": [1, 3, s, s]}, "max": {"image": [max_images, 3, s, s]}}


def sam2_decoder_profile(embed_size: int, max_prompts: int, points: tuple[int, int, int]):
    e = embed_size
    out = {}
    for level, p, k in zip(_LEVELS, (1, min(16, max_prompts), max_prompts), points):
        out[level] = {
            "image_embed": [1, 256, e, e],
            "high_res_feats_0": [1, 32, 4 * e, 4 * e],
            "high_res_feats_1": [1, 64, 2 * e, 2 * e],
            "point_coords": [p, k, 2],
            "point_labels": [p, k],
            "mask_input": [p, 1, 4 * e, 4 * e],
            "has_mask_input": [p],
        }
    return out


def trtexec_line(onnx_file: str, profile: dict | None, fp16: bool) -> str:
    """``trtexec`` command building a TensorRT engine for one graph with its shape profile."""
    engine = onnx_file[: -len(".onnx")] + (".fp16" if fp16 else "") + ".engine"
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine}"]
    if profile:
        for level, flag in zip(_LEVELS, ("--minShapes", "--optShapes", "--maxShapes")):
            dims = ",".join(f"{n}:{'x'.join(str(d) for d in s)}" for n, s in profile[level].items())
            parts.append(f"{flag}={dims}")
    if fp16:
        parts.append("--fp16")
    return " ".join(parts)
