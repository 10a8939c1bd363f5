"""``hamnet bundle --card --metrics --domain-data``: the card's human parts from a file, the
held-out mAP from the training run's metrics.json, the domain check from its W-TAL data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hamnet.bundle import load_bundle  # noqa: E402
from hamnet.cli import main  # noqa: E402
from hamnet.config import ExperimentConfig, ModelConfig  # noqa: E402
from hamnet.data.wtal import WTALVideo, write_wtal  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, register_backbone  # noqa: E402

SPEC = BackboneSpec("stats8card", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8,
                    streams=("rgb",), flow_method=None, feature_dim=8)

CARD = """\
title: Door model
summary: Finds doors opening and closing in hallway cameras.
intended_use: Research on door events.
limitations:
  - Hallway cameras only.
  - Not tested at night.
training_data:
  source: our hallway recordings
  videos: 30
  description: 640x480, 30 fps
classes:
  open: the door swings open
metrics:
  videos: 10
  instances: 17
  seed: 3
"""


@pytest.fixture()
def setup(tmp_path: Path):
    from hamnet.nn.checkpoint import save_checkpoint
    from hamnet.nn.model import HAMNet

    register_backbone("stats8card", lambda spec, d, p: None)
    torch.manual_seed(0)
    cfg = ExperimentConfig(model=ModelConfig(feature_size=8, num_class=2))
    ckpt = save_checkpoint(tmp_path / "m.pt", HAMNet(cfg.model), cfg, ["open", "close"])
    bdir = tmp_path / "bb"
    bdir.mkdir()
    SPEC.write(bdir)
    (tmp_path / "card.yaml").write_text(CARD)
    metrics = {"epoch": 7, "tiou": [0.1, 0.5], "mAP": [0.8, 0.4], "average_mAP": 0.6,
               "cls_mAP": 90.0, "history": []}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(0)
    vids = [WTALVideo(f"v{i}", rng.normal(0, 1, (20, 8)).astype(np.float32),
                      "validation" if i < 10 else "test", [[0.0, 1.0]], ["open"])
            for i in range(12)]
    write_wtal(tmp_path / "data", cfg.data.dataset, vids, ["open", "close"],
               feature_type=cfg.data.feature_type, train_subset="validation")
    yield tmp_path, ckpt, bdir
    bb._REGISTRY.pop("stats8card", None)


def _bundle(tmp: Path, ckpt: Path, bdir: Path, *extra: str) -> int:
    return main(["bundle", "--backbone", str(bdir), "--checkpoint", str(ckpt), "--out",
                 str(tmp / "out"), "--no-validate", *extra])


def test_card_metrics_and_domain_go_into_the_bundle(setup, capsys) -> None:
    tmp, ckpt, bdir = setup
    assert _bundle(tmp, ckpt, bdir, "--card", str(tmp / "card.yaml"), "--metrics",
                   str(tmp / "metrics.json"), "--domain-data", str(tmp / "data")) == 0
    assert "model card: yes; out-of-domain check: yes" in capsys.readouterr().out
    b = load_bundle(tmp / "out")
    card = b.card
    assert card["title"] == "Door model" and card["synthetic"] is False
    assert card["limitations"] == ["Hallway cameras only.", "Not tested at night."]
    assert card["classes"] == [{"name": "open", "description": "the door swings open"},
                               {"name": "close", "description": ""}]
    assert card["training_data"] == {"source": "our hallway recordings", "videos": 30,
                                     "classes": 2, "description": "640x480, 30 fps"}
    assert card["backbone"] == "stats8card" and card["flow_method"] is None
    m = card["metrics"]
    assert (m["tiou"], m["mAP"], m["average_mAP"]) == ([0.1, 0.5], [0.8, 0.4], 0.6)
    assert (m["videos"], m["instances"], m["seed"]) == (10, 17, 3)
    assert "epoch 7" in m["note"] and "optimistic" in m["note"]
    # domain: statistics of 8 of the 10 training videos, threshold from the other 2
    assert b.domain.info["videos"] == 8 and b.domain.info["heldout_videos"] == 2
    assert b.domain.dim == 8 and b.calibration is None


def test_card_problems_are_clear_errors(setup, capsys) -> None:
    tmp, ckpt, bdir = setup
    assert _bundle(tmp, ckpt, bdir) == 0
    assert "model card: no" in capsys.readouterr().out
    assert load_bundle(tmp / "out").card is None
    bad = tmp / "bad.yaml"
    for text, message in [
        (CARD.replace("intended_use: Research on door events.\n", ""), "needs intended_use"),
        (CARD + "colour: red\n", "unknown model card key(s): colour"),
        (CARD.replace("  open: the door", "  jump: the door"), "'classes' must map"),
        ("- a list\n", "must be a mapping"),
    ]:
        bad.write_text(text)
        assert _bundle(tmp, ckpt, bdir, "--card", str(bad)) == 2
        assert message in capsys.readouterr().err, message
    assert _bundle(tmp, ckpt, bdir, "--metrics", str(tmp / "metrics.json")) == 2
    assert "pass --card" in capsys.readouterr().err
    (tmp / "m2.json").write_text(json.dumps({"mAP": [0.1]}))
    assert _bundle(tmp, ckpt, bdir, "--card", str(tmp / "card.yaml"), "--metrics",
                   str(tmp / "m2.json")) == 2
    assert "expected tiou, mAP and average_mAP" in capsys.readouterr().err
