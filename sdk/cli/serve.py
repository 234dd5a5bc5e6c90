"""``clipsam serve``: the command line of the HTTP service (``register``, ``run``), and the same options as a Ray
Serve application builder (``build_app``: ``serve run clipsam.cli.serve:build_app preset=voc21 ...``).

    clipsam serve --preset voc21 [--method resclip] [--engines DIR] [--device cuda] [--replicas 2] [--port 8000] \\
                  [--max-batch 8 --batch-wait-ms 10] [--ray ADDRESS] [--api-key-env CLIPSAM_API_KEY]

Every model option of ``clipsam segment`` applies. Here ``--max-batch`` is the most *requests* segmented together;
the windows per encoder call (``segment``'s ``--max-batch``) are ``--max-windows``. Binds 127.0.0.1 unless ``--host``
says otherwise. Ctrl-C or SIGTERM stops the service and the Ray instance it started.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import socket
import sys

from ..config import DATASETS, METHODS
from ..errors import ClipSamError, ConfigError, missing_dependency
from .options import DEFAULTS, add_segment_options, build_segmenter, parse_scales, prompt_options

# corrclip needs DINO and SAM2 models of its own, which the service does not load
SERVED_METHODS = tuple(m for m in METHODS if m != "corrclip")
HELP = "serve segmentation over HTTP (Ray Serve): dynamic batching, limits, API key, web page"
DESCRIPTION = (
    "Serve one model over HTTP on Ray Serve: POST /v1/segment (multipart image or JSON with base64), "
    "GET /v1/health, /v1/ready, /v1/describe, /v1/stats, and a web page at /. Every model option of "
    "'clipsam segment' applies; here --max-batch is the most requests segmented together (segment's "
    "windows per encoder call are --max-windows). Binds 127.0.0.1 unless --host says otherwise. Ctrl-C or "
    "SIGTERM stops the service and the Ray instance it started."
)
_HIDDEN = ("batch_size", "no_progress", "decode_workers", "masks")  # segment options that mean nothing to a service


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``clipsam serve``."""
    p = add_arguments(subparsers.add_parser("serve", help=HELP))
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``clipsam serve`` to ``p`` (the model options of ``clipsam segment`` included)."""
    p.description = DESCRIPTION
    add_segment_options(p)
    p.conflict_handler = "resolve"  # --max-batch: requests per batch here (segment's meaning moves to --max-windows)
    for action in p._actions:
        if action.dest in _HIDDEN:
            action.help = argparse.SUPPRESS
    g = p.add_argument_group("service")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 exposes it)")
    g.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    g.add_argument("--replicas", type=int, default=1, help="replicas, each with its own warmed segmenter (default: 1)")
    g.add_argument(
        "--gpus-per-replica",
        type=float,
        default=None,
        help="GPUs per replica, fractions allowed (default: 1 with --device cuda, else 0)",
    )
    g.add_argument(
        "--cpus-per-replica",
        type=float,
        default=None,
        help="CPUs per replica (default: the machine's CPUs / replicas on a local CPU run, else 1)",
    )
    g.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on the Ray cluster at ADDRESS ('auto', 'ray://head:10001'); default: a local Ray instance",
    )
    b = p.add_argument_group("dynamic batching")
    b.add_argument(
        "--max-batch",
        dest="serve_max_batch",
        type=int,
        default=None,
        metavar="N",
        help="most requests segmented together in one segment_batch call (default: 8 on a GPU, 1 on the "
        "CPU, where batching costs throughput)",
    )
    b.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="longest a request waits for others to fill its batch, in ms (default: 10)",
    )
    b.add_argument(
        "--max-ongoing",
        type=int,
        default=None,
        help="requests a replica holds at once (default: max(32, 4 x --max-batch)); more wait in Ray's queue",
    )
    b.add_argument(
        "--max-windows",
        dest="max_batch",
        type=int,
        default=None,
        metavar="N",
        help="most windows per encoder call (segment's --max-batch; default: 4 on CPU, 32 on CUDA)",
    )
    r = p.add_argument_group("requests")
    r.add_argument(
        "--methods",
        default=None,
        metavar="LIST|all",
        help="methods a request may choose besides --method (PyTorch backend; comma-separated or 'all')",
    )
    r.add_argument(
        "--presets",
        default=None,
        metavar="LIST|all",
        help="presets a request may choose besides --preset (PyTorch backend; comma-separated or 'all')",
    )
    r.add_argument(
        "--warmup-sizes",
        default=None,
        metavar="HxW[,HxW]",
        help="image sizes warmed up before the replica takes requests (default: the preset's)",
    )
    lim = p.add_argument_group("limits (a request beyond one gets a 4xx JSON error naming it)")
    lim.add_argument("--max-upload-mb", type=float, default=20.0, help="request body size in MiB (default: 20)")
    lim.add_argument("--max-pixels", type=int, default=16_000_000, help="image width x height (default: 16000000)")
    lim.add_argument(
        "--max-classes",
        type=int,
        default=100,
        help="class names per request, synonyms included, <= 65536 (default: 100)",
    )
    lim.add_argument("--max-class-chars", type=int, default=100, help="characters per class name (default: 100)")
    lim.add_argument("--request-timeout-s", type=float, default=60.0, help="answer within this or 504 (default: 60)")
    sec = p.add_argument_group("API key (every route but health and readiness needs 'Authorization: Bearer KEY')")
    k = sec.add_mutually_exclusive_group()
    k.add_argument("--api-key-env", metavar="VAR", default=None, help="read the key from environment variable VAR")
    k.add_argument("--api-key-file", metavar="FILE", default=None, help="read the key from the first line of FILE")
    return p


def _names(text: str | None, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not text:
        return ()
    if text == "all":
        return known
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"--{what}: unknown {', '.join(bad)}; choose from {', '.join(known)} or 'all'")
    return names


def _sizes(text: str | None):
    if not text:
        return None
    try:
        sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in text.split(","))
    except ValueError:
        sizes = ((),)
    if any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise ConfigError(f"--warmup-sizes takes HxW pairs such as 336x448,512x512, got {text!r}")
    return sizes


def serve_config(args):
    """The ``ServeConfig`` of the parsed options (the API key is read here and only its digest kept)."""
    from ..serve.auth import key_digest, load_api_key
    from ..serve.limits import Limits
    from ..serve.service import ServeConfig
    from ..vocabulary import Vocabulary, parse_class_file

    if args.classes and args.class_file:
        raise ClipSamError("give --classes or --class-file, not both")
    vocab = (
        parse_class_file(args.class_file)
        if args.class_file
        else (Vocabulary.from_names(args.classes) if args.classes else None)
    )
    key = load_api_key(args.api_key_env, args.api_key_file)
    upload = args.max_upload_mb * (1 << 20)
    if not (math.isfinite(upload) and upload >= 1):  # NaN and inf have no byte count
        raise ConfigError(f"--max-upload-mb must be a positive number of MiB (e.g. 20), got {args.max_upload_mb!r}")
    limits = Limits(
        max_upload_bytes=int(upload),
        max_pixels=args.max_pixels,
        max_classes=args.max_classes,
        max_class_chars=args.max_class_chars,
        request_timeout_s=args.request_timeout_s,
    )
    return ServeConfig(
        limits=limits,
        max_batch=args.serve_max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_ongoing_requests=args.max_ongoing,
        classes=tuple(vocab.to_lines()) if vocab else None,
        methods=_names(args.methods, SERVED_METHODS, "methods"),
        presets=_names(args.presets, DATASETS, "presets"),
        warmup_sizes=_sizes(args.warmup_sizes),
        api_key_sha256=key_digest(key) if key else None,
    )


def build_from_options(options: dict):
    """The segmenter of ``vars(args)`` (a picklable entry point for the replicas)."""
    return build_segmenter(argparse.Namespace(**options))


def _check_model_options(args) -> None:
    """Fail in the driver, before Ray starts, on options a replica would refuse."""
    from ..config import dense_config
    from ..models import checkpoint_file, weights_file

    overrides = {k: v for k, v in prompt_options(args).items() if k == "calibration"}
    scales = parse_scales(args.scales)
    if scales is not None:
        overrides["scales"] = scales
    for flag, dest in (("--decode-workers", "decode_workers"), ("--masks", "masks")):
        if getattr(args, dest, None) is not None:
            raise ClipSamError(f"{flag} does not apply to clipsam serve (requests bring their images)")
    if args.method == "corrclip":
        raise ClipSamError(
            "clipsam serve does not serve --method corrclip yet (it needs DINO and SAM2 models the service does not "
            "load); use clipsam segment or clipsam batch"
        )
    if not args.engines:
        dense_config(args.method or DEFAULTS["method"], args.preset, flip=bool(args.flip), **overrides)
        if args.sam2_weights and not args.refine:
            raise ClipSamError("--sam2-weights needs --refine sam2.1_hiera_t (or another SAM2 model)")
        if args.weights and not args.random_weights:  # a missing file: now, not after every replica failed to load
            weights_file(args.weights)
        if args.sam2_weights:
            checkpoint_file(args.sam2_weights, "SAM2 checkpoint")
    elif not os.path.isdir(args.engines):
        raise ClipSamError(f"engine folder not found: {args.engines}")


def application_from_namespace(args, local: bool = True):
    """The Ray Serve application the parsed options describe."""
    from ..serve.app import build_application

    _check_model_options(args)
    config = serve_config(args)
    if args.replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
    cuda = str(args.device).startswith("cuda") or any(p in str(args.providers) for p in ("cuda", "tensorrt"))
    gpus = args.gpus_per_replica if args.gpus_per_replica is not None else (1.0 if cuda else 0.0)
    cpus = args.cpus_per_replica
    if cpus is None:
        cpus = float(max(1, (os.cpu_count() or 1) // args.replicas)) if local and not cuda else 1.0
    options = {k: v for k, v in vars(args).items() if k != "func"}
    return build_application(
        segmenter=functools.partial(build_from_options, options),
        config=config,
        replicas=args.replicas,
        num_cpus=cpus,
        num_gpus=gpus,
    )


def build_app(args: dict):
    """The Ray Serve application of ``clipsam serve`` options given as a dict ({"preset": "voc21", "random-weights":
    true}): ``serve run clipsam.cli.serve:build_app preset=voc21 random-weights=true``, Serve config files, KubeRay."""
    argv = []
    for key, value in dict(args or {}).items():
        flag = "--" + str(key).replace("_", "-")
        if value is True or str(value).lower() == "true":
            argv.append(flag)
        elif value is not False and str(value).lower() != "false":
            argv += [flag, str(value)]
    parser = add_arguments(argparse.ArgumentParser(prog="clipsam serve (application builder)", exit_on_error=False))
    try:
        ns = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as e:
        raise ConfigError(f"bad clipsam serve options {args}: {e}") from None
    return application_from_namespace(ns, local=False)


def _require_serve():
    try:
        import python_multipart  # noqa: F401 - starlette's multipart parser
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as e:
        raise missing_dependency(e.name or "ray[serve]", "serve", "clipsam serve") from None


def _check_port_number(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a TCP port number from 1 to 65535, got {port}")


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise ClipSamError(
                f"cannot listen on {host}:{port}: {e.strerror}; choose another --port or --host"
            ) from None


def _startup_error(serve) -> str | None:
    """The exception line of a replica that failed to start (Serve keeps the traceback in the deployment status)."""
    try:
        app = serve.status().applications["clipsam"]
        messages = [d.message for d in app.deployments.values()] + [app.message]
    except Exception:  # noqa: BLE001 - the generic error is still shown
        return None
    for message in messages:
        lines = [ln.strip() for ln in (message or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception"))]
        if errors:
            return errors[-1]
    return None


def run(args) -> int:
    """``clipsam serve``: start (or join) Ray, run the application, serve until Ctrl-C or SIGTERM, then clean up."""
    _require_serve()
    local = args.ray is None
    _check_port_number(args.port)  # on a cluster too: Serve's proxy binds it on the nodes
    if local:
        _check_port(args.host, args.port)
    app = application_from_namespace(args, local=local)
    import ray
    from ray import serve

    def stop(signum, frame):
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM)  # SIGINT too: a shell starts background jobs with it ignored
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    started_ray = not ray.is_initialized()
    try:
        if started_ray:
            ray.init(
                address="local" if local else args.ray,
                include_dashboard=False if local else None,
                configure_logging=False,
            )
            for sig in signals:  # again: Ray's core worker installs its own handlers
                signal.signal(sig, stop)
        # the proxy times out requests left in its queue; ours (504 JSON, from arrival at a replica) fires first
        serve.start(
            http_options={"host": args.host, "port": args.port, "request_timeout_s": args.request_timeout_s + 30}
        )
        print(
            f"clipsam serve: starting {args.replicas} replica(s) (model load and warm-up)...",
            file=sys.stderr,
            flush=True,
        )
        try:
            serve.run(app, name="clipsam", route_prefix="/")
        except RuntimeError as e:
            raise ClipSamError(f"the service did not start: {_startup_error(serve) or e}") from None
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        where = f"http://{host}:{args.port}/" if local else f"port {args.port} of the Ray cluster {args.ray}'s nodes"
        print(f"clipsam serve: ready at {where} (API: /v1/segment, /v1/describe; Ctrl-C to stop)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1") and not (args.api_key_env or args.api_key_file):
            print(
                f"clipsam serve: warning: listening on {args.host} without an API key (--api-key-env/--api-key-file)",
                file=sys.stderr,
                flush=True,
            )
        while True:
            signal.pause() if hasattr(signal, "pause") else __import__("time").sleep(3600)
    except KeyboardInterrupt:
        print("clipsam serve: stopping", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if ray.is_initialized():  # stop what this command started; in a caller's Ray, only its application
                serve.shutdown() if started_ray and local else serve.delete("clipsam")
        finally:
            if started_ray and ray.is_initialized():
                ray.shutdown()
    print("clipsam serve: stopped", file=sys.stderr, flush=True)
    return 0
