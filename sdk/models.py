"""Building OpenCLIP ViT models and loading their weights safely.

``load_clip(arch, weights)`` accepts:

* ``weights=None``: random initialisation (tests, offline smoke runs), with one loud warning;
* an open_clip ``pretrained`` tag such as ``"openai"`` or ``"laion2b_s34b_b88k"``: downloaded by open_clip
  into its cache when online, then read through the same safe loader as a local file;
* a local checkpoint file in either format:
    - OpenAI format: the state dict of openai/CLIP (optionally as the official TorchScript archive),
      fp16 Linear/Conv weights, extra integer keys ``input_resolution``/``context_length``/``vocab_size``;
    - open_clip format: a plain ``model.state_dict()``, or a training checkpoint ``{"state_dict": ...}``
      whose keys may carry a ``module.`` prefix.

State dicts are read with ``torch.load(..., weights_only=True)``. TorchScript archives (the official OpenAI
files) cannot be read that way; they are opened with ``torch.jit.load``, which compiles TorchScript but
runs no Python code, and only their parameters are kept. A checkpoint that does not fit the architecture
raises ``CheckpointError`` listing expected vs found shapes.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, ConfigError, InvalidTypeError, first_line, missing_dependency
from .hashing import file_sha256
from .paths import check_usable, input_error, is_url, shown

_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_OPEN_CLIP_ONLY = ("ls_1.gamma", "ls_2.gamma", "logit_bias", "attn_pool", "visual.trunk.", "text.transformer.")


@dataclass(frozen=True)
class LoadedClip:
    """An OpenCLIP model ready for dense inference, with where its weights came from."""

    model: object  # open_clip.model.CLIP, eval mode, fp32
    arch: str  # open_clip model name
    weights_id: str  # "random:<seed>", "<tag>", or "file:<sha256 prefix>"; keys the text-embedding cache
    quick_gelu: bool


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise missing_dependency("torch", "torch", "The PyTorch backend") from e
    return torch


def _open_clip():
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover
        raise missing_dependency("open_clip_torch", "torch", "The PyTorch backend") from e
    return open_clip


def _file_id(path: Path) -> str:
    return "file:" + file_sha256(path)[:16]


def checkpoint_file(value, what: str = "checkpoint") -> Path:
    """The Path of an existing, non-empty checkpoint file, or ``CheckpointError`` saying what ``value`` is instead
    (a URL, a folder and the weight files in it, a missing or empty file); ``InvalidTypeError`` for a non-path."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidTypeError(
            f"{what} must be a file path (str or os.PathLike), got {type(value).__name__} {value!r:.80}"
        )
    path = Path(os.fspath(value)).expanduser()
    if is_url(value) or not path.is_file():
        hint = ""
        if path.is_dir():
            found = sorted(f.name for f in path.iterdir() if f.suffix in _WEIGHT_SUFFIXES)[:5]
            hint = f"It holds {', '.join(found)}: pass one of them." if found else "Pass the weights file itself."
        raise input_error(
            value,
            what,
            CheckpointError,
            folder_hint=hint,
            missing_hint="Pass an existing file or an open_clip pretrained tag.",
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{what} {shown(path)} is empty (0 bytes): the download or copy did not finish. Copy or download it again."
        )
    return path


def weights_file(weights) -> Path | None:
    """The checkpoint file that CLIP weights ``weights`` name, checked as far as reading its first bytes (it exists,
    is not empty, is a torch or safetensors file), or None when ``weights`` is an open_clip pretrained tag; a value
    that looks like a path (a URL, a folder, a path separator, a weights suffix) but names no usable file is a
    ``CheckpointError``. Nothing is loaded: ``clipsam serve`` checks its ``--weights`` with this before Ray starts.
    """
    path = check_usable(Path(os.fspath(weights)).expanduser(), "checkpoint", CheckpointError)
    if path.is_file():
        path = checkpoint_file(path)
        _weights_format(path, "checkpoint")
        return path
    if is_url(weights) or path.is_dir() or os.sep in os.fspath(weights) or path.suffix in _WEIGHT_SUFFIXES:
        checkpoint_file(weights)  # raises: a URL, a folder, or a missing file
    return None


