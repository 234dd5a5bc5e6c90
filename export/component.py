"""``export_component``: export one trace-safe wrapper to ONNX, check it, and prove it against PyTorch.

Steps, each failing loudly:

1. ``torch.onnx.export`` with the legacy TorchScript exporter (``dynamo=False``: the dynamo exporter needs
   onnxscript and mishandles SAM2's decoder dims, ``docs/export.md``), opset >= 17, names and dynamic axes from
   ``io_names``, constant folding; the MHA fast path is disabled and ``clipsam.kernels.exportable()`` forces the
   PyTorch references (``docs/export.md``).
2. ONNX Runtime's provider-independent (``ORT_ENABLE_BASIC``) graph optimisation is applied offline to the fp32
   graph and saved: constant folding and redundant-node elimination; the file stays standard ONNX, so CUDA,
   TensorRT and other builds load it. Sessions at run time apply the remaining (provider-specific) optimisations.
3. fp16 only: ``fp16.to_fp16`` (IO types kept, block list), after step 2: a model saved by an ONNX Runtime
   session is already partitioned for its provider, and the CPU provider casts fp16 ops it lacks back to fp32.
4. ``onnx.checker.check_model(path, full_check=True)`` on the saved file.
5. ONNX Runtime (CPU) against the PyTorch reference on every ``ParityCase``: max |ORT - torch| per output
   must be <= atol + rtol * max |torch|. Rows are returned (and printed by ``format_table``); any row out of
   tolerance raises ``ExportValidationError`` with the whole table.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.engine.io_names import GraphIO
from clipsam.errors import ClipSamError

TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 1e-2)}  # precision -> (atol, rtol)


class ExportValidationError(ClipSamError, RuntimeError):
    """An exported graph failed the checker or disagrees with PyTorch beyond tolerance."""


@dataclass(frozen=True)
class ParityCase:
    """Inputs of one ONNX Runtime run and the PyTorch outputs it must reproduce.

    Attributes:
        name: what the case exercises ("batch 3, 48x64 crop").
        inputs: graph input name -> numpy array.
        expected: graph output name -> numpy array from the PyTorch reference path.
    """

    name: str
    inputs: dict
    expected: dict


@dataclass(frozen=True)
class ValidationRow:
    """One output of one case: its error against PyTorch and the tolerance it had to meet."""

    graph: str
    case: str
    output: str
    shape: tuple
    max_abs_err: float
    ref_max_abs: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_err) and self.max_abs_err <= self.tolerance)

    def as_dict(self) -> dict:
        return {
            "graph": self.graph,
            "case": self.case,
            "output": self.output,
            "shape": list(self.shape),
            "max_abs_err": self.max_abs_err,
            "ref_max_abs": self.ref_max_abs,
            "tolerance": self.tolerance,
            "ok": self.ok,
        }


def format_table(rows) -> str:
    """The validation rows as a fixed-width text table."""
    head = f"{'graph':<20} {'case':<30} {'output':<20} {'shape':<22} {'max|ort-torch|':>14} {'tol':>9}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(s) for s in r.shape)
        lines.append(
            f"{r.graph:<20} {r.case[:30]:<30} {r.output[:20]:<20} {shape:<22} {r.max_abs_err:>14.3e} "
            f"{r.tolerance:>9.1e}  {'yes' if r.ok else 'NO'}"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _export_mode():
    import torch

    from clipsam.kernels import exportable

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with exportable(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def _optimise_basic(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def _validate(path: Path, io: GraphIO, cases, atol: float, rtol: float) -> list[ValidationRow]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    rows = []
    for case in cases:
        feeds = {k: v for k, v in case.inputs.items() if k in names}
        missing = set(names) - set(feeds)
        if missing:
            raise ExportValidationError(f"{io.name}: case {case.name!r} gives no value for inputs {sorted(missing)}")
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for name, ref in case.expected.items():
            got = outs[name].astype(np.float64)
            ref = np.asarray(ref, dtype=np.float64)
            if got.shape != ref.shape:
                raise ExportValidationError(
                    f"{io.name}: case {case.name!r} output {name!r} has shape {got.shape}, PyTorch gives {ref.shape}"
                )
            err = float(np.abs(got - ref).max()) if ref.size else 0.0
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            rows.append(ValidationRow(io.name, case.name, name, tuple(ref.shape), err, scale, atol + rtol * scale))
    return rows


def export_component(
    module,
    example_inputs: tuple,
    path,
    io: GraphIO,
    cases=(),
    *,
    opset: int = 17,
    precision: str = "fp32",
    optimize: bool = True,
    tolerances: tuple[float, float] | None = None,
) -> list[ValidationRow]:
    """Export ``module`` to ``path`` and validate it.

    Arguments:
        module: trace-safe ``torch.nn.Module`` whose ``forward`` takes ``io.inputs`` in order.
        example_inputs: tensors traced through the module (use a batch of at least 2 on dynamic batch axes).
        path: destination ``.onnx`` file.
        io: the graph's names and dynamic axes (``io_names``).
        cases: ``ParityCase``s run through ONNX Runtime and compared with their PyTorch outputs.
        opset: ONNX opset (>= 17).
        precision: "fp32" or "fp16".
        optimize: apply ORT's basic offline optimisation.
        tolerances: (atol, rtol); default ``TOLERANCES[precision]``.

    Returns:
        The validation rows (all within tolerance).

    Raises:
        ExportValidationError: the exporter, the checker or the parity check failed.
    """
    import onnx
    import torch

    if opset < 17:
        raise ExportValidationError(f"opset {opset} is too old: LayerNormalization needs opset 17 or newer")
    if precision not in TOLERANCES:
        raise ExportValidationError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
    path = Path(path)
    atol, rtol = tolerances or TOLERANCES[precision]
    with tempfile.TemporaryDirectory(prefix="clipsam-export-") as tmp:
        raw = Path(tmp) / io.file
        try:
            with _export_mode():
                torch.onnx.export(
                    module.eval(),
                    tuple(example_inputs),
                    str(raw),
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(io.inputs),
                    output_names=list(io.outputs),
                    dynamic_axes={k: v for k, v in io.dynamic_axes.items() if k in io.inputs + io.outputs},
                    do_constant_folding=True,
                )
        except Exception as e:
            raise ExportValidationError(f"{io.name}: torch.onnx.export failed: {type(e).__name__}: {e}") from e
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.remove(path)
        if optimize:  # on the fp32 graph: saved after CPU partitioning, which would undo fp16 ops (InsertCast)
            opt = Path(tmp) / f"opt_{io.file}"
            _optimise_basic(raw, opt)
            raw = opt
        if precision == "fp16":
            from .fp16 import to_fp16

            onnx.save(to_fp16(onnx.load(str(raw))), str(path))
        else:
            os.replace(raw, path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportValidationError(f"{io.name}: onnx.checker rejected {path.name}: {e}") from e
    rows = _validate(path, io, cases, atol, rtol)
    bad = [r for r in rows if not r.ok]
    if bad:
        raise ExportValidationError(
            f"{io.name}: ONNX Runtime disagrees with PyTorch beyond tolerance ({precision}: atol {atol:g}, "
            f"rtol {rtol:g}) on {len(bad)} output(s):\n{format_table(rows)}"
        )
    return rows
