"""Template sets, ensembling arithmetic, the truncated text encoder, and the embedding cache."""

from __future__ import annotations

import threading

import open_clip
import pytest
import torch

from clipsam.data.templates import OPENAI_IMAGENET_TEMPLATES, OPENAI_SUBSET_TEMPLATES
from clipsam.dense.text import encode_queries, encode_tokens
from clipsam.errors import ConfigError
from clipsam.text import TextEmbeddingCache, resolve_templates
from clipsam.vocabulary import Vocabulary


def test_template_sets():
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    assert OPENAI_SUBSET_TEMPLATES[0] == "itap of a {}." and len(OPENAI_SUBSET_TEMPLATES) == 7
    assert set(OPENAI_SUBSET_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
    assert resolve_templates("openai80") == OPENAI_IMAGENET_TEMPLATES
    assert resolve_templates("single") == ("a photo of a {}.",)
    assert resolve_templates(["a {} here."]) == ("a {} here.",)
    with pytest.raises(ConfigError):
        resolve_templates("openai81")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_templates(["no placeholder"])


def test_truncated_encoder_equals_open_clip_encode_text(tiny_clip):
    tok = open_clip.get_tokenizer(tiny_clip.arch)
    tokens = tok(["a photo of a cat.", "itap of a television monitor.", "a"])
    with torch.inference_mode():
        torch.testing.assert_close(
            encode_tokens(tiny_clip.model, tokens), tiny_clip.model.encode_text(tokens), atol=1e-5, rtol=0
        )


def test_ensemble_is_normalise_mean_renormalise(tiny_clip):
    tok = open_clip.get_tokenizer(tiny_clip.arch)
    templates = ("a photo of a {}.", "art of the {}.", "a {} in a video game.")
    vocab = Vocabulary.from_names([["cat", "kitten"], "sofa"])
    emb = encode_queries(tiny_clip.model, tok, vocab, templates, "cpu")
    assert emb.shape == (3, 64)
    with torch.inference_mode():
        for i, q in enumerate(vocab.queries):
            f = tiny_clip.model.encode_text(tok([t.format(q) for t in templates]))
            f = f / f.norm(dim=-1, keepdim=True)
            m = f.mean(0)
            torch.testing.assert_close(emb[i], m / m.norm(), atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_cache_is_bounded_lru_and_thread_safe():
    cache = TextEmbeddingCache(max_entries=3)
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == 4
    cache.get(2)
    cache.put(5, 5)  # evicts 3, the least recently used
    assert cache.get(3) is None and cache.get(2) == 2

    def work(k):
        for j in range(200):
            cache.put((k, j % 7), j)
            cache.get((k, (j + 3) % 7))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 3
    with pytest.raises(ConfigError):
        TextEmbeddingCache(0)
