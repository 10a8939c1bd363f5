"""Export the HAM-Net head to ONNX and prove the export matches PyTorch.

Why validate every export: the service runs the ONNX file, never PyTorch, so an export that
silently bakes in the trace length (a fixed T) or mis-handles the ANet AvgPool padding would
produce wrong segments without any error. ``export_onnx`` therefore runs ONNX Runtime against
the eager model at several (B, T), including a T different from the trace and T=1, and raises
:class:`ExportError` with each output's max abs difference when they disagree.

Graph contract (see docs/ARCHITECTURE.md): input ``features`` [B,T,D] float32 (B and T dynamic);
outputs ``cas`` [B,T,C+1] (element logits, background last) and ``attention`` [B,T,1].
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hamnet.errors import ExportError, MissingDependencyError
from hamnet.nn.model import HAMNet

INPUT_NAME = "features"
OUTPUT_NAMES = ("cas", "attention")
DEFAULT_ATOL = 1e-4
TRACE_SHAPE = (1, 64)  # (B, T) of the dummy input used for tracing
# (B, T) pairs checked after export: trace shape, other B and T, T=1, tiny and odd T.
VALIDATION_SHAPES = ((1, 64), (2, 37), (1, 1), (3, 5), (1, 203))
# Opsets the TorchScript exporter handles cleanly (below 9 it keeps weights as graph inputs).
OPSET_RANGE = (9, 20)


class _Head(nn.Module):
    """Eval-mode forward with exactly the two outputs the graph exposes.

    Calls the model's own branches rather than ``HAMNet.forward`` so that the shape check in
    ``forward`` (a Python branch on tensor sizes) is not traced into a constant. The validation
    below compares against the real ``HAMNet.forward``, so any divergence would be caught.
    """

    def __init__(self, model: HAMNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        xt = features.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        cas = self.model.classifier(xt).transpose(1, 2)  # (B, C+1, T) -> (B, T, C+1)
        atn = self.model.attention(xt).transpose(1, 2)  # (B, 1, T) -> (B, T, 1)
        return cas, atn


def _ort_session(path: Path, threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is part of the [train] extra
        raise MissingDependencyError(
            "validating an ONNX export needs onnxruntime (pip install 'hamnet[train]')"
        ) from None
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def validate_onnx(
    model: HAMNet,
    onnx_path: str | Path,
    shapes: tuple[tuple[int, int], ...] = VALIDATION_SHAPES,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ONNX Runtime with eager PyTorch (eval mode) on random features.

    Returns ``{"atol", "cases": [{"batch", "time", "max_abs_diff": {cas, attention}}],
    "max_abs_diff": {cas, attention}, "ok"}``; raises ExportError listing every case's
    differences when any exceeds ``atol`` or when a shape differs.
    """
    onnx_path = Path(onnx_path)
    ref_model = copy.deepcopy(model).float().cpu().eval()
    sess = _ort_session(onnx_path)
    rng = np.random.default_rng(seed)
    d = ref_model.cfg.feature_size
    cases: list[dict[str, Any]] = []
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    problems: list[str] = []
    for b, t in shapes:
        x = rng.standard_normal((b, t, d)).astype(np.float32)
        with torch.no_grad():
            elem, _, _, atn = ref_model(torch.from_numpy(x))
        want = {"cas": elem.numpy(), "attention": atn.numpy()}
        got = dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x}), strict=True))
        diffs: dict[str, float] = {}
        for name in OUTPUT_NAMES:
            if got[name].shape != want[name].shape:
                problems.append(
                    f"B={b} T={t}: {name} has shape {list(got[name].shape)}, PyTorch "
                    f"{list(want[name].shape)}"
                )
                diffs[name] = float("inf")
                continue
            diffs[name] = float(np.max(np.abs(got[name].astype(np.float64) - want[name])))
            worst[name] = max(worst[name], diffs[name])
        cases.append({"batch": b, "time": t, "max_abs_diff": diffs})
    report = {"atol": atol, "cases": cases, "max_abs_diff": worst}
    bad = [c for c in cases if any(v > atol for v in c["max_abs_diff"].values())]
    if bad or problems:
        lines = [
            f"B={c['batch']} T={c['time']}: "
            + ", ".join(f"{k} max|diff|={v:.3g}" for k, v in c["max_abs_diff"].items())
            for c in bad
        ]
        raise ExportError(
            f"{onnx_path}: ONNX Runtime output differs from PyTorch beyond atol={atol:g}: "
            + "; ".join(problems + lines)
        )
    report["ok"] = True
    return report


