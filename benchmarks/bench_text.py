"""First text encoding of a large vocabulary, before and after length bucketing, and the warm disk-cache load.

    pytest benchmarks/bench_text.py --benchmark-enable --benchmark-json out.json
    CLIPSAM_BENCH_TEXT_CLASSES=150 pytest benchmarks/bench_text.py --benchmark-enable     # a smaller vocabulary
    pytest benchmarks --smoke --benchmark-disable                                         # CI: tiny model, runs once

Cases, one run, side by side (``Q`` classes x the openai80 templates):
    upstream   chunks of 256 prompts in input order through open_clip's ``encode_text`` on the full 77-token
               context, all raw embeddings kept, then normalise / mean / renormalise (what clipsam did before it
               truncated, and what the upstream method code does)
    chunked    the same input-order chunks, each cut at its own longest EOT token (``encode_tokens``; clipsam's
               path before length bucketing)
    bucketed   ``Segmenter.text_embeddings`` on a fresh segmenter: prompts sorted by length, each chunk of 256 cut
               at its own longest EOT token, reduced per query as chunks finish; includes hashing the weights and
               writing the disk-cache file (to a temporary folder)
    warm_disk  a fresh Python process builds the same segmenter and calls ``text_embeddings``: the embeddings come
               from the disk cache (the process fails if the text encoder runs); ``load_s`` is that call (weights
               hash + file read), ``process_s`` the whole process (imports, model construction)

Recorded per case (``extra_info``): ``encode_s``, prompt and token counts (``tokens``: positions the text
transformer processed), and ``peak_rss_mb``, the growth of the resident set during the call (Linux: freed heap
returned with ``malloc_trim`` and the peak reset through ``/proc/self/clear_refs`` before the call;
``resource.getrusage`` in the fresh process for warm_disk). ``bucketed`` also records ``speedup`` over
``upstream`` (and ``speedup_vs_chunked``) and the largest difference of the results (fp32 rounding only: asserted
<= 1e-5).

Model: CLIPSAM_BENCH_CLIP (default ViT-B-16; the text tower is what runs), random weights (speed does not depend on
them); Q: CLIPSAM_BENCH_TEXT_CLASSES (default 500: the shipped dataset vocabularies' names, then "small <name>");
device: CLIPSAM_BENCH_DEVICE (cpu, cuda; auto: cuda when available). Smoke mode: the tiny test ViT, 8 classes.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from clipsam.config import DATASETS, dense_config
from clipsam.eval.machine import machine_info, versions
from clipsam.text import PROMPTS_PER_BATCH, length_buckets, resolve_templates
from clipsam.vocabulary import Vocabulary, builtin_vocabulary

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
TINY_VIT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "configs", "clipsam-test-vit.json")
CLIP = TINY_VIT if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16")
CLASSES = 8 if SMOKE else int(os.environ.get("CLIPSAM_BENCH_TEXT_CLASSES", 500))
TEMPLATES = "openai80"
_DEV = os.environ.get("CLIPSAM_BENCH_DEVICE", "auto")
DEVICE = "cuda" if _DEV in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
_RESULTS: dict = {}

_WARM = """
import json, resource, sys, time, warnings
t0 = time.perf_counter()
import clipsam.dense.text as text
from clipsam.config import dense_config
from clipsam.models import load_clip
from clipsam.segmenter import Segmenter
from clipsam.vocabulary import Vocabulary

def refuse(*a, **k):
    raise AssertionError("the text encoder ran: the disk cache was not used")

warnings.simplefilter("ignore")
clip, folder, device, names = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
seg = Segmenter(load_clip(clip, None), dense_config("sclip", None, templates="openai80"), device=device,
                text_disk_cache=folder)
text.encode_tokens = refuse
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
emb = seg.text_embeddings(Vocabulary.from_names(names))
if device == "cuda":
    import torch
    torch.cuda.synchronize()
load_s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"load_s": load_s, "process_s": time.perf_counter() - t0, "shape": list(emb.shape),
                  "peak_rss_mb": (peak - before) / 1024}))
"""


def class_names(n: int) -> list[str]:
    """``n`` distinct class names: the shipped dataset vocabularies' queries, then "small <name>" for more."""
    names: list[str] = []
    for d in DATASETS:
        for q in builtin_vocabulary(d).queries:
            if q not in names:
                names.append(q)
    names += [f"small {q}" for q in names]
    if n > len(names):
        raise ValueError(f"at most {len(names)} classes")
    return names[:n]


def _loaded():
    if "clip" not in _RESULTS:
        from clipsam.models import load_clip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _RESULTS["clip"] = load_clip(CLIP, None)
    return _RESULTS["clip"]


def upstream_encode(model, tokenizer, queries, templates, device, truncate: bool = False) -> torch.Tensor:
    """The "before" path: input-order chunks of 256, open_clip ``encode_text`` at 77 tokens (``truncate``: each
    chunk cut at its longest EOT, ``encode_tokens``), raw embeddings kept."""
    from clipsam.dense.text import encode_tokens

    encode = encode_tokens if truncate else (lambda m, t: m.encode_text(t))
    prompts = [t.format(q) for q in queries for t in templates]
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), PROMPTS_PER_BATCH):
            chunks.append(encode(model, tokenizer(prompts[i : i + PROMPTS_PER_BATCH]).to(device)).float())
        f = torch.cat(chunks).view(len(queries), len(templates), -1)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(dim=1)
        return f / f.norm(dim=-1, keepdim=True)


