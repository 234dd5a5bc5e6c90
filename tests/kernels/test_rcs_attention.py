"""rcs_attention: the reference on hand-checkable cases, the fused kernel against it (Triton's interpreter
on CPU, small shapes; the full grid on a GPU), the custom op under opcheck and torch.compile."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from clipsam.kernels import rcs_attention_ref

try:
    from tests.utils import assert_close_to_ref
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from utils import assert_close_to_ref

ra = importlib.import_module("clipsam.kernels.rcs_attention")

needs_triton = pytest.mark.skipif(not ra.HAS_TRITON, reason="triton is not installed")
gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
BASES = ("clip", "sclip", "clearclip", "naclip")
# dtype, atol of the 2x rule against fp64, atol = rtol of the direct comparison with the same-dtype reference
TOLS = {torch.float32: (5e-5, 1e-4), torch.float16: (1e-3, 1.5e-2), torch.bfloat16: (1e-2, 1e-1)}
DTYPES = [
    torch.float32,
    torch.float16,
    # The interpreter's bf16 dot multiplies bit patterns; the kernel upcasts bf16 there (DOT_F32), so the
    # CPU test covers the bf16 loads, casts and stores, and the GPU grid covers the bf16 tensor-core path.
    torch.bfloat16,
]


def make_inputs(b, h, gh, gw, dtype, *, layers=2, sfr=True, amp=1.0, device="cpu"):
    """Fresh random inputs; returns (q, k, v, kwargs) for a ResCLIP-style call on an gh x gw grid."""
    n = 1 + gh * gw
    q, k, v = (
        (amp * torch.randn(b, h, n, 64, device=device)).to(dtype),
        (amp * torch.randn(b, h, n, 64, device=device)).to(dtype),
        torch.randn(b, h, n, 64, device=device).to(dtype),
    )
    kw = dict(scale=64**-0.5, window=(gh, gw, 5.0))
    if sfr:  # any fp16 (B, N1, N1) S_hat with a zero CLS row/column and max 1 will do; the term is lambda * S_hat
        s_hat = torch.rand(b, n, n, device=device)
        s_hat[:, 0], s_hat[:, :, 0] = 0, 0
        kw.update(sfr_term=0.7 * (s_hat / s_hat.amax()).half(), sfr_weights=(2.2, 0.7))
    if layers:
        kw.update(
            rcs_q=(amp * torch.randn(layers, b, h, n, 64, device=device)).to(dtype),
            rcs_k=(amp * torch.randn(layers, b, h, n, 64, device=device)).to(dtype),
            rcs_weights=(2.0, 0.3),
        )
    return q, k, v, kw


def upcast(q, k, v, kw):
    kw64 = dict(kw)
    for name in ("rcs_q", "rcs_k"):
        if kw.get(name) is not None:
            kw64[name] = kw[name].double()
    return q.double(), k.double(), v.double(), kw64


def check_kernel(q, k, v, kw, base, *, kernel=None, direct=True):
    kernel = kernel or ra.rcs_attention_triton
    out = kernel(q, k, v, base=base, **kw)
    ref = rcs_attention_ref(q, k, v, base=base, **kw)
    q64, k64, v64, kw64 = upcast(q, k, v, kw)
    ref64 = rcs_attention_ref(q64, k64, v64, base=base, **kw64)
    assert out.dtype == v.dtype and out.shape == v.shape
    atol, tol = TOLS[q.dtype]
    assert_close_to_ref(out, ref, ref64, atol=atol, name=f"rcs kernel ({base}, {q.dtype})")
    if direct:  # off where the 16-bit reference's own logit rounding dominates (large logits)
        torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


# ---- the reference, checked by hand ------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_ref_rcs_weights_one_zero_is_the_plain_base(base):
    q, k, v, kw = make_inputs(2, 3, 3, 4, torch.float32, sfr=False)
    plain = rcs_attention_ref(q, k, v, base=base, scale=kw["scale"], window=kw["window"])
    blended = rcs_attention_ref(q, k, v, base=base, **{**kw, "rcs_weights": (1.0, 0.0)})
    assert torch.equal(plain, blended)


def test_ref_sclip_rows_sum_to_two():
    q, k, _, kw = make_inputs(2, 2, 4, 4, torch.float64, layers=0)
    ones = torch.ones_like(q)
    out = rcs_attention_ref(q, k, ones, base="sclip", **kw)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))
    for base in ("clip", "clearclip", "naclip"):
        torch.testing.assert_close(rcs_attention_ref(q, k, ones, base=base, **kw), ones)


def test_ref_rcs_mean_of_identical_layers_is_plain_attention():
    q, k, v, _ = make_inputs(1, 2, 3, 3, torch.float64, layers=0, sfr=False)
    s = 0.125
    plain = rcs_attention_ref(q, k, v, base="clip", scale=s)
    only_rcs = rcs_attention_ref(
        q,
        k,
        v,
        base="clearclip",
        scale=s,
        rcs_q=torch.stack([q, q, q]),
        rcs_k=torch.stack([k, k, k]),
        rcs_weights=(1.0, 1.0),
    )
    torch.testing.assert_close(only_rcs, plain)


@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.*:FutureWarning")  # what the legacy ONNX exporter runs
@pytest.mark.parametrize("layers,dtype", [(4, torch.float32), (3, torch.float32), (4, torch.float16)])
def test_rcs_mean_maps_equals_the_stacked_mean(layers, dtype):
    """The eager path (softmax written into the stack) equals torch.stack(softmaxes).mean(0) bit for bit, and the
    traced form is that expression itself."""
    from clipsam.kernels import rcs_mean_maps

    g = torch.Generator().manual_seed(layers)
    q, k = (torch.randn(layers, 2, 3, 17, 8, generator=g).to(dtype) * 3 for _ in range(2))
    want = torch.stack([torch.softmax(torch.matmul(q[i] * 0.35, k[i].transpose(-1, -2)), -1) for i in range(layers)])
    got = rcs_mean_maps(q, k, 0.35)
    assert got.dtype == dtype and got.shape == (2, 3, 17, 17)
    assert torch.equal(got, want.mean(dim=0))
    traced = torch.jit.trace(lambda a, b: rcs_mean_maps(a, b, 0.35), (q, k))
    assert torch.equal(traced(q, k), got)


def test_ref_zero_sfr_scales_the_logits():
    q, k, v, _ = make_inputs(2, 2, 3, 3, torch.float64, layers=0, sfr=False)
    zeros = torch.zeros(2, 10, 10, dtype=torch.float16)
    blended = rcs_attention_ref(q, k, v, base="clearclip", scale=0.125, sfr_term=zeros, sfr_weights=(2.0, 0.75))
    torch.testing.assert_close(blended, rcs_attention_ref(q, k, v, base="clearclip", scale=0.125 * 2.0 * 0.25))


def test_ref_window_on_a_2x2_grid_by_hand():
    std = 1.5
    omega = ra.neighbourhood_window(2, 2, std)
    g = lambda d2: math.exp(-d2 / (2 * std**2))  # noqa: E731
    # patches 1..4 at (0,0), (0,1), (1,0), (1,1); CLS (index 0) row and column are zero
    expected = torch.tensor(
        [
            [0, 0, 0, 0, 0],
            [0, 1, g(1), g(1), g(2)],
            [0, g(1), 1, g(2), g(1)],
            [0, g(1), g(2), 1, g(1)],
            [0, g(2), g(1), g(1), 1],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(omega, expected, atol=1e-7, rtol=1e-6)


def test_ref_rejects_bad_arguments():
    q, k, v, kw = make_inputs(1, 1, 2, 2, torch.float32)
    with pytest.raises(ValueError, match="unknown attention base"):
        rcs_attention_ref(q, k, v, base="nope", scale=0.125)
    with pytest.raises(ValueError, match="sfr_weights"):
        rcs_attention_ref(q, k, v, base="clip", scale=0.125, sfr_term=kw["sfr_term"])
    with pytest.raises(ValueError, match="window"):
        rcs_attention_ref(q, k, v, base="naclip", scale=0.125)


# ---- the kernel in Triton's interpreter (CPU) ----------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("base", BASES)
def test_kernel_matches_reference(base, dtype):
    check_kernel(*make_inputs(2, 2, 4, 4, dtype), base)


@needs_triton
@pytest.mark.parametrize(
    "base, dtype, grid",
    [
        ("naclip", torch.float32, (2, 2)),
        ("sclip", torch.float16, (2, 2)),
        ("naclip", torch.float16, (3, 5)),
        ("clearclip", torch.float32, (3, 5)),
        ("naclip", torch.float32, (7, 7)),
        ("sclip", torch.float16, (7, 7)),
    ],
)
def test_kernel_token_counts(base, dtype, grid):
    # N1 = 5, 16, 50: fewer tokens than a tile, and several tiles with a ragged last one (16 x 16 tiles)
    check_kernel(*make_inputs(2, 2, *grid, dtype), base)


@needs_triton
@pytest.mark.parametrize(
    "variant", ["no_sfr", "no_rcs", "plain", "one_layer", "sfr_batch_1", "sfr_fp32", "large_logits"]
)
def test_kernel_options(variant):
    q, k, v, kw = make_inputs(
        2,
        2,
        4,
        4,
        torch.float32,
        layers=1 if variant == "one_layer" else 2,
        amp=3.0 if variant == "large_logits" else 1.0,
    )
    if variant in ("no_sfr", "plain"):
        kw = {key: val for key, val in kw.items() if key not in ("sfr_term", "sfr_weights")}
    if variant in ("no_rcs", "plain"):
        kw = {key: val for key, val in kw.items() if key not in ("rcs_q", "rcs_k", "rcs_weights")}
    if variant == "sfr_batch_1":
        kw["sfr_term"] = kw["sfr_term"][:1]
    if variant == "sfr_fp32":
        kw["sfr_term"] = kw["sfr_term"].float()
    for base in ("naclip", "sclip"):
        check_kernel(q, k, v, kw, base)


@needs_triton
def test_kernel_strided_inputs_as_the_sdk_passes_them():
    b, h, n, d = 2, 2, 17, 64
    qkv = torch.randn(b, n, 3 * h * d)
    q, k, v = qkv.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    _, _, _, kw = make_inputs(b, h, 4, 4, torch.float32)
    check_kernel(q, k, v, kw, "naclip")
    out = ra.rcs_attention_triton(q, k, v, base="naclip", **kw)
    assert torch.equal(
        out, ra.rcs_attention_triton(q.contiguous(), k.contiguous(), v.contiguous(), base="naclip", **kw)
    )


@needs_triton
@pytest.mark.parametrize("block_m, block_n", [(32, 16), (16, 32), (64, 64)])
def test_kernel_tile_shapes_agree(block_m, block_n):
    q, k, v, kw = make_inputs(1, 2, 7, 7, torch.float32)
    args = (q, k, v, kw["sfr_term"], kw["rcs_q"], kw["rcs_k"], "naclip", kw["scale"], 7, 5.0, 2.2, 0.7, 2.0, 0.3)
    base = ra._rcs_attention_fwd(*args)
    torch.testing.assert_close(
        ra._rcs_attention_fwd(*args, block_m=block_m, block_n=block_n), base, atol=2e-6, rtol=1e-5
    )


@needs_triton
def test_kernel_omega_alone_is_the_window():
    # k = 0 and v = identity: the output rows are softmax(Omega) itself, computed from patch coordinates
    gh, gw, std = 3, 5, 1.5
    n = 1 + gh * gw
    q, k = torch.randn(1, 1, n, 64), torch.zeros(1, 1, n, 64)
    v = torch.eye(n, 64).view(1, 1, n, 64)
    out = ra.rcs_attention_triton(q, k, v, base="naclip", scale=0.125, window=(gh, gw, std))
    expected = torch.softmax(ra.neighbourhood_window(gh, gw, std), dim=-1)
    torch.testing.assert_close(out[0, 0, :, :n], expected, atol=1e-6, rtol=1e-5)


@needs_triton
def test_custom_op_opcheck():
    q, k, v, kw = make_inputs(1, 2, 2, 3, torch.float32)
    args = (q, k, v, kw["sfr_term"], kw["rcs_q"], kw["rcs_k"], "naclip", kw["scale"], 3, 5.0, 2.2, 0.7, 2.0, 0.3)
    torch.library.opcheck(torch.ops.clipsam.rcs_attention.default, args)


@needs_triton
def test_torch_compile_traces_the_custom_op():
    q, k, v, kw = make_inputs(1, 2, 2, 3, torch.float32)

    def block(q, k, v, sfr, rcs_q, rcs_k):
        return (
            torch.ops.clipsam.rcs_attention(q, k, v, sfr, rcs_q, rcs_k, "naclip", 0.125, 3, 5.0, 2.2, 0.7, 2.0, 0.3) * 2
        )

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v, kw["sfr_term"], kw["rcs_q"], kw["rcs_k"])
    torch.testing.assert_close(out, 2 * rcs_attention_ref(q, k, v, base="naclip", **kw), atol=1e-5, rtol=1e-5)


@needs_triton
def test_kernel_rejects_what_it_cannot_take():
    q, k, v, kw = make_inputs(1, 1, 2, 2, torch.float32)
    with pytest.raises(ValueError, match="head dim"):
        ra.rcs_attention_triton(q[..., :32], k[..., :32], v[..., :32], base="clip", scale=0.125)
    with pytest.raises(ValueError, match="window grid"):
        ra.rcs_attention_triton(q, k, v, base="naclip", scale=0.125, window=(3, 3, 5.0))
    with pytest.raises(ValueError, match="sfr_weights"):
        ra.rcs_attention_triton(q, k, v, base="clip", scale=0.125, sfr_term=kw["sfr_term"])


# ---- GPU: the full grid -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    "b, h, grid",
    [
        (3, 12, (7, 7)),
        (2, 12, (14, 14)),
        (2, 12, (28, 28)),
        (1, 16, (16, 16)),
        (2, 16, (32, 32)),
        (1, 12, (13, 17)),
        (1, 16, (45, 45)),
    ],
    ids=lambda p: "x".join(map(str, p)) if isinstance(p, tuple) else str(p),
)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_kernel_matches_reference(monkeypatch, b, h, grid, base, dtype):
    monkeypatch.setenv("CLIPSAM_TRITON_AUTOTUNE", "0")  # one compiled config per variant keeps the grid quick
    check_kernel(*make_inputs(b, h, *grid, dtype, layers=4, device="cuda"), base)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("grid", [(14, 14), (28, 28), (32, 32)], ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_autotuned_kernel_matches_reference(grid, dtype):
    q, k, v, kw = make_inputs(4, 12, *grid, dtype, layers=4, device="cuda")
    for base in BASES:
        check_kernel(q, k, v, kw, base)


@pytest.mark.parametrize("variant", ["plain", "no_rcs", "no_sfr", "large_logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_kernel_options(monkeypatch, variant, dtype):
    monkeypatch.setenv("CLIPSAM_TRITON_AUTOTUNE", "0")
    q, k, v, kw = make_inputs(
        4, 12, 28, 28, dtype, layers=4, amp=3.0 if variant == "large_logits" else 1.0, device="cuda"
    )
    if variant in ("no_sfr", "plain"):
        kw = {key: val for key, val in kw.items() if key not in ("sfr_term", "sfr_weights")}
    if variant in ("no_rcs", "plain"):
        kw = {key: val for key, val in kw.items() if key not in ("rcs_q", "rcs_k", "rcs_weights")}
    for base in BASES:
        check_kernel(q, k, v, kw, base, direct=variant != "large_logits" or dtype == torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_strided_inputs_and_fixed_tiles():
    b, h, n, d = 4, 12, 785, 64
    qkv = torch.randn(b, n, 3 * h * d, device="cuda", dtype=torch.float16)
    q, k, v = qkv.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    _, _, _, kw = make_inputs(b, h, 28, 28, torch.float16, layers=4, device="cuda")
    check_kernel(q, k, v, kw, "naclip")
    args = (q, k, v, kw["sfr_term"], kw["rcs_q"], kw["rcs_k"], "naclip", kw["scale"], 28, 5.0, 2.2, 0.7, 2.0, 0.3)
    tuned = ra._rcs_attention_fwd(*args)
    for bm, bn in ((64, 32), (128, 64)):
        torch.testing.assert_close(ra._rcs_attention_fwd(*args, block_m=bm, block_n=bn), tuned, atol=4e-3, rtol=4e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_compile_and_sdk_logits(monkeypatch):
    """torch.compile over the dispatching entry, and the SDK's logits with kernels on vs the reference path."""
    from pathlib import Path

    import numpy as np

    from clipsam.config import dense_config
    from clipsam.models import load_clip
    from clipsam.segmenter import Segmenter

    q, k, v, kw = make_inputs(2, 12, 14, 14, torch.float16, layers=4, device="cuda")
    from clipsam.kernels import rcs_attention

    compiled = torch.compile(lambda q, k, v: rcs_attention(q, k, v, base="naclip", **kw), fullgraph=True)
    torch.testing.assert_close(
        compiled(q, k, v), ra.rcs_attention_triton(q, k, v, base="naclip", **kw), atol=2e-3, rtol=2e-3
    )

    loaded = load_clip(str(Path(__file__).parents[1] / "configs" / "clipsam-test-vit.json"), None)
    image = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    classes = ["cat", "dog", "sky", "grass"]
    for precision in ("fp32", "fp16"):
        for method in ("resclip", "sclip", "clearclip", "naclip"):
            cfg = dense_config(method, "voc21", templates=("a photo of a {}.",))
            seg = Segmenter(loaded, cfg, device="cuda", precision=precision)
            monkeypatch.setenv("CLIPSAM_TRITON", "1")  # the kernels, or an error
            fused = seg.logits(image, classes=classes)
            monkeypatch.delenv("CLIPSAM_TRITON")
            monkeypatch.setenv("CLIPSAM_DISABLE_TRITON", "1")
            reference = seg.logits(image, classes=classes)
            monkeypatch.delenv("CLIPSAM_DISABLE_TRITON")
            if precision == "fp32":
                np.testing.assert_allclose(fused, reference, atol=1e-3, rtol=1e-3, err_msg=method)
            else:  # fp16 roundings may move an SFR patch label; compare the bulk and the argmax
                assert np.mean(np.abs(fused - reference) > 2e-2) < 0.01, method
                assert np.mean(fused.argmax(0) == reference.argmax(0)) > 0.99, method
