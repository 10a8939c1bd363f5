"""HAM-Net in PyTorch: network, losses, checkpoints and ONNX export (extra ``[train]``).

This is the only place (with :mod:`hamnet.i3d`) that imports torch, so that the base package,
the worker and the gateway stay torch-free. Submodules are imported lazily by name
(``from hamnet.nn.losses import hamnet_loss``); this ``__init__`` re-exports the network only.
"""

from hamnet.nn.model import HAMNet

__all__ = ["HAMNet"]
