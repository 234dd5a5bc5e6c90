"""Request limits, and the checks every upload and vocabulary passes before it reaches a segmenter.

    limits = Limits(max_upload_bytes=20 << 20, max_pixels=16_000_000, max_classes=100)
    rgb = decode_image(data, limits)            # bytes -> HxWx3 uint8 RGB, exactly as clipsam reads a file
    vocab = parse_classes("cat, sofa", limits)  # or a JSON list, synonyms as inner lists; None: the default

Every refusal is a ``ServeError`` with a 4xx status and a code naming the problem. Images are decoded from the
uploaded bytes only: nothing here (or anywhere in the service) opens a path or fetches a URL.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ClipSamError
from .codec import MAX_LABEL
from .errors import ServeError

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")  # what the service decodes (PIL names), as clipsam segment


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the defaults suit a public-facing CPU or GPU service."""

    max_upload_bytes: int = 20 << 20  # request body, image included (base64 in JSON costs 4/3 of the image)
    max_pixels: int = 16_000_000  # width x height of the decoded image (16 MP: a phone photo)
    max_classes: int = 100  # names in a request's vocabulary, synonyms included (<= 65536, one 16-bit label PNG)
    max_class_chars: int = 100  # characters of one class name
    request_timeout_s: float = 60.0  # from arrival to answer; past it the request gets 504 (see README)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if not 0 < getattr(self, f.name) < math.inf:  # NaN fails too
                raise ClipSamError(f"limit {f.name} must be positive and finite, got {getattr(self, f.name)!r}")
        if self.max_classes > MAX_LABEL + 1:
            raise ClipSamError(
                f"max_classes must be at most {MAX_LABEL + 1} (label maps are 16-bit PNGs), got {self.max_classes}"
            )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """Uploaded image bytes -> (H, W, 3) uint8 RGB, decoded with OpenCV exactly as ``clipsam`` reads a file.

    The header is read first (PIL), so an image over ``limits.max_pixels``, or of several frames or pages, is refused
    before it is decoded.

    Raises:
        ServeError: 413 ``too_large`` / ``too_many_pixels``, 400 ``malformed_image`` / ``unsupported_image``.
    """
    import cv2
    from PIL import Image

    if not data:
        raise ServeError(400, "malformed_image", "the image is empty (0 bytes); upload the image file's bytes")
    if len(data) > limits.max_upload_bytes:
        raise ServeError(
            413,
            "too_large",
            f"the image has {len(data)} bytes; this server accepts at most {limits.max_upload_bytes} bytes per request",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, mode, (w, h) = img.format, img.mode, img.size
                frames = int(getattr(img, "n_frames", 1)) if fmt in IMAGE_FORMATS else 1
    except Image.DecompressionBombError as e:
        raise ServeError(413, "too_many_pixels", f"the image has too many pixels: {e}") from None
    except Exception as e:  # PIL raises several types for garbage (UnidentifiedImageError, SyntaxError, ...)
        raise ServeError(
            400,
            "malformed_image",
            f"the upload is not a readable image ({', '.join(IMAGE_FORMATS)}): {type(e).__name__}: {e}",
        ) from None
    if fmt not in IMAGE_FORMATS:
        raise ServeError(
            400, "unsupported_image", f"{fmt} images are not accepted; send one of {', '.join(IMAGE_FORMATS)}"
        )
    if frames > 1:
        raise ServeError(
            400,
            "unsupported_image",
            f"the {fmt} image holds {frames} frames (pages); this server segments single images: send one frame",
        )
    if w * h > limits.max_pixels:
        raise ServeError(
            413,
            "too_many_pixels",
            f"the image is {w}x{h} = {w * h} pixels; this server accepts at most "
            f"{limits.max_pixels} pixels. Downscale it before sending.",
        )
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ServeError(
            400,
            "malformed_image",
            f"cannot decode the {fmt} image of PIL mode {mode!r}: the data is corrupt or truncated, or its samples are "
            "not 8 or 16 bits (OpenCV decodes the uploads); send an 8-bit RGB or grayscale image",
        )
    return bgr[:, :, ::-1].copy()  # BGR -> RGB, as clipsam.preprocess reads files


def parse_classes(value, limits: Limits):
    """A request's ``classes`` -> ``clipsam.vocabulary.Vocabulary``, or None when not given (the server's default).

    Accepted: "cat, sofa, floor" (one class per comma), several lines (one class per line, synonyms separated by
    ", ", as a class file), a JSON list as text, or a list of names / synonym lists (JSON requests).

    Raises:
        ServeError: 400 ``empty_vocabulary``, ``too_many_classes``, ``class_name_too_long`` or ``bad_vocabulary``.
    """
    from ..vocabulary import Vocabulary, parse_class_lines

    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ServeError(
                400, "empty_vocabulary", 'classes is empty; name at least one class, e.g. classes="cat, sofa"'
            )
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as e:
                raise ServeError(
                    400, "bad_vocabulary", f"classes starts with '[' but is not a JSON list: {e}"
                ) from None
    if isinstance(value, list):
        if not value:
            raise ServeError(400, "empty_vocabulary", "classes is an empty list; name at least one class")
        names = [n for item in value for n in (item if isinstance(item, list) else [item])]
        if not all(isinstance(n, str) for n in names):
            raise ServeError(400, "bad_vocabulary", "classes must be a list of names or of lists of synonyms (strings)")
    elif isinstance(value, str):
        names = [
            n.strip() for line in text.splitlines() for n in (line.split(", ") if "\n" in text else line.split(","))
        ]
    else:
        raise ServeError(
            400, "bad_vocabulary", f"classes must be a string or a list of names, got {type(value).__name__}"
        )
    if len(names) > limits.max_classes:
        raise ServeError(
            400,
            "too_many_classes",
            f"the vocabulary has {len(names)} names (synonyms included); this "
            f"server accepts at most {limits.max_classes}",
        )
    for n in names:
        if len(n) > limits.max_class_chars:
            raise ServeError(
                400,
                "class_name_too_long",
                f"class name {n[:40]!r}... has {len(n)} characters; at most {limits.max_class_chars} are accepted",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in n):
            raise ServeError(400, "bad_vocabulary", f"class name {n[:40]!r} contains control characters")
    try:
        if isinstance(value, list):
            return Vocabulary.from_names(value)
        if "\n" in text:
            return parse_class_lines(text, "classes")
        return Vocabulary.from_names(text)
    except ClipSamError as e:
        raise ServeError(400, "bad_vocabulary", str(e)) from None
