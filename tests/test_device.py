"""Device names are checked before anything loads (issue 14): 'tpu' or 'cuda:x' is a ConfigError, not a traceback."""

from __future__ import annotations

import pytest

from clipsam.device import parse_device
from clipsam.errors import BackendUnavailableError, ClipSamError, ConfigError

from .conftest import TINY_VIT


def test_parse_device_forms():
    assert parse_device("cpu") == ("cpu", None) and parse_device(None) == ("cpu", None)
    assert parse_device("cuda") == ("cuda", None) and parse_device(" CUDA:1 ") == ("cuda", 1)
    assert parse_device(2) == ("cuda", 2)
    import torch

    assert parse_device(torch.device("cuda", 3)) == ("cuda", 3)
    for bad in ("tpu", "cuda:x", "cuda:-1", "mps", "", "gpu", 1.5, [0], -1, True):
        with pytest.raises(ConfigError, match="unsupported device"):
            parse_device(bad)
    with pytest.raises(ConfigError, match="must be a whole number"):
        parse_device("cuda:x")


@pytest.mark.parametrize(
    "device,error", [("tpu", ConfigError), ("cuda:x", ConfigError), ("cuda:0", BackendUnavailableError)]
)
def test_segmenter_refuses_bad_devices_before_loading_weights(monkeypatch, device, error):
    import clipsam.models
    from clipsam import Segmenter

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the device was checked")

    monkeypatch.setattr(clipsam.models, "load_clip", no_loading)
    with pytest.raises(error):
        Segmenter.from_pretrained(clip=TINY_VIT, clip_weights=None, device=device)
    for kw in (dict(max_batch="4"), dict(max_memory_mb="lots"), dict(text_cache_size=0), dict(precision="int8")):
        with pytest.raises(ConfigError):
            Segmenter.from_pretrained(clip=TINY_VIT, clip_weights=None, **kw)


def test_engines_and_sam2_refuse_bad_devices(tmp_path):
    from clipsam.engine.segmenter import EngineSegmenter

    for device in ("tpu", "cuda:x"):
        with pytest.raises(ConfigError, match="unsupported device"):
            EngineSegmenter.from_engines(tmp_path, device=device)
    pytest.importorskip("sam2")
    from clipsam.refine import Sam2Refiner

    with pytest.raises(ConfigError, match="unsupported device 'tpu'"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True, device="tpu")


@pytest.mark.parametrize("command", ["segment", "batch"])
@pytest.mark.parametrize("device", ["tpu", "cuda:x"])
def test_cli_bad_device_is_one_message(tmp_path, capsys, command, device):
    import numpy as np
    from PIL import Image

    from clipsam.cli import main

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert (
        main(
            [
                command,
                str(tmp_path / "a.png"),
                "--classes",
                "cat",
                "--out",
                str(tmp_path / "o"),
                "--clip",
                TINY_VIT,
                "--random-weights",
                "--device",
                device,
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"unsupported --device {device!r}" in err or f"unsupported device {device!r}" in err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert issubclass(ConfigError, ClipSamError)
