"""PyTorch SAM2.1 backend of CLIP-guided refinement: batched image encoding, one batched decode per image.

``Sam2Refiner`` implements ``Refiner``'s two backend methods (``clipsam.refine.refiner``): the image encoder once
over every image that has prompts, then per image a single call of the prompt encoder + mask decoder over all
of its P prompts (``decoder_calls`` counts these calls).

The model is built once with ``sam2.build_sam.build_sam2(config, ckpt_path=None)``; weights are loaded
here, strictly, so a wrong or corrupt checkpoint raises ``CheckpointError`` with a hint instead of sam2's
bare ``RuntimeError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    InvalidImageError,
    InvalidInputError,
    missing_dependency,
)
from .config import SAM2_MEAN, SAM2_STD
from .prompts import PromptSet
from .refiner import Refiner

_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_URL_SAM20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"  # SAM 2.0 (CorrCLIP's automatic masks)
# name -> (sam2 config, official checkpoint file, (trunk blocks, trunk width) to recognise a checkpoint)
MODELS: dict[str, tuple[str, str, tuple[int, int]]] = {  # keys: SAM2_MODELS
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", (12, 96)),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", (16, 96)),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt", (24, 112)),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", (48, 144)),
    # SAM 2.0 (July 2024): CorrCLIP's automatic masks use sam2_hiera_l; refinement and export are tested on SAM 2.1
    "sam2_hiera_t": ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt", (12, 96)),
    "sam2_hiera_s": ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt", (16, 96)),
    "sam2_hiera_b+": ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt", (24, 112)),
    "sam2_hiera_l": ("configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt", (48, 144)),
}


def _import_sam2() -> tuple[Any, Any]:
    """(torch, build_sam2), or MissingDependencyError; never a fallback."""
    try:
        import torch
    except ImportError as e:
        raise missing_dependency("torch", "torch", "SAM2 refinement") from e
    try:
        from sam2.build_sam import build_sam2
    except ImportError as e:
        raise missing_dependency("sam2", "sam2", "SAM2 refinement") from e
    return torch, build_sam2


def _read_checkpoint(torch: Any, path: Path) -> Mapping[str, Any]:
    """The state dict stored in a SAM2 checkpoint file (under key "model", or the file is one)."""
    from ..models import checkpoint_file, torch_load

    path = checkpoint_file(path, "SAM2 checkpoint")  # a URL, a folder, a missing or empty file: named as such
    obj = torch_load(path, "SAM2 checkpoint")  # refuses pickled code, names a corrupt file
    sd = obj["model"] if isinstance(obj, Mapping) and "model" in obj else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"SAM2 checkpoint '{path}' holds no state dict: expected {{'model': state_dict}} "
            f"(as torch.save({{'model': model.state_dict()}}, path) writes), got {type(obj).__name__}"
        )
    return sd


def _guess_model(sd: Mapping[str, Any]) -> str | None:
    """Name of the SAM2 variant a state dict was saved from, from its trunk depth and width."""
    blocks = {k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    width = getattr(sd.get("image_encoder.trunk.patch_embed.proj.weight"), "shape", (None,))[0]
    for name, (_, _, sig) in MODELS.items():
        if sig == (len(blocks), width) and name.startswith("sam2.1"):
            return name if "no_obj_embed_spatial" in sd else name.replace("sam2.1", "sam2")
    return None


def _check_state_dict(model: Any, sd: Mapping[str, Any], name: str, path: str) -> None:
    """Raise CheckpointError, listing a few differences, unless ``sd`` matches ``model`` exactly."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [f"{k}: expected {v}, found {found[k]}" for k, v in expected.items() if found.get(k, v) != v]
    if not (missing or unexpected or shapes):
        return
    parts = [f"SAM2 checkpoint '{path}' does not match {name} ({MODELS[name][0]}):"]
    diffs = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
    for what, items in diffs:
        if items:
            parts.append(f"{len(items)} {what} (e.g. {'; '.join(items[:3])})")
    guess = _guess_model(sd)
    if guess in MODELS:
        parts.append(f"It looks like a {guess} checkpoint: use Sam2Refiner.from_pretrained('{guess}', weights=...)")
    elif guess:
        parts.append(f"It looks like a {guess} checkpoint; clipsam builds SAM 2.1 models: use a sam2.1 checkpoint")
    else:
        parts.append(f"Use the model name the checkpoint was trained with, one of {sorted(MODELS)}")
    raise CheckpointError(" ".join(parts))


