"""numpy resampling on the host equals torch's CPU kernels to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.ops.resize import (
    interpolate_pos_embed,
    linspace_f32,
    neighbourhood_window,
    resize_bilinear,
    resize_bilinear_aa,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
SIZES = [((7, 9), (64, 80)), ((21, 28), (336, 448)), ((30, 40), (17, 23)), ((5, 5), (5, 5)), ((64, 48), (100, 33))]


@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear(src, dst, align_corners):
    x = np.random.default_rng(0).standard_normal((3, *src)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], dst, mode="bilinear", align_corners=align_corners)[0].numpy()
    np.testing.assert_allclose(resize_bilinear(x, dst, align_corners), ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("src,dst", SIZES + [((375, 500), (256, 256)), ((120, 90), (256, 256))])
def test_antialiased_bilinear(src, dst):
    x = np.random.default_rng(1).random((3, *src)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], dst, mode="bilinear", align_corners=False, antialias=True)[0]
    np.testing.assert_allclose(resize_bilinear_aa(x, dst), ref.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("grid", [(4, 5), (21, 28), (14, 14), (7, 28), (1, 1), (30, 12), (64, 64)])
def test_positional_embedding_resize(tiny_clip, grid):
    from clipsam.config import dense_config
    from clipsam.dense.encoder import DenseEncoder

    enc = DenseEncoder(tiny_clip.model.visual, dense_config())
    pos = tiny_clip.model.visual.positional_embedding.detach().numpy()
    ref = enc.pos_embed(*grid, torch.zeros(1)).detach().numpy()
    got = interpolate_pos_embed(pos, *grid)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    if grid[0] * grid[1] == 196:  # same token count: upstream uses the embedding as is (even for 7 x 28)
        assert got is pos


@pytest.mark.parametrize("grid", [(4, 5), (21, 28), (1, 3)])
def test_neighbourhood_window(grid):
    from clipsam.kernels.rcs_attention import neighbourhood_window as ref

    np.testing.assert_allclose(neighbourhood_window(*grid, 5.0), ref(*grid, 5.0).numpy(), atol=2e-7, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 9, 17])
def test_linspace_scalar_formula(steps):
    np.testing.assert_array_equal(linspace_f32(0.0, 1.0, steps), torch.linspace(0, 1, steps).numpy())


def test_resize_with_source_rows_checks_what_it_holds():
    """``src_rows``: x holds some rows of a taller input; asking for output rows that read others is an error."""
    from clipsam.ops.resize import resize_bilinear as resize

    x = np.random.default_rng(3).standard_normal((2, 40, 12)).astype(np.float32)
    full = resize(x, (100, 30))
    np.testing.assert_array_equal(resize(x[:, 10:25], (100, 30), rows=(30, 55), src_rows=(10, 40)), full[:, 30:55])
    with pytest.raises(ValueError, match="read input rows"):
        resize(x[:, 10:25], (100, 30), rows=(0, 55), src_rows=(10, 40))
    assert resize(x[:, 10:25], (100, 30), rows=(40, 40), src_rows=(10, 40)).shape == (2, 0, 30)  # no rows read
