"""``Service``: one replica's segmenter, its per-request variants, batch execution and statistics (no Ray, no HTTP).

The HTTP app (``clipsam.serve.app``) validates each request into a ``Job`` and hands Ray Serve's batches to
``Service.run_batch``, which groups the jobs by (vocabulary, options), calls ``segment_batch`` once per group and
returns one ``Outcome`` per job: a result, or the error of that job alone. A group that fails is retried job by
job, so one bad request never fails the others of its batch.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .errors import ServeError, error_status
from .limits import Limits

_VARIANTS = 16  # per-request option combinations kept built (each shares the model; LRU)


@dataclass(frozen=True)
class ServeConfig:
    """How a replica serves (everything but the model, which the segmenter factory builds)."""

    limits: Limits = Limits()
    max_batch: int | None = None  # most requests segmented together (Ray Serve's max_batch_size); None: 8 on a GPU,
    # 1 on the CPU, where batching costs throughput (benchmarks/RESULTS.md, bench_serve)
    batch_wait_ms: float = 10.0  # longest a request waits for others to join its batch
    max_ongoing_requests: int | None = None  # per replica (default max(32, 4 * max_batch)); more wait in Ray's queue
    classes: tuple[str, ...] | None = None  # default vocabulary as class-file lines; None: the preset's
    methods: tuple[str, ...] = ()  # methods a request may choose besides the server's own
    presets: tuple[str, ...] = ()  # presets a request may choose besides the server's own
    warmup_sizes: tuple[tuple[int, int], ...] | None = None  # (H, W) run by warmup(); None: 4:3 at the short side
    api_key_sha256: str | None = None  # SHA-256 of the API key; None: no key (see clipsam.serve.auth)

    def __post_init__(self):
        if (self.max_batch is not None and self.max_batch < 1) or not 0 <= self.batch_wait_ms < math.inf:
            raise ConfigError(
                f"max_batch must be >= 1 and batch_wait_ms >= 0 and finite, got {self.max_batch} and "
                f"{self.batch_wait_ms}"
            )
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < (self.max_batch or 8):
            raise ConfigError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least max_batch "
                f"({self.max_batch or 8}), or batches can never fill"
            )

    @property
    def ongoing(self) -> int:
        return self.max_ongoing_requests or max(32, 4 * (self.max_batch or 8))


@dataclass
class Job:
    """A validated request waiting for a batch."""

    rgb: np.ndarray  # (H, W, 3) uint8
    vocab: object  # clipsam.vocabulary.Vocabulary
    options: tuple  # sorted (name, value) pairs of the per-request options
    arrived: float = dataclasses.field(default_factory=time.perf_counter)


@dataclass
class Outcome:
    """What became of one job: ``result`` or ``error``, and the batch it ran in."""

    result: object = None  # clipsam.SegmentationResult
    error: ServeError | None = None
    batch: dict = dataclasses.field(default_factory=dict)  # {"id", "size", "group"}
    queue_ms: float = 0.0
    segment_ms: float = 0.0


class Service:
    """One segmenter served: per-request variants, batches, warm-up state, description and statistics.

    Arguments:
        segmenter: a ``clipsam.Segmenter`` or ``EngineSegmenter``.
        config: ``ServeConfig``.
        replica: a name for this replica in ``describe()`` and ``stats()``.
    """

    def __init__(self, segmenter, config: ServeConfig = ServeConfig(), replica: str = "local"):
        from ..config import METHODS, PRESETS
        from ..text import TEMPLATE_SETS
        from ..vocabulary import parse_class_lines

        self.segmenter, self.config, self.replica = segmenter, config, replica
        cfg = segmenter.config
        self.engines = hasattr(segmenter, "manifest")
        self.method, self.preset = cfg.method, cfg.preset
        for what, extra, known in (
            ("method", config.methods, tuple(METHODS)),
            ("preset", config.presets, PRESETS[cfg.method]),
        ):
            bad = [x for x in extra if x not in known]
            if bad:
                raise ConfigError(f"unknown {what}(s) {bad}; choose from {', '.join(known)}")
        self.methods = tuple(dict.fromkeys((self.method,) + tuple(config.methods)))
        self.presets = tuple(dict.fromkeys(((self.preset,) if self.preset else ()) + tuple(config.presets)))
        if self.engines and (len(self.methods) > 1 or len(self.presets) > 1):
            raise ConfigError(
                "an engine folder serves the method and preset it was exported for; per-request methods "
                "and presets need the PyTorch backend"
            )
        self.templates = tuple(TEMPLATE_SETS)
        self.max_batch = config.max_batch or (8 if _on_gpu(segmenter) else 1)
        self.default_vocab = parse_class_lines("\n".join(config.classes), "--classes") if config.classes else None
        self._overrides = {} if self.engines else self._server_overrides(cfg)
        self._variants: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "batches": 0,
            "batch_sizes": Counter(),
            "group_sizes": Counter(),
            "requests": Counter(),
        }
        self._seq = 0
        self.started = time.time()
        self.warmup_info: dict | None = None

    @staticmethod
    def _server_overrides(cfg) -> dict:
        """Fields the server changed from its method's preset (scales, flip, calibration, ...): kept when a request
        picks another method or preset."""
        from ..config import dense_config

        ref, mine = dense_config(cfg.method, cfg.preset).options(), cfg.options()
        return {
            k: v for k, v in mine.items() if k not in ("templates", "method", "preset", "vocabulary") and v != ref[k]
        }

    # -- readiness ---------------------------------------------------------------------------------------
    def warmup(self) -> dict:
        """``segmenter.warmup`` with the default vocabulary and the configured sizes; the service is ready after."""
        vocab: Any = self.default_vocab
        if vocab is None and self.segmenter.config.vocabulary is None:
            vocab = ["object", "background"]  # a request's own vocabulary is encoded on its first use
        sizes = self.config.warmup_sizes
        if sizes is None:  # a 4:3 landscape photo at the preset's short side (whole-image methods compile per shape)
            short = int(self.segmenter.config.schedule.short_side)
            sizes = ((short, (4 * short + 2) // 3),)
        t0 = time.perf_counter()
        info = self.segmenter.warmup(classes=vocab, sizes=sizes)
        self.warmup_info = {**info, "seconds": round(time.perf_counter() - t0, 3)}
        return self.warmup_info

    @property
    def ready(self) -> bool:
        return self.warmup_info is not None

    def require_ready(self) -> None:
        if not self.ready:
            raise ServeError(503, "not_ready", "the model is still warming up; retry when GET /v1/ready answers 200")

    # -- requests ----------------------------------------------------------------------------------------
    def policy(self) -> dict:
        """What a request may choose (``clipsam.serve.request.parse_options``)."""
        return {
            "methods": self.methods,
            "presets": self.presets,
            "templates": self.templates,
            "instances": self.segmenter.refiner is not None,
        }

    def variant(self, options: tuple):
        """The segmenter for a request's options (sorted (name, value) pairs): this one, or a cached copy sharing its
        model with method, preset, templates or thresholds changed."""
        if not options:
            return self.segmenter
        with self._lock:
            seg = self._variants.get(options)
            if seg is not None:
                self._variants.move_to_end(options)
                return seg
        opts = dict(options)
        fields = {}
        method, preset = opts.pop("method", self.method), opts.pop("preset", self.preset)
        if (method, preset) != (self.method, self.preset):
            from ..config import dense_config

            fields = {k: v for k, v in dense_config(method, preset).options().items() if k != "templates"}
            fields.update(self._overrides)
        fields.update(opts)
        seg = self.segmenter.with_options(**fields)
        with self._lock:
            self._variants[options] = seg
            while len(self._variants) > _VARIANTS:
                self._variants.popitem(last=False)
        return seg

    def vocabulary(self, vocab, options: tuple):
        """The request's vocabulary: its own, else the server's --classes, else its (or the server's) preset's."""
        if vocab is not None:
            return vocab
        if self.default_vocab is not None and "preset" not in dict(options):
            return self.default_vocab
        try:
            seg = self.variant(options)
        except Exception as e:  # noqa: BLE001 - an option the backend refuses
            raise error_status(e) from None
        if seg.config.vocabulary is None:
            raise ServeError(
                400,
                "empty_vocabulary",
                "no classes given and this server has no default vocabulary; "
                'name the classes, e.g. classes="cat, sofa, floor"',
            )
        return seg.vocabulary()

    def run_batch(self, jobs: list[Job]) -> list[Outcome]:
        """Segment a batch: one ``segment_batch`` per (vocabulary, options) group, failures isolated per job."""
        start = time.perf_counter()
        with self._lock:
            self._seq += 1
            batch_id = self._seq
        groups: OrderedDict = OrderedDict()
        for i, job in enumerate(jobs):
            groups.setdefault((job.vocab, job.options), []).append(i)
        out = [Outcome(queue_ms=1000 * (start - j.arrived)) for j in jobs]
        for (vocab, options), idx in groups.items():
            t0 = time.perf_counter()
            try:
                seg = self.variant(options)
                results = seg.segment_batch([_decoded(jobs[i].rgb) for i in idx], classes=vocab)
                for i, res in zip(idx, results):
                    out[i].result = res
            except Exception as e:  # noqa: BLE001 - isolate: retry one by one below
                if len(idx) == 1:
                    out[idx[0]].error = error_status(e)
                else:
                    for i in idx:
                        try:
                            out[i].result = self.variant(options).segment(_decoded(jobs[i].rgb), classes=vocab)
                        except Exception as e1:  # noqa: BLE001
                            out[i].error = error_status(e1)
            ms = 1000 * (time.perf_counter() - t0)
            for i in idx:
                out[i].segment_ms = ms
                out[i].batch = {"id": batch_id, "size": len(jobs), "group": len(idx)}
        with self._lock:
            self._stats["batches"] += 1
            self._stats["batch_sizes"][len(jobs)] += 1
            for idx in groups.values():
                self._stats["group_sizes"][len(idx)] += 1
        return out

    def count(self, code: str) -> None:
        """Count one answered request by outcome code ("ok" or the error code)."""
        with self._lock:
            self._stats["requests"][code] += 1

    # -- description -------------------------------------------------------------------------------------
    def describe(self) -> dict:
        from .. import __version__

        seg, cfg = self.segmenter, self.segmenter.config
        vocab = self.default_vocab
        if vocab is None and cfg.vocabulary is not None:
            vocab = seg.vocabulary()
        return {
            "clipsam": __version__,
            "backend": "onnxruntime" if self.engines else "pytorch",
            "model": {"clip": seg.arch, "weights": seg.weights_id},
            "method": self.method,
            "preset": self.preset,
            "precision": seg.precision,
            "device": str(getattr(seg, "device", "")) or None,
            "providers": sorted({p for ps in seg.providers.values() for p in ps}) if self.engines else None,
            "refine": getattr(seg.refiner, "name", None) if seg.refiner is not None else None,
            "vocabulary": list(vocab.classes) if vocab is not None else None,
            "choices": {
                "methods": list(self.methods),
                "presets": list(self.presets),
                "templates": list(self.templates),
                "return": ["labels", "rle", "scores", "overlay"] + (["instances"] if seg.refiner else []),
            },
            "limits": self.config.limits.to_json(),
            "batching": {
                "max_batch": self.max_batch,
                "batch_wait_ms": self.config.batch_wait_ms,
                "max_ongoing_requests": self.config.ongoing,
                "encoder_max_batch": seg.max_batch,
            },
            "auth": self.config.api_key_sha256 is not None,
            "replica": self.replica,
            "ready": self.ready,
        }

    def stats(self) -> dict:
        with self._lock:
            s = self._stats
            return {
                "replica": self.replica,
                "uptime_s": round(time.time() - self.started, 1),
                "requests": dict(s["requests"]),
                "batches": s["batches"],
                "batch_sizes": {str(k): v for k, v in sorted(s["batch_sizes"].items())},
                "group_sizes": {str(k): v for k, v in sorted(s["group_sizes"].items())},
                "max_batch": self.max_batch,
                "batch_wait_ms": self.config.batch_wait_ms,
            }


def _on_gpu(segmenter) -> bool:
    """Whether the segmenter computes on a GPU (CUDA device, or a CUDA/TensorRT ONNX Runtime provider)."""
    device = getattr(segmenter, "device", None)
    if getattr(device, "type", None) == "cuda":
        return True
    providers = getattr(getattr(segmenter, "provider_config", None), "providers", ())
    return any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers)


def _decoded(rgb: np.ndarray):
    """A decoded upload (HxWx3 by construction) as a PIL image: segmenters read it as HxWxC without the ambiguity
    check that caller arrays of 1, 3 or 4 pixels a side get."""
    from PIL import Image

    return Image.fromarray(rgb)
