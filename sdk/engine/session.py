"""ONNX Runtime sessions for the exported graphs: provider selection, TensorRT profiles and cache, IO binding.

Providers are named in full ("CUDAExecutionProvider") or short ("cpu", "cuda", "tensorrt"/"trt"), in priority
order; the CPU provider is always appended last, as ONNX Runtime does. After a session is created its
``get_providers()`` is compared with the request: a requested provider that is not in this ONNX Runtime build, or
that the session did not load (no GPU, missing CUDA/cuDNN/TensorRT libraries), raises ``ProviderError`` unless
``allow_fallback`` is set, which warns once per provider instead. ``GraphSession.providers`` reports what is really
in use.

TensorRT: every dynamic input gets a min/opt/max profile from the manifest (written by the exporter from the
scheduler's batch sizes, ``scheduler.py``), engines are cached in ``trt_cache_dir``, fp16 engines only for fp16
exports. IO binding (default on when CUDA or TensorRT is in use): inputs are copied to the device once, outputs
stay there and are copied to the host only when read; ``run(..., keep=...)`` returns device-resident ``OrtValue``s
that the next graph binds directly (the SFR trunk outputs). The CUDA path is implemented but untested on this
project's CPU-only CI; the same code runs with ``device="cpu"`` in the tests.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineFileError, ProviderError, first_line

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_warned: set[str] = set()
_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
        from ..errors import missing_dependency

        raise missing_dependency("onnxruntime", "gpu", "The exported-engine runtime") from e
    return ort


def resolve_providers(names) -> tuple[str, ...]:
    """Full provider names in priority order, CPU last; unknown short names are an error."""
    if names is None:
        names = ["cpu"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, (list, tuple)):
        raise ProviderError(
            f"providers must be a list of provider names or a comma-separated string, got "
            f"{type(names).__name__} {names!r:.80}"
        )
    out = []
    for n in names:
        full = PROVIDER_ALIASES.get(n.lower(), n) if isinstance(n, str) else None
        if not full or not full.endswith("ExecutionProvider"):
            raise ProviderError(
                f"unknown execution provider {n!r}; use one of {sorted(PROVIDER_ALIASES)} or a full "
                "ONNX Runtime provider name such as 'CUDAExecutionProvider'"
            )
        if full not in out:
            out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return tuple(out)


@dataclass(frozen=True)
class ProviderConfig:
    """How sessions are created.

    Attributes:
        providers: requested providers in priority order (``resolve_providers``).
        allow_fallback: a requested provider that cannot load warns instead of raising.
        trt_cache_dir: TensorRT engine (and timing) cache folder; None: ``<engine folder>/trt_cache``.
        io_binding: bind inputs/outputs on the device; None: when CUDA or TensorRT is in use.
        device_id: GPU index for CUDA/TensorRT.
        intra_op_threads: ONNX Runtime intra-op threads (0: its default, all cores).
        provider_options: extra options per provider name, merged over clipsam's.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    allow_fallback: bool = False
    trt_cache_dir: str | None = None
    io_binding: bool | None = None
    device_id: int = 0
    intra_op_threads: int = 0
    provider_options: dict = field(default_factory=dict, hash=False, compare=False)


def _trt_shapes(profile: dict, key: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in profile[key].items())


