"""The dense CLIP encoder on ONNX Runtime: windows -> batched graphs (+ SFR host steps) -> stitched logits.

Mirrors ``DenseEncoder.__call__``, ``clipsam.dense.inference`` and ``clipsam.dense.scheduler.run_members`` step
for step, in numpy:

    members (scales x flips x images) --window_tasks--> crops (B, 3, H, W) per shape bucket (ClearCLIP: zero-padded)
      host: pos_embed for the h/p x w/p grid (bicubic +0.1), Omega (NACLIP)           -- cached per grid
      no SFR:  clip_dense -> patch logits
      SFR:     clip_dense_trunk -> clip_dense_pass1 -> [host: bilinear to crop size, PAMR(10, (8,16)), softmax,
               patch labels, S_hat, fp16 lambda*S_hat] -> clip_dense_pass2 -> patch logits
    patch logits (B, Q, gh, gw) -> bilinear to the crop -> summed into the image, / window count
      -> bilinear to the original size -> optional PAMR -> (Q, H0, W0)

Windows of equal shape share batches of ``max_batch`` across members and images (results do not depend on it).
"""

from __future__ import annotations

import numpy as np

from ..config import DenseConfig
from ..dense.windows import pad_to_patch, window_grid
from .errors import EngineLimitError
from .host_ops import interpolate_pos_embed, neighbourhood_window, resize_bilinear
from .pamr import pamr
from .scheduler import Member, window_tasks
from .sfr import LinspaceTable, first_pass_probs, patch_labels, sfr_affinity, sfr_bias

__all__ = ["OrtDenseEncoder"]


