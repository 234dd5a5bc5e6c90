"""PromptConfig: prompt files (shipped and user), their errors, the embedding arithmetic, and the Segmenter's cache."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from clipsam.enrich import ensemble, kmeans, l2_normalize, mean_enrich, tse_enrich
from clipsam.errors import ConfigError, InvalidTypeError
from clipsam.prompting import DESCRIPTION_PREFIX, PromptConfig, build_text_embeddings
from clipsam.vocabulary import Vocabulary

TEMPLATES = ("a photo of a {}.", "art of the {}.")


class FakeEncoder:
    """Deterministic raw 'embedding' per string (seeded by its CRC32); records every prompt it is asked for."""

    def __init__(self, dim=16):
        self.dim, self.seen = dim, []

    def vec(self, s):
        return np.random.RandomState(zlib.crc32(s.encode())).randn(self.dim).astype(np.float32) * 3

    def __call__(self, prompts):
        self.seen += list(prompts)
        return np.stack([self.vec(p) for p in prompts])


def _embed(vocab, cfg, enc=None):
    enc = enc or FakeEncoder()
    return build_text_embeddings(enc, vocab, TEMPLATES, cfg.resolve()), enc


# -- shipped files ----------------------------------------------------------------------------------------
def test_shipped_files_cover_the_standard_datasets():
    r = PromptConfig(context_prompts="default", disambiguate="default", descriptions="voc20").resolve()
    assert len(r.descriptions.entries) == 20 and {len(v) for v in r.descriptions.entries.values()} == {12}
    coco = PromptConfig(descriptions="coco80").resolve().descriptions
    assert len(coco.entries) == 80 and {len(v) for v in coco.entries.values()} == {10}
    assert r.disambiguation.entries["mouse"] == "computer mouse"
    assert all(len(v) == 3 for v in r.context.entries.values()) and "aeroplane" in r.context.entries
    # the shipped VOC-20 vocabulary spells "tv monitor" / "pottedplant" differently: names match ignoring spaces
    from clipsam.vocabulary import builtin_vocabulary

    plan = r.plan(builtin_vocabulary("voc20"))
    assert sum(d is not None for _, _, d in plan) >= 18
    tv = builtin_vocabulary("voc20").queries.index("television monitor")
    assert plan[tv][1] == r.context.entries["tvmonitor"]  # via its synonym "tv monitor"


# -- user files and their errors ----------------------------------------------------------------------------
def test_yaml_and_json_user_files(tmp_path):
    y = tmp_path / "ctx.yaml"
    y.write_text("_comment: mine\ncat:\n  - a cat asleep on a sofa.\n  - a cat in a garden.\n")
    j = tmp_path / "map.json"
    j.write_text(json.dumps({"map": {"mouse": "computer mouse"}}))
    r = PromptConfig(context_prompts=y, disambiguate=str(j)).resolve()
    vocab = Vocabulary.from_names(["Cat", "mouse"])
    plan = r.plan(vocab)
    assert plan[0] == ("Cat", ("a cat asleep on a sofa.", "a cat in a garden."), None)  # case-insensitive match
    assert plan[1] == ("computer mouse", (), None)


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("bad.json", '{"cat": ["a",\n  ]}', r"bad\.json is not valid JSON: .* line 2"),
        ("bad.yaml", "cat:\n  - a\n - b\n", r"bad\.yaml is not valid YAML: .* line 3"),
        ("list.json", '["a cat"]', r"list\.json: expected a mapping"),
        ("str.json", '{"cat": "a cat"}', r"str\.json: the entry of class 'cat' must be a non-empty list"),
        ("num.yaml", "cat: [a cat, 3]\n", r"num\.yaml: class 'cat' has a non-string or empty entry 3"),
        ("no.yaml", "cat: [a cat.]\nno: [a no-entry sign.]\n", r"no\.yaml: the class name False is YAML's .*quote"),
        ("empty.json", '{"_comment": "x"}', r"empty\.json: holds no classes"),
        ("ctx.txt", "cat", r"ctx\.txt: unknown format '.txt'"),
    ],
)
def test_file_errors_name_the_file_and_the_problem(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        PromptConfig(context_prompts=path).resolve()


def test_unknown_class_in_a_user_file_is_an_error_but_not_in_shipped_ones(tmp_path):
    path = tmp_path / "desc.json"
    path.write_text(json.dumps({"cat": ["whiskers."], "zebra": ["stripes."]}))
    vocab = Vocabulary.from_names(["cat", "dog"])
    with pytest.raises(ConfigError, match=r"desc\.json: class 'zebra' is not in the vocabulary \(cat, dog\)"):
        PromptConfig(descriptions=path).resolve().plan(vocab)
    with pytest.raises(ConfigError, match=r"disambiguation \(dict\): class 'mouse'"):
        PromptConfig(disambiguate={"mouse": "computer mouse"}).resolve().plan(vocab)
    PromptConfig(descriptions="coco80", disambiguate="default").resolve().plan(vocab)  # 80 classes, 2 used: fine


def test_config_errors():
    with pytest.raises(ConfigError, match="neither a shipped name"):
        PromptConfig(descriptions="voc21").resolve()
    with pytest.raises(ConfigError, match="not found"):
        PromptConfig(context_prompts="missing.json").resolve()
    with pytest.raises(ConfigError, match="enrichment"):
        PromptConfig(enrichment="max")
    for drop in (1.0, float("nan"), "0.1", True):  # a string or a bool was a TypeError from the comparison
        with pytest.raises(ConfigError, match="tse_drop must be a number in"):
            PromptConfig(tse_drop=drop)
    for k in (0, True, 2.0):
        with pytest.raises(ConfigError, match="tse_clusters must be a positive integer"):
            PromptConfig(tse_clusters=k)
    assert PromptConfig(tse_clusters=3, tse_drop=0).tse_clusters == 3
    with pytest.raises(InvalidTypeError):
        PromptConfig(context_prompts=3)
    with pytest.raises(ConfigError, match="replacement of 'a'"):
        PromptConfig(disambiguate={"a": 1}).resolve()
    with pytest.raises(ConfigError, match="same class"):
        PromptConfig(context_prompts={"tv monitor": ["x"], "TV-monitor": ["y"]}).resolve()


def test_template_files(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("# mine\na photo of a {}.\n\nart of the {}.\n")
    assert PromptConfig(templates=str(txt)).resolve().templates == TEMPLATES
    bad = tmp_path / "t.json"
    bad.write_text('["no placeholder"]')
    with pytest.raises(ConfigError, match=r"t\.json: template 1"):
        PromptConfig(templates=str(bad)).resolve()


# -- arithmetic ---------------------------------------------------------------------------------------------
def test_context_prompts_vote_with_the_templates_after_disambiguation():
    vocab = Vocabulary.from_names([["mouse", "rodent"], "cat"])
    ctx = {"mouse": ["a mouse next to a keyboard.", "a mouse on a desk."]}
    emb, enc = _embed(vocab, PromptConfig(context_prompts=ctx, disambiguate={"mouse": "computer mouse"}))
    f = enc.vec
    want0 = ensemble(
        np.stack(
            [f("a photo of a computer mouse."), f("art of the computer mouse."), f(ctx["mouse"][0]), f(ctx["mouse"][1])]
        )
    )
    np.testing.assert_allclose(emb[0], want0, atol=1e-6)
    want1 = ensemble(np.stack([f("a photo of a rodent."), f("art of the rodent.")] + [f(p) for p in ctx["mouse"]]))
    np.testing.assert_allclose(emb[1], want1, atol=1e-6)  # a synonym without its own entry uses its class's
    np.testing.assert_allclose(emb[2], ensemble(np.stack([f("a photo of a cat."), f("art of the cat.")])), atol=1e-6)


def test_description_enrichment_mean_and_tse():
    vocab = Vocabulary.from_names(["cat", "dog"])
    desc = {"cat": ["whiskers.", "purrs."], "dog": ["barks.", "wags.", "fetches."]}
    base, _ = _embed(vocab, PromptConfig(context_prompts={"cat": ["x."]}))  # same templates, plus one context prompt
    plain = np.stack([ensemble(np.stack([FakeEncoder().vec(t.format(q)) for t in TEMPLATES])) for q in vocab.queries])
    mean, enc = _embed(vocab, PromptConfig(descriptions=desc, enrichment="mean"))
    d = {
        k: l2_normalize(np.stack([enc.vec(f"{DESCRIPTION_PREFIX.format(k)} {s}") for s in v])) for k, v in desc.items()
    }
    np.testing.assert_allclose(mean[0], mean_enrich(plain[0], d["cat"]), atol=1e-6)
    np.testing.assert_allclose(mean[1], mean_enrich(plain[1], d["dog"]), atol=1e-6)
    tse, _ = _embed(vocab, PromptConfig(descriptions=desc, tse_clusters=3, tse_drop=0.34))
    bank = kmeans(np.concatenate([d["cat"], d["dog"]]), 3)
    np.testing.assert_allclose(tse, tse_enrich(plain, bank, 0.34), atol=1e-6)
    assert not np.allclose(base[0], plain[0]) and np.allclose(base[1], plain[1], atol=1e-6)


def test_numpy_path_equals_the_torch_template_ensemble(tiny_clip):
    """Context prompts of one class leave the other classes exactly as the default torch encode_queries gives."""
    import open_clip

    from clipsam.dense.text import embed_prompts, encode_queries

    tok = open_clip.get_tokenizer(tiny_clip.arch)
    vocab = Vocabulary.from_names(["cat", "sofa"])
    ref = encode_queries(tiny_clip.model, tok, vocab, TEMPLATES, "cpu").numpy()
    ours = build_text_embeddings(
        lambda p: embed_prompts(tiny_clip.model, tok, p, "cpu"),
        vocab,
        TEMPLATES,
        PromptConfig(context_prompts={"cat": ["a cat."]}).resolve(),
    )
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-6)
    assert np.abs(ours[0] - ref[0]).max() > 1e-3


# -- the Segmenter ----------------------------------------------------------------------------------------------
def test_with_options_templates_replace_a_prompt_configs_templates(make_segmenter):
    """Built with PromptConfig(templates=...), ``with_options(templates=...)`` changed only the recorded config."""
    from clipsam.errors import ConfigError

    seg = make_segmenter("sclip", None).with_options(prompts=PromptConfig(templates="single"))
    assert len(seg.templates) == 1
    seven = seg.with_options(templates="openai7")
    assert len(seven.templates) == 7 and seven.config.templates == "openai7" and seven.prompts.templates is None
    vocab = Vocabulary.from_names(["mouse", "cat"])
    assert not torch.allclose(seven.text_embeddings(vocab), seg.text_embeddings(vocab))
    assert len(seg.with_options(prob_thd=0.2).templates) == 1  # other options keep the PromptConfig's templates
    with pytest.raises(ConfigError, match="templates are given twice"):
        seg.with_options(templates="openai7", prompts=PromptConfig(templates="single"))


def test_segmenter_cache_follows_every_prompt_option(make_segmenter, tmp_path):
    seg = make_segmenter("sclip", None)
    vocab = Vocabulary.from_names(["mouse", "cat"])
    plain = seg.text_embeddings(vocab)
    path = tmp_path / "ctx.json"
    path.write_text(json.dumps({"cat": ["a cat on a mat."]}))
    a = seg.with_options(context_prompts=str(path))
    ea = a.text_embeddings(vocab)
    assert a.text_embeddings(vocab) is ea and not torch.allclose(ea, plain)  # cached, and different
    path.write_text(json.dumps({"cat": ["a cat in a tree."]}))  # same path, new contents: a new key
    eb = seg.with_options(context_prompts=str(path)).text_embeddings(vocab)
    assert not torch.allclose(ea, eb)
    dis = seg.with_options(prompts=PromptConfig(disambiguate="default"))
    ed = dis.text_embeddings(vocab)
    assert not torch.allclose(ed[0], plain[0]) and torch.allclose(ed[1], plain[1], atol=1e-6)
    assert seg.text_embeddings(vocab) is plain  # the default entry is untouched
    res = dis.segment(np.zeros((40, 40, 3), np.uint8), classes=["mouse", "cat"])
    assert res.classes == ("mouse", "cat") and res.info["prompts"]["disambiguate"] == "default"


def test_generate_descriptions_script_writes_a_loadable_file(tmp_path):
    import importlib.util
    import shlex
    import sys
    from pathlib import Path

    import clipsam

    path = Path(clipsam.__file__).parent / "data" / "descriptions" / "generate_descriptions.py"
    spec = importlib.util.spec_from_file_location("generate_descriptions", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.parse_answer('["a red one.", " "]') == ["a red one."]
    assert gen.parse_answer("1. a cat asleep.\n- a cat on a mat.\n\n") == ["a cat asleep.", "a cat on a mat."]
    llm = f"{shlex.quote(sys.executable)} -c \"import sys; sys.stdin.read(); print('1) a tabby curled up.')\""
    out = tmp_path / "desc.json"
    assert gen.main(["--classes", "cat, sofa", "--llm", llm, "--out", str(out)]) == 0
    r = PromptConfig(descriptions=out).resolve()
    assert r.descriptions.entries == {"cat": ("a tabby curled up.",), "sofa": ("a tabby curled up.",)}


def test_shipped_context_prompts_cover_every_builtin_vocabulary():
    import json

    from clipsam.prompt_files import shipped_path
    from clipsam.prompting import _norm
    from clipsam.vocabulary import builtin_vocabulary

    entries = json.loads(shipped_path("context_prompts", "default").read_text())
    have = {_norm(k) for k in entries}
    assert all(len(v) == 3 and all(p.endswith(".") and "{}" not in p for p in v) for v in entries.values())
    for name in ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff164k", "cityscapes", "ade20k"):
        vocab = builtin_vocabulary(name)
        for ci, cls in enumerate(vocab.classes):
            queries = [q for q, c in zip(vocab.queries, vocab.query_to_class) if c == ci]
            assert any(_norm(q) in have for q in queries), f"{name}: no context prompts for {cls!r}"
