"""Fuzz-style check of the error policy (issue 14): every public entry point, fed a generated list of malformed
inputs (shapes, dtypes, PIL modes, files, vocabularies, options, checkpoints, manifests, command lines), fails only
with a ``ClipSamError`` (no other exception type escapes) and modifies none of its inputs. The command line fails with
one message, no traceback and a non-zero exit."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsam.errors import ClipSamError

from .conftest import TINY_VIT

LONG = "a very large and extremely old " * 12


# -- generated inputs ----------------------------------------------------------------------------------------------
def images(folder: Path) -> list:
    """Malformed (and a few edge-valid) images: shapes x dtypes, PIL modes, tensors, files, other objects."""
    shapes = [
        (0, 0, 3),
        (0, 5, 3),
        (5, 0),
        (4, 64, 3),
        (3, 40, 4),
        (32, 32, 2),
        (32, 32, 5),
        (2, 2, 2, 2),
        (),
        (32,),
        (2, 3000, 3),
        (1, 1, 3),
    ]
    dtypes = [np.uint8, np.int64, np.uint16, np.int8, np.bool_, np.complex64, np.float16, np.float64, object]
    out = [np.zeros(s, d) for s, d in itertools.product(shapes, dtypes)]
    for bad in (np.nan, np.inf, -np.inf, -0.5, 3.0):
        a = np.zeros((24, 40, 3), np.float32)
        a[1, 2, 0] = bad
        out.append(a)
    out += [np.zeros((24, 40, 3), np.uint8)[::2, ::-1], np.zeros((24, 40, 4), np.uint8)]  # views: read, not written
    out += [Image.new(m, (40, 24)) for m in ("I;16", "I", "F", "La", "1", "CMYK", "P", "LA", "RGBA", "HSV", "I;16B")]
    out += [Image.fromarray(np.full((24, 40), 300.0, np.float32)), Image.new("RGB", (0, 0)), Image.new("L", (3, 40))]
    out += [
        torch.zeros(4, 64, 3),
        torch.zeros(3, 0, 0),
        torch.zeros(3, 24, 40, dtype=torch.int32),
        torch.zeros(3, 24, 40, dtype=torch.complex64),
        torch.zeros(3, 24, 40, dtype=torch.bool),
        torch.zeros(3, 24),
        torch.zeros(1, 3, 24, 40),
        torch.full((3, 24, 40), float("nan")),
    ]
    (folder / "d.jpg").mkdir(exist_ok=True)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 20)
    out += [
        folder / "missing.png",
        folder / "d.jpg",
        folder / "zero.png",
        folder / "text.png",
        folder / "trunc.jpg",
        str(folder / "d.jpg"),
        "https://example.com/cat.jpg",
        "s3://bucket/cat.png",
        "",
        b"cat.png",
        5,
        3.5,
        None,
        [1, 2, 3],
        {"image": 1},
        object(),
    ]
    return out


def vocabularies(folder: Path) -> list[dict]:
    (folder / "empty.txt").write_text("")
    (folder / "gap.txt").write_text("cat\n\ndog\n")
    (folder / "binary.txt").write_bytes(bytes(range(256)))
    (folder / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (folder / "dup.txt").write_bytes("cat \ncat\n".encode("utf-8-sig"))
    (folder / "vocab_dir").mkdir(exist_ok=True)
    classes = [
        [],
        [""],
        ["  "],
        ["cat", "cat"],
        ["cat ", "cat"],
        ["Cat", "cat"],
        ["hot-dog", "hot - dog"],
        [None],
        [5],
        ["cat", 3.5],
        "cat,,dog",
        ",",
        "",
        {"cat": 1},
        5,
        b"cat",
        [["a", ["b"]]],
        [[]],
        ["\ufeff"],
        [LONG + "a", LONG + "b"],
        np.array(["cat", "dog"]),
        [b"cat"],
        [["cat", "Cat"], "cat"],
    ]
    files = [
        folder / "missing.txt",
        folder / "empty.txt",
        folder / "gap.txt",
        folder / "binary.txt",
        folder / "latin1.txt",
        folder / "dup.txt",
        folder / "vocab_dir",
        "http://example.com/c.txt",
        5,
        b"x",
    ]
    return (
        [dict(classes=c) for c in classes]
        + [dict(class_file=f) for f in files]
        + [dict(classes=["cat"], class_file=folder / "gap.txt")]
    )


def options() -> list[dict]:
    """Run options and DenseConfig overrides of the wrong type or value."""
    return [
        dict(max_batch=0),
        dict(max_batch="4"),
        dict(max_batch=True),
        dict(max_memory_mb=-1),
        dict(max_memory_mb="lots"),
        dict(max_memory_mb=float("nan")),
        dict(text_cache_size=0),
        dict(text_cache_size="x"),
        dict(short_side="336"),
        dict(short_side=-1),
        dict(slide_crop="x"),
        dict(scales=()),
        dict(scales=(0.0,)),
        dict(scales="ms5"),
        dict(prob_thd=2.0),
        dict(prob_thd="x"),
        dict(pamr_iters=1.5),
        dict(templates=5),
        dict(templates=["no placeholder"]),
        dict(templates=[]),
        dict(no_such_option=1),
        dict(combine="median"),
        dict(flip="yes"),
        dict(area_thd="x"),
    ]


# -- the check ------------------------------------------------------------------------------------------------------
def _snapshot(x):
    """A comparable picture of an input, deep enough to see any modification."""
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes() if x.dtype != object else repr(x.tolist()))
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), tuple(x.shape), x.numpy().tobytes())
    if isinstance(x, Image.Image):
        return ("pil", x.mode, x.size, x.tobytes(), dict(x.info), dict(x.getexif()))
    if isinstance(x, Path):
        return ("path", str(x), hashlib.sha256(x.read_bytes()).hexdigest() if x.is_file() else x.is_dir())
    if isinstance(x, dict):
        return ("dict", tuple((k, _snapshot(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_snapshot(v) for v in x))
    return ("value", repr(x))


def _check(call, *inputs) -> str | None:
    """None when ``call()`` succeeds or raises a ClipSamError and no input changed; else what went wrong."""
    before = [_snapshot(i) for i in inputs]
    problem = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except ClipSamError:
        pass
    except Exception as e:  # noqa: BLE001 - this is what the test looks for
        problem = f"{type(e).__name__}: {str(e)[:300]}"
    if [_snapshot(i) for i in inputs] != before:
        problem = (problem + "; " if problem else "") + "an input was modified"
    return problem


def _assert_all(cases) -> None:
    failures = [f"{name}: {problem}" for name, problem in cases if problem is not None]
    assert not failures, f"{len(failures)} escape(s):\n" + "\n".join(failures)


def _short(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array{x.shape}{x.dtype}"
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)}{x.dtype}"
    if isinstance(x, Image.Image):
        return f"PIL {x.mode} {x.size}"
    return repr(x)[:60]


# -- the entry points -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seg(make_segmenter):
    return make_segmenter("clip", None, short_side=32, slide_crop=0)


@pytest.fixture(scope="module")
def engine(engine_dir_or_skip):
    from clipsam.engine import EngineSegmenter

    return EngineSegmenter(engine_dir_or_skip, short_side=32, slide_crop=0)


@pytest.fixture(scope="module")
def engine_dir_or_skip(tiny_clip, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from . import engines

    return engines.build("sclip", tiny_clip, tmp_path_factory)


def _backend(request):
    return request.getfixturevalue("seg" if request.param == "torch" else "engine")


@pytest.fixture(params=["torch", "engines"])
def backend(request):
    return _backend(request)


def test_images(backend, tmp_path):
    cases = []
    for i, img in enumerate(images(tmp_path)):
        name = _short(img)
        cases.append((f"segment({name})", _check(lambda: backend.segment(img, classes=["cat", "grass"]), img)))
        if i % 3 == 0:  # logits() reads images through the same load_image: a third of them is enough
            cases.append((f"logits({name})", _check(lambda: backend.logits(img, classes="cat, grass"), img)))
    batch = images(tmp_path)[:40]
    cases.append(("segment_batch", _check(lambda: backend.segment_batch(batch, classes=["cat"]), batch)))
    cases.append(("segment_stream", _check(lambda: list(backend.segment_stream(iter(batch), classes=["cat"])), batch)))
    for single in images(tmp_path)[::7]:
        cases.append(
            (f"segment_batch({_short(single)})", _check(lambda: backend.segment_batch(single, classes="cat"), single))
        )
    _assert_all(cases)


def test_vocabularies(backend, tmp_path):
    img = np.zeros((24, 40, 3), np.uint8)
    cases = []
    for kw in vocabularies(tmp_path):
        name = f"{_short(kw)}"
        cases.append((f"segment({name})", _check(lambda: backend.segment(img, **kw), kw, img)))
        cases.append((f"vocabulary({name})", _check(lambda: backend.text_embeddings(backend.vocabulary(**kw)), kw)))
        cases.append((f"warmup({name})", _check(lambda: backend.warmup(sizes=[(24, 40)], **kw), kw)))
    for given in (["cat"], "cat, dog", 5, None, [LONG + "a", LONG + "b"]):  # not a Vocabulary: read as classes
        cases.append((f"text_embeddings({given!r:.40})", _check(lambda: backend.text_embeddings(given), given)))
    for sizes in ([], [(0, 5)], [("a", 3)], 5, [(24,)], [(24, 40, 3)], [(-1, 5)], "24x40"):
        cases.append((f"warmup(sizes={sizes!r})", _check(lambda: backend.warmup(classes="cat", sizes=sizes), sizes)))
    _assert_all(cases)


def test_options(seg, engine):
    from clipsam import Segmenter
    from clipsam.engine import EngineSegmenter

    cases = []
    for kw in options() + [dict(prompts=5), dict(prompts="default"), dict(context_prompts=5)]:
        cases.append((f"torch with_options({kw})", _check(lambda: seg.with_options(**kw), kw)))
        cases.append((f"engine with_options({kw})", _check(lambda: engine.with_options(**kw), kw)))
        cases.append(
            (
                f"from_pretrained({kw})",
                _check(
                    lambda: Segmenter.from_pretrained(
                        clip=TINY_VIT, clip_weights=None, method="clip", preset=None, **kw
                    ),
                    kw,
                ),
            )
        )
        cases.append((f"EngineSegmenter({kw})", _check(lambda: EngineSegmenter(engine.manifest.folder, **kw), kw)))
    bad_args = [
        dict(clip=5),
        dict(clip=None),
        dict(clip="ViT-Q-99"),
        dict(clip_weights=5),
        dict(method=5),
        dict(method="foo"),
        dict(preset="imagenet"),
        dict(preset=["voc21"]),
        dict(device="tpu"),
        dict(device="cuda:x"),
        dict(device=1.5),
        dict(precision="int8"),
        dict(precision="fp16"),
        dict(sam2="sam3"),
        dict(sam2=5),
        dict(sam2_weights="w.pt"),
        dict(refine=5),
        dict(prompts=5),
        dict(prompts="default"),
        dict(quick_gelu="yes"),
        dict(context_prompts=5),
        dict(context_prompts="nope"),
        dict(descriptions="voc99"),
        dict(enrichment="tse", descriptions=None),
        dict(calibration="excel", method="resclip"),
    ]
    for kw in bad_args:
        full = {"clip": TINY_VIT, "clip_weights": None, "method": "clip", "preset": None, **kw}
        cases.append((f"from_pretrained({kw})", _check(lambda: Segmenter.from_pretrained(**full), kw)))
    engine_args = [
        dict(providers=5),
        dict(providers=["gpu"]),
        dict(providers=""),
        dict(refine="yes"),
        dict(refine=True),
        dict(method="foo"),
        dict(precision=5),
        dict(device_id=-1),
        dict(device_id="0"),
        dict(intra_op_threads="x"),
        dict(intra_op_threads=-1),
        dict(intra_op_threads=10**9),
        dict(trt_cache_dir=5),
        dict(verify="no"),
        dict(io_binding="x"),
        dict(allow_fallback=None),
        dict(prompts=5),
        dict(base="naclip"),
        dict(calibration="knn"),
    ]
    for kw in engine_args:
        cases.append((f"EngineSegmenter({kw})", _check(lambda: EngineSegmenter(engine.manifest.folder, **kw), kw)))
    for folder in (5, None, "https://example.com/engines", Path(TINY_VIT), Path(TINY_VIT).parent):
        cases.append((f"EngineSegmenter({folder!r})", _check(lambda: EngineSegmenter(folder), folder)))
    for device in ("tpu", "cuda:x", 1.5, "cpu:x"):
        cases.append(
            (
                f"from_engines(device={device!r})",
                _check(lambda: EngineSegmenter.from_engines(engine.manifest.folder, device=device), device),
            )
        )
    _assert_all(cases)


def _checkpoints(folder: Path, tiny_clip) -> list:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    sd = tiny_clip.model.state_dict()
    files = {
        "zero.pt": b"",
        "text.pt": b"hello",
        "random.pt": bytes(range(256)) * 8,
        "zip.pt": b"PK\x03\x04" + b"\x00" * 60,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    objs = {
        "list.pt": [1, 2],
        "int.pt": 5,
        "tensor.pt": torch.zeros(3),
        "evil.pt": {"x": Evil()},
        "nontensor.pt": {"a": 1},
        "wrapped_int.pt": {"state_dict": 5},
        "empty_dict.pt": {},
        "shapes.pt": {k: v[..., :1] if v.ndim else v for k, v in sd.items()},
        "partial.pt": dict(list(sd.items())[:5]),
        "extra.pt": {**sd, "bogus": torch.zeros(1)},
    }
    for name, obj in objs.items():
        torch.save(obj, folder / name)
    (folder / "ckpt_dir").mkdir(exist_ok=True)
    return [folder / n for n in list(files) + list(objs)] + [
        folder / "ckpt_dir",
        folder / "missing.pt",
        "https://example.com/w.pt",
        "no_such_tag",
        5,
    ]


def test_checkpoints(tmp_path, tiny_clip):
    from clipsam.models import load_clip

    cases = []
    for ckpt in _checkpoints(tmp_path, tiny_clip):
        cases.append((f"load_clip({ckpt})", _check(lambda: load_clip(TINY_VIT, ckpt), ckpt)))
    pytest.importorskip("sam2")
    from clipsam.refine import Sam2Refiner

    for ckpt in _checkpoints(tmp_path, tiny_clip)[:10]:
        cases.append(
            (f"Sam2Refiner({ckpt})", _check(lambda: Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=ckpt), ckpt))
        )
    _assert_all(cases)


def _manifest_edits():
    """Mutations of a manifest: every required key removed or retyped, nested fields retyped, baked fields edited."""
    top = [
        "format",
        "clipsam_version",
        "precision",
        "opset",
        "method",
        "preset",
        "dense_config",
        "clip",
        "sam2",
        "limits",
        "graphs",
        "files",
        "graph_settings",
    ]
    out = []
    for key in top:
        out.append((f"del {key}", lambda d, k=key: d.pop(k)))
        for value in (None, 5, "x", [], {}) if key != "clipsam_version" else ():  # the version is informational
            out.append((f"{key}={value!r}", lambda d, k=key, v=value: d.__setitem__(k, v)))
    nested = {
        "clip": [
            "patch",
            "width",
            "heads",
            "layers",
            "embed_dim",
            "native_grid",
            "arch",
            "weights_sha256",
            "quick_gelu",
        ],
        "limits": ["max_batch", "max_grid", "max_side", "max_images"],
        "dense_config": ["base", "rcs", "sfr", "method", "short_side", "slide_crop", "scales", "templates"],
        "graph_settings": ["fields", "sha256"],
    }
    for parent, keys in nested.items():
        for key in keys:
            out.append((f"del {parent}.{key}", lambda d, p=parent, k=key: d[p].pop(k)))
            values = (None, "x", [1], {"a": 1}) if parent == "dense_config" else (None, -1, "x", [1], {"a": 1}, 14)
            for value in values:  # (host-side dense_config fields may change: only wrong types there)
                out.append((f"{parent}.{key}={value!r}", lambda d, p=parent, k=key, v=value: d[p].__setitem__(k, v)))
    for field in ("file", "bytes", "sha256", "inputs", "outputs"):
        out.append(
            (f"graphs.clip_dense.{field}=None", lambda d, f=field: d["graphs"]["clip_dense"].__setitem__(f, None))
        )
        out.append((f"files.tokenizer.{field}=[]", lambda d, f=field: d["files"]["tokenizer"].__setitem__(f, [])))
    out += [
        ("graph file outside", lambda d: d["graphs"]["clip_dense"].__setitem__("file", "/etc/passwd")),
        ("extra graph", lambda d: d["graphs"].__setitem__("clip_dense_trunk", dict(d["graphs"]["clip_dense"]))),
        ("graphs empty", lambda d: d.__setitem__("graphs", {})),
        ("sam2 object", lambda d: d.__setitem__("sam2", {"model": "sam2.1_hiera_t"})),
    ]
    return out


def test_manifests(engine_dir_or_skip, tmp_path):
    from clipsam.engine import EngineSegmenter

    folder = tmp_path / "engines"
    shutil.copytree(engine_dir_or_skip, folder)
    original = json.loads((folder / "manifest.json").read_text())
    cases = []
    for name, edit in _manifest_edits():
        data = copy.deepcopy(original)
        try:
            edit(data)
        except (KeyError, TypeError):
            continue
        (folder / "manifest.json").write_text(json.dumps(data))
        snapshot = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
        problem = _check(
            lambda: EngineSegmenter(folder, short_side=32, slide_crop=0).segment(
                np.zeros((24, 40, 3), np.uint8), classes="cat, grass"
            )
        )
        if {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()} != snapshot:
            problem = (problem or "") + "; the engine folder was modified"
        cases.append((f"manifest {name}", problem))
    (folder / "manifest.json").write_text("[1, 2]")
    cases.append(("manifest is a list", _check(lambda: EngineSegmenter(folder))))
    _assert_all(cases)


def test_segment_images_rows(seg, tmp_path):
    from clipsam.integrations.ray import SegmentImages

    mapper = SegmentImages(segmenter=lambda: seg, classes="cat, grass")
    paths = [p for p in images(tmp_path) if isinstance(p, (str, Path))]
    cases = []
    for p in paths:
        rows = {"path": np.array([str(p) if not isinstance(p, bytes) else p], dtype=object)}
        out = {}
        cases.append((f"path row {p!r}", _check(lambda: out.update(mapper(rows)), rows)))
        if out:
            assert not out["ok"][0] or Path(str(p)).is_file()
    arrays = [i for i in images(tmp_path) if isinstance(i, np.ndarray)][::5]
    rows = {"image": np.array(arrays + [None], dtype=object)}
    cases.append(("image rows", _check(lambda: mapper(rows), rows)))
    for kw in (
        dict(),
        dict(model=5, engines="x"),
        dict(segmenter=lambda: seg, classes=5),
        dict(model={"clip": 5}),
        dict(segmenter=lambda: seg, class_file=tmp_path / "nope.txt"),
        dict(engines=tmp_path / "nope"),
    ):
        cases.append((f"SegmentImages({kw})", _check(lambda: SegmentImages(**kw), kw)))
    _assert_all(cases)


def _cli_cases(folder: Path) -> list[list[str]]:
    img = folder / "ok.png"
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(img)
    (folder / "zero.png").write_bytes(b"")
    (folder / "empty_dir").mkdir(exist_ok=True)
    (folder / "file.txt").write_text("x")
    (folder / "bad.yaml").write_text("cat: [a cat\n")
    (folder / "zero.pt").write_bytes(b"")
    m = ["--clip", TINY_VIT, "--random-weights", "--no-progress"]
    out = ["--out", str(folder / "out")]
    seg = [["segment", str(img), "--classes", "cat", *out, *m]]
    variants = [
        ["--classes", ""],
        ["--classes", ","],
        ["--class-file", str(folder / "nope.txt")],
        ["--class-file", str(folder / "empty_dir")],
        ["--device", "tpu"],
        ["--device", "cuda:x"],
        ["--scales", "x"],
        ["--scales", "0"],
        ["--scales", ""],
        ["--batch-size", "0"],
        ["--max-batch", "0"],
        ["--max-memory-mb", "-5"],
        ["--templates", str(folder / "nope.txt")],
        ["--templates", "no braces"],
        ["--context-prompts", str(folder / "bad.yaml")],
        ["--engines", str(folder / "nope")],
        ["--engines", str(folder / "empty_dir")],
        ["--precision", "fp16"],
        ["--out", str(folder / "file.txt")],
        ["--sam2-weights", str(folder / "zero.pt")],
        ["--quick-gelu", "--engines", str(folder / "empty_dir")],
    ]
    cases = [seg[0] + v for v in variants]
    cases += [
        ["segment", str(p), "--classes", "cat", *out, *m]
        for p in (folder / "zero.png", folder / "empty_dir", folder / "nope.png", "https://example.com/a.jpg")
    ]
    cases += [
        ["segment", str(img), "--classes", "cat", *out, "--clip", TINY_VIT, "--weights", w, "--no-progress"]
        for w in (str(folder / "zero.pt"), str(folder / "empty_dir"), str(folder / "nope.pt"), "no_such_tag")
    ]
    cases += [
        ["batch", str(img), "--classes", "cat", *out, *m, *v]
        for v in (
            ["--actors", "2"],
            ["--device", "tpu"],
            ["--batch-size", "0"],
            ["--out", str(folder / "file.txt")],
            ["--class-file", str(folder / "file.txt"), "--classes", "cat"],
        )
    ]
    cases += [
        ["export", "--out", str(folder / x), "--clip", TINY_VIT, "--random-weights", "--quiet", *v]
        for x, v in (
            ("file.txt", []),
            ("e1", ["--opset", "5"]),
            ("e2", ["--max-side", "0"]),
            ("e3", ["--max-batch", "0"]),
            ("e4", ["--templates", "no braces"]),
            ("e5", ["--weights", str(folder / "zero.pt")]),
        )
    ]
    cases += [
        ["eval", "--dataset", "voc21", "--root", str(folder / r), "--out", str(folder / o), *m, *v]
        for r, o, v in (
            ("nope", "r.json", []),
            ("empty_dir", "r.json", []),
            ("nope", "empty_dir", []),
            ("nope", "r.json", ["--limit", "0"]),
            ("nope", "r.json", ["--engines", str(folder / "nope")]),
        )
    ]
    cases += [
        ["bench", "--suite", "nope"],
        ["bench", "--benchmarks-dir", str(folder / "nope")],
        ["bench", "--json", str(folder / "empty_dir"), "--benchmarks-dir", str(folder / "nope")],
    ]
    return cases


def test_command_line(tmp_path, capsys):
    from clipsam.cli import main

    cases = []
    for argv in _cli_cases(tmp_path):
        problem = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rc = main(argv)
        except SystemExit as e:  # argparse's own usage errors: one message, exit 2
            rc = e.code
        except BaseException as e:  # noqa: BLE001
            rc, problem = None, f"{type(e).__name__}: {str(e)[:300]}"
        err = capsys.readouterr().err
        if problem is None and (rc in (0, None) or "Traceback" in err):
            problem = f"exit {rc}, stderr: {err[-300:]}"
        cases.append((" ".join(argv[:3] + argv[-4:]), problem))
    _assert_all(cases)


def test_results(tmp_path):
    from clipsam import SegmentationResult

    labels = np.zeros((6, 8), np.int32)
    many = SegmentationResult(labels, np.zeros((6, 8), np.float32), tuple(f"c{i}" for i in range(300)))
    few = SegmentationResult(labels, np.zeros((6, 8), np.float32), ("cat",))
    (tmp_path / "taken").write_text("x")
    cases = [("label_image(300 classes)", _check(many.label_image))]
    for out, stem in (
        (tmp_path, ""),
        (tmp_path, 5),
        (tmp_path, "../escape"),
        (tmp_path / "taken", "a"),
        (tmp_path, "taken/a"),
        (5, "a"),
        (tmp_path, "sub/dir/a"),
    ):
        cases.append((f"save({out!r:.30}, {stem!r})", _check(lambda: few.save(out, stem))))
    for kw in (dict(alpha="x"), dict(alpha=2.0), dict(alpha=float("nan")), dict(max_memory_mb=-1)):
        cases.append((f"overlay({kw})", _check(lambda: few.overlay(**kw))))
    _assert_all(cases)