class OrtDenseEncoder:
    """Patch logits and full-image logits from the exported dense graphs.

    Arguments:
        sessions: graph name -> ``GraphSession`` (``clip_dense``, or the three SFR graphs).
        cfg: the run's DenseConfig (graph-baked fields equal the export's).
        pos_embed: (1 + n*n, D) native positional embedding.
        patch: patch size p.
        max_grid: largest patch-grid side served (``EngineLimitError`` beyond).
        max_batch: windows per graph call.
        table: torch.linspace tables for SFR's path check.
    """

    def __init__(self, sessions: dict, cfg: DenseConfig, pos_embed: np.ndarray, patch: int, max_grid: int,
                 max_batch: int, table: LinspaceTable | None = None):
        self.sessions = sessions
        self.cfg = cfg
        self.pos = np.asarray(pos_embed, dtype=np.float32)
        self.patch = int(patch)
        self.max_grid = int(max_grid)
        self.max_batch = max(1, int(max_batch))
        self.table = table or LinspaceTable()
        self._pos_cache: dict = {}

    # -- host inputs -----------------------------------------------------------------------------------
    def _grid_inputs(self, h: int, w: int) -> dict:
        gh, gw = h // self.patch, w // self.patch
        if gh < 1 or gw < 1:
            raise EngineLimitError(f"a {h}x{w} window is smaller than one {self.patch}x{self.patch} patch")
        if max(gh, gw) > self.max_grid:
            raise EngineLimitError(
                f"a {h}x{w}-pixel window is a {gh}x{gw} patch grid, larger than the {self.max_grid} patches a side "
                f"these engines serve (max_side {self.max_grid * self.patch}). Re-export with a larger --max-side, "
                "use a smaller short_side, or slide windows (slide_crop).")
        key = (gh, gw)
        if key not in self._pos_cache:
            feeds = {"pos_embed": interpolate_pos_embed(self.pos, gh, gw)}
            if self.cfg.base == "naclip":
                feeds["window_bias"] = neighbourhood_window(gh, gw, self.cfg.gaussian_std)
            self._pos_cache[key] = feeds
        return self._pos_cache[key]

    # -- one batch of equally sized crops ----------------------------------------------------------------
    def patch_logits(self, crops: np.ndarray, text: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) normalised crops, (Q, C) unit text embeddings -> (B, Q, H // p, W // p) logits."""
        cfg = self.cfg
        b, _, h, w = crops.shape
        grid = self._grid_inputs(h, w)
        gh, gw = h // self.patch, w // self.patch
        if not cfg.sfr:
            out = self.sessions["clip_dense"].run({"crops": crops, **_pick(grid, "pos_embed"), "text_embeddings": text,
                                                   **_pick(grid, "window_bias")})
            return out["patch_logits"].reshape(b, -1, gh, gw)
        trunk = self.sessions["clip_dense_trunk"]  # with IO binding its outputs stay on the device for both passes
        feats = trunk.run({"crops": crops, "pos_embed": grid["pos_embed"]}, keep=("tokens", "rcs_q", "rcs_k"))
        common = {**feats, **_pick(grid, "window_bias"), "text_embeddings": text}
        first = self.sessions["clip_dense_pass1"].run(common)["patch_logits"].reshape(b, -1, gh, gw)
        first = resize_bilinear(first, (h, w))
        probs = first_pass_probs(first, crops, cfg.logit_scale, cfg.sfr_pamr_iters, cfg.sfr_pamr_dilations)
        labels = patch_labels(probs, self.patch, cfg.temp_thd)
        s_hat = sfr_affinity(labels, cfg.gaussian_std, cfg.sfr_path_check, cfg.sfr_blur, self.table)
        common["sfr_bias"] = sfr_bias(s_hat, cfg.sfr_weights[1])
        return self.sessions["clip_dense_pass2"].run(common)["patch_logits"].reshape(b, -1, gh, gw)

    def window_logits(self, crops: np.ndarray, text: np.ndarray, pad) -> np.ndarray:
        """Logits of equally sized crops, upsampled to the crop size: (B, Q, h, w) (``inference.window_logits``)."""
        h, w = crops.shape[-2:]
        l, r, t, b = pad
        if l or r or t or b:
            padded = np.pad(crops, ((0, 0), (0, 0), (t, b), (l, r)))
            out = resize_bilinear(self.patch_logits(padded, text), padded.shape[-2:])
            return out[:, :, t : t + h, l : l + w]
        return resize_bilinear(self.patch_logits(crops, text), (h, w))

    # -- members (scales x flips x images) -------------------------------------------------------------------
    def run_members(self, members: list[Member], text: np.ndarray, max_batch: int | None = None,
                    progress=None) -> list[Member]:
        """Run every window of every member in shape-bucketed batches and stitch (``scheduler.run_members``).

        Returns:
            the members with ``logits`` (Q, h, w) float32, flips undone ((Q, gh, gw) for one-step whole image).
        """
        cfg = self.cfg
        max_batch = max(1, int(max_batch or self.max_batch))
        q = text.shape[0]
        one_step = cfg.slide_crop == 0 and cfg.upsample == "one_step"
        pad = cfg.pad_crops and cfg.slide_crop > 0
        acc = {}
        for mi, m in enumerate(members):
            if cfg.slide_crop > 0:
                h, w = m.pixels.shape[-2:]
                acc[mi] = (np.zeros((q, h, w), np.float32), np.zeros((1, h, w), np.float32))
        for (wh, ww), tasks in window_tasks(members, cfg).items():
            pads = pad_to_patch(wh, ww, self.patch) if pad else (0, 0, 0, 0)
            for b0 in range(0, len(tasks), max_batch):
                chunk = tasks[b0 : b0 + max_batch]
                crops = np.stack([members[mi].pixels[:, y1:y2, x1:x2] for mi, (y1, y2, x1, x2) in chunk])
                out = self.patch_logits(crops, text) if one_step else self.window_logits(crops, text, pads)
                for k, (mi, (y1, y2, x1, x2)) in enumerate(chunk):
                    if cfg.slide_crop > 0:
                        acc[mi][0][:, y1:y2, x1:x2] += out[k]
                        acc[mi][1][:, y1:y2, x1:x2] += 1
                    else:
                        members[mi].logits = out[k]
                if progress is not None:
                    progress.update(len(chunk))
        for mi, m in enumerate(members):
            if cfg.slide_crop > 0:
                m.logits = acc[mi][0] / acc[mi][1]
            if m.flip:
                m.logits = np.ascontiguousarray(m.logits[..., ::-1])
        return members

    # -- one image, one window at a time (the reference path of ``Segmenter.logits``) ------------------------
    def infer_logits(self, image: np.ndarray, text: np.ndarray, ori_hw: tuple[int, int]) -> np.ndarray:
        """(3, h, w) preprocessed image, (Q, C) text -> (Q, H0, W0) float32 logits (``inference.infer_logits``)."""
        cfg = self.cfg
        h, w = image.shape[-2:]
        if cfg.slide_crop > 0:
            preds = np.zeros((text.shape[0], h, w), np.float32)
            count = np.zeros((1, h, w), np.float32)
            for y1, y2, x1, x2 in window_grid(h, w, cfg.slide_crop, cfg.slide_stride):
                pads = pad_to_patch(y2 - y1, x2 - x1, self.patch) if cfg.pad_crops else (0, 0, 0, 0)
                preds[:, y1:y2, x1:x2] += self.window_logits(image[None, :, y1:y2, x1:x2], text, pads)[0]
                count[:, y1:y2, x1:x2] += 1
            logits = preds / count
        elif cfg.upsample == "one_step":
            logits = self.patch_logits(image[None], text)[0]
        else:
            logits = self.window_logits(image[None], text, (0, 0, 0, 0))[0]
        logits = resize_bilinear(logits[None], ori_hw)
        if cfg.pamr_iters > 0:
            guide = resize_bilinear(image[None], ori_hw)
            logits = pamr(guide, logits, cfg.pamr_iters, cfg.pamr_dilations)
        return logits[0]


def _pick(d: dict, *names) -> dict:
    return {n: d[n] for n in names if n in d}
