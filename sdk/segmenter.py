"""``Segmenter``: the public entry point of dense open-vocabulary segmentation with PyTorch."""

from __future__ import annotations

import os

from .config import DenseConfig, dense_config, positive_int, positive_number
from .device import UPSTREAM_FP16, UPSTREAM_FP16_METHODS, parse_device
from .errors import BackendUnavailableError, ConfigError, InvalidTypeError
from .frontend import SegmenterFront
from .pipeline.windows import check_window_size
from .prompting import PROMPT_FIELDS, PromptConfig, build_text_embeddings
from .text import TextEmbeddingCache
from .text_store import resolve_text_store, text_cache_key
from .vocabulary import Vocabulary

CPU_OPS = ("compiled", "torch")  # clipsam.dense.ops.TorchOps on the CPU

_PRECISIONS = ("fp32", "fp16", "bf16", UPSTREAM_FP16)


def _resolve_device(device):
    import torch

    kind, index = parse_device(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {device!r} was requested but CUDA is not available here (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda}). Use device='cpu' or install a CUDA build of torch."
            )
        if index is not None and index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise BackendUnavailableError(
                f"device {device!r} was requested but this machine has {n} GPU(s): use cuda:0 .. cuda:{n - 1}."
            )
    return torch.device(kind if index is None or kind == "cpu" else f"cuda:{index}")


def _check_run_options(device, precision, max_batch, max_memory_mb, text_cache_size, cpu_ops="compiled"):
    """The torch device, after checking the run options (before any weights load)."""
    if cpu_ops not in CPU_OPS:
        raise ConfigError(
            f"cpu_ops must be one of {CPU_OPS}, got {cpu_ops!r}: 'compiled' (the shared compiled CPU kernels, default) "
            "or 'torch' (PyTorch's own ops, the reference)"
        )
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    dev = _resolve_device(device)
    if precision not in ("fp32", UPSTREAM_FP16) and dev.type != "cuda":
        raise BackendUnavailableError(
            f"precision={precision!r} uses CUDA autocast and needs device='cuda'; on the CPU use precision='fp32' "
            f"(or {UPSTREAM_FP16!r} for corrclip / rfclip)."
        )
    if max_batch is not None:
        positive_int(max_batch, "max_batch")
    if max_memory_mb is not None:
        positive_number(max_memory_mb, "max_memory_mb")
    positive_int(text_cache_size, "text_cache_size")
    return dev


def resolve_precision(precision: str | None, base: str, device) -> str:
    """``precision``, or the default when None: upstream's fp16 casts (``"fp16-upstream"``) for the methods whose
    upstream code runs in fp16 on CUDA (``corrclip``, ``rfclip``) when the device is CUDA, so that they compute
    what their upstream code computes there; fp32 otherwise (neither upstream runs on the CPU)."""
    if precision is not None:
        return precision
    on_cuda = _resolve_device(device).type == "cuda"
    return UPSTREAM_FP16 if base in UPSTREAM_FP16_METHODS and on_cuda else "fp32"


def _check_precision_method(precision: str, config: DenseConfig) -> None:
    """``precision="fp16-upstream"`` only for the methods whose upstream fp16 arithmetic it reproduces."""
    if precision == UPSTREAM_FP16 and config.attention.base not in UPSTREAM_FP16_METHODS:
        raise ConfigError(
            f"precision={UPSTREAM_FP16!r} reproduces the fp16 casts of CorrCLIP's and RF-CLIP's upstream code and "
            f"exists only for method='corrclip' or 'rfclip' (this configuration is method {config.method!r}, "
            f"base {config.attention.base!r}). Use precision='fp32', or 'fp16' / 'bf16' autocast on CUDA."
        )


