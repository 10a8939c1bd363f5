"""``hamnet extract``: W-TAL layout, labels, skipping bad videos, resuming from the cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers

from hamnet.cli import main  # noqa: E402
from hamnet.cli.extract import find_videos, read_labels  # noqa: E402
from hamnet.errors import DataError  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, register_backbone  # noqa: E402
from vidgen import flat_frames, write_audio_only, write_video  # noqa: E402

SPEC = BackboneSpec(
    "countmean", fps=25.0, snippet_frames=8, resize_shorter=8, crop=8, streams=("rgb",),
    flow_method=None, feature_dim=2,
)
CALLS: list[int] = []


class CountMean:
    spec = SPEC
    provider = "numpy"
    feature_dim = 2

    def encode(self, frames: np.ndarray) -> np.ndarray:
        CALLS.append(frames.shape[0])
        m = frames.reshape(frames.shape[0], frames.shape[1], -1).mean(-1)
        return np.stack([m.min(1), m.max(1)], axis=1).astype(np.float32)


@pytest.fixture()
def backbone_dir(tmp_path: Path):
    register_backbone("countmean", lambda spec, d, p: CountMean())
    d = tmp_path / "bb"
    d.mkdir()
    SPEC.write(d)
    CALLS.clear()
    yield d
    bb._REGISTRY.pop("countmean", None)


@pytest.fixture()
def videos(tmp_path: Path) -> Path:
    d = tmp_path / "videos"
    (d / "sub").mkdir(parents=True)
    write_video(d / "alpha.mp4", flat_frames(40, 16, 16), fps=25)  # 1.6 s -> 5 snippets
    write_video(d / "sub" / "beta.mkv", flat_frames(20, 16, 16), fps=10)  # 2.0 s -> 6
    write_audio_only(d / "gamma.m4a")  # not found by directory search (not a video ext)
    (d / "broken.mp4").write_text("not a video")
    return d


def test_extract_writes_wtal_and_resumes(tmp_path: Path, backbone_dir: Path, videos: Path,
                                         capsys) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "video,label,start,end,subset\n"
        "alpha,Jump,0.2,0.9,validation\n"
        "alpha,Run,1.0,1.5,validation\n"
        "beta,Run,,,test\n"
    )
    out = tmp_path / "ds"
    argv = ["extract", str(videos), "--backbone", str(backbone_dir), "--out", str(out),
            "--name", "Toy", "--labels", str(labels), "--no-progress"]
    assert main(argv) == 1  # one video skipped -> non-zero, but the dataset is written
    err = capsys.readouterr().err
    assert "skipped broken" in err and "not a video file" in err

    from hamnet.data.wtal import WTALDataset

    ds = WTALDataset(out, "Toy")
    assert ds.videonames == ["alpha", "beta"]
    assert ds.subsets == ["validation", "test"]
    assert ds.classlist == ["Jump", "Run"]
    assert [f.shape for f in ds.features] == [(5, 2), (6, 2)]
    assert ds.labels_all == [["Jump", "Run"], ["Run"]]
    np.testing.assert_allclose(ds.durations, [1.6, 2.0])
    report = json.loads((out / "Toy-extract.json").read_text())
    assert report["reused_from_cache"] == 0 and list(report["failed"]) == ["broken"]
    assert json.loads((out / "Toy-backbone.json").read_text())["name"] == "countmean"
    first_calls = len(CALLS)
    assert first_calls > 0

    assert main(argv) == 1  # rerun: everything from the cache, nothing re-encoded
    assert len(CALLS) == first_calls
    report = json.loads((out / "Toy-extract.json").read_text())
    assert report["reused_from_cache"] == 2
    np.testing.assert_array_equal(WTALDataset(out, "Toy").features[0], ds.features[0])


def test_cache_invalidated_when_video_changes(tmp_path: Path, backbone_dir: Path) -> None:
    v = write_video(tmp_path / "clip.mp4", flat_frames(16, 16, 16), fps=25)
    out = tmp_path / "ds"
    argv = [str(v), "--backbone", str(backbone_dir), "--out", str(out), "--no-progress"]
    assert main(["extract", *argv]) == 0
    n = len(CALLS)
    write_video(v, flat_frames(32, 16, 16), fps=25)
    os.utime(v, ns=(1, 1))  # different mtime and size
    assert main(["extract", *argv]) == 0
    assert len(CALLS) > n
    assert np.load(out / "Custom-I3D-JOINTFeatures.npy", allow_pickle=True)[0].shape == (4, 2)


def test_all_bad_is_an_error(tmp_path: Path, backbone_dir: Path, capsys) -> None:
    audio = write_audio_only(tmp_path / "a.mp4")
    rc = main(["extract", str(audio), "--backbone", str(backbone_dir), "--out",
               str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "no video could be extracted" in capsys.readouterr().err


def test_labels_json_and_duplicates(tmp_path: Path) -> None:
    gt = {"database": {"v1": {"subset": "test", "annotations": [
        {"label": "A", "segment": ["1.00", "2.50"]}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    lab = read_labels(tmp_path / "gt.json")
    assert lab["v1"].segments == [(1.0, 2.5)] and lab["v1"].labels_all == ["A"]
    (tmp_path / "bad.csv").write_text("video,label,start,end\nv1,A,3,1\n")
    with pytest.raises(DataError, match=r"bad.csv:2: need 0 <= start < end"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "b" / "x.mkv").write_bytes(b"2")
    with pytest.raises(DataError, match="share the name 'x'"):
        find_videos([str(tmp_path / "a"), str(tmp_path / "b")])
