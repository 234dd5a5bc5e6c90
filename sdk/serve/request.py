"""``POST /v1/segment`` bodies -> a validated ``SegmentRequest``: multipart form or JSON, unknown fields refused.

    multipart/form-data   image=<file>, classes="cat, sofa", templates=..., prob_thd=..., return=labels,scores
    application/json      {"image": "<base64 or data URL>", "classes": ["cat", ["sofa", "couch"]], ...}

The image is the uploaded bytes, or base64 in JSON; a path or URL is refused, never opened.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

from .codec import RETURNS, b64decode
from .errors import ServeError

OPTIONS = ("method", "preset", "templates", "prob_thd", "area_thd")  # per-request options (see Service.policy)
FIELDS = ("image", "classes", "return") + OPTIONS


@dataclass
class SegmentRequest:
    """One validated request: image bytes, the raw classes (``limits.parse_classes`` checks them), options given."""

    image: bytes
    classes: object = None
    options: dict = field(default_factory=dict)
    returns: tuple[str, ...] = ("labels",)


def _check_fields(names) -> None:
    unknown = sorted(set(names) - set(FIELDS))
    if unknown:
        raise ServeError(
            400,
            "unknown_option",
            f"unknown field(s) {', '.join(map(repr, unknown))}; a segment request takes {', '.join(FIELDS)}",
        )


def _given_twice(keys: list[str]) -> None:
    twice = sorted(k for k, n in Counter(keys).items() if n > 1)  # linear: a JSON object may have many keys
    if twice:
        names = ", ".join(repr(k[:40]) for k in twice[:5]) + (f" and {len(twice) - 5} more" if len(twice) > 5 else "")
        raise ServeError(400, "bad_request", f"a field is given twice: {names}; give each field once")


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s object hook: a JSON object, refused (400) when it names a key twice, as a multipart form is
    (json.loads alone would keep the last value)."""
    _given_twice([k for k, _ in pairs])
    return dict(pairs)


def _image_from_text(text) -> bytes:
    if isinstance(text, str) and ("://" in text[:16] or text.startswith("file:")):
        raise ServeError(
            400,
            "bad_request",
            "image must be the uploaded file or base64 data; the server never fetches URLs or reads paths",
        )
    return b64decode(text, "image (base64 image data; the server never reads paths or fetches URLs)")


async def parse_body(content_type: str | None, body: bytes, max_fields: int = 16) -> dict:
    """Raw fields of a multipart or JSON body (``image`` as bytes); 400 for a malformed body, a field given twice
    (in a JSON object at any depth, or a form) or JSON nested too deeply, 415 for another media type."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(body, object_pairs_hook=_object_without_duplicates)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServeError(400, "bad_request", f"the body is not valid JSON: {e}") from None
        except RecursionError:
            raise ServeError(
                400,
                "bad_request",
                "the JSON body is nested too deeply; a segment request nests at most a list of synonym lists",
            ) from None
        if not isinstance(data, dict):
            raise ServeError(400, "bad_request", 'the JSON body must be an object {"image": ..., "classes": ...}')
        _check_fields(data)
        if "image" in data:
            data["image"] = _image_from_text(data["image"])
        return data
    if kind == "multipart/form-data":
        return await _parse_multipart(content_type or "", body, max_fields)
    raise ServeError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data (curl -F image=@photo.jpg) or "
        f"application/json, not {kind or 'a body without Content-Type'}",
    )


async def _parse_multipart(content_type: str, body: bytes, max_fields: int) -> dict:
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body
        yield b""

    parser = MultiPartParser(
        Headers({"content-type": content_type}),
        stream(),
        max_files=1,
        max_fields=max_fields,
        max_part_size=len(body) + 1,
    )
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError, KeyError) as e:
        msg = getattr(e, "message", str(e))
        raise ServeError(400, "bad_request", f"malformed multipart body: {msg}") from None
    try:
        keys = [k for k, _ in form.multi_items()]
        _given_twice(keys)
        _check_fields(keys)
        out: dict[str, object] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise ServeError(
                        400, "bad_request", f"field {key!r} must be text, not a file; only image is a file"
                    )
                out[key] = await value.read()
            else:
                out[key] = _image_from_text(value) if key == "image" else value
        return out
    finally:
        await form.close()


def _number(name: str, value, lo: float, hi: float, allow_none: bool = False):
    if allow_none and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))):
        return None
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (lo <= x <= hi):  # NaN fails too
        raise ServeError(
            400,
            "bad_option",
            f"{name} must be a number in [{lo}, {hi}]" + (" or none" if allow_none else "") + f", got {value!r}",
        )
    return x


def _choice(name: str, value, allowed: tuple[str, ...]):
    if not isinstance(value, str) or value not in allowed:
        raise ServeError(
            400,
            "bad_option",
            f"{name} {value!r} is not available on this server; choose one of {', '.join(allowed) or '(none)'}",
        )
    return value


def parse_options(fields: dict, policy: dict) -> SegmentRequest:
    """Validate raw fields against the server's ``policy`` (``Service.policy()``: the methods, presets and template
    sets a request may choose, and whether SAM2 instances can be returned)."""
    _check_fields(fields)
    if "image" not in fields:
        raise ServeError(
            400,
            "bad_request",
            "no image: upload it as the form field 'image' (curl -F image=@photo.jpg) "
            'or send JSON {"image": "<base64>"}',
        )
    opts = {}
    if "method" in fields:
        opts["method"] = _choice("method", fields["method"], policy["methods"])
    if "preset" in fields:
        opts["preset"] = _choice("preset", fields["preset"], policy["presets"])
    if "templates" in fields:
        opts["templates"] = _choice("templates", fields["templates"], policy["templates"])
    if "prob_thd" in fields:
        opts["prob_thd"] = _number("prob_thd", fields["prob_thd"], 0.0, 1.0)
    if "area_thd" in fields:
        opts["area_thd"] = _number("area_thd", fields["area_thd"], 0.0, 1.0, allow_none=True)
    returns = fields.get("return", "labels")
    if isinstance(returns, str):
        returns = [r.strip() for r in returns.split(",") if r.strip()]
    if not isinstance(returns, list) or not returns or not all(isinstance(r, str) for r in returns):
        raise ServeError(
            400, "bad_option", f"return must list what to send back ({', '.join(RETURNS)}), got {returns!r}"
        )
    unknown = [r for r in returns if r not in RETURNS]
    if unknown:
        raise ServeError(
            400, "bad_option", f"return {', '.join(map(repr, unknown))} is unknown; choose from {', '.join(RETURNS)}"
        )
    if "instances" in returns and not policy["instances"]:
        raise ServeError(
            400,
            "bad_option",
            "return=instances needs SAM2 refinement, which this server does not run "
            "(start it with --refine sam2.1_hiera_t)",
        )
    return SegmentRequest(fields["image"], fields.get("classes"), opts, tuple(dict.fromkeys(returns)))
