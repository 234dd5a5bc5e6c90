"""``clipsam serve``: an HTTP service on Ray Serve, with dynamic batching, request limits, an optional API key and
a web page; and ``Client``, to call it from Python.

    clipsam serve --preset voc21 --port 8000            # pip install 'clipsam[serve]'
    curl -F image=@photo.jpg -F classes="cat, sofa, floor" http://127.0.0.1:8000/v1/segment

    from clipsam.serve import Client
    res = Client("http://127.0.0.1:8000").segment("photo.jpg", ["cat", "sofa", "floor"])  # a SegmentationResult

Modules: ``app`` (the Ray Serve deployment and its routes; needs Ray), ``service`` (batches, variants, statistics),
``request`` and ``limits`` (what a request may send), ``codec`` (the answer's wire format), ``auth`` (API key),
``client``; the command line is ``clipsam.cli.serve``. ``import clipsam.serve`` and the client need neither Ray nor
torch.
"""

from __future__ import annotations

from .client import Client
from .errors import ServeError
from .limits import Limits

__all__ = ["Client", "ServeError", "Limits", "ServeConfig", "build_application"]


def __getattr__(name: str):
    if name == "ServeConfig":
        from .service import ServeConfig

        return ServeConfig
    if name == "build_application":
        from .app import build_application  # needs Ray Serve

        return build_application
    raise AttributeError(f"module 'clipsam.serve' has no attribute {name!r}")
