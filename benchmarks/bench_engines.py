"""Exported engines on ONNX Runtime vs the PyTorch pipeline, end to end, on the same images in the same run.

    pytest benchmarks/bench_engines.py --benchmark-enable [--benchmark-json out.json]
    CLIPSAM_BENCH_MD=bench_engines.md pytest benchmarks/bench_engines.py --benchmark-enable   # + Markdown table
    pytest benchmarks --smoke --benchmark-disable          # CI: tiny ViT, resclip only, unvalidated export, runs once

Timed call: ``segment(image)`` (text embeddings are cached before timing) of ``clipsam.Segmenter`` (backend
``torch``) and of ``EngineSegmenter`` (``ort``), same DenseConfig, same images, same process. Configurations:

    resclip / voc21    whole image, SFR (trunk + two last-block passes + numpy PAMR / S_hat between them)
    sclip / ade20k     224 / 112 sliding windows, batched
    rfclip / context60 224 / 112 sliding windows + the whole image's CLS (one more graph run per image), numpy head

Model: ViT-B/16 with random weights (latency does not depend on them; CLIPSAM_BENCH_CLIP picks another
architecture), VOC-like images of 375x500 and 500x333. Backends: torch-cpu and ort-cpu always; torch-cuda,
ort-cuda and ort-tensorrt when a GPU is usable (each skips with its reason otherwise). Engines are exported once
per session into a temporary folder, or into CLIPSAM_BENCH_ENGINES_DIR (reused when already there). Rounds:
CLIPSAM_BENCH_ROUNDS (default 3 on the CPU, 10 on a GPU). ``extra_info`` records the median, the speed-up over
torch on the same device and configuration, and the label agreement between the two backends.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
TINY_VIT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "configs", "clipsam-test-vit.json")
CLIP = TINY_VIT if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16")
SIZES = [(40, 56)] if SMOKE else [(375, 500), (500, 333)]
CASES = [("resclip", "voc21")] + ([] if SMOKE else [("sclip", "ade20k"), ("rfclip", "context60")])
BACKENDS = ["torch-cpu", "ort-cpu", "torch-cuda", "ort-cuda", "ort-tensorrt"]
_PROVIDERS = {"ort-cpu": ["cpu"], "ort-cuda": ["cuda", "cpu"], "ort-tensorrt": ["tensorrt", "cuda", "cpu"]}

_STATE: dict = {"loaded": None, "engines": {}, "segmenters": {}, "labels": {}}
_ROWS: list[dict] = []


def _overrides(method: str, preset: str) -> dict:
    from clipsam.config import dense_config

    kw: dict = {"templates": "single"}
    if SMOKE:
        kw["short_side"] = 32
        if dense_config(method, preset).slide_crop:
            kw.update(slide_crop=32, slide_stride=16)
    return kw


def _loaded():
    if _STATE["loaded"] is None:
        from clipsam.models import load_clip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _STATE["loaded"] = load_clip(CLIP, None)
    return _STATE["loaded"]


def _engines(method: str, preset: str, tmp_root: Path) -> Path:
    key = (method, preset)
    if key not in _STATE["engines"]:
        from clipsam.export import export_engines

        base = Path(os.environ.get("CLIPSAM_BENCH_ENGINES_DIR") or tmp_root)
        out = base / f"{Path(CLIP).stem}-{method}-{preset}"
        if not (out / "manifest.json").is_file():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_engines(
                    out,
                    clip=_loaded(),
                    method=method,
                    preset=preset,
                    templates="single",
                    log=None,
                    overwrite=True,
                    validate=not SMOKE,
                )
            print(f"\nexported {out.name} in {time.perf_counter() - t0:.0f} s")
        _STATE["engines"][key] = out
    return _STATE["engines"][key]


def _segmenter(method: str, preset: str, backend: str, tmp_root: Path):
    key = (method, preset, backend)
    if key in _STATE["segmenters"]:
        return _STATE["segmenters"][key]
    kind, device = backend.split("-")
    if device in ("cuda", "tensorrt") and not torch.cuda.is_available():
        pytest.skip(f"{backend}: no CUDA GPU here")
    if kind == "torch":
        from clipsam.config import dense_config
        from clipsam.segmenter import Segmenter

        seg = Segmenter(_loaded(), dense_config(method, preset, **_overrides(method, preset)), device=device)
    else:
        from clipsam.engine import EngineSegmenter
        from clipsam.errors import ProviderError

        try:
            seg = EngineSegmenter(_engines(method, preset, tmp_root), _PROVIDERS[backend], **_overrides(method, preset))
        except ProviderError as e:
            pytest.skip(f"{backend}: {e}")
    _STATE["segmenters"][key] = seg
    return seg


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_engines")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_end_to_end(benchmark, bench_root, sample_photo, case, hw, backend):
    method, preset = case
    seg = _segmenter(method, preset, backend, bench_root)
    rgb = sample_photo(hw)
    gpu = backend.endswith(("cuda", "tensorrt"))

    def run():
        res = seg.segment(rgb)
        if gpu and backend.startswith("torch"):
            torch.cuda.synchronize()
        return res

    t0 = time.perf_counter()
    first = run()  # text embeddings, session and kernel warm-up (TensorRT builds its engines here)
    first_s = time.perf_counter() - t0
    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 10 if gpu else 3)
    res = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0 if SMOKE else 1, iterations=1)
    res = res if res is not None else first
    device = backend.split("-")[1]
    _STATE["labels"][(case, hw, backend)] = res.labels
    ref_backend = "torch-cuda" if device in ("cuda", "tensorrt") else "torch-cpu"
    ref = _STATE["labels"].get((case, hw, ref_backend))
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = stats.median if stats is not None and stats.median > 0 else None
    info = dict(
        config=f"{method}-{preset} {hw[0]}x{hw[1]}",
        backend=backend,
        clip=Path(CLIP).stem,
        smoke=SMOKE,
        image_hw=list(hw),
        first_call_s=first_s,
        median_ms=None if median is None else median * 1e3,
        providers=res.info.get("providers"),
        max_batch=res.info.get("max_batch"),
        label_agreement=None if ref is None or backend == ref_backend else float((ref == res.labels).mean()),
        torch=torch.__version__,
        onnxruntime=ort.__version__,
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
    )
    _ROWS.append(info)
    benchmark.extra_info.update(info)
    assert res.labels.shape == hw
    if info["label_agreement"] is not None:
        assert info["label_agreement"] >= 0.999


@pytest.fixture(scope="module", autouse=True)
def _markdown_table():
    """With CLIPSAM_BENCH_MD set, write the results (and torch/ORT speed-ups) as Markdown for RESULTS.md."""
    yield
    path = os.environ.get("CLIPSAM_BENCH_MD")
    if not path or not _ROWS:
        return
    ms = {(r["config"], r["backend"]): r["median_ms"] for r in _ROWS}
    lines = [
        f"ViT: {_ROWS[0]['clip']} (random weights); torch {_ROWS[0]['torch']}, onnxruntime {_ROWS[0]['onnxruntime']}, "
        f"{_ROWS[0]['threads']} threads; median of timed `segment()` calls; speed-up = torch / ORT on the same device.",
        "",
        "| config | backend | median ms | first call s | speed-up vs torch | label agreement |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in _ROWS:
        ref = ms.get((r["config"], "torch-cuda" if r["backend"].endswith(("cuda", "tensorrt")) else "torch-cpu"))
        up = f"{ref / r['median_ms']:.2f}x" if ref and r["median_ms"] and r["backend"].startswith("ort") else ""
        med = f"{r['median_ms']:.0f}" if r["median_ms"] else "-"
        agree = f"{100 * r['label_agreement']:.2f}%" if r["label_agreement"] is not None else ""
        lines.append(f"| {r['config']} | {r['backend']} | {med} | {r['first_call_s']:.1f} | {up} | {agree} |")
    Path(path).write_text("\n".join(lines) + "\n")
