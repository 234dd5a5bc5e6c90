"""Weights saved to disk and loaded back through the user path, in OpenAI and open_clip formats."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from clipsam.errors import CheckpointError, ConfigError
from clipsam.models import load_clip, read_state_dict
from clipsam.segmenter import Segmenter

from .conftest import TINY_VIT

LP_SUFFIXES = (
    "in_proj_weight",
    "in_proj_bias",
    "c_fc.weight",
    "c_fc.bias",
    "c_proj.weight",
    "c_proj.bias",
    "out_proj.weight",
    "out_proj.bias",
    "conv1.weight",
    "visual.proj",
    "text_projection",
)


def openai_state_dict(model) -> dict:
    """What openai/CLIP stores: Linear/Conv/in-proj/proj weights in fp16, plus three integer entries."""
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = v.half() if k.endswith(LP_SUFFIXES) else v.clone()
    sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return sd


def _logits(loaded, image):
    from clipsam.config import dense_config

    seg = Segmenter(loaded, dense_config("resclip", "voc21", templates="single", short_side=96))
    return seg.logits(image, classes=["cat", "grass", "sky"])


@pytest.fixture(scope="module")
def image(chelsea_small):
    return chelsea_small


def test_open_clip_format_round_trip(tmp_path, tiny_clip, image):
    plain = tmp_path / "plain.pt"
    torch.save(tiny_clip.model.state_dict(), plain)
    wrapped = tmp_path / "train_ckpt.pt"  # open_clip training checkpoint: {"epoch", "state_dict": {"module.*"}}
    torch.save(
        {"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in tiny_clip.model.state_dict().items()}},
        wrapped,
    )
    ref = _logits(tiny_clip, image)
    for path in (plain, wrapped):
        loaded = load_clip(TINY_VIT, path)
        assert loaded.weights_id.startswith("file:")
        np.testing.assert_array_equal(_logits(loaded, image), ref)


def test_openai_format_state_dict_and_torchscript(tmp_path, tiny_clip, image):
    sd = openai_state_dict(tiny_clip.model)
    path = tmp_path / "ViT-tiny-openai.pt"
    torch.save(sd, path)
    loaded = load_clip(TINY_VIT, path)
    assert loaded.quick_gelu
    # parity is defined on the weights as used: the fp16-rounded values
    expected = {k: v.float() for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    rounded = load_clip(TINY_VIT, None)
    rounded.model.load_state_dict(expected)
    np.testing.assert_array_equal(_logits(loaded, image), _logits(rounded, image))

    # the official files are TorchScript archives: read without unpickling Python objects
    scripted = torch.jit.trace_module(loaded.model, {"encode_text": torch.zeros(1, 77, dtype=torch.long)})
    jit_path = tmp_path / "ViT-tiny-openai-jit.pt"
    scripted.save(str(jit_path))
    from_jit = load_clip(TINY_VIT, jit_path)
    np.testing.assert_array_equal(_logits(from_jit, image), _logits(loaded, image))


def test_segmenter_from_pretrained_with_local_file(tmp_path, tiny_clip, image):
    path = tmp_path / "w.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    seg = Segmenter.from_pretrained(
        clip=TINY_VIT, clip_weights=str(path), method="naclip", preset="voc21", templates="single", short_side=64
    )
    res = seg.segment(image)
    assert res.labels.shape == image.shape[:2] and len(res.classes) == 21


def test_mismatched_checkpoint_names_expected_and_found(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = load_clip("ViT-B-16", None).model
    path = tmp_path / "vitb16.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_clip(TINY_VIT, path)
    msg = str(err.value)
    assert "does not match architecture 'clipsam-test-vit'" in msg
    assert "visual.proj: expected shape (128, 64), found (768, 512)" in msg
    assert "vision width 768" in msg and "Fix:" in msg


def test_missing_keys_are_reported(tmp_path, tiny_clip):
    sd = dict(tiny_clip.model.state_dict())
    del sd["visual.proj"]
    path = tmp_path / "partial.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): visual.proj"):
        load_clip(TINY_VIT, path)


def test_safetensors_file_loads_like_the_pt_file(tmp_path, tiny_clip, image):
    """A .safetensors file (the format open_clip's Hugging Face repositories ship) is read without torch.load."""
    from safetensors.torch import save_file

    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(path))
    loaded = load_clip(TINY_VIT, path)
    assert loaded.weights_id.startswith("file:")
    np.testing.assert_array_equal(_logits(loaded, image), _logits(tiny_clip, image))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.safetensors.*corrupt or truncated safetensors"):
        load_clip(TINY_VIT, truncated)


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("config.json", b'{"embed_dim": 512}', r"starts with b'\{\"embed_dim\"' \(text, e\.g\. JSON"),
        ("weights.pt", b"\x89PNG\r\n\x1a\n" + bytes(40), r"starts with b'\\x89PNG"),
        (
            "model.bin",
            b"\x08\x07\x12\x07pytorch",
            r"starts with b'\\x08\\x07\\x12\\x07pytorch'\. Pass",
        ),  # an ONNX graph's first bytes
        ("random.key", bytes(range(128, 160)), r"starts with b'\\x80\\x81"),  # 0x80 alone is no pickle
    ],
)
def test_a_file_of_another_kind_says_so(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{name} is not a weights file.*{says}") as info:
        load_clip(TINY_VIT, path)
    assert "pickled" not in str(info.value)


def test_corrupt_missing_and_unknown(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 garbage that is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_clip(TINY_VIT, bad)
    notdict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), notdict)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_clip(TINY_VIT, notdict)
    with pytest.raises(CheckpointError, match="not found"):
        load_clip(TINY_VIT, tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="neither a file nor an open_clip pretrained tag"):
        load_clip(TINY_VIT, "no_such_tag")
    with pytest.raises(ConfigError, match="unknown CLIP architecture"):
        load_clip("ViT-Q-99", None)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        read_state_dict(path)


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        load_clip(TINY_VIT, None)