def _weights_format(path: Path, what: str) -> str:
    """ "torch" (``torch.save``: a zip archive, or a pickle before torch 1.6) or "safetensors", from the file's first
    bytes; anything else (a JSON or text file, an image, an ONNX graph) is a ``CheckpointError`` saying what it is
    not, rather than the "pickled objects" or "corrupt" that ``torch.load`` would report."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a zip archive, or a pickle: the PROTO opcode and a protocol number
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30:
        return "safetensors"  # an 8-byte little-endian header length, then the JSON header
    text = all(32 <= b < 127 or b in b"\t\n\r" for b in head)
    looks = " (text, e.g. JSON or a config)" if text else ""
    raise CheckpointError(
        f"{what} {shown(path)} is not a weights file: PyTorch's torch.save writes a zip archive (or a pickle before torch "
        f"1.6) and safetensors files start with their header's length, but this one starts with {head[:12]!r}"
        f"{looks}. Pass the .pt/.pth/.bin/.safetensors weights file itself."
    )


def torch_load(path: Path, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` (no pickled code runs), or ``safetensors`` for a .safetensors file,
    with one-line errors: a file holding pickled Python objects is refused saying how to convert a trusted one; a
    file of another kind says so (``_weights_format``); anything else is corrupt."""
    import pickle

    torch = _torch()
    if _weights_format(path, what) == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - open_clip_torch depends on safetensors
            raise missing_dependency("safetensors", "torch", f"Reading {path.name}") from e
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(
                f"cannot read {what} {shown(path)} (a corrupt or truncated safetensors file): {first_line(e)}"
            ) from e
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise CheckpointError(
                f"cannot read {what} {shown(path)} (corrupt, truncated, or not a PyTorch weights file): {first_line(e)}"
            ) from e
        found = re.search(r"GLOBAL (\S+)", str(e))
        raise CheckpointError(
            f"{what} {shown(path)} is refused: besides tensors it contains pickled Python objects"
            f"{f' ({found.group(1)})' if found else ''}, and unpickling them can run code, so clipsam does not. If "
            "you trust the file, convert it once to a plain state dict, e.g. sd = torch.load(path, weights_only=False)"
            "; torch.save({k: v for k, v in sd.items() if torch.is_tensor(v)}, 'weights.pt'), and pass the new file."
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"cannot read {what} {shown(path)} (corrupt, truncated, or not a PyTorch weights file): {first_line(e)}"
        ) from e


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read the tensors of a checkpoint file without unpickling arbitrary objects.

    Returns:
        dict name -> tensor (the raw content; see ``normalise_state_dict``).
    """
    return _read_checkpoint(path)[0]


def _read_checkpoint(path) -> tuple[dict, bool]:
    """(raw content, whether the file is a TorchScript archive: openai/CLIP's release format)."""
    torch = _torch()
    path = checkpoint_file(path)
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as e:
                raise CheckpointError(f"cannot read TorchScript checkpoint {shown(path)}: {first_line(e)}") from e
            return dict(module.state_dict()), True
    obj = torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {shown(path)} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)."
        )
    return obj, False


def _unwrap(obj: dict) -> tuple[dict, bool]:
    """(the state dict inside a training checkpoint, without ``module.``; whether it was wrapped that way)."""
    sd, wrapped = obj, False
    for key in ("state_dict", "model"):
        if key in sd and isinstance(sd[key], dict):
            sd, wrapped = sd[key], True
            break
    if sd and all(k.startswith("module.") for k in sd):
        sd, wrapped = {k[len("module.") :]: v for k, v in sd.items()}, True
    return sd, wrapped


