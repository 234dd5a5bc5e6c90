"""GPU benchmarks of clipsam.kernels: fused rcs_attention, sfr_affinity and pamr against their references.

    pytest benchmarks/bench_kernels.py --benchmark-enable --benchmark-json bench_kernels.json
    CLIPSAM_BENCH_MD=benchmarks/bench_kernels.md pytest benchmarks/bench_kernels.py --benchmark-enable

Providers for rcs_attention (ResCLIP last block: SFR bias + 4 RCS layers; Omega for naclip):
    ref     rcs_attention_ref, every N x N matrix materialised
    triton  the fused kernel (autotuned; the first call, with autotuning and compilation, is timed apart)
    sdpa    one F.scaled_dot_product_attention per pass of the same shape (5 for naclip, 6 for sclip):
            the practical floor of any implementation that makes the same passes

FLOP count: 4 * B*H*N^2*d per pass (QK^T and PV). Bytes: every input read once and the output written
once (q, k, v, rcs_q, rcs_k, fp16 S_hat, out): the floor of the traffic. Both are the same for every
provider, so TFLOP/s and GB/s compare directly. Skipped without CUDA.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.nn.functional as F

from clipsam.kernels import (
    pamr_ref,
    pamr_triton,
    rcs_attention_ref,
    rcs_attention_triton,
    sfr_affinity_ref,
    sfr_affinity_triton,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmarks need CUDA")

# name -> (B windows, heads, grid h, grid w): ViT-B/16 and ViT-L/14 crops of 224 and 448 pixels
SHAPES = {
    "B16-224": (32, 12, 14, 14),  # N = 197
    "B16-448": (32, 12, 28, 28),  # N = 785
    "L14-224": (32, 16, 16, 16),  # N = 257
    "L14-448": (32, 16, 32, 32),  # N = 1025
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LAYERS = 4
DEVICE = "cuda"
_ROWS: list[dict] = []


def _inputs(shape: str, dtype: torch.dtype):
    b, h, gh, gw = SHAPES[shape]
    n = 1 + gh * gw
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*size):
        return torch.randn(*size, device=DEVICE, generator=gen).to(dtype)

    q, k, v = rnd(b, h, n, 64), rnd(b, h, n, 64), rnd(b, h, n, 64)
    s_hat = torch.rand(b, n, n, device=DEVICE, generator=gen)
    s_hat[:, 0], s_hat[:, :, 0] = 0, 0
    kw = dict(
        scale=0.125,
        window=(gh, gw, 5.0),
        sfr_term=0.7 * (s_hat / s_hat.amax()).half(),
        sfr_weights=(2.2, 0.7),
        rcs_q=rnd(LAYERS, b, h, n, 64),
        rcs_k=rnd(LAYERS, b, h, n, 64),
        rcs_weights=(2.0, 0.3),
    )
    return q, k, v, kw


def _record(benchmark, info: dict, flops: float, nbytes: float, **fields) -> None:
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    row = dict(fields, gpu=info.get("gpu"), torch=info["torch"], triton=info["triton"])
    if stats is not None and stats.median > 0:
        sec = stats.median
        row.update(ms=sec * 1e3, tflops=flops / sec / 1e12, gbps=nbytes / sec / 1e9)
    benchmark.extra_info.update(row)
    _ROWS.append(row)


@pytest.mark.parametrize("provider", ["ref", "triton", "sdpa"])
@pytest.mark.parametrize("base", ["naclip", "sclip"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rcs_attention(cuda_bench, benchmark, device_info, shape, dtype, base, provider):
    q, k, v, kw = _inputs(shape, DTYPES[dtype])
    b, h, n, d = q.shape
    passes = (2 if base == "sclip" else 1) + LAYERS
    if provider == "ref":
        fn = lambda: rcs_attention_ref(q, k, v, base=base, **kw)  # noqa: E731
    elif provider == "triton":
        fn = lambda: rcs_attention_triton(q, k, v, base=base, **kw)  # noqa: E731
    else:
        pairs = [(q, k)] * (passes - LAYERS) + [(kw["rcs_q"][i], kw["rcs_k"][i]) for i in range(LAYERS)]
        fn = lambda: [F.scaled_dot_product_attention(a, c, v) for a, c in pairs]  # noqa: E731
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()  # first call: autotuning + compilation for triton, allocator warm-up for the others
    torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    cuda_bench(fn, rounds=20 if provider != "ref" or n < 1000 else 5, warmup_rounds=3)
    flops = passes * 4.0 * b * h * n * n * d
    elem = q.element_size()
    nbytes = elem * b * h * n * d * (4 + 2 * LAYERS) + 2.0 * b * n * n
    _record(
        benchmark,
        device_info,
        flops,
        nbytes,
        op="rcs_attention",
        shape=shape,
        N=n,
        B=b,
        H=h,
        dtype=dtype,
        base=base,
        provider=provider,
        first_call_s=first_s,
    )


@pytest.mark.parametrize("provider", ["ref", "triton"])
@pytest.mark.parametrize("grid", [(14, 14), (28, 28), (32, 32)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_sfr_affinity(cuda_bench, benchmark, device_info, grid, provider):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    coarse = torch.randint(0, 6, (32, 1, grid[0] // 4, grid[1] // 4), device=DEVICE, generator=gen).float()
    labels = F.interpolate(coarse, size=grid, mode="nearest").long()[:, 0]
    fn = (lambda: sfr_affinity_ref(labels)) if provider == "ref" else (lambda: sfr_affinity_triton(labels))
    fn()
    cuda_bench(fn, rounds=3 if provider == "ref" else 20, warmup_rounds=1)
    n = grid[0] * grid[1]
    _record(
        benchmark,
        device_info,
        0.0,
        8.0 * 32 * n + 2.0 * 32 * (n + 1) ** 2,
        op="sfr_affinity",
        shape=f"32x{grid[0]}x{grid[1]}",
        N=n + 1,
        B=32,
        H=1,
        dtype="fp16",
        base="-",
        provider=provider,
    )


@pytest.mark.parametrize("provider", ["ref", "triton"])
@pytest.mark.parametrize("case", ["sfr-voc21", "sfr-ade20k"])
def test_pamr(cuda_bench, benchmark, device_info, case, provider):
    """SFR's first-pass PAMR: 10 iterations, dilations (8, 16), on a batch of crops (one ResCLIP batch)."""
    b, q, hw = (1, 56, (336, 448)) if case == "sfr-voc21" else (32, 150, (224, 224))
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    image = torch.randn(b, 3, *hw, device=DEVICE, generator=gen)
    logits = torch.randn(b, q, *hw, device=DEVICE, generator=gen)
    impl = pamr_ref if provider == "ref" else pamr_triton
    fn = lambda: impl(image, logits, 10, (8, 16))  # noqa: E731
    fn()
    cuda_bench(fn, rounds=10, warmup_rounds=2)
    px = b * q * hw[0] * hw[1]
    _record(
        benchmark,
        device_info,
        2.0 * 16 * 10 * px,  # one multiply-add per neighbour and iteration
        4.0 * px * (2 * 10 + 1) + 4.0 * 16 * b * hw[0] * hw[1],  # mask read+write per iteration, weights once
        op="pamr",
        shape=f"{b}x{q}x{hw[0]}x{hw[1]}",
        N=hw[0] * hw[1],
        B=b,
        H=q,
        dtype="fp32",
        base="-",
        provider=provider,
    )


