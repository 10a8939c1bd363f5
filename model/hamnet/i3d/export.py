"""Export one I3D stream to ONNX for :class:`hamnet.video.i3d_backbone.I3DBackbone`.

Graph contract (what the backbone relies on):

* input ``frames`` float32 [N, C, 16, 224, 224] in [-1, 1] (C = 3 RGB, 2 flow), N dynamic;
* output ``features`` float32 [N, 1024] = ``extract_features(x)[:, :, 0, 0, 0]``.

Why T, H, W are fixed: the TF-"same" padding of every conv and pool depends on the input
length on that axis, and the exporter traces it to constants. One fixed snippet shape is all
the service needs (16-frame, 224x224 snippets), keeps the graph free of shape arithmetic, and
lets ONNX Runtime fold the pads. Only the batch axis N is symbolic; the export is validated on
a batch of 2 after being traced with 1, which proves the padding does not depend on N.

``fp16=True`` stores weights and computes in float16 (half the file, faster on GPUs with tensor
cores) while keeping float32 input and output, so callers never change.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hamnet.bundle import sha256_file
from hamnet.errors import ExportError
from hamnet.i3d.fp16 import to_fp16
from hamnet.i3d.layout import FEATURE_DIM
from hamnet.i3d.model import InceptionI3d
from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_input

SNIPPET_FRAMES = 16
CROP = 224
FORMAT = "hamnet-i3d-onnx/1"
#: fp32: ONNX Runtime vs PyTorch differs by <= 8.6e-6 on features up to ~26 (reference README).
ATOL_FP32 = 1e-4
#: fp16: unit round-off is 2^-11 ~ 4.9e-4 *relative*, and the error of 57 stacked conv layers
#: is dominated by the largest activations, so the bound scales with the largest reference
#: feature: 5e-3 * max|ref| (~10 half-precision ulps at the output scale). The recipe weights
#: measure ~7e-4 * max|ref| (0.016 on features up to 21.9), leaving a 7x margin.
RTOL_SCALE_FP16 = 5e-3


__all__ = ["FeatureGraph", "export_i3d_onnx", "to_fp16", "validate_i3d_onnx"]


class FeatureGraph(nn.Module):
    """What gets exported: frames [N,C,16,224,224] -> features [N,1024]."""

    def __init__(self, model: InceptionI3d) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # [N,C,16,224,224] -> [N,1024,1,1,1] -> [N,1024]
        return self.model.extract_features(frames).flatten(1)


def tolerance(fp16: bool, reference: np.ndarray) -> float:
    """Allowed max |ORT - PyTorch| on the validation batch (see ATOL_FP32, RTOL_SCALE_FP16)."""
    if not fp16:
        return ATOL_FP32
    return RTOL_SCALE_FP16 * max(1.0, float(np.abs(reference).max()))


def validation_batch(stream: str) -> np.ndarray:
    """[2,C,16,224,224]: the recipe clip and its negated, time-reversed copy (both in [-1,1])."""
    x = recipe_input(stream, SNIPPET_FRAMES, CROP)  # [1,C,16,224,224]
    return np.ascontiguousarray(np.concatenate([x, -x[:, :, ::-1]], axis=0))


def export_i3d_onnx(
    model: InceptionI3d,
    out_path: str | os.PathLike[str],
    stream: str,
    opset: int = 17,
    fp16: bool = False,
    *,
    validate: bool = True,
) -> dict[str, Any]:
    """Export ``model`` (one stream) to ``out_path`` and check it against PyTorch.

    Returns a report (path, sha256, shapes, max abs difference, tolerance). Raises
    :class:`ExportError` if the export fails or ONNX Runtime disagrees with PyTorch by more
    than the tolerance, naming the max difference per output.
    """
    import onnx

    if stream not in STREAM_CHANNELS:
        raise ExportError(f"unknown I3D stream {stream!r}; expected 'rgb' or 'flow'")
    channels = STREAM_CHANNELS[stream]
    if not isinstance(model, InceptionI3d):
        raise ExportError(f"expected an InceptionI3d, got {type(model).__name__}")
    if model.in_channels != channels:
        raise ExportError(
            f"the {stream} stream takes {channels} input channels but the model's Conv3d_1a "
            f"takes {model.in_channels}"
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = FeatureGraph(model).eval()
    example = torch.from_numpy(recipe_input(stream, SNIPPET_FRAMES, CROP))  # [1,C,16,224,224]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp) / "i3d.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # The TF-same pads read T/H/W as Python ints: intended, they are fixed.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    graph,
                    (example,),
                    str(tmp_path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["frames"],
                    output_names=["features"],
                    dynamic_axes={"frames": {0: "N"}, "features": {0: "N"}},
                    do_constant_folding=True,
                )
            proto = onnx.load(str(tmp_path))
        except Exception as e:
            raise ExportError(f"ONNX export of the I3D {stream} stream failed: {e}") from e
        out_dims = proto.graph.output[0].type.tensor_type.shape.dim
        out_dims[1].Clear()
        out_dims[1].dim_value = FEATURE_DIM
        if fp16:
            proto = to_fp16(proto)
        meta = {
            "format": FORMAT,
            "stream": stream,
            "precision": "fp16" if fp16 else "fp32",
            "input": f"frames [N,{channels},{SNIPPET_FRAMES},{CROP},{CROP}] in [-1,1]",
            "output": f"features [N,{FEATURE_DIM}]",
        }
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(tmp_path))
        os.replace(tmp_path, out)
    report: dict[str, Any] = {
        "path": str(out),
        "stream": stream,
        "opset": opset,
        "fp16": fp16,
        "input": {"name": "frames", "shape": ["N", channels, SNIPPET_FRAMES, CROP, CROP]},
        "output": {"name": "features", "shape": ["N", FEATURE_DIM]},
        "bytes": out.stat().st_size,
        "sha256": sha256_file(out),
    }
    if validate:
        report.update(validate_i3d_onnx(graph, out, stream, fp16))
    return report


def validate_i3d_onnx(graph: nn.Module, path: Path, stream: str, fp16: bool) -> dict[str, Any]:
    """Run the ONNX file (CPU provider) and PyTorch on a batch of 2; raise on disagreement."""
    import onnxruntime as ort

    x = validation_batch(stream)  # [2,C,16,224,224]
    with torch.no_grad():
        ref = graph(torch.from_numpy(x)).numpy()  # [2,1024]
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(["features"], {"frames": x})[0]
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot run the exported {stream} graph {path}: {e}") from e
    if got.shape != ref.shape:
        raise ExportError(
            f"{path}: output 'features' has shape {got.shape} for a batch of 2, "
            f"PyTorch gives {ref.shape}"
        )
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    tol = tolerance(fp16, ref)
    if not diff <= tol:  # also catches NaN
        raise ExportError(
            f"{path}: ONNX Runtime disagrees with PyTorch on the {stream} stream: max abs "
            f"difference of 'features' = {diff:.3g} > tolerance {tol:.3g}"
            f"{' (fp16)' if fp16 else ''}"
        )
    return {
        "validated_batch": int(x.shape[0]),
        "max_abs_diff": {"features": diff},
        "tolerance": tol,
        "reference_max_abs": float(np.abs(ref).max()),
    }
