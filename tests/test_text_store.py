"""The on-disk text-embedding cache (``clipsam.text_store``): keys, location and switches, atomic writes, the size
bound, distrust of bad files, a second process reading what the first wrote (bit for bit, no encoder call), and
PyTorch and engine front ends sharing files. Every test points the cache at its own tmp folder (``text_cache_dir``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsam.config import dense_config
from clipsam.errors import ConfigError
from clipsam.segmenter import Segmenter
from clipsam.text_store import TextStore, default_cache_dir, env_enabled, resolve_text_store, text_cache_key

from .conftest import TINY_VIT
from .engines import TEMPLATES

CLASSES = ["cat", "sofa, couch", "television monitor"]
MODEL = {"arch": "ViT-B-16", "weights_sha256": "ab" * 32, "quick_gelu": True, "precision": "fp32"}


def _segmenter(tiny_clip, **kw) -> Segmenter:
    return Segmenter(tiny_clip, dense_config("sclip", None, templates=TEMPLATES), **kw)


def _npy(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy")) if folder.is_dir() else []


def _count_encoder_calls(monkeypatch) -> list:
    import clipsam.dense.text as mod

    calls: list = []
    real = mod.encode_tokens
    monkeypatch.setattr(mod, "encode_tokens", lambda *a: calls.append(1) or real(*a))
    return calls


def test_key_names_every_input():
    base = text_cache_key(MODEL, ["cat", "dog"], ["a {}."], ())
    assert len(base) == 64 and base == text_cache_key(dict(MODEL), ("cat", "dog"), ("a {}.",), ())
    changed = [
        text_cache_key({**MODEL, "weights_sha256": "cd" * 32}, ["cat", "dog"], ["a {}."], ()),
        text_cache_key({**MODEL, "arch": "ViT-L-14"}, ["cat", "dog"], ["a {}."], ()),
        text_cache_key({**MODEL, "quick_gelu": False}, ["cat", "dog"], ["a {}."], ()),
        text_cache_key({**MODEL, "precision": "fp16"}, ["cat", "dog"], ["a {}."], ()),
        text_cache_key(MODEL, ["dog", "cat"], ["a {}."], ()),
        text_cache_key(MODEL, ["cat", "dog"], ["a {}.", "the {}."], ()),
        text_cache_key(MODEL, ["cat", "dog"], ["a {}."], ("digest", None, None)),
        text_cache_key(MODEL, ["cat", "dog"], ["a {}."], ("d", None, "e", "tse", None, 0.1)),
        text_cache_key(MODEL, ["cat", "dog"], ["a {}."], ("d", None, "e", "mean", None, 0.1)),
    ]
    assert len(set(changed + [base])) == len(changed) + 1


def test_key_names_the_clipsam_version(monkeypatch):
    import clipsam

    before = text_cache_key(MODEL, ["cat"], ["a {}."], ())
    monkeypatch.setattr(clipsam, "__version__", "99.0.0")
    assert text_cache_key(MODEL, ["cat"], ["a {}."], ()) != before


def test_location_and_switches(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "text"
    monkeypatch.delenv("CLIPSAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clipsam" / "text"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "clipsam" / "text"
    for value, on in (("", True), ("1", True), ("on", True), ("0", False), ("false", False), ("OFF", False)):
        monkeypatch.setenv("CLIPSAM_TEXT_CACHE", value)
        assert env_enabled() is on
        assert (resolve_text_store(None) is not None) is on
    assert resolve_text_store(False) is None
    assert resolve_text_store(True).folder == default_cache_dir()  # True wins over CLIPSAM_TEXT_CACHE=0
    assert resolve_text_store(tmp_path / "mine").folder == tmp_path / "mine"
    with pytest.raises(ConfigError, match="text_disk_cache"):
        resolve_text_store(3)
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "maybe")
    with pytest.raises(ConfigError, match="CLIPSAM_TEXT_CACHE='maybe'"):
        env_enabled()
    with pytest.raises(ConfigError, match="CLIPSAM_TEXT_CACHE"):  # before any weights load
        Segmenter.from_pretrained(clip=TINY_VIT, clip_weights="/nonexistent.pt")
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "1")
    with pytest.raises(ConfigError, match="text_disk_cache"):
        Segmenter.from_pretrained(clip=TINY_VIT, clip_weights="/nonexistent.pt", text_disk_cache=[])


def test_atomic_writes_and_least_recently_used_eviction(tmp_path, monkeypatch):
    arr = np.ones((4, 16), np.float32)
    size = 128 + arr.nbytes  # .npy header + data
    store = TextStore(tmp_path / "s", max_bytes=3 * size)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6)]
    store.folder.mkdir()
    mine = store.folder / "mine.npy"  # the user's own file in a folder given as text_disk_cache: never touched
    np.save(mine, np.zeros(10 * arr.size, np.float32))
    os.utime(mine, (1, 1))  # older than every cache file
    for i in range(3):
        store.save(keys[i], arr * i)
        os.utime(store.path(keys[i]), (1000 + i, 1000 + i))
    assert store.load(keys[0], (4, 16)) is not None  # keys[0] is now the most recently used
    store.save(keys[3], arr * 3)
    # keys[1], the least recently used, went; the user's file neither counted nor deleted
    assert sorted(p.stem for p in _npy(store.folder)) == sorted([keys[0], keys[2], keys[3], "mine"])
    np.testing.assert_array_equal(store.load(keys[3], (4, None)), arr * 3)
    assert not [p for p in store.folder.iterdir() if p.suffix != ".npy"]  # no temporary file left

    def broken_save(f, a, allow_pickle=False):  # the disk fills up halfway through a write
        f.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.warns(UserWarning, match="cannot write the text-embedding cache") as rec:
        store.save(keys[4], arr)
        store.save(keys[5], arr)
    assert len(rec) == 1  # said once per store
    assert not store.path(keys[4]).exists() and not [p for p in store.folder.iterdir() if p.suffix != ".npy"]


def test_unwritable_folder_is_one_warning(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    store = TextStore(tmp_path / "file" / "text")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load("k", (1, 1)) is None  # nothing there: a miss, not a bad file
    with pytest.warns(UserWarning, match="CLIPSAM_TEXT_CACHE=0") as rec:
        store.save("k", np.zeros((1, 1), np.float32))
        store.save("k", np.zeros((1, 1), np.float32))
    assert len(rec) == 1


def _object_array(path: Path, shape) -> None:
    np.save(path, np.empty(shape, dtype=object), allow_pickle=True)


BAD_FILES = {
    "garbage": lambda p, s: p.write_bytes(b"not an npy file at all"),
    "truncated": lambda p, s: p.write_bytes(p.read_bytes()[:100]),
    "pickle": _object_array,
    "shape": lambda p, s: np.save(p, np.zeros((s[0] + 1, s[1]), np.float32)),
    "width": lambda p, s: np.save(p, np.zeros((s[0], s[1] + 1), np.float32)),
    "float64": lambda p, s: np.save(p, np.zeros(s, np.float64)),
    "nan": lambda p, s: np.save(p, np.full(s, np.nan, np.float32)),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_file_is_ignored_with_one_warning_and_rewritten(text_cache_dir, tiny_clip, monkeypatch, bad):
    good = _segmenter(tiny_clip).text_embeddings(CLASSES)
    (path,) = _npy(text_cache_dir)
    BAD_FILES[bad](path, tuple(good.shape))
    calls = _count_encoder_calls(monkeypatch)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        again = _segmenter(tiny_clip).text_embeddings(CLASSES)
    said = [str(w.message) for w in rec if "ignoring the cached" in str(w.message)]
    assert len(said) == 1 and str(path) in said[0]
    assert calls  # encoded again, not trusted
    torch.testing.assert_close(again, good, atol=0, rtol=0)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), good.numpy())  # rewritten
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _segmenter(tiny_clip).text_embeddings(CLASSES)
    assert not calls  # the rewritten file is used


def test_off_switches_write_nothing(text_cache_dir, tiny_clip, monkeypatch, tmp_path):
    _segmenter(tiny_clip, text_disk_cache=False).text_embeddings(CLASSES)
    assert _npy(text_cache_dir) == []
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "0")
    _segmenter(tiny_clip).text_embeddings(CLASSES)
    assert _npy(text_cache_dir) == []
    mine = tmp_path / "mine"
    _segmenter(tiny_clip, text_disk_cache=mine).text_embeddings(CLASSES)  # an explicit folder wins over the env
    assert len(_npy(mine)) == 1


_SECOND_PROCESS = """
import sys, warnings
import numpy as np
import clipsam.dense.text as text
from clipsam.config import dense_config
from clipsam.models import load_clip
from clipsam.segmenter import Segmenter

