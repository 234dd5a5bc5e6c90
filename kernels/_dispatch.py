"""The skeleton every kernel shares: the one Triton probe, the launchers, the custom op, and dispatch.

``HAS_TRITON`` / ``triton`` / ``tl``: triton probed once (a broken install counts as absent). ``jit_launcher``
gives a kernel's compiled launcher, or the interpreted one for CPU tensors (``runs_interpreted``);
``custom_op`` registers the launcher as a torch custom op with its fake (for ``torch.compile``); ``dispatch``
chooses between the kernel and its reference by the rules below.

Which implementation an entry point runs, in order:

1. Export: inside ``exportable()``, during ``torch.onnx.export`` and while ``torch.jit`` traces or scripts,
   every op runs its reference, whatever else is asked.
2. An explicit request: ``force=False`` (or ``CLIPSAM_TRITON=0``) selects the reference; ``force=True`` (or
   ``CLIPSAM_TRITON=1``) selects the kernel, and raises ``BackendUnavailableError`` naming the reason when
   it cannot run (no triton, CPU tensors without ``TRITON_INTERPRET=1``, unsupported dtype or shape, or
   the kill switch below).
3. Kill switch: ``CLIPSAM_DISABLE_TRITON=1`` selects the reference.
4. Automatic: the kernel for CUDA tensors when triton imports and the op supports the inputs; otherwise the
   reference. CPU tensors take the reference silently (the normal CPU path); CUDA inputs the kernel cannot
   take warn once per reason.

``TRITON_INTERPRET=1`` lets a forced kernel run on CPU tensors in Triton's interpreter (slow; for tests).
Kernel knobs (read at launch): ``CLIPSAM_TRITON_AUTOTUNE=0`` launches one fixed tile configuration instead
of autotuning; ``CLIPSAM_TRITON_FP32_PRECISION`` (read at import; default ``tf32x3``, or ``ieee``) is the
dot precision of fp32 inputs.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from clipsam.errors import BackendUnavailableError

ENV_DISABLE = "CLIPSAM_DISABLE_TRITON"
ENV_FORCE = "CLIPSAM_TRITON"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_exporting: contextvars.ContextVar[int] = contextvars.ContextVar("clipsam_exporting", default=0)
_warned: set[str] = set()


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


try:  # the one probe; the kernel modules take triton from here
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # ImportError, or a driver/ABI failure inside triton's import
    triton: Any = None  # type: ignore[no-redef]
    tl: Any = None  # type: ignore[no-redef]
    HAS_TRITON = False


def triton_available() -> bool:
    """Whether triton imports here (a broken install counts as absent)."""
    return HAS_TRITON


def triton_disabled() -> bool:
    """Whether the kill switch ``CLIPSAM_DISABLE_TRITON`` is set."""
    return bool(_env_flag(ENV_DISABLE))


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` asks for Triton's CPU interpreter."""
    return bool(_env_flag("TRITON_INTERPRET"))


def runs_interpreted(device: torch.device) -> bool:
    """Whether a launch on ``device`` goes through Triton's interpreter (CPU tensors, or TRITON_INTERPRET=1)."""
    return device.type == "cpu" or interpreter_enabled()


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """Context in which every clipsam kernel op runs its PyTorch reference (for ``torch.onnx.export``); per thread
    and task (a context variable)."""
    token = _exporting.set(_exporting.get() + 1)
    try:
        yield
    finally:
        _exporting.reset(token)


def is_exporting() -> bool:
    """True inside ``exportable()``, during ONNX export, and while torch.jit traces or scripts."""
    if _exporting.get() > 0:
        return True
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _device_reason(device: torch.device, forced: bool) -> str | None:
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if forced and interpreter_enabled():
            return None
        return "the tensors are on the CPU; the Triton kernels need CUDA (or TRITON_INTERPRET=1 for the interpreter)"
    return f"device type {device.type!r} is not supported by the Triton kernels"


