"""`clipsam serve`: its options, the error without Ray Serve, the application builder, and the command itself in a
subprocess on a loopback port: ready, answers like the in-process Segmenter, stops cleanly on SIGTERM and on SIGINT,
and names the error of a replica that cannot start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipsam.cli import build_parser, main
from clipsam.errors import ClipSamError, ConfigError, MissingDependencyError

from ..conftest import TINY_VIT
from ..serve.helpers import assert_same, free_port, reference_segmenter

CLI = str(Path(sys.executable).parent / "clipsam")


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_options_and_defaults():
    a = parse("--preset", "voc21")
    assert (a.host, a.port, a.replicas, a.serve_max_batch, a.batch_wait_ms, a.max_batch, a.ray) == (
        "127.0.0.1",
        8000,
        1,
        None,
        10.0,
        None,
        None,
    )  # --max-batch: 8 on a GPU, 1 on the CPU (per replica)
    a = parse(
        "--max-batch",
        "16",
        "--max-windows",
        "2",
        "--batch-wait-ms",
        "5",
        "--engines",
        "e/",
        "--refine",
        "sam2.1_hiera_t",
        "--method",
        "sclip",
        "--scales",
        "ms5",
    )
    assert (a.serve_max_batch, a.max_batch, a.batch_wait_ms, a.engines, a.refine, a.scales) == (
        16,
        2,
        5.0,
        "e/",
        "sam2.1_hiera_t",
        "ms5",
    )
    text = subprocess.run([CLI, "serve", "--help"], capture_output=True, text=True, timeout=120).stdout
    for opt in (
        "--preset",
        "--method",
        "--engines",
        "--device",
        "--replicas",
        "--port",
        "--host",
        "--max-batch",
        "--batch-wait-ms",
        "--ray",
        "--max-upload-mb",
        "--max-pixels",
        "--max-classes",
        "--max-class-chars",
        "--request-timeout-s",
        "--api-key-env",
        "--api-key-file",
        "--methods",
        "--presets",
        "--max-windows",
    ):
        assert opt in text, opt
    assert "--batch-size" not in text and "--no-progress" not in text  # segment options that mean nothing here
    assert "serve" in subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=120).stdout


def test_serve_config_from_options(monkeypatch, tmp_path):
    from clipsam.cli.serve import serve_config
    from clipsam.serve.auth import key_digest

    monkeypatch.setenv("MY_KEY", "k" * 20)
    cfg = serve_config(
        parse(
            "--classes",
            "cat, dog",
            "--max-upload-mb",
            "1.5",
            "--max-pixels",
            "1000",
            "--max-classes",
            "7",
            "--max-class-chars",
            "9",
            "--request-timeout-s",
            "3",
            "--api-key-env",
            "MY_KEY",
            "--methods",
            "all",
            "--presets",
            "context60",
            "--warmup-sizes",
            "336x448,64X80",
        )
    )
    assert cfg.limits.to_json() == {
        "max_upload_bytes": 1572864,
        "max_pixels": 1000,
        "max_classes": 7,
        "max_class_chars": 9,
        "request_timeout_s": 3.0,
    }
    assert (
        cfg.classes == ("cat", "dog") and cfg.api_key_sha256 == key_digest("k" * 20) and len(cfg.methods) == 8
    )  # every method but corrclip (its DINO and SAM2 are not served)
    assert cfg.presets == ("context60",) and cfg.warmup_sizes == ((336, 448), (64, 80))
    (tmp_path / "classes.txt").write_text("person, man\ndog\n")
    assert serve_config(parse("--class-file", str(tmp_path / "classes.txt"))).classes == ("person, man", "dog")
    for argv, text in (
        (("--methods", "resclip,segformer"), "unknown segformer"),
        (("--warmup-sizes", "336"), "HxW pairs"),
        (("--max-classes", "0"), "must be positive"),
        (("--request-timeout-s", "inf"), "request_timeout_s must be positive and finite"),
        (("--batch-wait-ms", "nan"), "batch_wait_ms >= 0 and finite"),
        (("--api-key-env", "NOT_SET_ANYWHERE"), "NOT_SET_ANYWHERE is not set"),
        (("--classes", "a", "--class-file", "f"), "not both"),
    ):
        with pytest.raises(ClipSamError, match=text):
            serve_config(parse(*argv))


def test_bad_options_fail_before_ray_starts(capsys, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    random_key = tmp_path / "random.key"
    random_key.write_bytes(bytes(range(128, 256)))  # not UTF-8: what `head -c 64 /dev/urandom > key` may write
    for argv, text in (
        (("--preset", "voc21", "--calibration", "excel"), "calibration='excel'"),
        (("--engines", "/nonexistent/engines"), "engine folder not found"),
        (("--preset", "voc21", "--sam2-weights", "x.pt"), "--sam2-weights needs --refine"),
        (("--preset", "voc21", "--replicas", "0"), "--replicas must be >= 1"),
        (("--preset", "voc21", "--max-upload-mb", "nan"), "--max-upload-mb must be a positive number of MiB"),
        (("--preset", "voc21", "--max-upload-mb", "inf"), "--max-upload-mb must be a positive number of MiB"),
        (("--preset", "voc21", "--api-key-file", str(random_key)), "is not UTF-8 text"),
        (("--preset", "voc21", "--weights", str(tmp_path / "missing.pt")), "checkpoint not found"),
        (("--preset", "voc21", "--weights", str(random_key)), "is not a weights file"),
        (("--preset", "voc21", "--refine", "sam2.1_hiera_t", "--sam2-weights", "nope.pt"), "SAM2 checkpoint not found"),
    ):
        assert main(["serve", *argv, "--port", str(free_port())]) == 2
        assert text in capsys.readouterr().err
    for port in ("80000", "-1", "0"):
        assert main(["serve", "--preset", "voc21", "--port", port]) == 2
        assert f"clipsam serve: error: --port must be a TCP port number from 1 to 65535, got {port}" in (
            capsys.readouterr().err
        )
    with socket.socket() as s:  # a port in use is named
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--preset", "voc21", "--port", str(s.getsockname()[1])]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_without_ray_serve_the_extra_is_named(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["serve", "--preset", "voc21"]) == 2
    assert "pip install 'clipsam[serve]'" in capsys.readouterr().err
    code = (
        "import sys; sys.modules['ray'] = None\nimport clipsam.serve\ntry:\n    import clipsam.serve.app\n"
        "except ImportError as e:\n    print(type(e).__name__, e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("MissingDependencyError") and "pip install 'clipsam[serve]'" in out
    assert issubclass(MissingDependencyError, ClipSamError)


def test_application_builder():
    pytest.importorskip("ray.serve")
    from ray.serve.handle import DeploymentHandle  # noqa: F401 - Serve importable

    from clipsam.cli.serve import build_app
    from clipsam.serve.app import build_application

    app = build_app(
        {"preset": "voc21", "random-weights": True, "clip": TINY_VIT, "max_batch": 4, "replicas": 2, "flip": "false"}
    )
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="bad clipsam serve options"):
        build_app({"bogus-option": 1})
    with pytest.raises(ConfigError, match="exactly one of"):
        build_application()


def _start_serve(port: int) -> tuple[subprocess.Popen, list[str]]:
    """``clipsam serve`` of the tiny model on a loopback port, in a subprocess; its stdout lines collect in the list."""
    proc = subprocess.Popen(
        [
            CLI,
            "serve",
            "--random-weights",
            "--clip",
            TINY_VIT,
            "--templates",
            "single",
            "--preset",
            "voc21",
            "--port",
            str(port),
            "--warmup-sizes",
            "64x96",
            "--cpus-per-replica",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def test_the_command_serves_and_stops_on_sigterm_and_on_sigint(chelsea_small):
    """Two commands side by side (each starts its own Ray; most of a start is waiting, so two take little longer
    than one): both answer like the in-process Segmenter, one is stopped with SIGTERM (as a service manager does),
    the other with SIGINT (as Ctrl-C)."""
    from clipsam.serve import Client

    ref = reference_segmenter(short_side=336).segment(chelsea_small, classes="cat, grass, wall")
    ports = [free_port()]
    while len(ports) < 2:  # two different ports (a port just released may be handed out again)
        ports = list(dict.fromkeys([*ports, free_port()]))
    servers = {stop: (port, *_start_serve(port)) for stop, port in zip((signal.SIGTERM, signal.SIGINT), ports)}
    try:
        deadline = time.monotonic() + 300
        for stop, (port, proc, lines) in servers.items():
            while not any("ready at" in line for line in lines):
                assert proc.poll() is None and time.monotonic() < deadline, (
                    stop.name,
                    lines,
                    proc.stderr.read() if proc.poll() else "",
                )
                time.sleep(0.5)
            assert f"http://127.0.0.1:{port}/" in "".join(lines)
            res = Client(f"http://127.0.0.1:{port}").segment(chelsea_small, "cat, grass, wall")
            assert_same(res, ref, stop.name)
    finally:
        for stop, (_, proc, _) in servers.items():
            proc.send_signal(stop)
        codes = {}
        for stop, (_, proc, _) in servers.items():
            try:
                codes[stop] = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    for stop, (port, proc, _) in servers.items():
        err = proc.stderr.read()
        assert codes[stop] == 0, (stop.name, err[-2000:])
        assert "clipsam serve: stopping" in err and "clipsam serve: stopped" in err and "Traceback" not in err, (
            stop.name,
            err[-2000:],
        )
        with pytest.raises(ConnectionRefusedError):  # nothing listens on the port any more
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_replica_that_cannot_start_is_reported(tmp_path):
    """A checkpoint that exists but holds no weights of this architecture fails in the replicas (the driver checks
    only that it is a weights file): the command names the replica's error and exits 2."""
    import torch

    wrong = tmp_path / "not-this-clip.pt"
    torch.save({"x": torch.zeros(1)}, wrong)
    proc = subprocess.run(
        [
            CLI,
            "serve",
            "--clip",
            TINY_VIT,
            "--weights",
            str(wrong),
            "--preset",
            "voc21",
            "--port",
            str(free_port()),
            "--cpus-per-replica",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1"},  # Serve's default, 3 tries, takes 30 s more
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("clipsam serve: error:")]
    assert line and "did not start" in line[0] and "not-this-clip.pt does not match" in line[0], proc.stderr[-2000:]
