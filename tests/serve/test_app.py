"""Real HTTP against a local Ray Serve on 127.0.0.1 (tests/serve/conftest.py): results equal the in-process
Segmenter, health and readiness, the description, every limit and bad request, the API key, dynamic batching under
32 concurrent clients, and a failing request alone in a batch of good ones."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from clipsam.serve.codec import decode_result

from .helpers import KEY, MODEL, STRICT, assert_same

requests = pytest.importorskip("requests")

CLASSES = "cat, grass, wall"


def post(url, *, files=None, data=None, json_body=None, headers=None, raw=None, ctype=None):
    if raw is not None:
        headers = {**(headers or {}), "Content-Type": ctype or "application/octet-stream"}
        return requests.post(url + "/v1/segment", data=raw, headers=headers, timeout=120)
    return requests.post(url + "/v1/segment", files=files, data=data, json=json_body, headers=headers, timeout=120)


def segment(url, png, classes=CLASSES, returns="labels,scores", headers=None, **fields):
    data = {"return": returns, **fields}
    if classes is not None:
        data["classes"] = classes
    return post(url, files={"image": ("image.png", png, "image/png")}, data=data, headers=headers)


def error_of(resp, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:400])
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert set(resp.json()) == {"error"} and set(err) == {"code", "message"}
    return err["message"]


def png_of(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# -- health, readiness, description ---------------------------------------------------------------------------
def test_health_ready_and_describe(server):
    main = server["main"]
    health = requests.get(main + "/v1/health", timeout=30).json()
    assert health["status"] == "ok" and health["ready"] is True
    ready = requests.get(main + "/v1/ready", timeout=30)
    assert ready.status_code == 200
    warm = ready.json()["warmup"]  # ready only after warmup(): its report is what readiness returns
    assert warm["sizes"] == [[64, 96]] and len(warm["first_call_s"]) == 1 and warm["vocabulary"] == 21
    d = requests.get(main + "/v1/describe", timeout=30).json()
    assert (d["backend"], d["method"], d["preset"], d["precision"], d["device"]) == (
        "pytorch",
        "resclip",
        "voc21",
        "fp32",
        "cpu",
    )
    assert d["model"] == {"clip": "clipsam-test-vit", "weights": "random:0"} and d["auth"] is False
    assert d["choices"]["methods"] == ["resclip", "sclip"] and d["choices"]["presets"] == ["voc21", "context60"]
    assert "instances" not in d["choices"]["return"] and d["refine"] is None
    assert d["batching"]["max_batch"] == 8 and d["batching"]["batch_wait_ms"] == 200
    assert d["limits"]["max_classes"] == 100 and len(d["vocabulary"]) == 21
    strict = requests.get(server["strict"] + "/v1/describe", timeout=30).json()
    assert strict["limits"] == STRICT


def test_page_is_served_with_its_route_prefix(server):
    for name, prefix in (("main", '""'), ("keyed", '"/keyed"')):
        resp = requests.get(server[name] + "/", timeout=30)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert (
            f"const ROOT = {prefix};" in resp.text and "default-src 'self'" in resp.headers["content-security-policy"]
        )


# -- results equal the in-process Segmenter -------------------------------------------------------------------
def test_multipart_result_equals_in_process(server, photos, reference):
    png, rgb = photos["wide"]
    resp = segment(server["main"], png, returns="labels,scores,rle")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    got = decode_result(body, rgb)
    ref = reference().segment(rgb, classes=CLASSES)
    assert_same(got, ref)
    from clipsam.serve.codec import labels_from_rle

    assert np.array_equal(labels_from_rle(body["labels_rle"], got.shape), ref.labels)  # the RLE form too
    assert body["pixel_fractions"] == pytest.approx(ref.pixel_fractions(), abs=1e-12)
    assert body["info"]["method"] == "resclip" and body["info"]["config"]["short_side"] == MODEL["short_side"]
    assert set(body["timing"]) == {"decode_ms", "queue_ms", "segment_ms", "encode_ms", "total_ms"}
    assert body["batch"]["size"] >= 1 and body["batch"]["group"] >= 1


def test_json_base64_with_the_preset_vocabulary_and_overlay(server, photos, reference):
    png, rgb = photos["tall"]
    for image in (base64.b64encode(png).decode(), "data:image/png;base64," + base64.b64encode(png).decode()):
        resp = post(server["main"], json_body={"image": image, "return": ["labels", "scores", "overlay"]})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ref = reference().segment(rgb)  # no classes: the preset's 21
        assert_same(decode_result(body, rgb), ref)
        overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
        assert np.array_equal(np.asarray(overlay), np.asarray(ref.overlay()))


@pytest.mark.parametrize(
    "options, changes",
    [
        ({"prob_thd": "0.3", "templates": "openai7"}, {"prob_thd": 0.3, "templates": "openai7"}),
        ({"method": "sclip"}, {"method": "sclip"}),
        ({"preset": "context60", "area_thd": "0.2"}, {"preset": "context60", "area_thd": 0.2}),
    ],
)
def test_per_request_options_equal_in_process(server, photos, reference, options, changes):
    png, rgb = photos["square"]
    classes = None if "preset" in options else CLASSES  # a chosen preset brings its own vocabulary
    resp = segment(server["main"], png, classes=classes, **options)
    assert resp.status_code == 200, resp.text
    ref = reference(**changes).segment(rgb, classes=classes)
    assert_same(decode_result(resp.json(), rgb), ref, str(options))
    assert resp.json()["info"]["config"]["prob_thd"] == ref.info["config"]["prob_thd"]


# -- bad requests: 4xx JSON naming the problem ------------------------------------------------------------------
def test_malformed_and_unsupported_images(server, photos):
    main = server["main"]
    png, _ = photos["wide"]
    assert "not a readable image" in error_of(segment(main, b"\x00not an image at all" * 10), 400, "malformed_image")
    assert "empty" in error_of(segment(main, b""), 400, "malformed_image")
    assert "corrupt or truncated" in error_of(segment(main, png[: len(png) // 2]), 400, "malformed_image")
    gif = io.BytesIO()
    Image.new("RGB", (20, 20)).save(gif, format="GIF")
    assert "GIF" in error_of(segment(main, gif.getvalue()), 400, "unsupported_image")
    thin = png_of(np.zeros((1, 900, 3)))  # decodes, but is thinner than one patch after the resize
    assert "smaller than one 16x16 patch" in error_of(segment(main, thin), 400, "malformed_image")


def test_vocabulary_errors(server, photos):
    main, png = server["main"], photos["wide"][0]
    assert "empty" in error_of(segment(main, png, classes="  "), 400, "empty_vocabulary")
    assert "empty" in error_of(segment(main, png, classes="[]"), 400, "empty_vocabulary")
    assert "duplicate" in error_of(segment(main, png, classes="cat, cat"), 400, "bad_vocabulary")
    assert "JSON" in error_of(segment(main, png, classes="[cat"), 400, "bad_vocabulary")
    assert "control" in error_of(segment(main, png, classes="cat\tdog"), 400, "bad_vocabulary")
    # 90 characters (under max_class_chars) but 270 tokens: refused, never encoded as a truncated name
    assert "77-token context" in error_of(segment(main, png, classes="猫" * 90 + ", dog"), 400, "bad_vocabulary")
    assert "101 names" in error_of(
        segment(main, png, classes=", ".join(f"c{i}" for i in range(101))), 400, "too_many_classes"
    )


def test_unknown_and_bad_options(server, photos):
    main, png = server["main"], photos["wide"][0]
    assert "'colour'" in error_of(segment(main, png, colour="red"), 400, "unknown_option")
    resp = requests.post(main + "/v1/segment?classes=cat", files={"image": ("a.png", png)}, timeout=60)
    assert "query parameters" in error_of(resp, 400, "unknown_option")
    assert "'scales'" in error_of(
        post(main, json_body={"image": base64.b64encode(png).decode(), "scales": [2]}), 400, "unknown_option"
    )
    assert "prob_thd" in error_of(segment(main, png, prob_thd="2"), 400, "bad_option")
    assert "prob_thd" in error_of(segment(main, png, prob_thd="nan"), 400, "bad_option")
    assert "resclip, sclip" in error_of(segment(main, png, method="naclip"), 400, "bad_option")
    assert "openai80" in error_of(segment(main, png, templates="/etc/templates.txt"), 400, "bad_option")
    assert "'bogus'" in error_of(segment(main, png, returns="labels,bogus"), 400, "bad_option")
    assert "SAM2" in error_of(segment(main, png, returns="instances"), 400, "bad_option")


def test_bodies_routes_and_methods(server, photos):
    main, png = server["main"], photos["wide"][0]
    assert "multipart/form-data" in error_of(post(main, raw=png, ctype="image/png"), 415, "unsupported_media_type")
    assert "not valid JSON" in error_of(post(main, raw=b"{nope", ctype="application/json"), 400, "bad_request")
    assert "no image" in error_of(post(main, files={"classes": (None, "cat")}), 400, "bad_request")
    assert "no image" in error_of(post(main, json_body={"classes": "cat"}), 400, "bad_request")
    assert "object" in error_of(post(main, json_body=["cat"]), 400, "bad_request")
    assert "twice" in error_of(
        post(main, files=[("image", ("a.png", png)), ("classes", (None, "cat")), ("classes", (None, "dog"))]),
        400,
        "bad_request",
    )
    b64 = base64.b64encode(png).decode()
    twice = f'{{"image": "{b64}", "classes": "cat", "image": "{b64}"}}'
    assert "given twice: 'image'" in error_of(
        post(main, raw=twice.encode(), ctype="application/json"), 400, "bad_request"
    )
    deep = b'{"image": "YQ==", "classes": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert "nested too deeply" in error_of(post(main, raw=deep, ctype="application/json"), 400, "bad_request")
    wrapped = base64.encodebytes(png).decode()  # `base64 photo.png`: lines of 76 characters
    resp = post(main, json_body={"image": wrapped, "classes": "cat, grass"})
    assert resp.status_code == 200, resp.text[:400]
    assert "/v1/segment" in error_of(requests.get(main + "/v1/nothing", timeout=30), 404, "not_found")
    assert "POST" in error_of(requests.get(main + "/v1/segment", timeout=30), 405, "method_not_allowed")
    assert "GET" in error_of(requests.post(main + "/v1/describe", timeout=30), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "image",
    [
        "/etc/hostname",
        "file:///etc/hostname",
        "http://127.0.0.1:9/x.jpg",
        "https://example.com/photo.jpg",
        "../../sdk/data/chelsea.jpg",
    ],
)
def test_no_path_or_url_is_ever_opened(server, image):
    main = server["main"]
    for resp in (
        post(main, json_body={"image": image, "classes": "cat"}),
        post(main, files={"image": (None, image), "classes": (None, "cat")}),
    ):  # a text field, not a file
        message = error_of(resp, 400, resp.json()["error"]["code"])
        assert resp.json()["error"]["code"] in ("bad_base64", "bad_request") and "never" in message


def test_strict_limits(server):
    strict = server["strict"]
    big = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)  # ~68 KB PNG of noise
    assert "60000 bytes" in error_of(segment(strict, png_of(big)), 413, "too_large")
    assert "60000 bytes" in error_of(
        post(strict, json_body={"image": base64.b64encode(png_of(big)).decode()}), 413, "too_large"
    )
    assert "300x200 = 60000 pixels" in error_of(
        segment(strict, png_of(np.zeros((200, 300, 3)))), 413, "too_many_pixels"
    )
    small = png_of(np.full((60, 80, 3), 90))
    assert "at most 3" in error_of(segment(strict, small, classes="a, b, c, d"), 400, "too_many_classes")
    assert "at most 3" in error_of(segment(strict, small, classes='[["a", "b"], ["c", "d"]]'), 400, "too_many_classes")
    assert "11 characters" in error_of(segment(strict, small, classes="cat, abcdefghijk"), 400, "class_name_too_long")
    # valid, but its 2 s batch wait outlasts the 50 ms request timeout: 504 JSON, and the replica carries on
    assert "0.05 s" in error_of(segment(strict, small, classes="cat, dog"), 504, "timeout")
    assert requests.get(strict + "/v1/health", timeout=30).json()["ready"] is True


# -- API key ---------------------------------------------------------------------------------------------------
def test_api_key_protects_every_route_but_health(server, photos, reference):
    keyed, main = server["keyed"], server["main"]
    png, rgb = photos["wide"]
    for path in ("/v1/health", "/v1/ready", "/"):  # health, readiness and the (data-free) page stay open
        assert requests.get(keyed + path, timeout=30).status_code == 200
    for path in ("/v1/describe", "/v1/stats"):
        resp = requests.get(keyed + path, timeout=30)
        assert "Authorization: Bearer" in error_of(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "wrong" in error_of(
            requests.get(keyed + path, headers={"Authorization": "Bearer nope"}, timeout=30), 401, "unauthorized"
        )
        assert requests.get(keyed + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    error_of(segment(keyed, png), 401, "unauthorized")
    error_of(segment(keyed, b"garbage"), 401, "unauthorized")  # refused before the body is read
    error_of(
        post(keyed, files={"image": ("a.png", png)}, headers={"Authorization": "Basic " + KEY}), 401, "unauthorized"
    )
    resp = post(
        keyed,
        files={"image": ("a.png", png)},
        data={"classes": CLASSES, "return": "labels,scores"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert resp.status_code == 200, resp.text
    assert_same(decode_result(resp.json(), rgb), reference().segment(rgb, classes=CLASSES))
    assert resp.json()["batch"]["size"] == 1  # max_batch 1: no batching on this app
    # key off: the header is not needed, and an unexpected one is ignored
    assert requests.get(main + "/v1/describe", headers={"Authorization": "Bearer x"}, timeout=30).status_code == 200


# -- concurrency and dynamic batching ----------------------------------------------------------------------------
def test_32_concurrent_clients_mixed_vocabularies_and_sizes(server, photos, reference):
    vocabularies = ["cat, grass, wall", "dog, sky", '[["cat", "kitten"], "floor", "tree"]']
    names = list(photos)
    refs = {
        (n, v): reference().segment(photos[n][1], classes=json.loads(v) if v.startswith("[") else v)
        for n in names
        for v in vocabularies
    }
    clients, per_client = 32, 3
    barrier = threading.Barrier(clients)
    session = threading.local()

    def client(c):
        session.s = getattr(session, "s", None) or requests.Session()
        barrier.wait(timeout=120)
        out = []
        for r in range(per_client):
            name, vocab = names[(c + r) % 3], vocabularies[(c // 3 + r) % 3]
            resp = session.s.post(
                server["main"] + "/v1/segment",
                files={"image": ("i.png", photos[name][0])},
                data={"classes": vocab, "return": "labels,scores"},
                timeout=300,
            )
            out.append((name, vocab, resp.status_code, resp.json()))
        return out

    with ThreadPoolExecutor(clients) as pool:
        answers = [a for chunk in pool.map(client, range(clients)) for a in chunk]
    assert len(answers) == clients * per_client
    errors = [(s, b.get("error")) for _, _, s, b in answers if s != 200]
    assert not errors, errors[:5]
    for name, vocab, _, body in answers:
        assert_same(decode_result(body, photos[name][1]), refs[(name, vocab)], f"{name} / {vocab}")
    sizes = [b["batch"]["size"] for *_, b in answers]
    groups = [b["batch"]["group"] for *_, b in answers]
    batches = {b["batch"]["id"]: b["batch"]["size"] for *_, b in answers}
    print(
        f"\nbatches formed for {len(answers)} requests: {sorted(batches.values(), reverse=True)}; "
        f"largest (vocabulary, options) group: {max(groups)}"
    )
    assert max(sizes) > 1, "no batch of more than one request formed under 32 concurrent clients"
    assert max(sizes) <= 8 and all(g <= s for g, s in zip(groups, sizes))
    stats = requests.get(server["main"] + "/v1/stats", timeout=30).json()
    assert stats["requests"]["ok"] >= clients * per_client and stats["batches"] >= len(batches)
    assert any(int(k) > 1 for k in stats["batch_sizes"])


def test_a_failing_request_does_not_fail_its_batch(server, photos, reference):
    good = [photos[n] for n in ("wide", "tall", "square", "wide", "tall")]
    thin = png_of(np.zeros((1, 900, 3)))  # a valid upload that fails inside segment_batch (thinner than a patch)

    def send(barrier, png):
        barrier.wait(timeout=60)
        return segment(server["main"], png, classes="cat, dog")

    for _attempt in range(3):  # sent together; should the 200 ms batch window split them, send them again
        barrier = threading.Barrier(len(good) + 1)
        with ThreadPoolExecutor(len(good) + 1) as pool:
            resps = list(pool.map(lambda png: send(barrier, png), [png for png, _ in good] + [thin]))
        bad = resps[-1]
        assert "smaller than one 16x16 patch" in error_of(bad, 400, "malformed_image")
        for (_png, rgb), resp in zip(good, resps):
            assert resp.status_code == 200, resp.text
            assert_same(decode_result(resp.json(), rgb), reference().segment(rgb, classes="cat, dog"))
        bad_batch = dict(kv.split("=") for kv in bad.headers["x-clipsam-batch"].split(";"))
        mates = [r.json()["batch"] for r in resps[:-1] if r.json()["batch"]["id"] == int(bad_batch["id"])]
        if mates:
            break
    assert mates, "the failing request never shared a batch with good ones"
    assert all(m["group"] == int(bad_batch["group"]) > 1 for m in mates)  # same group: one segment_batch call failed
    assert requests.get(server["main"] + "/v1/ready", timeout=30).status_code == 200
