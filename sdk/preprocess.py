"""Image input: reading, validation, and the mmseg test-time preprocessing (``docs/algorithms.md`` section 2).

Accepted images: a file path; a PIL image; a numpy array HxWx3 (RGB), HxW (grayscale) or HxWx4 (RGBA,
alpha dropped), uint8 or float in [0, 1]; a torch tensor CxHxW (C = 1, 3 or 4) of the same dtypes. Files are
decoded with OpenCV exactly as mmseg's LoadImageFromFile does, which applies the EXIF orientation; PIL images get
the same rule (a transposed copy). The caller's objects are never modified. A file of several frames or pages (an
animated GIF, PNG or WebP, a multi-page TIFF) gives its first, as OpenCV decodes it, with a warning naming the
file; a file OpenCV cannot decode but PIL can open (e.g. a TIFF of 32-bit samples) is refused naming its format
and mode.
A 3-D shape whose first and last sides are both 1, 3 or 4 reads both ways (e.g. a 4x64x3 tensor) and is refused
rather than guessed. PIL modes: 16-bit ("I;16*") as OpenCV reads 16-bit files (v >> 8), "F" by the float rule
([0, 1]), "I" (32-bit integers, no defined range) refused with the conversion to use, every other mode through PIL's
conversion to RGB.

Preprocessing (numpy + OpenCV, no torch): resize with factor f = min(long/max(h,w), short/min(h,w)), new side
int(side*f + 0.5), cv2 INTER_LINEAR; then (x - mean) / std with the CLIP-in-mmseg constants, channels first.
"""

from __future__ import annotations

import os
import sys
import warnings

import cv2
import numpy as np

from .errors import ConfigError, InvalidImageError, InvalidInputError, InvalidTypeError
from .paths import input_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what folder inputs pick up

MEAN = np.array([122.771, 116.746, 104.094], dtype=np.float32)  # RGB
STD = np.array([68.501, 66.632, 70.323], dtype=np.float32)


