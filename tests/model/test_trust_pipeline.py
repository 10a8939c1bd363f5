"""predict_video with a bundle that carries a card, a calibration and a domain check: every
segment gets a confidence, the result says whether the video is in domain, ``min_score``
filters on confidence and ``min_raw_score`` on the raw score; and ``hamnet predict`` shows it.

The backbone is a gray-level meter (feature = mean gray level of the snippet / 255) and the
head the tiny wired one of test_pipeline.py: bright snippets are the action "wave"."""

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
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("av")

from hamnet import calibration, domain, pipeline  # noqa: E402
from hamnet.bundle import load_bundle, write_bundle  # noqa: E402
from hamnet.card import ClassInfo, DataSummary, ModelCard  # noqa: E402
from hamnet.cli import main  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, extract_features, register_backbone  # noqa: E402
from headgen import write_head  # noqa: E402
from vidgen import write_video  # noqa: E402

SPEC = BackboneSpec(
    "gray_trust", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8, streams=("rgb",),
    normalisation="none", flow_method=None, feature_dim=1,
)


class GrayLevel:
    spec = SPEC
    provider = "numpy"
    feature_dim = 1

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(frames.shape[0], -1).mean(1, keepdims=True).astype(np.float32) / 255


def dark_video(path: Path, rng: np.random.Generator, n: int = 100,
               dark: tuple[int, int] = (10, 60), bright: tuple[int, int] = (100, 130)) -> Path:
    """Dark frames with one brighter burst: the 'training domain'."""
    start = int(rng.integers(10, n - 40))
    frames = []
    for i in range(n):
        lvl = int(rng.integers(*bright)) if start <= i < start + 30 else int(rng.integers(*dark))
        frames.append(np.full((16, 24, 3), lvl, np.uint8))
    return write_video(path, frames, fps=25)


CARD = ModelCard(
    title="Gray toy", synthetic=True, summary="Finds bright bursts.", intended_use="tests",
    limitations=("gray frames only",), training_data=DataSummary("vidgen", 8, 2),
    classes=(ClassInfo("wave", "bright"), ClassInfo("clap", "dark")), backbone="gray_trust",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    register_backbone("gray_trust", lambda spec, d, p: GrayLevel())
    tmp = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    feats = [extract_features(GrayLevel(), dark_video(tmp / f"d{i}.mp4", rng))[0]
             for i in range(12)]
    dom = domain.choose_threshold(domain.fit(feats[:8]), feats[8:])
    assert dom.low[0] < 30 / 255 and dom.high[0] > 115 / 255
    # a known monotone map: raw score 0 -> 0.1, 1 -> 0.5, 2 -> 0.9
    cal = calibration.Calibration(np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.5, 0.9]), "fixed")
    head = write_head(tmp / "head.onnx", 1, 2, weights=([[8.0, -8.0, 0.0]], [[12.0]]),
                      atn_bias=-3.0)
    full = write_bundle(tmp / "full", head, ["wave", "clap"], SPEC, name="toy",
                        postprocess={"profile": "fixed"}, card=CARD, calibration=cal,
                        domain=dom)
    bare = write_bundle(tmp / "bare", head, ["wave", "clap"], SPEC, name="toy",
                        postprocess={"profile": "fixed"})
    # a fresh video well inside the training levels
    video = dark_video(tmp / "fresh.mp4", np.random.default_rng(99), dark=(30, 45),
                       bright=(105, 115))
    white = write_video(tmp / "white.mp4", [np.full((16, 24, 3), 250, np.uint8)] * 100, fps=25)
    yield {"full": full, "bare": bare, "video": video, "white": white, "cal": cal, "tmp": tmp}
    bb._REGISTRY.pop("gray_trust", None)
    pipeline.clear_caches()


def test_result_carries_confidence_domain_and_card(setup) -> None:
    res = pipeline.predict_video(setup["full"], setup["video"])
    assert res["segments"], "the bright burst must give segments"
    for s in res["segments"]:
        assert set(s) == {"label", "label_id", "start", "end", "score", "confidence"}
        assert s["confidence"] == pytest.approx(float(setup["cal"](s["score"])), abs=1e-4)
        assert 0 <= s["confidence"] <= 1
    assert res["domain"]["in_distribution"] is True
    assert set(res["domain"]) == {"in_distribution", "score", "threshold"}
    assert res["model"]["card"] == {
        "title": "Gray toy", "synthetic": True, "summary": "Finds bright bursts.",
        "intended_use": "tests", "limitations": ["gray frames only"],
    }
    json.dumps(res)
    white = pipeline.predict_video(setup["full"], setup["white"])
    assert white["domain"]["in_distribution"] is False
    assert white["domain"]["score"] > white["domain"]["threshold"]


