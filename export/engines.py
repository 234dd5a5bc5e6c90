"""``export_engines``: write a validated engine folder for one CLIP model, method and preset (+ optional SAM2).

Folder contents (names in ``io_names``):

    manifest.json            models, weight hashes, method/preset/DenseConfig, limits, opset, precision, per-graph
                             file/bytes/SHA-256/IO names/dynamic axes/TensorRT profile, validation rows, version
    clip_text.onnx           token ids -> text embeddings            clip_tokenizer.json + clip_bpe_vocab.txt.gz
    clip_dense.onnx          (no SFR)  or  clip_dense_trunk / clip_dense_pass1 / clip_dense_pass2.onnx (SFR)
                             or  clip_dense_rfclip.onnx (RF-CLIP: patch features and CLS embedding)
                             or  dino_features.onnx + clip_dense_corrclip.onnx (CorrCLIP: DINO, then the CLIP part
                             with the host's region inputs)
    sam2_image_encoder.onnx  sam2_prompt_decoder.onnx                 (with sam2=...)
    host_constants.npz       native positional embedding(s: CLIP's, DINO's); torch.linspace tables for SFR's path check
    trtexec.sh               one trtexec command per graph, with its min/opt/max shapes

Every graph is exported and validated by ``export_component`` (checker, then ONNX Runtime vs PyTorch); the parity
table is printed and stored in the manifest, which is written last: a folder without one is incomplete.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np

from clipsam import __version__
from clipsam.config import dense_config
from clipsam.engine.io_names import (
    BPE_FILE,
    CLIP_TEXT,
    FORMAT_VERSION,
    HOST_CONSTANTS_FILE,
    MANIFEST_FILE,
    SAM2_IMAGE_ENCODER,
    SAM2_PROMPT_DECODER,
    TOKENIZER_FILE,
    TRTEXEC_FILE,
    dense_graphs,
)
from clipsam.errors import ConfigError
from clipsam.hashing import state_dict_sha256

from .component import export_component, format_table
from .staging import staged_folder

_PARTS_SFR = ("trunk", "pass1", "pass2")


def _file_entry(path: Path) -> dict:
    from clipsam.hashing import file_sha256

    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _newest_opset() -> int:
    """The newest opset both torch's exporter and the installed onnx package know."""
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # no public name for it in torch 2.x
    except ImportError:  # pragma: no cover - a torch without it: the onnx package's bound alone
        return newest
    return min(newest, int(ONNX_MAX_OPSET))


def _load_clip(clip, clip_weights, quick_gelu=None):
    from clipsam.models import LoadedClip, load_clip

    return clip if isinstance(clip, LoadedClip) else load_clip(clip, clip_weights, quick_gelu=quick_gelu)


def _load_sam2(sam2, sam2_weights, sam2_random_weights: bool):
    from clipsam.refine.sam2_backend import Sam2Refiner

    if isinstance(sam2, Sam2Refiner):
        return sam2
    return Sam2Refiner.from_pretrained(sam2, weights=sam2_weights, random_weights=sam2_random_weights)


def _clip_info(loaded) -> dict:
    v = loaded.model.visual
    return {
        "arch": loaded.arch,
        "weights": loaded.weights_id,
        "weights_sha256": state_dict_sha256(loaded.model),
        "quick_gelu": loaded.quick_gelu,
        "patch": int(v.conv1.kernel_size[0]),
        "width": int(v.conv1.out_channels),
        "heads": int(v.transformer.resblocks[0].attn.num_heads),
        "layers": len(v.transformer.resblocks),
        "embed_dim": int(v.proj.shape[1]),
        "native_grid": int(round((v.positional_embedding.shape[0] - 1) ** 0.5)),
    }


def _host_constants(path: Path, visual, max_grid: int, dino=None) -> None:
    import torch

    tables = [torch.linspace(0, 1, steps=d + 1).numpy() for d in range(1, max(2, max_grid))]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tables])]).astype(np.int64)
    extra = {} if dino is None else {"dino_pos_embed": dino.pos_embed[0].detach().float().numpy()}
    np.savez(
        path,
        clip_pos_embed=visual.positional_embedding.detach().float().numpy(),
        sfr_linspace=np.concatenate(tables).astype(np.float32),
        sfr_linspace_offsets=offsets,
        **extra,
    )


