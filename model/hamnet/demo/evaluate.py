"""Held-out evaluation of a trained head, the way the bundle will run it.

Why a module of its own: the mAP a build reports must come from exactly what ships, the
exported ONNX head and the bundle's post-processing, not from the PyTorch model that trained
it; and the mAP table is shared with ``bench/demo_acceptance.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hamnet.config import PostprocessConfig


def head_predictions(
    head_onnx: Path, feats: dict[str, np.ndarray], classes: list[str], post: PostprocessConfig
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Run the exported head + post-processing on cached features (what the bundle does)."""
    from hamnet.localize import HeadSession
    from hamnet.postprocess import predict_from_outputs

    head = HeadSession(head_onnx, providers=["CPUExecutionProvider"])
    results: dict[str, list[dict[str, Any]]] = {}
    outputs = {}
    for name, f in feats.items():
        elem, atn = head.run(f, name=name)
        outputs[name] = (elem, atn)
        out = predict_from_outputs(elem, atn, classes, post)
        results[name] = [
            {"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
            for s in out["segments"]
        ]
    return results, outputs


def map_table(det: dict[str, Any]) -> str:
    """Markdown table of mAP per tIoU threshold (percent)."""
    tious = [f"{t:.1f}" for t in det["tiou"]]
    head = "| tIoU | " + " | ".join(tious) + " | avg (0.1:0.7) |"
    sep = "|---" * (len(tious) + 2) + "|"
    row = "| mAP (%) | " + " | ".join(f"{100 * m:.1f}" for m in det["mAP"])
    return "\n".join([head, sep, row + f" | {100 * det['average_mAP']:.1f} |"])
