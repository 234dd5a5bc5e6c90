"""``EngineSegmenter``: the whole segmentation pipeline on exported engines, with ONNX Runtime and numpy only.

    seg = EngineSegmenter("engines/", providers=["cuda"], refine=True)   # or clipsam.Segmenter.from_engines(...)
    res = seg.segment("photo.jpg", classes=["cat", "sofa", "floor"])

Same API and result type as ``clipsam.Segmenter`` (``segment``, ``segment_batch``, ``logits``, ``vocabulary``,
``text_embeddings``): vocabulary -> numpy tokenizer + ``clip_text`` (cached per vocabulary) -> numpy preprocessing ->
windows and batches -> dense graphs (+ SFR host steps) -> stitched logits -> numpy post-processing -> optional SAM2
refinement (``OrtSam2Refiner``, sharing ``Sam2Refiner.refine``). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import VocabularyError
from ..postprocess import postprocess
from ..preprocess import load_image, preprocess
from ..refine.config import RefineConfig
from ..result import SegmentationResult
from ..text import TextEmbeddingCache, resolve_templates
from ..vocabulary import Vocabulary, builtin_vocabulary, parse_class_file
from .dense import OrtDenseEncoder
from .errors import ManifestMismatchError
from .manifest import check_request, load_manifest, verify_files
from .sam2 import OrtSam2Refiner
from .session import GraphSession, ProviderConfig, resolve_providers
from .sfr import LinspaceTable
from .text import OrtTextEncoder
from .tokenizer import ClipTokenizer

__all__ = ["EngineSegmenter"]

_SAM2_GRAPHS = ("sam2_image_encoder", "sam2_prompt_decoder")


class EngineSegmenter:
    """Dense open-vocabulary segmentation (and optional SAM2 refinement) from an engine folder.

    Arguments:
        folder: engine folder written by ``clipsam export`` / ``clipsam.export.export_engines``.
        providers: ONNX Runtime providers in priority order ("cpu", "cuda", "tensorrt" or full names).
        allow_fallback: run on the remaining providers (one warning) when a requested one cannot load.
        method, preset, precision, clip: what the caller expects; a folder exported for something else is refused
            (``ManifestMismatchError``). ``preset`` is compared only when given.
        refine: SAM2 refinement of every result: None/False (off), True (``RefineConfig()``) or a RefineConfig.
        trt_cache_dir: TensorRT engine cache (default ``<folder>/trt_cache``).
        io_binding: IO binding on the device (default: on with CUDA/TensorRT).
        verify: check every file's SHA-256 against the manifest (sizes are always checked).
        max_batch: windows (and SAM2 images) per graph call; default and maximum: the export's limit.
        intra_op_threads: ONNX Runtime threads (0: all cores).
        templates: template set or list, overriding the export's.
        overrides: host-side DenseConfig fields (short_side, slide_crop, prob_thd, pamr_iters, ...).
    """

    def __init__(self, folder, providers=None, *, allow_fallback: bool = False, method: str | None = None,
                 preset=dataclasses.MISSING, precision: str | None = None, clip: str | None = None, refine=None,
                 trt_cache_dir: str | None = None, io_binding: bool | None = None, verify: bool = True,
                 max_batch: int | None = None, intra_op_threads: int = 0, templates=None, text_cache_size: int = 64,
                 **overrides):
        self.manifest = m = load_manifest(folder)
        verify_files(m, check_hash=verify)
        if templates is not None:
            overrides["templates"] = templates
        self.config = check_request(m, method=method, preset=preset, precision=precision, clip=clip,
                                    overrides=overrides)
        self.provider_config = ProviderConfig(resolve_providers(providers), allow_fallback, trt_cache_dir, io_binding,
                                              intra_op_threads=intra_op_threads)
        self.precision = m.precision
        limits = m.limits
        self.max_batch = min(int(max_batch or limits["max_batch"]), int(limits["max_batch"]))
        self._sessions: dict[str, GraphSession] = {}
        dense = {n: self._session(n) for n in m.graphs if n.startswith("clip_dense")}
        consts = np.load(m.path("host_constants"))
        table = LinspaceTable(consts["sfr_linspace"], consts["sfr_linspace_offsets"])
        self.patch = int(m.clip["patch"])
        self.dense = OrtDenseEncoder(dense, self.config, consts["clip_pos_embed"], self.patch, limits["max_grid"],
                                     self.max_batch, table)
        tokenizer = ClipTokenizer.from_folder(m.folder, m.data["files"]["tokenizer"]["file"], m.data["files"]["bpe"]["file"])
        self.text_encoder = OrtTextEncoder(self._session("clip_text"), tokenizer)
        self.templates = resolve_templates(self.config.templates)
        self.text_cache = TextEmbeddingCache(text_cache_size)
        self.refine_config = self._refine_config(refine)
        self._refiner = None
        if self.refine_config is not None:
            _ = self.refiner

    # -- sessions ----------------------------------------------------------------------------------------
    def _session(self, name: str) -> GraphSession:
        if name not in self._sessions:
            entry = {**self.manifest.graphs[name], "name": name, "folder": str(self.manifest.folder)}
            self._sessions[name] = GraphSession(self.manifest.path(name), entry, self.provider_config,
                                                fp16=self.precision == "fp16")
        return self._sessions[name]

    @property
    def providers(self) -> dict[str, tuple[str, ...]]:
        """Graph name -> the providers its session really uses."""
        return {n: s.providers for n, s in self._sessions.items()}

    @property
    def refiner(self) -> OrtSam2Refiner:
        """The SAM2 refiner (sessions created on first use)."""
        if self._refiner is None:
            sam2 = self.manifest.sam2
            if sam2 is None or any(g not in self.manifest.graphs for g in _SAM2_GRAPHS):
                raise ManifestMismatchError(
                    f"SAM2 refinement was asked for, but the engine folder {self.manifest.folder} has no SAM2 graphs. "
                    "Export them with: clipsam export --sam2 sam2.1_hiera_t ...")
            self._refiner = OrtSam2Refiner(self._session(_SAM2_GRAPHS[0]), self._session(_SAM2_GRAPHS[1]), sam2,
                                           max_batch=self.manifest.limits.get("max_images", 1))
        return self._refiner

    @staticmethod
    def _refine_config(refine) -> RefineConfig | None:
        if refine is None or refine is False:
            return None
        if refine is True:
            return RefineConfig()
        if isinstance(refine, RefineConfig):
            return refine
        raise TypeError(f"refine must be None, a bool or a RefineConfig, got {type(refine).__name__}")

    # -- vocabulary and text -----------------------------------------------------------------------------
    def vocabulary(self, classes=None, class_file=None) -> Vocabulary:
        """Explicit classes, a class file, or the preset's built-in vocabulary (as ``Segmenter.vocabulary``)."""
        if classes is not None and class_file is not None:
            raise VocabularyError("give either classes or class_file, not both")
        if classes is not None:
            return Vocabulary.from_names(classes)
        if class_file is not None:
            return parse_class_file(class_file)
        if self.config.vocabulary is None:
            raise VocabularyError("no classes given and this engine folder has no preset vocabulary. Pass "
                                  "classes=['cat', 'sofa', ...] or class_file=PATH.")
        return builtin_vocabulary(self.config.vocabulary)

    def text_embeddings(self, vocab: Vocabulary) -> np.ndarray:
        """(Q, C) float32 unit query embeddings, computed once per vocabulary and cached."""
        key = (self.manifest.clip.get("weights_sha256"), vocab.queries, self.templates)
        emb = self.text_cache.get(key)
        if emb is None:
            emb = self.text_encoder.encode(vocab.queries, self.templates)
            self.text_cache.put(key, emb)
        return emb

    # -- inference ---------------------------------------------------------------------------------------
    def logits(self, image, classes=None, class_file=None) -> np.ndarray:
        """Query logits at the original image size: (Q, H, W) float32."""
        return self._logits(load_image(image), self.vocabulary(classes, class_file))

    def _logits(self, rgb: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        cfg = self.config
        x = preprocess(rgb, cfg.short_side, cfg.long_side, min_side=self.patch)
        return self.dense.infer_logits(x, self.text_embeddings(vocab), rgb.shape[:2])

    def _dense(self, image, vocab: Vocabulary):
        rgb = load_image(image)
        t0 = time.perf_counter()
        cfg = self.config
        labels, scores, probs = postprocess(self._logits(rgb, vocab), vocab.query_to_class, vocab.num_classes,
                                            cfg.logit_scale, cfg.prob_thd, cfg.area_thd)
        image_u8 = rgb if rgb.dtype == np.uint8 else np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        return image_u8, labels, scores, probs, time.perf_counter() - t0

    def _info(self, elapsed: float) -> dict:
        cfg = self.config
        used = sorted({p for ps in self.providers.values() for p in ps})
        return {
            "method": cfg.method, "preset": cfg.preset, "clip": self.manifest.clip.get("arch"),
            "weights": self.manifest.clip.get("weights"), "backend": "onnxruntime", "providers": used,
            "engines": str(self.manifest.folder), "precision": self.precision,
            "time_ms": round(1000 * elapsed, 2),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "templates"},
        }

    def segment_batch(self, images, classes=None, class_file=None, refine=None) -> list[SegmentationResult]:
        """Segment a list of images with one vocabulary; SAM2 refinement (if on) encodes them in batches.

        Arguments:
            images: list of file paths, PIL images or numpy arrays (as ``segment``).
            refine: per-call override of the constructor's ``refine`` (None keeps it).
        """
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"segment_batch takes a list of images, got {type(images).__name__}")
        vocab = self.vocabulary(classes, class_file)
        dense = [self._dense(img, vocab) for img in images]
        results = [SegmentationResult(lab, sc, vocab.classes, im, self._info(dt)) for im, lab, sc, _, dt in dense]
        cfg = self.refine_config if refine is None else self._refine_config(refine)
        if cfg is None:
            return results
        t0 = time.perf_counter()
        merged = self.refiner.refine([d[0] for d in dense], [d[1] for d in dense], [d[3] for d in dense], cfg,
                                     batch_size=self.refiner.max_batch)
        per_image = (time.perf_counter() - t0) / max(1, len(images))
        for res, mr in zip(results, merged):
            res.labels = mr.labels.astype(np.int32)
            res.info["refine"] = {
                "sam2": self.refiner.name, "time_ms": round(1000 * per_image, 2),
                "instances": [{"class": vocab.classes[i.class_id], "class_id": int(i.class_id),
                               "score": round(float(i.score), 6), "box": list(i.box), "area": int(i.area)}
                              for i in mr.instances],
            }
            res.info["time_ms"] = round(res.info["time_ms"] + 1000 * per_image, 2)
        return results

    def segment(self, image, classes=None, class_file=None, refine=None) -> SegmentationResult:
        """Segment one image: ``SegmentationResult`` with labels (H, W) int32 and scores (H, W) float32."""
        return self.segment_batch([image], classes, class_file, refine)[0]
