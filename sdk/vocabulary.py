"""Class vocabularies: names, synonyms, class files and the shipped dataset vocabularies.

A vocabulary is an ordered list of classes; each class has one or more *queries* (synonyms). Every query
is encoded as its own text embedding and competes in the softmax; a class then takes the max over its
queries (``docs/algorithms.md`` sections 1 and 6). Class files hold one class per line with synonyms separated
by ", " (exactly the upstream format: the display name of a class is its first synonym; it has no comment lines,
so a line starting with "#" is refused); they are read as UTF-8 with an optional byte-order mark. Names are
normalised (``normalise_name``: no BOM, single inner spaces, stripped), so "cat " and "cat" are one name and a
duplicate; a name holding a control character is refused.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from importlib import resources

from .errors import InvalidTypeError, VocabularyError
from .paths import input_file, shown

BUILTIN_VOCABULARIES = (
    "voc21",
    "voc20",
    "context60",
    "context59",
    "coco_object",
    "coco_stuff164k",
    "cityscapes",
    "ade20k",
)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of classes with their synonyms.

    Attributes:
        classes: display name of each class (its first synonym), length C.
        queries: every synonym in class order, length Q >= C.
        query_to_class: class index of each query, length Q.
    """

    classes: tuple[str, ...]
    queries: tuple[str, ...]
    query_to_class: tuple[int, ...]

    @classmethod
    def from_synonyms(
        cls, synonyms: list[list[str]] | tuple, source: str = "classes", allow_duplicates: bool = False
    ) -> Vocabulary:
        """Build from one list of synonyms per class, validating every name.

        ``allow_duplicates`` admits a name in two classes (both queries then compete); only the shipped
        upstream vocabularies need it (COCO-Object lists "bed" both as a background synonym and as a class).
        """
        if len(synonyms) == 0:
            raise VocabularyError(
                f"{source}: the vocabulary is empty. Give at least one class name, e.g. classes=['cat', 'sofa']."
            )
        queries: list[str] = []
        q2c: list[int] = []
        seen: dict[str, tuple[int, str]] = {}
        firsts: list[str] = []
        for ci, names in enumerate(synonyms):
            if len(names) == 0:
                raise VocabularyError(f"{source}: class {ci} has no name.")
            for given in names:
                if not isinstance(given, str):
                    raise VocabularyError(
                        f"{source}: class names must be strings, got {type(given).__name__} {given!r} for class {ci}."
                    )
                if len(given.strip().splitlines()) > 1:
                    raise VocabularyError(
                        f"{source}: class name {_short(given)!r} (class {ci}) spans several lines; give each class "
                        "as its own name (or one string with one class per line, as in a class file)."
                    )
                name = normalise_name(given)
                if not name:
                    raise VocabularyError(f"{source}: class {ci} has an empty name. Remove it or give it a name.")
                control = next((ch for ch in name if unicodedata.category(ch) == "Cc"), None)
                if control is not None:
                    raise VocabularyError(
                        f"{source}: class name {_short(name)!r} (class {ci}) contains the control character "
                        f"U+{ord(control):04X}; remove it (a stray escape or binary data, never part of a word)."
                    )
                if name in seen and not allow_duplicates:
                    was = seen[name][1]
                    same = f"; given as {was!r} and {given!r}, equal once spacing is normalised" if was != given else ""
                    raise VocabularyError(
                        f"{source}: duplicate class name {name!r} (classes {seen[name][0]} and {ci}{same}). "
                        "Each name may appear once; put synonyms of one class on the same line."
                    )
                seen[name] = (ci, given)
                queries.append(name)
                q2c.append(ci)
            firsts.append(queries[-len(names)])
        return cls(tuple(firsts), tuple(queries), tuple(q2c))

    @classmethod
    def from_names(cls, names) -> Vocabulary:
        """From a list of class names, or a comma-separated string ("cat, sofa, floor"). A string of several lines
        is the text of a class file (``parse_class_lines``: one class per line, synonyms separated by ", "), as the
        HTTP service reads it and as ``--classes "$(cat classes.txt)"`` passes it."""
        if isinstance(names, str):
            if len(names.strip().splitlines()) > 1:
                return parse_class_lines(names.strip("\r\n"), "classes (one class per line)")
            names = [n.strip() for n in names.split(",")]
            if any(not n for n in names):
                raise VocabularyError(
                    f"classes string {names!r} has an empty entry (two commas in a row, or a trailing comma)."
                )
        elif isinstance(names, Vocabulary):
            return names
        elif not isinstance(names, (list, tuple)):
            raise InvalidTypeError(
                f"classes must be a list of strings or a comma-separated string, got {type(names).__name__}."
            )
        groups = []
        for n in names:
            if isinstance(n, (list, tuple)):
                groups.append(list(n))
            else:
                groups.append([n])
        return cls.from_synonyms(groups)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def has_synonyms(self) -> bool:
        return self.num_queries != self.num_classes

    def to_lines(self) -> list[str]:
        """The class-file lines of this vocabulary."""
        lines: list[list[str]] = [[] for _ in self.classes]
        for q, c in zip(self.queries, self.query_to_class):
            lines[c].append(q)
        return [", ".join(names) for names in lines]


