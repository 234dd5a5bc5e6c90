"""Text embeddings of a vocabulary: prompt templates, ensembling, and a bounded thread-safe cache.

Each query is formatted with every template, encoded, L2-normalised, averaged over templates and
renormalised (ALGORITHMS.md A.1, E). Embeddings are cached per (model, weights, queries, templates).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .data.templates import OPENAI_IMAGENET_TEMPLATES, OPENAI_SUBSET_TEMPLATES, SINGLE_TEMPLATE
from .errors import ConfigError, InvalidTypeError
from .vocabulary import Vocabulary

_PROMPTS_PER_BATCH = 256  # prompts per text-encoder call (all queries x templates, in order)

__all__ = ["TEMPLATE_SETS", "resolve_templates", "TextEmbeddingCache", "encode_queries", "embed_prompts"]

TEMPLATE_SETS = {
    "openai80": OPENAI_IMAGENET_TEMPLATES,
    "openai7": OPENAI_SUBSET_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def resolve_templates(templates) -> tuple[str, ...]:
    """A template-set name ("openai80", "openai7", "single") or a list of strings with one "{}" each."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return tuple(TEMPLATE_SETS[templates])
        if "{}" in templates:
            return (templates,)
        raise ConfigError(f"unknown template set {templates!r}; use one of {sorted(TEMPLATE_SETS)} or a list of strings with '{{}}'.")
    if not isinstance(templates, (list, tuple)) or not templates:
        raise InvalidTypeError("templates must be a template-set name or a non-empty list of strings.")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigError(f"template {t!r} must be a string containing exactly one '{{}}' placeholder.")
    return tuple(templates)


class TextEmbeddingCache:
    """A bounded LRU cache of text-embedding tensors, safe to share between threads."""

    def __init__(self, max_entries: int = 64):
        if max_entries < 1:
            raise ConfigError("text cache size must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


def _encode_tokens(model, tokens):
    """open_clip ``encode_text`` on sequences cut after their last end-of-text token.

    The text transformer is causal and pools at the EOT token (the largest id), so positions after the
    longest prompt's EOT cannot change the result; dropping them makes CLIP's 77-token context 4-6x cheaper.
    Falls back to ``encode_text`` for models that do not pool that way.
    """
    import torch

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


def embed_prompts(model, tokenizer, prompts: list[str], device) -> "np.ndarray":
    """(len(prompts), E) float32 raw (unnormalised) text embeddings as numpy, in chunks of 256 prompts.

    The encoder of ``clipsam.prompting.build_text_embeddings`` (context prompts, descriptions) on PyTorch.
    """
    import torch

    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), _PROMPTS_PER_BATCH):
            tokens = tokenizer(list(prompts[i : i + _PROMPTS_PER_BATCH])).to(device)
            chunks.append(_encode_tokens(model, tokens).float().cpu())
    return torch.cat(chunks).numpy()


def encode_queries(model, tokenizer, vocab: Vocabulary, templates: tuple[str, ...], device) -> "torch.Tensor":
    """Template-ensembled text embeddings.

    Arguments:
        model: open_clip CLIP model (fp32, eval).
        tokenizer: callable list[str] -> (n, context) int64 token ids.
        vocab: the vocabulary; every query is encoded.
        templates: format strings with one "{}".

    Returns:
        (Q, E) float32 tensor of unit-norm query embeddings on ``device``.
    """
    import torch

    prompts = [t.format(q) for q in vocab.queries for t in templates]
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), _PROMPTS_PER_BATCH):
            tokens = tokenizer(prompts[i : i + _PROMPTS_PER_BATCH]).to(device)
            chunks.append(_encode_tokens(model, tokens).float())
        f = torch.cat(chunks).view(len(vocab.queries), len(templates), -1)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(dim=1)
        return f / f.norm(dim=-1, keepdim=True)