def detect_format(obj: dict, torchscript: bool = False) -> tuple[str, str]:
    """Whose weights a checkpoint holds, from its content rather than its dtype alone: ``(format, evidence)``.

    ``"openai"`` (trained with QuickGELU): a TorchScript archive (openai/CLIP's release format), OpenAI's integer
    entries, or attention and MLP weights that are fp16 numbers (as openai/CLIP stores them) whether saved in fp16
    or in fp32. ``"open_clip"`` (the architecture's own activation): an open_clip training checkpoint
    (``{"state_dict": ...}``, ``module.`` keys) or keys only open_clip models have (layer scale, logit bias, timm
    or Hugging Face towers). ``"unknown"``: none of these, or both kinds at once.
    """
    torch = _torch()
    sd, wrapped = _unwrap(obj)
    openai, open_clip = [], []
    if torchscript:
        openai.append("a TorchScript archive, openai/CLIP's release format")
    ints = [k for k in _OPENAI_EXTRA_KEYS if k in sd]
    if ints:
        openai.append(f"OpenAI's integer entries ({', '.join(ints)})")
    weights = [
        v
        for k, v in sd.items()
        if k.endswith(("attn.in_proj_weight", "mlp.c_fc.weight"))
        and isinstance(v, torch.Tensor)
        and v.dtype in (torch.float16, torch.float32)
    ][:4]
    if (
        weights
        and all(torch.equal(v.half().float(), v.float()) for v in weights)
        and not all(torch.equal(v.float().bfloat16().float(), v.float()) for v in weights)
    ):
        stored = "fp16" if all(v.dtype == torch.float16 for v in weights) else "fp32"
        openai.append(f"attention weights that are fp16 numbers (stored as {stored}), as openai/CLIP stores them")
    if wrapped:
        open_clip.append("an open_clip training checkpoint ({'state_dict': ...} or 'module.' keys)")
    own = sorted({m.strip(".") for m in _OPEN_CLIP_ONLY for k in sd if m in k})
    if own:
        open_clip.append(f"entries only open_clip models have ({', '.join(own[:3])})")
    if openai and not open_clip:
        return "openai", "; ".join(openai)
    if open_clip and not openai:
        return "open_clip", "; ".join(open_clip)
    return "unknown", "; ".join(openai + open_clip)


def normalise_state_dict(obj: dict) -> tuple[dict, str]:
    """Unwrap training checkpoints, strip ``module.``, drop OpenAI's integer keys, cast to fp32.

    Returns:
        (state dict, format) with format ``"openai"`` or ``"open_clip"`` (``detect_format``; unknown counts as
        open_clip).
    """
    torch = _torch()
    fmt = "openai" if detect_format(obj)[0] == "openai" else "open_clip"
    sd, _ = _unwrap(obj)
    out = {}
    for k, v in sd.items():
        if k in _OPENAI_EXTRA_KEYS or k.endswith("attn_mask"):  # attn_mask: a buffer TorchScript archives also store
            continue
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {k!r} is a {type(v).__name__}, expected a tensor.")
        out[k] = v.float() if v.is_floating_point() else v
    return out, fmt


def _describe_arch(sd: dict) -> str:
    try:
        conv = sd["visual.conv1.weight"]
        layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        return f"vision width {conv.shape[0]}, patch {conv.shape[-1]}, {layers} blocks, embed dim {sd['text_projection'].shape[1]}"
    except (KeyError, IndexError):
        return "not an OpenCLIP ViT checkpoint (no visual.conv1.weight)"


def _load_into(model, sd: dict, arch: str, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        (k, tuple(expected[k].shape), tuple(sd[k].shape))
        for k in expected
        if k in sd and expected[k].shape != sd[k].shape
    ]
    if missing or unexpected or wrong:
        lines = [f"checkpoint {source} does not match architecture {arch!r}."]
        for k, e, f in wrong[:5]:
            lines.append(f"  {k}: expected shape {e}, found {f}")
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:5])}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
        lines.append(
            f"  the checkpoint looks like: {_describe_arch(sd)}; the architecture is: {_describe_arch(expected)}."
        )
        lines.append("  Fix: pass the clip architecture the checkpoint was trained with (e.g. clip='ViT-L-14').")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(sd, strict=True)