def check_tokens(
    vocab: Vocabulary, templates, encode, context_length: int, texts=None, contexts=None, descriptions=None
) -> None:
    """Refuse texts that CLIP's text encoder would read truncated, and queries it cannot tell apart.

    open_clip cuts every prompt to ``context_length`` tokens (start and end tokens included), so a longer prompt
    would be encoded as a truncated name: ``VocabularyError`` naming the class, the prompt's length and the limit.
    Two queries of different classes whose prompts are the same token ids (names that differ only in case or
    spacing, which the tokenizer drops) would get identical embeddings, so one of them could never be predicted:
    ``VocabularyError`` naming both. Identical names admitted on purpose (the shipped COCO-Object vocabulary lists
    "bed" twice, as upstream) and synonyms of one class are not refused.

    Arguments:
        vocab: the vocabulary.
        templates: format strings with one "{}".
        encode: str -> token ids without start/end tokens (open_clip ``SimpleTokenizer.encode``, ``ClipTokenizer``).
        context_length: tokens per prompt (77 for CLIP).
        texts: per query, the text put into the templates (default: the query itself; disambiguation renames).
        contexts: per query, extra full prompts (context prompts).
        descriptions: description sentences as encoded (class-name prefix + sentence), when descriptions are used.
    """
    texts = list(texts) if texts is not None else list(vocab.queries)
    contexts = list(contexts) if contexts is not None else [()] * len(texts)
    keep = context_length - 2  # tokens between the start and end tokens
    overhead = max(len(encode(t.replace("{}", ""))) for t in templates) + 2  # +2: tokens merging at the boundary
    groups: dict[tuple, list[int]] = {}
    for i, (text, ctx) in enumerate(zip(texts, contexts)):
        ids = encode(text)
        if len(ids) + overhead <= keep:  # no template can reach the cut: the query's own ids decide
            key: tuple = ("query", tuple(ids))
        else:
            full = [encode(t.format(text)) for t in templates]
            longest = max(range(len(full)), key=lambda k: len(full[k]))
            if len(full[longest]) > keep:
                renamed = f" (encoded as {_short(text)!r})" if text != vocab.queries[i] else ""
                room = keep - len(full[longest]) + len(ids)
                raise VocabularyError(
                    f"{_describe(vocab, i)}{renamed} is {len(ids)} tokens long to CLIP's tokenizer: with the "
                    f"template {templates[longest]!r} its prompt is {len(full[longest]) + 2} tokens, longer than "
                    f"CLIP's {context_length}-token context (start and end tokens included), so the text encoder "
                    f"would read a truncated name. Shorten it to about {max(room, 0)} tokens (a short word is one) "
                    "or use shorter templates."
                )
            key = ("prompts", tuple(tuple(f) for f in full))
        ctx_ids = [tuple(encode(c)) for c in ctx]
        for c, c_ids in zip(ctx, ctx_ids):
            _check_length(c_ids, keep, context_length, f"the context prompt {_short(c)!r} of {_describe(vocab, i)}")
        groups.setdefault(key + tuple(ctx_ids), []).append(i)
    for d in descriptions or ():
        _check_length(encode(d), keep, context_length, f"the description {_short(d)!r}")
    for members in groups.values():
        for a in members:
            for b in members:
                qa, qb = vocab.queries[a], vocab.queries[b]
                if a < b and vocab.query_to_class[a] != vocab.query_to_class[b] and qa != qb:
                    renamed = " (after disambiguation)" if texts[a] != qa or texts[b] != qb else ""
                    raise VocabularyError(
                        f"{_describe(vocab, a)} and {_describe(vocab, b)} are the same text to CLIP's tokenizer"
                        f"{renamed}, which lowercases and ignores spacing around punctuation, so their text "
                        "embeddings would be identical and one of them could never be predicted. Make them one "
                        "class (synonyms on one line) or rename one."
                    )


