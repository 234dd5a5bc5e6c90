"""Region masks of CorrCLIP (``clipsam.masks``): painting, renumbering, PyTorch's nearest resize, the mask vote."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.masks import compact_ids, instance_map, mask_vote, paint_masks, resize_nearest


def test_paint_masks_larger_over_smaller_and_stable_on_equal_areas():
    m = np.zeros((4, 6, 6), bool)
    m[0, :3, :3] = True  # area 9
    m[1, 1:5, 1:5] = True  # area 16, overlaps mask 0
    m[2, 4:6, 4:6] = True  # area 4
    m[3, 0:2, 4:6] = True  # area 4 (equal: keeps its order after mask 2)
    out = paint_masks(m)
    assert out[0, 0] == 3 and out[2, 2] == 4 and out[5, 5] == 1 and out[0, 5] == 2  # ids by ascending area
    assert out[1, 1] == 4  # the larger mask painted over the smaller one
    assert (paint_masks(np.zeros((0, 6, 6), bool)) == 0).all()  # no mask (none passed the filters)
    desc = paint_masks(m, "descending_area")
    assert desc[1, 1] == 2 and desc[0, 0] == 2  # the smaller one wins


def test_compact_ids_keep_order_and_zero():
    ids = np.array([[0, 50, 7], [7, 3, 50]])
    np.testing.assert_array_equal(compact_ids(ids), [[0, 3, 2], [2, 1, 3]])
    np.testing.assert_array_equal(compact_ids(ids + 4), [[1, 4, 3], [3, 2, 4]])  # no 0: the smallest becomes 1


@pytest.mark.parametrize(
    "src,dst", [((37, 53), (64, 90)), ((40, 60), (80, 120)), ((90, 70), (33, 41)), ((5, 5), (5, 5))]
)
def test_resize_nearest_is_pytorchs(src, dst):
    ids = np.random.RandomState(0).randint(0, 9, src)
    ref = F.interpolate(torch.from_numpy(ids)[None, None].float(), size=dst, mode="nearest")[0, 0].long().numpy()
    np.testing.assert_array_equal(resize_nearest(ids, dst), ref)


def test_mask_vote_is_torch_mode_per_region():
    rng = np.random.RandomState(0)
    ids = rng.randint(0, 5, (30, 40))
    labels = rng.randint(0, 4, (30, 40)).astype(np.int32)
    labels[ids == 2] = np.where(rng.rand((ids == 2).sum()) < 0.5, 1, 3)  # likely a tie between 1 and 3 somewhere
    ref = torch.from_numpy(labels.astype(np.int64)).clone()
    for v in np.unique(ids)[1:]:
        sel = torch.from_numpy(ids == v)
        ref[sel] = torch.mode(ref[sel]).values
    np.testing.assert_array_equal(mask_vote(labels, ids, 4), ref.numpy())
    tie = np.array([[1, 3, 1, 3]], np.int32)
    assert (mask_vote(tie, np.array([[1, 1, 1, 1]]), 4, "zero") == 1).all()  # ties: the smallest label
    # "smallest": the smallest id present keeps its labels even when it is not 0
    assert (mask_vote(tie, np.array([[4, 4, 4, 4]]), 4) == tie).all()


def test_instance_map_forms():
    hw = (6, 8)
    m = np.zeros((2, *hw), bool)
    m[0, :3] = True
    m[1, :, :2] = True
    a = instance_map(m, hw)
    b = instance_map([m[0], m[1]], hw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(instance_map(a * 10 + 5, hw), compact_ids(a * 10 + 5))
    assert instance_map(np.zeros(hw, np.uint8), hw).max() == 0
