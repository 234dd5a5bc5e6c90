"""The wire format of a segmentation result: lossless, JSON, and the same on the server and in the client.

A ``POST /v1/segment`` answer holds ``classes``, ``height``, ``width``, ``pixel_fractions``, ``mean_score``,
``info`` (the result's info: method, preset, config, time), the server's ``timing`` and ``batch``, and what the
request's ``return`` asked for:

    labels     labels_png: base64 PNG of the class indices, lossless: a palette PNG (VOC colours) while every index
               is below 256, else a 16-bit greyscale PNG (vocabularies of more than 256 classes)
    rle        labels_rle: [{"class", "class_id", "size": [H, W], "counts": [...]}], uncompressed COCO RLE per class
    scores     scores: {"dtype": "float32", "shape": [H, W], "data": base64 of the little-endian float32 bytes}
    overlay    overlay_png: base64 PNG of the image blended with class colours, legend below
    instances  instances: SAM2 instances (class, score, box, area, COCO RLE), dense_labels_png: labels before SAM2

numpy and Pillow only: the client imports this without Ray or torch.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from .errors import ServeError

RETURNS = ("labels", "rle", "scores", "overlay", "instances")


def _png(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


MAX_LABEL = 65535  # the largest class index a label PNG holds (16-bit greyscale)


def _label_png(labels: np.ndarray) -> str:
    """Base64 PNG of ``labels``: a palette PNG when every index is below 256, else 16-bit greyscale (lossless)."""
    from PIL import Image

    from ..result import palette

    top = int(labels.max()) if labels.size else 0
    if top > MAX_LABEL or (labels.size and int(labels.min()) < 0):
        raise ServeError(
            500, "internal", f"class indices must lie in [0, {MAX_LABEL}] to be sent as a PNG, got up to {top}"
        )
    if top > 255:
        return _png(Image.fromarray(labels.astype(np.uint16)))  # mode I;16
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette().ravel().tolist())
    return _png(img)


_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")


def b64decode(text: str, what: str) -> bytes:
    """Base64 (a ``data:...;base64,`` prefix is allowed) to bytes; a 400 ``bad_base64`` naming ``what`` otherwise.

    ASCII whitespace is ignored, as in MIME (RFC 2045): line-wrapped base64 (GNU ``base64`` without ``-w0`` wraps at
    76 characters) decodes to the same bytes. Any other character outside the base64 alphabet is refused."""
    if not isinstance(text, str):
        raise ServeError(400, "bad_request", f"{what} must be a base64 string, got {type(text).__name__}")
    text = text.translate(_WHITESPACE)
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if not head.endswith(";base64"):
            raise ServeError(400, "bad_base64", f"{what} is a data URL without ';base64'")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ServeError(400, "bad_base64", f"{what} is not valid base64: {e}") from None


def encode_result(result, returns) -> dict:
    """JSON-able dict of ``result`` (a ``SegmentationResult``) with the parts named in ``returns``."""
    from ..refine.merge import mask_to_rle

    labels = result.labels
    out = {
        "classes": list(result.classes),
        "height": int(labels.shape[0]),
        "width": int(labels.shape[1]),
        "pixel_fractions": {k: float(v) for k, v in result.pixel_fractions().items()},
        "mean_score": float(result.scores.mean()) if result.scores.size else 0.0,
        "info": result.info,
    }
    if "labels" in returns:
        out["labels_png"] = _label_png(labels)
    if "rle" in returns:
        out["labels_rle"] = [
            {"class": result.classes[i], "class_id": int(i), **mask_to_rle(labels == i)} for i in np.unique(labels)
        ]
    if "scores" in returns:
        out["scores"] = {
            "dtype": "float32",
            "shape": list(result.scores.shape),
            "data": base64.b64encode(np.ascontiguousarray(result.scores, dtype="<f4").tobytes()).decode("ascii"),
        }
    if "overlay" in returns:
        out["overlay_png"] = _png(result.overlay())
    if "instances" in returns:
        out["instances"] = result.instances_json()
        out["dense_labels_png"] = _label_png(result.dense_labels if result.dense_labels is not None else labels)
    return out


LABEL_MODES = ("P", "L", "I;16", "I;16B", "I")  # palette, 8-bit and 16-bit greyscale (as Pillow opens them)


def decode_labels_png(text: str) -> np.ndarray:
    """(H, W) int32 class indices from a ``labels_png`` field (palette or 16-bit greyscale PNG)."""
    from PIL import Image

    with Image.open(io.BytesIO(b64decode(text, "labels_png"))) as img:
        if img.mode not in LABEL_MODES:
            raise ServeError(
                502, "bad_response", f"labels_png is a {img.mode} image, expected a palette or 16-bit greyscale PNG"
            )
        return np.asarray(img).astype(np.int32)


def decode_scores(field: dict) -> np.ndarray:
    """(H, W) float32 scores from a ``scores`` field (exact: the raw float32 bytes)."""
    if field.get("dtype") != "float32":
        raise ServeError(502, "bad_response", f"scores have dtype {field.get('dtype')!r}, expected float32")
    data = np.frombuffer(b64decode(field["data"], "scores"), dtype="<f4")
    return data.reshape([int(s) for s in field["shape"]]).astype(np.float32)


def labels_from_rle(runs: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 labels from a ``labels_rle`` field."""
    from ..refine.merge import rle_to_mask

    labels = np.zeros(shape, np.int32)
    for run in runs:
        labels[rle_to_mask(run)] = int(run["class_id"])
    return labels


def _box(values) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def decode_result(payload: dict, image: np.ndarray | None = None):
    """A ``clipsam.SegmentationResult`` from a ``POST /v1/segment`` answer (which must hold labels or rle; scores
    are an empty array unless returned). ``image`` is the RGB image that was sent (for ``overlay()``).

    The server's ``timing`` and ``batch`` are kept in ``info["server"]``; SAM2 instances become
    ``clipsam.refine.Instance`` objects."""
    from ..refine.merge import Instance, rle_to_mask
    from ..result import SegmentationResult

    shape = (int(payload["height"]), int(payload["width"]))
    if "labels_png" in payload:
        labels = decode_labels_png(payload["labels_png"])
    elif "labels_rle" in payload:
        labels = labels_from_rle(payload["labels_rle"], shape)
    else:
        raise ServeError(
            502, "bad_response", "the answer holds neither labels_png nor labels_rle; ask for return=labels"
        )
    scores = decode_scores(payload["scores"]) if "scores" in payload else np.zeros((0, 0), np.float32)
    info = dict(payload.get("info") or {})
    info["server"] = {k: payload[k] for k in ("timing", "batch") if k in payload}
    dense, instances = None, []
    if "instances" in payload:
        dense = decode_labels_png(payload["dense_labels_png"])
        instances = [
            Instance(
                rle_to_mask(d["segmentation"]),
                int(d["class_id"]),
                float(d["score"]),
                _box(d["box"]),
                int(d["area"]),
            )
            for d in payload["instances"]
        ]
    return SegmentationResult(
        labels, scores, tuple(payload["classes"]), image, info, dense_labels=dense, instances=instances
    )
