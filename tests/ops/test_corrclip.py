"""CorrCLIP's numpy region steps (``clipsam.ops.corrclip``, the engines' host side) against the PyTorch encoder's
(``clipsam.dense.corrclip``) on fresh random inputs built so that every branch runs: clustered region features (some
regions merge, some not), both distances and unsegmented rules, maps with and without id 0, padding, a single
region; and DINO's positional-embedding rule on the host (``interpolate_pos_embed(native="grid")``)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.ops import corrclip as oc
from clipsam.ops.resize import interpolate_pos_embed

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _features(rng, fh, fw, ids, d=16):
    """Unit features whose regions cluster: ids 1 and 2 share a centre, so do 3 and 4; the others have their own."""
    centres = {v: rng.randn(d) for v in np.unique(ids)}
    for a, b in ((1, 2), (3, 4)):
        if a in centres and b in centres:
            centres[b] = centres[a] + 0.05 * rng.randn(d)
    x = np.stack([centres[v] for v in ids.ravel()]) + 0.3 * rng.randn(fh * fw, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ids(rng, fh, fw, zero=True):
    ids = rng.randint(1, 6, size=(fh, fw))
    if zero:
        ids[: fh // 3] = 0
    ids[:, -1] = oc.PAD_ID
    return ids.astype(np.int64)


@pytest.mark.parametrize("distance", ["max_minus", "one_minus"])
@pytest.mark.parametrize("rule", ["smallest", "zero"])
@pytest.mark.parametrize("zero", [True, False])
def test_merge_and_scope_equal_the_encoders(distance, rule, zero):
    from clipsam.dense import corrclip as dc

    rng = np.random.RandomState(len(distance) + 10 * len(rule) + 100 * zero)
    merged_some = False
    for _ in range(4):
        ids = _ids(rng, 7, 9, zero)
        feats = _features(rng, 7, 9, ids)
        flat = ids.ravel()
        for eps in (0.0, 0.05, 0.3, 2.0):
            got = oc.merge_regions(flat, feats, eps, distance, rule)
            want = dc.merge_regions(torch.from_numpy(flat), torch.from_numpy(feats), eps, distance, rule)
            np.testing.assert_array_equal(got, want.numpy())
            n_in, n_out = len(np.unique(flat)), len(np.unique(got))
            merged_some |= 2 < n_out < n_in
            sim = feats @ feats.T
            a = oc.scope_attention(sim, got, 4.0, rule)
            b = dc.scope_attention(torch.from_numpy(sim), torch.from_numpy(got), 4.0, rule)
            np.testing.assert_allclose(a, b.numpy(), atol=1e-6, rtol=0)
            assert a.dtype == np.float32 and np.isfinite(a).all()
    assert merged_some  # some regions merged and some did not


def test_two_regions_or_fewer_never_merge():
    feats = np.eye(4, dtype=np.float32)
    ids = np.array([0, 0, 3, 3])
    assert oc.merge_regions(ids, feats, 5.0, "max_minus", "smallest") is ids


def test_components_label_in_order_of_first_member():
    close = np.eye(5, dtype=bool)
    close[0, 3] = close[3, 0] = close[3, 4] = close[4, 3] = True
    assert oc.components(close) == [0, 1, 2, 0, 0]


def test_window_regions_equal_the_encoders_window_steps():
    """Regions at both grids, the mask class tokens' masks and every cell's token, as ``CorrClipEncoder.window``."""
    from clipsam.dense import corrclip as dc

    corr = dense_config("corrclip", "voc21", corr_merge_eps=0.3).corrclip
    rng = np.random.RandomState(3)
    h, w = 112, 168  # DINO grid 14 x 21, CLIP grid 7 x 10 (not half: nearest sampling of a 168-pixel window)
    regions = np.zeros((h, w), np.float32)
    regions[:40, :60], regions[60:, 90:], regions[20:50, 100:] = 1, 2, 3
    regions[:, -10:] = -1
    ids = oc.region_ids(regions)
    assert ids[0, -1] == oc.PAD_ID and ids[0, 0] == 1
    dgrid, grid = (h // 8, w // 8), (h // 16, w // 16)
    feats = _features(rng, *dgrid, oc.resize_nearest(ids, dgrid))
    a, allow, index = oc.window_regions(feats, ids, dgrid, grid, corr)
    r = dc.merge_regions(
        dc.nearest(torch.from_numpy(ids), dgrid).flatten(), torch.from_numpy(feats), 0.3, "max_minus", "smallest"
    )
    rt = dc.nearest(r.view(*dgrid), grid).flatten()
    tids = torch.unique(rt)
    want_allow = torch.cat([torch.ones(len(tids), 1, dtype=torch.bool), rt[None] == tids[:, None]], 1)
    want_index = torch.searchsorted(tids, dc.nearest(rt.view(*grid), dgrid).flatten())
    np.testing.assert_array_equal(allow, want_allow.numpy())
    np.testing.assert_array_equal(index, want_index.numpy())
    assert allow.shape == (len(tids), 1 + grid[0] * grid[1]) and len(tids) >= 3
    batch = oc.window_inputs(np.stack([feats, feats]), np.stack([regions, np.zeros_like(regions)]), dgrid, grid, corr)
    assert batch["mct_allow"].shape == (2, len(tids), allow.shape[1])
    pad_rows = batch["mct_allow"][1, 1:]  # the second window has one region: its other rows are padding
    assert pad_rows[:, 0].all() and (pad_rows.sum(1) == 1).all()  # padding rows see CLS only
    assert batch["mct_allow"][1, 0].all()
    np.testing.assert_array_equal(batch["mct_index"][1], 0)  # no regions: one token for every cell


@pytest.mark.parametrize("grid", [(28, 28), (14, 56), (14, 21), (7, 7)])
def test_dino_positional_embedding_on_the_host(grid):
    """DINO's rule keeps the native embedding only for the native square grid (14 x 56 has its token count but is
    resized), unlike CLIP's token-count rule."""
    from timm.models.vision_transformer import VisionTransformer

    from clipsam.dense.dino import dino_qk_features

    torch.manual_seed(0)
    dino = VisionTransformer(img_size=224, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    for block in dino.blocks:
        block.attn.fused_attn = False
    pos = dino.pos_embed[0].detach().numpy()
    host = interpolate_pos_embed(pos, *grid, native="grid")
    assert (host is pos) == (grid == (28, 28))
    crops = torch.randn(1, 3, grid[0] * 8, grid[1] * 8)
    with torch.inference_mode():
        want, _ = dino_qk_features(dino, crops)
        got, _ = dino_qk_features(dino, crops, torch.from_numpy(host))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
