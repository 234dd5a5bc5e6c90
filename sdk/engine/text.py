"""Text embeddings on ONNX Runtime: numpy tokenizer -> ``clip_text`` graph -> template ensembling (numpy).

Same steps as ``clipsam.dense.text.encode_queries``: every query is formatted with every template, prompts are
sorted by token length and encoded in chunks of 256 (``clipsam.text.length_buckets``: each chunk cut after its own
longest end-of-text token), each embedding is L2-normalised and added to its query's sum as its chunk finishes, and
the template mean is renormalised.
"""

from __future__ import annotations

import numpy as np

from ..progress import text_bar
from ..text import PROMPTS_PER_BATCH, length_buckets


class OrtTextEncoder:
    """``encode(queries, templates)`` -> (Q, C) float32 unit embeddings.

    Arguments:
        session: the ``clip_text`` GraphSession.
        tokenizer: ``ClipTokenizer``.
        chunk: prompts per graph call.
    """

    def __init__(self, session, tokenizer, chunk: int = PROMPTS_PER_BATCH):
        self.session = session
        self.tokenizer = tokenizer
        self.chunk = int(chunk)

    def buckets(self, prompts, bar=None):
        """Yield (indices (n,) int64, (n, C) float32 raw embeddings) per length bucket (``length_buckets``)."""
        tokens = self.tokenizer(list(prompts))  # (N, context) int64
        eot = tokens.argmax(axis=-1)
        if len(eot):
            tokens = tokens[:, : int(eot.max()) + 1].copy()  # keep N x (longest prompt), not N x 77
        for idx, n in length_buckets(eot, self.chunk):
            out = self.session.run({"token_ids": np.ascontiguousarray(tokens[idx, :n])})["text_embeddings"]
            yield idx, out.astype(np.float32, copy=False)
            if bar is not None:
                bar.update(len(idx))

    def embed_prompts(self, prompts, progress: bool = False) -> np.ndarray:
        """(len(prompts), C) float32 raw embeddings, in input order."""
        out = None
        bar = text_bar(len(prompts), progress)
        try:
            for idx, f in self.buckets(prompts, bar):
                if out is None:
                    out = np.empty((len(prompts), f.shape[-1]), np.float32)
                out[idx] = f
        finally:
            bar.close()
        return out if out is not None else np.zeros((0, 0), np.float32)

    def encode(self, queries, templates, progress: bool = False) -> np.ndarray:
        """(Q, C) float32 unit query embeddings: the normalised mean of the normalised prompt embeddings."""
        prompts = [t.format(q) for q in queries for t in templates]
        owner = np.repeat(np.arange(len(queries)), len(templates))
        total = None  # (Q, C) sums of unit embeddings, filled as the chunks finish
        bar = text_bar(len(prompts), progress)
        try:
            for idx, f in self.buckets(prompts, bar):
                if total is None:
                    total = np.zeros((len(queries), f.shape[-1]), np.float32)
                np.add.at(total, owner[idx], f / np.linalg.norm(f, axis=-1, keepdims=True))
        finally:
            bar.close()
        assert total is not None  # at least one query and one template
        mean = total / len(templates)
        return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(np.float32)
