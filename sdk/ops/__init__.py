"""Host operations (resampling, PAMR, SFR steps, post-processing) behind one interface, ``HostOps`` (``base.py``).

``numpy_ops.NumpyOps`` runs them in numpy without torch (``resize.py``, ``pamr.py``, ``sfr.py``); the PyTorch
backend's ``clipsam.dense.ops.TorchOps`` runs them in torch on its device. ``base.sfr_feedback`` is ResCLIP's SFR
step, written once over the interface.
"""
