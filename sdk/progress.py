"""Progress bars on stderr for long steps (text encoding of large vocabularies), shown only when asked for.

The CLI asks for them by default (``--no-progress`` turns them off); the API only when the caller passes
``text_progress=True`` (``Segmenter.from_pretrained``, ``EngineSegmenter``) or ``progress=True`` to
``text_embeddings``.
"""

from __future__ import annotations

import sys
from typing import Any

MIN_TEXT_PROMPTS = 512  # fewer prompts than this encode in one or two encoder calls: no bar


class NoBar:
    """The do-nothing bar used when none is shown (same ``update`` / ``close`` calls)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def text_bar(total: int, enabled: bool, what: str = "text prompts") -> Any:
    """A tqdm bar over ``total`` prompts on stderr when ``enabled`` and ``total >= MIN_TEXT_PROMPTS``, else ``NoBar``.

    A bar is shown for work of more than a moment only: below ``MIN_TEXT_PROMPTS`` prompts the encoder runs once or
    twice (``clipsam.text.PROMPTS_PER_BATCH`` prompts per call), which no bar would help to wait for.
    """
    if not enabled or total < MIN_TEXT_PROMPTS:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", desc=f"clipsam: encoding {what}", file=sys.stderr, leave=False)
