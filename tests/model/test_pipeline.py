"""predict_video end to end with a test backbone (gray level per frame) and a tiny ONNX head
wired so that "bright" frames are the action: the segment must land on the bright part."""

from __future__ import annotations

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

from hamnet import pipeline  # noqa: E402
from hamnet.bundle import write_bundle  # noqa: E402
from hamnet.errors import ConfigError, CorruptVideoError, NotAVideoError  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, register_backbone  # noqa: E402
from headgen import write_head  # noqa: E402
from vidgen import write_video  # noqa: E402

SPEC = BackboneSpec(
    "graylevel", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8, streams=("rgb",),
    normalisation="none", flow_method=None, feature_dim=1,
)


class GrayLevel:
    """Feature = mean gray level of the snippet / 255 (so bright snippets are ~0.9)."""

    spec = SPEC
    provider = "numpy"
    feature_dim = 1
    instances = 0

    def __init__(self) -> None:
        GrayLevel.instances += 1

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(frames.shape[0], -1).mean(1, keepdims=True).astype(np.float32) / 255


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    register_backbone("graylevel", lambda spec, d, p: GrayLevel())
    tmp = tmp_path_factory.mktemp("pipe")
    # cas = f @ [[+8 "wave"], [-8 "clap"], [0 background]]; attention = sigmoid(12 f - 6).
    head = write_head(
        tmp / "head.onnx", 1, 2, weights=([[8.0, -8.0, 0.0]], [[12.0]]), atn_bias=-6.0
    )
    out = write_bundle(tmp / "bundle", head, ["wave", "clap"], SPEC, name="toy", version="3")
    yield out
    bb._REGISTRY.pop("graylevel", None)
    pipeline.clear_caches()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 4 s at 25 fps: dark, bright from 1.6 s to 2.88 s, dark again.
    frames = []
    for i in range(100):
        lvl = 230 if 40 <= i < 72 else 20
        frames.append(np.full((16, 24, 3), lvl, np.uint8))
    return write_video(tmp_path_factory.mktemp("v") / "act.mp4", frames, fps=25)


def test_predict_video_finds_the_action(bundle: Path, video: Path) -> None:
    stages: list[tuple[str, float]] = []
    res = pipeline.predict_video(bundle, video, progress=lambda s, f: stages.append((s, f)))
    assert res["video"]["duration"] == pytest.approx(4.0)
    assert (res["video"]["width"], res["video"]["height"]) == (24, 16)
    assert res["model"]["name"] == "toy" and res["model"]["version"] == "3"
    assert res["model"]["provider"] == "numpy"
    assert res["model"]["head_provider"] == "CPUExecutionProvider"
    assert res["num_snippets"] == 25 and len(res["attention"]) == 25
    assert res["snippet_seconds"] == pytest.approx(0.16)
    assert [c["label"] for c in res["classes"]] == ["wave"]
    best = max((s for s in res["segments"] if s["label"] == "wave"), key=lambda s: s["score"])
    assert best["label_id"] == 0
    assert (best["start"], best["end"]) == pytest.approx((1.6, 2.88))
    assert all(0 <= s["start"] < s["end"] <= 4.0 for s in res["segments"])
    names = [s for s, _ in stages]
    assert names[0] == "probe" and names[-1] == "done"
    assert {"extract", "localize", "postprocess"} <= set(names)


def test_filters_and_cached_sessions(bundle: Path, video: Path) -> None:
    before = GrayLevel.instances
    res = pipeline.predict_video(bundle, video, exclude=["wave"])
    assert all(s["label"] != "wave" for s in res["segments"]) and res["classes"] == []
    res = pipeline.predict_video(bundle, video, include=["wave"], min_score=1e9)
    assert res["segments"] == []
    assert GrayLevel.instances == before  # backbone built once per process and bundle
    with pytest.raises(ConfigError, match="unknown label.*dance"):
        pipeline.predict_video(bundle, video, include=["dance"])
    fixed = pipeline.predict_video(bundle, video, profile="fixed")
    assert fixed["model"]["profile"] == "fixed"


def test_short_video_segments_clipped_and_bad_input(bundle: Path, tmp_path: Path) -> None:
    one = write_video(tmp_path / "one.mp4", [np.full((8, 8, 3), 230, np.uint8)], fps=25)
    res = pipeline.predict_video(bundle, one)
    assert res["num_snippets"] == 1
    assert all(s["end"] <= 0.04 + 1e-9 for s in res["segments"])
    bad = tmp_path / "x.mp4"
    bad.write_text("nope")
    with pytest.raises(NotAVideoError):
        pipeline.predict_video(bundle, bad)


def test_truncated_video_is_reported_partial(bundle: Path, tmp_path: Path) -> None:
    frames = [np.full((16, 16, 3), 20 + (i % 10) * 20, np.uint8) for i in range(100)]
    full = write_video(tmp_path / "v.mkv", frames, fps=25)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="partially decoded"):
        res = pipeline.predict_video(bundle, cut)
    assert res["video"]["partial"] is True
    assert 1.0 < res["video"]["duration"] < 3.5  # what was decoded, not the 4 s header
    assert res["video"]["decode_warnings"] == [] or isinstance(res["video"]["decode_warnings"][0], str)
    assert res["num_snippets"] == int(res["video"]["duration"] * 25) // 4


def test_error_messages_do_not_reveal_server_paths(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "uploads" / "job42" / "clip.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(300))
    with pytest.raises(CorruptVideoError) as info:
        pipeline.predict_video(bundle, str(bad))
    msg = str(info.value)
    assert "clip.mp4" in msg and str(tmp_path) not in msg


def test_pipelined_and_one_thread_paths_serve_the_same_result(bundle: Path, video: Path) -> None:
    """The worker's per-child thread budget picks the path (1: one-thread loop, more:
    pipelined); what is served must not depend on it."""
    backbone = pipeline.get_backbone(pipeline.get_bundle(bundle))
    results = []
    try:
        for threads in (1, 3):
            backbone.threads = threads  # what pipeline.get_backbone(..., threads=) sets
            res = pipeline.predict_video(bundle, video)
            res.pop("timings")
            results.append(res)
    finally:
        backbone.__dict__.pop("threads", None)
    assert results[0] == results[1]
    assert results[0]["num_snippets"] == 25
