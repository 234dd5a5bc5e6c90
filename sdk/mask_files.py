"""Region-mask files of CorrCLIP (``method="corrclip"``, ``--masks DIR``): one file per image, found by the image's
output name, read without pickle. numpy and Pillow only.

A folder of masks mirrors the images' tree: the image ``photos/a/b.jpg`` (output name ``a/b``) takes its masks from
``DIR/a/b.npz``, ``DIR/a/b.npy`` or ``DIR/a/b.png`` (exactly one of them):

* ``.npz``: the array ``instance_mask`` (the format of CorrCLIP's pre-generated region masks), or the file's only
  array: an (H, W) integer instance map (0 = unsegmented) or an (M, H, W) boolean stack;
* ``.npy``: the same arrays;
* ``.png``: an instance map in a single-channel PNG (8- or 16-bit grey, or palette indices), 0 = unsegmented.

What the arrays mean and how they are checked against the image: ``clipsam.masks.instance_map``.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import InvalidInputError
from .paths import shown

MASK_SUFFIXES = (".npz", ".npy", ".png")


def mask_file(mask_dir, name: str) -> Path:
    """The mask file of the image whose output name is ``name`` (``clipsam.inputs.InputImage.name``).

    Raises:
        InvalidInputError when there is none, or more than one (``.npz`` and ``.png`` of the same name), naming the
        paths looked at.
    """
    base = Path(mask_dir) / name
    found = [base.with_name(base.name + s) for s in MASK_SUFFIXES if base.with_name(base.name + s).is_file()]
    if len(found) == 1:
        return found[0]
    looked = ", ".join(str(base) + s for s in MASK_SUFFIXES)
    if not found:
        raise InvalidInputError(
            f"no region masks for image {name!r}: none of {looked} exists. Put one mask file per image in the mask "
            "folder (same sub-folders and names as the images), or run without --masks (SAM2 automatic masks)"
        )
    raise InvalidInputError(
        f"more than one region-mask file for image {name!r}: {', '.join(map(str, found))}; keep one of them"
    )


def require_mask_files(mask_dir, names: list[str], what: str = "--masks") -> Path:
    """``mask_dir`` as a Path, after checking (before any model loads) that it is a folder and that every name of
    ``names`` has exactly one mask file in it; InvalidInputError naming the first missing ones otherwise."""
    path = Path(os.fspath(mask_dir))
    if not path.is_dir():
        raise InvalidInputError(
            f"{what} {str(path)!r} is not a folder; give the folder that holds one mask file per image"
        )
    missing = []
    for n in names:
        try:
            mask_file(path, n)
        except InvalidInputError:
            missing.append(n)
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InvalidInputError(
            f"{what} {shown(path)}: {len(missing)} image(s) have no mask file, or more than one: {listed}. Each image needs "
            f"exactly one of {shown(path)}/<name>.npz, .npy or .png (name as in the outputs, sub-folders included)"
        )
    return path


def read_mask_file(path) -> np.ndarray:
    """The array of a mask file: an (H, W) integer map or an (M, H, W) boolean stack (not yet checked against the
    image: ``clipsam.masks.instance_map`` does that).

    Raises:
        InvalidInputError for an unreadable file, a pickled array, an ``.npz`` without ``instance_mask`` and with
        several arrays, or a PNG with colour channels (an RGB picture is not an id map).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return _read_png(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "instance_mask" in keys:
                    return z["instance_mask"]
                if len(keys) == 1:
                    return z[keys[0]]
            raise InvalidInputError(
                f"{shown(path)}: an .npz of region masks must hold the array 'instance_mask' or exactly one array; it "
                f"holds {keys}"
            )
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except ValueError as e:  # np.load refuses object arrays (pickle) with a ValueError
        raise InvalidInputError(
            f"{shown(path)}: not a plain numeric array ({e}); save the masks with np.save / np.savez of an integer or "
            "boolean array"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:  # zlib: a corrupt np.savez_compressed member
        raise InvalidInputError(f"{shown(path)}: cannot read the region masks ({type(e).__name__}: {e})") from None
    raise InvalidInputError(f"{shown(path)}: region masks must be {', '.join(MASK_SUFFIXES)} files")


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise InvalidInputError(
                    f"{shown(path)}: a region-mask PNG must have one channel of instance ids (8- or 16-bit grey or palette "
                    f"indices); this one is {mode}. Save the (H, W) id map as a grey PNG or an .npy"
                )
            return np.asarray(im).astype(np.int32)
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"{shown(path)}: cannot read the region masks ({type(e).__name__}: {e})") from None
