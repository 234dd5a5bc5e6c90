"""CorrCLIP's DINO ViT-B/8 (``clipsam.dense.dino``): the real architecture (timm ``vit_base_patch8_224.dino``, random
weights), its checkpoint loading (DINO's own key format, weights_only), and its features against the upstream-shaped
reference of ``test_corrclip.py`` (DINO's own positional-embedding resize, a hook on the last qkv)."""

from __future__ import annotations

import warnings

import pytest
import torch

from clipsam.dense.dino import dino_qk_features, load_dino
from clipsam.errors import CheckpointError

from .test_corrclip import ref_dino


class _Pickled:
    """A pickled Python object in a checkpoint (weights_only loading refuses it)."""


@pytest.fixture(scope="module")
def vitb8():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_dino(None)
    assert any("RANDOM weights" in str(w.message) for w in caught)
    return model


def test_architecture_is_dino_vitb8(vitb8):
    sd = vitb8.state_dict()
    assert tuple(sd["pos_embed"].shape) == (1, 785, 768) and tuple(sd["patch_embed.proj.weight"].shape)[-1] == 8
    assert len(vitb8.blocks) == 12 and vitb8.blocks[0].attn.num_heads == 12
    assert not any(b.attn.fused_attn for b in vitb8.blocks)  # explicit softmax, as DINO computes it


@pytest.mark.parametrize("hw", [(56, 56), (56, 112), (224, 224)])  # resized square / non-square / native grid
def test_features_match_the_reference(vitb8, hw):
    crops = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        ours, grid = dino_qk_features(vitb8, crops)
        for i in range(2):
            torch.testing.assert_close(ours[i], ref_dino(vitb8, crops[i : i + 1]), atol=1e-5, rtol=0)
    assert grid == (hw[0] // 8, hw[1] // 8)


def test_checkpoint_formats_and_errors(vitb8, tmp_path):
    sd = vitb8.state_dict()
    dino_format = {"teacher": {f"backbone.{k}": v for k, v in sd.items()}, "epoch": 100}
    dino_format["teacher"]["head.mlp.0.weight"] = torch.zeros(2, 2)  # DINO's projection head: ignored
    path = tmp_path / "dino_vitbase8_pretrain.pth"
    torch.save(dino_format, path)
    loaded = load_dino(path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    wrong = dict(sd)
    wrong["pos_embed"] = torch.zeros(1, 197, 768)  # a ViT-B/16
    torch.save(wrong, tmp_path / "b16.pth")
    with pytest.raises(CheckpointError, match="does not match ViT-B/8"):
        load_dino(tmp_path / "b16.pth")
    with pytest.raises(CheckpointError):
        load_dino(tmp_path / "missing.pth")
    torch.save({"x": _Pickled()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError):
        load_dino(tmp_path / "pickled.pth")  # weights_only=True refuses pickled objects
