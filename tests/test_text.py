"""Template sets, ensembling arithmetic, length bucketing, the truncated text encoder, and the embedding cache.

The encoders here (``clipsam.dense.text``) sort prompts by length and cut each chunk after its own longest EOT token;
they are compared with open_clip's ``encode_text`` on the full 77-token context. Tolerances (fp32, random weights):
raw embeddings within 1e-5 of their norm per row, unit query embeddings within 1e-6 per element (measured:
8e-7 relative, 6e-8 absolute on the ViT-B/16 text tower).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import open_clip
import pytest
import torch

from clipsam.data.templates import OPENAI_IMAGENET_TEMPLATES, OPENAI_SUBSET_TEMPLATES
from clipsam.dense.text import embed_prompts, encode_queries, encode_tokens
from clipsam.errors import ConfigError
from clipsam.text import TextEmbeddingCache, length_buckets, resolve_templates
from clipsam.vocabulary import Vocabulary

from .conftest import TESTS

VITB16_TEXT = str(TESTS / "configs" / "clipsam-test-vitb16-text.json")  # ViT-B/16's text tower, a 1-block visual
# queries of different token lengths (1 to 9 BPE tokens), so the length buckets differ
QUERIES = ["cat", "television monitor with a remote control", "sky"]
RAW_RTOL, UNIT_ATOL = 1e-5, 1e-6


def full_context_ensemble(raw: torch.Tensor, n_queries: int) -> torch.Tensor:
    """docs/algorithms.md section 1 on (Q*T, E) raw embeddings in query-major order: normalise, mean, renormalise."""
    f = raw / raw.norm(dim=-1, keepdim=True)
    f = f.view(n_queries, -1, f.shape[-1]).mean(dim=1)
    return f / f.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def vitb16_text():
    """(model, tokenizer, {prompt: full-77-context embedding}) for QUERIES[:2] x openai80 (openai7 and single are
    subsets of openai80), encoded once with open_clip's own ``encode_text``."""
    from clipsam.models import load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_clip(VITB16_TEXT, None)
    tok = open_clip.get_tokenizer(loaded.arch)
    prompts = [t.format(q) for q in QUERIES[:2] for t in OPENAI_IMAGENET_TEMPLATES]
    with torch.inference_mode():
        ref = loaded.model.encode_text(tok(prompts)).float()
    assert tok(prompts).shape[1] == 77
    return loaded.model, tok, dict(zip(prompts, ref))