def _load_dino(dino, dino_weights):
    """CorrCLIP's DINO: a timm ViT with 8-pixel patches (a module), or ``clipsam.dense.dino.load_dino(dino_weights)``."""
    if dino is not None:
        return dino.eval()
    from clipsam.dense.dino import load_dino

    return load_dino(dino_weights)


def _dino_info(dino) -> dict:
    return {
        "weights_sha256": state_dict_sha256(dino),
        "patch": int(dino.patch_embed.proj.kernel_size[0]),
        "width": int(dino.patch_embed.proj.out_channels),
        "layers": len(dino.blocks),
        "native_grid": int(round((dino.pos_embed.shape[1] - 1) ** 0.5)),
    }


def export_engines(
    out,
    *,
    clip="ViT-B-16",
    clip_weights="openai",
    method: str = "resclip",
    preset: str | None = "voc21",
    sam2=None,
    sam2_weights=None,
    sam2_random_weights: bool = False,
    precision: str = "fp32",
    opset: int = 17,
    max_batch: int | None = None,
    max_side: int = 1024,
    max_images: int = 4,
    max_prompts: int = 64,
    max_queries: int = 512,
    validate: bool = True,
    optimize: bool = True,
    overwrite: bool = False,
    log=print,
    quick_gelu: bool | None = None,
    dino=None,
    dino_weights="dino_vitb8",
    **overrides,
) -> dict:
    """Export, validate and describe the engines of one configuration.

    Arguments:
        out: engine folder to create (must be empty unless ``overwrite``).
        clip: open_clip architecture name / config JSON, or a ``clipsam.models.LoadedClip``.
        clip_weights: pretrained tag, checkpoint path or None (random) when ``clip`` is a name.
        quick_gelu: the weights' activation when ``clip`` is a name (``clipsam.models.load_clip``; None: detected).
        dino, dino_weights: ``method="corrclip"`` only: its DINO, a timm ViT module with 8-pixel patches, or None to
            load ``dino_weights`` (``clipsam.dense.dino.load_dino``: a checkpoint, "dino_vitb8", None for random).
        method, preset, overrides: the DenseConfig (``clipsam.config.dense_config``).
        sam2: None, a SAM2 model name ("sam2.1_hiera_t", ...) or a ``Sam2Refiner``.
        sam2_weights, sam2_random_weights: checkpoint (None: download) or random weights (tests).
        precision: "fp32" or "fp16" (IO stays fp32; ``fp16.FP16_OP_BLOCK_LIST`` stays fp32).
        opset: ONNX opset, >= 17.
        max_batch: windows per dense call (None: 8 when sliding, 2 for whole images, which batch only across
            equal-sized images and flips: TensorRT sizes its workspace for the largest profile);
        max_side: largest whole-image side (max_grid = max_side // patch);
        max_images, max_prompts, max_queries: SAM2 images per encoder call, prompts per decoder call, text queries
            (TensorRT profile bounds).
        validate: run the ONNX Runtime vs PyTorch parity cases (the checker always runs).
        log: printer of progress and of the validation table (None: silent).

    Returns:
        The manifest (dict), also written to ``out/manifest.json``.
    """
    from . import profiles

    log = log or (lambda *a, **k: None)
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if overrides.get("calibration", "none") != "none":
        raise ConfigError(
            f"calibration={overrides['calibration']!r} cannot be exported: the engines' dense graphs do not "
            "include visual calibration. Export with calibration='none'."
        )
    from clipsam.config import positive_int
    from clipsam.text import resolve_templates

    if positive_int(opset, "opset") < 17:
        raise ConfigError(
            f"opset must be 17 or newer (LayerNormalization and the attention graphs need it), got {opset}"
        )
    newest = _newest_opset()
    if opset > newest:
        raise ConfigError(
            f"opset {opset} is newer than this torch and onnx can export (at most {newest}); the default, 17, runs on "
            "every ONNX Runtime and TensorRT release clipsam supports"
        )
    for name, value in (
        ("max_side", max_side),
        ("max_images", max_images),
        ("max_prompts", max_prompts),
        ("max_queries", max_queries),
    ) + ((("max_batch", max_batch),) if max_batch is not None else ()):
        positive_int(value, name)
    cfg = dense_config(method, preset, **overrides)
    if cfg.attention.base == "corrclip" and cfg.corrclip.corr_mask_source == "sam2" and sam2 is None:
        raise ConfigError(
            "corrclip's automatic masks (corr_mask_source='sam2', the default) run on the SAM2 graphs: export them "
            "too (sam2='sam2.1_hiera_t'; CLI: --sam2 MODEL), or export for masks given per call "
            "(corr_mask_source='given'; CLI: --mask-source given) or without masks (corr_mask_source='none')"
        )
    resolve_templates(cfg.templates)  # a bad template fails now, not when the folder is first used
    out = Path(out)
    final = out
    with staged_folder(final, overwrite) as out:
        sc, att = cfg.schedule, cfg.attention
        max_batch = max_batch or (8 if sc.slide_crop > 0 else 2)
        loaded = _load_clip(clip, clip_weights, quick_gelu)
        from clipsam.dense.corrclip import CorrClipEncoder
        from clipsam.dense.encoder import DenseEncoder
        from clipsam.dense.rfclip import RFClipEncoder

        from .clip_dense import ClipDenseGraph, dense_cases
        from .clip_text import ClipTextGraph, text_cases, write_tokenizer_files
        from .corrclip_graphs import CorrClipDenseGraph, DinoFeaturesGraph, corrclip_cases
        from .rfclip_dense import RFClipDenseGraph, rfclip_cases

        encoder: DenseEncoder | RFClipEncoder | CorrClipEncoder
        dino_model = None
        if att.base == "rfclip":
            encoder = RFClipEncoder(loaded.model.visual, cfg)  # a ConfigError for sink channels beyond the width
        elif att.base == "corrclip":
            dino_model = _load_dino(dino, dino_weights)
            encoder = CorrClipEncoder(loaded.model.visual, dino_model, cfg)  # ConfigError: DINO patch, spatial blocks
        else:
            encoder = DenseEncoder(loaded.model.visual, cfg)
        info = _clip_info(loaded)
        p = info["patch"]
        if max_side < p:
            raise ConfigError(
                f"max_side={max_side} is smaller than one {p}-pixel patch of {loaded.arch}; give at least {p} "
                "(default 1024)"
            )
        max_grid = max_side // p
        graphs, rows = {}, []

        def add(io, module, example, cases, profile):
            log(f"clipsam export: {io.file} ...")
            rows.extend(
                export_component(
                    module,
                    example,
                    out / io.file,
                    io,
                    cases if validate else (),
                    opset=opset,
                    precision=precision,
                    optimize=optimize,
                )
            )
            graphs[io.name] = {
                **_file_entry(out / io.file),
                "inputs": list(io.inputs),
                "outputs": list(io.outputs),
                "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in io.dynamic_axes.items()},
                "profile": profile,
            }

        import open_clip

        tok = write_tokenizer_files(out, loaded.arch)
        example, cases = text_cases(loaded.model, open_clip.get_tokenizer(loaded.arch))
        from clipsam.text import PROMPTS_PER_BATCH

        add(
            CLIP_TEXT,
            ClipTextGraph(loaded.model),
            (example,),
            cases,
            profiles.text_profile(tok["context_length"], PROMPTS_PER_BATCH),
        )
        n = info["native_grid"]
        sizes = [(2, 4 * p, 5 * p), (1, 3 * p + 7, 2 * p), (1, n * p, n * p)]
        vocab_q = 32
        if cfg.vocabulary:
            from clipsam.vocabulary import builtin_vocabulary

            vocab_q = builtin_vocabulary(cfg.vocabulary).num_queries
        queries = (1, min(vocab_q, max_queries), max_queries)
        if isinstance(encoder, CorrClipEncoder) and dino_model is not None:
            # windows padded to multiples of 56 (the DINO grid a multiple of 7): a batch of 2, a wide one, a native one
            (dex, dcases), (cex, ccases) = corrclip_cases(encoder, [(2, 112, 112), (1, 112, 168), (1, 224, 224)])
            dino_width = int(dino_model.patch_embed.proj.out_channels)
            dino_io, clip_io = dense_graphs("corrclip", False, False)
            for io, graph, example, cases in (
                (dino_io, DinoFeaturesGraph(dino_model), dex, dcases),
                (clip_io, CorrClipDenseGraph(encoder), cex, ccases),
            ):
                profile = profiles.dense_profile(io.inputs, cfg, info, max_batch, max_side, queries, dino_width)
                add(io, graph, example, cases, profile)
        else:
            parts = _PARTS_SFR if att.sfr else ("full",)
            for io, part in zip(dense_graphs(att.base, att.rcs, att.sfr), parts):
                profile = profiles.dense_profile(io.inputs, cfg, info, max_batch, max_side, queries)
                if isinstance(encoder, RFClipEncoder):
                    example, cases = rfclip_cases(encoder, sizes)
                    add(io, RFClipDenseGraph(encoder), example, cases, profile)
                else:
                    example, cases = dense_cases(encoder, part, sizes)
                    add(io, ClipDenseGraph(encoder, part), example, cases, profile)

        sam2_info = None
        if sam2 is not None:
            from .sam2_graphs import Sam2DecoderGraph, Sam2EncoderGraph, decoder_cases, encoder_cases
            from .sam2_graphs import sam2_info as _info

            refiner = _load_sam2(sam2, sam2_weights, sam2_random_weights)
            model = refiner.model
            sam2_info = {"model": refiner.name, "weights_sha256": state_dict_sha256(model), **_info(model)}
            example, cases = encoder_cases(model, (2, 1))
            add(
                SAM2_IMAGE_ENCODER,
                Sam2EncoderGraph(model),
                example,
                cases,
                profiles.sam2_encoder_profile(sam2_info["image_size"], max_images),
            )
            example, cases = decoder_cases(model)
            add(
                SAM2_PROMPT_DECODER,
                Sam2DecoderGraph(model),
                example,
                cases,
                profiles.sam2_decoder_profile(sam2_info["embed_size"], max_prompts, (1, 3, 16)),
            )

        _host_constants(out / HOST_CONSTANTS_FILE, loaded.model.visual, max_grid, dino_model)
        lines = [
            "#!/bin/sh",
            "# TensorRT engines built on the device (e.g. Jetson) from this folder's graphs.",
            "# Shape profiles follow clipsam's scheduler; the ONNX Runtime TensorRT provider uses the same ones.",
            "set -e",
            'cd "$(dirname "$0")"',
        ]
        lines += [profiles.trtexec_line(g["file"], g["profile"], precision == "fp16") for g in graphs.values()]
        (out / TRTEXEC_FILE).write_text("\n".join(lines) + "\n")
        os.chmod(out / TRTEXEC_FILE, 0o755)
        import onnx
        import onnxruntime
        import torch

        manifest = {
            "format": FORMAT_VERSION,
            "clipsam_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "exported_with": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            },
            "precision": precision,
            "opset": opset,
            "method": cfg.method,
            "preset": cfg.preset,
            "dense_config": cfg.to_dict(),
            "clip": info,
            "tokenizer": tok,
            "sam2": sam2_info,
            **({"dino": _dino_info(dino_model)} if dino_model is not None else {}),
            "input_sizes": {
                "clip_native": info["native_grid"] * p,
                "patch": p,
                "dense_windows": (
                    f"{sc.slide_crop}x{sc.slide_crop} sliding, stride {sc.slide_stride}"
                    if sc.slide_crop
                    else f"whole image, short side {sc.short_side}, up to {max_side} px a side"
                ),
                "text_context": tok["context_length"],
                "sam2_image": sam2_info["image_size"] if sam2_info else None,
            },
            "limits": {
                "max_batch": max_batch,
                "max_side": max_side,
                "max_grid": max_grid,
                "max_images": max_images,
                "max_prompts": max_prompts,
                "max_queries": max_queries,
            },
            "host_steps": "numpy between graphs: positional-embedding resize, NACLIP window, SFR (upsample, PAMR, softmax, "
            "patch labels, S_hat), RF-CLIP's window head (query clusters, image-adaptive text, global-semantics blend), "
            "CorrCLIP's region steps (DINO positional embedding, regions at the DINO grid, merging, scope softmax, mask "
            "class token masks, mask vote), stitching, post-processing, SAM2 pre/post-processing",
            "graphs": graphs,
            "files": {
                "tokenizer": _file_entry(out / TOKENIZER_FILE),
                "bpe": _file_entry(out / BPE_FILE),
                "host_constants": _file_entry(out / HOST_CONSTANTS_FILE),
                "trtexec": _file_entry(out / TRTEXEC_FILE),
            },
            "validation": [r.as_dict() for r in rows],
        }
        from clipsam.engine.manifest import seal_manifest

        manifest["graph_settings"] = seal_manifest(manifest)  # the graph-baked fields, sealed with the graphs' SHA-256
        if rows:
            log(format_table(rows))
        (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    log(f"clipsam export: wrote {len(graphs)} graphs to {final}")
    return manifest
