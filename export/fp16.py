"""fp16 conversion of an exported fp32 graph: IO types kept, accuracy-sensitive ops kept in fp32.

``to_fp16(model)`` gives every float tensor a *native* precision from its producer: graph inputs fp32 (IO types are
kept, so the runtime feeds and reads the same arrays for both precisions), block-listed nodes and ``If``/``Loop``
nodes (whole subgraphs stay fp32) fp32, every other node fp16, initializers both (an fp32 copy is stored only if a
blocked node reads it). Where a consumer needs the other precision a ``Cast`` is inserted, once per tensor. MatMul,
Gemm, Conv, Add, Mul and the attention products (the bulk of the FLOPs) run in fp16. These ops stay fp32:

    LayerNormalization, ReduceMean, ReduceSum, ReduceL2  mean/variance and L2-norm accumulations lose digits or
                                                         overflow in fp16 (ln_pre/ln_1/ln_2/ln_post, feature norms)
    Pow, Sqrt, Reciprocal, Div                           the L2 normalisation of patch/text features
    Softmax, Exp                                         attention logits (tau*s*kk^T + SFR bias + Omega) and the
                                                         RCS maps: exp overflows above ~11 in fp16
    Erf                                                  GELU's tail (QuickGELU's Sigmoid stays fp16)
    Sin, Cos                                             SAM2's random-Fourier positional encoding of points and
                                                         of the dense grid (large arguments; sam2 #650)
    Resize, Range, CumSum, ArgMax                        resampling and index arithmetic (the EOT argmax)

ONNX Runtime's own ``float16.convert_float_to_float16`` was not used: on these graphs it binds LayerNormalization to
mixed types and duplicates Cast node names (measured with onnxruntime 1.31), and it fails on the legacy SAM2 encoder's
``If`` nodes (``docs/export.md``), which are kept fp32 here.
"""

from __future__ import annotations

import numpy as np

FP16_OP_BLOCK_LIST = (
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Div",
    "Softmax",
    "Exp",
    "Erf",
    "Sin",
    "Cos",
    "Resize",
    "Range",
    "CumSum",
    "ArgMax",
    "If",
    "Loop",
    "Scan",
)
_FP16_MAX = 65504.0


def _float_tensors(model) -> set[str]:
    """Names of every float32 tensor of the main graph (after ONNX type inference)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = set()
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            out.add(vi.name)
    out.update(t.name for t in g.initializer if t.data_type == TensorProto.FLOAT)
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    out.update(node.output)
    return out


def _outer_reads(graph) -> set[str]:
    """Tensors a subgraph (and its nested subgraphs) reads from enclosing scopes."""
    import onnx

    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(n for n in node.input if n and n not in local)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                reads.update(r for r in _outer_reads(a.g) if r not in local)
        local.update(node.output)
    return reads - local


def _rename_reads(graph, old: str, new: str) -> None:
    import onnx

    if old == new:
        return
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_reads(a.g, old, new)


def to_fp16(model, op_block_list=FP16_OP_BLOCK_LIST):
    """fp32 ONNX ModelProto -> mixed-precision ModelProto (fp32 IO, block-listed ops in fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    floats = _float_tensors(model)
    g = model.graph
    block = set(op_block_list)
    native: dict[str, int] = {}  # float tensor -> TensorProto.FLOAT or FLOAT16 as produced
    for vi in g.input:
        if vi.name in floats:
            native[vi.name] = TensorProto.FLOAT
    inits = {}
    for t in list(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            inits[t.name] = numpy_helper.to_array(t)
            g.initializer.remove(t)
    new_nodes, casts = [], {}
    counter = [0]

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            counter[0] += 1
            out = f"{name}__{'fp32' if to == TensorProto.FLOAT else 'fp16'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"fp16_cast_{counter[0]}"))
            casts[key] = out
        return casts[key]

    used_inits: dict[tuple[str, int], str] = {}

    def read(name: str, want: int) -> str:
        if name in inits:
            key = (name, want)
            if key not in used_inits:
                arr = inits[name]
                new = name if want == TensorProto.FLOAT16 else f"{name}__fp32"
                data = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16) if want == TensorProto.FLOAT16 else arr
                g.initializer.append(numpy_helper.from_array(data, new))
                used_inits[key] = new
            return used_inits[key]
        if name not in native or native[name] == want:
            return name
        return cast(name, want)

    outputs = {o.name for o in g.output}
    for node in list(g.node):
        blocked = node.op_type in block
        want = TensorProto.FLOAT if blocked else TensorProto.FLOAT16
        for i, name in enumerate(node.input):
            if name and (name in floats or name in inits):
                node.input[i] = read(name, want)
        for a in node.attribute:  # subgraphs stay fp32; their outer-scope reads get fp32 versions
            if a.type == onnx.AttributeProto.GRAPH:
                for outer in _outer_reads(a.g):
                    if outer in floats or outer in inits:
                        _rename_reads(a.g, outer, read(outer, TensorProto.FLOAT))
        if not blocked:
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == TensorProto.FLOAT:
                        a.i = TensorProto.FLOAT16
            for a in node.attribute:
                if (
                    node.op_type in ("Constant", "ConstantOfShape")
                    and a.name == "value"
                    and a.t.data_type == TensorProto.FLOAT
                ):
                    arr = np.clip(numpy_helper.to_array(a.t), -_FP16_MAX, _FP16_MAX).astype(np.float16)
                    a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
        out_casts = []
        for j, name in enumerate(node.output):
            if name not in floats:
                continue
            if name in outputs and not blocked:  # graph outputs stay fp32: produce fp16 under another name
                node.output[j] = f"{name}__fp16"
                native[node.output[j]] = TensorProto.FLOAT16
                out_casts.append(
                    helper.make_node(
                        "Cast", [node.output[j]], [name], to=TensorProto.FLOAT, name=f"fp16_output_cast_{name}"
                    )
                )
                native[name] = TensorProto.FLOAT
            else:
                native[name] = want
        new_nodes.append(node)
        new_nodes.extend(out_casts)
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model) if model.ByteSize() < 2_000_000_000 else model
