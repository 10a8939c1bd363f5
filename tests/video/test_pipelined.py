"""The pipelined extractor: same features as the one-thread loop, bounded memory, errors and
warnings where the caller sees them, and a thread budget it respects."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers

from hamnet.errors import BundleError, VideoTooLongError  # noqa: E402
from hamnet.video.backbone import BackboneSpec, extract_features, load_backbone  # noqa: E402
from hamnet.video.decode import DecodeStats, Frame, PartialDecodeWarning  # noqa: E402
from hamnet.video.pipelined import ThreadPlan, _run_pipelined, plan_threads  # noqa: E402
from vidgen import flat_frames, level, moving_square, truncate, write_video  # noqa: E402

SPEC = BackboneSpec("mean", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8,
                    streams=("rgb",), flow_method=None, feature_dim=4)


class Mean:
    """Per snippet, the mean gray level of each frame; logs which thread ran each call."""

    parallel_snippets = True

    def __init__(self, delay: float = 0.0, stats: DecodeStats | None = None) -> None:
        self.spec, self.provider, self.feature_dim = SPEC, "numpy", 4
        self.delay, self.stats = delay, stats
        self.names: set[str] = set()
        self.ahead: list[int] = []  # frames decoded but not yet encoded, at each call
        self.seen = 0
        self._lock = threading.Lock()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        with self._lock:
            self.names.add(threading.current_thread().name)
            self.seen += frames.shape[0] * frames.shape[1]
            if self.stats is not None:
                self.ahead.append(self.stats.emitted - self.seen)
        time.sleep(self.delay)
        return frames.reshape(frames.shape[0], frames.shape[1], -1).mean(-1).astype(np.float32)


class TwoStage(Mean):
    """A backbone with ``prepare`` (workers) and ``run`` (the calling thread), like I3D."""

    def __init__(self) -> None:
        super().__init__()
        self.run_threads: set[str] = set()

    def prepare(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": frames.astype(np.float32)}

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.run_threads.add(threading.current_thread().name)
        x = inputs["x"]
        return x.reshape(x.shape[0], x.shape[1], -1).mean(-1)


def _no_pipeline_threads() -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = [t.name for t in threading.enumerate()]
        if not any(n.startswith(("hamnet-decode", "hamnet-prepare", "hamnet-convert"))
                   for n in names):
            return True
        time.sleep(0.05)
    return False


def test_thread_plan() -> None:
    assert plan_threads(1) == ThreadPlan(1, 1, 1, pipelined=False)
    assert plan_threads(2) == ThreadPlan(2, 1, 1, pipelined=True)
    assert plan_threads(8) == ThreadPlan(8, 2, 6, pipelined=True)
    assert plan_threads(8, parallel=False).workers == 1
    assert plan_threads(None).budget >= 1
    for n in range(2, 33):  # decoder threads + workers never exceed the budget
        p = plan_threads(n)
        assert p.decode + p.workers == n and p.decode >= 1 and p.workers >= 1
    assert (plan_threads(2).ffmpeg_threads, plan_threads(2).converters) == (1, 0)
    assert (plan_threads(8).ffmpeg_threads, plan_threads(8).converters) == (1, 1)
    assert (plan_threads(16).ffmpeg_threads, plan_threads(16).converters) == (2, 2)
    # networks on a device: half the budget decodes (4 FFmpeg threads + 4 converters)
    dev = plan_threads(16, decode_share=0.5)
    assert (dev.ffmpeg_threads, dev.converters, dev.workers) == (4, 4, 8)
    assert plan_threads(2, decode_share=0.9).workers == 1  # at least one worker
    with pytest.raises(ValueError, match=">= 1"):
        plan_threads(0)


@pytest.mark.parametrize("threads", [2, 4, 8])  # 8: 1 decoder + 1 converter thread
def test_same_features_spans_and_order_as_the_loop(tmp_path: Path, threads: int) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(103, 32, 24), fps=25)
    seq, _, seq_spans = extract_features(Mean(), video, batch_size=3, pipelined=False)
    b = Mean(delay=0.002)
    seen: list[float] = []
    got, info, spans = extract_features(b, video, batch_size=3, threads=threads,
                                        progress=lambda s, f: seen.append(f))
    np.testing.assert_array_equal(got, seq)
    np.testing.assert_array_equal(spans, seq_spans)
    assert got.shape == (25, 4) and info.duration == pytest.approx(103 / 25)
    expected = np.array([[level(4 * i + j) for j in range(4)] for i in range(25)])
    assert np.abs(got - expected).max() < 3  # the order survived the worker threads
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert all(n.startswith("hamnet-prepare") for n in b.names)
    assert _no_pipeline_threads()


def test_two_stage_backbone_runs_its_second_stage_in_the_calling_thread(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(40, 32, 24), fps=25)
    b = TwoStage()
    got, _, _ = extract_features(b, video, batch_size=2, threads=3)
    ref, _, _ = extract_features(Mean(), video, batch_size=2, pipelined=False)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert b.run_threads == {threading.current_thread().name}


@pytest.mark.parametrize("threads", [3, 8])
def test_motion_backbone_pipelined_equals_sequential(tmp_path: Path, threads: int) -> None:
    pytest.importorskip("cv2")
    # rotated 90 degrees and resized (160x120 -> shorter side 96): the converter threads
    # resize and rotate exactly as the decoding thread does
    video = write_video(tmp_path / "m.mp4", moving_square(90, 160, 120, speed=3), fps=25,
                        rotation=90)
    b = load_backbone("motion")
    seq, _, _ = extract_features(b, video, pipelined=False)
    got, _, _ = extract_features(b, video, threads=threads, batch_size=2)
    np.testing.assert_array_equal(got, seq)  # encode is pure: bit for bit


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """A slow backbone: decoding runs ahead by at most the queue + in-flight batches."""
    video = write_video(tmp_path / "v.mp4", flat_frames(200, 32, 24), fps=25)
    st = DecodeStats()
    b = Mean(delay=0.01, stats=st)
    extract_features(b, video, batch_size=2, threads=2, stats=st)  # 1 worker
    per_batch = 2 * 4
    # queue (2) + in flight (workers + 1 = 2) + one being stacked, + the snippet being cut
    assert max(b.ahead) <= (2 + 2 + 1) * per_batch + 4, b.ahead
    assert max(b.ahead) >= per_batch  # it did run ahead: decoding overlapped encoding


def test_decode_errors_reach_the_caller_and_threads_stop(tmp_path: Path) -> None:
    """An error while decoding (in the producer thread) is raised by the caller, after the
    batches before it; a bad backbone output stops the producer too."""

    def frames():  # what iter_frames does when a limit trips mid-stream
        for k in range(40):
            yield Frame(np.full((8, 8, 3), level(k), np.uint8), k / 25)
        raise VideoTooLongError("v.mp4: longer than the limit of 1 s (decoding reached 1.6 s)")

    done: list[float] = []
    with pytest.raises(VideoTooLongError, match="longer than the limit of 1 s"):
        _run_pipelined(Mean(), frames(), 2, plan_threads(3), 2, lambda s, f: done.append(f),
                       1.0)
    assert _no_pipeline_threads()
    video = write_video(tmp_path / "v.mp4", flat_frames(200, 32, 24), fps=25)

    class Broken(Mean):
        def encode(self, frames: np.ndarray) -> np.ndarray:
            return np.zeros((frames.shape[0], 3), np.float32)

    with pytest.raises(BundleError, match=r"shape \(2, 3\).*expected \(2, 4\)"):
        extract_features(Broken(), video, threads=3, batch_size=2)
    assert _no_pipeline_threads()


def test_partial_decode_warns_in_the_calling_thread(tmp_path: Path) -> None:
    full = write_video(tmp_path / "v.mkv", moving_square(100, 64, 48))
    cut = truncate(full, tmp_path / "cut.mkv", 0.5)
    st = DecodeStats()
    with pytest.warns(PartialDecodeWarning, match=r"partially decoded: decoded 1\.\d+ s of 4"):
        feats, _, _ = extract_features(Mean(), cut, threads=2, stats=st)
    assert st.partial and st.warning and feats.shape[0] >= 7
