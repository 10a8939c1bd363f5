"""I3D (Inflated 3D ConvNet) backbone: torch network, ONNX export and numpy recipes.

Importing this package is cheap and torch-free: :mod:`hamnet.i3d.layout` and
:mod:`hamnet.i3d.recipe` need only numpy, while :mod:`hamnet.i3d.model` and
:mod:`hamnet.i3d.export` import torch (extra ``hamnet[train]``). The service never imports
torch; it runs the exported ONNX files through :mod:`hamnet.video.i3d_backbone`.
"""

from hamnet.i3d.layout import BN_EPS, ENDPOINTS, FEATURE_DIM, NUM_CLASSES, state_dict_layout

__all__ = ["BN_EPS", "ENDPOINTS", "FEATURE_DIM", "NUM_CLASSES", "state_dict_layout"]
