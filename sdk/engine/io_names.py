"""Names, files and dynamic axes of every exported graph: defined once, imported by the exporter and the runtime.

This module is torch-free: the runtime owns the engine format, and the exporter imports it. Each graph is a ``GraphIO``: file name,
ordered input and output names, and the dynamic axes of each tensor (axis -> symbolic name). Shapes, with
``B`` windows or images, ``N1 = 1 + h*w`` tokens of an ``h x w`` patch grid, ``Q`` queries, ``P`` prompts,
``K`` points per prompt, ``E`` the SAM2 embedding side (``image_size // 16``):

    clip_text            token_ids (T, L) int64                -> text_embeddings (T, C) (not normalised)
    clip_dense           crops (B,3,H,W), pos_embed (N1,D), [window_bias (N1,N1)], text_embeddings (Q,C)
                                                                -> patch_logits (B, Q, h*w)
    clip_dense_trunk     crops, pos_embed                      -> tokens (B,N1,D), rcs_q, rcs_k (L,B,heads,N1,d)
    clip_dense_pass1     tokens, [rcs_q, rcs_k], [window_bias], text_embeddings -> patch_logits
    clip_dense_pass2     ... + sfr_bias (B,N1,N1) = float32(fp16(lambda_sfr * S_hat))  -> patch_logits
    clip_dense_rfclip    crops, pos_embed                      -> patch_features (B, h*w, C), cls_embedding (B, C)
                                                                  (RF-CLIP; its window head runs on the host)
    dino_features        crops (B,3,H,W), dino_pos_embed (1+Ld,Dd) -> dino_features (B, Ld, Dd) unit q+k of DINO's last
                                                                  block (CorrCLIP; Ld = (H/8)(W/8))
    clip_dense_corrclip  crops, pos_embed, scope_attention (B,Ld,Ld), mct_allow (B,NR,N1) bool, mct_index (B,Ld) int64,
                         text_embeddings (Q,C)                  -> patch_logits (B, Q, Ld) on the DINO grid
                                                                  (CorrCLIP; regions, scope and MCT masks from the host)
    sam2_image_encoder   image (B,3,S,S)                       -> image_embed (B,256,E,E),
                                                                  high_res_feats_0 (B,32,4E,4E), high_res_feats_1 (B,64,2E,2E)
    sam2_prompt_decoder  image_embed (1,..), high_res_feats_0/1 (1,..), point_coords (P,K,2) (model-input pixels),
                         point_labels (P,K) float, mask_input (P,1,4E,4E), has_mask_input (P,)
                                                                -> masks (P,4,4E,4E) logits, iou_predictions (P,4),
                                                                   object_score_logits (P,1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMAT_VERSION = 2  # engine-folder layout version (2: graph_settings sealed); the runtime refuses other versions
MANIFEST_FILE = "manifest.json"
HOST_CONSTANTS_FILE = "host_constants.npz"  # native CLIP positional embedding, torch.linspace tables for SFR
TOKENIZER_FILE = "clip_tokenizer.json"  # context length, special ids, cleaning mode
BPE_FILE = "clip_bpe_vocab.txt.gz"  # open_clip's bpe_simple_vocab_16e6.txt.gz, copied at export time
TRTEXEC_FILE = "trtexec.sh"  # one trtexec command line per graph (TensorRT engines built on the device)


@dataclass(frozen=True)
class GraphIO:
    """One ONNX graph's contract.

    Attributes:
        name: graph name (the file is ``<name>.onnx``).
        inputs: input names, in order.
        outputs: output names, in order.
        dynamic_axes: tensor name -> {axis: symbolic dimension name}.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def without(self, *names: str) -> GraphIO:
        """The same graph without the inputs ``names`` (optional inputs a configuration does not use)."""
        return GraphIO(
            self.name,
            tuple(n for n in self.inputs if n not in names),
            self.outputs,
            {k: v for k, v in self.dynamic_axes.items() if k not in names},
        )


_CROPS = {0: "batch", 2: "height", 3: "width"}
_TOKENS = {0: "batch", 1: "tokens"}
_RCS = {1: "batch", 3: "tokens"}
_LOGITS = {0: "batch", 1: "queries", 2: "patches"}
_DENSE_COMMON = {
    "pos_embed": {0: "tokens"},
    "window_bias": {0: "tokens", 1: "tokens"},
    "text_embeddings": {0: "queries"},
    "patch_logits": _LOGITS,
}

