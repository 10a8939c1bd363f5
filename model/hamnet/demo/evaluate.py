"""Held-out evaluation of a trained head, the way the bundle will run it.

Why a module of its own: the mAP a build reports must come from exactly what ships, the
exported ONNX head and the bundle's post-processing, not from the PyTorch model that trained
it; and the mAP table is shared with ``bench/demo_acceptance.py``. The calibration of the
confidence and the out-of-domain threshold are fitted here too, on the build's *calibration*
split (never the training videos, never the held-out evaluation videos), and then measured on
the held-out videos, so that the numbers a card reports were not chosen on the data they
describe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hamnet.config import PostprocessConfig

Outputs = dict[str, tuple[np.ndarray, np.ndarray]]  # video -> (elem [T,C+1], atn [T,1])
Results = dict[str, list[dict[str, Any]]]  # video -> [{label, score, segment: [s, e]}]


def head_outputs(head_onnx: Path, feats: dict[str, np.ndarray]) -> Outputs:
    """Run the exported head on cached features (CPU, one video at a time)."""
    from hamnet.localize import HeadSession

    head = HeadSession(head_onnx, providers=["CPUExecutionProvider"])
    return {name: head.run(f, name=name) for name, f in feats.items()}


def results_from_outputs(
    outputs: Outputs, classes: list[str], post: PostprocessConfig, clean: bool | None = None
) -> Results:
    """Post-processed segments of every video in ANet result form (``clean``: see
    :func:`hamnet.postprocess.localize_trace`; None follows the profile)."""
    from hamnet.postprocess import predict_from_outputs

    results: Results = {}
    for name, (elem, atn) in outputs.items():
        out = predict_from_outputs(elem, atn, classes, post, clean=clean)
        results[name] = [
            {"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
            for s in out["segments"]
        ]
    return results


def head_predictions(
    head_onnx: Path, feats: dict[str, np.ndarray], classes: list[str], post: PostprocessConfig
) -> tuple[Results, Outputs]:
    """Run the exported head + post-processing on cached features (what the bundle does)."""
    outputs = head_outputs(head_onnx, feats)
    return results_from_outputs(outputs, classes, post), outputs


def count_instances(gt: dict[str, Any], videos: Any) -> int:
    return sum(len(gt["database"][v]["annotations"]) for v in videos)


def fit_trust(
    train_feats: dict[str, np.ndarray],
    calib_feats: dict[str, np.ndarray],
    calib_results: Results,
    calib_gt: dict[str, Any],
    profile: str,
) -> tuple[Any, Any]:
    """``(Calibration, DomainModel)`` from the calibration split: isotonic map of the served
    segments' true/false labels on their raw scores; domain statistics of the training
    features with the threshold set on the calibration videos."""
    from hamnet import calibration, domain

    scores, labels = calibration.label_results(calib_results, calib_gt)
    cal = calibration.fit_isotonic(scores, labels, profile)
    cal.info.update(videos=len(calib_results))
    dom = domain.fit(list(train_feats.values()))
    dom = domain.choose_threshold(dom, list(calib_feats.values()))
    return cal, dom


def trust_report(
    cal: Any, dom: Any, results: Results, gt: dict[str, Any], feats: dict[str, np.ndarray],
    bins: int = 10,
) -> dict[str, Any]:
    """Calibration error and out-of-domain flag rate on held-out videos the fit never saw."""
    from hamnet import calibration

    scores, labels = calibration.label_results(results, gt)
    conf = cal(scores)
    ece, table = calibration.reliability(conf, labels, bins)
    flagged = [v for v, f in feats.items() if dom.score(f) > dom.threshold]
    return {
        "ece": round(ece, 4),
        "bins": bins,
        "segments": int(scores.size),
        "true": int(labels.sum()),
        "videos": len(results),
        "reliability": table,
        "domain_flagged": len(flagged),
        "domain_videos": len(feats),
    }


def map_table(det: dict[str, Any]) -> str:
    """Markdown table of mAP per tIoU threshold (percent)."""
    tious = [f"{t:.1f}" for t in det["tiou"]]
    head = "| tIoU | " + " | ".join(tious) + " | avg (0.1:0.7) |"
    sep = "|---" * (len(tious) + 2) + "|"
    row = "| mAP (%) | " + " | ".join(f"{100 * m:.1f}" for m in det["mAP"])
    return "\n".join([head, sep, row + f" | {100 * det['average_mAP']:.1f} |"])