@dataclass(frozen=True, eq=False)
class Sam2Embedding:
    """SAM2 image features of one image (device tensors).

    Attributes:
      image_embed (torch.Tensor): [1, 256, 64, 64] lowest-resolution features (no-memory embed added).
      high_res_feats (tuple): ([1, 32, 256, 256], [1, 64, 128, 128]) features for the mask decoder.
      image_size (tuple): (H, W) of the original image; masks are returned at this size.
    """

    image_embed: Any
    high_res_feats: tuple[Any, ...]
    image_size: tuple[int, int]


class Sam2Refiner(Refiner):
    """SAM2.1 image encoder + mask decoder for CLIP-guided refinement; build with ``from_pretrained``."""

    def __init__(self, model: Any, name: str) -> None:
        self._torch, _ = _import_sam2()
        self.model = model.eval()
        self.name = name
        self.decoder_calls = 0  # batched prompt-encoder + mask-decoder calls made by predict()

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        """float32 [B, 3, S, S] encoder input: each image squashed to S x S (bilinear, antialiased) and
        normalised with the ImageNet mean/std, exactly as ``sam2.utils.transforms.SAM2Transforms``."""
        torch, s = self._torch, self.model.image_size
        mean = torch.tensor(SAM2_MEAN, device=self.device).view(3, 1, 1)
        std = torch.tensor(SAM2_STD, device=self.device).view(3, 1, 1)
        out = []
        for im in images:
            im = np.ascontiguousarray(im) if im.flags.writeable else np.array(im)  # results' images are read-only
            x = torch.from_numpy(im).to(self.device).permute(2, 0, 1)[None]
            x = torch.nn.functional.interpolate(
                x.float() / 255.0, (s, s), mode="bilinear", align_corners=False, antialias=True
            )
            out.append((x[0] - mean) / std)
        return torch.stack(out)

    @classmethod
    def from_pretrained(
        cls,
        name: str = "sam2.1_hiera_t",
        weights: str | Path | None = None,
        device: Any = "cpu",
        random_weights: bool = False,
    ) -> Sam2Refiner:
        """Build a SAM2.1 model once and load its weights.

        Arguments:
          name (str): one of ``MODELS``: "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+" or
            "sam2.1_hiera_l".
          weights (str, Path or None): checkpoint file ({"model": state_dict}); None downloads the official
            checkpoint (torch hub cache) unless ``random_weights``.
          device (str or torch.device): where the model runs.
          random_weights (bool): random initialisation (fixed seed 0, global RNG untouched), for tests only.

        Returns:
          (Sam2Refiner): the refiner, in eval mode.
        """
        if name not in MODELS:
            raise ConfigError(f"unknown SAM2 model {name!r}; choose one of {sorted(MODELS)}")
        if weights is not None and random_weights:
            raise ConfigError("pass either weights=... or random_weights=True, not both")
        torch, build_sam2 = _import_sam2()
        config_file, filename, _ = MODELS[name]
        from ..device import parse_device

        if parse_device(device)[0] == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device={device!r} was asked for but CUDA is not available here")
        if weights is not None:
            source, sd = str(weights), _read_checkpoint(torch, Path(weights))  # fail fast, before building
        elif not random_weights:
            source = (_URL_SAM20 if name.startswith("sam2_") else _URL) + filename
            try:
                obj = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(
                    f"cannot download the {name} checkpoint from {source} ({type(e).__name__}: {e}); "
                    "download it by hand and pass weights=path"
                ) from e
            sd = obj["model"] if "model" in obj else obj
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_sam2(config_file, ckpt_path=None, device=device)
        if random_weights:
            warnings.warn(
                f"Sam2Refiner {name!r} has RANDOM weights: its masks are meaningless. Use this only for "
                "tests and benchmarks; pass weights=... (or nothing, to download) for real refinement.",
                UserWarning,
                stacklevel=2,
            )
        else:
            _check_state_dict(model, sd, name, source)
            try:
                model.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"cannot load SAM2 checkpoint '{source}' into {name}: {e}") from e
        return cls(model, name)

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[Sam2Embedding]:
        """Run the image encoder over RGB uint8 [H, W, 3] images (sizes may differ) in batched forwards.

        Arguments:
          images (sequence of np.ndarray): the images.
          batch_size (int or None): images per encoder forward; None: all of them in one forward.

        Returns:
          (list[Sam2Embedding]): one per image, in order.
        """
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1 or None, got {batch_size}")
        if batch_size is not None and len(images) > batch_size:
            chunks = [images[s : s + batch_size] for s in range(0, len(images), batch_size)]
            return [e for chunk in chunks for e in self.embed_images(chunk)]
        torch = self._torch
        if not len(images):
            return []
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise InvalidImageError(
                    f"image {i} must be an RGB uint8 [H, W, 3] numpy array, got "
                    f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}"
                )
        with torch.inference_mode():
            batch = self.preprocess(images)
            _, feats, _, sizes = self.model._prepare_backbone_features(self.model.forward_image(batch))
            if self.model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + self.model.no_mem_embed
            # [HW, B, C] -> [B, C, H, W] per level, as SAM2ImagePredictor.set_image_batch does
            maps = [f.permute(1, 2, 0).reshape(len(images), -1, *s) for f, s in zip(feats, sizes)]
        return [
            Sam2Embedding(maps[-1][i : i + 1], tuple(m[i : i + 1] for m in maps[:-1]), im.shape[:2])
            for i, im in enumerate(images)
        ]

    def decode(
        self, embedding: Sam2Embedding, prompts: PromptSet, multimask: bool, chunk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``Refiner.predict``: ONE prompt-encoder + mask-decoder call over all P prompts of the image."""
        torch = self._torch
        h, w = embedding.image_size
        p = len(prompts)
        dev, res = self.device, float(self.model.image_size)
        scale = torch.tensor([res / w, res / h], device=dev)
        coords = torch.as_tensor(prompts.point_coords, dtype=torch.float32, device=dev) * scale
        labels = torch.as_tensor(prompts.point_labels, dtype=torch.int32, device=dev)
        if prompts.boxes is not None:  # boxes go first, as corner points labelled 2 and 3 (sam2 convention)
            box = torch.as_tensor(prompts.boxes, dtype=torch.float32, device=dev).reshape(p, 2, 2) * scale
            coords = torch.cat([box, coords], dim=1)
            corners = torch.tensor([[2, 3]], dtype=torch.int32, device=dev).expand(p, 2)
            labels = torch.cat([corners, labels], dim=1)
        with torch.inference_mode():
            sparse, dense = self.model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=embedding.image_embed,
                image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=p > 1,
                high_res_features=list(embedding.high_res_feats),
            )
            self.decoder_calls += 1
            best = iou.argmax(dim=1)  # first on ties
            rows = torch.arange(p, device=dev)
            low_res, scores = low_res[rows, best][:, None], iou[rows, best]
            masks = torch.cat(
                [
                    torch.nn.functional.interpolate(
                        low_res[s : s + chunk].float(), (h, w), mode="bilinear", align_corners=False
                    )
                    > 0.0
                    for s in range(0, p, chunk)
                ]
            )[:, 0]
        return masks.cpu().numpy(), scores.float().cpu().numpy()

    def point_logits(self, embedding: Sam2Embedding, points: np.ndarray, multimask: bool, chunk: int = 16):
        """Automatic-mask decoding (``clipsam.refine.automask``): ONE prompt-encoder + mask-decoder call over P
        single positive points, as ``sam2``'s ``SAM2AutomaticMaskGenerator`` (coordinates ``x / W * S`` in float32;
        the decoder's mask token 0, or tokens 1-3 with ``multimask``, never its dynamic stability switch).

        Arguments:
            points: (P, 2) pixel xy.
            multimask: three masks per point (point-major) instead of one.
            chunk: masks upsampled to the image size at a time.

        Yields:
            (logits (c, H, W) float32 at the image size (bilinear from 256 x 256), predicted IoU (c,) float32) per chunk
            of masks, in order.
        """
        torch = self._torch
        h, w = embedding.image_size
        dev, res = self.device, float(self.model.image_size)
        coords = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=dev).clone()
        coords[:, 0] = coords[:, 0] / w
        coords[:, 1] = coords[:, 1] / h
        coords = (coords * res)[:, None]
        labels = torch.ones(len(points), 1, dtype=torch.int32, device=dev)
        decoder = self.model.sam_mask_decoder
        with torch.inference_mode():
            sparse, dense = self.model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low_res, iou, _, _ = decoder.predict_masks(
                image_embeddings=embedding.image_embed,
                image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=len(points) > 1,
                high_res_features=list(embedding.high_res_feats),
            )
            self.decoder_calls += 1
            sel = slice(1, None) if multimask else slice(0, 1)
            low_res, iou = low_res[:, sel].flatten(0, 1), iou[:, sel].flatten(0, 1).float()
            for s in range(0, len(low_res), chunk):
                up = torch.nn.functional.interpolate(
                    low_res[s : s + chunk, None].float(), (h, w), mode="bilinear", align_corners=False
                )[:, 0]
                yield up.cpu().numpy(), iou[s : s + chunk].cpu().numpy()
