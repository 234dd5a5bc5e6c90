"""PyTorch SAM2.1 backend end to end on CPU, random hiera-t weights (the encoder always runs at 1024²)."""

from __future__ import annotations

import sys
import warnings

import cv2
import numpy as np
import pytest

from clipsam.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    InvalidImageError,
    InvalidInputError,
    MissingDependencyError,
)
from clipsam.refine import MergeResult, RefineConfig, extract_prompts, merge_masks

from ..utils import dense_from_gt

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
from clipsam.refine.sam2_backend import Sam2Refiner  # noqa: E402

# The decoder costs ~0.3 s per prompt on 2 CPU cores: keep P small.
CFG = RefineConfig(stuff_classes=(0,), min_mask_score=0.0, negative_points=True, max_prompts_per_image=6)


@pytest.fixture(scope="session")
def refiner() -> Sam2Refiner:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True)
    loud = [w for w in caught if "RANDOM weights" in str(w.message)]
    assert len(loud) == 1 and issubclass(loud[0].category, UserWarning)
    return ref


@pytest.fixture(scope="session")
def scene(voc) -> dict:
    """Two small images (the VOC photo at 200x150 and a mirrored 160x120 crop) with dense maps from GT."""
    rgb = cv2.resize(voc["rgb"], (200, 150), interpolation=cv2.INTER_AREA)
    gt = cv2.resize(voc["gt"], (200, 150), interpolation=cv2.INTER_NEAREST)
    rgb2 = np.ascontiguousarray(rgb[20:140, 30:190][:, ::-1])
    gt2 = np.ascontiguousarray(gt[20:140, 30:190][:, ::-1])
    probs = [dense_from_gt(gt), dense_from_gt(gt2, seed=1)]
    return {"images": [rgb, rgb2], "labels": [gt, gt2], "probs": probs}


@pytest.fixture(scope="session")
def refined(refiner, scene) -> tuple[list[MergeResult], int]:
    before = refiner.decoder_calls
    results = refiner.refine(scene["images"], scene["labels"], scene["probs"], CFG)
    return results, refiner.decoder_calls - before


