"""export_component fails loudly; the dense wrapper restates the reference attention exactly."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine.io_names import GraphIO
from clipsam.export.component import ExportValidationError, ParityCase, export_component, format_table

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
IO = GraphIO("toy", ("x",), ("y",), {"x": {0: "batch"}, "y": {0: "batch"}})


def _toy():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.LayerNorm(16)).eval()


def _case(model, b, shift=0.0):
    x = torch.randn(b, 8)
    with torch.no_grad():
        y = model(x).numpy() + shift
    return ParityCase(f"batch {b}", {"x": x.numpy()}, {"y": y})


def test_export_validates_and_reports(tmp_path):
    model = _toy()
    rows = export_component(model, (torch.randn(2, 8),), tmp_path / "toy.onnx", IO, [_case(model, 3), _case(model, 1)])
    assert [r.case for r in rows] == ["batch 3", "batch 1"] and all(r.ok for r in rows)
    assert "max|ort-torch|" in format_table(rows) and (tmp_path / "toy.onnx").is_file()


def test_out_of_tolerance_fails_loudly(tmp_path):
    model = _toy()
    with pytest.raises(
        ExportValidationError, match=r"toy: ONNX Runtime disagrees with PyTorch beyond tolerance[\s\S]*NO"
    ):
        export_component(model, (torch.randn(2, 8),), tmp_path / "toy.onnx", IO, [_case(model, 3, shift=1e-3)])


def test_fp16_uses_its_own_tolerance_and_keeps_io_types(tmp_path):
    import onnx

    model = _toy()
    rows = export_component(
        model, (torch.randn(2, 8),), tmp_path / "toy16.onnx", IO, [_case(model, 3)], precision="fp16"
    )
    assert rows[0].tolerance >= 1e-2 and rows[0].ok
    g = onnx.load(str(tmp_path / "toy16.onnx")).graph
    assert g.input[0].type.tensor_type.elem_type == g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_bad_requests(tmp_path):
    with pytest.raises(ExportValidationError, match="opset 16 is too old"):
        export_component(_toy(), (torch.randn(2, 8),), tmp_path / "t.onnx", IO, opset=16)
    with pytest.raises(ExportValidationError, match="precision"):
        export_component(_toy(), (torch.randn(2, 8),), tmp_path / "t.onnx", IO, precision="int8")
    with pytest.raises(ExportValidationError, match="gives no value for inputs"):
        export_component(_toy(), (torch.randn(2, 8),), tmp_path / "t.onnx", IO, [ParityCase("empty", {}, {})])


@pytest.mark.parametrize("base", ["naclip", "sclip", "clearclip", "clip"])
@pytest.mark.parametrize("sfr", [False, True])
def test_graph_inputs_give_the_reference_attention(base, sfr):
    """Export traces the reference with Omega and the SFR term as float32 tensors (graph inputs): the same values."""
    from clipsam.kernels import rcs_attention_ref, sfr_affinity_ref
    from clipsam.kernels.rcs_attention import neighbourhood_window

    g = torch.Generator().manual_seed(0)
    b, h, n, d, grid = 2, 2, 13, 16, (3, 4)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    rq, rk = torch.randn(4, b, h, n, d, generator=g), torch.randn(4, b, h, n, d, generator=g)
    s_hat = sfr_affinity_ref(torch.randint(0, 3, (b, *grid), generator=g)) if sfr else None
    kw = dict(
        base=base, scale=d**-0.5, rcs_q=rq, rcs_k=rk, rcs_weights=(2.0, 0.3), sfr_weights=(2.2, 0.7) if sfr else None
    )
    ref = rcs_attention_ref(q, k, v, window=(*grid, 5.0), sfr_term=0.7 * s_hat if sfr else None, **kw)
    got = rcs_attention_ref(
        q, k, v, window=neighbourhood_window(*grid, 5.0), sfr_term=(0.7 * s_hat).float() if sfr else None, **kw
    )
    torch.testing.assert_close(got, ref, atol=0, rtol=0)


def test_trtexec_line():
    from clipsam.export.profiles import trtexec_line

    prof = {"min": {"x": [1, 8]}, "opt": {"x": [4, 8]}, "max": {"x": [16, 8]}}
    assert trtexec_line("toy.onnx", prof, True) == (
        "trtexec --onnx=toy.onnx --saveEngine=toy.fp16.engine "
        "--minShapes=x:1x8 --optShapes=x:4x8 --maxShapes=x:16x8 --fp16"
    )
    assert trtexec_line("toy.onnx", None, False) == "trtexec --onnx=toy.onnx --saveEngine=toy.engine"
    assert np.isfinite(1.0)
