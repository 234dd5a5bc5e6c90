"""clipsam.serve.Client against the local Ray Serve: SegmentationResult objects equal to the in-process ones for
every image form, the raw JSON, the other routes, errors as ServeError, and the client without Ray or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipsam
from clipsam.errors import InvalidImageError, InvalidTypeError
from clipsam.result import SegmentationResult
from clipsam.serve import Client, ServeError
from clipsam.serve.client import _classes_field
from clipsam.vocabulary import Vocabulary

from .helpers import KEY, assert_same, free_port

SAMPLE = Path(clipsam.__file__).parent / "data" / "chelsea.jpg"


def test_segment_returns_the_in_process_result(server, reference, tmp_path):
    client = Client(server["main"])
    classes = ["cat", ["grass", "lawn"], "wall"]
    res = client.segment(str(SAMPLE), classes)
    ref = reference().segment(str(SAMPLE), classes=classes)
    assert isinstance(res, SegmentationResult)
    assert_same(res, ref)
    assert np.array_equal(res.image, ref.image) and res.shape == (300, 451)
    assert res.pixel_fractions() == pytest.approx(ref.pixel_fractions())
    assert np.array_equal(np.asarray(res.overlay()), np.asarray(ref.overlay()))
    assert res.info["method"] == "resclip" and res.info["server"]["batch"]["size"] >= 1
    assert res.dense_labels is None and res.instances == []
    saved = res.save(tmp_path)  # the same files as an in-process result's
    assert np.array_equal(np.asarray(Image.open(saved["labels"])), ref.labels)


@pytest.mark.parametrize("form", ["bytes", "pil", "rgb", "gray", "rgba", "float", "vocabulary"])
def test_image_and_vocabulary_forms(server, reference, chelsea_small, form):
    client = Client(server["main"] + "/")  # a trailing slash is fine
    rgb = chelsea_small
    image, classes, want = {
        "bytes": (SAMPLE.read_bytes(), "cat, grass", str(SAMPLE)),
        "pil": (Image.fromarray(rgb), "cat, grass", rgb),
        "rgb": (rgb, "cat, grass", rgb),
        "gray": (rgb[:, :, 0], "cat, grass", rgb[:, :, 0]),
        "rgba": (np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), "cat, grass", rgb),
        "float": (rgb / 255.0, "cat, grass", rgb),  # sent as 8-bit: equal to the uint8 image's result
        "vocabulary": (rgb, Vocabulary.from_names(["cat", ["grass", "lawn"]]), rgb),
    }[form]
    assert_same(client.segment(image, classes), reference().segment(want, classes=classes), form)


def test_raw_json_options_and_routes(server, reference, chelsea_small):
    client = Client(server["main"])
    body = client.segment_json(chelsea_small, "cat, dog", returns=("rle", "overlay"), prob_thd=0.3, templates="openai7")
    assert set(body) >= {"labels_rle", "overlay_png", "pixel_fractions", "timing", "batch", "info"}
    assert "labels_png" not in body and "scores" not in body
    ref = reference(prob_thd=0.3, templates="openai7").segment(chelsea_small, classes="cat, dog")
    assert body["pixel_fractions"] == pytest.approx(ref.pixel_fractions(), abs=1e-12)
    assert client.health()["status"] == "ok" and client.ready() is True
    client.wait_ready(timeout=5)
    assert client.describe()["preset"] == "voc21" and client.stats()["requests"]["ok"] >= 1


def test_errors_are_serve_errors(server, chelsea_small):
    with pytest.raises(ServeError, match="empty") as e:
        Client(server["main"]).segment(chelsea_small, "")
    assert (e.value.status, e.value.code) == (400, "empty_vocabulary") and isinstance(e.value, clipsam.ClipSamError)
    with pytest.raises(ServeError) as e:
        Client(server["main"]).segment(chelsea_small, "cat", colour="red")
    assert e.value.code == "unknown_option"
    with pytest.raises(ServeError) as e:
        Client(server["keyed"]).segment(chelsea_small, "cat")
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    assert Client(server["keyed"], api_key=KEY).segment(chelsea_small, "cat, dog").classes == ("cat", "dog")
    down = Client(f"http://127.0.0.1:{free_port()}", timeout=5)
    assert down.ready() is False
    with pytest.raises(ServeError) as e:
        down.health()
    assert e.value.code == "unreachable" and "127.0.0.1" in e.value.message
    with pytest.raises(ServeError, match="not ready within"):
        down.wait_ready(timeout=0.5, interval=0.1)
    with pytest.raises(ServeError, match="http:// or https://"):
        Client("file:///etc/passwd")


def test_client_needs_neither_ray_nor_torch(server):
    code = f"""
import sys
for name in ("ray", "torch", "starlette"):
    sys.modules[name] = None  # importing them fails
from clipsam.serve import Client
res = Client({server["main"]!r}).segment({str(SAMPLE)!r}, ["cat", "grass"])
print(type(res).__name__, res.labels.shape, res.scores.dtype, sorted(res.pixel_fractions()) != [])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SegmentationResult (300, 451) float32 True"


@pytest.mark.parametrize(
    "classes", [{"cat", "dog"}, {"cat": 1}, (c for c in ["cat"]), 3, ["cat", 3], [["cat", None]], [["cat", ["kitten"]]]]
)
def test_classes_of_other_types_are_refused_before_any_request(chelsea_small, classes):
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=5)  # nothing listens: a request would be "unreachable"
    for call in (client.segment, client.segment_json):
        with pytest.raises(InvalidTypeError, match="classes must"):
            call(chelsea_small, classes)


def test_classes_fields_sent():
    assert _classes_field("cat, dog") == "cat, dog"
    assert json.loads(_classes_field(("cat", ("sofa", "couch")))) == ["cat", ["sofa", "couch"]]
    vocab = Vocabulary.from_names(["cat", ["sofa", "couch"]])
    assert json.loads(_classes_field(vocab)) == [["cat"], ["sofa", "couch"]]


def test_image_files_are_checked_before_any_request(tmp_path):
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=5)
    for image, text in (
        (tmp_path / "missing.jpg", "image file not found: .*missing.jpg"),
        (str(tmp_path), "is a folder"),
        ("https://example.com/cat.jpg", "is a URL; the client does not fetch URLs"),
    ):
        for call in (client.segment, client.segment_json):
            with pytest.raises(InvalidImageError, match=text):
                call(image, "cat")
