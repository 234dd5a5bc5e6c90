"""The engine folder: files, manifest, validation table, dynamic axes, TensorRT profiles, fp16 block list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsam.engine.io_names import GRAPHS, dense_graphs

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

SFR_GRAPHS = {
    "clip_text",
    "clip_dense_trunk",
    "clip_dense_pass1",
    "clip_dense_pass2",
    "sam2_image_encoder",
    "sam2_prompt_decoder",
}


@pytest.fixture(scope="module")
def folder(engine_dir):
    return engine_dir("resclip")


@pytest.fixture(scope="module")
def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_folder_contents(folder, manifest):
    names = {p.name for p in folder.iterdir()}
    assert {f"{g}.onnx" for g in SFR_GRAPHS} <= names
    assert {
        "manifest.json",
        "clip_tokenizer.json",
        "clip_bpe_vocab.txt.gz",
        "host_constants.npz",
        "trtexec.sh",
    } <= names
    assert set(manifest["graphs"]) == SFR_GRAPHS


def test_manifest_describes_the_export(manifest, tiny_clip):
    import clipsam
    from clipsam.export.engines import state_dict_sha256

    assert manifest["format"] == 2 and manifest["clipsam_version"] == clipsam.__version__
    assert (manifest["method"], manifest["preset"], manifest["precision"]) == ("resclip", "voc21", "fp32")
    assert manifest["opset"] >= 17
    clip = manifest["clip"]
    assert clip["arch"] == "clipsam-test-vit" and clip["weights"] == "random:0"
    assert clip["weights_sha256"] == state_dict_sha256(tiny_clip.model)
    assert (clip["patch"], clip["width"], clip["heads"], clip["embed_dim"], clip["native_grid"]) == (16, 128, 2, 64, 14)
    assert manifest["sam2"]["image_size"] == 256 and manifest["sam2"]["embed_size"] == 16
    assert manifest["sam2"]["dynamic_multimask"] == {"delta": 0.05, "thresh": 0.98}
    assert manifest["dense_config"]["sfr"] is True and manifest["dense_config"]["templates"] == [
        "a photo of a {}.",
        "a sketch of the {}.",
    ]
    for name, g in manifest["graphs"].items():
        assert g["file"] == f"{name}.onnx" and len(g["sha256"]) == 64 and g["bytes"] > 0
        assert g["inputs"] == [n for n in GRAPHS[name].inputs if n in g["inputs"]]
        assert g["outputs"] == list(GRAPHS[name].outputs) or name == "clip_dense_trunk"


def test_validation_table_covers_every_graph(manifest):
    rows = manifest["validation"]
    assert {r["graph"] for r in rows} == SFR_GRAPHS
    assert all(r["ok"] and r["max_abs_err"] <= r["tolerance"] for r in rows)
    assert max(r["max_abs_err"] for r in rows if r["output"] == "patch_logits") < 1e-5
    # dynamic axes were exercised: several batch sizes and crop sizes per dense graph
    assert len({r["case"] for r in rows if r["graph"] == "clip_dense_pass2"}) == 3


def test_graphs_have_dynamic_axes_and_the_manifest_io(folder, manifest):
    for name, entry in manifest["graphs"].items():
        model = onnx.load(str(folder / entry["file"]), load_external_data=False)
        assert [i.name for i in model.graph.input] == entry["inputs"]
        assert [o.name for o in model.graph.output] == entry["outputs"]
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == manifest["opset"]
        for inp in model.graph.input:
            dims = inp.type.tensor_type.shape.dim
            for axis, label in GRAPHS[name].dynamic_axes.get(inp.name, {}).items():
                assert dims[axis].dim_param, f"{name}.{inp.name} axis {axis} ({label}) is static"
    types = {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(folder / "clip_text.onnx")).graph.input}
    assert types == {"token_ids": onnx.TensorProto.INT64}


def test_host_constants(folder, tiny_clip):
    consts = np.load(folder / "host_constants.npz")
    np.testing.assert_array_equal(
        consts["clip_pos_embed"], tiny_clip.model.visual.positional_embedding.detach().numpy()
    )
    off = consts["sfr_linspace_offsets"]
    assert len(off) - 1 == 1024 // 16 - 1  # D = 1 .. max_grid - 1
    for d in (1, 7, 40, 63):
        np.testing.assert_array_equal(consts["sfr_linspace"][off[d - 1] : off[d]], torch.linspace(0, 1, d + 1).numpy())


def test_tensorrt_profiles_follow_the_scheduler(folder, manifest):
    from clipsam.config import DenseConfig
    from clipsam.export.profiles import batch_sizes

    cfg = DenseConfig.from_dict(manifest["dense_config"])
    trunk = manifest["graphs"]["clip_dense_trunk"]["profile"]
    assert manifest["limits"]["max_batch"] == 2  # whole image: batches only across equal sizes and flips
    assert [trunk[k]["crops"][0] for k in ("min", "opt", "max")] == list(batch_sizes(cfg, 2)) == [1, 1, 2]
    assert trunk["max"]["crops"] == [2, 3, 1024, 1024] and trunk["max"]["pos_embed"] == [1 + 64 * 64, 128]
    assert trunk["opt"]["crops"] == [1, 3, 336, 448] and trunk["opt"]["pos_embed"] == [1 + 21 * 28, 128]
    dec = manifest["graphs"]["sam2_prompt_decoder"]["profile"]
    assert dec["max"]["point_coords"] == [64, 16, 2] and dec["min"]["image_embed"] == [1, 256, 16, 16]
    lines = (folder / "trtexec.sh").read_text().splitlines()
    cmds = [line for line in lines if line.startswith("trtexec ")]
    assert len(cmds) == len(manifest["graphs"])
    enc = next(c for c in cmds if "sam2_image_encoder.onnx" in c)
    assert "--minShapes=image:1x3x256x256" in enc and "--maxShapes=image:4x3x256x256" in enc and "--fp16" not in enc
    assert any("--optShapes=crops:1x3x336x448,pos_embed:589x128" in c for c in cmds)


def test_sliding_presets_batch_windows(tiny_clip):
    from clipsam.config import dense_config
    from clipsam.export.profiles import batch_sizes, crop_sizes

    cfg = dense_config("sclip", "context59")  # 224 crops, stride 112 on a 336 x 448 image: 2 x 3 windows
    assert batch_sizes(cfg, 8) == (1, 6, 8) and crop_sizes(cfg, 16, 1024)[2] == (224, 224)
    assert batch_sizes(cfg.replace(flip=True), 8) == (1, 8, 8)
    clear = dense_config("clearclip", "context59")  # 448 crops: no padding needed
    assert crop_sizes(clear, 14, 1024) == ((14, 14), (448, 448), (448, 448))
    assert crop_sizes(clear.replace(slide_crop=440), 16, 1024)[2] == (448, 448)


def test_fp16_folder_keeps_io_and_blocks_ops(engine_dir):
    from clipsam.export.fp16 import FP16_OP_BLOCK_LIST

    folder = engine_dir("resclip_fp16")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["precision"] == "fp16" and all(r["ok"] for r in manifest["validation"])
    assert {r["graph"] for r in manifest["validation"]} == SFR_GRAPHS
    for name in ("clip_dense_trunk", "sam2_image_encoder", "sam2_prompt_decoder"):
        model = onnx.shape_inference.infer_shapes(onnx.load(str(folder / f"{name}.onnx")))
        g = model.graph
        assert all(
            t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            for t in list(g.input) + list(g.output)
            if t.name not in ("token_ids",)
        )
        types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input)}
        types.update({t.name: t.data_type for t in g.initializer})
        fp16_matmuls = [
            n for n in g.node if n.op_type in ("MatMul", "Conv") and types.get(n.input[0]) == onnx.TensorProto.FLOAT16
        ]
        assert fp16_matmuls, f"{name}: no MatMul/Conv runs in fp16"
        for n in g.node:
            if n.op_type in FP16_OP_BLOCK_LIST and n.input and n.input[0] in types:
                assert types[n.input[0]] != onnx.TensorProto.FLOAT16, f"{name}: {n.op_type} {n.name} runs in fp16"


def test_dense_graph_sets_per_method():
    names = [
        [g.name for g in dense_graphs(*args)]
        for args in (("naclip", True, True), ("sclip", False, False), ("naclip", False, False))
    ]
    assert names == [["clip_dense_trunk", "clip_dense_pass1", "clip_dense_pass2"], ["clip_dense"], ["clip_dense"]]
    assert "window_bias" not in dense_graphs("sclip", False, False)[0].inputs
    assert "window_bias" in dense_graphs("naclip", False, False)[0].inputs
    assert "rcs_q" not in dense_graphs("naclip", False, True)[1].inputs
