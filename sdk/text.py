"""Prompt templates and a bounded thread-safe cache of text embeddings, shared by every backend (torch-free).

Each query is formatted with every template, encoded, L2-normalised, averaged over templates and renormalised
(``docs/algorithms.md`` section 1): with open_clip in ``clipsam.dense.text``, with the exported graph in
``clipsam.engine.text``. Embeddings are cached per (model, weights, queries, templates) in memory here, and on disk
in ``clipsam.text_store``.

Both encoders batch prompts the same way (``length_buckets``): prompts are sorted by the position of their
end-of-text token, cut into chunks of ``PROMPTS_PER_BATCH``, and every chunk is encoded only up to its own longest
prompt. CLIP's text transformer is causal and pools at the EOT token, so the tokens after it cannot change the
embedding: the result equals the full 77-token encoding up to fp32 rounding, at the cost of the prompts' real
lengths (typically 8-16 tokens) instead of 77.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from .data.templates import OPENAI_IMAGENET_TEMPLATES, OPENAI_SUBSET_TEMPLATES, SINGLE_TEMPLATE
from .errors import ConfigError, InvalidTypeError

PROMPTS_PER_BATCH = 256  # prompts per text-encoder call (all queries x templates, in order)

TEMPLATE_SETS = {
    "openai80": OPENAI_IMAGENET_TEMPLATES,
    "openai7": OPENAI_SUBSET_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def template_problem(template) -> str | None:
    """Why ``template`` cannot take a class name, or None: a template is a string with exactly one plain ``{}``
    (``str.format`` fills it); other braces must be doubled (``{{`` and ``}}`` stand for ``{`` and ``}``)."""
    import string

    if not isinstance(template, str):
        return f"is a {type(template).__name__}, not a string"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # an unmatched or stray brace
        return f"is not a valid format string ({e}); write a literal brace as '{{{{' or '}}}}'"
    if len(fields) != 1 or fields[0] != ("", "", None):
        shown = ", ".join("{" + n + ("!" + c if c else "") + (":" + sp if sp else "") + "}" for n, sp, c in fields)
        return f"has the fields {shown or 'none'}; it needs exactly one plain '{{}}' (a literal brace is '{{{{')"
    return None


def resolve_templates(templates) -> tuple[str, ...]:
    """A template-set name ("openai80", "openai7", "single") or a list of strings with one "{}" each."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return tuple(TEMPLATE_SETS[templates])
        if "{" not in templates:
            sets = f"one of {sorted(TEMPLATE_SETS)} or a list of strings with '{{}}'"
            if os.path.isfile(templates):
                raise ConfigError(
                    f"templates={templates!r} is a file: this option takes {sets}; read templates from a file "
                    "with prompts=PromptConfig(templates=FILE) (CLI: --templates FILE)."
                )
            if "/" in templates or os.sep in templates or os.path.splitext(templates)[1]:
                raise ConfigError(f"templates file {templates!r} not found (and not a template set: use {sets}).")
            raise ConfigError(f"unknown template set {templates!r}; use {sets}.")
        templates = (templates,)
    if not isinstance(templates, (list, tuple)) or not templates:
        raise InvalidTypeError("templates must be a template-set name or a non-empty list of strings.")
    for t in templates:
        problem = template_problem(t)
        if problem:
            raise ConfigError(f"template {t!r} {problem}.")
    return tuple(templates)


def length_buckets(eot: np.ndarray, chunk: int = PROMPTS_PER_BATCH) -> list[tuple[np.ndarray, int]]:
    """Chunks of prompt indices in order of increasing EOT position, each with the tokens it needs.

    Arguments:
        eot: (N,) int position of every prompt's end-of-text token (its token count minus one).
        chunk: most prompts per chunk.

    Returns:
        [(indices (n,) int64, length)], n <= chunk, where ``length`` = the chunk's largest EOT position + 1; the
        chunks together hold every index once. The sort is stable, so equal lengths keep their input order.
    """
    eot = np.asarray(eot).reshape(-1)
    if eot.size == 0:
        return []
    order = np.argsort(eot, kind="stable")
    return [(idx, int(eot[idx].max()) + 1) for idx in np.split(order, range(chunk, len(order), chunk))]


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
