"""Request bodies: multipart and JSON parsed into fields, unknown fields and bad option values refused by name, and
an image that is a path or a URL refused (never opened)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from clipsam.serve.client import _multipart
from clipsam.serve.errors import ServeError
from clipsam.serve.request import parse_body, parse_options

POLICY = {
    "methods": ("resclip", "sclip"),
    "presets": ("voc21",),
    "templates": ("openai80", "single"),
    "instances": False,
}


def body(ctype, data, **kw):
    return asyncio.run(parse_body(ctype, data, **kw))


def refused(fn, status: int, code: str) -> str:
    with pytest.raises(ServeError) as e:
        fn()
    assert (e.value.status, e.value.code) == (status, code), e.value
    return e.value.message


def test_multipart_and_json_give_the_same_fields():
    data, ctype = _multipart({"classes": "cat, dog", "prob_thd": "0.2"}, b"\x89PNG-bytes\r\n--not-a-boundary")
    fields = body(ctype, data)
    assert fields == {"classes": "cat, dog", "prob_thd": "0.2", "image": b"\x89PNG-bytes\r\n--not-a-boundary"}
    js = {"image": base64.b64encode(b"\x89PNG-bytes").decode(), "classes": ["cat", ["dog", "puppy"]], "prob_thd": 0.2}
    fields = body("application/json; charset=utf-8", json.dumps(js).encode())
    assert fields["image"] == b"\x89PNG-bytes" and fields["classes"] == ["cat", ["dog", "puppy"]]
    # a base64 text field instead of a file part
    text = (
        b'--B\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
        + base64.b64encode(b"xyz")
        + b'\r\n--B\r\nContent-Disposition: form-data; name="classes"\r\n\r\ncat\r\n--B--\r\n'
    )
    assert body("multipart/form-data; boundary=B", text) == {"image": b"xyz", "classes": "cat"}


def test_bodies_that_are_refused():
    assert "multipart/form-data" in refused(lambda: body("text/plain", b"x"), 415, "unsupported_media_type")
    assert "without Content-Type" in refused(lambda: body(None, b"x"), 415, "unsupported_media_type")
    assert "not valid JSON" in refused(lambda: body("application/json", b"{"), 400, "bad_request")
    assert "object" in refused(lambda: body("application/json", b"[1]"), 400, "bad_request")
    assert "'colour'" in refused(lambda: body("application/json", b'{"colour": 1}'), 400, "unknown_option")
    data, ctype = _multipart({"classes": "cat", "foo": "1"}, b"img")
    assert "'foo'" in refused(lambda: body(ctype, data), 400, "unknown_option")
    field = b'--B\r\nContent-Disposition: form-data; name="classes"\r\n\r\ncat\r\n'
    assert "twice" in refused(
        lambda: body("multipart/form-data; boundary=B", field * 2 + b"--B--\r\n"), 400, "bad_request"
    )
    data, ctype = _multipart({}, b"img")
    two_files = data.replace(b"--\r\n", b"\r\n") + data.split(b"\r\n", 1)[1]
    assert "Too many files" in refused(lambda: body(ctype, two_files), 400, "bad_request")
    data, ctype = _multipart({}, b"img")
    assert "must be text" in refused(
        lambda: body(ctype, data.replace(b'name="image"', b'name="classes"')), 400, "bad_request"
    )
    assert "malformed multipart" in refused(lambda: body("multipart/form-data", b"--x\r\n"), 400, "bad_request")


@pytest.mark.parametrize(
    "image",
    [
        "http://10.0.0.1/a.jpg",
        "https://example.com/a.png",
        "file:///etc/passwd",
        "s3://bucket/key.jpg",
        "/etc/passwd",
        "C:\\photos\\a.jpg",
        "../a.jpg",
    ],
)
def test_a_path_or_url_is_refused(image):
    msg = refused(
        lambda: body("application/json", json.dumps({"image": image}).encode()),
        400,
        "bad_request" if "://" in image[:16] or image.startswith("file:") else "bad_base64",
    )
    assert "never" in msg


def test_options_are_validated():
    ok = parse_options(
        {
            "image": b"x",
            "classes": "cat",
            "method": "sclip",
            "templates": "single",
            "prob_thd": "0.25",
            "area_thd": "none",
            "return": "labels, scores,labels",
        },
        POLICY,
    )
    assert ok.options == {"method": "sclip", "templates": "single", "prob_thd": 0.25, "area_thd": None}
    assert ok.returns == ("labels", "scores") and ok.classes == "cat"
    assert parse_options({"image": b"x", "return": ["rle"], "area_thd": 0.5}, POLICY).options == {"area_thd": 0.5}
    assert parse_options({"image": b"x"}, POLICY).returns == ("labels",)
    cases = [
        ({"classes": "cat"}, "bad_request", "no image"),
        ({"image": b"x", "method": "naclip"}, "bad_option", "resclip, sclip"),
        ({"image": b"x", "preset": "ade20k"}, "bad_option", "voc21"),
        ({"image": b"x", "templates": "openai7"}, "bad_option", "openai80, single"),
        ({"image": b"x", "prob_thd": "-0.1"}, "bad_option", "prob_thd"),
        ({"image": b"x", "prob_thd": True}, "bad_option", "prob_thd"),
        ({"image": b"x", "area_thd": "lots"}, "bad_option", "area_thd"),
        ({"image": b"x", "return": ""}, "bad_option", "return"),
        ({"image": b"x", "return": "labels,npy"}, "bad_option", "'npy'"),
        ({"image": b"x", "return": "instances"}, "bad_option", "SAM2"),
        ({"image": b"x", "scales": "2"}, "unknown_option", "'scales'"),
    ]
    for fields, code, text in cases:
        assert text in refused(lambda: parse_options(fields, POLICY), 400, code)
    assert parse_options({"image": b"x", "return": "instances"}, {**POLICY, "instances": True}).returns == (
        "instances",
    )


def test_json_nested_too_deeply_is_a_400():
    deep = b'{"classes": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert "nested too deeply" in refused(lambda: body("application/json", deep), 400, "bad_request")


def test_json_field_given_twice_is_refused():
    twice = b'{"image": "YQ==", "classes": "cat", "image": "Yg=="}'  # json.loads alone keeps the last image
    assert "given twice: 'image';" in refused(lambda: body("application/json", twice), 400, "bad_request")
    inner = b'{"image": "YQ==", "classes": [{"a": 1, "a": 2}]}'
    assert "given twice: 'a';" in refused(lambda: body("application/json", inner), 400, "bad_request")
    dups = b'{"image": "YQ==", ' + b", ".join(b'"k%d": 1, "k%d": 2' % (i, i) for i in range(20_000)) + b"}"
    assert "'k0', 'k1', 'k10', 'k100', 'k1000' and 19995 more" in refused(
        lambda: body("application/json", dups), 400, "bad_request"
    )  # found in linear time, and named briefly
    many = json.dumps({"image": "YQ==", **{f"k{i}": i for i in range(20_000)}}).encode()
    assert "unknown field(s)" in refused(lambda: body("application/json", many), 400, "unknown_option")


def test_line_wrapped_base64_is_accepted():
    data = bytes(range(256)) * 3
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, as GNU base64 without -w0 writes
    assert "\n" in wrapped
    assert body("application/json", json.dumps({"image": wrapped}).encode())["image"] == data
    crlf = wrapped.replace("\n", "\r\n")
    form = b'--B\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + crlf.encode() + b"\r\n--B--\r\n"
    assert body("multipart/form-data; boundary=B", form)["image"] == data