# -- hardening (issue 14) ----------------------------------------------------------------------------------------
def test_zero_byte_and_folder_checkpoints(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is empty \(0 bytes\)"):
        load_clip(TINY_VIT, empty)
    folder = tmp_path / "ViT-B-16"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"ViT-B-16 is a folder, not a file.*open_clip_model.safetensors"):
        load_clip(TINY_VIT, folder)


def test_refused_pickle_says_why_and_how_to_convert(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError) as err:
        load_clip(TINY_VIT, path)
    msg = str(err.value)
    assert "refused" in msg and "pickled Python objects" in msg and "print" in msg and "convert" in msg
    assert "Re-running" not in msg and "weights_only set to False" not in msg
    assert "pwned" not in capsys.readouterr().out


def test_weights_and_architecture_arguments_of_the_wrong_kind():
    from clipsam.errors import InvalidTypeError

    with pytest.raises(CheckpointError, match="'https://example.com/ViT-B-16.pt' is a URL; clipsam does not fetch"):
        load_clip(TINY_VIT, "https://example.com/ViT-B-16.pt")
    with pytest.raises(InvalidTypeError, match="clip_weights must be"):
        load_clip(TINY_VIT, 5)
    with pytest.raises(InvalidTypeError, match="clip must be"):
        load_clip(5, None)


@pytest.fixture(scope="module")
def gelu_arch(tmp_path_factory):
    """The tiny test architecture with GELU as its own activation, as ViT-B-16's open_clip config has."""
    import json
    from pathlib import Path

    cfg = json.loads(Path(TINY_VIT).read_text())
    cfg["quick_gelu"] = False
    path = tmp_path_factory.mktemp("arch") / "clipsam-test-vit-gelu.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _activation(loaded) -> str:
    return type(loaded.model.visual.transformer.resblocks[0].mlp.gelu).__name__


def test_openai_state_dict_saved_in_fp32_without_integer_entries(tmp_path, tiny_clip, gelu_arch, image):
    """OpenAI's weights re-saved as fp32 without input_resolution/context_length/vocab_size: still QuickGELU."""
    sd = {
        k: v.float()
        for k, v in openai_state_dict(tiny_clip.model).items()
        if k not in ("input_resolution", "context_length", "vocab_size")
    }
    path = tmp_path / "openai-fp32.pt"
    torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # detected from the values: no ambiguity warning
        loaded = load_clip(gelu_arch, path)
    assert loaded.quick_gelu and _activation(loaded) == "QuickGELU"
    reference = load_clip(TINY_VIT, path)  # the QuickGELU architecture with the same weights
    np.testing.assert_array_equal(_logits(loaded, image), _logits(reference, image))


def test_ambiguous_checkpoint_warns_naming_the_choice_and_quick_gelu_can_be_stated(tmp_path, tiny_clip, gelu_arch):
    path = tmp_path / "plain-fp32.pt"
    torch.save(tiny_clip.model.state_dict(), path)  # random fp32 weights: nothing says whose they are
    with pytest.warns(UserWarning, match=r"does not show whether.*GELU.*quick_gelu=True \(CLI: --quick-gelu\)"):
        loaded = load_clip(gelu_arch, path)
    assert not loaded.quick_gelu and _activation(loaded) == "GELU"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _activation(load_clip(gelu_arch, path, quick_gelu=True)) == "QuickGELU"
        assert _activation(load_clip(gelu_arch, path, quick_gelu=False)) == "GELU"
        stated = load_clip(TINY_VIT, path, quick_gelu=False)  # an explicit False wins over the config's QuickGELU
    assert not stated.quick_gelu and _activation(stated) == "GELU"
    seg = Segmenter.from_pretrained(
        clip=gelu_arch,
        clip_weights=str(path),
        quick_gelu=True,
        templates="single",
        short_side=48,
        preset=None,
        method="clip",
    )
    assert seg.quick_gelu and seg.segment(np.zeros((32, 32, 3), np.uint8), classes="cat").info["quick_gelu"] is True


def test_cli_quick_gelu_flag(tmp_path, tiny_clip, capsys):
    import json

    from PIL import Image

    from clipsam.cli import main

    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "a.png")
    args = [
        "segment",
        str(tmp_path / "a.png"),
        "--classes",
        "cat, dog",
        "--out",
        str(tmp_path / "o"),
        "--clip",
        TINY_VIT,
        "--random-weights",
        "--templates",
        "single",
        "--method",
        "clip",
        "--no-progress",
    ]
    assert main(args + ["--no-quick-gelu"]) == 0
    assert json.loads((tmp_path / "o" / "a.json").read_text())["quick_gelu"] is False
    assert main(args + ["--quick-gelu"]) == 0
    assert json.loads((tmp_path / "o" / "a.json").read_text())["quick_gelu"] is True


def test_offline_pretrained_tag_fails_fast_naming_the_alternatives(monkeypatch):
    """No network (simulated: every connection fails) and nothing cached: an error in seconds, not minutes of retries."""
    import socket
    import time

    import huggingface_hub
    import open_clip

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    calls = []

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    def download(*args, **kwargs):  # what open_clip does offline: ~47 s of retries, then an error
        calls.append(args)
        raise FileNotFoundError("Failed to download file")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(open_clip, "download_pretrained", download)
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match=r"'openai' weights for 'ViT-B-16': huggingface.co cannot be reached.*"
        r"--weights PATH.*--random-weights",
    ):
        load_clip("ViT-B-16", "openai")
    assert not calls and time.perf_counter() - t0 < 5
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        load_clip("ViT-B-16", "openai")