def _check_length(ids, keep: int, context_length: int, what: str) -> None:
    """``VocabularyError`` when a full prompt of ``ids`` (start and end tokens added) exceeds the context."""
    if len(ids) > keep:
        raise VocabularyError(
            f"{what} is {len(ids)} tokens long to CLIP's tokenizer, {len(ids) + 2} with the start and end tokens: "
            f"longer than CLIP's {context_length}-token context, so the text encoder would read it truncated. "
            f"Shorten it to at most {keep} tokens (a short word is one)."
        )


def _describe(vocab: Vocabulary, i: int) -> str:
    q, c = vocab.queries[i], vocab.classes[vocab.query_to_class[i]]
    return f"class {_short(q)!r}" if q == c else f"{_short(q)!r} (a synonym of class {_short(c)!r})"


def _short(name: str, width: int = 64) -> str:
    return name if len(name) <= width else f"{name[: width // 2 - 3]}...{name[-(width // 2) :]}"


def normalise_name(name: str) -> str:
    """A class name as clipsam keeps it: byte-order marks removed, surrounding whitespace stripped and inner runs
    of whitespace made one space (CLIP's tokenizer ignores spacing, so "cat " and "cat" are one name)."""
    return " ".join(name.replace("\ufeff", "").split())


def parse_class_file(path: str | os.PathLike) -> Vocabulary:
    """Read a class file: one class per line, synonyms separated by ", " (upstream ``get_cls_idx``)."""
    path = input_file(path, "class file", VocabularyError)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is not part of the first name
    except (OSError, UnicodeDecodeError) as e:
        raise VocabularyError(f"cannot read class file {shown(path)}: {e}") from e
    return parse_class_lines(text, str(path))


def parse_class_lines(text: str, source: str, allow_duplicates: bool = False) -> Vocabulary:
    """The text of a class file (``source`` names it in errors); blank trailing lines are ignored."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for i, line in enumerate(lines):
        if not line.strip():
            raise VocabularyError(f"{source}: line {i + 1} is empty; every line must name one class.")
        if line.lstrip().startswith("#"):
            raise VocabularyError(
                f"{source}: line {i + 1} starts with '#' ({_short(line.strip())!r}); class files have no comment "
                "lines (every line names one class, synonyms separated by ', '), so it would become a class. "
                "Remove the line."
            )
    return Vocabulary.from_synonyms(
        [line.split(", ") for line in lines], source=source, allow_duplicates=allow_duplicates
    )


def builtin_vocabulary(name: str) -> Vocabulary:
    """One of the shipped dataset vocabularies (``BUILTIN_VOCABULARIES``, or ``<name>_plain`` for ClearCLIP,
    ``<name>_corrclip`` for CorrCLIP: its class files, with ``people`` for person and synonyms only for background)."""
    base = name
    for suffix in ("_plain", "_corrclip"):
        base = base[: -len(suffix)] if base.endswith(suffix) else base
    if base not in BUILTIN_VOCABULARIES:
        raise VocabularyError(f"unknown built-in vocabulary {name!r}; known: {', '.join(BUILTIN_VOCABULARIES)}.")
    res = resources.files("clipsam.data").joinpath("classes").joinpath(f"{name}.txt")
    return parse_class_lines(res.read_text(encoding="utf-8"), f"clipsam/data/classes/{name}.txt", allow_duplicates=True)
