"""Trace-safe wrappers of SAM2's image encoder and prompt encoder + mask decoder, and their parity cases.

``Sam2EncoderGraph``: normalised images (B, 3, S, S) -> ``image_embed`` (B, 256, E, E) with ``no_mem_embed`` added,
``high_res_feats_0`` (B, 32, 4E, 4E), ``high_res_feats_1`` (B, 64, 2E, 2E): what ``Sam2Refiner.embed_images`` computes
after its preprocessing (which the runtime does in numpy). The batch comes from the input's shape (no
``reshape(1, ...)``), so the batch axis stays dynamic; export it with an example batch of at least 2.

``Sam2DecoderGraph``: one image's features, P prompts of K points -> all four mask logits (P, 4, 4E, 4E), their
predicted IoUs (P, 4) and object-score logits (P, 1). Points are in model-input pixels (the host scales image
pixels by S/W, S/H, as the predictor does) with float labels (1 positive, 0 negative, 2/3 box corners, -1 padding);
the prompt encoder appends its padding point (``pad=True``, boxes given as corner points). ``mask_input`` /
``has_mask_input`` select per prompt between the mask embedding and ``no_mask_embed`` (0/1 blend, exact). The image
features are repeated per prompt inside the graph (``repeat_image=True``; identical for P = 1). Choosing among the
four masks (multimask: best IoU of tokens 1-3; single: token 0, or SAM2's dynamic stability fallback) is a host
step, so one graph serves both modes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipsam.refine.config import SAM2_MEAN, SAM2_STD

from .component import ParityCase


class Sam2EncoderGraph(nn.Module):
    """image (B, 3, S, S) -> (image_embed, high_res_feats_0, high_res_feats_1)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        m = self.model
        b = image.shape[0]
        _, feats, _, sizes = m._prepare_backbone_features(m.forward_image(image))
        if m.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + m.no_mem_embed
        maps = [f.permute(1, 2, 0).reshape(b, -1, s[0], s[1]) for f, s in zip(feats, sizes)]
        return maps[-1], maps[0], maps[1]


class Sam2DecoderGraph(nn.Module):
    """(image_embed, high_res_feats_0/1, point_coords, point_labels, mask_input, has_mask_input) -> masks, iou, obj."""

    def __init__(self, model):
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder

    def forward(
        self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input
    ):
        pe = self.prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        masked = pe._embed_masks(mask_input)
        none = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(masked)
        has = has_mask_input.reshape(-1, 1, 1, 1).to(masked.dtype)
        dense = has * masked + (1 - has) * none
        masks, iou, _, obj = self.mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        return masks, iou, obj


def sam2_info(model) -> dict:
    """What the runtime needs to mirror ``Sam2Refiner`` around the two graphs."""
    d = model.sam_mask_decoder
    dyn = bool(getattr(d, "dynamic_multimask_via_stability", False))
    return {
        "image_size": int(model.image_size),
        "embed_size": int(model.sam_image_embedding_size),
        "mean": list(SAM2_MEAN),
        "std": list(SAM2_STD),
        "dynamic_multimask": {
            "delta": float(d.dynamic_multimask_stability_delta),
            "thresh": float(d.dynamic_multimask_stability_thresh),
        }
        if dyn
        else None,
    }


def encoder_cases(model, batches=(2, 1), seed: int = 0):
    """Example image batch (first entry of ``batches``) and parity cases for the other batch sizes."""
    gen = torch.Generator().manual_seed(seed)
    s = int(model.image_size)
    graph = Sam2EncoderGraph(model).eval()
    example = (torch.randn(batches[0], 3, s, s, generator=gen),)
    cases = []
    for b in batches[1:]:
        x = torch.randn(b, 3, s, s, generator=gen)
        with torch.inference_mode():
            outs = graph(x)
        cases.append(
            ParityCase(
                f"batch {b}",
                {"image": x.numpy()},
                dict(zip(("image_embed", "high_res_feats_0", "high_res_feats_1"), (o.numpy() for o in outs))),
            )
        )
    return example, cases


def _decoder_inputs(model, p: int, k: int, with_mask: bool, gen):
    e = int(model.sam_image_embedding_size)
    s = float(model.image_size)
    coords = torch.rand(p, k, 2, generator=gen) * s
    labels = torch.randint(0, 2, (p, k), generator=gen).float()
    labels[:, -1] = -1.0 if k > 1 else labels[:, -1]
    return {
        "image_embed": torch.randn(1, 256, e, e, generator=gen),
        "high_res_feats_0": torch.randn(1, 32, 4 * e, 4 * e, generator=gen),
        "high_res_feats_1": torch.randn(1, 64, 2 * e, 2 * e, generator=gen),
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": torch.randn(p, 1, 4 * e, 4 * e, generator=gen) if with_mask else torch.zeros(p, 1, 4 * e, 4 * e),
        "has_mask_input": torch.full((p,), 1.0 if with_mask else 0.0),
    }


def decoder_cases(model, seed: int = 0):
    """Example (2 prompts x 3 points) and parity cases against SAM2's own prompt encoder + mask decoder calls
    (``masks=None`` as ``Sam2Refiner.predict`` calls them, and with a mask input)."""
    from clipsam.engine.io_names import SAM2_PROMPT_DECODER

    gen = torch.Generator().manual_seed(seed)
    names = SAM2_PROMPT_DECODER.inputs
    example = tuple(_decoder_inputs(model, 2, 3, False, gen)[n] for n in names)
    cases = []
    for p, k, with_mask in ((3, 2, False), (1, 5, False), (2, 4, True)):
        x = _decoder_inputs(model, p, k, with_mask, gen)
        with torch.inference_mode():
            sparse, dense = model.sam_prompt_encoder(
                points=(x["point_coords"], x["point_labels"].int()),
                boxes=None,
                masks=x["mask_input"] if with_mask else None,
            )
            masks, iou, _, obj = model.sam_mask_decoder.predict_masks(
                image_embeddings=x["image_embed"],
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=p > 1,
                high_res_features=[x["high_res_feats_0"], x["high_res_feats_1"]],
            )
        cases.append(
            ParityCase(
                f"{p} prompts x {k} points{', mask input' if with_mask else ''}",
                {n: np.ascontiguousarray(x[n].numpy()) for n in names},
                {"masks": masks.numpy(), "iou_predictions": iou.numpy(), "object_score_logits": obj.numpy()},
            )
        )
    return example, cases