def test_template_sets():
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    assert OPENAI_SUBSET_TEMPLATES[0] == "itap of a {}." and len(OPENAI_SUBSET_TEMPLATES) == 7
    assert set(OPENAI_SUBSET_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
    assert resolve_templates("openai80") == OPENAI_IMAGENET_TEMPLATES
    assert resolve_templates("single") == ("a photo of a {}.",)
    assert resolve_templates(["a {} here."]) == ("a {} here.",)
    with pytest.raises(ConfigError, match="unknown template set 'openai81'"):
        resolve_templates("openai81")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_templates(["no placeholder"])


def test_a_templates_file_given_as_a_set_name_says_where_files_go(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a photo of a {}.\n")
    with pytest.raises(ConfigError, match=r"is a file: .*prompts=PromptConfig\(templates=FILE\)"):
        resolve_templates(str(f))
    with pytest.raises(ConfigError, match=r"templates file '.*missing.txt' not found"):
        resolve_templates(str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="templates file 'mine.yaml' not found"):
        resolve_templates("mine.yaml")


@pytest.mark.parametrize(
    "bad, why",
    [
        (("a {x} {}.",), r"has the fields \{x\}, \{\}"),  # str.format would raise KeyError at the first segment()
        ("a {} of {}.", r"has the fields \{\}, \{\}"),  # a single-string template: IndexError before
        (("a { {}.",), "not a valid format string"),  # ValueError from str.format before
        ("{0}{}", r"\{0\}"),  # manual and automatic numbering mixed
        (("a {!r} {}",), r"\{!r\}"),
        (("a {:>9}",), r"\{:>9\}"),
        (("no field",), "fields none"),
        ((3,), "is a int, not a string"),
    ],
)
def test_templates_with_stray_braces_are_config_errors_up_front(tmp_path, bad, why):
    from clipsam.config import dense_config
    from clipsam.prompt_files import load_templates
    from clipsam.segmenter import Segmenter

    with pytest.raises(ConfigError, match=why):
        resolve_templates(bad)
    with pytest.raises(ConfigError, match=why if bad != (3,) else "templates must be"):  # the config, not the model
        dense_config("sclip", None, templates=bad)
    with pytest.raises(ConfigError, match=why if bad != (3,) else "templates must be"):
        Segmenter.from_pretrained("no-such-arch", None, method="sclip", preset=None, templates=bad)  # before loading
    if isinstance(bad, tuple) and isinstance(bad[0], str):
        f = tmp_path / "t.txt"
        f.write_text(bad[0] + "\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="t.txt: template 1 .*" + why):
            load_templates(f)


def test_doubled_braces_are_literal_braces():
    assert resolve_templates(["a {{tiny}} {}."]) == ("a {{tiny}} {}.",)
    assert resolve_templates("a {{tiny}} {}.")[0].format("cat") == "a {tiny} cat."


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


def test_length_buckets_cover_every_prompt_once_in_length_order():
    rng = np.random.default_rng(0)
    eot = rng.integers(3, 30, size=1000)
    buckets = length_buckets(eot, 64)
    idx = np.concatenate([b[0] for b in buckets])
    assert sorted(idx.tolist()) == list(range(1000))
    assert [len(b[0]) for b in buckets] == [64] * 15 + [40]
    assert all(n == eot[i].max() + 1 for i, n in buckets)
    assert np.all(np.diff(eot[idx]) >= 0)
    lengths = [n for _, n in buckets]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    ties = length_buckets(np.array([5, 2, 5, 2, 5]), 2)  # stable: equal lengths keep their input order
    assert [b[0].tolist() for b in ties] == [[1, 3], [0, 2], [4]]
    assert length_buckets(np.zeros(0, np.int64), 8) == []
    # cheaper than cutting each input-order chunk at its own longest prompt
    unsorted = sum(len(c) * (c.max() + 1) for c in np.split(eot, range(64, 1000, 64)))
    assert sum(len(i) * n for i, n in buckets) < 0.8 * unsorted


@pytest.mark.parametrize("template_set", ["openai80", "openai7", "single"])
def test_bucketed_text_equals_full_context_encode_text_vitb16(vitb16_text, template_set):
    """ViT-B/16's text tower (random weights): 160 prompts in buckets of 32 vs one full-77 ``encode_text``."""
    model, tok, ref = vitb16_text
    templates = resolve_templates(template_set)
    vocab = Vocabulary.from_names(QUERIES[:2])
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    want_raw = torch.stack([ref[p] for p in prompts])
    raw = torch.from_numpy(embed_prompts(model, tok, prompts, "cpu", chunk=32))
    assert ((raw - want_raw).norm(dim=-1) <= RAW_RTOL * want_raw.norm(dim=-1)).all()
    emb = encode_queries(model, tok, vocab, templates, "cpu", chunk=32)
    torch.testing.assert_close(emb, full_context_ensemble(want_raw, 2), atol=UNIT_ATOL, rtol=0)
    assert not torch.equal(emb[0], emb[1])  # the queries differ: a swapped order would fail


@pytest.mark.parametrize("template_set", ["openai80", "openai7", "single"])
@pytest.mark.parametrize("chunk", [5, 256])
def test_bucketed_text_equals_full_context_tiny(tiny_clip, template_set, chunk):
    """Every template set, several buckets (chunk 5) and one (chunk 256), synonyms: the tiny test model."""
    tok = open_clip.get_tokenizer(tiny_clip.arch)
    templates = resolve_templates(template_set)
    vocab = Vocabulary.from_names([["cat", "kitten"], "television monitor", "a b c d e f g h i j k", "sky"])
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    with torch.inference_mode():
        want_raw = tiny_clip.model.encode_text(tok(prompts)).float()
    raw = torch.from_numpy(embed_prompts(tiny_clip.model, tok, prompts, "cpu", chunk=chunk))
    assert ((raw - want_raw).norm(dim=-1) <= RAW_RTOL * want_raw.norm(dim=-1)).all()
    emb = encode_queries(tiny_clip.model, tok, vocab, templates, "cpu", chunk=chunk)
    torch.testing.assert_close(emb, full_context_ensemble(want_raw, vocab.num_queries), atol=UNIT_ATOL, rtol=0)


def test_encoder_holds_one_bucket_of_activations(tiny_clip, monkeypatch):
    """The text transformer only ever sees one chunk, cut at that chunk's own longest prompt; no call sees 77."""
    tok = open_clip.get_tokenizer(tiny_clip.arch)
    vocab = Vocabulary.from_names([f"class number {i}" if i % 3 else f"c{i}" for i in range(40)])
    templates = resolve_templates("openai80")  # 3200 prompts
    shapes = []
    transformer = tiny_clip.model.transformer
    orig = transformer.forward
    monkeypatch.setattr(transformer, "forward", lambda x, *a, **k: shapes.append(tuple(x.shape)) or orig(x, *a, **k))
    encode_queries(tiny_clip.model, tok, vocab, templates, "cpu", chunk=256)
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    eot = tok(prompts).argmax(-1).numpy()
    assert [s[:2] for s in shapes] == [(len(i), n) for i, n in length_buckets(eot, 256)]
    assert max(s[0] for s in shapes) == 256 and max(s[1] for s in shapes) == eot.max() + 1 < 77


def test_text_progress_bar_only_when_asked_and_large(tiny_clip, capsys):
    tok = open_clip.get_tokenizer(tiny_clip.arch)
    large = Vocabulary.from_names([f"thing {i}" for i in range(8)])  # 8 x 80 = 640 prompts
    small = Vocabulary.from_names(["cat", "dog"])  # 160 prompts: one encoder call
    templates = resolve_templates("openai80")
    encode_queries(tiny_clip.model, tok, large, templates, "cpu")
    assert "encoding" not in capsys.readouterr().err  # off by default
    encode_queries(tiny_clip.model, tok, small, templates, "cpu", progress=True)
    assert "encoding" not in capsys.readouterr().err  # too small to wait for
    a = encode_queries(tiny_clip.model, tok, large, templates, "cpu", progress=True)
    err = capsys.readouterr().err
    assert "clipsam: encoding text prompts" in err and "640" in err
    torch.testing.assert_close(a, encode_queries(tiny_clip.model, tok, large, templates, "cpu"), atol=0, rtol=0)
