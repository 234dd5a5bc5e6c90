"""SAM2 refinement on ONNX Runtime: the same refinement as ``clipsam.refine.Sam2Refiner``, without torch.

``OrtSam2Refiner`` implements ``Refiner``'s two backend methods, ``embed_images`` and ``predict``, with the exported
graphs and numpy; ``refine`` (prompt extraction, one encoder pass over every image with prompts, one decoder call
per image, merging) is ``clipsam.refine.refiner.Refiner.refine``, shared with the PyTorch backend.

Mirrored from ``Sam2Refiner``:

* preprocessing: RGB uint8 -> float / 255 -> antialiased bilinear squash to S x S -> ImageNet mean/std
  (``host_ops.resize_bilinear_aa``, the arithmetic of torch's ``antialias=True`` kernel);
* prompts: pixel (x, y) scaled by (S / W, S / H); boxes first, as corner points labelled 2 and 3;
* mask choice: multimask -> the best predicted IoU among tokens 1-3; single mask -> token 0, or SAM2's dynamic
  stability fallback when the model was built with it (``_dynamic_multimask_via_stability``, ported below);
* masks: the chosen 4E x 4E logits bilinearly upsampled to the image (align_corners=False), > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidImageError, InvalidInputError
from ..ops.resize import resize_bilinear, resize_bilinear_aa
from ..refine.prompts import PromptSet
from ..refine.refiner import Refiner


@dataclass(frozen=True, eq=False)
class OrtSam2Embedding:
    """SAM2 features of one image (numpy, or device OrtValues under IO binding).

    Attributes:
        image_embed: (1, 256, E, E).
        high_res_feats: ((1, 32, 4E, 4E), (1, 64, 2E, 2E)).
        image_size: (H, W) of the original image.
    """

    image_embed: object
    high_res_feats: tuple
    image_size: tuple[int, int]


class OrtSam2Refiner(Refiner):
    """SAM2 image encoder + prompt decoder graphs with ``Sam2Refiner``'s API (``refine``, ``embed_images``,
    ``predict``, ``point_logits``, ``decoder_calls``).

    Arguments:
        encoder, decoder: ``GraphSession``s of ``sam2_image_encoder`` and ``sam2_prompt_decoder``.
        info: the manifest's ``sam2`` entry (image_size, mean, std, dynamic_multimask, model).
        max_batch: images per encoder call.
    """

    def __init__(self, encoder, decoder, info: dict, max_batch: int = 4):
        self.encoder = encoder
        self.decoder = decoder
        self.info = info
        self.name = info.get("model", "sam2")
        self.image_size = int(info["image_size"])
        self.max_batch = max(1, int(max_batch))
        self.decoder_calls = 0
        self._mean = np.asarray(info["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(info["std"], np.float32).reshape(3, 1, 1)

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, 3, S, S) float32 encoder input, as ``Sam2Refiner.preprocess``."""
        s = self.image_size
        out = []
        for im in images:
            x = np.ascontiguousarray(im).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
            out.append((resize_bilinear_aa(x, (s, s)) - self._mean) / self._std)
        return np.stack(out).astype(np.float32)

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[OrtSam2Embedding]:
        """Encode RGB uint8 [H, W, 3] images in batches of ``min(batch_size, max_batch)``; one embedding each."""
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1 or None, got {batch_size}")
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise InvalidImageError(
                    f"image {i} must be an RGB uint8 [H, W, 3] numpy array, got "
                    f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}"
                )
        step = min(batch_size or self.max_batch, self.max_batch)
        out = []
        for s in range(0, len(images), step):
            chunk = images[s : s + step]
            feats = self.encoder.run({"image": self.preprocess(chunk)})
            for i, im in enumerate(chunk):
                out.append(
                    OrtSam2Embedding(
                        feats["image_embed"][i : i + 1],
                        (feats["high_res_feats_0"][i : i + 1], feats["high_res_feats_1"][i : i + 1]),
                        im.shape[:2],
                    )
                )
        return out

    def _select(self, masks: np.ndarray, iou: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """MaskDecoder.forward's choice among the 4 outputs: (P, M, 4E, 4E) logits and (P, M) IoUs."""
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        dyn = self.info.get("dynamic_multimask")
        if not dyn:
            return masks[:, :1], iou[:, :1]
        rows = np.arange(len(iou))
        best = iou[:, 1:].argmax(axis=1)
        best_logits, best_iou = masks[:, 1:][rows, best][:, None], iou[:, 1:][rows, best][:, None]
        single = masks[:, :1].reshape(len(iou), 1, -1)
        area_i = (single > np.float32(dyn["delta"])).sum(axis=-1).astype(np.float32)
        area_u = (single > -np.float32(dyn["delta"])).sum(axis=-1).astype(np.float32)
        stable = np.where(area_u > 0, area_i / np.maximum(area_u, 1), np.float32(1.0)) >= np.float32(dyn["thresh"])
        return (np.where(stable[..., None, None], masks[:, :1], best_logits), np.where(stable, iou[:, :1], best_iou))

    def point_logits(self, embedding: OrtSam2Embedding, points: np.ndarray, multimask: bool, chunk: int = 16):
        """``Sam2Refiner.point_logits`` on the decoder graph (CorrCLIP's automatic masks, ``clipsam.refine.automask``):
        ONE decoder call over P single positive points (coordinates ``x / W * S`` in float32), the raw mask token 0
        (tokens 1-3 with ``multimask``; the graph returns all four, never SAM2's dynamic stability switch).

        Arguments:
            points: (P, 2) pixel xy.
            multimask: three masks per point (point-major) instead of one.
            chunk: masks upsampled to the image size at a time.

        Yields:
            (logits (c, H, W) float32 at the image size (bilinear from 4E x 4E), predicted IoU (c,) float32) per chunk.
        """
        h, w = embedding.image_size
        p = len(points)
        coords = np.array(points, dtype=np.float32)
        coords[:, 0] = coords[:, 0] / np.float32(w)
        coords[:, 1] = coords[:, 1] / np.float32(h)
        coords = (coords * np.float32(self.image_size))[:, None]
        e4 = 4 * int(self.info.get("embed_size", self.image_size // 16))
        out = self.decoder.run(
            {
                "image_embed": embedding.image_embed,
                "high_res_feats_0": embedding.high_res_feats[0],
                "high_res_feats_1": embedding.high_res_feats[1],
                "point_coords": coords,
                "point_labels": np.ones((p, 1), np.float32),
                "mask_input": np.zeros((p, 1, e4, e4), np.float32),
                "has_mask_input": np.zeros(p, np.float32),
            }
        )
        self.decoder_calls += 1
        sel = slice(1, None) if multimask else slice(0, 1)
        low = out["masks"][:, sel].reshape(-1, e4, e4)
        iou = out["iou_predictions"][:, sel].reshape(-1).astype(np.float32)
        for s in range(0, len(low), chunk):
            yield resize_bilinear(low[s : s + chunk][:, None], (h, w))[:, 0], iou[s : s + chunk]

    def decode(
        self, embedding: OrtSam2Embedding, prompts: PromptSet, multimask: bool, chunk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``Refiner.predict``: bool masks (P, H, W), IoU scores (P,) from one decoder call."""
        h, w = embedding.image_size
        p = len(prompts)
        res = float(self.image_size)
        scale = np.array([res / w, res / h], dtype=np.float32)
        coords = prompts.point_coords.astype(np.float32) * scale
        labels = prompts.point_labels.astype(np.float32)
        if prompts.boxes is not None:
            box = prompts.boxes.astype(np.float32).reshape(p, 2, 2) * scale
            coords = np.concatenate([box, coords], axis=1)
            labels = np.concatenate([np.tile(np.array([[2.0, 3.0]], np.float32), (p, 1)), labels], axis=1)
        e4 = 4 * int(self.info.get("embed_size", self.image_size // 16))
        out = self.decoder.run(
            {
                "image_embed": embedding.image_embed,
                "high_res_feats_0": embedding.high_res_feats[0],
                "high_res_feats_1": embedding.high_res_feats[1],
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": np.zeros((p, 1, e4, e4), np.float32),
                "has_mask_input": np.zeros(p, np.float32),
            }
        )
        self.decoder_calls += 1
        low_res, iou = self._select(out["masks"], out["iou_predictions"], multimask)
        best = iou.argmax(axis=1)
        rows = np.arange(p)
        low_res, scores = low_res[rows, best][:, None], iou[rows, best]
        masks = np.concatenate([resize_bilinear(low_res[s : s + chunk], (h, w)) > 0.0 for s in range(0, p, chunk)])
        return masks[:, 0], scores.astype(np.float32)
