"""The HTTP service on Ray Serve: routes, limits, API key, dynamic batching; one replica = one warmed segmenter.

    from clipsam.serve.app import build_application
    from clipsam.serve.service import ServeConfig

    app = build_application(model=dict(clip="ViT-B-16", clip_weights="openai", preset="voc21", device="cuda"),
                            config=ServeConfig(max_batch=8, batch_wait_ms=10), replicas=2, num_gpus=1)
    serve.run(app, route_prefix="/")                     # or: clipsam serve --preset voc21 --replicas 2 ...

Routes (README, "Serving"): ``GET /`` (web page), ``GET /v1/health``, ``GET /v1/ready``, ``GET /v1/describe``,
``GET /v1/stats``, ``POST /v1/segment``. A replica builds its segmenter and runs ``warmup()`` in its constructor,
so Ray Serve routes no request to it before it is warm. Requests are validated and decoded on the replica's event
loop (decoding in a thread), gathered by ``@serve.batch`` (``max_batch``, ``batch_wait_ms``) and segmented in one
worker thread by ``Service.run_batch``; answers are encoded in a thread. Needs ``pip install 'clipsam[serve]'``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import ConfigError, missing_dependency

try:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
except ImportError as _e:  # pragma: no cover - exercised by tests/serve/test_command.py in a subprocess
    raise missing_dependency(_e.name or "ray[serve]", "serve", "clipsam serve (clipsam.serve.app)") from None

from .auth import check_bearer
from .codec import encode_result
from .errors import ServeError, error_status
from .limits import decode_image, parse_classes
from .request import parse_body, parse_options
from .service import Job, Outcome, ServeConfig, Service

log = logging.getLogger("clipsam.serve")

# path -> (HTTP method, handler name, needs the API key when one is set)
ROUTES = {
    "/": ("GET", "_page", False),
    "/v1/health": ("GET", "_health", False),
    "/v1/ready": ("GET", "_ready", False),
    "/v1/describe": ("GET", "_describe", True),
    "/v1/stats": ("GET", "_stats", True),
    "/v1/segment": ("POST", "_segment", True),
}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "script-src 'unsafe-inline'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _json(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(payload, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@serve.deployment
class ClipsamServer:
    """One replica: a ``Service`` around the segmenter ``factory()`` builds, behind the routes of ``ROUTES``."""

    def __init__(self, factory, config: ServeConfig):
        from importlib import resources

        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside a Serve replica (tests of the class itself)
            replica = "local"
        self.service = Service(factory(), config, replica=replica)
        self.segment_batched.set_max_batch_size(self.service.max_batch)  # type: ignore[attr-defined]
        self.segment_batched.set_batch_wait_timeout_s(config.batch_wait_ms / 1000)  # type: ignore[attr-defined]
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="clipsam-segment")  # one batch at a time per replica
        self.page = resources.files("clipsam.serve").joinpath("page.html").read_text(encoding="utf-8")
        info = self.service.warmup()
        log.info("clipsam replica %s ready (warm-up %s s)", replica, info["seconds"])

    def check_health(self):
        """Ray Serve's replica health check: healthy once warm."""
        if not self.service.ready:
            raise RuntimeError("clipsam replica not warmed up")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def segment_batched(self, jobs: list[Job]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self.service.run_batch, jobs)
        except Exception as e:  # noqa: BLE001 - run_batch isolates failures; this is a last resort
            return [Outcome(error=error_status(e)) for _ in jobs]

    async def __call__(self, request: Request) -> Response:
        path = request.scope.get("path", "/")
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        try:
            route = ROUTES.get(path.rstrip("/") or "/")
            if route is None:
                raise ServeError(404, "not_found", f"no route {path}; routes: {', '.join(ROUTES)}")
            method, handler, protected = route
            if request.method != method:
                raise ServeError(405, "method_not_allowed", f"{path} takes {method}, not {request.method}")
            if protected:
                check_bearer(request.headers.get("authorization"), self.service.config.api_key_sha256)
            return await getattr(self, handler)(request, root)
        except ServeError as e:
            self.service.count(e.code)
            headers = {**e.headers, **({"WWW-Authenticate": "Bearer"} if e.status == 401 else {})}
            return _json(e.to_json(), e.status, headers)
        except Exception as e:  # noqa: BLE001 - never let a request take the replica down
            log.exception("clipsam serve: %s %s failed", request.method, path)
            self.service.count("internal")
            return _json(ServeError(500, "internal", f"internal error: {type(e).__name__}: {e}").to_json(), 500)

    # -- routes ------------------------------------------------------------------------------------------
    async def _page(self, request, root):
        prefix = json.dumps(root).replace("<", "\\u003c")  # a JS string that cannot end the <script>
        return HTMLResponse(self.page.replace("{{ROOT}}", prefix), headers=_PAGE_HEADERS)

    async def _health(self, request, root):
        return _json({"status": "ok", "ready": self.service.ready, "replica": self.service.replica})

    async def _ready(self, request, root):
        self.service.require_ready()
        return _json({"ready": True, "replica": self.service.replica, "warmup": self.service.warmup_info})

    async def _describe(self, request, root):
        return _json(self.service.describe())

    async def _stats(self, request, root):
        return _json(self.service.stats())

    async def _segment(self, request, root):
        t0 = time.perf_counter()
        svc = self.service
        limits = svc.config.limits
        svc.require_ready()
        if request.query_params:
            raise ServeError(
                400,
                "unknown_option",
                f"query parameters are not read ({', '.join(request.query_params)}); "
                "send options as form fields or JSON",
            )
        body = await _read_body(request, limits.max_upload_bytes)
        req = parse_options(await parse_body(request.headers.get("content-type"), body), svc.policy())
        vocab = parse_classes(req.classes, limits)
        rgb = await asyncio.to_thread(decode_image, req.image, limits)
        options = tuple(sorted(req.options.items()))
        job = Job(rgb, svc.vocabulary(vocab, options), options)
        t1 = time.perf_counter()
        remaining = limits.request_timeout_s - (t1 - t0)
        try:
            outcome = await asyncio.wait_for(self.segment_batched(job), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise ServeError(
                504,
                "timeout",
                f"the request was not answered within {limits.request_timeout_s} s "
                "(request_timeout_s); the server is overloaded or the image is too large",
            ) from None
        batch = {**outcome.batch, "replica": svc.replica}
        header = {"X-Clipsam-Batch": ";".join(f"{k}={v}" for k, v in batch.items())}  # also on a failed request
        if outcome.error is not None:
            outcome.error.headers.update(header)
            raise outcome.error
        t2 = time.perf_counter()
        payload = await asyncio.to_thread(encode_result, outcome.result, req.returns)
        t3 = time.perf_counter()
        payload["timing"] = {
            "decode_ms": round(1000 * (t1 - t0), 3),
            "queue_ms": round(outcome.queue_ms, 3),
            "segment_ms": round(outcome.segment_ms, 3),
            "encode_ms": round(1000 * (t3 - t2), 3),
            "total_ms": round(1000 * (t3 - t0), 3),
        }
        payload["batch"] = batch
        svc.count("ok")
        return _json(payload, headers=header)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = ServeError(
        413, "too_large", f"the request body exceeds {limit} bytes (max_upload_bytes); send a smaller image"
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# -- building the application --------------------------------------------------------------------------------
def _from_model(model: dict):
    from ..segmenter import Segmenter

    return Segmenter.from_pretrained(**model)


def _from_engines(folder: str, options: dict):
    from ..segmenter import Segmenter

    return Segmenter.from_engines(folder, **options)


def build_application(
    *,
    model: dict | None = None,
    engines: str | None = None,
    engine_options: dict | None = None,
    segmenter=None,
    config: ServeConfig | None = None,
    replicas: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
):
    """A Ray Serve application serving one segmenter per replica; run it with ``serve.run(app, route_prefix=...)``.

    Arguments:
        model: keyword arguments of ``clipsam.Segmenter.from_pretrained``; or
        engines (+ engine_options): an engine folder for ``Segmenter.from_engines``; or
        segmenter: a picklable zero-argument callable returning a segmenter.
        config: ``ServeConfig`` (limits, batching, default vocabulary, per-request choices, API key digest); None: its
            defaults.
        replicas: replicas of the deployment, each with ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed).
    """
    config = ServeConfig() if config is None else config
    given = [x is not None for x in (model, engines, segmenter)]
    if sum(given) != 1:
        raise ConfigError(
            "build_application needs exactly one of model={...from_pretrained kwargs}, engines=FOLDER "
            "or segmenter=<callable returning a segmenter>"
        )
    if replicas < 1 or num_cpus < 0 or num_gpus < 0:
        raise ConfigError(f"replicas must be >= 1 and num_cpus, num_gpus >= 0, got {replicas}, {num_cpus}, {num_gpus}")
    if model is not None:
        factory = functools.partial(_from_model, dict(model))
    elif engines is not None:
        factory = functools.partial(_from_engines, str(engines), dict(engine_options or {}))
    else:
        factory = segmenter
    return ClipsamServer.options(  # type: ignore[attr-defined]
        num_replicas=replicas,
        max_ongoing_requests=config.ongoing,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
    ).bind(factory, config)
