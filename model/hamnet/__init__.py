"""HAM-Net: weakly-supervised temporal action localization (Islam, Long, Radke, AAAI 2021).

The base package is numpy-only (config, post-processing, evaluation, bundle format). The
network, training and export live in :mod:`hamnet.nn` (extra ``[train]``, torch); the video
pipeline lives in :mod:`hamnet.video` (extra ``[video]``, PyAV/OpenCV/ONNX Runtime).
"""

__version__ = "0.1.0"
