"""Readers for the benchmark datasets in the layouts mmsegmentation's data preparation produces.

``open_dataset(name, root)`` lists the (image, label) pairs of a split; ``Dataset.load_label`` reads
a label PNG as class indices (palette PNGs are read as their indices, never as colours) and applies
``reduce_zero_label`` where the benchmark uses it (mmseg's LoadAnnotations: 0 -> 255, k -> k-1, 255
stays 255). Layouts, relative to the dataset root (``root`` may also be a folder above it, e.g. the
one holding ``VOCdevkit/``):

    voc21, voc20          JPEGImages/<id>.jpg  SegmentationClass/<id>.png  ImageSets/Segmentation/val.txt
    context60, context59  JPEGImages/<id>.jpg  SegmentationClassContext/<id>.png
                          ImageSets/SegmentationContext/val.txt  (VOC2010)
    coco_object           images/val2017/<id>.jpg  annotations/val2017/<id>_instanceTrainIds.png
    coco_stuff164k        images/val2017/<id>.jpg  annotations/val2017/<id>_labelTrainIds.png
    cityscapes            leftImg8bit/val/<city>/<id>_leftImg8bit.png
                          gtFine/val/<city>/<id>_gtFine_labelTrainIds.png
    ade20k                images/validation/<id>.jpg  annotations/validation/<id>.png  (ADEChallengeData2016)

Datasets without a split file list every image under the image folder, recursively, sorted by path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, InvalidImageError, InvalidInputError
from ..paths import shown

_CLASSES_DIR = Path(__file__).resolve().parent.parent / "data" / "classes"


class DatasetNotFoundError(InvalidInputError, FileNotFoundError):
    """A dataset root, split file, image or label file is missing; the message gives the expected layout."""


@dataclass(frozen=True)
class DatasetSpec:
    """How one benchmark dataset is laid out on disk and scored."""

    name: str  # registry key, also the class file stem: clipsam/data/classes/<name>.txt
    num_classes: int  # classes scored (after reduce_zero_label)
    reduce_zero_label: bool  # mmseg reduce_zero_label: 0 -> ignore, k -> k-1
    img_dir: str  # image folder under the dataset root; "{split}" is replaced by the split's folder name
    label_dir: str  # label folder under the dataset root, same "{split}" rule
    img_suffix: str  # image file = <img_dir>/<id><img_suffix>
    label_suffix: str  # label file = <label_dir>/<id><label_suffix>
    splits: tuple[tuple[str, str], ...]  # (split argument, folder/file name it stands for)
    split_file: str | None = None  # ids listed one per line, e.g. ImageSets/Segmentation/{split}.txt
    root_subdirs: tuple[str, ...] = ("",)  # where the dataset root may sit below the given root
    ignore_index: int = 255  # ground-truth value left out of the metric

    @property
    def class_file(self) -> Path:
        """The class-name file, ``clipsam/data/classes/<name>.txt`` (one class per label index)."""
        return _CLASSES_DIR / f"{self.name}.txt"

    def split_token(self, split: str) -> str:
        """The folder / file name of ``split`` (e.g. ``"val"`` is ``validation`` for ADE20K)."""
        for key, token in self.splits:
            if key == split:
                return token
        known = ", ".join(k for k, _ in self.splits)
        raise ConfigError(f"Dataset '{self.name}' has no split '{split}'; known splits: {known}.")

    def expected_layout(self, split: str) -> str:
        """A one-line description of the files this dataset needs, for error messages."""
        tok = self.split_token(split)
        parts = [
            f"{self.img_dir.format(split=tok)}/<id>{self.img_suffix}",
            f"{self.label_dir.format(split=tok)}/<id>{self.label_suffix}",
        ]
        if self.split_file:
            parts.append(f"{self.split_file.format(split=tok)} (one <id> per line)")
        return f"'{self.name}' expects, under its root: " + ", ".join(parts)


_VOC21 = DatasetSpec(
    "voc21",
    21,
    False,
    img_dir="JPEGImages",
    label_dir="SegmentationClass",
    img_suffix=".jpg",
    label_suffix=".png",
    splits=(("val", "val"), ("train", "train"), ("trainval", "trainval")),
    split_file="ImageSets/Segmentation/{split}.txt",
    root_subdirs=("", "VOC2012", "VOCdevkit/VOC2012"),
)
_CONTEXT60 = DatasetSpec(
    "context60",
    60,
    False,
    img_dir="JPEGImages",
    label_dir="SegmentationClassContext",
    img_suffix=".jpg",
    label_suffix=".png",
    splits=(("val", "val"), ("train", "train")),
    split_file="ImageSets/SegmentationContext/{split}.txt",
    root_subdirs=("", "VOC2010", "VOCdevkit/VOC2010"),
)
# COCO-Object (GroupViT's cvt_coco_object.py: background + 80 things) sits beside COCO-Stuff-164k's labels.
_COCO_OBJECT = DatasetSpec(
    "coco_object",
    81,
    False,
    img_dir="images/{split}",
    label_dir="annotations/{split}",
    img_suffix=".jpg",
    label_suffix="_instanceTrainIds.png",
    splits=(("val", "val2017"), ("train", "train2017")),
    root_subdirs=("", "coco_stuff164k"),
)

DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        _VOC21,
        replace(_VOC21, name="voc20", num_classes=20, reduce_zero_label=True),
        _CONTEXT60,
        replace(_CONTEXT60, name="context59", num_classes=59, reduce_zero_label=True),
        _COCO_OBJECT,
        replace(_COCO_OBJECT, name="coco_stuff164k", num_classes=171, label_suffix="_labelTrainIds.png"),
        DatasetSpec(
            "cityscapes",
            19,
            False,
            img_dir="leftImg8bit/{split}",
            label_dir="gtFine/{split}",
            img_suffix="_leftImg8bit.png",
            label_suffix="_gtFine_labelTrainIds.png",
            splits=(("val", "val"), ("train", "train")),
            root_subdirs=("", "cityscapes"),
        ),
        DatasetSpec(
            "ade20k",
            150,
            True,
            img_dir="images/{split}",
            label_dir="annotations/{split}",
            img_suffix=".jpg",
            label_suffix=".png",
            splits=(("val", "validation"), ("train", "training")),
            root_subdirs=("", "ADEChallengeData2016", "ade/ADEChallengeData2016"),
        ),
    )
}


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its label file."""

    image_path: Path
    label_path: Path
    name: str  # the id: split-file entry, or the image path relative to the image folder without suffix


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 becomes 255 (ignored), k becomes k-1, 255 stays 255. Same dtype."""
    label = np.asarray(label)
    return np.where((label == 0) | (label == 255), 255, label - 1).astype(label.dtype, copy=False)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as class indices: HxW uint8 (PIL mode 'P' or 'L') or int64 (16/32-bit 'I' modes).

    Palette PNGs give their palette indices, never colours. Raises InvalidImageError for an unreadable
    file or a colour (RGB) label.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"Label file {shown(path)} does not exist.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidImageError(f"Label file {shown(path)} cannot be read ({e}); it is corrupt or truncated.") from e
    if mode in ("P", "L"):
        return arr.astype(np.uint8, copy=False)
    if mode.startswith("I"):
        return arr.astype(np.int64)
    raise InvalidImageError(
        f"Label file {shown(path)} has PIL mode '{mode}'; labels must be single-channel index PNGs (mode 'P' or 'L'). "
        "A colour-coded label cannot be scored: convert it to class indices first."
    )


@dataclass(frozen=True)
class Dataset:
    """The samples of one split of a dataset, in evaluation order. Iterable; ``len()`` and indexing work."""

    spec: DatasetSpec
    root: Path  # the dataset root actually used (below the given root when it matched a root_subdir)
    split: str
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def load_label(self, sample: Sample) -> np.ndarray:
        """The HxW ground truth of ``sample`` with reduce_zero_label applied: values in [0, C) or ``ignore_index``.

        Raises InvalidImageError naming the file when it holds other values (a label of another dataset or
        layout), before any image is segmented; ``--skip-bad`` skips such a sample like an unreadable one."""
        label = read_label(sample.label_path)
        label = reduce_zero_label(label) if self.spec.reduce_zero_label else label
        n, ignore = self.spec.num_classes, self.spec.ignore_index
        if label.size and (label.min() < 0 or label.max() >= n):
            bad = np.unique(label[((label < 0) | (label >= n)) & (label != ignore)])
            if bad.size:
                listed = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
                zero = " after reduce_zero_label (0 -> ignored, k -> k-1)" if self.spec.reduce_zero_label else ""
                raise InvalidImageError(
                    f"Label file {shown(sample.label_path)} has values outside [0, {n}) that are not the ignore index "
                    f"{ignore}{zero}: {listed}. It is not a '{self.spec.name}' label: check the dataset name and "
                    "root, or skip such files with --skip-bad (skip_bad=True)."
                )
        return label

    def load_image(self, sample: Sample) -> np.ndarray:
        """The HxWx3 uint8 RGB image of ``sample``. Raises InvalidImageError for an unreadable file."""
        try:
            with Image.open(sample.image_path) as im:
                return np.array(im.convert("RGB"))
        except FileNotFoundError:
            raise DatasetNotFoundError(f"Image file {sample.image_path} does not exist.") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InvalidImageError(
                f"Image file {sample.image_path} cannot be read ({e}); it is corrupt or truncated."
            ) from e


def _find_root(spec: DatasetSpec, root: Path, img_dir: str, split: str) -> Path:
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset root {root} is not a directory. {spec.expected_layout(split)}.")
    tried = [root / sub if sub else root for sub in spec.root_subdirs]
    for base in tried:
        if (base / img_dir).is_dir():
            return base
    where = ", ".join(str(t / img_dir) for t in tried)
    raise DatasetNotFoundError(
        f"No image folder for '{spec.name}' split '{split}' under {root} (looked for {where}). "
        f"{spec.expected_layout(split)}."
    )


def _list_ids(spec: DatasetSpec, base: Path, img_dir: Path, tok: str, split: str) -> list[str]:
    if spec.split_file:
        split_path = base / spec.split_file.format(split=tok)
        if not split_path.is_file():
            raise DatasetNotFoundError(f"Split file {split_path} does not exist. {spec.expected_layout(split)}.")
        ids = [line.strip() for line in split_path.read_text().splitlines() if line.strip()]
        if not ids:
            raise InvalidInputError(f"Split file {split_path} lists no image ids.")
        seen: dict[str, int] = {}
        for n, ident in enumerate(ids, 1):
            if ident in seen:  # it would be segmented and scored twice, weighting the mIoU towards it
                raise InvalidInputError(
                    f"Split file {split_path} lists the id {ident!r} twice (entries {seen[ident]} and {n}); "
                    "remove the duplicate line."
                )
            seen[ident] = n
        return ids
    paths = sorted(p for p in img_dir.rglob(f"*{spec.img_suffix}") if p.is_file())
    if not paths:
        raise DatasetNotFoundError(f"No *{spec.img_suffix} images under {img_dir}. {spec.expected_layout(split)}.")
    return [p.relative_to(img_dir).as_posix()[: -len(spec.img_suffix)] for p in paths]


def open_dataset(
    name: str,
    root: str | os.PathLike,
    split: str = "val",
    limit: int | None = None,
    check_files: bool = True,
) -> Dataset:
    """List the samples of ``split`` of dataset ``name`` stored under ``root``.

    Arguments:
      name: a key of DATASETS (voc21, voc20, context60, context59, coco_object, coco_stuff164k,
        cityscapes, ade20k).
      root: the dataset root, or a folder above it matching one of the spec's root_subdirs.
      split: "val" (the benchmark split) or another split the spec lists.
      limit: keep only the first ``limit`` samples (in evaluation order); None keeps all.
      check_files: check that every image and label exists (so a partial download fails now, naming the
        first missing file, rather than mid-evaluation); False lists them anyway (``--skip-bad``).

    Returns:
      A Dataset of the listed samples.
    """
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"open_dataset limit must be a positive int or None, got {limit!r}.")
    spec = DATASETS[name]
    tok = spec.split_token(split)
    img_rel, label_rel = spec.img_dir.format(split=tok), spec.label_dir.format(split=tok)
    base = _find_root(spec, Path(root), img_rel, split)
    ids = _list_ids(spec, base, base / img_rel, tok, split)[:limit]
    samples = tuple(
        Sample(base / img_rel / f"{i}{spec.img_suffix}", base / label_rel / f"{i}{spec.label_suffix}", i) for i in ids
    )
    for kind, attr in (("image", "image_path"), ("label", "label_path")) if check_files else ():
        missing = [getattr(s, attr) for s in samples if not getattr(s, attr).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(samples)} {kind} files of '{name}' split '{split}' are missing, "
                f"first {missing[0]}. {spec.expected_layout(split)}."
            )
    return Dataset(spec=spec, root=base, split=split, samples=samples)
