"""Text embeddings on ONNX Runtime: numpy tokenizer -> ``clip_text`` graph -> template ensembling (numpy).

Same steps as ``clipsam.text.encode_queries``: every query is formatted with every template, prompts are encoded in
chunks of 256 (each chunk cut after its longest end-of-text token), each embedding is L2-normalised, the templates
of a query are averaged and the mean is renormalised.
"""

from __future__ import annotations

import numpy as np

from ..text import PROMPTS_PER_BATCH


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

    def embed_prompts(self, prompts) -> np.ndarray:
        """(len(prompts), C) float32 raw embeddings."""
        out = []
        for i in range(0, len(prompts), self.chunk):
            tokens = self.tokenizer(prompts[i : i + self.chunk])
            n = int(tokens.argmax(axis=-1).max()) + 1
            out.append(self.session.run({"token_ids": tokens[:, :n]})["text_embeddings"].astype(np.float32))
        return np.concatenate(out)

    def encode(self, queries, templates) -> np.ndarray:
        prompts = [t.format(q) for q in queries for t in templates]
        f = self.embed_prompts(prompts).reshape(len(queries), len(templates), -1)
        f = f / np.linalg.norm(f, axis=-1, keepdims=True)
        f = f.mean(axis=1)
        return (f / np.linalg.norm(f, axis=-1, keepdims=True)).astype(np.float32)
