"""``staged_folder``: a failed or interrupted export over an existing engine folder leaves it as it was."""

from __future__ import annotations

import pytest

from clipsam.errors import ConfigError
from clipsam.export.staging import staged_folder


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def engines(tmp_path):
    out = tmp_path / "engines"
    (out / "sub").mkdir(parents=True)
    (out / "manifest.json").write_text('{"old": true}')
    (out / "sub" / "graph.onnx").write_bytes(b"old graph")
    return out


def test_a_new_or_empty_folder_is_written_in_place(tmp_path):
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with staged_folder(out, overwrite=False) as dest:
            assert dest == out and out.is_dir()
            (dest / "manifest.json").write_text("{}")
        assert _tree(out) == {"manifest.json": b"{}"}


def test_a_non_empty_folder_needs_overwrite(engines):
    with pytest.raises(ConfigError, match="is not empty; pass overwrite=True"):
        with staged_folder(engines, overwrite=False):
            pass


@pytest.mark.parametrize("failure", [RuntimeError("export failed"), KeyboardInterrupt()])
def test_a_failed_overwrite_leaves_the_old_folder_intact(engines, failure):
    before = _tree(engines)
    with pytest.raises(type(failure)):
        with staged_folder(engines, overwrite=True) as dest:
            assert dest != engines and dest.parent == engines.parent and dest.name.startswith(".engines.")
            (dest / "manifest.json").write_text('{"new": true}')
            raise failure
    assert _tree(engines) == before
    assert sorted(p.name for p in engines.parent.iterdir()) == ["engines"]  # no staging folder left


def test_a_successful_overwrite_replaces_the_whole_folder(engines):
    with staged_folder(engines, overwrite=True) as dest:
        (dest / "manifest.json").write_text('{"new": true}')
        assert _tree(engines)["manifest.json"] == b'{"old": true}'  # untouched until the export is complete
    assert _tree(engines) == {"manifest.json": b'{"new": true}'}  # the old graph is gone with the old folder
    assert sorted(p.name for p in engines.parent.iterdir()) == ["engines"]


def test_a_symlinked_folder_keeps_its_link(engines, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(engines, target_is_directory=True)
    with staged_folder(link, overwrite=True) as dest:
        (dest / "manifest.json").write_text('{"new": true}')
    assert link.is_symlink() and _tree(link) == {"manifest.json": b'{"new": true}'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "engines"]
