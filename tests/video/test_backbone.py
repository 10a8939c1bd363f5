"""BackboneSpec round trips, the registry, and streaming feature extraction."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers

from hamnet.errors import BundleError, NoVideoStreamError  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import (  # noqa: E402
    Backbone,
    BackboneSpec,
    extract_features,
    load_backbone,
    register_backbone,
)
from vidgen import flat_frames, level, write_audio_only, write_video  # noqa: E402


class MeanBackbone:
    """Test backbone: per snippet, the mean gray level of each frame (D = F) and a call log."""

    def __init__(self, spec: BackboneSpec | None = None) -> None:
        self._spec = spec or BackboneSpec(
            "mean", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8, streams=("rgb",),
            flow_method=None, feature_dim=4,
        )
        self.calls: list[tuple[int, ...]] = []

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    @property
    def provider(self) -> str:
        return "numpy"

    @property
    def feature_dim(self) -> int:
        return self._spec.feature_dim

    def encode(self, frames: np.ndarray) -> np.ndarray:
        assert frames.dtype == np.uint8 and frames.ndim == 5
        self.calls.append(frames.shape)
        return frames.reshape(frames.shape[0], frames.shape[1], -1).mean(-1).astype(np.float32)


@pytest.fixture()
def mean_registered():
    register_backbone("mean", lambda spec, d, p: MeanBackbone(spec), module="")
    yield
    bb._REGISTRY.pop("mean", None)


def test_spec_round_trip_json(tmp_path: Path) -> None:
    spec = BackboneSpec(
        "i3d", files={"rgb": "rgb.onnx", "flow": "flow.onnx"}, options={"batch": [1, 8]}
    )
    assert BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    spec.write(tmp_path)
    assert BackboneSpec.read(tmp_path) == spec
    assert BackboneSpec.read(tmp_path / "backbone.json") == spec
    assert spec.snippet_seconds == pytest.approx(0.64)
    assert spec.to_dict()["streams"] == ["rgb", "flow"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"fps": 0}, "fps"),
        ({"streams": ["rgb", "depth"]}, "streams"),
        ({"flow_method": "magic"}, "flow_method"),
        ({"normalisation": "zscore"}, "normalisation"),
        ({"snippet_frames": 0}, "snippet_frames"),
        ({"flow_method": None}, "needs a flow_method"),
    ],
)
def test_spec_rejects_bad_values(change: dict, needle: str) -> None:
    d = BackboneSpec("i3d").to_dict() | change
    with pytest.raises(BundleError, match=needle):
        BackboneSpec.from_dict(d)


def test_spec_rejects_unknown_keys_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="unknown key.*crop_size"):
        BackboneSpec.from_dict({"name": "i3d", "crop_size": 224})
    with pytest.raises(BundleError, match="missing required key 'name'"):
        BackboneSpec.from_dict({"fps": 25})
    (tmp_path / "backbone.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        BackboneSpec.read(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        BackboneSpec.read(tmp_path / "nope")


def test_load_backbone_dispatch(tmp_path: Path, mean_registered) -> None:
    spec = BackboneSpec("mean", streams=("rgb",), flow_method=None, feature_dim=16)
    b = load_backbone(spec)
    assert isinstance(b, Backbone) and b.spec is spec
    spec.write(tmp_path)
    assert load_backbone(tmp_path).spec == spec
    assert load_backbone(str(tmp_path / "backbone.json")).spec == spec
    with pytest.raises(BundleError, match="unknown backbone 'resnet'.*known backbones: i3d"):
        load_backbone(BackboneSpec("resnet"))
    with pytest.raises(BundleError, match="neither a backbone directory"):
        load_backbone("no-such-thing")
    with pytest.raises(BundleError, match="needs a directory"):
        load_backbone(BackboneSpec("i3d"))


def test_extract_features_spans_and_batches(tmp_path: Path, mean_registered) -> None:
    # 2.2 s at 25 fps = 55 frames -> 13 snippets of 4 frames (last 3 frames dropped).
    video = write_video(tmp_path / "v.mp4", flat_frames(55, 32, 24), fps=25)
    backbone = MeanBackbone()
    seen: list[tuple[str, float]] = []
    feats, info, spans = extract_features(
        backbone, video, progress=lambda s, f: seen.append((s, f)), batch_size=5
    )
    assert feats.shape == (13, 4) and feats.dtype == np.float32
    assert [c[0] for c in backbone.calls] == [5, 5, 3]
    assert backbone.calls[0][1:] == (4, 8, 8, 3)
    assert spans.shape == (13, 2)
    np.testing.assert_allclose(spans[:, 0], np.arange(13) * 0.16)
    np.testing.assert_allclose(spans[:, 1], np.arange(1, 14) * 0.16)
    # Feature j of snippet i is frame 4i+j: the gray level survives encoding to within 3.
    expected = np.array([[level(4 * i + j) for j in range(4)] for i in range(13)])
    assert np.abs(feats - expected).max() < 3
    assert info.duration == pytest.approx(2.2) and info.width == 32
    assert seen[0] == ("extract", 0.0) and seen[-1] == ("extract", 1.0)
    fracs = [f for _, f in seen]
    assert fracs == sorted(fracs)


def test_extract_features_errors_and_shape_check(tmp_path: Path, mean_registered) -> None:
    with pytest.raises(NoVideoStreamError):
        extract_features(MeanBackbone(), write_audio_only(tmp_path / "a.m4a"))

    class Wrong(MeanBackbone):
        def encode(self, frames: np.ndarray) -> np.ndarray:
            return np.zeros((frames.shape[0], 3), np.float32)

    video = write_video(tmp_path / "v.mp4", flat_frames(8, 16, 16), fps=25)
    with pytest.raises(BundleError, match=r"shape \(2, 3\).*expected \(2, 4\)"):
        extract_features(Wrong(), video)


def test_motion_backbone_if_available(tmp_path: Path) -> None:
    pytest.importorskip("hamnet.video.motion")
    b = load_backbone("motion")
    assert b.spec.name == "motion" and b.feature_dim == b.spec.feature_dim
    video = write_video(tmp_path / "v.mp4", flat_frames(40, 48, 36), fps=25)
    feats, _, spans = extract_features(b, video)
    assert feats.shape == (len(spans), b.feature_dim) and np.isfinite(feats).all()
