"""``OrtTextEncoder`` (the ``clip_text`` graph on ONNX Runtime, length-bucketed chunks) against the PyTorch encoder
and against open_clip's ``encode_text`` on the full 77-token context, for every template set.

Tolerances (fp32): unit query embeddings within 1e-6 of the torch path and of the full-context reference, raw
embeddings within 1e-5 of their norm per row (ONNX Runtime and torch kernels round differently).
"""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine import EngineSegmenter
from clipsam.engine.text import OrtTextEncoder
from clipsam.text import length_buckets, resolve_templates
from clipsam.vocabulary import Vocabulary

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

QUERIES = [["cat", "kitten"], "television monitor", "a b c d e f g h i j k", "sky"]


@pytest.fixture(scope="module")
def ort_text(engine_dir):
    """The naclip engine folder's text encoder (tiny test CLIP, random weights)."""
    return EngineSegmenter(engine_dir("naclip"), text_disk_cache=False).text_encoder


@pytest.mark.parametrize("template_set", ["openai80", "openai7", "single"])
@pytest.mark.parametrize("chunk", [5, 256])
def test_ort_text_equals_torch_and_full_context(ort_text, tiny_clip, template_set, chunk):
    from clipsam.dense.text import encode_queries

    tok = open_clip.get_tokenizer(tiny_clip.arch)
    templates = resolve_templates(template_set)
    vocab = Vocabulary.from_names(QUERIES)
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    enc = OrtTextEncoder(ort_text.session, ort_text.tokenizer, chunk=chunk)
    with torch.inference_mode():
        full = tiny_clip.model.encode_text(tok(prompts)).float().numpy()  # 77 tokens, input order
    raw = enc.embed_prompts(prompts)
    assert raw.shape == full.shape and raw.dtype == np.float32
    assert (np.linalg.norm(raw - full, axis=-1) <= 1e-5 * np.linalg.norm(full, axis=-1)).all()
    f = full / np.linalg.norm(full, axis=-1, keepdims=True)
    f = f.reshape(vocab.num_queries, len(templates), -1).mean(axis=1)
    want = f / np.linalg.norm(f, axis=-1, keepdims=True)
    got = enc.encode(vocab.queries, templates)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    ref = encode_queries(tiny_clip.model, tok, vocab, templates, "cpu", chunk=chunk).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_ort_text_runs_one_bucket_per_call(ort_text, monkeypatch):
    """Each graph call gets one length bucket, cut at that bucket's longest prompt (never the 77-token context)."""
    enc = OrtTextEncoder(ort_text.session, ort_text.tokenizer, chunk=64)
    shapes = []
    run = enc.session.run
    monkeypatch.setattr(enc.session, "run", lambda feeds: shapes.append(feeds["token_ids"].shape) or run(feeds))
    vocab = Vocabulary.from_names([f"class number {i}" if i % 3 else f"c{i}" for i in range(6)])
    templates = resolve_templates("openai80")
    enc.encode(vocab.queries, templates)
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    eot = ort_text.tokenizer(prompts).argmax(axis=-1)
    assert shapes == [(len(i), n) for i, n in length_buckets(eot, 64)]
    assert len({n for _, n in shapes}) > 1 and max(n for _, n in shapes) < 77