class _DropRandomInitNotice(logging.Filter):
    # open_clip logs "No pretrained weights loaded ... initialized randomly" whenever it builds without a tag,
    # which is always the case here: clipsam loads the weights itself (and warns itself for random weights).
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _create(open_clip, name: str, quick_gelu: bool | None):
    """The architecture with QuickGELU (True), GELU (False) or its own activation (None)."""
    root, quiet = logging.getLogger(), _DropRandomInitNotice()
    root.addFilter(quiet)
    try:
        kw = {} if quick_gelu is None else {"quick_gelu": bool(quick_gelu)}  # model kwargs override the config
        return open_clip.create_model(name, pretrained=None, **kw)
    finally:
        root.removeFilter(quiet)


def _own_quick_gelu(open_clip, name: str) -> bool:
    """The activation the architecture's config names (open_clip's "-quickgelu" variants and this repo's test ViT)."""
    return bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))


_OFFLINE_FIX = (
    "Pass a local checkpoint file (clip_weights=PATH; CLI: --weights PATH), or random weights for a smoke "
    "run (clip_weights=None; CLI: --random-weights)."
)


def _download(open_clip, cfg: dict, tag: str, name: str) -> str:
    """The local file of a pretrained tag: from the cache without any network request, else downloaded; offline
    (its host unreachable within a few seconds) it fails at once instead of after minutes of retries."""
    cached = _cached_pretrained(open_clip, cfg)
    if cached:
        return cached
    host, port = _download_host(cfg)
    if host is not None and not reachable(host, port):
        raise CheckpointError(
            f"cannot download the {tag!r} weights for {name!r}: {host} cannot be reached (no network, "
            f"or a proxy is needed) and they are not in the local cache. {_OFFLINE_FIX}"
        )
    try:
        return open_clip.download_pretrained(cfg)
    except Exception as e:
        raise CheckpointError(
            f"could not download the {tag!r} weights for {name!r} ({first_line(e)}). {_OFFLINE_FIX}"
        ) from e


def _uses_hf_hub(cfg: dict) -> bool:
    import importlib.util

    return bool(cfg.get("hf_hub")) and importlib.util.find_spec("huggingface_hub") is not None  # open_clip's preference


def _cached_pretrained(open_clip, cfg: dict) -> str | None:
    """The file open_clip would download for ``cfg`` when it is already in its cache (no network request)."""
    if cfg.get("file"):
        return cfg["file"]
    if _uses_hf_hub(cfg):
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        safe: list[str] = getattr(open_clip.pretrained, "_get_safe_alternatives", lambda f: [])(filename)
        for f in list(safe) + [filename]:
            found = try_to_load_from_cache(model_id, f)
            if isinstance(found, str):
                return found
        return None
    url = cfg.get("url", "")
    if url and (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)).is_file():
        return open_clip.download_pretrained(cfg)  # open_clip checks the cached file's SHA-256, no request
    return None


