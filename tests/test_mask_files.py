"""Region-mask files (``clipsam.mask_files``): finding each image's file, reading every format, refusing the rest."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import ClipSamError
from clipsam.mask_files import mask_file, read_mask_file, require_mask_files
from clipsam.masks import instance_map


def _ids(h=12, w=16):
    ids = np.zeros((h, w), np.int32)
    ids[2:6, 3:9] = 3
    ids[7:11, 1:15] = 300  # beyond 8 bits: a 16-bit PNG must keep it
    return ids


def test_each_format_reads_back_the_same_instance_map(tmp_path):
    ids = _ids()
    np.savez(tmp_path / "a.npz", instance_mask=ids, other=np.ones(3))  # CorrCLIP's pre-generated mask format
    np.savez(tmp_path / "b.npz", ids)  # one array under any key
    np.save(tmp_path / "c.npy", ids.astype(np.int64))
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "d.png")  # 16-bit grey
    Image.fromarray((ids % 256).astype(np.uint8)).save(tmp_path / "e.png")  # 8-bit grey
    pal = Image.fromarray((ids % 256).astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0] * 128)
    pal.save(tmp_path / "f.png")  # palette indices (a label-tool export)
    expected = instance_map(ids, ids.shape)
    for name in "abcd":
        got = read_mask_file(mask_file(tmp_path, name))
        np.testing.assert_array_equal(instance_map(got, ids.shape), expected, err_msg=name)
    for name in "ef":
        np.testing.assert_array_equal(read_mask_file(tmp_path / f"{name}.png"), ids % 256, err_msg=name)
    stack = np.stack([ids == 3, ids == 300])
    np.save(tmp_path / "g.npy", stack)
    got = read_mask_file(tmp_path / "g.npy")
    assert got.dtype == bool and got.shape == (2, 12, 16)
    assert np.array_equal(instance_map(got, ids.shape) > 0, ids > 0)


def test_found_by_output_name_in_sub_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "img.npy", _ids())
    assert mask_file(tmp_path, "sub/img") == tmp_path / "sub" / "img.npy"
    with pytest.raises(ClipSamError, match="no region masks for image 'img'"):
        mask_file(tmp_path, "img")  # not at the top level
    np.savez(tmp_path / "sub" / "img.npz", instance_mask=_ids())
    with pytest.raises(ClipSamError, match="more than one"):
        mask_file(tmp_path, "sub/img")


def test_require_mask_files_names_what_is_missing(tmp_path):
    np.save(tmp_path / "a.npy", _ids())
    assert require_mask_files(tmp_path, ["a"]) == tmp_path
    with pytest.raises(ClipSamError, match=r"2 image\(s\) have no mask file.*b, c"):
        require_mask_files(tmp_path, ["a", "b", "c"])
    with pytest.raises(ClipSamError, match="is not a folder"):
        require_mask_files(tmp_path / "a.npy", ["a"])
    with pytest.raises(ClipSamError, match="and 2 more"):
        require_mask_files(tmp_path, [f"x{i}" for i in range(7)])


def test_bad_files_are_refused_without_pickle(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ClipSamError, match="not a plain numeric array"):
        read_mask_file(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", x=_ids(), y=_ids())
    with pytest.raises(ClipSamError, match="'instance_mask' or exactly one array"):
        read_mask_file(tmp_path / "two.npz")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ClipSamError, match="one channel of instance ids"):
        read_mask_file(tmp_path / "rgb.png")
    for name, data in (("bad.npz", b"PK\x03\x04 broken"), ("bad.npy", b"\x93NUMPY junk"), ("bad.png", b"\x89PNG")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ClipSamError, match="cannot read the region masks|not a plain numeric array"):
            read_mask_file(tmp_path / name)
    with pytest.raises(ClipSamError, match="must be .npz, .npy, .png"):
        read_mask_file(tmp_path / "masks.txt")
    np.savez_compressed(tmp_path / "z.npz", instance_mask=np.random.default_rng(0).integers(0, 9, (64, 64)))
    data = bytearray((tmp_path / "z.npz").read_bytes())
    data[200:400] = bytes(b ^ 0x5A for b in data[200:400])  # damaged deflate data inside the archive (zlib.error)
    (tmp_path / "z.npz").write_bytes(bytes(data))
    with pytest.raises(ClipSamError, match="z.npz: cannot read the region masks"):
        read_mask_file(tmp_path / "z.npz")
