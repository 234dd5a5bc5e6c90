"""``Client``: call a ``clipsam serve`` service from Python and get ``SegmentationResult`` objects back.

    from clipsam.serve import Client

    client = Client("http://127.0.0.1:8000", api_key=None)
    res = client.segment("photo.jpg", classes=["cat", "sofa", "floor"])   # same fields as Segmenter.segment
    res.labels, res.scores, res.classes, res.pixel_fractions(), res.overlay()
    raw = client.segment_json("photo.jpg", "cat, sofa", returns=("labels", "overlay"), prob_thd=0.2)

Standard library (urllib) plus numpy and Pillow: no Ray, no torch. Errors are ``ServeError`` (status, code, message);
an image or classes the client cannot send (a missing file, a URL, a set of names) is refused before any request
with clipsam's ``InvalidImageError`` / ``InvalidTypeError``.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from ..errors import InvalidImageError, InvalidTypeError
from ..paths import shown
from .codec import decode_result
from .errors import ServeError


class Client:
    """A ``clipsam serve`` service at ``url`` (``http://host:port[/prefix]``).

    Arguments:
        url: base URL of the service.
        api_key: the server's API key, sent as ``Authorization: Bearer <key>`` (None: no key).
        timeout: seconds to wait for one answer.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 120.0):
        if not url.startswith(("http://", "https://")):
            raise ServeError(400, "bad_url", f"the service URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- plain routes ------------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def ready(self) -> bool:
        """True once a replica answers ``GET /v1/ready`` with 200 (it is warm); False while it warms up."""
        try:
            return bool(self._call("GET", "/v1/ready").get("ready"))
        except ServeError as e:
            if e.status in (404, 502, 503) or e.code == "unreachable":  # not deployed yet, or warming up
                return False
            raise

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.5) -> None:
        """Poll ``ready()`` until it is True; ``ServeError`` 503 after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > end:
                raise ServeError(503, "not_ready", f"{self.url} was not ready within {timeout} s")
            time.sleep(interval)

    def describe(self) -> dict:
        """The served model, method, preset, precision, backend, choices, limits and batching."""
        return self._call("GET", "/v1/describe")

    def stats(self) -> dict:
        """Requests answered, batches run and their sizes, of the replica that answers."""
        return self._call("GET", "/v1/stats")

    # -- segmentation ------------------------------------------------------------------------------------
    def segment(self, image, classes=None, *, instances: bool = False, **options):
        """Segment one image on the server; a ``clipsam.SegmentationResult`` equal to the in-process one.

        Arguments:
            image: local file path (URLs are not fetched), image file bytes, PIL image, numpy array (HxWx3 RGB, HxW,
                HxWx4; float arrays in [0, 1] are sent as 8-bit) or tensor CxHxW. Files and bytes are sent as they are.
            classes: a list (or tuple) of names and synonym lists, "cat, sofa", or a ``Vocabulary``; None: the
                server's default vocabulary.
            instances: also return SAM2 instances and the dense labels (servers started with --refine).
            options: per-request options: method, preset, templates, prob_thd, area_thd.

        Returns:
            SegmentationResult with labels, scores, classes, image (the RGB image sent), info (the server's info,
            and ``info["server"]`` with its timing and batch), dense_labels and instances with ``instances=True``.

        Raises:
            InvalidImageError: ``image`` is a URL, or names no readable file (before any request).
            InvalidTypeError: ``classes`` is not a string, a list or tuple of names, or a ``Vocabulary`` (before any
                request).
            ServeError: the server refused the request or could not be reached.
        """
        data, rgb = _encode_image(image, keep_rgb=True)
        returns = ("labels", "scores") + (("instances",) if instances else ())
        return decode_result(self._segment(data, classes, returns, options), rgb)

    def segment_json(self, image, classes=None, *, returns=("labels",), **options) -> dict:
        """The raw JSON answer of ``POST /v1/segment`` (``returns``: labels, rle, scores, overlay, instances)."""
        data, _ = _encode_image(image, keep_rgb=False)
        return self._segment(data, classes, tuple(returns), options)

    def _segment(self, data: bytes, classes, returns, options) -> dict:
        fields = {"return": ",".join(returns)}
        if classes is not None:
            fields["classes"] = _classes_field(classes)
        for k, v in options.items():
            if not k.isidentifier():
                raise ServeError(400, "unknown_option", f"option name {k!r} is not a field name")
            fields[k] = "none" if v is None else str(v)
        body, ctype = _multipart(fields, data)
        return self._call("POST", "/v1/segment", body, ctype)

    def _call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if ctype:
            headers["Content-Type"] = ctype
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                err = json.loads(text)["error"]
                raise ServeError(e.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ServeError(e.code, "http_error", f"{method} {path}: HTTP {e.code}: {text[:200]!r}") from None
        except urllib.error.URLError as e:
            raise ServeError(503, "unreachable", f"cannot reach {self.url}: {e.reason}") from None


def _classes_field(classes) -> str:
    """The ``classes`` form field: a string as it is, a list (or tuple) of names and synonym lists as JSON.

    Raises:
        InvalidTypeError: anything else (a set, dict, generator, number, or a name that is not a string), before
            any request, as ``Vocabulary.from_names`` refuses it in process.
    """
    from ..vocabulary import Vocabulary

    if isinstance(classes, str):
        return classes
    if isinstance(classes, Vocabulary):
        groups: list[list[str]] = [[] for _ in classes.classes]
        for q, c in zip(classes.queries, classes.query_to_class):
            groups[c].append(q)
        return json.dumps(groups)
    if not isinstance(classes, (list, tuple)):
        raise InvalidTypeError(
            f"classes must be a list of strings, a comma-separated string or a Vocabulary, got "
            f"{type(classes).__name__}; pass a list (its order gives the class indices), e.g. sorted(classes)"
        )
    items = [list(c) if isinstance(c, (list, tuple)) else c for c in classes]
    bad = [n for item in items for n in (item if isinstance(item, list) else [item]) if not isinstance(n, str)]
    if bad:
        raise InvalidTypeError(
            f"classes must hold names (strings) or lists of synonyms (strings), got {type(bad[0]).__name__} {bad[0]!r}"
        )
    return json.dumps(items)


def _encode_image(image, keep_rgb: bool) -> tuple[bytes, np.ndarray | None]:
    """(bytes to upload, RGB uint8 array as the server will decode it, or None when not asked for)."""
    import cv2

    from ..preprocess import load_image

    if isinstance(image, (str, os.PathLike)):
        path, data = _read_image_file(image)
        return data, (load_image(path) if keep_rgb else None)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not keep_rgb:
            return data, None
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return data, (bgr[:, :, ::-1].copy() if bgr is not None else None)
    rgb = load_image(image)
    if rgb.dtype != np.uint8:  # float input: the service receives 8-bit images
        rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover
        raise ServeError(400, "malformed_image", "cannot encode the image as PNG")
    return png.tobytes(), rgb


def _read_image_file(image) -> tuple[Path, bytes]:
    """The local file ``image`` names and its bytes; an ``InvalidImageError`` naming it (a URL, a folder, a missing
    or unreadable file) before any request is sent."""
    from ..paths import input_file, is_url

    if is_url(image):
        raise InvalidImageError(
            f"image {os.fspath(image)!r} is a URL; the client does not fetch URLs (and the server never does). "
            "Download it first and pass the local file or its bytes."
        )
    path = input_file(image, "image file", InvalidImageError)
    try:
        return path, path.read_bytes()
    except OSError as e:
        raise InvalidImageError(f"cannot read image file {shown(path)}: {e.strerror or e}") from None


def _multipart(fields: dict, image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    buf = io.BytesIO()
    for name, value in fields.items():
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        buf.write(value.encode("utf-8") + b"\r\n")
    buf.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    buf.write(image + f"\r\n--{boundary}--\r\n".encode())
    return buf.getvalue(), f"multipart/form-data; boundary={boundary}"
