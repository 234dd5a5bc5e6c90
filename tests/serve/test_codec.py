"""The answer's wire format is lossless: labels (PNG and RLE), float32 scores bit for bit, overlay, SAM2 instances."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from clipsam.refine.merge import Instance
from clipsam.result import SegmentationResult
from clipsam.serve.codec import b64decode, decode_result, encode_result, labels_from_rle
from clipsam.serve.errors import ServeError


@pytest.fixture
def result(chelsea_small):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, chelsea_small.shape[:2]).astype(np.int32)
    labels[:, :7] = 4  # runs, and the last class present
    scores = rng.random(labels.shape, dtype=np.float32)
    scores[0, 0] = np.float32(1 / 3)  # needs every bit
    info = {"method": "resclip", "config": {"scales": (1.0,), "short_side": 336}, "time_ms": 1.5}
    return SegmentationResult(labels, scores, ("a", "b", "c", "d", "e"), chelsea_small, info)


def test_round_trip_is_exact(result):
    payload = json.loads(json.dumps(encode_result(result, ("labels", "scores", "rle", "overlay"))))  # through JSON
    got = decode_result(payload, result.image)
    assert isinstance(got, SegmentationResult)
    assert got.labels.dtype == np.int32 and np.array_equal(got.labels, result.labels)
    assert got.scores.dtype == np.float32 and np.array_equal(got.scores, result.scores)  # bit for bit
    assert got.classes == result.classes and got.info["config"]["short_side"] == 336
    assert np.array_equal(labels_from_rle(payload["labels_rle"], got.shape), result.labels)
    assert [r["class"] for r in payload["labels_rle"]] == list(result.classes)
    assert payload["pixel_fractions"] == pytest.approx(result.pixel_fractions(), abs=1e-15)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload["overlay_png"]))))
    assert np.array_equal(overlay, np.asarray(result.overlay()))
    assert got.summary()["pixel_fractions"] == result.summary()["pixel_fractions"]


def test_labels_only_and_rle_only(result):
    only = decode_result(encode_result(result, ("labels",)))
    assert (
        np.array_equal(only.labels, result.labels)
        and only.scores.size == 0
        and "scores" not in encode_result(result, ("labels",))
    )
    rle = decode_result(encode_result(result, ("rle",)))
    assert np.array_equal(rle.labels, result.labels)
    with pytest.raises(ServeError, match="neither labels_png nor labels_rle") as e:
        decode_result(encode_result(result, ("scores",)))
    assert e.value.status == 502


def test_instances_round_trip(result):
    h, w = result.labels.shape
    mask = np.zeros((h, w), bool)
    mask[10:30, 5:50] = True
    inst = Instance(mask, 2, 0.75, (5.0, 10.0, 49.0, 29.0), int(mask.sum()))
    refined = SegmentationResult(
        np.where(mask, 2, result.labels).astype(np.int32),
        result.scores,
        result.classes,
        result.image,
        {},
        dense_labels=result.labels,
        instances=[inst],
    )
    payload = encode_result(refined, ("labels", "instances"))
    assert payload["instances"] == refined.instances_json()
    got = decode_result(payload)
    assert np.array_equal(got.dense_labels, result.labels) and len(got.instances) == 1
    g = got.instances[0]
    assert np.array_equal(g.mask, mask) and (g.class_id, g.score, g.box, g.area) == (2, 0.75, inst.box, inst.area)
    assert got.instances_json() == refined.instances_json()


def test_base64_is_strict_but_skips_line_breaks():
    assert b64decode(base64.b64encode(b"\x00\xff").decode(), "x") == b"\x00\xff"
    assert b64decode("data:image/png;base64," + base64.b64encode(b"ab").decode(), "x") == b"ab"
    wrapped = base64.encodebytes(bytes(range(200))).decode()  # MIME lines of 76 characters
    assert b64decode(wrapped, "x") == b64decode(wrapped.replace("\n", "\r\n"), "x") == bytes(range(200))
    assert b64decode(" data:image/png;base64,\n" + wrapped, "x") == bytes(range(200))
    for bad, code in (
        ("not base64!", "bad_base64"),
        ("data:image/png,abcd", "bad_base64"),
        (12, "bad_request"),
        ("YWJj\u00a0ZGVm", "bad_base64"),  # whitespace other than ASCII is not skipped
    ):
        with pytest.raises(ServeError) as e:
            b64decode(bad, "image")
        assert (e.value.status, e.value.code) == (400, code) and "image" in e.value.message


def test_more_than_256_classes_round_trip_as_16_bit_png():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 300, (20, 30)).astype(np.int32)
    labels[0, 0] = 299  # wraps to 43 in an 8-bit PNG
    classes = tuple(f"class {i}" for i in range(300))
    big = SegmentationResult(labels, np.zeros(labels.shape, np.float32), classes, None, {})
    payload = json.loads(json.dumps(encode_result(big, ("labels", "rle", "instances"))))
    with Image.open(io.BytesIO(base64.b64decode(payload["labels_png"]))) as img:
        assert img.mode == "I;16" and np.array_equal(np.asarray(img), labels)  # decodable without the client
    got = decode_result(payload)
    assert got.labels.max() == 299 and np.array_equal(got.labels, labels)
    assert np.array_equal(got.dense_labels, labels)  # dense_labels_png: the same encoding
    assert np.array_equal(labels_from_rle(payload["labels_rle"], got.shape), labels)
    small = decode_result(encode_result(SegmentationResult(labels % 256, big.scores, classes, None, {}), ("labels",)))
    assert np.array_equal(small.labels, labels % 256)  # up to 255: still a palette PNG


def test_label_png_modes(result):
    payload = encode_result(result, ("labels",))
    with Image.open(io.BytesIO(base64.b64decode(payload["labels_png"]))) as img:
        assert img.mode == "P"  # the VOC palette while every index is below 256
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    with pytest.raises(ServeError, match="palette or 16-bit greyscale") as e:
        decode_result({**payload, "labels_png": base64.b64encode(buf.getvalue()).decode()})
    assert e.value.status == 502