def refuse(*a, **k):
    raise AssertionError("the text encoder ran in the second process")

warnings.simplefilter("ignore")
seg = Segmenter(load_clip(sys.argv[1], None), dense_config("sclip", None, templates=tuple(sys.argv[3:5])))
seg.model.transformer.forward = refuse
text.encode_tokens = refuse
np.save(sys.argv[2], seg.text_embeddings(sys.argv[5]).numpy())
"""


def test_second_process_gets_the_same_bits_without_encoding(text_cache_dir, tiny_clip, tmp_path):
    classes = "cat, sofa; couch, television monitor".replace(";", ",")
    first = _segmenter(tiny_clip).text_embeddings(classes).numpy()
    assert len(_npy(text_cache_dir)) == 1
    out = tmp_path / "second.npy"
    proc = subprocess.run(
        [sys.executable, "-c", _SECOND_PROCESS, TINY_VIT, str(out), *TEMPLATES, classes],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = np.load(out)
    assert second.dtype == np.float32 and second.shape == first.shape
    assert np.array_equal(second.view(np.uint32), first.view(np.uint32))  # bit for bit


def test_engines_and_pytorch_share_files(text_cache_dir, tiny_clip, engine_dir, monkeypatch):
    from clipsam.engine import EngineSegmenter

    torch_seg = _segmenter(tiny_clip)
    written = torch_seg.text_embeddings(CLASSES).numpy()
    eng = EngineSegmenter(engine_dir("naclip"))
    monkeypatch.setattr(eng.text_encoder.session, "run", lambda feeds: pytest.fail("clip_text ran"))
    read = eng.text_embeddings(CLASSES)
    assert np.array_equal(read.view(np.uint32), written.view(np.uint32))
    monkeypatch.undo()
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(text_cache_dir.parent))
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "1")
    other = ["dog", "tree", "road"]
    from_engine = EngineSegmenter(engine_dir("naclip")).text_embeddings(other)  # the engine writes, torch reads
    calls = _count_encoder_calls(monkeypatch)
    from_disk = _segmenter(tiny_clip).text_embeddings(other)
    assert not calls and np.array_equal(from_disk.numpy().view(np.uint32), from_engine.view(np.uint32))
    np.testing.assert_allclose(from_engine, torch_seg.text_embeddings(other).numpy(), atol=1e-6, rtol=0)


def test_prompt_options_and_templates_get_their_own_files(text_cache_dir, tiny_clip, monkeypatch):
    from clipsam import PromptConfig

    seg = _segmenter(tiny_clip)
    plain = seg.text_embeddings(["cat", "mouse", "tv monitor"])
    prompted = seg.with_options(prompts=PromptConfig(context_prompts="default", disambiguate="default"))
    other = prompted.text_embeddings(["cat", "mouse", "tv monitor"])
    single = seg.with_options(templates="single")
    assert single.templates != seg.templates
    third = single.text_embeddings(["cat", "mouse", "tv monitor"])
    assert len(_npy(text_cache_dir)) == 3
    assert not torch.allclose(plain, other) and not torch.allclose(plain, third)
    calls = _count_encoder_calls(monkeypatch)
    fresh = Segmenter(tiny_clip, dense_config("sclip", None, templates=TEMPLATES))
    fresh = fresh.with_options(prompts=PromptConfig(context_prompts="default", disambiguate="default"))
    torch.testing.assert_close(fresh.text_embeddings(["cat", "mouse", "tv monitor"]), other, atol=0, rtol=0)
    assert not calls