class Segmenter(SegmenterFront):
    """Dense CLIP segmentation of images into user-named classes.

    Build with ``Segmenter.from_pretrained(...)``. ``segment(image, classes)`` returns a
    ``SegmentationResult`` whose ``labels`` index into ``result.classes``.
    """

    def __init__(
        self,
        loaded,
        config: DenseConfig,
        device="cpu",
        precision: str | None = None,
        text_cache_size: int = 64,
        max_batch: int | None = None,
        max_memory_mb: float | None = None,
        refiner=None,
        refine_config=None,
        prompts: PromptConfig | None = None,
        dino=None,
        mask_sam2=None,
        text_disk_cache=None,
        text_progress: bool = False,
        cpu_ops: str = "compiled",
    ):
        import open_clip

        precision = resolve_precision(precision, config.attention.base, device)
        self.device = _check_run_options(device, precision, max_batch, max_memory_mb, text_cache_size, cpu_ops)
        _check_precision_method(precision, config)
        self.text_store = resolve_text_store(text_disk_cache)
        self.text_progress = bool(text_progress)
        self._weights_sha256: str | None = None  # of the model's state dict, taken at the first disk-cache lookup
        self.precision = precision
        self.cpu_ops = cpu_ops
        self.config = config
        self.arch = loaded.arch
        self.weights_id = loaded.weights_id
        self.quick_gelu = loaded.quick_gelu
        if precision == UPSTREAM_FP16:  # fp16 copies cast as upstream casts them; the given models stay as they are
            from .dense.upstream_fp16 import half_clip, half_dino

            self.model = half_clip(loaded.model).to(self.device)
            self.dino = None if dino is None else half_dino(dino).to(self.device)
        else:
            self.model = loaded.model.to(self.device).eval()
            self.dino = None if dino is None else dino.to(self.device).eval()  # CorrCLIP's DINO (clipsam.dense.dino)
        self.mask_sam2 = mask_sam2 if mask_sam2 is not None else refiner  # SAM2 of CorrCLIP's automatic masks
        self._set_backend()
        self.tokenizer = open_clip.get_tokenizer(loaded.arch)
        self._set_prompts(prompts or PromptConfig())
        self.text_cache = TextEmbeddingCache(text_cache_size)
        if max_batch is None and precision == UPSTREAM_FP16:
            max_batch = 1  # upstream encodes one window at a time, and fp16 products round differently per batch size
        elif max_batch is None:  # measured: on the CPU small batches stay in cache (4 windows: ~2x over 1 or 16)
            max_batch = 32 if self.device.type == "cuda" else 4
        self.max_batch = int(max_batch)
        self.max_memory_mb = max_memory_mb
        self.refiner = refiner  # clipsam.refine.Sam2Refiner or None: SAM2 refinement of the dense labels
        if refine_config is None and refiner is not None:
            from .refine import RefineConfig

            refine_config = RefineConfig()
        self.refine_config = refine_config

    @classmethod
    def from_pretrained(
        cls,
        clip: str = "ViT-B-16",
        clip_weights: str | os.PathLike | None = "openai",
        method: str = "resclip",
        preset: str | None = "voc21",
        device: str = "cpu",
        precision: str | None = None,
        templates=None,
        max_batch: int | None = None,
        max_memory_mb: float | None = None,
        sam2: str | None = None,
        sam2_weights: str | os.PathLike | None = None,
        sam2_random_weights: bool = False,
        refine=None,
        text_cache_size: int = 64,
        prompts: PromptConfig | None = None,
        quick_gelu: bool | None = None,
        dino_weights: str | os.PathLike | None = "dino_vitb8",
        text_disk_cache=None,
        text_progress: bool = False,
        cpu_ops: str = "compiled",
        **overrides,
    ) -> Segmenter:
        """Build a segmenter.

        Arguments:
            clip: open_clip architecture name ("ViT-B-16", "ViT-L-14") or a model-config JSON path.
            clip_weights: open_clip pretrained tag ("openai", downloaded when online), a local checkpoint
                (OpenAI or open_clip format), or None for random weights (tests; warns loudly).
            method: "resclip" (NACLIP + RCS + SFR, default), "resclip_sclip", "resclip_clearclip",
                "naclip", "sclip", "clearclip", "clip", "rfclip" (RF-CLIP) or "corrclip" (CorrCLIP v1: needs DINO,
                and SAM2 for its automatic masks).
            preset: dataset preset ("voc21", "context60", "coco_object", "voc20", "context59",
                "coco_stuff164k", "cityscapes", "ade20k") or None for open-vocabulary defaults.
            device: "cpu" or "cuda[:N]".
            precision: "fp32", or "fp16"/"bf16" autocast on CUDA, or "fp16-upstream" (``corrclip`` and
                ``rfclip`` only, CPU or CUDA): the upstream code's fp16 arithmetic, on fp16 copies of CLIP (LayerNorm
                in fp32) and DINO (all fp16), with fp16 text embeddings (``clipsam.dense.upstream_fp16``). Default
                (None): "fp16-upstream" for ``corrclip`` and ``rfclip`` on CUDA, where their upstream code runs in
                fp16, and "fp32" otherwise (``resolve_precision``).
            templates: template set name ("openai80", "openai7", "single") or list of templates.
            max_batch: most windows per encoder call (batched across windows, scales and images); default 4 on the
                CPU (larger batches fall out of cache there) and 32 on CUDA; 1 with ``precision="fp16-upstream"``
                (upstream's batch size: fp16 results depend on it at the rounding level).
            max_memory_mb: working-memory budget; when given, the batch size is derived from it (capped by
                max_batch) and large outputs are finished in strips that fit it.
            sam2: SAM2 refinement model ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
                or the SAM 2.0 "sam2_hiera_*" models), or None for dense CLIP labels only. Built once per Segmenter;
                ``corrclip``'s automatic masks use the same model.
            sam2_weights: SAM2 checkpoint file; None downloads the official checkpoint by name (online).
            sam2_random_weights: random SAM2 weights (tests and offline smoke runs; warns).
            refine: ``clipsam.refine.RefineConfig`` (prompt extraction and merge rules); None: its defaults; False:
                no refinement (the SAM2 model then serves only ``corrclip``'s automatic masks).
            text_cache_size: most vocabularies whose text embeddings stay cached (thread-safe LRU).
            prompts: ``clipsam.PromptConfig`` (context prompts, disambiguation, descriptions and TSE); its fields
                may also be given one by one (context_prompts="default", descriptions="voc20", ...).
            quick_gelu: the activation the CLIP weights were trained with: True (QuickGELU, OpenAI's weights), False
                (GELU), or None to detect it (``clipsam.models.load_clip``: a tag's own setting; for a file, OpenAI's
                weights by their content, with a warning when the file does not tell).
            dino_weights: ``method="corrclip"`` only: DINO ViT-B/8 weights, a local checkpoint (DINO's
                ``dino_vitbase8_pretrain.pth`` or a timm state dict, loaded with weights_only=True), "dino_vitb8"
                (the official file, downloaded when online) or None (random weights: tests; warns).
            text_disk_cache: the on-disk text-embedding cache (``clipsam.text_store``), shared with engine folders of
                the same weights: None (default: on, at ``$CLIPSAM_CACHE_DIR/text``, ``$XDG_CACHE_HOME/clipsam/text``
                or ``~/.cache/clipsam/text``, unless ``CLIPSAM_TEXT_CACHE=0``), False (off), True (on) or a folder.
            text_progress: show a progress bar on stderr while a large vocabulary's text is encoded (512 prompts
                or more; the CLI shows it unless --no-progress).
            cpu_ops: on the CPU, "compiled" runs resampling, PAMR and SFR's S_hat in the compiled host kernels that
                the ONNX Runtime engines share (default), "torch" in PyTorch's own ops (the reference; results
                differ by float32 rounding, and by fp16 rounding in a few S_hat entries). Unused on CUDA.
            overrides: ``DenseConfig`` fields to change (e.g. slide_crop=0, prob_thd=0.2, calibration="knn").
        """
        from .models import load_clip

        if prompts is not None and not isinstance(prompts, PromptConfig):
            raise InvalidTypeError(
                f"prompts must be a clipsam.PromptConfig or None, got {type(prompts).__name__} "
                "(its fields may also be given one by one: context_prompts='default', ...)"
            )
        prompt_kw = {k: overrides.pop(k) for k in PROMPT_FIELDS if k != "templates" and k in overrides}
        prompts = (prompts or PromptConfig()).replace(**prompt_kw) if prompt_kw else prompts
        if prompts is not None:
            prompts.resolve()  # a bad prompt file fails before any weights load

        if templates is not None:
            overrides["templates"] = templates
        cfg = dense_config(method, preset, **overrides)  # a bad template fails here, before any weights load
        precision = resolve_precision(precision, cfg.attention.base, device)
        _check_precision_method(precision, cfg)
        corr = cfg.attention.base == "corrclip"
        if corr and cfg.corrclip.corr_mask_source == "sam2" and sam2 is None:
            raise ConfigError(
                "method 'corrclip' makes SAM2 automatic masks (corr_mask_source='sam2'): pass sam2='sam2_hiera_l' "
                "(upstream's model; refine=False to skip refinement) or another SAM2 model, or set "
                "corr_mask_source='given' (masks per call) or 'none'"
            )
        if sam2 is None and (sam2_weights is not None or sam2_random_weights or refine is not None):
            raise ConfigError(
                "sam2_weights / sam2_random_weights / refine need sam2='sam2.1_hiera_t' (or another SAM2 model)"
            )
        _check_run_options(device, precision, max_batch, max_memory_mb, text_cache_size, cpu_ops)  # before any load
        resolve_text_store(text_disk_cache)  # a bad setting (argument or CLIPSAM_TEXT_CACHE) too
        if sam2 is not None:
            from .refine.config import RefineConfig
            from .refine.sam2_backend import MODELS

            if sam2 not in MODELS:
                raise ConfigError(f"unknown SAM2 model {sam2!r}; choose one of {sorted(MODELS)}")
            if refine is not None and refine is not False and not isinstance(refine, RefineConfig):
                raise InvalidTypeError(
                    f"refine must be a clipsam.refine.RefineConfig or None, got {type(refine).__name__}"
                )
        loaded = load_clip(clip, clip_weights, quick_gelu=quick_gelu)
        dino = None
        if corr:
            from .dense.dino import load_dino

            dino = load_dino(dino_weights)
        refiner = sam2_model = None
        if sam2 is not None:
            from .refine import Sam2Refiner

            sam2_model = Sam2Refiner.from_pretrained(
                sam2, weights=sam2_weights, device=device, random_weights=sam2_random_weights
            )
            refiner = None if refine is False else sam2_model
        return cls(
            loaded,
            cfg,
            device=device,
            precision=precision,
            max_batch=max_batch,
            max_memory_mb=max_memory_mb,
            refiner=refiner,
            refine_config=None if refine is False else refine,
            text_cache_size=text_cache_size,
            prompts=prompts,
            dino=dino,
            mask_sam2=sam2_model if corr else None,
            text_disk_cache=text_disk_cache,
            text_progress=text_progress,
            cpu_ops=cpu_ops,
        )

    @classmethod
    def from_engines(cls, folder, providers=None, **kwargs):
        """Run an engine folder written by ``clipsam export`` with ONNX Runtime and numpy only (no torch).

        See ``clipsam.engine.EngineSegmenter``: providers ("cpu", "cuda", "tensorrt"), allow_fallback, device,
        method/preset/precision/clip/sam2 (checked against the manifest), refine, trt_cache_dir, io_binding,
        max_batch, max_memory_mb, templates and host-side DenseConfig overrides. Same ``segment`` API and results.
        """
        from .engine.segmenter import EngineSegmenter

        if kwargs.get("precision") == UPSTREAM_FP16:
            raise ConfigError(
                f"precision={UPSTREAM_FP16!r} reproduces upstream's PyTorch fp16 arithmetic and runs only on the PyTorch "
                "backend (Segmenter.from_pretrained, or the CLI without --engines); engine folders are exported in "
                "precision 'fp32' or 'fp16' (clipsam export --precision)"
            )
        return EngineSegmenter.from_engines(folder, providers, **kwargs)

    def _set_backend(self) -> None:
        from .dense.backend import Encoder, TorchBackend
        from .dense.encoder import DenseEncoder

        self.encoder: Encoder
        self.automask = None
        if self.config.attention.base == "rfclip":
            from .dense.rfclip import RFClipEncoder

            self.encoder = RFClipEncoder(self.model.visual, self.config, upstream_fp16=self.precision == UPSTREAM_FP16)
        elif self.config.attention.base == "corrclip":
            from .dense.corrclip import CorrClipEncoder

            corr = self.config.corrclip
            if self.dino is None:
                raise ConfigError(
                    "method 'corrclip' needs its DINO ViT-B/8: build with Segmenter.from_pretrained(method='corrclip',"
                    " dino_weights=...) or pass dino=clipsam.dense.dino.load_dino(...)"
                )
            if corr.corr_mask_source == "sam2":
                if self.mask_sam2 is None:
                    raise ConfigError(
                        "corrclip's automatic masks (corr_mask_source='sam2') need a SAM2 model: pass sam2='sam2_hiera_l'"
                        " (upstream's) or another SAM2 model, or set corr_mask_source='given' (masks per call) or "
                        "'none'"
                    )
                from .refine.automask import AutoMaskGenerator, AutoMaskSettings

                self.automask = AutoMaskGenerator(self.mask_sam2, AutoMaskSettings.from_config(corr))
            upstream = self.precision == UPSTREAM_FP16
            self.encoder = CorrClipEncoder(self.model.visual, self.dino, self.config, upstream_fp16=upstream)
        else:
            self.encoder = DenseEncoder(self.model.visual, self.config)
        self.backend = TorchBackend(self.encoder, self.device, self.precision, self.cpu_ops)
        check_window_size(self.config.schedule.slide_crop, self.backend.spec.patch)

    def with_options(self, **overrides) -> Segmenter:
        """A segmenter sharing this one's model and text cache, with ``DenseConfig`` fields (and ``prompts=`` or
        ``PromptConfig`` fields) replaced.

        ``method=`` and ``preset=`` switch to that method's and preset's whole configuration
        (``dense_config(method, preset)``, this segmenter's templates kept), then the other fields given here apply;
        options changed earlier on this segmenter are not carried over."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        prompts = self._prompts_with(overrides)
        if not isinstance(prompts, PromptConfig):
            raise InvalidTypeError(f"prompts must be a clipsam.PromptConfig, got {type(prompts).__name__}")
        prompt_kw = {k: overrides.pop(k) for k in PROMPT_FIELDS if k != "templates" and k in overrides}
        base = self.config
        method, preset = overrides.pop("method", base.method), overrides.pop("preset", base.preset)
        if (method, preset) != (base.method, base.preset):  # the method's settings, not just its name
            base = dense_config(method, preset, templates=overrides.pop("templates", base.templates))
        new.config = base.replace(**overrides)
        _check_precision_method(new.precision, new.config)
        new._set_prompts(prompts.replace(**prompt_kw) if prompt_kw else prompts)
        new._set_backend()
        return new

    # -- vocabulary and text ----------------------------------------------------------------------------
    def text_embeddings(self, vocab: Vocabulary, progress: bool | None = None):
        """(Q, E) query embeddings on the device, computed once per vocabulary and prompt configuration, cached in
        memory and on disk (``text_disk_cache``). ``progress``: a bar on stderr while encoding (default: the
        segmenter's ``text_progress``)."""
        from .dense.text import embed_prompts, encode_queries, encode_queries_fp16

        vocab = Vocabulary.from_names(vocab)  # a Vocabulary, or anything classes= takes
        key = (self.arch, self.weights_id, vocab.queries, self.templates, self._prompts.key)
        emb = self.text_cache.get(key)
        if emb is not None:
            return emb
        import torch

        self._check_tokens(vocab, self.tokenizer)
        show = self.text_progress if progress is None else bool(progress)
        store, disk = self.text_store, self.text_disk_key(vocab)
        stored = store.load(disk, (vocab.num_queries, _text_width(self.model))) if store and disk else None
        half = self.precision == UPSTREAM_FP16  # upstream keeps its text embeddings in fp16
        if stored is not None:
            emb = torch.from_numpy(stored).to(self.device)
        elif self._prompts.is_default:
            encode = encode_queries_fp16 if half else encode_queries
            emb = encode(self.model, self.tokenizer, vocab, self.templates, self.device, show)
        else:
            emb = build_text_embeddings(
                lambda p: embed_prompts(self.model, self.tokenizer, p, self.device, show),
                vocab,
                self.templates,
                self._prompts,
                self.text_cache,
                (self.arch, self.weights_id),
            )
            emb = torch.from_numpy(emb).to(self.device)
        if store and disk and stored is None:
            store.save(disk, emb.float().cpu().numpy())  # fp16 values are exact in float32
        if half:
            emb = emb.half()
        self.text_cache.put(key, emb)
        return emb

    def text_disk_key(self, vocab: Vocabulary) -> str | None:
        """The vocabulary's key in the disk cache (``clipsam.text_store.text_cache_key``; the file is
        ``text_store.path(key)``), or None when the disk cache is off. The weights are hashed on the first call."""
        if self.text_store is None:
            return None
        if self._weights_sha256 is None:
            from .hashing import state_dict_sha256

            self._weights_sha256 = state_dict_sha256(self.model)
        model = {"arch": self.arch, "weights_sha256": self._weights_sha256, "quick_gelu": self.quick_gelu}
        # text is encoded in fp32 whatever the image precision, except with upstream's fp16 casts
        model["precision"] = UPSTREAM_FP16 if self.precision == UPSTREAM_FP16 else "fp32"
        return text_cache_key(model, vocab.queries, self.templates, self._prompts.key)

    def _backend_info(self) -> dict:
        return {"device": str(self.device)}

    def _runs_on_gpu(self) -> bool:
        return self.device.type == "cuda"


def _text_width(model) -> int | None:
    """E, the width of the text embeddings (the text projection's output), or None when the model has none."""
    proj = getattr(model, "text_projection", None)
    if proj is None:
        return None
    return int(proj.out_features if hasattr(proj, "out_features") else proj.shape[-1])