@pytest.fixture(scope="module", autouse=True)
def _markdown_table():
    """With CLIPSAM_BENCH_MD set, write the results as a Markdown table there (for benchmarks/RESULTS.md)."""
    yield
    path = os.environ.get("CLIPSAM_BENCH_MD")
    if not path or not _ROWS:
        return
    lines = [
        f"GPU: {_ROWS[0]['gpu']}; torch {_ROWS[0]['torch']}; triton {_ROWS[0]['triton']}",
        "",
        "| op | shape | N | dtype | base | provider | median ms | TFLOP/s | GB/s | first call s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _ROWS:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['N']} | {r['dtype']} | {r['base']} | {r['provider']} | "
            f"{r.get('ms', float('nan')):.3f} | {r.get('tflops', float('nan')):.1f} | {r.get('gbps', float('nan')):.0f} | "
            f"{r.get('first_call_s', float('nan')):.2f} |"
        )
    times = {(r["op"], r["shape"], r["dtype"], r["base"], r["provider"]): r.get("ms") for r in _ROWS}
    lines += ["", "| op | shape | dtype | base | ref / triton | triton / sdpa |", "|---|---|---|---|---|---|"]
    for (op, shape, dtype, base, provider), ms in times.items():
        if provider != "triton" or not ms:
            continue
        ref, sdpa = times.get((op, shape, dtype, base, "ref")), times.get((op, shape, dtype, base, "sdpa"))
        vs_ref = f"{ref / ms:.2f}x" if ref else "-"
        vs_sdpa = f"{ms / sdpa:.2f}x" if sdpa else "-"
        lines.append(f"| {op} | {shape} | {dtype} | {base} | {vs_ref} | {vs_sdpa} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
