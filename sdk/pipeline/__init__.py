"""The backend-neutral pipeline core: plan, encode and finalise, written once for every backend.

    plan_members      images x scales x flips -> members (preprocessed pixels)          plan.py
    run_members       windows of equal shape batched through ``DenseBackend.patch_logits``, resized to the
                      window and stitched back into each member                          encode.py
    finalize_members  members -> labels and scores at the original size, in row strips   finalize.py
    infer_logits      the one-window-at-a-time reference path                             encode.py

A backend (``clipsam.ops.base.DenseBackend``) encodes crops; its ``HostOps`` resize, pad, run PAMR and post-process
its arrays.
"""

from __future__ import annotations

from .encode import infer_logits, run_members
from .finalize import finalize_members
from .plan import Member, max_batch_for_budget, plan_members

__all__ = ["Member", "plan_members", "max_batch_for_budget", "run_members", "infer_logits", "finalize_members"]
