"""Dispatch between the Triton kernels and the references: CPU default, force, kill switch, export."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest
import torch

import clipsam.kernels as K
from clipsam.errors import BackendUnavailableError

dispatch = importlib.import_module("clipsam.kernels._dispatch")
ra = importlib.import_module("clipsam.kernels.rcs_attention")
sa = importlib.import_module("clipsam.kernels.sfr_affinity")

needs_triton = pytest.mark.skipif(not ra.HAS_TRITON, reason="triton is not installed")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("CLIPSAM_TRITON", "CLIPSAM_DISABLE_TRITON", "TRITON_INTERPRET"):
        monkeypatch.delenv(name, raising=False)


def inputs(n_grid=(2, 3), d=64, dtype=torch.float32):
    gh, gw = n_grid
    n = 1 + gh * gw
    q, k, v = (torch.randn(2, 2, n, d, dtype=dtype) for _ in range(3))
    labels = torch.randint(0, 3, (2, gh, gw))
    kw = dict(
        base="naclip",
        scale=d**-0.5,
        window=(gh, gw, 5.0),
        sfr_term=0.7 * K.sfr_affinity_ref(labels),
        sfr_weights=(2.2, 0.7),
        rcs_q=torch.randn(2, 2, 2, n, d, dtype=dtype),
        rcs_k=torch.randn(2, 2, 2, n, d, dtype=dtype),
        rcs_weights=(2.0, 0.3),
    )
    return q, k, v, kw, labels


def test_cpu_default_is_exactly_the_reference():
    q, k, v, kw, labels = inputs()
    assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))
    assert torch.equal(K.sfr_affinity(labels), K.sfr_affinity_ref(labels))
    for base in ("clip", "sclip", "clearclip"):
        kw2 = {**kw, "base": base, "window": None}
        assert torch.equal(K.rcs_attention(q, k, v, **kw2), K.rcs_attention_ref(q, k, v, **kw2))


def test_cpu_default_with_interpreter_env_is_still_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, kw, labels = inputs()
    assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))
    assert torch.equal(K.sfr_affinity(labels, path_check="full"), K.sfr_affinity_ref(labels, path_check="full"))


def test_forcing_triton_on_cpu_is_a_clear_error(monkeypatch):
    q, k, v, kw, labels = inputs()
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET|not installed"):
        K.rcs_attention(q, k, v, **kw, force=True)
    monkeypatch.setenv("CLIPSAM_TRITON", "1")
    with pytest.raises(BackendUnavailableError, match="sfr_affinity"):
        K.sfr_affinity(labels)


@needs_triton
def test_forcing_triton_under_the_interpreter_runs_the_kernels(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, kw, labels = inputs()
    fused = K.rcs_attention(q, k, v, **kw, force=True)
    ref = K.rcs_attention_ref(q, k, v, **kw)
    assert not torch.equal(fused, ref)  # a different summation order: the kernel really ran
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    monkeypatch.setenv("CLIPSAM_TRITON", "1")
    torch.testing.assert_close(K.sfr_affinity(labels).float(), K.sfr_affinity_ref(labels).float(), atol=1e-3, rtol=0)
    assert torch.equal(K.rcs_attention(q, k, v, **kw, force=False), ref)  # an explicit False beats the env


@needs_triton
@pytest.mark.parametrize(
    "change, message",
    [("head_dim", "head dim"), ("float64", "dtypes"), ("rcs_dtype", "rcs dtypes"), ("sfr_shape", "sfr_term must be")],
)
def test_forcing_unsupported_inputs_names_the_reason(monkeypatch, change, message):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, kw, _ = inputs(
        d=32 if change == "head_dim" else 64, dtype=torch.float64 if change == "float64" else torch.float32
    )
    if change == "rcs_dtype":
        kw["rcs_q"], kw["rcs_k"] = kw["rcs_q"].half(), kw["rcs_k"].half()
    if change == "sfr_shape":
        kw["sfr_term"] = kw["sfr_term"][:, 1:, 1:]
    with pytest.raises(BackendUnavailableError, match=message):
        K.rcs_attention(q, k, v, **kw, force=True)
    # automatic dispatch: the reference (the CPU path; silently)
    if change != "sfr_shape":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))


@needs_triton
def test_unfused_sfr_modes_fall_back_or_raise(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    labels = torch.randint(0, 3, (1, 3, 4))
    for kw in ({"path_check": "full"}, {"blur": "2d"}):
        with pytest.raises(BackendUnavailableError, match="fused"):
            K.sfr_affinity(labels, **kw, force=True)
        assert torch.equal(K.sfr_affinity(labels, **kw), K.sfr_affinity_ref(labels, **kw))


def test_bad_arguments_raise_the_reference_errors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, kw, labels = inputs()
    for force in (None, True):
        with pytest.raises(ValueError, match="unknown attention base"):
            K.rcs_attention(q, k, v, **{**kw, "base": "vit"}, force=force)
        with pytest.raises(ValueError, match="path_check"):
            K.sfr_affinity(labels, path_check="half", force=force)


def test_kill_switch(monkeypatch):
    monkeypatch.setenv("CLIPSAM_DISABLE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, kw, labels = inputs()
    assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))
    with pytest.raises(BackendUnavailableError, match="CLIPSAM_DISABLE_TRITON"):
        K.rcs_attention(q, k, v, **kw, force=True)
    with pytest.raises(BackendUnavailableError, match="CLIPSAM_DISABLE_TRITON"):
        K.sfr_affinity(labels, force=True)


def test_exportable_forces_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("CLIPSAM_TRITON", "1")
    q, k, v, kw, labels = inputs()
    assert not dispatch.is_exporting()
    with K.exportable():
        assert dispatch.is_exporting()
        assert torch.equal(K.rcs_attention(q, k, v, **kw, force=True), K.rcs_attention_ref(q, k, v, **kw))
        assert torch.equal(K.sfr_affinity(labels), K.sfr_affinity_ref(labels))
    assert not dispatch.is_exporting()


def test_tracing_uses_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("CLIPSAM_TRITON", "1")  # would demand the kernel outside tracing
    q, k, v, kw, _ = inputs()

    def block(q, k, v):
        return K.rcs_attention(q, k, v, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from the reference's Python-side shape logic
        traced = torch.jit.trace(block, (q, k, v), check_trace=False)
    assert "clipsam::" not in str(traced.graph)
    torch.testing.assert_close(traced(q, k, v), K.rcs_attention_ref(q, k, v, **kw))


def test_warns_once_when_cuda_inputs_take_the_reference():
    dispatch._warned.clear()
    with pytest.warns(RuntimeWarning, match="using the PyTorch reference because head dim 32"):
        assert not dispatch.use_triton("rcs_attention", torch.device("cuda"), lambda: "head dim 32 (supported: (64,))")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not dispatch.use_triton("rcs_attention", torch.device("cuda"), lambda: "head dim 32 (supported: (64,))")
    if dispatch.triton_available():
        assert dispatch.use_triton("rcs_attention", torch.device("cuda"), lambda: None)


def test_torch_compile_traces_the_dispatching_entry_on_cpu():
    q, k, v, kw, labels = inputs()
    compiled = torch.compile(lambda q, k, v: K.rcs_attention(q, k, v, **kw), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), K.rcs_attention_ref(q, k, v, **kw))


def test_import_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, clipsam.kernels as K\n"
        "from clipsam.errors import BackendUnavailableError\n"
        "assert not K.triton_available()\n"
        "q = torch.randn(1, 2, 5, 64)\n"
        "assert torch.equal(K.rcs_attention(q, q, q, base='sclip', scale=0.125), K.rcs_attention_ref(q, q, q, base='sclip', scale=0.125))\n"
        "try:\n"
        "    K.rcs_attention(q, q, q, base='sclip', scale=0.125, force=True)\n"
        "except BackendUnavailableError as e:\n"
        "    assert 'not installed' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {key: val for key, val in os.environ.items() if not key.startswith(("CLIPSAM_", "TRITON_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_dispatch(monkeypatch):
    q, k, v, kw, labels = inputs(n_grid=(14, 14))
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    kw = {key: (val.cuda() if torch.is_tensor(val) else val) for key, val in kw.items()}
    labels = labels.cuda()
    fused = K.rcs_attention(q, k, v, **kw)
    assert torch.equal(fused, K.rcs_attention_triton(q, k, v, **kw))
    assert torch.equal(K.sfr_affinity(labels), K.sfr_affinity_triton(labels))
    monkeypatch.setenv("CLIPSAM_DISABLE_TRITON", "1")
    assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))
    assert torch.equal(K.sfr_affinity(labels), K.sfr_affinity_ref(labels))
    monkeypatch.delenv("CLIPSAM_DISABLE_TRITON")
    with K.exportable():
        assert torch.equal(K.rcs_attention(q, k, v, **kw), K.rcs_attention_ref(q, k, v, **kw))
    dispatch._warned.clear()
    with pytest.warns(RuntimeWarning, match="head dim"):
        K.rcs_attention(q[..., :32], k[..., :32], v[..., :32], base="clip", scale=0.125)


def test_precomputed_rcs_mean_is_the_reference_bit_for_bit_and_not_for_the_kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # a forced kernel could run here, but not with rcs_mean
    q, k, v, kw, _ = inputs()
    maps = K.rcs_mean_maps(kw["rcs_q"], kw["rcs_k"], kw["scale"])
    ref = K.rcs_attention_ref(q, k, v, **kw)
    assert torch.equal(K.rcs_attention_ref(q, k, v, **kw, rcs_mean=maps), ref)
    assert torch.equal(K.rcs_attention(q, k, v, **kw, rcs_mean=maps), ref)
    assert not torch.equal(K.rcs_attention_ref(q, k, v, **kw, rcs_mean=maps * 0.5), ref)  # the maps are used
    with pytest.raises(BackendUnavailableError, match="rcs_mean" if K.triton_available() else "triton"):
        K.rcs_attention(q, k, v, **kw, rcs_mean=maps, force=True)