def _reset_peak() -> int | None:
    """Return freed heap to the OS and reset the resident-set peak; the current resident size in kB (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmHWM:")
    except OSError:
        return None


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _info(case: str, prompts: int, tokens: int, encode_s: float | None, peak_mb) -> dict:
    return dict(
        case=case,
        clip=CLIP if CLIP != TINY_VIT else "clipsam-test-vit",
        device=DEVICE,
        classes=CLASSES,
        templates=TEMPLATES,
        prompts=prompts,
        tokens=tokens,
        encode_s=encode_s,
        peak_rss_mb=peak_mb,
        smoke=SMOKE,
        load_average=list(os.getloadavg()),  # the box is shared: other processes' load during the case
        torch_threads=torch.get_num_threads(),
        machine=machine_info(),
        versions=versions(),
    )


@pytest.mark.parametrize("case", ["upstream", "chunked", "bucketed"])
def test_first_encoding(benchmark, device_info, tmp_path, case):
    import open_clip

    from clipsam.segmenter import Segmenter

    loaded = _loaded()
    tok = open_clip.get_tokenizer(loaded.arch)
    vocab = Vocabulary.from_names(class_names(CLASSES))
    templates = resolve_templates(TEMPLATES)
    prompts = [t.format(q) for q in vocab.queries for t in templates]
    eot = tok(prompts).argmax(dim=-1).numpy()
    cfg = dense_config("sclip", None, templates=TEMPLATES)
    state: dict = {}

    def setup():
        state["seg"] = Segmenter(loaded, cfg, device=DEVICE, text_disk_cache=tmp_path / f"cache-{time.time_ns()}")
        state["rss"] = _reset_peak()
        return (), {}

    def run():
        if case in ("upstream", "chunked"):
            out = upstream_encode(state["seg"].model, tok, vocab.queries, templates, DEVICE, case == "chunked")
        else:
            out = state["seg"].text_embeddings(vocab)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        state["out"] = out
        return out

    benchmark.pedantic(run, setup=setup, rounds=1, iterations=1, warmup_rounds=0)
    peak_mb = (_status("VmHWM:") - state["rss"]) / 1024 if state["rss"] is not None else None
    if case == "upstream":
        tokens = len(prompts) * int(tok.context_length)
    elif case == "chunked":
        tokens = sum(
            len(c) * (int(c.max()) + 1) for c in np.split(eot, range(PROMPTS_PER_BATCH, len(eot), PROMPTS_PER_BATCH))
        )
    else:
        tokens = sum(len(i) * n for i, n in length_buckets(eot, PROMPTS_PER_BATCH))
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    encode_s = float(stats.min) if stats is not None else None
    info = _info(case, len(prompts), tokens, encode_s, peak_mb)
    out = state["out"].float().cpu()
    _RESULTS[case] = (encode_s, out)
    if case != "upstream" and "upstream" in _RESULTS:
        before_s, before = _RESULTS["upstream"]
        diff = float((out - before).abs().max())
        assert diff <= 1e-5, diff  # fp32 rounding only
        info.update(max_abs_diff=diff, speedup=before_s / encode_s if encode_s and before_s else None)
    if case == "bucketed" and "chunked" in _RESULTS:
        chunked_s = _RESULTS["chunked"][0]
        info.update(speedup_vs_chunked=chunked_s / encode_s if encode_s and chunked_s else None)
    benchmark.extra_info.update(info, **device_info)


def test_warm_disk_cache_in_a_fresh_process(benchmark, device_info, tmp_path):
    """A second process gets the embeddings from the disk cache (the text encoder would raise)."""
    from clipsam.segmenter import Segmenter

    names = class_names(CLASSES)
    folder = tmp_path / "cache"
    seg = Segmenter(_loaded(), dense_config("sclip", None, templates=TEMPLATES), device=DEVICE, text_disk_cache=folder)
    if "bucketed" in _RESULTS:  # the bucketed case computed them: store that, without encoding again
        seg.text_store.save(seg.text_disk_key(Vocabulary.from_names(names)), _RESULTS["bucketed"][1].numpy())
    else:
        seg.text_embeddings(names)
    env = dict(os.environ, CLIPSAM_TEXT_CACHE="1")
    cmd = [sys.executable, "-c", _WARM, CLIP, str(folder), DEVICE, json.dumps(names)]
    out: dict = {}

    def run():
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert out["shape"] == [len(names), int(seg.model.text_projection.shape[-1])]
    prompts = len(names) * len(resolve_templates(TEMPLATES))
    info = _info("warm_disk", prompts, 0, out["load_s"], out["peak_rss_mb"])
    info.update(load_s=out["load_s"], process_s=out["process_s"])
    benchmark.extra_info.update(info, **device_info)
    assert 0 < out["load_s"] < out["process_s"]