@pytest.fixture(scope="session")
def loaded(refiner, tmp_path_factory) -> Sam2Refiner:
    """A second refiner, built from a checkpoint of the first saved with torch.save({"model": ...})."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": refiner.model.state_dict()}, path)
    return Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=path)


@pytest.fixture(scope="session")
def embeddings(loaded, scene):
    """A second, independent encoder run over the same images (by the checkpoint-loaded refiner)."""
    return loaded.embed_images(scene["images"])


def _save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.slow
def test_refine_shapes_and_one_decoder_call_per_image(refined, scene):
    results, calls = refined
    assert calls == 2 and len(results) == 2
    for res, lab in zip(results, scene["labels"]):
        assert res.labels.shape == lab.shape and res.covered.shape == lab.shape
        assert np.array_equal(res.labels[~res.covered], lab[~res.covered])
        assert len(res.instances) > 0
        for inst in res.instances:
            assert inst.mask.shape == lab.shape and inst.mask.dtype == bool and inst.class_id != 0


@pytest.mark.slow
def test_embeddings_and_predict(refiner, embeddings, scene):
    assert len(embeddings) == 2
    emb = embeddings[1]
    assert tuple(emb.image_embed.shape) == (1, 256, 64, 64) and emb.image_size == (120, 160)
    assert [tuple(f.shape) for f in emb.high_res_feats] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    cfg = RefineConfig(stuff_classes=(0,), use_boxes=True, max_prompts_per_image=3)
    ps = extract_prompts(scene["labels"][1], scene["probs"][1], cfg)
    assert len(ps) == 3 and ps.boxes is not None
    before = refiner.decoder_calls
    for multimask in (True, False):
        masks, scores = refiner.predict(emb, ps, multimask=multimask)
        assert masks.shape == (len(ps), 120, 160) and masks.dtype == bool
        assert scores.shape == (len(ps),) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert refiner.decoder_calls - before == 2  # one batched call per predict, whatever P is
    empty = extract_prompts(np.full((120, 160), -1), scene["probs"][1])
    masks, scores = refiner.predict(emb, empty)
    assert masks.shape == (0, 120, 160) and refiner.decoder_calls - before == 2


@pytest.mark.slow
def test_checkpoint_round_trip_and_determinism(refiner, loaded, refined, embeddings, scene):
    """Same weights (saved, reloaded through from_pretrained) + same inputs -> bit-identical masks.

    ``refined`` ran the first refiner's refine(); ``embeddings`` is a second encoder run by the reloaded
    refiner. Decoding and merging those again must reproduce every label and instance exactly.
    """
    for k, v in refiner.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    for i, res in enumerate(refined[0]):
        ps = extract_prompts(scene["labels"][i], scene["probs"][i], CFG)
        masks, scores = loaded.predict(embeddings[i], ps, CFG.multimask)
        res2 = merge_masks(scene["labels"][i], scene["probs"][i], ps, masks, scores, CFG)
        assert np.array_equal(res.labels, res2.labels)
        assert [(a.class_id, a.score, a.prompt_indices) for a in res.instances] == [
            (b.class_id, b.score, b.prompt_indices) for b in res2.instances
        ]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(res.instances, res2.instances))
    ps = extract_prompts(scene["labels"][0], scene["probs"][0], CFG)
    a, b = refiner.predict(embeddings[0], ps), refiner.predict(embeddings[0], ps)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.slow
def test_mismatched_checkpoints_raise(refiner, tmp_path):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        small = Sam2Refiner.from_pretrained("sam2.1_hiera_s", random_weights=True).model.state_dict()
    path = _save(tmp_path, "small.pt", {"model": small})
    with pytest.raises(CheckpointError, match=r"sam2\.1_hiera_s.*weights=") as err:
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=path)
    assert "unexpected keys" in str(err.value) and "configs/sam2.1/sam2.1_hiera_t.yaml" in str(err.value)

    sd = dict(refiner.model.state_dict())
    sd["renamed.weight"] = sd.pop("sam_mask_decoder.iou_token.weight")
    with pytest.raises(CheckpointError, match=r"1 missing keys.*iou_token.*1 unexpected keys.*renamed"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=_save(tmp_path, "renamed.pt", {"model": sd}))

    sd = dict(refiner.model.state_dict())
    sd["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    shape_msg = r"shape mismatches.*iou_token.weight: expected \(1, 256\), found \(1, 128\)"
    with pytest.raises(CheckpointError, match=shape_msg):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=_save(tmp_path, "shape.pt", {"model": sd}))


def test_corrupt_missing_and_empty_checkpoints_raise(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    for path in (corrupt, tmp_path / "absent.pt", _save(tmp_path, "empty.pt", {"model": {}})):
        with pytest.raises(CheckpointError, match=str(path.name)):
            Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=path)


def test_bad_arguments_and_lazy_export(tmp_path):
    import clipsam.refine

    assert clipsam.refine.Sam2Refiner is Sam2Refiner
    with pytest.raises(ConfigError, match="sam2.1_hiera_t"):
        Sam2Refiner.from_pretrained("sam2_hiera_tiny", random_weights=True)
    with pytest.raises(ConfigError):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=tmp_path / "x.pt", random_weights=True)


@pytest.mark.slow
def test_invalid_images_and_preprocessing_parity(refiner):
    with pytest.raises(InvalidImageError):
        refiner.embed_images([np.zeros((10, 10), np.uint8)])
    with pytest.raises(InvalidImageError):
        refiner.embed_images([np.zeros((10, 10, 3), np.float32)])
    from sam2.utils.transforms import SAM2Transforms

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((150, 200, 3), (1100, 700, 3))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script deprecation inside sam2
        ref = SAM2Transforms(resolution=1024, mask_threshold=0.0).forward_batch(images)
    assert torch.equal(refiner.preprocess(images), ref)


@pytest.mark.slow
def test_refine_without_prompts_skips_sam2_and_validates(refiner, scene):
    before = refiner.decoder_calls
    void = np.full(scene["labels"][0].shape, -1, np.int64)
    (res,) = refiner.refine(scene["images"][:1], [void], scene["probs"][:1], CFG)
    assert refiner.decoder_calls == before and res.instances == [] and np.array_equal(res.labels, void)
    with pytest.raises(InvalidInputError):
        refiner.refine(scene["images"], scene["labels"][:1], scene["probs"], CFG)
    with pytest.raises(InvalidInputError):
        refiner.refine(scene["images"][:1], scene["labels"][1:], scene["probs"][1:], CFG)
    with pytest.raises(InvalidInputError):
        refiner.embed_images(scene["images"], batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is missing")
def test_cuda_device_without_cuda_raises():
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", device="cuda", random_weights=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(refined, scene):
    """The same (seeded random) weights on CUDA: one decode per image, labels as on CPU up to float noise."""
    with pytest.warns(UserWarning, match="RANDOM weights"):
        ref_cuda = Sam2Refiner.from_pretrained("sam2.1_hiera_t", device="cuda", random_weights=True)
    assert ref_cuda.device.type == "cuda"
    results = ref_cuda.refine(scene["images"], scene["labels"], scene["probs"], CFG)
    assert ref_cuda.decoder_calls == 2
    for cpu, gpu in zip(refined[0], results):
        assert gpu.labels.shape == cpu.labels.shape and (gpu.labels == cpu.labels).mean() > 0.98
        assert [i.class_id for i in gpu.instances] and all(i.mask.dtype == bool for i in gpu.instances)


def test_missing_sam2_raises_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # makes `from sam2.build_sam import ...` fail
    with pytest.raises(MissingDependencyError, match=r"clipsam\[sam2\]"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True)


def test_sam2_checkpoint_with_pickled_code_zero_bytes_or_a_folder(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(CheckpointError, match=r"refused: besides tensors it contains pickled Python objects") as err:
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=_save(tmp_path, "evil.pt", {"model": Evil()}))
    assert "Re-running" not in str(err.value)
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"zero.pt is empty \(0 bytes\)"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=tmp_path / "zero.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        Sam2Refiner.from_pretrained("sam2.1_hiera_t", weights=tmp_path)
