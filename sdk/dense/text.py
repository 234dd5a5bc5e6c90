"""Text embeddings with open_clip (the PyTorch backend): prompts -> unit query embeddings.

Each query is formatted with every template, encoded in chunks of ``PROMPTS_PER_BATCH`` prompts, L2-normalised,
averaged over templates and renormalised (``docs/algorithms.md`` section 1).
"""

from __future__ import annotations

import numpy as np
import torch

from ..text import PROMPTS_PER_BATCH
from ..vocabulary import Vocabulary


def encode_tokens(model, tokens):
    """open_clip ``encode_text`` on sequences cut after their last end-of-text token.

    The text transformer is causal and pools at the EOT token (the largest id), so positions after the
    longest prompt's EOT cannot change the result; dropping them makes CLIP's 77-token context 4-6x cheaper.
    Falls back to ``encode_text`` for models that do not pool that way.
    """
    if getattr(model, "text_pool_type", "argmax") != "argmax" or not hasattr(model, "token_embedding"):
        return model.encode_text(tokens)
    n = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    mask = model.attn_mask[:n, :n] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def embed_prompts(model, tokenizer, prompts: list[str], device) -> np.ndarray:
    """(len(prompts), E) float32 raw (unnormalised) text embeddings as numpy, in chunks of 256 prompts.

    The encoder of ``clipsam.prompting.build_text_embeddings`` (context prompts, descriptions) on PyTorch.
    """
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), PROMPTS_PER_BATCH):
            tokens = tokenizer(list(prompts[i : i + PROMPTS_PER_BATCH])).to(device)
            chunks.append(encode_tokens(model, tokens).float().cpu())
    return torch.cat(chunks).numpy()


def encode_queries(model, tokenizer, vocab: Vocabulary, templates: tuple[str, ...], device) -> torch.Tensor:
    """Template-ensembled text embeddings.

    Arguments:
        model: open_clip CLIP model (fp32, eval).
        tokenizer: callable list[str] -> (n, context) int64 token ids.
        vocab: the vocabulary; every query is encoded.
        templates: format strings with one "{}".

    Returns:
        (Q, E) float32 tensor of unit-norm query embeddings on ``device``.
    """
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), PROMPTS_PER_BATCH):
            tokens = tokenizer(prompts[i : i + PROMPTS_PER_BATCH]).to(device)
            chunks.append(encode_tokens(model, tokens).float())
        f = torch.cat(chunks).view(len(vocab.queries), len(templates), -1)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(dim=1)
        return f / f.norm(dim=-1, keepdim=True)
