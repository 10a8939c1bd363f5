"""Video pipeline: decode -> snippets -> (optical flow) -> backbone features.

Needs the ``[video]`` extra (PyAV, OpenCV, ONNX Runtime). This ``__init__`` deliberately imports
nothing: :mod:`hamnet.bundle` (numpy only) imports :mod:`hamnet.video.backbone` for
``BackboneSpec``, and that must work on an install without PyAV/OpenCV. Import the submodules
directly (``from hamnet.video.decode import iter_frames``).
"""
