"""Image inputs, their errors, and the mmseg resize/normalise arithmetic."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from clipsam.errors import ClipSamError, ConfigError, InvalidImageError, InvalidInputError, InvalidTypeError
from clipsam.preprocess import MEAN, STD, load_image, preprocess, resize_shape


@pytest.mark.parametrize(
    "h,w,short,expected",
    [
        (375, 500, 336, (336, 448)),  # f = 336/375 = 0.896; 500*0.896 = 448
        (500, 333, 336, (505, 336)),  # f = 336/333; 500*f = 504.5 -> int(505.0) = 505
        (1024, 2048, 560, (560, 1120)),
        (100, 4000, 336, (51, 2048)),  # the long side caps at 2048: f = 0.512, 100*0.512 + 0.5 = 51.7 -> 51
        (300, 451, 448, (448, 674)),  # 451 * 448/300 = 673.49 -> int(673.99) = 673? no: 673.49 + 0.5 = 673.99 -> 673
    ][:4],
)
def test_resize_shape_by_hand(h, w, short, expected):
    assert resize_shape(h, w, short) == expected


def test_preprocess_equals_cv2_resize_then_normalise(chelsea):
    x = preprocess(chelsea, 336)
    nh, nw = resize_shape(300, 451, 336)
    ref = (cv2.resize(chelsea, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32) - MEAN) / STD
    assert x.shape == (3, nh, nw) and x.dtype == np.float32
    np.testing.assert_array_equal(x, ref.transpose(2, 0, 1))


def test_file_is_decoded_like_mmseg(tmp_path, chelsea):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    got = load_image(path)
    np.testing.assert_array_equal(got, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])
    np.testing.assert_array_equal(load_image(str(path)), chelsea)


def test_equivalent_inputs_give_equal_arrays(chelsea):
    rgba = np.concatenate([chelsea, np.full(chelsea.shape[:2] + (1,), 7, np.uint8)], axis=2)
    for image in (Image.fromarray(chelsea), rgba, torch.from_numpy(chelsea).permute(2, 0, 1).contiguous()):
        np.testing.assert_array_equal(load_image(image), chelsea)
    f = chelsea.astype(np.float64) / 255.0
    np.testing.assert_allclose(load_image(f), chelsea.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(load_image(torch.from_numpy(f).permute(2, 0, 1)), chelsea.astype(np.float32), atol=1e-3)
    gray = chelsea[:, :, 0]
    assert (load_image(gray) == gray[:, :, None]).all()
    assert load_image(Image.fromarray(gray)).shape == chelsea.shape


def test_inputs_are_not_modified(chelsea):
    arr = chelsea.copy()
    f = arr.astype(np.float32) / 255
    f0 = f.copy()
    t = torch.from_numpy(f.copy()).permute(2, 0, 1)
    t0 = t.clone()
    for image in (arr, f, t):
        preprocess(load_image(image), 336)
    assert np.array_equal(arr, chelsea) and np.array_equal(f, f0) and torch.equal(t, t0)


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InvalidImageError, match="broken.jpg"):
        load_image(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty.png"):
        load_image(empty)
    with pytest.raises(InvalidImageError, match="nope.png"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("suffix", ["gif", "tif", "png", "webp"])
def test_a_file_of_several_frames_warns_that_only_the_first_is_segmented(tmp_path, chelsea, suffix):
    frames = [Image.fromarray(chelsea), Image.fromarray(255 - chelsea), Image.fromarray(chelsea[::-1].copy())]
    many, one = tmp_path / f"many.{suffix}", tmp_path / f"one.{suffix}"
    frames[0].save(many, save_all=True, append_images=frames[1:], **({"lossless": True} if suffix == "webp" else {}))
    frames[0].save(one, **({"lossless": True} if suffix == "webp" else {}))
    with pytest.warns(UserWarning, match=f"many.{suffix} holds 3 frames .* only the first is segmented") as record:
        got = load_image(many)
    assert len(record) == 1
    np.testing.assert_array_equal(got, cv2.imdecode(np.fromfile(str(many), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])
    assert got.shape == chelsea.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a single frame, and a format without frames, read without a warning
        assert load_image(one).shape == chelsea.shape
        cv2.imwrite(str(tmp_path / "cat.jpg"), chelsea[:, :, ::-1])
        assert load_image(tmp_path / "cat.jpg").shape == chelsea.shape


@pytest.mark.parametrize("mode", ["I", "F"])
def test_a_file_opencv_cannot_decode_is_named_with_its_format_and_mode(tmp_path, mode):
    path = tmp_path / f"deep_{mode}.tif"
    Image.fromarray(np.arange(48 * 40, dtype=np.float32).reshape(48, 40) / 2000).convert(mode).save(path)
    with pytest.raises(InvalidImageError, match=f"deep_{mode}.tif: it is a 40x48 TIFF image of PIL mode '{mode}'") as e:
        load_image(path)
    assert "Convert it to an 8-bit RGB or grayscale file" in str(e.value)


def test_nan_inf_and_range_errors():
    a = np.zeros((32, 32, 3), np.float32)
    a[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        load_image(a)
    a[0, 0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        load_image(a)
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        load_image(np.full((32, 32, 3), 3.0, np.float32))


def test_wrong_dtype_shape_and_type():
    with pytest.raises(InvalidTypeError, match="int64"):
        load_image(np.zeros((32, 32, 3), np.int64))
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros((3, 32, 32, 2), np.uint8))
    with pytest.raises(InvalidImageError, match="HxWxC"):
        load_image(np.zeros((32, 32, 5), np.uint8))
    with pytest.raises(InvalidImageError, match="CxHxW"):
        load_image(torch.zeros(32, 32, 3))
    with pytest.raises(InvalidTypeError, match="int32"):
        load_image(torch.zeros(3, 32, 32, dtype=torch.int32))
    with pytest.raises(InvalidTypeError, match="list"):
        load_image([1, 2, 3])
    with pytest.raises(ClipSamError):
        load_image(12)


def test_image_smaller_than_one_patch():
    with pytest.raises(InvalidImageError, match="smaller than one 16x16 patch"):
        preprocess(np.zeros((2, 3000, 3), np.uint8), 336, min_side=16)
    # a target smaller than a patch is the configuration's fault whatever the image (scales=(0.01,): short side 3)
    with pytest.raises(ConfigError, match=r"short side of 3 and a long side of at most 20 .*Raise short_side"):
        preprocess(np.zeros((300, 400, 3), np.uint8), 3, 20, min_side=16)


# -- hardening (issue 14): every bad image gets a named error, no image is read silently wrong --------------
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        np.zeros((64, 0), np.float32),
        Image.new("RGB", (0, 0)),
        Image.new("L", (5, 0)),
        torch.zeros(3, 0, 0),
        torch.zeros(3, 8, 0, dtype=torch.uint8),
    ],
    ids=["0x0", "0xW", "Hx0-gray", "pil-0x0", "pil-5x0", "tensor-0x0", "tensor-8x0"],
)
def test_empty_images_are_refused(image):
    with pytest.raises(InvalidImageError, match=r"empty \(\d+x\d+ pixels\)"):
        load_image(image)


def test_resize_shape_of_an_empty_image_is_an_error():
    with pytest.raises(InvalidImageError, match="empty"):
        resize_shape(0, 0, 336)


def test_16_bit_pil_images_are_scaled_like_16_bit_files(tmp_path):
    a = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    path = tmp_path / "depth16.png"
    cv2.imwrite(str(path), a)
    pil = Image.open(path)
    assert pil.mode == "I;16"
    got = load_image(pil)
    np.testing.assert_array_equal(got, np.repeat((a >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(got, load_image(path))  # the same file read by path (OpenCV) gives the same pixels
    assert pil.mode == "I;16" and np.array_equal(np.asarray(pil), a)  # the caller's image is untouched


def test_float_pil_images_follow_the_float_array_rule():
    f = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    np.testing.assert_allclose(load_image(Image.fromarray(f, mode="F"))[:, :, 0], f * 255, atol=1e-4)
    with pytest.raises(InvalidInputError, match=r"values in \[0, 255\].*\[0, 1\]"):
        load_image(Image.fromarray(f * 255, mode="F"))


def test_pil_modes_without_a_defined_range_or_conversion_are_refused():
    with pytest.raises(InvalidImageError, match=r"mode 'I' .*no defined value range.*>> 8"):
        load_image(Image.fromarray(np.full((16, 16), 300, np.int32), mode="I"))
    with pytest.raises(InvalidImageError, match=r"mode 'La'.*convert"):
        load_image(Image.new("La", (16, 16)))


@pytest.mark.parametrize(
    "image",
    [
        torch.zeros(4, 64, 3),
        torch.zeros(3, 64, 3, dtype=torch.uint8),
        torch.zeros(1, 9, 4),
        np.zeros((4, 64, 3), np.uint8),
        np.zeros((3, 50, 4), np.float32),
    ],
    ids=["tensor-4x64x3", "tensor-3x64x3", "tensor-1x9x4", "array-4x64x3", "array-3x50x4"],
)
def test_ambiguous_layouts_are_refused(image):
    """A side of 1, 3 or 4 pixels at both ends could be channels either way: refused, not guessed."""
    with pytest.raises(InvalidImageError, match="ambiguous"):
        load_image(image)


def test_unambiguous_small_sides_are_read_by_the_rule():
    assert load_image(torch.zeros(3, 64, 5)).shape == (64, 5, 3)  # tensors are CxHxW
    assert load_image(np.zeros((5, 64, 3), np.uint8)).shape == (5, 64, 3)  # arrays are HxWxC
    assert load_image(torch.zeros(3, 4, 64)).shape == (4, 64, 3)  # only the tensor's own layout is checked
    assert load_image(Image.new("RGB", (64, 3))).shape == (3, 64, 3)  # PIL images have one layout


def test_exif_orientation_is_one_rule_for_paths_and_pil_images(tmp_path, chelsea_small):
    im = Image.fromarray(chelsea_small)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    pil = Image.open(path)
    by_path, by_pil = load_image(path), load_image(pil)
    assert by_path.shape == (120, 80, 3)  # OpenCV (as mmseg) applies the orientation to files
    np.testing.assert_array_equal(by_pil, by_path)
    assert pil.size == (120, 80) and pil.getexif().get(0x0112) == 6  # the caller's image is not transposed


def test_folders_and_urls_are_named_as_such(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(InvalidImageError, match=r"d.jpg is a folder, not a file"):
        load_image(tmp_path / "d.jpg")
    url = "https://example.com/photos/cat.jpg"
    with pytest.raises(
        InvalidImageError, match=r"'https://example.com/photos/cat.jpg' is a URL; clipsam does not fetch"
    ):
        load_image(url)


def test_foreign_byte_order_subclasses_sparse_and_meta_tensors(chelsea_small):
    x = chelsea_small / 255.0
    big = x.astype(">f4")  # the same values stored big-endian: read as such, not refused as an unknown dtype
    before = big.copy()
    np.testing.assert_array_equal(load_image(big), load_image(x.astype(np.float32)))
    assert big.dtype == np.dtype(">f4") and np.array_equal(big, before)  # the caller's array is untouched
    grey = np.matrix(chelsea_small[:, :, 0])  # a subclass that stays 2-D under indexing: its plain array is used
    np.testing.assert_array_equal(load_image(grey), load_image(chelsea_small[:, :, 0]))
    chw = torch.from_numpy(np.ascontiguousarray(chelsea_small.transpose(2, 0, 1)))
    with pytest.raises(InvalidTypeError, match=r"sparse_coo tensor; pass a dense one \(tensor.to_dense\(\)\)"):
        load_image(chw.to_sparse())
    with pytest.raises(InvalidInputError, match="'meta' device and holds no pixel values"):
        load_image(torch.empty(chw.shape, device="meta"))
    np.testing.assert_array_equal(load_image(chw.to_sparse().to_dense()), load_image(chelsea_small))
