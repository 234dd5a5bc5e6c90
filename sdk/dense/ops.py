"""``TorchOps``: the host operations on torch tensors, on the tensors' device.

On a GPU, resampling is ``F.interpolate`` (strips of output rows: ``upsample_rows``), PAMR is ``clipsam.kernels.pamr`` (Triton)
and S_hat is ``clipsam.kernels.sfr_affinity`` (Triton). On the CPU, by default (``cpu_ops="compiled"``), resampling,
PAMR and S_hat run the compiled host kernels that the ONNX Runtime backend also runs (``clipsam.ops``, on zero-copy
numpy views of the tensors), so both backends share one implementation; ``cpu_ops="torch"`` keeps the PyTorch
reference ops (they differ from the compiled ones by float32 rounding: torch fuses multiply-adds). Post-processing runs in numpy on the CPU (``TorchOps.post`` is
``NumpyPost``, so CPU results are those of ``clipsam.postprocess``) and in torch on a GPU (``TorchPost``: only
labels, scores and, when asked, class probabilities cross to the host).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.numpy_ops import CPU_STRIP_MB, NumpyOps, NumpyPost

CPU_OPS = ("compiled", "torch")  # as clipsam.segmenter.CPU_OPS


def _source_index(out_size: int, in_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32, device=device)
    src = torch.clamp(scale * (dst + 0.5) - 0.5, min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = torch.clamp(i0 + 1, max=in_size - 1)
    return i0, i1, src - i0.float()


def upsample_rows(x: torch.Tensor, out_hw: tuple[int, int], r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of ``F.interpolate(x[None], out_hw, mode='bilinear', align_corners=False)[0]``.

    The width is resampled for the source rows the strip needs, then the two-row blend; equal to
    ``F.interpolate`` within ~1e-5.

    Arguments:
        x: (C, h, w).

    Returns:
        (C, r1 - r0, W0).
    """
    i0, i1, lam = _source_index(out_hw[0], x.shape[-2], x.device)
    i0, i1, lam = i0[r0:r1], i1[r0:r1], lam[r0:r1]
    need = torch.unique(torch.cat([i0, i1]))
    cols = F.interpolate(x[None, :, need], size=(need.numel(), out_hw[1]), mode="bilinear", align_corners=False)[0]
    pos = torch.searchsorted(need, torch.stack([i0, i1]))
    lam = lam.view(1, -1, 1).to(x.dtype)
    return (1 - lam) * cols[:, pos[0]] + lam * cols[:, pos[1]]


def patch_labels(probs: torch.Tensor, patch: int, temp_thd: float) -> torch.Tensor:
    """Per-patch majority query of first-pass probabilities.

    label = argmax query per pixel, 0 where the max probability is below ``temp_thd``; the mode over each
    p x p patch (ties: smallest label); rows/columns beyond the last whole patch are dropped (upstream ``unfold``).
    One scatter-add of counts per (patch, query), vectorised over the batch.

    Arguments:
        probs: (B, Q, H, W).

    Returns:
        (B, H // p, W // p) int64.
    """
    b, q, h, w = probs.shape
    gh, gw = h // patch, w // patch
    conf, pred = probs.amax(dim=1), probs.argmax(dim=1)
    pred = torch.where(conf < temp_thd, torch.zeros_like(pred), pred)
    pred = pred[:, : gh * patch, : gw * patch]
    blocks = pred.reshape(b, gh, patch, gw, patch).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, patch * patch)
    counts = torch.zeros(b, gh * gw, q, dtype=torch.int32, device=probs.device)
    counts.scatter_add_(2, blocks, torch.ones_like(blocks, dtype=torch.int32))
    return counts.argmax(dim=2).reshape(b, gh, gw)  # argmax returns the first max: smallest label on ties


def _torch_linspace(d: int) -> np.ndarray:
    """torch.linspace(0, 1, d + 1) as float32 numpy (its values depend on the CPU's vector code)."""
    return torch.linspace(0, 1, d + 1).numpy()


