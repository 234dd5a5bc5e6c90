"""Prompt templates and a bounded thread-safe cache of text embeddings, shared by every backend (torch-free).

Each query is formatted with every template, encoded, L2-normalised, averaged over templates and renormalised
(``docs/algorithms.md`` section 1): with open_clip in ``clipsam.dense.text``, with the exported graph in
``clipsam.engine.text``. Embeddings are cached per (model, weights, queries, templates).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .data.templates import OPENAI_IMAGENET_TEMPLATES, OPENAI_SUBSET_TEMPLATES, SINGLE_TEMPLATE
from .errors import ConfigError, InvalidTypeError

PROMPTS_PER_BATCH = 256  # prompts per text-encoder call (all queries x templates, in order)

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
        raise ConfigError(
            f"unknown template set {templates!r}; use one of {sorted(TEMPLATE_SETS)} or a list of strings with '{{}}'."
        )
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
