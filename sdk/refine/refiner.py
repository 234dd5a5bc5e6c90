"""``Refiner``: CLIP-guided refinement written once over two backend methods (PyTorch SAM2, ONNX Runtime SAM2).

    prompts per image (``extract_prompts``) -> one encoder pass over every image with prompts (``embed_images``)
    -> per image one batched decoder call over all its prompts (``predict``) -> merged labels (``merge_masks``)

A backend implements ``embed_images(images, batch_size)`` and ``decode(embedding, prompts, multimask, chunk)`` (one
decoder call over P >= 1 prompts); this module is numpy only, so the torch-free engine runtime shares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .config import RefineConfig
from .merge import MergeResult, merge_masks
from .prompts import PromptSet, extract_prompts


class Refiner:
    """Base of the SAM2 refiners; see the module docstring."""

    name: str = "sam2"

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[Any]:
        """Image features, one per RGB uint8 image (H_i, W_i, 3)."""
        raise NotImplementedError

    def decode(self, embedding: Any, prompts: PromptSet, multimask: bool, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` for P >= 1 prompts made for this embedding's image."""
        raise NotImplementedError

    def predict(
        self, embedding: Any, prompts: PromptSet, multimask: bool = True, chunk: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode all P prompts of one image in one decoder call.

        Arguments:
            embedding: the image's features (``embed_images``).
            prompts: P prompts (points (P, K, 2) pixel xy, labels (P, K), optional boxes (P, 4)).
            multimask: decode 3 masks per prompt and keep the one with the highest predicted IoU.
            chunk: prompts upsampled to full resolution at a time (memory bound only).

        Returns:
            masks bool (P, H, W) and predicted IoU float32 (P,). With P = 0 the decoder is not called.
        """
        h, w = embedding.image_size
        if prompts.image_size != (h, w):
            raise InvalidInputError(f"prompts are for a {prompts.image_size} image, embedding for {(h, w)}")
        if len(prompts) == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        return self.decode(embedding, prompts, multimask, chunk)

    def refine(
        self,
        images: Sequence[np.ndarray],
        dense_labels: Sequence[np.ndarray],
        probs: Sequence[np.ndarray],
        config: RefineConfig | None = None,
        batch_size: int | None = None,
        embeddings: Sequence[Any] | None = None,
    ) -> list[MergeResult]:
        """Refine dense CLIP segmentations of a batch of images with SAM2.

        Arguments:
            images: RGB uint8 (H_i, W_i, 3).
            dense_labels: int (H_i, W_i) dense labels per image.
            probs: float (C, H_i, W_i) class probabilities (or (H_i, W_i) scores).
            config: None uses the defaults.
            batch_size: images per encoder forward; None: all images in one forward.
            embeddings: per image the image encoder's output when already computed (CorrCLIP's automatic masks),
                or None entries; only the others are encoded.

        Returns:
            one ``MergeResult`` per image. Images without prompts are not encoded; their labels are the dense labels.
        """
        config = RefineConfig() if config is None else config
        if not len(images) == len(dense_labels) == len(probs):
            raise InvalidInputError(
                f"got {len(images)} images, {len(dense_labels)} label maps and {len(probs)} probability maps"
            )
        for i, (im, lab) in enumerate(zip(images, dense_labels)):
            if np.shape(im)[:2] != np.shape(lab):
                raise InvalidInputError(f"image {i} is {np.shape(im)[:2]} but its labels are {np.shape(lab)}")
        prompt_sets = [extract_prompts(lab, pr, config) for lab, pr in zip(dense_labels, probs)]
        todo = [i for i, ps in enumerate(prompt_sets) if len(ps)]
        known = {i: e for i, e in enumerate(embeddings or []) if e is not None and i in todo}
        missing = [i for i in todo if i not in known]
        if missing:
            known.update(zip(missing, self.embed_images([images[i] for i in missing], batch_size)))
        computed = known
        results = []
        for i, ps in enumerate(prompt_sets):
            if i in computed:
                masks, scores = self.predict(computed[i], ps, config.multimask)
            else:
                masks, scores = np.zeros((0, *ps.image_size), bool), np.zeros(0, np.float32)
            results.append(merge_masks(dense_labels[i], probs[i], ps, masks, scores, config))
        return results
