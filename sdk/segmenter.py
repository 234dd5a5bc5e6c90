"""``Segmenter``: the public entry point of dense open-vocabulary segmentation with PyTorch."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from .config import DenseConfig, dense_config
from .errors import BackendUnavailableError, ConfigError, VocabularyError
from .postprocess import postprocess
from .preprocess import load_image, preprocess
from .result import SegmentationResult
from .text import TextEmbeddingCache, encode_queries, resolve_templates
from .vocabulary import Vocabulary, builtin_vocabulary, parse_class_file

__all__ = ["Segmenter"]

_PRECISIONS = ("fp32", "fp16", "bf16")


def _resolve_device(device):
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device {device!r} was requested but CUDA is not available here (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda}). Use device='cpu' or install a CUDA build of torch."
        )
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use 'cpu' or 'cuda[:N]'.")
    return dev


class Segmenter:
    """Dense CLIP segmentation of images into user-named classes.

    Build with ``Segmenter.from_pretrained(...)``. ``segment(image, classes)`` returns a
    ``SegmentationResult`` whose ``labels`` index into ``result.classes``.
    """

    def __init__(self, loaded, config: DenseConfig, device="cpu", precision: str = "fp32", text_cache_size: int = 64):
        import open_clip

        from .dense.encoder import DenseEncoder

        if precision not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        self.device = _resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendUnavailableError(
                f"precision={precision!r} uses CUDA autocast and needs device='cuda'; on the CPU use precision='fp32'."
            )
        self.precision = precision
        self.config = config
        self.arch = loaded.arch
        self.weights_id = loaded.weights_id
        self.model = loaded.model.to(self.device).eval()
        self.encoder = DenseEncoder(self.model.visual, config)
        self.tokenizer = open_clip.get_tokenizer(loaded.arch)
        self.templates = resolve_templates(config.templates)
        self.text_cache = TextEmbeddingCache(text_cache_size)

    @classmethod
    def from_pretrained(
        cls,
        clip: str = "ViT-B-16",
        clip_weights: str | os.PathLike | None = "openai",
        method: str = "resclip",
        preset: str | None = "voc21",
        device: str = "cpu",
        precision: str = "fp32",
        templates=None,
        **overrides,
    ) -> "Segmenter":
        """Build a segmenter.

        Arguments:
            clip: open_clip architecture name ("ViT-B-16", "ViT-L-14") or a model-config JSON path.
            clip_weights: open_clip pretrained tag ("openai", downloaded when online), a local checkpoint
                (OpenAI or open_clip format), or None for random weights (tests; warns loudly).
            method: "resclip" (NACLIP + RCS + SFR, default), "resclip_sclip", "resclip_clearclip",
                "naclip", "sclip", "clearclip" or "clip".
            preset: dataset preset ("voc21", "context60", "coco_object", "voc20", "context59",
                "coco_stuff164k", "cityscapes", "ade20k") or None for open-vocabulary defaults.
            device: "cpu" or "cuda[:N]".
            precision: "fp32" (default), or "fp16"/"bf16" autocast on CUDA.
            templates: template set name ("openai80", "openai7", "single") or list of templates.
            overrides: ``DenseConfig`` fields to change (e.g. slide_crop=0, prob_thd=0.2).
        """
        from .models import load_clip

        if templates is not None:
            overrides["templates"] = templates
        cfg = dense_config(method, preset, **overrides)
        return cls(load_clip(clip, clip_weights), cfg, device=device, precision=precision)

    # -- vocabulary and text ----------------------------------------------------------------------------
    def vocabulary(self, classes=None, class_file=None) -> Vocabulary:
        """Resolve the vocabulary: explicit classes, a class file, or the preset's built-in vocabulary."""
        if classes is not None and class_file is not None:
            raise VocabularyError("give either classes or class_file, not both")
        if classes is not None:
            return Vocabulary.from_names(classes)
        if class_file is not None:
            return parse_class_file(class_file)
        if self.config.vocabulary is None:
            raise VocabularyError(
                "no classes given and this configuration has no preset vocabulary. "
                "Pass classes=['cat', 'sofa', ...], class_file=PATH, or build with a dataset preset."
            )
        return builtin_vocabulary(self.config.vocabulary)

    def text_embeddings(self, vocab: Vocabulary):
        """(Q, E) query embeddings on the device, computed once per vocabulary and cached."""
        key = (self.arch, self.weights_id, vocab.queries, self.templates)
        emb = self.text_cache.get(key)
        if emb is None:
            emb = encode_queries(self.model, self.tokenizer, vocab, self.templates, self.device)
            self.text_cache.put(key, emb)
        return emb

    # -- inference ---------------------------------------------------------------------------------------
    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def logits(self, image, classes=None, class_file=None) -> np.ndarray:
        """Query logits at the original image size: (Q, H, W) float32 (before the softmax)."""
        vocab = self.vocabulary(classes, class_file)
        rgb = load_image(image)
        return self._logits(rgb, vocab)

    def _logits(self, rgb: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        import torch

        from .dense.inference import infer_logits

        cfg = self.config
        x = preprocess(rgb, cfg.short_side, cfg.long_side, min_side=self.encoder.patch)
        text = self.text_embeddings(vocab)
        with torch.inference_mode(), self._autocast():
            out = infer_logits(self.encoder, torch.from_numpy(x).to(self.device), text, cfg, rgb.shape[:2])
        return out.float().cpu().numpy()

    def segment(self, image, classes=None, class_file=None) -> SegmentationResult:
        """Segment one image.

        Arguments:
            image: file path, PIL image, numpy HxWx3/HxW/HxWx4 (uint8 or float in [0, 1]) or tensor CxHxW.
            classes: list of names (or of synonym lists), or "cat, sofa, floor"; default: the preset's.
            class_file: path of a class file (one class per line, synonyms separated by ", ").

        Returns:
            SegmentationResult with labels (H, W) int32 and scores (H, W) float32.
        """
        vocab = self.vocabulary(classes, class_file)
        rgb = load_image(image)
        t0 = time.perf_counter()
        logits = self._logits(rgb, vocab)
        cfg = self.config
        labels, scores, _ = postprocess(logits, vocab.query_to_class, vocab.num_classes, cfg.logit_scale,
                                        cfg.prob_thd, cfg.area_thd)
        info = {
            "method": cfg.method, "preset": cfg.preset, "clip": self.arch, "weights": self.weights_id,
            "device": str(self.device), "precision": self.precision,
            "time_ms": round(1000 * (time.perf_counter() - t0), 2),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "templates"},
        }
        image_u8 = rgb if rgb.dtype == np.uint8 else np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        return SegmentationResult(labels, scores, vocab.classes, image_u8, info)

    def segment_batch(self, images, classes=None, class_file=None) -> list[SegmentationResult]:
        """Segment a list of images with one vocabulary (one at a time, in order)."""
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"segment_batch takes a list of images, got {type(images).__name__}")
        return [self.segment(img, classes, class_file) for img in images]
