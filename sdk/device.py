"""Device names, checked before anything is loaded: ``parse_device`` (torch-free); the precision names that are not
plain dtypes."""

from __future__ import annotations

import numbers
import re

from .errors import ConfigError

UPSTREAM_FP16 = "fp16-upstream"  # CorrCLIP's and RF-CLIP's upstream fp16 arithmetic (clipsam.dense.upstream_fp16)
UPSTREAM_FP16_METHODS = ("corrclip", "rfclip")  # the methods whose upstream it reproduces

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(device, what: str = "device") -> tuple[str, int | None]:
    """``(kind, index)`` of a device given as "cpu", "cuda", "cuda:N", a GPU index or a ``torch.device``.

    Raises:
        ConfigError: any other value ("tpu", "cuda:x", "mps", ...), naming it and the accepted forms.
    """
    if device is None:
        return "cpu", None
    if isinstance(device, numbers.Integral) and not isinstance(device, bool) and int(device) >= 0:
        return "cuda", int(device)
    is_text = isinstance(device, str) or type(device).__module__.startswith("torch")  # a str or a torch.device
    text = str(device).strip().lower() if is_text else None
    m = _DEVICE.match(text) if text is not None else None
    if m is None:
        hint = ""
        if text is not None and text.startswith("cuda:"):
            hint = " The GPU index after 'cuda:' must be a whole number, e.g. 'cuda:0'."
        raise ConfigError(f"unsupported {what} {device!r}: use 'cpu', 'cuda' or 'cuda:N' (N the GPU index).{hint}")
    return m.group(1), None if m.group(2) is None else int(m.group(2))
