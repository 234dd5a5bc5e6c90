"""``clipsam batch`` throughput: in-process vs Ray Data with 1 and 2 actors, same images, same run.

    pytest benchmarks/bench_batch.py --benchmark-enable --benchmark-json bench_batch.json
    CLIPSAM_BENCH_SMOKE=1 pytest benchmarks/bench_batch.py --benchmark-disable      # tiny model, CI

ViT-B/16 (random weights, seeded: every actor builds the same model), SCLIP with the VOC21 settings, 8 images of
PASCAL-VOC-like sizes written as PNG files; each variant writes label PNGs, overlays and JSON into its own folder.
One local Ray cluster (``ray.init(num_cpus=<all cores>)``) is started before the timed runs, so the Ray figures
include each run's actor start-up and model load (once per actor) but not the cluster's. Each actor asks for
one CPU (Ray then gives torch one thread in it); the in-process run uses all cores.
"""

from __future__ import annotations

import os
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE") == "1"
SIZES = [(375, 500), (500, 333), (375, 500), (333, 500), (500, 375), (281, 500), (375, 500), (500, 400)]
if SMOKE:
    SIZES = [(60, 80), (80, 50)]
TINY = str(Path(__file__).parents[1] / "tests" / "configs" / "clipsam-test-vit.json")
MODEL = dict(clip=TINY if SMOKE else "ViT-B-16", clip_weights=None, method="sclip", preset="voc21", templates="single")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import cv2
    import skimage.data

    folder = tmp_path_factory.mktemp("batch_in")
    rng = np.random.default_rng(0)
    base = skimage.data.astronaut()
    for i, (h, w) in enumerate(SIZES):
        img = cv2.resize(np.roll(base, int(rng.integers(0, 200)), axis=1), (w, h))
        cv2.imwrite(str(folder / f"img{i}.png"), img[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# smoke (CI): one Ray run, with two actors (the one-actor run is the same code path, and Ray's start-up is most of it)
@pytest.mark.parametrize("mode", ["in_process", "ray_2"] if SMOKE else ["in_process", "ray_1", "ray_2"])
def test_batch_throughput(benchmark, cluster, inputs, tmp_path, mode):
    from clipsam.batch import run_batch

    actors = 0 if mode == "in_process" else int(mode[-1])
    out = tmp_path / "out"

    def run():
        shutil.rmtree(out, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_batch(
                [str(inputs)],
                out,
                model=MODEL,
                ray=False if actors == 0 else cluster,
                actors=max(actors, 1),
                batch_size=2,
                progress=False,
            )

    report = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert report["done"] == len(SIZES) and report["failed"] == 0
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    benchmark.extra_info.update(
        mode=mode,
        actors=actors,
        images=len(SIZES),
        sizes=SIZES,
        clip=MODEL["clip"],
        method=MODEL["method"],
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        images_per_s=(len(SIZES) / stats.median) if stats is not None and stats.median else None,
    )
