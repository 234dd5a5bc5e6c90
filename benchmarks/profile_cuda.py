"""Where one ``Segmenter.segment`` call spends its time on a GPU: host functions (cProfile) and device ops
(torch.profiler). A diagnostic for the pipeline benchmark, not a benchmark itself.

    CUDA_VISIBLE_DEVICES=0 python benchmarks/profile_cuda.py resclip voc21 naclip ade20k
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
import warnings

import numpy as np
import torch


def profile(method: str, preset: str, clip: str = "ViT-B-16") -> None:
    from clipsam import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(clip=clip, clip_weights=None, method=method, preset=preset, device="cuda")
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    seg.text_embeddings(seg.vocabulary())
    for _ in range(3):
        seg.segment(image)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        seg.segment(image)
    torch.cuda.synchronize()
    print(f"\n##### {method}-{preset}: {(time.perf_counter() - t0) / 5 * 1e3:.1f} ms per call")
    prof = cProfile.Profile()
    prof.enable()
    seg.segment(image)
    torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
    print(s.getvalue()[-6000:])
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as p:
        seg.segment(image)
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    args = sys.argv[1:] or ["resclip", "voc21"]
    for m, p in zip(args[::2], args[1::2]):
        profile(m, p)