def test_min_score_filters_confidence_and_min_raw_score_the_raw_score(setup) -> None:
    full = pipeline.predict_video(setup["full"], setup["video"])
    confs = sorted(s["confidence"] for s in full["segments"])
    raws = sorted(s["score"] for s in full["segments"])
    cut = confs[len(confs) // 2]
    kept = pipeline.predict_video(setup["full"], setup["video"], min_score=cut)["segments"]
    assert kept and all(s["confidence"] >= cut for s in kept)
    assert len(kept) == sum(c >= cut for c in confs)
    raw_cut = raws[len(raws) // 2]
    kept = pipeline.predict_video(setup["full"], setup["video"], min_raw_score=raw_cut)
    assert len(kept["segments"]) == sum(r >= raw_cut for r in raws)
    # a confidence floor is not a raw-score floor: the confidences here are all < 1
    assert pipeline.predict_video(setup["full"], setup["video"], min_score=1.0)["segments"] == []


def test_without_calibration_confidence_is_null_and_min_score_uses_raw(setup) -> None:
    b = load_bundle(setup["bare"])
    assert b.card is None and b.calibration is None and b.domain is None
    res = pipeline.predict_video(setup["bare"], setup["video"])
    assert res["domain"] is None and res["model"]["card"] is None
    assert res["segments"] and all(s["confidence"] is None for s in res["segments"])
    raws = sorted(s["score"] for s in res["segments"])
    cut = raws[len(raws) // 2]
    kept = pipeline.predict_video(setup["bare"], setup["video"], min_score=cut)["segments"]
    assert len(kept) == sum(r >= cut for r in raws)
    # a profile the calibration was not fitted for: no confidence either
    other = pipeline.predict_video(setup["full"], setup["video"], profile="official")
    assert all(s["confidence"] is None for s in other["segments"])


def test_served_segments_have_no_near_duplicates(setup) -> None:
    from hamnet.postprocess import DEDUPE_TIOU

    for profile in ("fixed", "custom"):
        segs = pipeline.predict_video(setup["full"], setup["video"], profile=profile)["segments"]
        for i, a in enumerate(segs):
            for b in segs[i + 1:]:
                if a["label"] != b["label"]:
                    continue
                inter = max(0.0, min(a["end"], b["end"]) - max(a["start"], b["start"]))
                union = (a["end"] - a["start"]) + (b["end"] - b["start"]) - inter
                assert inter / union < DEDUPE_TIOU, (profile, a, b)


def test_cli_shows_card_warning_and_confidence(setup, capsys) -> None:
    assert main(["predict", "--bundle", str(setup["full"]), "--video", str(setup["video"])]) == 0
    out = capsys.readouterr().out
    assert "model: Gray toy [SYNTHETIC]" in out and "Finds bright bursts." in out
    assert "confidence" in out and "OUT OF DOMAIN" not in out
    assert "%" in out.split("confidence", 1)[1]
    assert main(["predict", "--bundle", str(setup["full"]), "--video", str(setup["white"])]) == 0
    assert "WARNING: OUT OF DOMAIN" in capsys.readouterr().out
    assert main(["predict", "--bundle", str(setup["bare"]), "--video", str(setup["video"])]) == 0
    assert "no calibrated confidence" in capsys.readouterr().out
    assert main(["predict", "--bundle", str(setup["full"]), "--video", str(setup["video"]),
                 "--json", "--min-score", "0.99"]) == 0
    assert json.loads(capsys.readouterr().out)["segments"] == []


def test_cli_uses_the_default_bundle(setup, capsys, monkeypatch, tmp_path) -> None:
    import shutil

    monkeypatch.setenv("HAMNET_HOME", str(tmp_path / "home"))
    assert main(["predict", "--video", str(setup["video"])]) == 2
    err = capsys.readouterr().err
    assert "default bundle" in err and "hamnet demo" in err
    shutil.copytree(setup["full"], tmp_path / "home" / "bundles" / "default")
    assert main(["predict", "--video", str(setup["video"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"]["card"]["title"] == "Gray toy"
    assert main(["predict"]) == 2
    assert "--video" in capsys.readouterr().err
