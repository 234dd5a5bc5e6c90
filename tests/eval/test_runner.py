"""evaluate(): numbers equal an independent computation, resume without rework, bad samples, reports."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.errors import ConfigError, InvalidImageError
from clipsam.eval import open_dataset
from clipsam.eval.runner import evaluate, partial_path

from .test_datasets import _write_image, _write_label

IDS = [f"2007_{i:06d}" for i in range(7)]


@pytest.fixture
def voc(tmp_path) -> Path:
    """A 7-image VOC21 dataset in its real layout; labels use 0..20 and 255, sizes differ per image."""
    base = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    for k, i in enumerate(IDS):
        h, w = 10 + k, 12 + 2 * k
        _write_image(base / "JPEGImages" / f"{i}.jpg", h, w)
        label = rng.integers(0, 21, (h, w)).astype(np.uint8)
        label[rng.random((h, w)) < 0.1] = 255
        _write_label(base / "SegmentationClass" / f"{i}.png", label, palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(IDS) + "\n")
    return tmp_path


class FakeSegmenter:
    """Deterministic predictions from the image file name; reads the image with clipsam's loader."""

    def __init__(self, method="resclip", preset="voc21", interrupt_at=None, on_call=None, **overrides):
        self.config = dense_config(method, preset, **overrides)
        self.arch, self.weights_id, self.precision, self.device = "ViT-B-16", "fake", "fp32", "cpu"
        self.calls: list[str] = []
        self.interrupt_at, self.on_call = interrupt_at, on_call

    def segment(self, image, classes=None, class_file=None):
        from clipsam.preprocess import load_image

        if self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        if self.on_call:
            self.on_call(len(self.calls))
        rgb = load_image(image)
        self.calls.append(Path(image).stem)
        labels = np.random.default_rng(zlib.crc32(Path(image).stem.encode())).integers(0, 21, rgb.shape[:2])
        return SimpleNamespace(labels=labels.astype(np.int32), classes=tuple(range(21)))


def independent_miou(seg: FakeSegmenter, dataset) -> tuple[float, np.ndarray]:
    """mIoU (%) and per-class IoU from pixel sets, without SegmentationMetric."""
    inter, union = np.zeros(21), np.zeros(21)
    for s in dataset:
        gt = dataset.load_label(s).astype(np.int64)
        pred = seg.segment(str(s.image_path)).labels
        valid = gt != 255
        for c in range(21):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou) * 100), iou