class GraphSession:
    """One exported graph in an ``onnxruntime.InferenceSession``.

    Arguments:
        path: the ``.onnx`` file.
        entry: the graph's manifest entry (``inputs``, ``outputs``, optional TensorRT ``profile``).
        config: providers and options.
        fp16: the graph was exported in fp16 (TensorRT builds fp16 engines).
    """

    def __init__(self, path, entry: dict, config: ProviderConfig, fp16: bool = False):
        ort = _ort()
        self.path = Path(path)
        self.name = entry.get("name", self.path.stem)
        requested = resolve_providers(config.providers)
        available = ort.get_available_providers()
        usable = []
        for p in requested:
            if p in available:
                usable.append(p)
                continue
            self._missing(
                p,
                config,
                f"{p} is not available in this ONNX Runtime build (onnxruntime "
                f"{ort.__version__}, device {ort.get_device()}; available: {available})",
            )
        options = [self._options(p, entry, config, fp16) for p in usable]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = config.intra_op_threads
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=list(zip(usable, options)))
        except Exception as e:
            raise EngineFileError(
                f"ONNX Runtime cannot load {self.path} ({first_line(e, 300)}). The file is corrupt "
                "or was not written by 'clipsam export': export the engines again."
            ) from e
        self.providers = tuple(self.session.get_providers())
        for p in usable:
            if p not in self.providers:
                self._missing(
                    p,
                    config,
                    f"requested {p} but the session for {self.path.name} uses only "
                    f"{', '.join(self.providers)}: ONNX Runtime could not load it (no GPU, or "
                    "missing CUDA/cuDNN/TensorRT libraries; see the ONNX Runtime log)",
                )
        got_in = tuple(i.name for i in self.session.get_inputs())
        got_out = tuple(o.name for o in self.session.get_outputs())
        if got_in != tuple(entry["inputs"]) or got_out != tuple(entry["outputs"]):
            raise EngineFileError(
                f"{self.path.name} has inputs {got_in} and outputs {got_out}; the manifest says "
                f"{tuple(entry['inputs'])} -> {tuple(entry['outputs'])}. Export the engines again."
            )
        self._types = {i.name: _NP_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        on_gpu = any(p in _GPU for p in self.providers)
        self.io_binding = on_gpu if config.io_binding is None else bool(config.io_binding)
        self.device = ("cuda", config.device_id) if on_gpu else ("cpu", 0)

    @staticmethod
    def _missing(provider: str, config: ProviderConfig, message: str) -> None:
        if not config.allow_fallback:
            raise ProviderError(
                message + ". Pass allow_fallback=True (--allow-provider-fallback) to run on the "
                "remaining providers instead."
            )
        if message not in _warned:
            _warned.add(message)
            warnings.warn("clipsam: " + message + "; falling back (allow_fallback=True).", RuntimeWarning, stacklevel=4)

    @staticmethod
    def _options(provider: str, entry: dict, config: ProviderConfig, fp16: bool) -> dict:
        opts: dict = {}
        if provider == "CUDAExecutionProvider":
            opts = {"device_id": config.device_id}
        elif provider == "TensorrtExecutionProvider":
            cache = config.trt_cache_dir or str(Path(entry.get("folder", ".")) / "trt_cache")
            Path(cache).mkdir(parents=True, exist_ok=True)
            opts = {
                "device_id": config.device_id,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
                "trt_fp16_enable": bool(fp16),
            }
            profile = entry.get("profile")
            if profile:
                opts.update(
                    trt_profile_min_shapes=_trt_shapes(profile, "min"),
                    trt_profile_opt_shapes=_trt_shapes(profile, "opt"),
                    trt_profile_max_shapes=_trt_shapes(profile, "max"),
                )
        opts.update(config.provider_options.get(provider, {}))
        return opts

    def run(self, feeds: dict, keep: tuple[str, ...] = ()) -> dict:
        """Run the graph.

        Arguments:
            feeds: input name -> numpy array (cast to the graph's input type) or ``OrtValue`` (bound as is).
            keep: outputs to return as device-resident ``OrtValue``s (IO binding only); others come back as numpy.

        Returns:
            output name -> numpy array (or OrtValue for names in ``keep``).
        """
        ort = _ort()
        arrays = {
            k: (v if isinstance(v, ort.OrtValue) else np.ascontiguousarray(v, dtype=self._types[k]))
            for k, v in feeds.items()
        }
        if not self.io_binding:
            arrays = {k: (v.numpy() if isinstance(v, ort.OrtValue) else v) for k, v in arrays.items()}
            names = [o.name for o in self.session.get_outputs()]
            return dict(zip(names, self.session.run(names, arrays)))
        kind, dev = self.device
        binding = self.session.io_binding()
        for k, v in arrays.items():
            binding.bind_ortvalue_input(
                k, v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v, kind, dev)
            )
        names = [o.name for o in self.session.get_outputs()]
        for n in names:
            binding.bind_output(n, kind, dev)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {n: (v if n in keep else v.numpy()) for n, v in zip(names, values)}
