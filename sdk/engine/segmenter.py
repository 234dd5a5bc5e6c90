"""``EngineSegmenter``: the whole segmentation pipeline on exported engines, with ONNX Runtime and numpy only.

    seg = EngineSegmenter("engines/", providers=["cuda", "cpu"], refine=True)   # = Segmenter.from_engines(...)
    res = seg.segment("photo.jpg", classes=["cat", "sofa", "floor"])

Same API and results as ``clipsam.Segmenter`` (``segment``, ``segment_batch``, ``segment_stream``, ``logits``,
``vocabulary``, ``text_embeddings``, ``with_options``), step for step: vocabulary -> numpy tokenizer + ``clip_text``
(cached per vocabulary) -> members (scales x flips x images, numpy preprocessing) -> shape-bucketed window batches ->
dense graphs (+ SFR host steps) -> stitched logits -> strip-wise finalisation and post-processing -> optional SAM2
refinement (``OrtSam2Refiner``, sharing ``Sam2Refiner.refine``). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np

from ..config import positive_int, positive_number
from ..device import parse_device
from ..errors import ConfigError, EngineLimitError, InvalidTypeError, ManifestMismatchError
from ..frontend import SegmenterFront
from ..ops.base import EncoderSpec
from ..ops.sfr import LinspaceTable
from ..pipeline.windows import check_window_size
from ..prompting import PromptConfig, build_text_embeddings
from ..refine.config import RefineConfig
from ..text import TextEmbeddingCache
from ..text_store import resolve_text_store, text_cache_key
from ..vocabulary import Vocabulary
from .dense import OrtBackend
from .manifest import check_request, load_host_constants, load_manifest, load_tokenizer, verify_files
from .sam2 import OrtSam2Refiner
from .session import GraphSession, ProviderConfig, resolve_providers
from .text import OrtTextEncoder

_SAM2_GRAPHS = ("sam2_image_encoder", "sam2_prompt_decoder")
_MAX_THREADS = 1024  # intra-op threads one ONNX Runtime session may ask for


class EngineSegmenter(SegmenterFront):
    """Dense open-vocabulary segmentation (and optional SAM2 refinement) from an engine folder.

    Arguments:
        folder: engine folder written by ``clipsam export`` / ``clipsam.export.export_engines``.
        providers: ONNX Runtime providers in priority order ("cpu", "cuda", "tensorrt" or full names).
        allow_fallback: run on the remaining providers (one warning) when a requested one cannot load.
        method, preset, precision, clip, sam2: what the caller expects; a folder exported for something else is
            refused (``ManifestMismatchError``). ``preset`` is compared only when given (None: a folder exported
            without a preset). ``sam2`` also turns refinement on, as in ``Segmenter.from_pretrained``.
        refine: SAM2 refinement: None/False (off unless ``sam2``), True (``RefineConfig()``) or a RefineConfig.
        trt_cache_dir: TensorRT engine cache (default ``<folder>/trt_cache``).
        io_binding: IO binding on the device (default: on with CUDA/TensorRT).
        verify: check every file's SHA-256 against the manifest (sizes are always checked).
        max_batch: most windows per dense call (capped by the export's ``max_batch``).
        max_memory_mb: working-memory budget: batch size and finishing strips derive from it.
        intra_op_threads: ONNX Runtime threads (0: all cores).
        device_id: GPU index for the CUDA and TensorRT providers.
        provider_options: extra ONNX Runtime options per provider name, over clipsam's (e.g.
            {"TensorrtExecutionProvider": {"trt_max_workspace_size": 2 << 30}}).
        templates: template set or list, overriding the export's.
        prompts: ``clipsam.PromptConfig`` (context prompts, disambiguation, descriptions + TSE), run on the
            ``clip_text`` graph with the same numpy arithmetic as the PyTorch pipeline.
        text_disk_cache: the on-disk text-embedding cache, shared with ``Segmenter`` on the same weights
            (``clipsam.text_store``): None (on unless ``CLIPSAM_TEXT_CACHE=0``), False, True or a folder.
        text_progress: a progress bar on stderr while a large vocabulary's text is encoded.
        overrides: host-side DenseConfig fields (short_side, slide_crop, scales, flip, prob_thd, pamr_iters, ...).
    """

    _no_vocabulary = (
        "this engine folder has no preset vocabulary. Pass classes=['cat', 'sofa', ...] or class_file=PATH."
    )

    def __init__(
        self,
        folder,
        providers=None,
        *,
        allow_fallback: bool = False,
        method: str | None = None,
        preset=dataclasses.MISSING,
        precision: str | None = None,
        clip: str | None = None,
        sam2: str | None = None,
        refine=None,
        trt_cache_dir: str | None = None,
        io_binding: bool | None = None,
        verify: bool = True,
        max_batch: int | None = None,
        max_memory_mb: float | None = None,
        intra_op_threads: int = 0,
        device_id: int = 0,
        provider_options: dict | None = None,
        templates=None,
        text_cache_size: int = 64,
        prompts: PromptConfig | None = None,
        text_disk_cache=None,
        text_progress: bool = False,
        **overrides,
    ):
        self.text_store = resolve_text_store(text_disk_cache)
        self.text_progress = bool(text_progress)
        self.manifest = m = load_manifest(folder)
        verify_files(m, check_hash=verify)
        if templates is not None:
            overrides["templates"] = templates
        self.config = check_request(
            m, method=method, preset=preset, precision=precision, clip=clip, sam2=sam2, overrides=overrides
        )
        self._check_automask(self.config)  # before any session loads
        limits = m.limits
        if max_batch is not None:
            positive_int(max_batch, "max_batch")
        if max_memory_mb is not None:
            positive_number(max_memory_mb, "max_memory_mb")
        positive_int(text_cache_size, "text_cache_size")
        for name, value in (("device_id", device_id), ("intra_op_threads", intra_op_threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if intra_op_threads > _MAX_THREADS:
            raise ConfigError(
                f"intra_op_threads={intra_op_threads} is more threads than ONNX Runtime can start (at most "
                f"{_MAX_THREADS}; this machine has {os.cpu_count()} cores). Give the cores to use, or 0 for all."
            )
        if prompts is not None and not isinstance(prompts, PromptConfig):
            raise InvalidTypeError(f"prompts must be a clipsam.PromptConfig or None, got {type(prompts).__name__}")
        self.max_batch = min(int(max_batch or limits["max_batch"]), int(limits["max_batch"]))
        self.max_memory_mb = max_memory_mb
        self.provider_config = ProviderConfig(
            resolve_providers(providers),
            allow_fallback,
            trt_cache_dir,
            io_binding,
            device_id=device_id,
            intra_op_threads=intra_op_threads,
            provider_options=dict(provider_options or {}),
        )
        self.precision = m.precision
        self.arch, self.weights_id = m.clip.get("arch"), m.clip.get("weights")
        self.quick_gelu = m.clip.get("quick_gelu")
        self._sessions: dict[str, GraphSession] = {}
        self._sessions_lock = threading.Lock()  # one session per graph, also when threads race to create it
        self._consts = load_host_constants(m)
        self.patch = int(m.clip["patch"])
        tokenizer = load_tokenizer(m)
        self.backend = self._backend(self.config)
        self.text_encoder = OrtTextEncoder(self._session("clip_text"), tokenizer)
        self._set_prompts(prompts or PromptConfig())
        self.text_cache = TextEmbeddingCache(text_cache_size)
        self.refine_config = self._refine_config(refine, sam2)
        self.refiner = self._make_refiner() if self.refine_config is not None else None
        self.automask = self._make_automask(self.config)

    @classmethod
    def from_engines(
        cls, folder, providers=None, *, device: str | None = None, templates=None, **kwargs
    ) -> EngineSegmenter:
        """``Segmenter.from_engines``: build from an engine folder.

        Arguments:
            folder: engine folder (``clipsam export``).
            providers: ONNX Runtime providers in priority order; None: from ``device`` ("cpu" -> CPU,
                "cuda[:N]" -> CUDA on GPU N, then CPU), or the CPU.
            device: torch-style device string ("cpu", "cuda[:N]"): the GPU index of the CUDA and TensorRT providers.
            templates: template set or list (None keeps the export's).
            kwargs: the constructor's keyword arguments (method, preset, precision, refine, allow_fallback, ...).
        """
        if device is not None:
            kind, index = parse_device(device)
            if providers is None:
                providers = ["cuda", "cpu"] if kind == "cuda" else ["cpu"]
            kwargs.setdefault("device_id", index or 0)
        return cls(folder, providers, templates=templates, **kwargs)

    # -- sessions and components -------------------------------------------------------------------------
    def _session(self, name: str) -> GraphSession:
        with self._sessions_lock:
            return self._session_locked(name)

    def _session_locked(self, name: str) -> GraphSession:
        if name not in self._sessions:
            entry = {**self.manifest.graphs[name], "name": name, "folder": str(self.manifest.folder)}
            self._sessions[name] = GraphSession(
                self.manifest.path(name), entry, self.provider_config, fp16=self.precision == "fp16"
            )
        return self._sessions[name]

    def _backend(self, cfg) -> OrtBackend:
        check_window_size(cfg.schedule.slide_crop, int(self.manifest.clip["patch"]))
        sessions = {n: self._session(n) for n in self.manifest.graphs if n.startswith(("clip_dense", "dino_"))}
        table = LinspaceTable(self._consts["sfr_linspace"], self._consts["sfr_linspace_offsets"])
        clip = self.manifest.clip
        spec = EncoderSpec(int(clip["patch"]), int(clip["heads"]), int(clip["width"]))
        return OrtBackend(
            sessions,
            cfg,
            self._consts["clip_pos_embed"],
            spec,
            self.manifest.limits["max_grid"],
            table,
            self._consts.get("dino_pos_embed"),
        )

    def _make_refiner(self) -> OrtSam2Refiner:
        info = self.manifest.sam2
        if info is None or any(g not in self.manifest.graphs for g in _SAM2_GRAPHS):
            raise ManifestMismatchError(
                f"SAM2 refinement was asked for, but the engine folder {self.manifest.folder} has no SAM2 graphs. "
                "Export them with: clipsam export --sam2 sam2.1_hiera_t ..."
            )
        return OrtSam2Refiner(
            self._session(_SAM2_GRAPHS[0]),
            self._session(_SAM2_GRAPHS[1]),
            info,
            max_batch=self.manifest.limits.get("max_images", 1),
        )

    @staticmethod
    def _wants_automask(cfg) -> bool:
        return cfg.attention.base == "corrclip" and cfg.corrclip.corr_mask_source == "sam2"

    def _check_automask(self, cfg) -> None:
        """``ConfigError`` when CorrCLIP's automatic masks are asked for and the folder has no SAM2 graphs."""
        if self._wants_automask(cfg) and (
            self.manifest.sam2 is None or any(g not in self.manifest.graphs for g in _SAM2_GRAPHS)
        ):
            raise ConfigError(
                f"corrclip's automatic masks (corr_mask_source='sam2') run on the SAM2 graphs, which the engine "
                f"folder {self.manifest.folder} does not hold. Export them with clipsam export --method corrclip "
                "--sam2 sam2.1_hiera_t ..., or give masks per call (masks=, corr_mask_source='given'; CLI: --masks "
                "DIR) or set corr_mask_source='none'"
            )

    def _make_automask(self, cfg):
        """CorrCLIP's SAM2 automatic masks on the folder's SAM2 graphs (the refiner's, when refinement is on), or
        None when the configuration does not make them."""
        self._check_automask(cfg)
        if not self._wants_automask(cfg):
            return None
        from ..refine.automask import AutoMaskGenerator, AutoMaskSettings

        sam2 = self.refiner if self.refiner is not None else self._make_refiner()
        return AutoMaskGenerator(sam2, AutoMaskSettings.from_config(cfg.corrclip))

    @staticmethod
    def _refine_config(refine, sam2) -> RefineConfig | None:
        if isinstance(refine, RefineConfig):
            return refine
        if refine is True or (refine is None and sam2 is not None):
            return RefineConfig()
        if refine is None or refine is False:
            return None
        raise InvalidTypeError(f"refine must be None, a bool or a RefineConfig, got {type(refine).__name__}")

    @property
    def providers(self) -> dict[str, tuple[str, ...]]:
        """Graph name -> the providers its session really uses."""
        return {n: s.providers for n, s in self._sessions.items()}

    def with_options(self, **overrides) -> EngineSegmenter:
        """A segmenter sharing this one's sessions and text cache, with host-side ``DenseConfig`` fields replaced.
        ``method=`` / ``preset=`` must be the folder's (its graphs were exported for them): another is an error
        naming the export that gives it."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        prompts = self._prompts_with(overrides)
        method, preset = overrides.pop("method", None), overrides.pop("preset", dataclasses.MISSING)
        diff = {k: v for k, v in _diff(self.manifest.dense, self.config).items() if k not in ("method", "preset")}
        new.config = check_request(self.manifest, method=method, preset=preset, overrides={**diff, **overrides})
        new._set_prompts(prompts)
        new.automask = new._make_automask(new.config)
        new.backend = new._backend(new.config)
        return new

    # -- vocabulary and text -----------------------------------------------------------------------------
    def _check_vocabulary_size(self, vocab: Vocabulary) -> None:
        """TensorRT serves the shapes of the export's profiles only: more queries than ``--max-queries`` is an
        ``EngineLimitError`` before any work (the other providers take any number)."""
        limit = int(self.manifest.limits.get("max_queries") or 0)
        trt = sorted(n for n, s in self._sessions.items() if "TensorrtExecutionProvider" in s.providers)
        if limit and trt and vocab.num_queries > limit:
            raise EngineLimitError(
                f"the vocabulary has {vocab.num_queries} queries (synonyms included), but these engines' TensorRT "
                f"profiles serve at most {limit} (graphs {', '.join(trt)}). Re-export with --max-queries "
                f"{vocab.num_queries} or more, use fewer names, or run on the CUDA or CPU provider."
            )

    def text_embeddings(self, vocab: Vocabulary, progress: bool | None = None) -> np.ndarray:
        """(Q, C) float32 unit query embeddings, computed once per vocabulary, cached in memory and on disk.
        ``progress``: a bar on stderr while encoding (default: the segmenter's ``text_progress``)."""
        vocab = Vocabulary.from_names(vocab)  # a Vocabulary, or anything classes= takes
        key = (self.manifest.clip.get("weights_sha256"), vocab.queries, self.templates, self._prompts.key)
        emb = self.text_cache.get(key)
        if emb is not None:
            return emb
        self._check_tokens(vocab, self.text_encoder.tokenizer)
        show = self.text_progress if progress is None else bool(progress)
        store, disk = self.text_store, None
        if store is not None:
            clip = self.manifest.clip
            model = {k: clip.get(k) for k in ("arch", "weights_sha256", "quick_gelu")}
            model["precision"] = self.precision  # the clip_text graph is exported in the engine's precision
            disk = text_cache_key(model, vocab.queries, self.templates, self._prompts.key)
        width = self.manifest.clip.get("embed_dim")
        stored = store.load(disk, (vocab.num_queries, width)) if store and disk else None
        if stored is not None:
            emb = stored
        elif self._prompts.is_default:
            emb = self.text_encoder.encode(vocab.queries, self.templates, show)
        else:
            emb = build_text_embeddings(
                lambda p: self.text_encoder.embed_prompts(p, show),
                vocab,
                self.templates,
                self._prompts,
                self.text_cache,
                key[:1],
            )
        if store and disk and stored is None:
            store.save(disk, emb)
        self.text_cache.put(key, emb)
        return emb

    def _runs_on_gpu(self) -> bool:
        return self.provider_config.providers[0] != "CPUExecutionProvider"

    def _backend_info(self) -> dict:
        return {
            "backend": "onnxruntime",
            "providers": sorted({p for ps in self.providers.values() for p in ps}),
            "engines": str(self.manifest.folder),
        }


def _diff(base, cfg) -> dict:
    """DenseConfig options (flat names) of ``cfg`` that differ from ``base``."""
    a, b = base.to_dict(), cfg.to_dict()
    return {k: getattr(cfg, k) for k, v in b.items() if v != a[k]}
