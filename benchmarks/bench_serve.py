"""``clipsam serve`` under load: requests/s and p50/p95/p99 latency for 1, 8 and 32 concurrent clients, with dynamic
batching (``max_batch`` 8, ``batch_wait_ms`` 10) and without (``max_batch`` 1), on the CPU and on a GPU when present.

    pytest benchmarks/bench_serve.py --benchmark-enable --benchmark-json bench_serve.json -s
    CLIPSAM_BENCH_SMOKE=1 pytest benchmarks/bench_serve.py --benchmark-disable      # tiny model, CI

One local Ray Serve instance on 127.0.0.1 (a free port) with two applications, one replica each with all of the
machine's CPUs (or half of one GPU), both deployed at the start; the levels alternate between them. ViT-B/16 with
random weights (seeded), ResCLIP with the VOC21 settings (whole image at short side 336), single template; each
request uploads the bundled 451x300 JPEG with 5 classes and asks for the label PNG. Clients are threads of this
process using ``clipsam.serve.Client`` (a connection per request). Each level sends at most CLIPSAM_BENCH_REQUESTS
requests per client (default 4, 2, 1 for 1, 8, 32 clients) and stops sending after CLIPSAM_BENCH_SECONDS (default
120) per level; two requests warm the replica first. Latency is measured by the client (upload to parsed answer);
requests/s is completed requests over the level's wall time; the batch sizes are the ones the server reports in
each answer. Every answer must succeed: an error fails the run (the request timeout is raised to 900 s, as the
32-client queue of a small CPU exceeds the default 60 s).
Environment: CLIPSAM_BENCH_DEVICE=cpu|cuda|auto (default auto).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE") == "1"
TINY = str(Path(__file__).parents[1] / "tests" / "configs" / "clipsam-test-vit.json")
CLIENTS = (1, 2) if SMOKE else (1, 8, 32)
PER_CLIENT = {1: 4, 2: 2, 8: 2, 32: 1}
if os.environ.get("CLIPSAM_BENCH_REQUESTS"):
    PER_CLIENT = {c: int(os.environ["CLIPSAM_BENCH_REQUESTS"]) for c in PER_CLIENT}
SECONDS = float(os.environ.get("CLIPSAM_BENCH_SECONDS", 120))
CLASSES = "cat, grass, wall, floor, sky"


def _device() -> str:
    want = os.environ.get("CLIPSAM_BENCH_DEVICE", "auto")
    if want == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if want == "cuda":
        pytest.skip("CLIPSAM_BENCH_DEVICE=cuda but CUDA is not available here", allow_module_level=True)
    return "cpu"


DEVICE = _device()
MODEL = dict(
    clip=TINY if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16"),
    clip_weights=None,
    method="resclip",
    preset="voc21",
    templates="single",
    device=DEVICE,
)
if SMOKE:
    MODEL["short_side"] = 64


@pytest.fixture(scope="module")
def services():
    """Both applications, deployed once: /batching (max_batch 8) and /no_batching (max_batch 1), one replica each.

    Ray is told it has twice the machine's CPUs so that both replicas (each asking for all of them: torch then uses
    every core) are placed; only one works at a time, as the levels run one after the other."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    import socket

    from clipsam.serve.app import build_application
    from clipsam.serve.limits import Limits
    from clipsam.serve.service import ServeConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cpus = os.cpu_count()
    ray.init(num_cpus=2 * cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        targets = []
        for mode, max_batch in (("batching", 8), ("no_batching", 1)):
            config = ServeConfig(max_batch=max_batch, batch_wait_ms=10.0, limits=Limits(request_timeout_s=900))
            app = build_application(
                model=MODEL,
                config=config,
                num_cpus=0 if DEVICE == "cuda" else cpus,
                num_gpus=0.5 if DEVICE == "cuda" else 0,
            )
            targets.append(serve.RunTarget(app, name=mode, route_prefix=f"/{mode}"))
        serve.run_many(targets)
        yield {mode: f"http://127.0.0.1:{port}/{mode}" for mode in ("batching", "no_batching")}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _load(url: str, clients: int, per_client: int, image: bytes) -> dict:
    from clipsam.serve import Client

    lat, sizes, errors = [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS
    barrier = threading.Barrier(clients)

    def client(_):
        c = Client(url, timeout=600)
        barrier.wait()
        for _ in range(per_client):
            if time.monotonic() > stop_at:
                break
            t0 = time.perf_counter()
            try:
                body = c.segment_json(image, CLASSES, returns=("labels",))
            except Exception as e:  # noqa: BLE001 - counted, then the run fails
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                lat.append(time.perf_counter() - t0)
                sizes.append(body["batch"]["size"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    ms = 1000 * np.asarray(lat)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "wall_s": round(wall, 2),
        "rps": round(len(lat) / wall, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_batch": round(float(np.mean(sizes)), 2),
        "max_batch_formed": int(max(sizes)),
    }


@pytest.mark.parametrize("clients, mode", [(c, m) for c in CLIENTS for m in ("batching", "no_batching")])
def test_serve_load(benchmark, services, clients, mode):
    import clipsam
    from clipsam.serve import Client

    url = services[mode]
    image = (Path(clipsam.__file__).parent / "data" / "chelsea.jpg").read_bytes()
    for _ in range(2):  # the request vocabulary's text embeddings, first-call allocations
        Client(url, timeout=600).segment_json(image, CLASSES)
    result = benchmark.pedantic(_load, args=(url, clients, PER_CLIENT[clients], image), rounds=1, iterations=1)
    assert not result["errors"], result["errors"][:3]
    assert result["requests"] >= 1 and result["max_batch_formed"] <= (8 if mode == "batching" else 1)
    import ray
    import torch

    benchmark.extra_info.update(
        mode=mode,
        device=DEVICE,
        clip=MODEL["clip"],
        method=MODEL["method"],
        image="451x300 JPEG",
        classes=CLASSES,
        cpus=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        ray=ray.__version__,
        torch=torch.__version__,
        **{k: v for k, v in result.items() if k != "errors"},
    )
    print(
        f"\n| {DEVICE} | {mode} | {clients} | {result['requests']} | {result['rps']:.2f} | {result['p50_ms']:.0f} | "
        f"{result['p95_ms']:.0f} | {result['p99_ms']:.0f} | {result['mean_batch']:.2f} | {result['max_batch_formed']} |"
    )
