"""The bundle of a finished training: ONNX head, backbone spec, domain check and model card.

What the card says, and why: a user's dataset has video-level labels only, so what can be
measured on the held-out split is *classification* mAP (is the class in the video), not
*detection* mAP (when). The card reports the former under ``extra.validation`` and leaves
``metrics`` (held-out detection mAP) empty rather than inventing it; there is no confidence
calibration for the same reason (results carry ``confidence: null``; ``min_score`` filters the
raw score). The domain check (training-feature ranges) needs no labels: its threshold is set
on the validation videos, which the ranges were not fitted on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hamnet.card import ClassInfo, DataSummary, ModelCard


def build_bundle(out: Path, model: Any, cfg: Any, classes: list[str], spec: Any, rec: Any,
                 ds: Any, train_set: list[Any], val_set: list[Any],
                 history: list[dict[str, Any]]) -> Path:
    from hamnet import domain
    from hamnet.bundle import write_bundle
    from hamnet.nn.export import export_onnx

    work = out.parent
    work.mkdir(parents=True, exist_ok=True)
    head = work / "head.onnx"
    model.eval()
    export_onnx(model, head, metadata={"classes": json.dumps(classes)})
    dom = None
    dom_summary = None
    if len(train_set) >= 2 and val_set:
        dom = domain.fit([v.features for v in train_set])
        dom = domain.choose_threshold(dom, [v.features for v in val_set])
        dom_summary = {"method": dom.to_dict()["method"], "threshold": dom.threshold,
                       "heldout_videos": len(val_set)}
    val_maps = [h["val_map"] for h in history if h.get("val_map") is not None]
    last = history[-1] if history else {}
    card = ModelCard(
        title=f"{rec.name}: HAM-Net trained on dataset '{ds.name}'",
        synthetic=False,
        summary=(f"Finds when one of {len(classes)} actions ({', '.join(classes[:12])}"
                 f"{', ...' if len(classes) > 12 else ''}) happens in a video. Trained with "
                 f"video-level labels only (weak supervision) on {len(train_set)} videos of "
                 f"the user dataset '{ds.name}'."),
        intended_use="Localising these actions in videos like the training videos.",
        limitations=(
            "Trained with video-level labels only: segment boundaries come from learned "
            "attention; no boundary was annotated.",
            "Validated by video-level classification mAP on held-out videos of the same "
            "dataset; localisation (detection) mAP was not measured (no temporal ground "
            "truth was given).",
            "No confidence calibration: results carry the raw score only.",
            "Videos unlike the training videos give meaningless segments: check the domain "
            "flag.",
        ),
        training_data=DataSummary(
            source=f"user dataset {ds.name} ({ds.id})", videos=len(train_set),
            classes=len(classes),
            description=f"{ds.videos} videos with video-level labels; {len(val_set)} held "
                        f"out for validation (seed {rec.seed})"),
        classes=tuple(ClassInfo(c, "") for c in classes),
        backbone=f"{spec.name} ({spec.feature_dim}-d, one per {spec.snippet_seconds:.2f} s)",
        flow_method=spec.flow_method,
        metrics=None,
        calibration=None,
        domain=dom_summary,
        extra={"validation": {"classification_mAP": val_maps[-1] if val_maps else None,
                              "videos": len(val_set), "epoch": last.get("epoch")},
               "training": {"id": rec.id, "epochs": rec.epochs, "final_loss": last.get("loss")}},
    )
    training = {"source": f"user dataset {ds.name}", "dataset": ds.id, "training": rec.id,
                "epochs": rec.epochs, "seed": rec.seed, "train_videos": len(train_set),
                "validation_videos": len(val_set), "history": history}
    return write_bundle(out, head, classes, spec, postprocess=cfg.postprocess,
                        name=rec.name, version=f"training-{rec.id[:8]}", training=training,
                        card=card, calibration=None, domain=dom)