def test_report_equals_independent_metric(voc, tmp_path):
    ds = open_dataset("voc21", voc)
    rep = evaluate(FakeSegmenter(), ds, tmp_path / "out" / "results.json", progress=False)
    miou, iou = independent_miou(FakeSegmenter(), ds)
    assert rep.images == 7 and rep.summary["mIoU"] == pytest.approx(miou, abs=1e-9)
    np.testing.assert_allclose(rep.metric.iou, iou, rtol=0, atol=1e-12)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["mIoU"] == pytest.approx(miou) and len(data["per_class"]) == 21
    assert data["per_class"][0]["name"] == "background" and data["images"] == 7 and data["skipped"] == []
    assert data["config"]["config"]["method"] == "resclip" and data["config"]["dataset"] == "voc21"
    assert {"clipsam", "torch", "open_clip", "onnxruntime", "numpy"} <= set(data["versions"])
    assert {"cpu", "cores", "gpu"} <= set(data["machine"]) and data["timing"]["images_per_s"] > 0
    # published ResCLIP (NACLIP + RCS + SFR) B/16 on VOC21, beside ours in both reports
    assert any(r["mIoU"] == 61.1 and r["same_backbone"] for r in data["published"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "61.10" in md and f"{miou:.2f}" in md and "| background |" in md and "ResCLIP README" in md
    assert not partial_path(tmp_path / "out" / "results.json").exists()


def test_resume_after_interrupt_does_no_image_twice(voc, tmp_path):
    ds = open_dataset("voc21", voc)
    evaluate(FakeSegmenter(), ds, tmp_path / "full.json", progress=False)
    out = tmp_path / "run.json"
    first = FakeSegmenter(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        evaluate(first, ds, out, progress=False, save_every=100)
    state = json.loads(partial_path(out).read_text())
    assert state["done"] == IDS[:3] and not out.exists()
    second = FakeSegmenter()
    rep = evaluate(second, ds, out, progress=False)
    assert first.calls == IDS[:3] and second.calls == IDS[3:]  # every image exactly once
    assert rep.images == 7 and rep.timing["resumed_images"] == 3
    a, b = json.loads((tmp_path / "full.json").read_text()), json.loads(out.read_text())
    for key in ("mIoU", "aAcc", "mAcc", "per_class", "images", "skipped", "published"):
        assert a[key] == b[key], key
    assert not partial_path(out).exists()


def test_partial_state_is_saved_every_n_images(voc, tmp_path):
    out = tmp_path / "r.json"
    seen = []

    def look(calls_so_far: int) -> None:  # what a hard kill before this call would leave behind
        p = partial_path(out)
        seen.append(len(json.loads(p.read_text())["done"]) if p.exists() else 0)

    evaluate(FakeSegmenter(on_call=look), open_dataset("voc21", voc), out, progress=False, save_every=3)
    assert seen == [0, 0, 0, 3, 3, 3, 6]


def test_resume_with_other_config_is_refused(voc, tmp_path):
    ds, out = open_dataset("voc21", voc), tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate(FakeSegmenter(interrupt_at=2), ds, out, progress=False)
    with pytest.raises(ConfigError, match=r"config\.prob_thd.*--no-resume"):
        evaluate(FakeSegmenter(prob_thd=0.3), ds, out, progress=False)
    other = FakeSegmenter(prob_thd=0.3)
    rep = evaluate(other, ds, out, progress=False, resume=False)
    assert rep.images == 7 and len(other.calls) == 7
    # a smaller limit than the partial run's progress is refused too
    with pytest.raises(KeyboardInterrupt):
        evaluate(FakeSegmenter(interrupt_at=5), ds, out, progress=False)
    with pytest.raises(Exception, match="limit"):
        evaluate(FakeSegmenter(), ds, out, progress=False, limit=2)


def test_bad_image_and_label(voc, tmp_path):
    base = voc / "VOCdevkit" / "VOC2012"
    bad_img = base / "JPEGImages" / f"{IDS[2]}.jpg"
    bad_img.write_bytes(b"not a jpeg at all")
    ds = open_dataset("voc21", voc)
    with pytest.raises(InvalidImageError, match=str(bad_img)):
        evaluate(FakeSegmenter(), ds, tmp_path / "a.json", progress=False, resume=False)
    rep = evaluate(FakeSegmenter(), ds, tmp_path / "b.json", progress=False, skip_bad=True)
    assert rep.images == 6 and [s["path"] for s in rep.skipped] == [str(bad_img)]
    assert str(bad_img) in (tmp_path / "b.md").read_text()
    _write_image(bad_img, 12, 16)  # repaired; now a label breaks
    bad_label = base / "SegmentationClass" / f"{IDS[5]}.png"
    bad_label.write_bytes(b"\x89PNG truncated")
    with pytest.raises(InvalidImageError, match=str(bad_label)):
        evaluate(FakeSegmenter(), ds, tmp_path / "c.json", progress=False)
    rep = evaluate(FakeSegmenter(), ds, tmp_path / "d.json", progress=False, skip_bad=True)
    assert [s["path"] for s in rep.skipped] == [str(bad_label)] and rep.images == 6


def test_label_of_another_dataset_is_a_bad_sample(voc, tmp_path):
    """A label with values the dataset has no class for (here 40 in VOC21) names its file before that image is
    segmented; --skip-bad skips it like an unreadable one."""
    base = voc / "VOCdevkit" / "VOC2012"
    odd = base / "SegmentationClass" / f"{IDS[3]}.png"
    label = np.full((13, 18), 40, np.uint8)
    label[0, :4] = [0, 20, 255, 77]
    _write_label(odd, label, palette=True)
    ds = open_dataset("voc21", voc)
    seg = FakeSegmenter()
    with pytest.raises(InvalidImageError, match=rf"{odd}.*outside \[0, 21\).*: 40, 77\. It is not a 'voc21' label"):
        evaluate(seg, ds, tmp_path / "a.json", progress=False, resume=False)
    assert seg.calls == IDS[:3]  # stopped before segmenting the image of that label
    rep = evaluate(FakeSegmenter(), ds, tmp_path / "b.json", progress=False, skip_bad=True)
    assert rep.images == 6 and [s["path"] for s in rep.skipped] == [str(odd)]
    assert "outside [0, 21)" in rep.skipped[0]["error"]


def test_vocabulary_must_be_the_datasets(voc, tmp_path):
    ds = open_dataset("voc21", voc)
    with pytest.raises(ConfigError, match="preset='voc21'"):
        evaluate(FakeSegmenter(preset="voc20"), ds, tmp_path / "r.json", progress=False)
    names = [f"class{i}" for i in range(21)]
    rep = evaluate(FakeSegmenter(preset="voc20"), ds, tmp_path / "r.json", progress=False, classes=names)
    assert rep.class_names == tuple(names) and rep.images == 7
    with pytest.raises(ConfigError, match="21 classes"):
        evaluate(FakeSegmenter(), ds, tmp_path / "s.json", progress=False, classes=names[:5])
    # the ClearCLIP family uses the plain vocabulary of the preset
    rep = evaluate(FakeSegmenter(method="clearclip"), ds, tmp_path / "t.json", progress=False, limit=2)
    assert rep.images == 2 and "voc21_plain" in json.dumps(rep.config)


def test_with_the_tiny_model(voc, tmp_path, make_segmenter):
    seg = make_segmenter("naclip", "voc21", short_side=32, pamr_iters=0)
    ds = open_dataset("voc21", voc, limit=2)
    rep = evaluate(seg, ds, tmp_path / "r.json", progress=True)
    inter, union = np.zeros(21), np.zeros(21)
    for s in ds:
        gt, pred = ds.load_label(s), seg.segment(str(s.image_path)).labels
        valid = gt != 255
        for c in range(21):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    expect = np.nanmean(np.where(union > 0, inter / np.maximum(union, 1), np.nan)) * 100
    assert rep.images == 2 and rep.summary["mIoU"] == pytest.approx(expect, abs=1e-9)
    assert rep.config["clip"] == "clipsam-test-vit" and rep.config["weights"] == "random:0"


def test_a_report_name_its_markdown_or_partial_state_would_overwrite_is_refused(voc, tmp_path):
    ds = open_dataset("voc21", voc)
    for name, fix in (("r.md", "r.json"), ("r.MD", "r.json"), ("r.partial.json", "r.json")):
        with pytest.raises(ConfigError, match=rf"out_path '.*{name}' names the JSON report.*e\.g\. out_path .*{fix}"):
            evaluate(FakeSegmenter(), ds, tmp_path / name, progress=False)
        assert not (tmp_path / name).exists()
    rep = evaluate(FakeSegmenter(), ds, tmp_path / "r.report", progress=False, limit=1)  # any other suffix is fine
    assert rep.images == 1 and json.loads((tmp_path / "r.report").read_text())["images"] == 1
    assert (tmp_path / "r.md").read_text().startswith("#")