def _read_file(image) -> np.ndarray:
    path = input_file(
        image,
        "image file",
        InvalidImageError,
        folder_hint="Pass the image files inside it (clipsam segment and clipsam batch take folders).",
    )
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InvalidImageError(f"cannot decode image {path}: {_undecodable(path, data)}")
    frames = _frames(path, data)
    if frames > 1:
        warnings.warn(
            f"clipsam: image {path} holds {frames} frames (pages); only the first is segmented, as OpenCV decodes "
            "the file. Save the others as separate images to segment them.",
            UserWarning,
            stacklevel=2,
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: a large photo is not held twice


# formats that may hold several frames or pages: GIF, TIFF (both byte orders), PNG (APNG), WebP (in a RIFF file)
_MULTI_FRAME_MAGIC = (b"GIF8", b"II*\x00", b"MM\x00*", b"\x89PNG", b"RIFF")


def _pil_header(path, read):
    """``read(img)`` of PIL's lazily opened image of the file (its headers read), or None where PIL cannot open or
    read it. PIL's own warnings (a large image, odd metadata) are not shown: this is only a look at the headers."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return read(img)
    except Exception:  # PIL raises several types for data it cannot identify or a damaged later frame
        return None


def _frames(path, data: np.ndarray) -> int:
    """How many frames (pages) the image file holds (``data``: its bytes): 1 unless its format can hold more (PIL
    counts them from the headers, without decoding)."""
    if bytes(data[:4]) not in _MULTI_FRAME_MAGIC:
        return 1
    return _pil_header(path, lambda img: int(getattr(img, "n_frames", 1))) or 1


def _undecodable(path, data: np.ndarray) -> str:
    """Why OpenCV could not decode the file (``data``: its bytes), and what to do: PIL's view of it where PIL opens
    it."""
    seen = _pil_header(path, lambda img: (img.format, img.mode, img.size)) if data.size else None
    if seen is None:
        return "the file is empty, corrupt, truncated or not an image format OpenCV reads."
    fmt, mode, (w, h) = seen
    return (
        f"it is a {w}x{h} {fmt} image of PIL mode {mode!r}, which OpenCV (clipsam's file decoder, as in mmseg) does "
        "not read. Convert it to an 8-bit RGB or grayscale file (PNG or JPEG), or open it with PIL and pass the image "
        "object (PIL images are read by their mode: 'F' must lie in [0, 1])."
    )


_CHANNELS = (1, 3, 4)
_EXIF_ORIENTATION = 0x0112


def _ambiguous(shape, layout: str, what: str) -> InvalidImageError | None:
    """A 3-D shape whose first and last sides both look like channels (1, 3 or 4): not guessed."""
    if len(shape) != 3 or shape[0] not in _CHANNELS or shape[2] not in _CHANNELS:
        return None
    fix = (
        "if it is HxWxC, pass t.permute(2, 0, 1)" if layout == "CxHxW" else "if it is CxHxW, pass a.transpose(1, 2, 0)"
    )
    return InvalidImageError(
        f"{what} has shape {tuple(shape)}, which is ambiguous: it reads both as CxHxW and as HxWxC. Tensors are read "
        f"as CxHxW and numpy arrays as HxWxC, so this one is refused rather than guessed: {fix}. A side of 1, 3 or 4 "
        "pixels cannot be told apart from channels (pad or resize such an image)."
    )


def _from_array(a: np.ndarray, what: str, check_layout: bool = True) -> np.ndarray:
    err = _ambiguous(a.shape, "HxWxC", what) if check_layout else None
    if err is not None:
        raise err
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    else:
        raise InvalidImageError(
            f"{what} has shape {a.shape}; expected HxWx3 (RGB), HxW (grayscale) or HxWx4 (RGBA). "
            "For a channels-first array, transpose it to HxWxC."
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidImageError(f"{what} is empty ({a.shape[0]}x{a.shape[1]} pixels); pass an image with pixels.")
    if a.dtype == np.uint8:
        out = np.ascontiguousarray(a)
        if out is a or np.shares_memory(out, a):  # never hand the caller's own buffer back writable
            out = out.view()
            out.flags.writeable = False
        return out
    if a.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(a).all():
            raise InvalidInputError(f"{what} contains NaN or inf values; clean the image before segmenting it.")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(
                f"{what} is a float image with values in [{lo:.3g}, {hi:.3g}]; float images must lie in [0, 1]. "
                "Divide by 255 or pass uint8."
            )
        return a.astype(np.float32) * 255.0
    raise InvalidTypeError(f"{what} has dtype {a.dtype}; expected uint8, or float16/32/64 in [0, 1].")


def _from_pil(image, what: str) -> np.ndarray:
    """EXIF orientation applied as for files; PIL modes by their value range: 16-bit integers as OpenCV reads
    16-bit files (v >> 8), "F" by the float rule ([0, 1]), "I" (32-bit, no range) refused, every other mode through
    PIL's own conversion to RGB."""
    mode = image.mode
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # as OpenCV applies it to files (a transposed copy)
            from PIL import ImageOps

            image = ImageOps.exif_transpose(image)
        if mode.startswith("I;16"):
            return _from_array((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), what, check_layout=False)
        if mode == "I":
            raise InvalidImageError(
                f"{what} has mode 'I' (32-bit integers), which has no defined value range. Convert it to 8 bits "
                "yourself: Image.fromarray((np.asarray(im) >> 8).astype(np.uint8)) for 16-bit data, or "
                "im.convert('L') for data in [0, 255]."
            )
        if mode == "F":
            return _from_array(np.asarray(image, dtype=np.float32), what, check_layout=False)
        rgb = np.asarray(image.convert("RGB")).copy()
    except ValueError as e:  # a mode PIL cannot convert to RGB
        if isinstance(e, InvalidInputError):
            raise
        raise InvalidImageError(
            f"{what} has mode {mode!r}, which PIL cannot convert to RGB ({e}); convert it to 'RGB' or 'L' yourself."
        ) from e
    except OSError as e:
        raise InvalidImageError(f"cannot decode {what}: {e}") from e
    return _from_array(rgb, what, check_layout=False)


def load_image(image, what: str = "image") -> np.ndarray:
    """Any accepted image -> HxWx3 RGB array (uint8, or float32 in [0, 255] for float inputs): a new array, or a
    read-only view of a uint8 HxWx3 numpy input (never a writable alias of the caller's image)."""
    if isinstance(image, (str, os.PathLike)):
        return _read_file(image)
    if isinstance(image, np.ndarray):
        a = np.asarray(image)  # np.matrix and other subclasses: the plain array (a matrix stays 2-D under indexing)
        if not a.dtype.isnative:  # big-endian data ('>f4'): the same values in this machine's byte order
            a = a.astype(a.dtype.newbyteorder("="))
        return _from_array(a, what)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image, f"PIL {what}")
    if type(image).__module__.startswith("torch"):
        t = image.detach()
        if t.layout != sys.modules["torch"].strided:
            raise InvalidTypeError(f"tensor {what} is a {t.layout} tensor; pass a dense one (tensor.to_dense()).")
        if t.device.type == "meta":
            raise InvalidInputError(f"tensor {what} is on the 'meta' device and holds no pixel values.")
        if t.ndim != 3 or t.shape[0] not in _CHANNELS:
            raise InvalidImageError(f"tensor {what} has shape {tuple(t.shape)}; expected CxHxW with C in (1, 3, 4).")
        err = _ambiguous(tuple(t.shape), "CxHxW", f"tensor {what}")
        if err is not None:
            raise err
        if t.dtype.is_complex or t.dtype not in _torch_ok_dtypes():
            raise InvalidTypeError(f"tensor {what} has dtype {t.dtype}; expected uint8 or a float dtype in [0, 1].")
        arr = t.cpu().float().numpy() if t.dtype != _torch_uint8() else t.cpu().numpy()
        return _from_array(np.moveaxis(arr, 0, -1), what, check_layout=False)
    raise InvalidTypeError(
        f"{what} has type {type(image).__name__}; expected a file path, PIL image, numpy array or torch tensor."
    )


