"""``clipsam segment``: segment images and write labels, overlays and summaries."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import positive_int
from ..errors import Interrupted
from ..inputs import InputImage, expand_inputs
from ..mask_files import mask_file, read_mask_file, require_mask_files
from ..paths import output_dir
from ..prefetch import decode_workers
from ..result import save_atomic
from .options import add_segment_options, build_segmenter, check_masks_method, resolve_classes


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "segment",
        help="segment images into named classes",
        description="Segment images. Writes, per image, <name>_labels.png (palette PNG of class indices), "
        "<name>_overlay.png (image, colours and legend) and <name>.json (classes, pixel fractions, "
        "config, timing); outputs of images in sub-folders go to the same sub-folders of --out.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files, folders (their images, recursively, sorted) or glob patterns such as 'photos/*.jpg'",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_segment_options(p)
    p.set_defaults(func=cmd_segment)
    return p


def cmd_segment(args: argparse.Namespace) -> int:
    classes = resolve_classes(args)
    images = expand_inputs(args.images, out=args.out)
    positive_int(args.batch_size, "--batch-size")
    decode_workers(
        args.decode_workers, on_gpu=False, name="--decode-workers"
    )  # a bad value fails here, before any model loads
    output_dir(args.out, "--out")  # before any model loads
    mask_dir = checked_mask_dir(args, [im.name for im in images])
    seg = build_segmenter(args)
    dt = segment_and_save(
        seg, images, classes, Path(args.out), args.batch_size, not args.no_progress, mask_dir, args.decode_workers
    )
    backend = ""
    if args.engines:
        used = sorted({p for ps in seg.providers.values() for p in ps})
        backend = f" with ONNX Runtime ({', '.join(used)})"
    print(
        f"segmented {len(images)} image(s) in {dt:.1f} s ({len(images) / max(dt, 1e-9):.2f} img/s){backend} -> "
        f"{args.out}"
    )
    return 0


def checked_mask_dir(args: argparse.Namespace, names: list[str]) -> Path | None:
    """``--masks DIR`` when given, after checking (before any model loads) that every image has one mask file."""
    check_masks_method(args)
    return require_mask_files(args.masks, names) if getattr(args, "masks", None) else None


def segment_and_save(
    seg,
    images: list[InputImage],
    classes,
    out: Path,
    batch_size: int,
    progress: bool,
    mask_dir: Path | None = None,
    decode_workers: int | None = None,
) -> float:
    """Segment ``images`` with any segmenter (PyTorch or engines), save each result under ``out``; seconds taken.
    ``mask_dir``: CorrCLIP's region-mask folder (``clipsam.mask_files``), read one image at a time."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", desc="segment")
    t0 = time.perf_counter()
    try:
        masks = None if mask_dir is None else (read_mask_file(mask_file(mask_dir, im.name)) for im in images)
        results = seg.segment_stream(
            (im.path for im in images),
            classes=classes,
            batch_size=batch_size,
            masks=masks,
            decode_workers=decode_workers,
        )
        for im, res in zip(images, results):
            res.info["image"] = im.path
            save_atomic(res, out, im.name)
            top = ", ".join(f"{k} {100 * v:.1f}%" for k, v in list(res.pixel_fractions().items())[:5])
            line = f"{im.path}: [{top}] -> {out / im.name}_*"
            if bar is not None:
                bar.write(line)
                bar.update(1)
            else:
                print(line)
    except KeyboardInterrupt:
        done = sum((out / f"{im.name}.json").is_file() for im in images)  # the interrupt may hit between two steps
        raise Interrupted(
            f"{done} of {len(images)} image(s) were finished and saved in {out} (each <name>.json is written last); "
            f"{len(images) - done} were not. To do only the rest, run clipsam batch with the same images, options and "
            "--out: it skips images whose <name>.json exists."
        ) from None
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - t0
