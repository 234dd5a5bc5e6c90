"""Vocabularies: names, synonyms, class files, built-in dataset vocabularies, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.errors import InvalidTypeError, VocabularyError
from clipsam.vocabulary import BUILTIN_VOCABULARIES, Vocabulary, builtin_vocabulary, parse_class_file


def test_from_names_list_string_and_synonym_groups():
    v = Vocabulary.from_names("cat, sofa,floor")
    assert v.classes == ("cat", "sofa", "floor") and not v.has_synonyms
    v = Vocabulary.from_names([["person", "man", "woman"], "dog"])
    assert v.classes == ("person", "dog")
    assert v.queries == ("person", "man", "woman", "dog") and v.query_to_class == (0, 0, 0, 1)


def test_class_file_synonyms_split_on_comma_space(tmp_path):
    f = tmp_path / "cls.txt"
    f.write_text("sky, wall, tree\nperson, person in shirt\ncat\n\n")
    v = parse_class_file(f)
    assert v.classes == ("sky", "person", "cat")
    assert v.query_to_class == (0, 0, 0, 1, 1, 2)
    assert v.to_lines() == ["sky, wall, tree", "person, person in shirt", "cat"]


@pytest.mark.parametrize(
    "name,classes,queries",
    [
        ("voc21", 21, 56),
        ("voc20", 20, 30),
        ("context60", 60, 60),
        ("context59", 59, 59),
        ("coco_object", 81, 113),
        ("coco_stuff164k", 171, 171),
        ("cityscapes", 19, 19),
        ("ade20k", 150, 150),
    ],
)
def test_builtin_vocabularies(name, classes, queries):
    v = builtin_vocabulary(name)
    assert (v.num_classes, v.num_queries) == (classes, queries)
    plain = builtin_vocabulary(name + "_plain")
    assert plain.num_classes == classes and not plain.has_synonyms
    assert name in BUILTIN_VOCABULARIES


def test_voc21_background_synonyms_and_person():
    v = builtin_vocabulary("voc21")
    bg = [q for q, c in zip(v.queries, v.query_to_class) if c == 0]
    assert len(bg) == 26 and bg[0] == "sky"
    assert builtin_vocabulary("voc21_plain").classes[0] == "background"


def test_vocabulary_errors(tmp_path):
    with pytest.raises(VocabularyError, match="empty"):
        Vocabulary.from_names([])
    with pytest.raises(VocabularyError, match="duplicate class name 'cat'"):
        Vocabulary.from_names(["cat", "dog", "cat"])
    with pytest.raises(VocabularyError, match="must be strings"):
        Vocabulary.from_names(["cat", 3])
    with pytest.raises(VocabularyError, match="empty name"):
        Vocabulary.from_names(["cat", "  "])
    with pytest.raises(VocabularyError, match="empty entry"):
        Vocabulary.from_names("cat,,dog")
    with pytest.raises(InvalidTypeError):
        Vocabulary.from_names(42)
    with pytest.raises(VocabularyError, match="not found"):
        parse_class_file(tmp_path / "missing.txt")
    f = tmp_path / "gap.txt"
    f.write_text("cat\n\ndog\n")
    with pytest.raises(VocabularyError, match="line 2 is empty"):
        parse_class_file(f)
    with pytest.raises(VocabularyError, match="unknown built-in"):
        builtin_vocabulary("imagenet")
    assert issubclass(VocabularyError, ValueError)


def test_comment_lines_and_control_characters_are_refused(tmp_path):
    f = tmp_path / "commented.txt"
    f.write_text("cat, kitty\n  # kitchen things\ndog\n")
    with pytest.raises(VocabularyError, match=r"line 2 starts with '#' \('# kitchen things'\).*Remove the line"):
        parse_class_file(f)
    assert parse_class_file_text("cat, c#\ndog") == ("cat", "c#", "dog")  # '#' inside a name stays a character
    for bad, code in (("ca\x00t", "0000"), ("\x1b[31mcat", "001B"), ("cat\x7f", "007F"), ("cat\x9b", "009B")):
        with pytest.raises(VocabularyError, match=rf"class 1\) contains the control character U\+{code}"):
            Vocabulary.from_names(["dog", bad])
    f.write_bytes(b"cat\ndo\x01g\n")
    with pytest.raises(VocabularyError, match="U\\+0001"):
        parse_class_file(f)
    # whitespace controls are spacing, normalised as before; format characters (emoji joiners) are kept
    assert Vocabulary.from_names(["big\tdog\n", "\U0001f469\u200d\U0001f4bb"]).classes == (
        "big dog",
        "\U0001f469\u200d\U0001f4bb",
    )


def test_a_string_of_several_lines_is_a_class_file(tmp_path):
    """``classes=open("classes.txt").read()`` (or ``--classes "$(cat classes.txt)"``) became one class 'cat dog'."""
    f = tmp_path / "classes.txt"
    f.write_text("cat, kitty\ndog\r\nsofa\n")
    v = Vocabulary.from_names(f.read_text())
    assert v == parse_class_file(f) and v.classes == ("cat", "dog", "sofa") and v.queries[:2] == ("cat", "kitty")
    assert Vocabulary.from_names("cat, dog\n").classes == ("cat", "dog")  # one line: a comma-separated list still
    with pytest.raises(VocabularyError, match="line 2 is empty"):
        Vocabulary.from_names("cat\n\ndog")
    with pytest.raises(VocabularyError, match=r"class name 'cat\\ndog' \(class 1\) spans several lines"):
        Vocabulary.from_names(["sofa", "cat\ndog"])
    assert Vocabulary.from_names(["cat\n", "dog"]).classes == ("cat", "dog")  # readlines(): the line end is spacing


def parse_class_file_text(text: str) -> tuple[str, ...]:
    from clipsam.vocabulary import parse_class_lines

    return parse_class_lines(text, "test").queries


def test_class_file_that_is_not_a_path_a_folder_or_a_url(tmp_path):
    from clipsam.errors import ClipSamError

    with pytest.raises(InvalidTypeError, match="class file must be a path.*got int 5"):
        parse_class_file(5)
    with pytest.raises(VocabularyError, match="is a folder, not a file"):
        parse_class_file(tmp_path)
    with pytest.raises(VocabularyError, match="is a URL"):
        parse_class_file("http://example.com/classes.txt")
    with pytest.raises(ClipSamError):
        parse_class_file(b"classes.txt")


def test_utf8_bom_is_stripped(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("cat, kitty\ndog\n".encode("utf-8-sig"))
    v = parse_class_file(f)
    assert v.classes == ("cat", "dog") and v.queries == ("cat", "kitty", "dog")
    assert Vocabulary.from_names(["\ufeffcat", "dog"]).classes == ("cat", "dog")


def test_whitespace_is_normalised_and_equal_names_are_duplicates(tmp_path):
    v = Vocabulary.from_names(["  big   dog ", "cat\t"])
    assert v.classes == ("big dog", "cat")
    with pytest.raises(VocabularyError, match=r"duplicate class name 'cat'.*'cat ' and 'cat'"):
        Vocabulary.from_names(["cat ", "cat"])
    f = tmp_path / "spaces.txt"
    f.write_text("cat , kitty\ndog\n")
    assert parse_class_file(f).queries == ("cat", "kitty", "dog")


def test_prompt_files_with_a_bom_or_bad_encoding(tmp_path):
    from clipsam.errors import ConfigError
    from clipsam.prompt_files import load_sentences, load_templates

    t = tmp_path / "templates.txt"
    t.write_bytes("a photo of a {}.\nart of the {}.\n".encode("utf-8-sig"))
    assert load_templates(t) == ("a photo of a {}.", "art of the {}.")
    j = tmp_path / "ctx.json"
    j.write_bytes('{"cat": ["a cat on a sofa"]}'.encode("utf-8-sig"))
    assert load_sentences(j, "context-prompt file")[0] == {"cat": ("a cat on a sofa",)}
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("une photo d'un {} \xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.txt cannot be read"):
        load_templates(bad)


# -- CLIP's 77-token context: a prompt open_clip would cut there is refused; queries it cannot tell apart too ------
LONG = "a very large and extremely old " * 12  # 72 tokens on its own (75 fit between the start and end tokens)


@pytest.fixture(scope="module")
def seg(make_segmenter):
    return make_segmenter("clip", None, short_side=48)


def _longest_name(encode, template: str) -> str:
    """The longest name of repeated "cat" whose prompt with ``template`` is still at most 77 tokens."""
    n = 1
    while len(encode(template.format("cat " * (n + 1)))) + 2 <= 77:
        n += 1
    return ("cat " * n).strip()


def test_a_name_open_clip_would_cut_is_refused_before_encoding(seg, monkeypatch):
    """The prompt of exactly 77 tokens is encoded; one more word is refused naming the class, the template, the
    lengths and the fix, before the text encoder runs, by segment() as well."""
    encode = seg.tokenizer.encode
    longest = max(seg.templates, key=lambda t: len(encode(t.format(""))))
    name = _longest_name(encode, longest)
    emb = seg.text_embeddings(Vocabulary.from_names([name, "grass"]))
    assert emb.shape[0] == 2 and len(encode(longest.format(name))) + 2 == 77
    import clipsam.dense.text

    calls = []
    monkeypatch.setattr(clipsam.dense.text, "encode_queries", lambda *a, **k: calls.append(a))
    too_long = name + " cat"
    with pytest.raises(VocabularyError) as err:
        seg.text_embeddings(Vocabulary.from_names(["grass", too_long]))
    assert calls == []  # refused before the text encoder ran
    msg = str(err.value)
    assert f"with the template {longest!r} its prompt is 78 tokens, longer than CLIP's 77-token context" in msg
    assert "truncated name" in msg and "Shorten it to about" in msg and "cat cat" in msg
    with pytest.raises(VocabularyError, match="tabby cat.*77-token context"):
        seg.segment(np.zeros((32, 32, 3), np.uint8), classes=[LONG + "tabby cat", "grass"])
    with pytest.raises(VocabularyError, match="synonym of class 'grass'.*77-token context"):
        seg.segment(np.zeros((32, 32, 3), np.uint8), classes=[["grass", LONG + "lawn"], "cat"])


def test_context_prompts_and_descriptions_that_would_be_cut_are_refused(seg):
    from clipsam.vocabulary import check_tokens

    encode, vocab = seg.tokenizer.encode, Vocabulary.from_names(["cat", "grass"])
    check_tokens(vocab, ["a {}."], encode, 77, contexts=[("a cat on a sofa",), ()], descriptions=["cat: it purrs"])
    with pytest.raises(
        VocabularyError, match=r"context prompt 'a very.*of class 'grass' is \d+ tokens long.*at most 75 tokens"
    ):
        check_tokens(vocab, ["a {}."], encode, 77, contexts=[(), ("a cat", LONG + "cat on a red sofa")])
    with pytest.raises(VocabularyError, match=r"description 'cat: a very.* tokens long.*77-token context"):
        check_tokens(vocab, ["a {}."], encode, 77, descriptions=["cat: it purrs", "cat: " + LONG + "cat on a mat"])


def test_descriptions_are_checked_again_for_each_prompt_configuration(seg):
    """The descriptions are checked once per segmenter; a copy with other descriptions (``with_options``) checks its
    own, even after the original has checked (and memoised) its short ones."""
    vocab = Vocabulary.from_names(["cat", "grass"])
    short = seg.with_options(descriptions={"cat": ["it purrs."]})
    short.text_embeddings(vocab)
    with pytest.raises(VocabularyError, match=r"description .* tokens long.*77-token context"):
        short.with_options(descriptions={"cat": [LONG + "cat on a mat"]}).text_embeddings(vocab)


def test_names_the_tokenizer_cannot_tell_apart_are_refused(seg):
    with pytest.raises(VocabularyError, match=r"'Cat' .*'cat'.*same text to CLIP's tokenizer"):
        seg.text_embeddings(Vocabulary.from_names(["Cat", "cat"]))
    with pytest.raises(VocabularyError, match="hot-dog.*hot - dog"):
        seg.text_embeddings(Vocabulary.from_names(["hot-dog", "hot - dog"]))
    seg.text_embeddings(Vocabulary.from_names([["cat", "Cat"], "dog"]))  # synonyms of one class may coincide


def test_shipped_vocabularies_pass_the_check(seg):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.text_embeddings(builtin_vocabulary("coco_object"))  # "bed" twice, as upstream: identical on purpose
