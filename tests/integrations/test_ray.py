"""clipsam on Ray Data, on a local 2-CPU cluster started by the tests: same outputs as in-process, resuming,
bad images, the CLI with --ray ADDRESS, and the error without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from clipsam.errors import ConfigError

from ..test_batch import MODEL, _cli, labels_of, make_images

CLASSES = "cat, grass, sky"


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_in")
    paths = make_images(folder, 5)
    return folder, paths


def test_map_batches_equals_in_process(cluster, images):
    import ray

    from clipsam.integrations.ray import SegmentImages, segment_dataset

    folder, paths = images
    rows = [{"path": str(p)} for p in paths] + [{"path": str(folder / "a" / "broken.jpg")}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = SegmentImages(model=MODEL, classes=CLASSES)({"path": [r["path"] for r in rows]})
    out = segment_dataset(ray.data.from_items(rows), model=MODEL, classes=CLASSES, concurrency=2, batch_size=2)
    got = {r["path"]: r for r in out.iter_rows()}
    assert sorted(got) == sorted(r["path"] for r in rows)  # one row per input, none lost or repeated
    for i, r in enumerate(rows):
        row = got[r["path"]]
        assert bool(row["ok"]) == bool(local["ok"][i])
        if row["ok"]:
            assert np.array_equal(np.asarray(row["labels"]), local["labels"][i])
            # fp32: other batch compositions and thread counts in the actors change the last bits only
            np.testing.assert_allclose(np.asarray(row["scores"]), local["scores"][i], atol=1e-5)
            assert json.loads(row["classes"]) == ["cat", "grass", "sky"]
        else:
            assert "broken.jpg" in row["error"]


def test_run_batch_on_ray_resumes_and_matches(cluster, images, tmp_path):
    from clipsam.batch import run_batch

    folder, paths = images
    ref = run_batch([str(folder)], tmp_path / "ref", model=MODEL, classes=CLASSES, progress=False)
    out = tmp_path / "out"
    first = run_batch([str(folder)], out, model=MODEL, classes=CLASSES, progress=False)  # then "interrupt" it:
    for p in paths[:2]:  # two images lost their summary (one also its labels), as a kill mid-write leaves them
        (out / p.parent.name / f"{p.stem}.json").unlink()
    (out / paths[0].parent.name / f"{paths[0].stem}_labels.png").unlink()
    report = run_batch(
        [str(folder)], out, model=MODEL, classes=CLASSES, ray=cluster, actors=2, batch_size=1, progress=False
    )
    assert (first["done"], first["failed"]) == (5, 1)
    assert (report["skipped"], report["done"], report["failed"]) == (3, 2, 1), report
    assert report["failures"][0]["path"].endswith("broken.jpg") and report["mode"] == "ray (2 actor(s))"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "ref").as_posix() for p in (tmp_path / "ref").rglob("*") if p.is_file()
    )
    for p in paths:
        name = f"{p.parent.name}/{p.stem}"
        assert np.array_equal(labels_of(out, name), labels_of(tmp_path / "ref", name))
    assert ref["done"] == 5


@pytest.mark.slow
def test_cli_batch_on_the_cluster_address(cluster, images, tmp_path):
    folder, paths = images
    res = subprocess.run(
        _cli(str(folder), "--out", str(tmp_path / "out"), "--ray", cluster, "--actors", "2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr  # the broken image
    assert "broken.jpg" in res.stderr and "5 segmented" in res.stdout and "ray (2 actor(s))" in res.stdout
    assert len(list((tmp_path / "out").rglob("*_labels.png"))) == 5


def test_missing_ray_names_the_extra(monkeypatch):
    from clipsam.errors import MissingDependencyError
    from clipsam.integrations.ray import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"clipsam\[ray\]"):
        require_ray()


def test_segment_images_needs_one_model_source():
    from clipsam.errors import ConfigError
    from clipsam.integrations.ray import SegmentImages

    with pytest.raises(ConfigError, match="exactly one"):
        SegmentImages(model=MODEL, engines="x")
    with pytest.raises(ConfigError, match="exactly one"):
        SegmentImages()


def test_image_column_rows_and_a_bad_array():
    from clipsam.integrations.ray import SegmentImages

    rng = np.random.default_rng(3)
    good = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (44, 30), dtype=np.uint8)]
    column = np.empty(3, dtype=object)
    column[:] = [good[0], np.zeros((6, 6, 7), np.uint8), good[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapper = SegmentImages(model=MODEL, classes=CLASSES)
    out = mapper({"image": column})
    assert list(out["index"]) == [0, 1, 2] and list(out["ok"]) == [True, False, True]
    assert "image 1" in out["error"][1]
    for i, img in ((0, good[0]), (2, good[1])):
        assert np.array_equal(out["labels"][i], mapper.segmenter.segment(img, classes=CLASSES).labels)
    assert json.loads(out["instances"][0]) == []


def test_files_of_one_name_in_two_folders_do_not_overwrite_each_other(tmp_path):
    """The README's ``read_images(include_paths=True)`` + ``out_dir`` on a nested folder: rin/a/x.png and
    rin/b/x.png were both written as out/x.*, the second over the first, both rows ok."""
    from PIL import Image

    from clipsam.integrations.ray import SegmentImages

    rng = np.random.default_rng(4)
    paths = []
    for sub in ("a", "b"):
        (tmp_path / "rin" / sub).mkdir(parents=True)
        paths.append(str(tmp_path / "rin" / sub / "x.png"))
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(paths[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapper = SegmentImages(model=MODEL, classes=CLASSES, out_dir=str(tmp_path / "out"))
    out = mapper({"path": np.array(paths, dtype=object)})
    assert list(out["ok"]) == [True, False] and "output name 'x' is taken by another image" in out["error"][1]
    assert "'name' column" in out["error"][1]
    assert json.loads((tmp_path / "out" / "x.json").read_text())["image"] == paths[0]  # the first kept
    again = mapper({"path": np.array(paths[:1], dtype=object)})  # the same image again: rewritten, not refused
    assert list(again["ok"]) == [True]
    named = mapper({"path": np.array(paths, dtype=object), "name": np.array(["a/x", "b/x"], dtype=object)})
    assert list(named["ok"]) == [True, True]
    assert json.loads((tmp_path / "out" / "b" / "x.json").read_text())["image"] == paths[1]
    with pytest.raises(ConfigError, match="out_dir needs each row's output name"):
        mapper({"image": np.array([np.zeros((40, 52, 3), np.uint8)] + [None], dtype=object)[:1]})


def test_corrclip_with_a_mask_folder_on_ray(cluster, tmp_path):
    """CorrCLIP with the user's region masks (``mask_dir``) on two Ray actors: the same label PNGs as in-process, and
    an image whose mask file is unreadable fails alone. DINO is ViT-B/8 itself, with random weights."""
    from PIL import Image

    from clipsam.batch import run_batch

    folder = tmp_path / "in"
    paths = make_images(folder, 4, bad=False)
    masks = tmp_path / "masks"
    for i, p in enumerate(paths):
        h, w = np.asarray(Image.open(p)).shape[:2]
        ids = np.zeros((h, w), np.int32)
        ids[: h // 2, : w // 2], ids[h // 3 :, w // 3 :] = 1, 2 + i
        (masks / p.parent.name).mkdir(parents=True, exist_ok=True)
        np.save(masks / p.parent.name / f"{p.stem}.npy", ids)
    (masks / paths[3].parent.name / f"{paths[3].stem}.npy").write_bytes(b"\x93NUMPY broken")
    model = dict(MODEL, method="corrclip", preset=None, dino_weights=None, corr_mask_source="given")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = run_batch(
            [str(folder)], tmp_path / "local", model=model, classes=CLASSES, mask_dir=masks, progress=False
        )
    remote = run_batch(
        [str(folder)],
        tmp_path / "ray",
        model=model,
        classes=CLASSES,
        mask_dir=masks,
        ray=cluster,
        actors=2,
        batch_size=1,
        progress=False,
    )
    for report in (local, remote):
        assert (report["done"], report["failed"]) == (3, 1), report
        assert f"{paths[3].stem}.npy" in report["failures"][0]["error"]
    for p in paths[:3]:
        name = f"{p.parent.name}/{p.stem}"
        assert np.array_equal(labels_of(tmp_path / "ray", name), labels_of(tmp_path / "local", name))
        summary = json.loads((tmp_path / "ray" / f"{name}.json").read_text())
        assert summary["config"]["method"] == "corrclip" and summary["corrclip"]["masks"] == "given"
