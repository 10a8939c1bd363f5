"""Train HAM-Net on the laid-out synthetic set and export its head to ONNX.

Why a module of its own: it is the one step that needs torch (imported inside the function,
so the rest of the build, and its process pools, stay torch-free until training starts).
"""

from __future__ import annotations

import json
from pathlib import Path

from hamnet.config import ExperimentConfig


def train_and_export(
    cfg: ExperimentConfig, data_dir: Path, run_dir: Path, classes: list[str], verbose: bool
) -> Path:
    """Train HAM-Net (video-level labels only) and export the last epoch's head to ONNX.

    The last epoch, not the best one on the held-out set: choosing the epoch on the test
    videos would make the reported held-out mAP optimistic."""
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.nn.export import export_onnx
    from hamnet.nn.train import train

    train(cfg, data_dir, run_dir, classes=classes, progress=verbose)
    loaded = load_checkpoint(run_dir / "last.ckpt")
    head = run_dir / "head.onnx"
    export_onnx(loaded.model, head, metadata={"classes": json.dumps(classes)})
    return head
