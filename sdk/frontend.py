"""``SegmenterFront``: the public front shared by the PyTorch ``Segmenter`` and the ONNX Runtime
``EngineSegmenter`` (torch-free): vocabulary resolution, prompt set-up, ``segment`` / ``segment_batch`` /
``segment_stream`` / ``logits`` / ``warmup``, the pipeline core's plan -> encode -> finalise loop
(``clipsam.pipeline``), and the assembly of ``SegmentationResult`` objects (SAM2 refinement included).

A front end sets ``config``, ``backend`` (a ``clipsam.pipeline.DenseBackend``), ``text_cache``, ``refiner``,
``refine_config``, ``max_batch``, ``max_memory_mb`` and implements ``text_embeddings(vocab)`` and ``_info`` (its
fields of the result info).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import DenseConfig, positive_int
from .errors import ConfigError, InvalidInputError, InvalidTypeError, VocabularyError
from .masks import attach_regions, instance_map, mask_vote, per_image, resize_nearest
from .pipeline import finalize_members, infer_logits, max_batch_for_budget, plan_members, run_members
from .prefetch import decode_workers as decode_workers_for
from .prefetch import prefetched
from .preprocess import load_image, preprocess
from .prompting import PromptConfig
from .result import SegmentationResult
from .text import resolve_templates
from .vocabulary import Vocabulary, builtin_vocabulary, check_tokens, parse_class_file

if TYPE_CHECKING:
    from .ops.base import DenseBackend
    from .refine.config import RefineConfig
    from .refine.merge import MergeResult


class SegmenterFront:
    """Backend-independent public methods; see ``clipsam.Segmenter`` for their documentation."""

    # set by each front end's constructor
    config: DenseConfig
    backend: DenseBackend
    max_batch: int
    max_memory_mb: float | None
    refiner: Any  # a clipsam.refine.refiner.Refiner, or None
    automask: Any = None  # CorrCLIP's SAM2 automatic masks (clipsam.refine.automask.AutoMaskGenerator), or None
    refine_config: RefineConfig | None
    arch: str | None
    weights_id: str | None
    quick_gelu: bool | None
    precision: str

    def _runs_on_gpu(self) -> bool:
        """Whether the model computes on a GPU (then the host decodes ahead by default)."""
        raise NotImplementedError

    _no_vocabulary = (
        "this configuration has no preset vocabulary. Pass classes=['cat', 'sofa', ...], "
        "class_file=PATH, or build with a dataset preset."
    )

    def _set_prompts(self, prompts: PromptConfig) -> None:
        """Load the prompt files; the effective templates are the PromptConfig's, else the DenseConfig's."""
        if not isinstance(prompts, PromptConfig):
            raise InvalidTypeError(
                f"prompts must be a clipsam.PromptConfig, got {type(prompts).__name__} (its fields "
                "may also be given one by one: context_prompts='default', ...)"
            )
        self.prompts = prompts
        self._prompts = prompts.resolve()
        self.templates = self._prompts.templates or resolve_templates(self.config.templates)
        self.prompt_info = self._prompts.info()  # JSON-able, None for plain templates; in result info and eval reports
        self._descriptions_checked = False  # these prompts' descriptions: token lengths checked (``_check_tokens``)

    def _prompts_with(self, overrides: dict) -> PromptConfig:
        """``with_options``' PromptConfig: ``prompts=`` popped from ``overrides``, else this segmenter's. A PromptConfig's
        templates win over the DenseConfig's, so ``templates=`` given alone replaces them (it was ignored in silence
        when the segmenter had been built with ``PromptConfig(templates=...)``); given with such a ``prompts=``,
        it is an error."""
        explicit = "prompts" in overrides
        prompts = overrides.pop("prompts", self.prompts)
        if "templates" in overrides and isinstance(prompts, PromptConfig) and prompts.templates is not None:
            if explicit:
                raise ConfigError(
                    "templates are given twice, as templates= and in prompts=PromptConfig(templates=...): give them "
                    "once"
                )
            prompts = prompts.replace(templates=None)  # the DenseConfig's new templates apply
        return prompts

    def warmup(self, classes=None, class_file=None, sizes=None) -> dict:
        """Compile and load everything a first request would (text embeddings, Triton kernels, cuDNN plans,
        ONNX Runtime sessions and TensorRT engines, SAM2) by segmenting one synthetic image per size in ``sizes``
        ((H, W) pairs; default: the preset's resize target). Call once before sharing the segmenter between
        threads. See ``clipsam.warmup``."""
        from .warmup import warmup

        return warmup(self, classes, class_file, sizes)

    def _check_tokens(self, vocab: Vocabulary, tokenizer) -> None:
        """``clipsam.vocabulary.check_tokens`` on the texts this segmenter encodes (run before encoding a new
        vocabulary); skipped for tokenizers without ``encode`` (open_clip's Hugging Face tokenizers)."""
        encode, ctx = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
        if encode is None or not ctx:
            return
        texts = contexts = None
        if not self._prompts.is_default:
            plan = self._prompts.plan(vocab)
            texts, contexts = [p[0] for p in plan], [p[1] for p in plan]
        # the descriptions do not depend on the vocabulary: checked once per prompt configuration (``_set_prompts``
        # resets it; a benign race between threads checks twice)
        descriptions = None if self._descriptions_checked else self._prompts.description_texts()[0]
        check_tokens(vocab, self.templates, encode, int(ctx), texts, contexts, descriptions)
        self._descriptions_checked = True

    def vocabulary(self, classes=None, class_file=None) -> Vocabulary:
        """Resolve the vocabulary: explicit classes, a class file, or the preset's built-in vocabulary (checked against
        the refinement's class filters)."""
        if classes is not None and class_file is not None:
            raise VocabularyError("give either classes or class_file, not both")
        if classes is not None:
            vocab = Vocabulary.from_names(classes)
        elif class_file is not None:
            vocab = parse_class_file(class_file)
        elif self.config.vocabulary is None:
            raise VocabularyError("no classes given and " + self._no_vocabulary)
        else:
            vocab = builtin_vocabulary(self.config.vocabulary)
        if self.refiner is not None and self.refine_config is not None:
            self.refine_config.check_classes(vocab.num_classes)  # before any image is segmented
        self._check_vocabulary_size(vocab)
        return vocab

    def _check_vocabulary_size(self, vocab: Vocabulary) -> None:
        """An error when this front end cannot serve ``vocab``'s number of queries (none here; engines override)."""

    def segment(self, image, classes=None, class_file=None, masks=None) -> SegmentationResult:
        """Segment one image.

        Arguments:
            image: file path, PIL image, numpy HxWx3/HxW/HxWx4 (uint8 or float in [0, 1]) or tensor CxHxW.
            classes: list of names (or of synonym lists), or "cat, sofa, floor"; default: the preset's.
            class_file: path of a class file (one class per line, synonyms separated by ", ").
            masks: ``method="corrclip"`` only: the image's region masks at its original size, an (H, W) integer
                instance map (0 = unsegmented) or boolean masks ((M, H, W) array or list of (H, W) arrays); None:
                the configured source (``corr_mask_source``: SAM2 automatic masks by default).

        Returns:
            SegmentationResult with labels (H, W) int32 and scores (H, W) float32.
        """
        return self.segment_batch([image], classes, class_file, masks=None if masks is None else [masks])[0]

    def segment_batch(
        self, images, classes=None, class_file=None, progress: bool = False, masks=None
    ) -> list[SegmentationResult]:
        """Segment images with one vocabulary; windows of all images share encoder batches.

        ``images`` is a list or any iterable of images, or an (N, H, W, C) array / (N, C, H, W) tensor. Results are
        in input order and equal to segmenting each image alone. ``masks`` (``method="corrclip"``): None, or a list
        with one entry per image (``segment``'s ``masks``, or None for the configured source).
        """
        images = list(_image_iter(images, "segment_batch"))
        vocab = self.vocabulary(classes, class_file)
        rgbs = [load_image(img, what=f"image {i}" if len(images) > 1 else "image") for i, img in enumerate(images)]
        given = self._given_regions(rgbs, masks)
        return self._run(rgbs, vocab, progress, given) if rgbs else []

    def _given_regions(self, rgbs: list[np.ndarray], masks) -> list[np.ndarray | None]:
        """The user's masks as instance maps (None where the configured source applies), checked before any model
        work: wrong types, shapes, dtypes and empty masks, and masks for a method that does not use them."""
        cfg = self.config
        if masks is not None and cfg.attention.base != "corrclip":
            raise InvalidInputError(
                f"masks= is used by method='corrclip' only; this segmenter runs {cfg.method!r}. Drop masks=, or "
                "build with method='corrclip'"
            )
        given = per_image(masks, len(rgbs))
        order = cfg.corrclip.corr_paint_order
        out = [
            None if m is None else instance_map(m, rgb.shape[:2], order, f"masks of image {i}")
            for i, (m, rgb) in enumerate(zip(given, rgbs))
        ]
        if (
            cfg.attention.base == "corrclip"
            and cfg.corrclip.corr_mask_source == "given"
            and any(m is None for m in out)
        ):
            raise InvalidInputError(
                "corr_mask_source='given' needs masks= for every image (an instance map or boolean masks); pass "
                "them, or use corr_mask_source='sam2' (automatic masks) or 'none'"
            )
        return out

    def _region_maps(self, u8: list[np.ndarray], given: list[np.ndarray | None]) -> tuple[list[np.ndarray], list]:
        """CorrCLIP's instance map (H0, W0) per image: the user's, else the configured source's (SAM2 automatic
        masks, or none: all 0). Also returns the SAM2 embeddings computed (refinement reuses them)."""
        todo = [i for i, g in enumerate(given) if g is None]
        maps = list(given)
        embeddings: list = [None] * len(u8)
        if todo and self.config.corrclip.corr_mask_source == "sam2":
            done = self.automask.generate([u8[i] for i in todo])
            for i, (m, e) in zip(todo, done):
                maps[i], embeddings[i] = m, e
        return [np.zeros(u8[i].shape[:2], np.int32) if m is None else m for i, m in enumerate(maps)], embeddings

    def segment_stream(
        self,
        images,
        classes=None,
        class_file=None,
        batch_size: int = 8,
        progress: bool = False,
        masks=None,
        decode_workers: int | None = None,
    ):
        """Yield results for an iterable of images, in input order, holding at most ``batch_size`` images at once
        (plus, with decode threads, the next ``batch_size`` decoded ahead).

        ``masks`` (``method="corrclip"``): None, or an iterable with one entry per image, read in step with
        ``images`` (``segment``'s ``masks``, or None for the configured source); a length that differs from the
        images' is an error when one of the two runs out. ``decode_workers``: threads that read and decode the next
        images while the current chunk is segmented (``clipsam.prefetch``; default 2 when the model runs on a GPU,
        0 on the CPU, whose cores the model already uses; ``CLIPSAM_DECODE_WORKERS`` sets the default). Results
        and errors are the same either way.
        """
        batch_size = positive_int(batch_size, "batch_size")
        workers = decode_workers_for(decode_workers, self._runs_on_gpu())
        images = _image_iter(images, "segment_stream")
        vocab = self.vocabulary(classes, class_file)
        if masks is not None:
            if self.config.attention.base != "corrclip":
                self._given_regions([], masks)  # the error for masks given to another method
            if isinstance(masks, (np.ndarray, str, bytes)) or not hasattr(masks, "__iter__"):
                raise InvalidTypeError(
                    "masks of segment_stream must be an iterable with one entry per image (an instance map, boolean "
                    f"masks or None each), got {type(masks).__name__}"
                )
        mask_iter = iter(masks) if masks is not None else None
        chunk: list = []
        chunk_masks: list = []
        count = 0
        decoded = prefetched(_decode, images, batch_size if workers else 0, workers)
        for rgb in decoded:
            chunk.append(rgb)
            if mask_iter is not None:
                chunk_masks.append(_next_mask(mask_iter, count))
            count += 1
            if len(chunk) == batch_size:
                yield from self._run_chunk(chunk, vocab, progress, chunk_masks if mask_iter is not None else None)
                chunk, chunk_masks = [], []
        if mask_iter is not None:
            _no_more_masks(mask_iter, count)
        if chunk:
            yield from self._run_chunk(chunk, vocab, progress, chunk_masks if mask_iter is not None else None)

    def _run_chunk(self, rgbs: list[np.ndarray], vocab: Vocabulary, progress: bool, masks: list | None):
        return self._run(rgbs, vocab, progress, None if masks is None else self._given_regions(rgbs, masks))

    def logits(self, image, classes=None, class_file=None, masks=None) -> np.ndarray:
        """Query logits at the original image size: (Q, H, W) float32 (before the softmax), single scale, window by
        window (the reference path that ``segment`` equals). ``masks``: as ``segment``'s."""
        vocab = self.vocabulary(classes, class_file)
        rgb = load_image(image)
        given = self._given_regions([rgb], None if masks is None else [masks])
        backend, sc = self.backend, self.config.schedule
        x = preprocess(rgb, sc.short_side, sc.long_side, min_side=backend.spec.patch)
        text = self.text_embeddings(vocab)
        maps = None
        if self.config.attention.base == "corrclip":
            ids = self._region_maps([_uint8(rgb)], given)[0][0]
            maps = {"regions": backend.ops.from_numpy(resize_nearest(ids, x.shape[-2:]).astype(np.float32))}
        with backend.inference():
            out = infer_logits(backend, backend.ops.from_numpy(x), text, self.config, rgb.shape[:2], maps)
            return backend.ops.to_numpy(out)

    def _run(
        self, rgbs: list[np.ndarray], vocab: Vocabulary, progress: bool, given: list | None = None
    ) -> list[SegmentationResult]:
        """Plan windows x scales x flips of all images, encode them in shape-bucketed batches, finish each image.

        ``given``: per image the user's instance map or None (``_given_regions``; CorrCLIP only)."""
        cfg, backend = self.config, self.backend
        t0 = time.perf_counter()
        text = self.text_embeddings(vocab)
        corr = cfg.attention.base == "corrclip"
        if given is None:  # segment_stream: the configured source for every image (checked like segment_batch's)
            given = self._given_regions(rgbs, None)
        regions, embeddings = self._region_maps([_uint8(r) for r in rgbs], given) if corr else (None, None)
        max_batch = self.max_batch
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, unit="window", desc="clipsam", leave=False)
        dense = []
        try:
            with backend.inference():
                members = plan_members(rgbs, cfg, backend.spec.patch, backend.ops)
                if regions is not None:
                    attach_regions(members, regions, backend.ops)
                sc = cfg.schedule
                window = (sc.slide_crop, sc.slide_crop) if sc.slide_crop > 0 else tuple(members[0].pixels.shape[-2:])
                if self.max_memory_mb is not None:
                    max_batch = min(
                        max_batch,
                        max_batch_for_budget(self.max_memory_mb, cfg, backend.spec, vocab.num_queries, window),
                    )
                run_members(backend, members, text, cfg, max_batch, bar)
                strip_mb = self.max_memory_mb / 4 if self.max_memory_mb is not None else 256.0
                for i, rgb in enumerate(rgbs):
                    mine = [m for m in members if m.image == i]
                    guides = [backend.ops.flip_w(m.pixels) if m.flip else m.pixels for m in mine]
                    out = finalize_members(
                        backend.ops,
                        [m.logits for m in mine],
                        [m.weight for m in mine],
                        guides,
                        rgb.shape[:2],
                        cfg,
                        vocab,
                        strip_mb,
                        return_probs=self.refiner is not None,
                        fp16_tail=bool(getattr(backend, "fp16_tail", False)),
                        resize=getattr(backend, "resize_final_logits", None),
                    )
                    if regions is not None and cfg.corrclip.corr_mask_vote:  # labels only; scores stay per pixel
                        labels = mask_vote(out[0], regions[i], vocab.num_classes, cfg.corrclip.corr_unsegmented)
                        out = (labels, *out[1:])
                    dense.append(out)
                    for m in mine:
                        m.logits = m.pixels = None
        finally:
            if bar is not None:
                bar.close()
        results = self._results(rgbs, vocab, dense, t0, self._info(max_batch), embeddings)
        if regions is not None and given is not None:  # where each image's regions came from, and how many
            source = self.config.corrclip.corr_mask_source
            for res, g, ids in zip(results, given, regions):
                res.info["corrclip"] = {"masks": "given" if g is not None else source, "regions": int(ids.max())}
        return results

    # -- front-end hooks --------------------------------------------------------------------------------------
    def text_embeddings(self, vocab: Vocabulary):
        """(Q, E) unit query embeddings in the backend's array type, cached per vocabulary and prompts."""
        raise NotImplementedError

    def _info(self, max_batch: int) -> dict:
        """The front end's fields of ``SegmentationResult.info``."""
        cfg = self.config
        return {
            "method": cfg.method,
            "preset": cfg.preset,
            "clip": self.arch,
            "weights": self.weights_id,
            "quick_gelu": self.quick_gelu,
            **self._backend_info(),
            "precision": self.precision,
            "max_batch": max_batch,
        }

    def _backend_info(self) -> dict:
        """Where this front end runs (device, or runtime and providers), for ``SegmentationResult.info``."""
        raise NotImplementedError

    def _results(
        self, rgbs: list[np.ndarray], vocab: Vocabulary, dense: list[tuple], t0: float, info: dict, embeddings=None
    ) -> list[SegmentationResult]:
        """Refine (when a SAM2 refiner is set) and wrap each image's dense (labels, scores[, probs]).

        ``info`` holds the backend's fields; the time per image since ``t0``, the DenseConfig, the prompt options
        and the refinement summary are added here.
        """
        u8 = [_read_only(_uint8(rgb)) for rgb in rgbs]
        refined: list[MergeResult | None] = [None] * len(rgbs)
        if self.refiner is not None:
            refined = self.refiner.refine(
                u8, [d[0] for d in dense], [d[2] for d in dense], self.refine_config, embeddings=embeddings
            )
        elapsed = 1000 * (time.perf_counter() - t0) / len(rgbs)
        config = {k: v for k, v in self.config.to_dict().items() if k != "templates"}
        results = []
        for i in range(len(rgbs)):
            labels, scores = dense[i][0], dense[i][1]
            meta = {**info, "time_ms": round(elapsed, 2), "config": config}
            if self.prompt_info is not None:
                meta["prompts"] = self.prompt_info
            merged = refined[i]
            if merged is not None:
                meta["refine"] = {"sam2": self.refiner.name, "instances": len(merged.instances)}
                results.append(
                    SegmentationResult(
                        merged.labels.astype(np.int32),
                        scores,
                        vocab.classes,
                        u8[i],
                        meta,
                        dense_labels=labels,
                        instances=list(merged.instances),
                        max_memory_mb=self.max_memory_mb,
                    )
                )
            else:
                results.append(
                    SegmentationResult(labels, scores, vocab.classes, u8[i], meta, max_memory_mb=self.max_memory_mb)
                )
        return results


def _uint8(rgb: np.ndarray) -> np.ndarray:
    """The image as uint8 (float images in 0 .. 255 are rounded)."""
    return rgb if rgb.dtype == np.uint8 else np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: ``SegmentationResult.image`` may share the caller's buffer and must not write to it."""
    v = a.view()
    v.flags.writeable = False
    return v


def _image_iter(images, method: str):
    """An iterator over the images of ``segment_batch`` / ``segment_stream``: any iterable of images, where a 4-D
    array or tensor is a batch; a single image is refused (iterating it would give rows or characters)."""
    module = type(images).__module__
    ndim = getattr(images, "ndim", None) if isinstance(images, np.ndarray) or module.startswith("torch") else None
    if isinstance(images, (str, bytes, os.PathLike)) or module.startswith("PIL.") or (ndim is not None and ndim != 4):
        raise InvalidTypeError(
            f"{method} takes a list (or any iterable) of images, got a single image ({type(images).__name__}"
            f"{'' if ndim is None else f' with {ndim} dimensions'}). Use segment(image) for one image, or {method}"
            "([image, ...]); a batch array must be (N, H, W, C), a batch tensor (N, C, H, W)."
        )
    try:
        return iter(images)
    except TypeError:
        raise InvalidTypeError(
            f"{method} takes a list (or any iterable) of images, got {type(images).__name__}."
        ) from None


def _decode(img) -> np.ndarray:
    return load_image(img, what=f"image {img}" if isinstance(img, (str, os.PathLike)) else "image")


def _next_mask(masks, index: int):
    try:
        return next(masks)
    except StopIteration:
        raise InvalidInputError(
            f"segment_stream: masks ran out at image {index}: give one entry per image (None for the configured "
            "mask source)"
        ) from None


def _no_more_masks(masks, count: int) -> None:
    try:
        next(masks)
    except StopIteration:
        return
    raise InvalidInputError(
        f"segment_stream: there are more masks than images ({count} images); give one entry per image"
    )