def _download_host(cfg: dict) -> tuple[str | None, int]:
    """(host, port) a download of ``cfg`` connects to first: the proxy when one is configured."""
    from urllib.parse import urlparse

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            proxy = urlparse(os.environ[var] if "://" in os.environ[var] else "http://" + os.environ[var])
            return proxy.hostname, proxy.port or 80
    if _uses_hf_hub(cfg):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "the Hugging Face hub (HF_HUB_OFFLINE is set)", 0
        url = urlparse(constants.ENDPOINT)
    else:
        url = urlparse(cfg.get("url", ""))
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (name lookup included)."""
    import socket
    import threading

    if not port:
        return False
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok and ok[0])


def _resolve_arch(arch: str) -> str:
    open_clip = _open_clip()
    if arch.endswith(".json") and Path(arch).is_file():
        from .clip_config import check_model_config

        check_model_config(Path(arch))  # open_clip keeps every registered file and re-reads it on each lookup
        open_clip.add_model_config(arch)
        return Path(arch).stem
    if arch not in open_clip.list_models():
        raise ConfigError(
            f"unknown CLIP architecture {arch!r}. Use an open_clip model name (e.g. 'ViT-B-16', 'ViT-L-14') "
            "or the path of an open_clip model-config JSON file."
        )
    return arch


def load_clip(
    arch: str, weights: str | os.PathLike | None = "openai", *, quick_gelu: bool | None = None, seed: int = 0
) -> LoadedClip:
    """Build an OpenCLIP model and load its weights.

    Arguments:
        arch: open_clip model name ("ViT-B-16") or path of a model-config JSON file.
        weights: pretrained tag, local checkpoint path, or None for random weights.
        quick_gelu: the activation the weights were trained with: True (QuickGELU, OpenAI's), False (GELU), or None:
            a pretrained tag's own setting; for a file, QuickGELU when ``detect_format`` finds OpenAI's weights, the
            architecture's own activation for open_clip's, and the architecture's own with a warning naming the
            choice when the file does not tell (only where that is GELU); True for random weights.
        seed: torch seed used for random weights.

    Returns:
        LoadedClip with the fp32 model in eval mode on the CPU.
    """
    torch = _torch()
    open_clip = _open_clip()
    if not isinstance(arch, (str, os.PathLike)):
        raise InvalidTypeError(
            f"clip must be an open_clip architecture name or a model-config JSON path, got "
            f"{type(arch).__name__} {arch!r:.80}"
        )
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InvalidTypeError(
            f"clip_weights must be an open_clip pretrained tag, a checkpoint path or None, got "
            f"{type(weights).__name__} {weights!r:.80}"
        )
    if quick_gelu is not None and not isinstance(quick_gelu, bool):
        raise InvalidTypeError(
            f"quick_gelu must be True, False or None, got {type(quick_gelu).__name__} {quick_gelu!r:.80}"
        )
    name = _resolve_arch(os.fspath(arch))
    own = _own_quick_gelu(open_clip, name)
    if weights is None:
        warnings.warn(
            "clipsam: building the CLIP model with RANDOM weights (clip_weights=None). Its predictions are "
            "meaningless; use this only for tests and offline smoke runs.",
            stacklevel=3,
        )
        gelu = True if quick_gelu is None else quick_gelu
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create(open_clip, name, gelu)
        return LoadedClip(model.eval(), name, f"random:{seed}", gelu)

    path = weights_file(weights)
    if path is not None:
        source, weights_id = str(path), _file_id(path)
    else:
        tag = str(weights)
        cfg = open_clip.get_pretrained_cfg(name, tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise CheckpointError(
                f"{tag!r} is neither a file nor an open_clip pretrained tag for {name!r}. Known tags: {tags or 'none'}."
            )
        if quick_gelu is None:
            quick_gelu = bool(cfg.get("quick_gelu", tag == "openai"))
        source = _download(open_clip, cfg, tag, name)
        weights_id = tag
    raw, scripted = _read_checkpoint(source)
    if quick_gelu is None:
        fmt, evidence = detect_format(raw, scripted)
        if fmt == "openai":
            quick_gelu = True
        elif fmt == "unknown" and not own:
            warnings.warn(
                f"clipsam: checkpoint {source} does not show whether it holds OpenAI's weights (trained with QuickGELU) "
                f"or open_clip's ({evidence or 'a plain state dict in fp32'}); building {name!r} with its own "
                "activation, GELU. If the weights are OpenAI's, pass quick_gelu=True (CLI: --quick-gelu); pass "
                "quick_gelu=False (--no-quick-gelu) to confirm GELU and silence this warning.",
                UserWarning,
                stacklevel=3,
            )
    sd, _ = normalise_state_dict(raw)
    model = _create(open_clip, name, quick_gelu)
    _load_into(model, sd, name, source)
    return LoadedClip(model.eval(), name, weights_id, own if quick_gelu is None else bool(quick_gelu))
