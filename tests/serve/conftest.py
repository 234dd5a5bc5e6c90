"""One local Ray Serve instance on the loopback address for the HTTP tests of this package, started once and shut
down after the last of them, with three applications of the tiny test CLIP model (random weights):

    /        "main":   batching (max_batch 8, wait 200 ms), per-request method sclip and preset context60
    /keyed   "keyed":  API key (KEY), no batching (max_batch 1)
    /strict  "strict": small limits, and a 50 ms request timeout below its 2 s batch wait (every segment times out)
"""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest

from ..conftest import TINY_VIT

KEY = "test-key-0123456789abcdef"
# Segmenter.from_pretrained keywords of the served model; the in-process reference is built from the same.
MODEL = dict(clip=TINY_VIT, clip_weights=None, method="resclip", preset="voc21", templates="single", short_side=112)
STRICT = dict(max_upload_bytes=60_000, max_pixels=40_000, max_classes=3, max_class_chars=10, request_timeout_s=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def reference():
    """The in-process Segmenter of MODEL, and a cache of ``Segmenter`` variants by from_pretrained overrides."""
    from clipsam import Segmenter

    built = {}

    def get(**changes):
        key = tuple(sorted(changes.items()))
        if key not in built:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[key] = Segmenter.from_pretrained(**{**MODEL, **changes})
        return built[key]

    return get


@pytest.fixture(scope="package")
def server():
    """Base URLs of the three applications: {"main": ..., "keyed": ..., "strict": ...}."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from clipsam.serve.app import build_application
    from clipsam.serve.auth import key_digest
    from clipsam.serve.limits import Limits
    from clipsam.serve.service import ServeConfig

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        small = ((64, 96),)
        apps = {
            "main": ServeConfig(max_batch=8, batch_wait_ms=200, methods=("sclip",), presets=("context60",),
                                warmup_sizes=small),
            "keyed": ServeConfig(max_batch=1, api_key_sha256=key_digest(KEY), warmup_sizes=small),
            "strict": ServeConfig(limits=Limits(**STRICT), max_batch=4, batch_wait_ms=2000, warmup_sizes=small),
        }
        targets = [serve.RunTarget(build_application(model=MODEL, config=cfg, num_cpus=0.5), name=name,
                                   route_prefix="/" if name == "main" else f"/{name}") for name, cfg in apps.items()]
        serve.run_many(targets)
        base = f"http://127.0.0.1:{port}"
        yield {name: base + ("" if name == "main" else f"/{name}") for name in apps}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def photos(chelsea) -> dict:
    """Test images of three sizes as PNG bytes and their RGB arrays: {"name": (png_bytes, rgb)}."""
    import cv2

    out = {}
    for name, (w, h) in {"wide": (150, 100), "tall": (90, 130), "square": (112, 112)}.items():
        rgb = cv2.resize(chelsea, (w, h), interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
        assert ok
        out[name] = (png.tobytes(), rgb)
    return out


def assert_same(got, ref, what: str = "result") -> None:
    """HTTP result == in-process result: labels exactly, scores within 1e-5, same classes."""
    assert tuple(got.classes) == tuple(ref.classes), what
    assert got.labels.dtype == np.int32 and got.labels.shape == ref.labels.shape, what
    diff = int((got.labels != ref.labels).sum())
    assert diff == 0, f"{what}: {diff} labels differ"
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5, rtol=0, err_msg=what)