class TorchPost:
    """``PostOps`` in torch on the probabilities' device (the arithmetic of ``clipsam.postprocess``)."""

    @staticmethod
    def query_probs(logits: torch.Tensor, logit_scale: float) -> torch.Tensor:
        return torch.softmax(logits.float() * logit_scale, dim=0)

    @staticmethod
    def query_probs_fp16(logits: torch.Tensor, logit_scale: float) -> torch.Tensor:
        return torch.softmax(logits.half() * logit_scale, dim=0).float()

    @staticmethod
    def weighted_sum(xs: Iterable[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        return sum(float(w) * x for x, w in zip(xs, weights))  # type: ignore[return-value]

    @staticmethod
    def merge_synonyms(probs: torch.Tensor, query_to_class: Sequence[int], num_classes: int) -> torch.Tensor:
        if len(query_to_class) == num_classes:
            return probs
        q2c = np.asarray(query_to_class)
        return torch.stack(
            [
                probs[torch.as_tensor(np.flatnonzero(q2c == c), device=probs.device)].amax(dim=0)
                for c in range(num_classes)
            ]
        )

    @staticmethod
    def argmax_counts(probs: torch.Tensor, num_classes: int) -> np.ndarray:
        return torch.bincount(probs.argmax(dim=0).flatten(), minlength=num_classes).cpu().numpy()

    @staticmethod
    def decide(probs: torch.Tensor, prob_thd: float, keep: np.ndarray | None, with_probs: bool):
        if keep is not None and not keep.all():
            probs = probs * torch.as_tensor(keep, device=probs.device, dtype=probs.dtype)[:, None, None]
        best, labels = probs.max(dim=0)
        labels = torch.where(best < prob_thd, torch.zeros_like(labels), labels)
        probs = probs / probs.sum(dim=0, keepdim=True)
        scores = probs.gather(0, labels[None])[0]
        normed = probs.float().cpu().numpy() if with_probs else None
        return labels.int().cpu().numpy(), scores.float().cpu().numpy(), normed


class TorchOps:
    """``HostOps`` on torch tensors of one device.

    Arguments:
        device: the tensors' device.
        post_on_device: post-process in torch on ``device`` (default: unless it is the CPU, where numpy runs).
        cpu_ops: on the CPU, "compiled" (resize, PAMR and S_hat in the shared compiled host kernels) or "torch"
            (the PyTorch reference ops); a GPU always runs torch and Triton.
    """

    def __init__(self, device: torch.device | str, post_on_device: bool | None = None, cpu_ops: str = "compiled"):
        if cpu_ops not in CPU_OPS:
            raise ValueError(f"cpu_ops must be one of {CPU_OPS}, got {cpu_ops!r}")
        self.device = torch.device(device)
        self.post_on_device = self.device.type != "cpu" if post_on_device is None else bool(post_on_device)
        self.post = TorchPost() if self.post_on_device else NumpyPost()
        self.strip_mb = 256.0 if self.post_on_device else CPU_STRIP_MB
        self.cpu_ops = cpu_ops
        # torch's own linspace values for the path check, so it samples the same points as the torch reference
        self._host = NumpyOps(_torch_linspace) if self.device.type == "cpu" and cpu_ops == "compiled" else None
        # the middle image of a two-step upsampling row block by row block: host kernels only
        self.resize_twice = self._resize_twice_host if self._host is not None else None
        self.resize_add = self._resize_add_host if self._host is not None else None

    def from_numpy(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy()

    def to_post(self, x: torch.Tensor):
        return x if self.post_on_device else x.cpu().numpy()

    def zeros(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(shape, dtype=torch.float32)

    def stack(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(xs))

    def flip_w(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def pad(self, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        return F.pad(x, pads)

    def resize(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        *,
        align_corners: bool = False,
        rows: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if self._host is not None:
            return torch.from_numpy(self._host.resize(x.float().numpy(), size, align_corners=align_corners, rows=rows))
        if rows is not None and not align_corners and x.dim() == 3:
            return upsample_rows(x, size, rows[0], rows[1])
        y = F.interpolate(
            x if x.dim() == 4 else x[None], size=tuple(size), mode="bilinear", align_corners=align_corners
        )
        y = y if x.dim() == 4 else y[0]
        return y if rows is None else y[..., rows[0] : rows[1], :]

    def _resize_twice_host(
        self,
        x: torch.Tensor,
        mid: tuple[int, int],
        size: tuple[int, int],
        *,
        rows: tuple[int, int] | None = None,
        flip: bool = False,
    ) -> torch.Tensor:
        assert self._host is not None
        return torch.from_numpy(self._host.resize_twice(x.float().numpy(), mid, size, rows=rows, flip=flip))

    def _resize_add_host(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        dst: torch.Tensor,
        at: tuple[int, int],
        crop: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        assert self._host is not None
        self._host.resize_add(x.float().numpy(), size, dst.numpy(), at, crop)  # dst: a CPU float32 tensor, in place
        return dst

    def pamr(
        self,
        image: torch.Tensor,
        logits: torch.Tensor,
        iters: int,
        dilations: Sequence[int],
        *,
        in_place: bool = False,
    ) -> torch.Tensor:
        if self._host is not None and iters > 0:  # in place: on the numpy view of the caller's tensor
            out = self._host.pamr(image.float().numpy(), logits.float().numpy(), iters, dilations, in_place=in_place)
            return torch.from_numpy(out)
        from clipsam.kernels import pamr

        return pamr(image, logits, iters, tuple(dilations))

    def first_pass_labels(
        self,
        first: torch.Tensor,
        crops: torch.Tensor,
        patch: int,
        logit_scale: float,
        temp_thd: float,
        iters: int,
        dilations: Sequence[int],
    ) -> torch.Tensor:
        if self._host is not None:  # the shared host implementation, on zero-copy views
            labels = self._host.first_pass_labels(
                first.float().numpy(), crops.float().numpy(), patch, logit_scale, temp_thd, iters, dilations
            )
            return torch.from_numpy(labels)
        up = self.resize(first, (int(crops.shape[-2]), int(crops.shape[-1])))
        refined = self.pamr(crops, up, iters, dilations) if iters > 0 else up
        return patch_labels(torch.softmax(refined * logit_scale, dim=1), patch, temp_thd)

    def sfr_affinity(self, labels: torch.Tensor, gaussian_std: float, path_check: str, blur: str) -> torch.Tensor:
        if self._host is not None:  # torch's own linspace values: the path check samples the same points
            s_hat = self._host.sfr_affinity(labels.numpy(), gaussian_std, path_check, blur)
            return torch.from_numpy(s_hat)
        from clipsam.kernels import sfr_affinity

        return sfr_affinity(labels, gaussian_std=gaussian_std, path_check=path_check, blur=blur)

    def sfr_term(self, s_hat: torch.Tensor, lam: float) -> torch.Tensor:
        return lam * s_hat  # a python float times an fp16 tensor stays fp16, as upstream
