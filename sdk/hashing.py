"""SHA-256 of files (checkpoints, engine graphs), read in chunks."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(module) -> str:
    """Hex SHA-256 over a torch module's state dict (names, dtypes, shapes, bytes), in key order.

    The identity of a model's weights: engine manifests record it (``clip.weights_sha256``), and the on-disk text
    cache (``clipsam.text_store``) keys PyTorch and engine embeddings by it. bfloat16 tensors are hashed as their
    float32 values. Duck-typed, so this module does not import torch.
    """
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy())  # the buffer, no copy
    return h.hexdigest()