def _torch_uint8():
    return sys.modules["torch"].uint8  # a tensor was passed, so torch is imported


def _torch_ok_dtypes():
    torch = sys.modules["torch"]
    return (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def resize_shape(h: int, w: int, short_side: int, long_side: int = 2048) -> tuple[int, int]:
    """mmcv ``imrescale`` output size (new_h, new_w) for ``scale=(long_side, short_side)``, keep_ratio."""
    if h <= 0 or w <= 0:
        raise InvalidImageError(f"image is empty ({h}x{w} pixels); pass an image with pixels.")
    f = min(long_side / max(h, w), short_side / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def preprocess(rgb: np.ndarray, short_side: int, long_side: int = 2048, min_side: int = 16) -> np.ndarray:
    """Resize and normalise.

    Arguments:
        rgb: HxWx3 RGB image from ``load_image``.
        min_side: smallest allowed resized side (the patch size).

    Returns:
        (3, h, w) float32 normalised image at the resized size.
    """
    h, w = rgb.shape[:2]
    nh, nw = resize_shape(h, w, short_side, long_side)
    if nh < min_side or nw < min_side:
        if min(short_side, long_side) < min_side:  # the target itself, whatever the image: a config problem
            raise ConfigError(
                f"images are resized to a short side of {short_side} and a long side of at most {long_side} pixels "
                f"(short_side and long_side times the scale), smaller than one {min_side}x{min_side} patch. Raise "
                "short_side, long_side or the smallest of scales."
            )
        raise InvalidImageError(
            f"image of {h}x{w} pixels is resized to {nh}x{nw}, smaller than one {min_side}x{min_side} patch. "
            "Use a less elongated image or crop it."
        )
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = (resized.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))
