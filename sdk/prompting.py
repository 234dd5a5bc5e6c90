"""Prompt engineering and text enrichment: ``PromptConfig`` and the text embeddings it defines.

Order of operations for each query q (a synonym) of class c, given raw text embeddings from any encoder::

    1. disambiguation   q -> map[q] when the map names q ("mouse" -> "computer mouse"); displayed names stay the user's
    2. prompts          P = [template.format(q) for the templates] + context_prompts[q]   (full sentences, as written)
    3. ensemble         t = normalise(mean(normalise(embed(p)) for p in P))   every prompt one vote
    4. enrichment       (only with descriptions)
       "mean": t = normalise(mean([t] + [normalise(embed(d)) for d in descriptions[q]]))   t one vote, each d one
       "tse":  t = ExCEL TSE of t with the attribute bank = K-means centres of all description embeddings
               (``clipsam.enrich.tse_enrich``); every query is enriched, with or without descriptions of its own

Without context prompts, step 3 is exactly the template ensemble of ``docs/algorithms.md`` section 1. A description d of class
key k is encoded as ``"a photo of a {k}. {d}"`` (ExCEL prefixes ``"a clean origami {k}."``; it also builds t_c
from that single template, where we use the configured templates).

Names in the files are matched to queries ignoring case, spaces, ``-`` and ``_`` ("tvmonitor" matches "tv monitor");
a query without an entry of its own uses the entry of the first synonym of its class that has one. Shipped files
("default", "voc20", "coco80") cover many classes and apply to those present. A user's file or dict must only name
classes of the vocabulary: any other name raises ``ConfigError`` naming the file and the class (a typo would
otherwise silently do nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config_kinds import is_kind
from .enrich import default_clusters, ensemble, kmeans, l2_normalize, mean_enrich, tse_enrich
from .errors import ConfigError, InvalidTypeError
from .prompt_files import SHIPPED, load_map, load_sentences, load_templates, shipped_path
from .text import resolve_templates

DESCRIPTION_PREFIX = "a photo of a {}."
ENRICHMENTS = ("tse", "mean")


@dataclass(frozen=True)
class PromptConfig:
    """How class names become text embeddings (defaults: the preset's templates only, as upstream)."""

    templates: str | tuple[str, ...] | None = None  # None: the DenseConfig's; a set name, a list, or a template file
    context_prompts: str | os.PathLike | dict | None = None  # None | "default" | JSON/YAML file | {class: [prompt]}
    disambiguate: str | os.PathLike | dict | None = None  # None | "default" | JSON/YAML file | {name: replacement}
    descriptions: str | os.PathLike | dict | None = None  # None | "voc20" | "coco80" | file | {class: [sentence]}
    enrichment: str = "tse"  # with descriptions: "tse" (ExCEL attribute bank) | "mean" (plain averaging)
    tse_clusters: int | None = None  # bank size K; None: 112 (voc20), 224 (coco80), else round(5.6 * classes)
    tse_drop: float = 0.1  # fraction of the K bank scores dropped per class (ExCEL: int(0.1 K) lowest)

    def __post_init__(self):
        if isinstance(self.templates, list):
            object.__setattr__(self, "templates", tuple(self.templates))
        for f in ("context_prompts", "disambiguate", "descriptions"):
            v = getattr(self, f)
            if v is not None and not isinstance(v, (str, os.PathLike, dict)):
                raise InvalidTypeError(
                    f"PromptConfig.{f} must be None, a name, a file path or a dict, got {type(v).__name__}"
                )
        if self.enrichment not in ENRICHMENTS:
            raise ConfigError(f"enrichment must be one of {ENRICHMENTS}, got {self.enrichment!r}")
        k = self.tse_clusters
        if not is_kind(k, "int?") or k is not None and k < 1:
            raise ConfigError(f"tse_clusters must be a positive integer or None, got {k!r}")
        if not is_kind(self.tse_drop, "real") or not 0.0 <= self.tse_drop < 1.0:
            raise ConfigError(f"tse_drop must be a number in [0, 1), got {self.tse_drop!r}")

    @property
    def is_default(self) -> bool:
        """True when only templates are set: the text embeddings are the plain template ensemble."""
        return self.context_prompts is None and self.disambiguate is None and self.descriptions is None

    def replace(self, **changes) -> PromptConfig:
        unknown = set(changes) - set(PROMPT_FIELDS)
        if unknown:
            raise ConfigError(f"unknown PromptConfig option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def resolve(self) -> ResolvedPrompts:
        """Load every file now (errors surface at construction, not at the first image)."""
        templates = None
        if self.templates is not None:
            given = self.templates
            is_file = isinstance(given, (str, os.PathLike)) and os.path.isfile(given)
            templates = load_templates(given) if is_file else resolve_templates(given)  # type: ignore[arg-type]
        ctx = _source("context_prompts", self.context_prompts, "context-prompt file")
        dis = _source("disambiguate", self.disambiguate, "disambiguation file")
        desc = _source("descriptions", self.descriptions, "description file")
        return ResolvedPrompts(templates, ctx, dis, desc, self.enrichment, self.tse_clusters, self.tse_drop)


PROMPT_FIELDS = tuple(f.name for f in dataclasses.fields(PromptConfig))


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


@dataclass(frozen=True)
class _Source:
    """One loaded mapping, keyed by normalised name, with what messages and caches need."""

    entries: dict  # normalised name -> tuple of sentences, or replacement string
    keys: dict  # normalised name -> the name as written in the file
    name: str  # "voc20", "default", a file path or "<kind> (dict)"
    shipped: bool  # shipped defaults apply to the classes present; user files must name vocabulary classes only
    digest: str  # SHA-256 of the canonical JSON of the mapping: the cache identity


def _source(kind: str, value, what: str) -> _Source | None:
    if value is None:
        return None
    shipped = isinstance(value, str) and shipped_path(kind, value) is not None
    if isinstance(value, str) and not shipped and not os.path.isfile(value) and not os.path.splitext(value)[1]:
        names = sorted(n for k, n in SHIPPED if k == kind)
        raise ConfigError(f"{kind}={value!r} is neither a shipped name ({', '.join(names)}) nor an existing file")
    path = shipped_path(kind, value) if shipped else value
    mapping, name = load_map(path, what) if kind == "disambiguate" else load_sentences(path, what)
    entries: dict[str, Any] = {}  # str (disambiguation) or tuple of sentences
    keys: dict[str, str] = {}
    for key, entry in mapping.items():
        n = _norm(key)
        if n in keys and entries[n] != entry:
            raise ConfigError(
                f"{name}: names {keys[n]!r} and {key!r} are the same class (case, spaces, '-' and '_' "
                "are ignored); keep one"
            )
        entries[n], keys[n] = entry, key
    digest = hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()
    return _Source(entries, keys, value if shipped else name, shipped, digest)


@dataclass(frozen=True)
class ResolvedPrompts:
    """A ``PromptConfig`` with its files loaded; ``key`` identifies it in text-embedding caches."""

    templates: tuple[str, ...] | None
    context: _Source | None
    disambiguation: _Source | None
    descriptions: _Source | None
    enrichment: str
    tse_clusters: int | None
    tse_drop: float

    @property
    def is_default(self) -> bool:
        return self.context is None and self.disambiguation is None and self.descriptions is None

    @property
    def key(self) -> tuple:
        """Hashable identity of everything that changes the embeddings (file contents by digest)."""
        if self.is_default:
            return ()
        digests = tuple(
            s.digest if s is not None else None for s in (self.context, self.disambiguation, self.descriptions)
        )
        return digests + ((self.enrichment, self.tse_clusters, self.tse_drop) if self.descriptions else ())

    def description_texts(self) -> tuple[list[str], list[str]]:
        """Every description as encoded (class-name prefix + sentence), and its normalised class key (empty lists
        without descriptions)."""
        texts: list[str] = []
        owners: list[str] = []
        if self.descriptions is None:
            return texts, owners
        for n, sentences in self.descriptions.entries.items():
            name = self.descriptions.keys[n]
            if self.disambiguation is not None:
                name = self.disambiguation.entries.get(n, name)
            for s in sentences:
                texts.append(f"{DESCRIPTION_PREFIX.format(name)} {s}")
                owners.append(n)
        return texts, owners

    def info(self) -> dict | None:
        """JSON-able summary for result metadata and evaluation reports (None when nothing beyond templates)."""
        if self.is_default:
            return None
        out: dict[str, Any] = {
            k: (s.name if s is not None else None)
            for k, s in (
                ("context_prompts", self.context),
                ("disambiguate", self.disambiguation),
                ("descriptions", self.descriptions),
            )
        }
        if self.descriptions is not None:
            out.update(
                enrichment=self.enrichment,
                tse_clusters=self.tse_clusters,
                tse_drop=self.tse_drop,
                descriptions_sha256=self.descriptions.digest[:16],
            )
        return out

    def plan(self, vocab) -> list[tuple[str, tuple[str, ...], str | None]]:
        """Per query: (text after disambiguation, its context prompts, its description key or None).

        Raises:
            ConfigError: a user-given source names a class that is not in the vocabulary.
        """
        known = {_norm(q) for q in vocab.queries}
        for src in (self.context, self.disambiguation, self.descriptions):
            if src is not None and not src.shipped:
                for n, key in src.keys.items():
                    if n not in known:
                        shown = ", ".join(vocab.classes[:8]) + (", ..." if len(vocab.classes) > 8 else "")
                        raise ConfigError(
                            f"{src.name}: class {key!r} is not in the vocabulary ({shown}); remove it "
                            "from the file or add the class"
                        )
        synonyms: dict[int, list[str]] = {}
        for q, ci in zip(vocab.queries, vocab.query_to_class):
            synonyms.setdefault(ci, []).append(_norm(q))

        def entry_key(src, nq, ci):  # the query's own entry, else the first synonym of its class that has one
            if src is None:
                return None
            return nq if nq in src.entries else next((n for n in synonyms[ci] if n in src.entries), None)

        out = []
        for q, ci in zip(vocab.queries, vocab.query_to_class):
            nq = _norm(q)
            text = self.disambiguation.entries.get(nq, q) if self.disambiguation else q
            ck = entry_key(self.context, nq, ci)
            ctx = tuple(self.context.entries[ck]) if ck and self.context is not None else ()
            out.append((text, ctx, entry_key(self.descriptions, nq, ci)))
        return out


def build_text_embeddings(
    embed, vocab, templates: tuple[str, ...], prompts: ResolvedPrompts, cache=None, cache_key: tuple = ()
) -> np.ndarray:
    """Query embeddings under a prompt configuration (steps in the module docstring), from any text encoder.

    Arguments:
        embed: callable list[str] -> (n, E) float32 raw text embeddings in input order (torch
            ``clipsam.dense.text.embed_prompts`` or the engines' ``OrtTextEncoder.embed_prompts``; both encode in
            length buckets).
        vocab: ``Vocabulary``.
        templates: format strings with one "{}".
        prompts: ``PromptConfig.resolve()``.
        cache, cache_key: optional cache (``get``/``put``) and model identity for the description embeddings and
            the attribute bank, which do not depend on the vocabulary.

    Returns:
        (Q, E) float32 unit query embeddings.
    """
    plan = prompts.plan(vocab)
    texts, counts = [], []
    for text, ctx, _ in plan:
        texts += [t.format(text) for t in templates] + list(ctx)
        counts.append(len(templates) + len(ctx))
    raw = np.asarray(embed(texts), dtype=np.float32)
    t = np.stack([ensemble(c) for c in np.split(raw, np.cumsum(counts)[:-1])])
    if prompts.descriptions is None:
        return t
    dis = prompts.disambiguation.digest if prompts.disambiguation is not None else None
    dkey = cache_key + ("descriptions", prompts.descriptions.digest, dis)
    hit = cache.get(dkey) if cache is not None else None
    if hit is None:
        dtexts, owners = prompts.description_texts()
        hit = (l2_normalize(np.asarray(embed(dtexts), dtype=np.float32)), np.array(owners))
        if cache is not None:
            cache.put(dkey, hit)
    demb, owner_of = hit
    if prompts.enrichment == "mean":
        for i, (_, _, key) in enumerate(plan):
            if key is not None:
                t[i] = mean_enrich(t[i], demb[owner_of == key])
        return t
    k = prompts.tse_clusters or default_clusters(
        prompts.descriptions.name if prompts.descriptions.shipped else None,
        len(prompts.descriptions.entries),
        len(demb),
    )
    k = min(k, len(demb))
    bkey = dkey + ("bank", k)
    bank = cache.get(bkey) if cache is not None else None
    if bank is None:
        bank = kmeans(demb, k)
        if cache is not None:
            cache.put(bkey, bank)
    return tse_enrich(t, bank, prompts.tse_drop)
