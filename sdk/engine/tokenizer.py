"""CLIP's byte-level BPE tokenizer in pure Python + numpy: token ids equal to open_clip's ``SimpleTokenizer``.

The exporter copies open_clip's ``bpe_simple_vocab_16e6.txt.gz`` into the engine folder and writes
``clip_tokenizer.json`` (context length, number of merges, special tokens, cleaning mode). Steps, as open_clip
(``tokenizer.py``) with the ``"lower"`` cleaning:

    clean   ftfy.fix_text (when ftfy is installed, see below), html.unescape twice, strip,
            " ".join(text.split()), lower()
    split   the regex  <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
            (IGNORECASE), implemented as a scanner over ``unicodedata`` categories: stdlib ``re`` has no \\p{..}
    encode  UTF-8 bytes -> printable unicode (bytes_to_unicode), BPE merges by rank, vocabulary lookup
    pad     [sot] + ids + [eot], truncated to the context (last id forced to eot), zero padded

ftfy is optional at run time: open_clip always applies ``ftfy.fix_text``, which leaves printable ASCII unchanged.
Without ftfy, non-ASCII text is NFC-normalised only and a warning says that mojibake is not repaired.
"""

from __future__ import annotations

import gzip
import html
import json
import unicodedata
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

_ftfy: Any
try:  # optional: open_clip's cleaning step
    import ftfy as _ftfy
except ImportError:  # pragma: no cover - depends on the environment
    _ftfy = None

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """open_clip's reversible byte -> printable-character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "L"


def _is_other(ch: str) -> bool:
    """[^\\s\\p{L}\\p{N}] under IGNORECASE: a character whose case fold is a letter (U+0345) matches no class."""
    if ch.isspace() or unicodedata.category(ch)[0] in "LN":
        return False
    fold = ch.casefold()
    return fold == ch or not any(unicodedata.category(c)[0] in "LN" for c in fold)


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "N"


def _clean(text: str) -> str:
    if _ftfy is not None:
        text = _ftfy.fix_text(text)
    elif not (text.isascii() and text.isprintable()):
        warnings.warn(
            "clipsam: ftfy is not installed; non-ASCII text is only NFC-normalised (pip install ftfy "
            "for open_clip's exact cleaning).",
            RuntimeWarning,
            stacklevel=4,
        )
        text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """open_clip ``SimpleTokenizer`` without torch, regex or (optionally) ftfy.

    Arguments:
        bpe_path: gzipped merges file (open_clip's ``bpe_simple_vocab_16e6.txt.gz``).
        context_length: tokens per prompt (77 for CLIP).
        num_merges: merges used (open_clip: 49152 - 256 - 2).
        special_tokens: ("<start_of_text>", "<end_of_text>", ...).
    """

    def __init__(
        self,
        bpe_path,
        context_length: int = 77,
        num_merges: int = 49152 - 256 - 2,
        special_tokens=("<start_of_text>", "<end_of_text>"),
    ):
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : num_merges + 1]]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(special_tokens)
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.special_tokens = tuple(special_tokens)
        self.cache = {t: t for t in special_tokens}
        self.sot_token_id = self.encoder[special_tokens[0]]
        self.eot_token_id = self.encoder[special_tokens[1]]
        self.context_length = int(context_length)
        self._byte_encoder = bytes_to_unicode()

    @classmethod
    def from_folder(cls, folder, config_file: str, bpe_file: str) -> ClipTokenizer:
        """Build from an engine folder's ``clip_tokenizer.json`` and BPE file."""
        cfg = json.loads((Path(folder) / config_file).read_text())
        return cls(Path(folder) / bpe_file, cfg["context_length"], cfg["num_merges"], tuple(cfg["special_tokens"]))

    # -- splitting -------------------------------------------------------------------------------------
    def _split(self, text: str) -> list[str]:
        """The pieces ``regex.findall(open_clip's pattern, text)`` returns."""
        out, i, n = [], 0, len(text)
        low = text.lower()
        while i < n:
            ch = text[i]
            if ch.isspace():
                i += 1
                continue
            piece = next((t for t in self.special_tokens if low.startswith(t.lower(), i)), None)
            piece = piece or next((c for c in _CONTRACTIONS if low.startswith(c, i)), None)
            if piece is not None:
                out.append(text[i : i + len(piece)])
                i += len(piece)
                continue
            j = i + 1
            if _is_letter(ch):
                while j < n and _is_letter(text[j]):
                    j += 1
            elif not _is_number(ch):
                if not _is_other(ch):  # matched by no alternative: skipped, as regex.findall does
                    i += 1
                    continue
                while j < n and _is_other(text[j]):
                    j += 1
            out.append(text[i:j])
            i = j
        return out

    # -- BPE -------------------------------------------------------------------------------------------
    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word[:-1], word[1:])}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens."""
        ids: list[int] = []
        for piece in self._split(_clean(text)):
            piece = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece).split(" "))
        return ids

    def __call__(self, texts, context_length: int | None = None) -> np.ndarray:
        """(len(texts), context_length) int64 token ids, as ``open_clip.tokenize``."""
        if isinstance(texts, str):
            texts = [texts]
        ctx = context_length or self.context_length
        out = np.zeros((len(texts), ctx), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = self.eot_token_id
            out[i, : len(ids)] = ids
        return out
