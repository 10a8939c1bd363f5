"""End to end, CI-sized: build a miniature bundle from nothing (render -> motion features ->
weakly-supervised HAM-Net -> ONNX -> bundle), then find an action in a video it never saw
through ``hamnet predict --bundle ... --video ...``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("av")
pytest.importorskip("cv2")

from hamnet.bundle import load_bundle  # noqa: E402
from hamnet.cli import main  # noqa: E402
from hamnet.demo import build_bundle, demo_size  # noqa: E402
from hamnet.demo.synth import SceneConfig, render_dataset  # noqa: E402

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
    assert b.backbone.name == "motion" and b.backbone.feature_dim == 384
    assert b.training["held_out"]["average_mAP"] == report["held_out"]["hamnet"]["average_mAP"]
    assert (root / "bundle" / "heldout_cas.png").stat().st_size > 1000
    assert set(report["stages"]) >= {"render", "features", "train hamnet", "bundle"}
    assert report["held_out"]["hamnet"]["mAP"][0] > 0.3  # mAP@0.1 on the held-out videos


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