CLIP_TEXT = GraphIO(
    "clip_text",
    ("token_ids",),
    ("text_embeddings",),
    {"token_ids": {0: "prompts", 1: "length"}, "text_embeddings": {0: "prompts"}},
)
CLIP_DENSE = GraphIO(
    "clip_dense",
    ("crops", "pos_embed", "window_bias", "text_embeddings"),
    ("patch_logits",),
    {"crops": _CROPS, **_DENSE_COMMON},
)
CLIP_DENSE_TRUNK = GraphIO(
    "clip_dense_trunk",
    ("crops", "pos_embed"),
    ("tokens", "rcs_q", "rcs_k"),
    {"crops": _CROPS, "pos_embed": {0: "tokens"}, "tokens": _TOKENS, "rcs_q": _RCS, "rcs_k": _RCS},
)
CLIP_DENSE_PASS1 = GraphIO(
    "clip_dense_pass1",
    ("tokens", "rcs_q", "rcs_k", "window_bias", "text_embeddings"),
    ("patch_logits",),
    {"tokens": _TOKENS, "rcs_q": _RCS, "rcs_k": _RCS, **_DENSE_COMMON},
)
CLIP_DENSE_PASS2 = GraphIO(
    "clip_dense_pass2",
    ("tokens", "rcs_q", "rcs_k", "window_bias", "text_embeddings", "sfr_bias"),
    ("patch_logits",),
    {
        "tokens": _TOKENS,
        "rcs_q": _RCS,
        "rcs_k": _RCS,
        "sfr_bias": {0: "batch", 1: "tokens", 2: "tokens"},
        **_DENSE_COMMON,
    },
)
CLIP_DENSE_RFCLIP = GraphIO(
    "clip_dense_rfclip",
    ("crops", "pos_embed"),
    ("patch_features", "cls_embedding"),
    {
        "crops": _CROPS,
        "pos_embed": {0: "tokens"},
        "patch_features": {0: "batch", 1: "patches"},
        "cls_embedding": {0: "batch"},
    },
)
DINO_FEATURES = GraphIO(
    "dino_features",
    ("crops", "dino_pos_embed"),
    ("dino_features",),
    {"crops": _CROPS, "dino_pos_embed": {0: "dino_tokens"}, "dino_features": {0: "batch", 1: "cells"}},
)
CLIP_DENSE_CORRCLIP = GraphIO(
    "clip_dense_corrclip",
    ("crops", "pos_embed", "scope_attention", "mct_allow", "mct_index", "text_embeddings"),
    ("patch_logits",),
    {
        "crops": _CROPS,
        "pos_embed": {0: "tokens"},
        "scope_attention": {0: "batch", 1: "cells", 2: "cells"},
        "mct_allow": {0: "batch", 1: "regions", 2: "tokens"},
        "mct_index": {0: "batch", 1: "cells"},
        "text_embeddings": {0: "queries"},
        "patch_logits": {0: "batch", 1: "queries", 2: "cells"},
    },
)
SAM2_IMAGE_ENCODER = GraphIO(
    "sam2_image_encoder",
    ("image",),
    ("image_embed", "high_res_feats_0", "high_res_feats_1"),
    {
        "image": {0: "batch"},
        "image_embed": {0: "batch"},
        "high_res_feats_0": {0: "batch"},
        "high_res_feats_1": {0: "batch"},
    },
)
SAM2_PROMPT_DECODER = GraphIO(
    "sam2_prompt_decoder",
    (
        "image_embed",
        "high_res_feats_0",
        "high_res_feats_1",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
    ),
    ("masks", "iou_predictions", "object_score_logits"),
    {
        "point_coords": {0: "prompts", 1: "points"},
        "point_labels": {0: "prompts", 1: "points"},
        "mask_input": {0: "prompts"},
        "has_mask_input": {0: "prompts"},
        "masks": {0: "prompts"},
        "iou_predictions": {0: "prompts"},
        "object_score_logits": {0: "prompts"},
    },
)

GRAPHS = {
    g.name: g
    for g in (
        CLIP_TEXT,
        CLIP_DENSE,
        CLIP_DENSE_TRUNK,
        CLIP_DENSE_PASS1,
        CLIP_DENSE_PASS2,
        CLIP_DENSE_RFCLIP,
        DINO_FEATURES,
        CLIP_DENSE_CORRCLIP,
        SAM2_IMAGE_ENCODER,
        SAM2_PROMPT_DECODER,
    )
}


def dense_graphs(base: str, rcs: bool, sfr: bool) -> tuple[GraphIO, ...]:
    """The dense graphs of a configuration, with the inputs it does not use removed.

    Without SFR: one graph, ``clip_dense``. With SFR (ResCLIP): ``clip_dense_trunk`` (blocks 0..L-2, run once),
    ``clip_dense_pass1`` and ``clip_dense_pass2`` (the last block, before and after the host SFR steps).
    ``window_bias`` (NACLIP's Omega) is an input only for the ``naclip`` base; ``rcs_q``/``rcs_k`` only with RCS.
    RF-CLIP (base ``rfclip``): one graph, ``clip_dense_rfclip`` (the encoder; the window head runs on the host).
    CorrCLIP (base ``corrclip``): ``dino_features`` then ``clip_dense_corrclip`` (the region steps run on the host
    between them, ``clipsam.ops.corrclip``).
    """
    if base == "rfclip":
        return (CLIP_DENSE_RFCLIP,)
    if base == "corrclip":
        return (DINO_FEATURES, CLIP_DENSE_CORRCLIP)
    unused = () if base == "naclip" else ("window_bias",)
    if not sfr:
        return (CLIP_DENSE.without(*unused),)
    trunk = (
        CLIP_DENSE_TRUNK
        if rcs
        else GraphIO(
            CLIP_DENSE_TRUNK.name,
            CLIP_DENSE_TRUNK.inputs,
            ("tokens",),
            {k: v for k, v in CLIP_DENSE_TRUNK.dynamic_axes.items() if k not in ("rcs_q", "rcs_k")},
        )
    )
    no_rcs = () if rcs else ("rcs_q", "rcs_k")
    return trunk, CLIP_DENSE_PASS1.without(*unused, *no_rcs), CLIP_DENSE_PASS2.without(*unused, *no_rcs)