def export_onnx(
    model: HAMNet,
    out_path: str | Path,
    opset: int = 17,
    validate: bool = True,
    metadata: dict[str, str] | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export ``model`` (eval mode, float32, CPU copy; the caller's model is not modified).

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no ``onnxscript`` and
    handles ``dynamic_axes`` for Conv1d/AvgPool1d reliably. ``metadata`` is stored as ONNX
    ``metadata_props`` next to ``hamnet.feature_size``/``num_class``/``smooth_kernel``.
    Returns a report dict (path, opset, shapes, validation diffs when ``validate``).
    """
    import onnx

    if not isinstance(model, HAMNet):
        raise ExportError(f"{out_path}: expected a HAMNet, got {type(model).__name__}")
    out_path = Path(out_path)
    if not OPSET_RANGE[0] <= int(opset) <= OPSET_RANGE[1]:
        raise ExportError(
            f"{out_path}: opset {opset} is not supported; use {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    head = _Head(copy.deepcopy(model).float().cpu().eval()).eval()
    cfg = head.model.cfg
    dummy = torch.zeros(TRACE_SHAPE[0], TRACE_SHAPE[1], cfg.feature_size)
    names = (INPUT_NAME, *OUTPUT_NAMES)
    dynamic_axes = {name: {0: "batch", 1: "time"} for name in names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                head,
                (dummy,),
                str(out_path),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                opset_version=int(opset),
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as e:  # exporter errors come in many types
        raise ExportError(f"{out_path}: ONNX export failed at opset {opset}: {e}") from None

    proto = onnx.load(str(out_path))
    props = {
        "hamnet.format": "hamnet-head/1",
        "hamnet.feature_size": str(cfg.feature_size),
        "hamnet.num_class": str(cfg.num_class),
        "hamnet.smooth_kernel": "" if cfg.smooth_kernel is None else str(cfg.smooth_kernel),
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{out_path}: exported graph is not valid ONNX: {e}") from None
    onnx.save(proto, str(out_path))

    report: dict[str, Any] = {
        "path": str(out_path),
        "opset": int(opset),
        "input": {INPUT_NAME: ["batch", "time", cfg.feature_size]},
        "outputs": {"cas": ["batch", "time", cfg.num_class + 1], "attention": ["batch", "time", 1]},
        "smooth_kernel": cfg.smooth_kernel,
        "size_bytes": out_path.stat().st_size,
        "validated": False,
    }
    if validate:
        report["validation"] = validate_onnx(model, out_path, atol=atol)
        report["validated"] = True
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary for the CLI."""
    lines = [
        f"exported {report['path']} (opset {report['opset']}, {report['size_bytes'] / 1e6:.1f} MB)",
        f"  input  features {report['input'][INPUT_NAME]}",
        f"  output cas {report['outputs']['cas']}, attention {report['outputs']['attention']}",
    ]
    if report.get("smooth_kernel"):
        lines.append(f"  ANet smoothing: AvgPool1d kernel {report['smooth_kernel']}")
    val = report.get("validation")
    if not val:
        lines.append("  validation: skipped")
        return "\n".join(lines)
    lines.append(f"  validation vs PyTorch (atol {val['atol']:g}): OK")
    for case in val["cases"]:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in case["max_abs_diff"].items())
        lines.append(f"    B={case['batch']:<2d} T={case['time']:<4d} max|diff|: {diffs}")
    return "\n".join(lines)
