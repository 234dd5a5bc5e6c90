"""Text embeddings with open_clip (the PyTorch backend): prompts -> unit query embeddings.

Each query is formatted with every template; all prompts are tokenized, sorted by length and encoded in chunks of
``PROMPTS_PER_BATCH``, each chunk cut after its own longest end-of-text token (``clipsam.text.length_buckets``).
Each embedding is L2-normalised and added to its query's sum as its chunk finishes, so working memory is one
chunk's activations plus (Q, E) sums; the sums are averaged over templates and renormalised (``docs/algorithms.md``
section 1).
"""

from __future__ import annotations

import numpy as np
import torch

from ..progress import text_bar
from ..text import PROMPTS_PER_BATCH, length_buckets
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


def encode_buckets(model, tokenizer, prompts: list[str], device, progress=None, chunk: int = PROMPTS_PER_BATCH):
    """Yield (indices (n,) int64 numpy, (n, E) float32 raw embeddings on ``device``) per length bucket.

    Every prompt appears in exactly one bucket; buckets come in order of increasing token length. Run inside
    ``torch.inference_mode()``.
    """
    tokens = tokenizer(list(prompts))  # (N, context) int64 on the CPU
    eot = tokens.argmax(dim=-1).numpy()
    if len(eot):
        tokens = tokens[:, : int(eot.max()) + 1].clone()  # keep N x (longest prompt), not N x 77
    for idx, n in length_buckets(eot, chunk):
        x = tokens[torch.from_numpy(idx), :n].to(device)
        yield idx, encode_tokens(model, x).float()
        if progress is not None:
            progress.update(len(idx))


def embed_prompts(
    model, tokenizer, prompts: list[str], device, progress: bool = False, chunk: int = PROMPTS_PER_BATCH
) -> np.ndarray:
    """(len(prompts), E) float32 raw (unnormalised) text embeddings as numpy, in input order (length-bucketed).

    The encoder of ``clipsam.prompting.build_text_embeddings`` (context prompts, descriptions) on PyTorch.
    """
    out = None
    bar = text_bar(len(prompts), progress)
    try:
        with torch.inference_mode():
            for idx, f in encode_buckets(model, tokenizer, prompts, device, bar, chunk):
                if out is None:
                    out = np.empty((len(prompts), f.shape[-1]), np.float32)
                out[idx] = f.cpu().numpy()
    finally:
        bar.close()
    return out if out is not None else np.zeros((0, 0), np.float32)


def encode_queries(
    model,
    tokenizer,
    vocab: Vocabulary,
    templates: tuple[str, ...],
    device,
    progress: bool = False,
    chunk: int = PROMPTS_PER_BATCH,
) -> torch.Tensor:
    """Template-ensembled text embeddings.

    Arguments:
        model: open_clip CLIP model (fp32, eval).
        tokenizer: callable list[str] -> (n, context) int64 token ids.
        vocab: the vocabulary; every query is encoded.
        templates: format strings with one "{}".
        device: where the encoder runs.
        progress: a progress bar on stderr (``clipsam.progress.text_bar``: large vocabularies only).
        chunk: most prompts per encoder call.

    Returns:
        (Q, E) float32 tensor of unit-norm query embeddings on ``device``.
    """
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    bar = text_bar(len(prompts), progress)
    try:
        with torch.inference_mode():
            owner = torch.arange(len(vocab.queries), device=device).repeat_interleave(len(templates))
            total = None  # (Q, E) sums of unit embeddings, filled as the chunks finish
            for idx, f in encode_buckets(model, tokenizer, prompts, device, bar, chunk):
                if total is None:
                    total = torch.zeros(len(vocab.queries), f.shape[-1], device=device)
                total.index_add_(0, owner[torch.from_numpy(idx).to(device)], f / f.norm(dim=-1, keepdim=True))
            assert total is not None  # a Vocabulary has a query and resolve_templates a template
            mean = total / len(templates)
            return mean / mean.norm(dim=-1, keepdim=True)
    finally:
        bar.close()


def encode_queries_fp16(
    model,
    tokenizer,
    vocab: Vocabulary,
    templates: tuple[str, ...],
    device,
    progress: bool = False,
    chunk: int = PROMPTS_PER_BATCH,
) -> torch.Tensor:
    """``encode_queries`` as CorrCLIP's and RF-CLIP's upstream runs it in fp16 (``precision="fp16-upstream"``).

    ``model`` is ``clipsam.dense.upstream_fp16.half_clip``'s copy, so each prompt's embedding is fp16. Per query, in
    fp16 as upstream: every template's embedding divided by its norm, the mean over the templates, divided by its
    norm.

    Returns:
        (Q, E) float16 tensor of unit-norm query embeddings on ``device``.
    """
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    bar = text_bar(len(prompts), progress)
    try:
        with torch.inference_mode():
            raw = None  # (Q * templates, E) fp16 embeddings, in prompt order
            for idx, f in encode_buckets(model, tokenizer, prompts, device, bar, chunk):
                if raw is None:
                    raw = torch.empty(len(prompts), f.shape[-1], dtype=torch.float16, device=device)
                raw[torch.from_numpy(idx).to(device)] = f.half()  # exact: the float32 copy of an fp16 result
            assert raw is not None  # a Vocabulary has a query and resolve_templates a template
            f = raw.view(len(vocab.queries), len(templates), -1)
            f = f / f.norm(dim=-1, keepdim=True)
            mean = f.mean(dim=1)
            return mean / mean.norm(dim=-1, keepdim=True)
    finally:
        bar.close()
