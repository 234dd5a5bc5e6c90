"""CorrCLIP's SAM2 automatic masks (``clipsam.refine.automask``) against the ``sam2`` package's own
``SAM2AutomaticMaskGenerator`` (with CorrCLIP's settings, one crop, no post-processing) and its painting rule.

Random SAM2 weights give masks that no filter keeps (or that NMS collapses to one), so the filter, NMS and painting
logic is tested on PLANTED decoder outputs fed to both generators (sam2's predictor is patched to return them): one
predicted IoU exactly at the threshold (dropped: strict >), one stability exactly at the threshold (kept: >=), one
below, two masks whose boxes overlap with IoU > 0.7 (NMS keeps the higher score), two of equal area (stable sort),
masks overlapping each other (larger painted over smaller), single- and multi-mask outputs. The decoding itself
(coordinates, mask token, upsampling) is compared on a random hiera-t with the filters off.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clipsam.refine.automask import AutoMaskGenerator, AutoMaskSettings, point_grid

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2.utils.amg import build_point_grid  # noqa: E402

from clipsam.refine.sam2_backend import Sam2Refiner  # noqa: E402

H, W, SIDE = 40, 60, 4


@pytest.fixture(scope="module")
def refiner() -> Sam2Refiner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True)


def _planted(seed=0):
    """Decoder outputs for the 16 points of a 4 x 4 grid: logits (16, 4, H, W) (token 0, then the 3 multimask
    tokens) and IoUs (16, 4), with the cases of the module docstring in token 0 and random masks elsewhere."""
    rng = np.random.RandomState(seed)
    logits = np.full((SIDE * SIDE, 4, H, W), -3.0, np.float32)
    iou = (0.5 + 0.45 * rng.rand(SIDE * SIDE, 4)).astype(np.float32)
    for p in range(SIDE * SIDE):
        for t in range(4):
            y0, x0 = rng.randint(0, H - 12), rng.randint(0, W - 12)
            hh, ww = rng.randint(4, 25), rng.randint(4, 30)
            logits[p, t, y0 : y0 + hh, x0 : x0 + ww] = 3.0
    iou[0, 0] = np.float32(0.4)  # at the IoU threshold: dropped
    logits[1, 0] = -3.0  # stability exactly 0.4: 4 pixels > 1, 10 pixels > -1 -> kept
    logits[1, 0, 5, 5:9] = 2.0
    logits[1, 0, 6, 5:11] = 0.5
    logits[2, 0] = -3.0  # stability 0.3: dropped
    logits[2, 0, 30, 30:33] = 2.0
    logits[2, 0, 31, 30:37] = 0.5
    logits[3, 0] = logits[4, 0] = -3.0  # boxes with IoU 0.9: NMS keeps point 4 (higher score)
    logits[3, 0, 10:30, 10:30] = 3.0
    logits[4, 0, 10:30, 10:28] = 3.0
    iou[3, 0], iou[4, 0] = 0.6, 0.9
    logits[5, 0] = logits[6, 0] = -3.0  # equal areas, no overlap: painted in NMS order
    logits[5, 0, 0:5, 40:50] = 3.0
    logits[6, 0, 30:35, 45:55] = 3.0
    logits[7, 0] = -3.0  # a large mask over the others: painted last, over them
    logits[7, 0, 0:40, 20:50] = 3.0
    return logits, iou


class _PlantedRefiner:
    """Stands in for ``Sam2Refiner``: ``point_logits`` returns the planted outputs of the points asked for."""

    def __init__(self, logits, iou):
        self.logits, self.iou, self.seen, self.calls = logits, iou, 0, 0

    def embed_images(self, images):
        return [None for _ in images]

    def point_logits(self, embedding, points, multimask, chunk=16):
        idx = np.arange(self.seen, self.seen + len(points)) % len(self.logits)
        self.seen += len(points)
        self.calls += 1
        sel = slice(1, None) if multimask else slice(0, 1)
        lg = self.logits[idx, sel].reshape(-1, H, W)
        io = self.iou[idx, sel].reshape(-1)
        for s in range(0, len(lg), chunk):
            yield lg[s : s + chunk], io[s : s + chunk]


def _sam2_generator(model, logits, iou, multimask, **kw):
    """sam2's own generator with CorrCLIP's settings; its predictor returns the planted outputs (or, without them,
    runs the model)."""
    gen = SAM2AutomaticMaskGenerator(
        model,
        points_per_side=SIDE,
        pred_iou_thresh=kw.get("pred_iou_thresh", 0.4),
        stability_score_thresh=kw.get("stability_score_thresh", 0.4),
        multimask_output=multimask,
    )
    if logits is not None:
        pred = gen.predictor
        seen = [0]

        def _predict(coords, labels, multimask_output, return_logits):
            idx = np.arange(seen[0], seen[0] + len(coords)) % len(logits)
            seen[0] += len(coords)
            sel = slice(1, None) if multimask_output else slice(0, 1)
            m = torch.from_numpy(logits[idx, sel])
            return m, torch.from_numpy(iou[idx, sel]), m[..., :16, :16]

        pred.set_image = lambda image: None
        pred.reset_predictor = lambda: None
        pred._predict = _predict
    return gen


def _paint(anns, hw):
    """CorrCLIP's painting of sam2's annotations: stable sort by area, ids from 1, larger over smaller."""
    out = np.zeros(hw, np.int32)
    for i, ann in enumerate(sorted(anns, key=lambda a: a["area"]), start=1):
        out[ann["segmentation"]] = i
    return out


def test_point_grid_is_sam2s():
    for n in (1, 4, 8, 32):
        np.testing.assert_array_equal(point_grid(n), build_point_grid(n))


@pytest.mark.parametrize("multimask", [False, True])
def test_filters_nms_and_painting_match_sam2_on_planted_outputs(refiner, multimask):
    logits, iou = _planted()
    image = np.zeros((H, W, 3), np.uint8)
    anns = _sam2_generator(refiner.model, logits, iou, multimask).generate(image)
    want = _paint(anns, (H, W))
    fake = _PlantedRefiner(logits, iou)
    settings = AutoMaskSettings(points_per_side=SIDE, multimask=multimask)
    gen = AutoMaskGenerator(fake, settings)
    got, emb = gen.generate([image])[0]
    np.testing.assert_array_equal(got, want)
    masks, scores = gen.masks(None, (H, W))
    assert len(masks) == len(anns) and 3 < len(masks) < SIDE * SIDE * (3 if multimask else 1)  # filters kept some
    if not multimask:
        assert np.float32(0.4) not in scores  # predicted IoU at the threshold: dropped
        assert any(np.array_equal(m, logits[1, 0] > 0) for m in masks)  # stability at the threshold: kept
        assert not any(np.array_equal(m, logits[2, 0] > 0) for m in masks)  # stability below: dropped
        assert np.float32(0.9) in scores and np.float32(0.6) not in scores  # NMS
        assert (got[10:30, 10:28] > 0).all()
    # one decoder call per batch of points (16 points, batches of 64 -> 1); the per-point loop makes 16
    fake.calls = 0
    gen.masks(None, (H, W))
    assert fake.calls == 1
    fake.calls = 0
    per_point = gen.masks(None, (H, W), per_point=True)
    assert fake.calls == SIDE * SIDE
    np.testing.assert_array_equal(per_point[0], gen.masks(None, (H, W))[0])


def test_decoding_matches_sam2_on_a_random_model(refiner):
    """Filters off: sam2's generator (predictor and decoder, dynamic multimask off as CorrCLIP builds it) and
    ``Sam2Refiner.point_logits`` decode the same masks."""
    rng = np.random.RandomState(0)
    image = (rng.rand(48, 64, 3) * 255).astype(np.uint8)
    decoder = refiner.model.sam_mask_decoder
    flag = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False
    try:
        gen = _sam2_generator(refiner.model, None, None, False, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        gen.point_grids = [build_point_grid(2)]
        anns = gen.generate(image)
    finally:
        decoder.dynamic_multimask_via_stability = flag
    ours = AutoMaskGenerator(
        refiner, AutoMaskSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    )
    emb = refiner.embed_images([image])[0]
    masks, scores = ours.masks(emb, (48, 64))
    assert len(masks) == len(anns) >= 1
    want = sorted(anns, key=lambda a: -a["predicted_iou"])
    np.testing.assert_allclose(scores, [a["predicted_iou"] for a in want], atol=1e-5)
    for m, a in zip(masks, want):
        assert (m != a["segmentation"]).mean() < 1e-3
    # the same points one by one: the batched decoder call gives the same logits
    pts = point_grid(2) * np.array([64, 48])
    batched = np.concatenate([lg for lg, _ in refiner.point_logits(emb, pts, False)])
    single = np.concatenate([lg for p in pts for lg, _ in refiner.point_logits(emb, p[None], False)])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_no_mask_passes_the_filters():
    logits, iou = _planted()
    gen = AutoMaskGenerator(_PlantedRefiner(logits, iou * 0 + 0.3), AutoMaskSettings(points_per_side=SIDE))
    ids, _ = gen.generate([np.zeros((H, W, 3), np.uint8)])[0]
    assert ids.shape == (H, W) and (ids == 0).all()  # every pixel unsegmented, as upstream with no annotation