def use_triton(op: str, device: torch.device, unsupported: Callable[[], str | None], force: bool | None = None) -> bool:
    """Decide whether ``op`` runs its Triton kernel.

    Arguments:
        op: op name, for messages.
        device: device of the op's tensors.
        unsupported: returns why the kernel cannot take these inputs (dtype, shape, mode), or None.
        force: True demands the kernel, False the reference, None decides automatically
            (``CLIPSAM_TRITON`` supplies the request when None).

    Returns:
        True to run the kernel, False to run the reference.

    Raises:
        BackendUnavailableError: the kernel was demanded but cannot run.
    """
    if is_exporting():
        return False
    want = _env_flag(ENV_FORCE) if force is None else bool(force)
    if want is False:
        return False
    if triton_disabled():
        if want:
            raise BackendUnavailableError(
                f"{op}: the Triton kernel was requested, but {ENV_DISABLE}=1 disables it; unset {ENV_DISABLE} "
                f"or stop forcing the kernel (force=None/False, unset {ENV_FORCE})"
            )
        return False
    reason = None if HAS_TRITON else "triton is not installed (pip install 'clipsam[triton]', Linux only)"
    reason = reason or _device_reason(device, bool(want)) or unsupported()
    if reason is None:
        return True
    if want:
        raise BackendUnavailableError(f"{op}: the Triton kernel was requested but cannot run: {reason}")
    if device.type == "cuda":
        _warn_once(f"clipsam.kernels.{op}: using the PyTorch reference because {reason}")
    return False


def dispatch(
    op: str,
    device: torch.device,
    unsupported: Callable[[], str | None],
    force: bool | None,
    kernel: Callable[[], Any],
    reference: Callable[[], Any],
) -> Any:
    """``kernel()`` or ``reference()``, as ``use_triton`` decides."""
    return kernel() if use_triton(op, device, unsupported, force) else reference()


def jit_launcher(kernel: Any, interpret: bool) -> Any:
    """The launcher of a ``@triton.jit`` kernel: compiled (also when TRITON_INTERPRET=1 was set at import), or run
    by the interpreter on CPU tensors."""
    if interpret:
        return interpreted(kernel)
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)


def custom_op(name: str, fake: Callable[..., torch.Tensor]) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the torch custom op ``clipsam::<name>`` with ``fake`` as its shape function (graphs and
    ``torch.compile`` see one opaque op); ``fn`` itself where torch has no ``custom_op``."""

    def register(fn: Callable) -> Callable:
        if not hasattr(torch.library, "custom_op"):
            return fn
        op = torch.library.custom_op(f"clipsam::{name}", mutates_args=())(fn)
        op.register_fake(fake)
        return op

    return register


# ---- Triton's interpreter, whatever TRITON_INTERPRET was when triton was imported ----------------------
_stdlib_lock = threading.RLock()


@contextlib.contextmanager
def _interpretable(*modules) -> Iterator[None]:
    # @jit functions are JITFunctions unless TRITON_INTERPRET=1 was set before they were defined, and the
    # interpreter cannot call those: triton.language's own helpers (tl.max, tl.sum, ...) and the kernel
    # module's helpers. Swap in interpreted twins for the duration of one launch (CPU test path only).
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    with contextlib.suppress(Exception):  # imported lazily by the launcher; it must see the real JITFunctions
        import triton.experimental.gluon  # noqa: F401
    with _stdlib_lock:
        saved = []
        for module in (tl, tl.standard, tl.math, *modules):
            for name, obj in list(vars(module).items()):
                if isinstance(obj, JITFunction):
                    saved.append((module, name, obj))
                    setattr(module, name, InterpretedFunction(obj.fn))
        try:
            yield
        finally:
            for module, name, obj in saved:
                setattr(module, name, obj)


class interpreted:
    """A kernel run by Triton's interpreter on CPU tensors: ``interpreted(kernel)[grid](*args, **meta)``."""

    def __init__(self, kernel) -> None:
        import sys

        from triton.runtime.interpreter import InterpretedFunction

        fn = getattr(kernel, "fn", kernel)
        self._fn = InterpretedFunction(fn)
        self._module = sys.modules[fn.__module__]

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            with _interpretable(self._module):
                return self._fn[grid](*args, **kwargs)

        return launch
