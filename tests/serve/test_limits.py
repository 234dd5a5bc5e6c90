"""Request limits: image decoding (identical to clipsam's file reading, refused before decoding when too large) and
vocabulary checks, each refusal a ServeError with its status and code."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import ClipSamError
from clipsam.serve.errors import ServeError
from clipsam.serve.limits import Limits, decode_image, parse_classes


def encoded(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def refused(fn, status: int, code: str) -> str:
    with pytest.raises(ServeError) as e:
        fn()
    assert (e.value.status, e.value.code) == (status, code), e.value
    return e.value.message


def fake_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is a stub: it is never meant to be decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_decoded_exactly_as_clipsam_reads_the_file(chelsea_small, tmp_path, fmt):
    from clipsam.preprocess import load_image

    data = encoded(chelsea_small, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data)
    rgb = decode_image(data, Limits())
    assert rgb.dtype == np.uint8 and rgb.shape == (80, 120, 3)
    assert np.array_equal(rgb, load_image(str(path)))  # the in-process Segmenter reads files this way


def test_too_many_pixels_is_refused_before_decoding(monkeypatch):
    import cv2

    def no_decode(*a, **k):
        raise AssertionError("decoded an image over the pixel limit")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    limits = Limits(max_pixels=10_000)
    assert "200x100 = 20000 pixels" in refused(lambda: decode_image(fake_png(200, 100), limits), 413, "too_many_pixels")
    # a header claiming 4 billion pixels (a decompression bomb) costs nothing either
    assert "pixels" in refused(lambda: decode_image(fake_png(65_000, 65_000), Limits()), 413, "too_many_pixels")


def test_bad_images():
    limits = Limits(max_upload_bytes=1000)
    assert "empty" in refused(lambda: decode_image(b"", limits), 400, "malformed_image")
    assert "1001 bytes" in refused(lambda: decode_image(b"x" * 1001, limits), 413, "too_large")
    assert "not a readable image" in refused(lambda: decode_image(b"%PDF-1.4 hello", limits), 400, "malformed_image")
    gif = encoded(np.zeros((8, 8, 3), np.uint8), "GIF")
    assert "GIF images are not accepted" in refused(lambda: decode_image(gif, limits), 400, "unsupported_image")
    png = encoded(np.full((30, 30, 3), 7, np.uint8), "PNG")
    assert "corrupt or truncated" in refused(lambda: decode_image(png[:60], Limits()), 400, "malformed_image")
    frames = [Image.fromarray(np.full((30, 30, 3), v, np.uint8)) for v in (7, 90)]
    for fmt in ("TIFF", "PNG", "WEBP"):  # a multi-page TIFF, an animated PNG or WebP: not one image, refused
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
        assert f"the {fmt} image holds 2 frames" in refused(
            lambda: decode_image(buf.getvalue(), Limits()), 400, "unsupported_image"
        )
        one = io.BytesIO()
        frames[1].save(one, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        assert (decode_image(one.getvalue(), Limits()) == 90).all()
    deep = io.BytesIO()
    Image.fromarray(np.full((30, 30), 0.5, np.float32)).save(deep, format="TIFF")  # 32-bit float samples
    assert "TIFF image of PIL mode 'F'" in refused(
        lambda: decode_image(deep.getvalue(), Limits()), 400, "malformed_image"
    )


def test_limits_are_validated():
    with pytest.raises(ClipSamError, match="max_pixels must be positive"):
        Limits(max_pixels=0)
    with pytest.raises(ClipSamError, match="request_timeout_s must be positive"):
        Limits(request_timeout_s=-1)
    with pytest.raises(ClipSamError, match="at most 65536"):
        Limits(max_classes=65537)
    assert Limits(max_classes=300).max_classes == 300  # label maps beyond 256 classes are 16-bit PNGs
    assert Limits().to_json()["max_upload_bytes"] == 20 << 20


def test_vocabulary_forms():
    lim = Limits()
    assert parse_classes(None, lim) is None
    assert parse_classes("cat, sofa ,floor", lim).classes == ("cat", "sofa", "floor")
    v = parse_classes("person, man, woman\ndog\n", lim)  # lines: class-file format with synonyms
    assert v.classes == ("person", "dog") and v.queries == ("person", "man", "woman", "dog")
    v = parse_classes('[["person", "man"], "dog"]', lim)
    assert v.classes == ("person", "dog") and v.num_queries == 3
    assert parse_classes(["cat", ["sofa", "couch"]], lim).queries == ("cat", "sofa", "couch")


def test_vocabulary_limits_and_errors():
    lim = Limits(max_classes=3, max_class_chars=8)
    for bad in ("", "   ", "[]", []):
        assert "empty" in refused(lambda: parse_classes(bad, lim), 400, "empty_vocabulary")
    assert "4 names" in refused(lambda: parse_classes("a, b, c, d", lim), 400, "too_many_classes")
    assert "4 names" in refused(lambda: parse_classes([["a", "b"], ["c", "d"]], lim), 400, "too_many_classes")
    assert "9 characters" in refused(lambda: parse_classes("cat, elephants", lim), 400, "class_name_too_long")
    assert "duplicate" in refused(lambda: parse_classes("cat, cat", lim), 400, "bad_vocabulary")
    assert "empty entry" in refused(lambda: parse_classes("cat,,dog", lim), 400, "bad_vocabulary")
    assert "control" in refused(lambda: parse_classes(["ca\x00t"], lim), 400, "bad_vocabulary")
    assert "JSON" in refused(lambda: parse_classes("[cat", lim), 400, "bad_vocabulary")
    assert "strings" in refused(lambda: parse_classes(["cat", 3], lim), 400, "bad_vocabulary")
    assert "string or a list" in refused(lambda: parse_classes({"cat": 1}, lim), 400, "bad_vocabulary")
