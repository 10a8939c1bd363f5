"""``hamnet bundle`` from a real (tiny) torch checkpoint, then a prediction through it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))  # helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hamnet.bundle import load_bundle  # noqa: E402
from hamnet.cli import main  # noqa: E402
from hamnet.config import ExperimentConfig, ModelConfig  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, register_backbone  # noqa: E402
from vidgen import flat_frames, write_video  # noqa: E402

SPEC = BackboneSpec("stats8", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8,
                    streams=("rgb",), flow_method=None, feature_dim=8)


class Stats8:
    spec = SPEC
    provider = "numpy"
    feature_dim = 8

    def encode(self, frames: np.ndarray) -> np.ndarray:
        x = frames.reshape(frames.shape[0], -1).astype(np.float32) / 255
        cols = [x.mean(1), x.std(1), x.min(1), x.max(1)]
        return np.stack(cols + [c**2 for c in cols], axis=1)


@pytest.fixture()
def setup(tmp_path: Path):
    from hamnet.nn.checkpoint import save_checkpoint
    from hamnet.nn.model import HAMNet

    register_backbone("stats8", lambda spec, d, p: Stats8())
    torch.manual_seed(0)
    cfg = ExperimentConfig(model=ModelConfig(feature_size=8, num_class=2))
    ckpt = save_checkpoint(tmp_path / "m.pt", HAMNet(cfg.model), cfg, ["open", "close"],
                           epoch=3)
    bdir = tmp_path / "bb"
    bdir.mkdir()
    SPEC.write(bdir)
    yield tmp_path, ckpt, bdir
    bb._REGISTRY.pop("stats8", None)


def test_bundle_cli_end_to_end(setup, capsys) -> None:
    tmp, ckpt, bdir = setup
    out = tmp / "toy"
    rc = main(["bundle", "--backbone", str(bdir), "--checkpoint", str(ckpt), "--out", str(out),
               "--version", "2.0", "--profile", "fixed", "--archive"])
    assert rc == 0
    assert "wrote bundle" in capsys.readouterr().out
    b = load_bundle(out)
    assert b.classes == ("open", "close") and b.version == "2.0" and b.name == "toy"
    assert b.postprocess.profile == "fixed" and b.backbone == SPEC
    assert b.training["checkpoint"] == "m.pt" and b.training["meta"]["epoch"] == 3
    assert load_bundle(tmp / "toy.tar.gz", extract_dir=tmp / "x").checksum == b.checksum

    from hamnet.pipeline import predict_video

    video = write_video(tmp / "v.mp4", flat_frames(30, 16, 16), fps=25)
    res = predict_video(out, video)
    assert res["num_snippets"] == 7 and res["model"]["profile"] == "fixed"
    assert len(res["video_scores"]) == 2
    json.dumps(res)  # JSON-able as the worker stores it


def test_bundle_cli_refuses_mismatches(setup, capsys) -> None:
    tmp, ckpt, bdir = setup
    (tmp / "classes.txt").write_text("a\nb\nc\n")
    rc = main(["bundle", "--backbone", str(bdir), "--checkpoint", str(ckpt), "--out",
               str(tmp / "o1"), "--classes", str(tmp / "classes.txt"), "--no-validate"])
    assert rc == 2 and "3 class names for a head with 2 classes" in capsys.readouterr().err
    wide = BackboneSpec("stats8", streams=("rgb",), flow_method=None, feature_dim=16)
    wdir = tmp / "wide"
    wdir.mkdir()
    wide.write(wdir)
    rc = main(["bundle", "--backbone", str(wdir), "--checkpoint", str(ckpt), "--out",
               str(tmp / "o2"), "--no-validate"])
    err = capsys.readouterr().err
    assert rc == 2 and "expects 8-d features but backbone 'stats8' produces 16-d" in err
