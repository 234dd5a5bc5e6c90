"""Trace-safe wrapper of the CLIP text encoder, its parity cases, and the tokenizer files the runtime reads.

``ClipTextGraph``: token ids (T, L) int64 -> text embeddings (T, C) (before normalisation), for any L <= the
context length: the runtime, like ``clipsam.dense.text.encode_tokens``, cuts every chunk of prompts after its longest
end-of-text token (the causal mask makes later positions irrelevant), which makes CLIP's 77-token context 4-6x
cheaper. The EOT token is found with ``argmax`` over the ids (open_clip ``text_pool_type="argmax"``) and gathered
with ``gather`` (trace-safe for a dynamic T). The residual blocks are restated with explicit q/k/v projections and
``scaled_dot_product_attention`` (what ``nn.MultiheadAttention`` computes on this path): the legacy tracer freezes
the sequence length inside ``nn.MultiheadAttention``'s reshapes, which would break the dynamic L.

``write_tokenizer_files``: open_clip's BPE merges file is copied into the engine folder with
``clip_tokenizer.json`` (context length, merges used, special tokens), so ``clipsam.engine.ClipTokenizer`` encodes
text without torch, open_clip or regex.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipsam.engine.io_names import BPE_FILE, TOKENIZER_FILE
from clipsam.errors import ConfigError

from .component import ParityCase

_CASE_PROMPTS = (
    "a photo of a cat.",
    "itap of the large sofa.",
    "a bad photo of the tvmonitor.",
    "art of the sky.",
    "a photo of many people sitting around a wooden dining table in the evening.",
    "x",
)


def check_text_model(model) -> None:
    """Raise ConfigError unless ``model`` is an open_clip CLIP whose text tower the wrapper supports."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", [])
    plain = all(
        isinstance(getattr(b, "attn", None), nn.MultiheadAttention) and not hasattr(b, "ln_1_kv") for b in blocks
    ) and getattr(model.transformer, "batch_first", True)
    if getattr(model, "text_pool_type", None) != "argmax" or not hasattr(model, "token_embedding") or not plain:
        raise ConfigError(
            "the text encoder export supports open_clip CLIP models with an argmax (EOT) text pool, such as the "
            f"OpenAI ViT models; {type(model).__name__} with text_pool_type={getattr(model, 'text_pool_type', None)!r} "
            "is not supported"
        )


class ClipTextGraph(nn.Module):
    """token_ids (T, L) -> (T, C) projected EOT features, exactly ``clipsam.dense.text.encode_tokens`` for L tokens."""

    def __init__(self, model):
        super().__init__()
        check_text_model(model)
        self.model = model

    @staticmethod
    def _attention(block, x: torch.Tensor, mask) -> torch.Tensor:
        attn = block.attn
        b, n, d = x.shape
        heads = attn.num_heads
        qkv = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = token_ids.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(token_ids).to(cast) + m.positional_embedding[:n].to(cast)
        mask = m.attn_mask[:n, :n].to(cast) if m.attn_mask is not None else None
        for block in m.transformer.resblocks:
            x = x + block.ls_1(self._attention(block, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = m.ln_final(x)
        eot = token_ids.argmax(dim=-1)
        x = x.gather(1, eot[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)
        proj = m.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _tokens(tokenizer, prompts) -> torch.Tensor:
    t = tokenizer(list(prompts))
    n = int(t.argmax(dim=-1).max()) + 1
    return t[:, :n]


def text_cases(model, tokenizer):
    """Example token batch and ``ParityCase``s (two batch sizes and lengths) against ``encode_tokens``."""
    from clipsam.dense.text import encode_tokens

    example = _tokens(tokenizer, _CASE_PROMPTS[:3])
    cases = []
    for prompts in (_CASE_PROMPTS, _CASE_PROMPTS[5:]):
        tokens = _tokens(tokenizer, prompts)
        with torch.inference_mode():
            ref = encode_tokens(model, tokens).float()
        cases.append(
            ParityCase(
                f"{len(prompts)} prompts, {tokens.shape[1]} tokens",
                {"token_ids": tokens.numpy()},
                {"text_embeddings": ref.numpy()},
            )
        )
    return example, cases


def write_tokenizer_files(folder, arch: str) -> dict:
    """Copy open_clip's BPE vocabulary and write ``clip_tokenizer.json``; returns the tokenizer description.

    Raises:
        ConfigError: the architecture's tokenizer is not open_clip's ``SimpleTokenizer`` with "lower" cleaning.
    """
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower, default_bpe

    tok = open_clip.get_tokenizer(arch)
    if not isinstance(tok, SimpleTokenizer) or tok.clean_fn is not _clean_lower or tok.reduction_fn is not None:
        raise ConfigError(
            f"the tokenizer of {arch!r} ({type(tok).__name__}) is not CLIP's BPE SimpleTokenizer; "
            "only CLIP-tokenized models can be exported for the torch-free runtime"
        )
    folder = Path(folder)
    shutil.copyfile(default_bpe(), folder / BPE_FILE)
    special = [tok.decoder[i] for i in tok.all_special_ids]
    desc = {
        "context_length": int(tok.context_length),
        "num_merges": len(tok.bpe_ranks),
        "special_tokens": special,
        "sot_token_id": int(tok.sot_token_id),
        "eot_token_id": int(tok.eot_token_id),
        "clean": "lower",
        "vocab_size": int(tok.vocab_size),
    }
    (folder / TOKENIZER_FILE).write_text(json.dumps(desc, indent=2))
    # the numpy tokenizer must reproduce open_clip on the files just written
    from clipsam.engine.tokenizer import ClipTokenizer

    ours = ClipTokenizer.from_folder(folder, TOKENIZER_FILE, BPE_FILE)
    if not np.array_equal(ours(list(_CASE_PROMPTS)), tok(list(_CASE_PROMPTS)).numpy()):
        raise ConfigError(f"the torch-free tokenizer disagrees with open_clip's for {arch!r}")
    return desc
