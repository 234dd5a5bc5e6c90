"""One local Ray Serve instance on the loopback address for the HTTP tests of this package, started once and shut
down after the last of them, with three applications of the tiny test CLIP model (random weights):

    /        "main":   batching (max_batch 8, wait 200 ms), per-request method sclip and preset context60
    /keyed   "keyed":  API key (KEY), no batching (max_batch 1)
    /strict  "strict": small limits, and a 50 ms request timeout below its 2 s batch wait (every segment times out)
"""

from __future__ import annotations

import pytest

from .helpers import KEY, MODEL, STRICT, free_port, reference_segmenter


@pytest.fixture(scope="session")
def reference():
    """The in-process Segmenter of MODEL, and a cache of ``Segmenter`` variants by from_pretrained overrides."""
    return reference_segmenter


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
            "main": ServeConfig(
                max_batch=8, batch_wait_ms=200, methods=("sclip",), presets=("context60",), warmup_sizes=small
            ),
            "keyed": ServeConfig(max_batch=1, api_key_sha256=key_digest(KEY), warmup_sizes=small),
            "strict": ServeConfig(limits=Limits(**STRICT), max_batch=4, batch_wait_ms=2000, warmup_sizes=small),
        }
        targets = [
            serve.RunTarget(
                build_application(model=MODEL, config=cfg, num_cpus=0.5),
                name=name,
                route_prefix="/" if name == "main" else f"/{name}",
            )
            for name, cfg in apps.items()
        ]
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
