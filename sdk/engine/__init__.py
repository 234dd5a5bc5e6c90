"""clipsam.engine: ONNX Runtime backend (no torch)."""
