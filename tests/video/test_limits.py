"""Content limits on untrusted videos: duration on decoded time (a raw ``.h264`` elementary
stream declares none, an MP4 can declare anything), width/height/pixel count from the stream
header before anything is decoded (a header claiming 16384x16384 or 16000x16000 is a
decompression bomb), and the pass-through from ``extract_features``/``predict_video``.

Every file here is real: encoded with the ffmpeg CLI or PyAV, and the "hostile" ones made by
editing real bytes (an H.264 SPS rewritten to claim another size, MP4 duration fields patched).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers

from hamnet.errors import (  # noqa: E402
    CorruptVideoError,
    UnboundedDurationError,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
)
from hamnet.video import decode  # noqa: E402
from hamnet.video.backbone import BackboneSpec, extract_features  # noqa: E402
from hamnet.video.decode import (  # noqa: E402
    DecodeStats,
    iter_frames,
    measure_duration,
    probe,
)
from vidgen import ffmpeg, write_video  # noqa: E402

# ----------------------------------------------------------------------------- test files


def raw_h264(path: Path, seconds: float, size: str = "32x32", rate: int = 25) -> Path:
    """An H.264 Annex-B elementary stream: no container, no timestamps, no duration."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "h264",
           str(path))
    return path


def _rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _ebsp(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)


class _Writer:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> None:
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, v: int) -> None:
        v += 1
        self.u(v.bit_length() - 1, 0)
        self.u(v.bit_length(), v)

    def bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def _resize_sps(rbsp: bytes, width: int, height: int) -> bytes:
    """Rewrite an SPS (H.264 7.3.2.1.1) so that it declares ``width x height`` (multiples of
    16, no cropping); every other field is copied bit for bit."""
    r, w = _Bits(rbsp), _Writer()

    def copy(n: int = 1) -> None:
        w.u(n, r.u(n))

    def copy_ue() -> None:
        w.ue(r.ue())

    profile = r.u(8)
    w.u(8, profile)
    copy(16)  # constraint flags, level_idc
    copy_ue()  # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = r.ue()
        w.ue(chroma)
        if chroma == 3:
            copy()
        copy_ue()
        copy_ue()
        copy()
        assert r.u(1) == 0, "scaling matrices are not handled"
        w.u(1, 0)
    copy_ue()  # log2_max_frame_num_minus4
    poc = r.ue()
    w.ue(poc)
    if poc == 0:
        copy_ue()
    else:
        assert poc == 2, "x264 writes POC type 0 or 2"
    copy_ue()  # max_num_ref_frames
    copy()  # gaps_in_frame_num_value_allowed_flag
    r.ue()
    r.ue()
    w.ue(width // 16 - 1)
    w.ue(height // 16 - 1)
    assert r.u(1) == 1, "frame_mbs_only expected"
    w.u(1, 1)
    copy()  # direct_8x8_inference_flag
    if r.u(1):  # frame cropping: dropped
        for _ in range(4):
            r.ue()
    w.u(1, 0)
    while r.pos < len(rbsp) * 8:  # VUI and the trailing bits, verbatim
        copy()
    return w.bytes()


def h264_claiming(path: Path, width: int, height: int, tmp: Path) -> Path:
    """A real 16x16 H.264 stream whose SPS was rewritten to claim ``width x height``: what a
    decompression bomb looks like to a demuxer (a few hundred bytes that make a decoder
    allocate ``width * height * 1.5`` bytes per reference picture)."""
    src = raw_h264(tmp / f"src_{path.stem}.h264", 0.2, size="16x16")
    parts = re.split(b"(\x00\x00\x00\x01|\x00\x00\x01)", src.read_bytes())
    out = bytearray()
    for part in parts:
        if part and part[:3] != b"\x00\x00\x01" and part[:4] != b"\x00\x00\x00\x01" \
                and part[0] & 0x1F == 7:
            part = part[:1] + _ebsp(_resize_sps(_rbsp(part[1:]), width, height))
        out += part
    path.write_bytes(bytes(out))
    return path


def mp4_declaring(path: Path, seconds: int, declared_s: int) -> Path:
    """A ``seconds`` long MP4 (no edit list) whose mvhd/tkhd/mdhd say ``declared_s``."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=32x32:rate=25:duration={seconds}", "-c:v",
           "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-use_editlist", "0",
           str(path))
    data = bytearray(path.read_bytes())

    def box(name: bytes) -> int:
        i = data.find(name)
        assert i > 0 and data.count(name) == 1 and data[i + 4] == 0, name  # version 0
        return i

    mvhd, tkhd, mdhd = box(b"mvhd"), box(b"tkhd"), box(b"mdhd")
    movie_scale = struct.unpack_from(">I", data, mvhd + 16)[0]
    media_scale = struct.unpack_from(">I", data, mdhd + 16)[0]
    struct.pack_into(">I", data, mvhd + 20, declared_s * movie_scale)
    struct.pack_into(">I", data, tkhd + 24, declared_s * movie_scale)
    struct.pack_into(">I", data, mdhd + 20, declared_s * media_scale)
    path.write_bytes(bytes(data))
    return path


class _Gray:
    """Test backbone: mean gray level per frame (D = snippet_frames)."""

    spec = BackboneSpec("gray", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8,
                        streams=("rgb",), normalisation="none", flow_method=None,
                        feature_dim=4)
    provider = "numpy"
    feature_dim = 4

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(frames.shape[0], frames.shape[1], -1).mean(-1).astype(np.float32)


# ----------------------------------------------------------------------------- duration


def test_raw_h264_is_measured_not_taken_as_zero(tmp_path: Path) -> None:
    video = raw_h264(tmp_path / "short.h264", 2.0)
    assert probe(video).duration == 0.0  # unchanged default: nothing is declared
    assert measure_duration(video) == pytest.approx(2.0, abs=1e-9)
    info = probe(video, max_duration_s=10)
    assert info.duration == pytest.approx(2.0, abs=1e-9)
    assert info.num_frames_est == 50 and (info.width, info.height) == (32, 32)
    # Exactly at the limit is within it, and decoding agrees with the measurement.
    assert probe(video, max_duration_s=2.0).duration == pytest.approx(2.0)
    st = DecodeStats()
    frames = list(iter_frames(video, 25.0, stats=st, max_duration_s=2.0))
    assert len(frames) == 50 and st.end_time == pytest.approx(2.0)


def test_long_raw_h264_is_rejected_by_probe_and_while_decoding(tmp_path: Path) -> None:
    video = raw_h264(tmp_path / "long.h264", 12.0)
    with pytest.raises(VideoTooLongError, match=r"limit of 5 s") as e:
        probe(video, max_duration_s=5)
    assert e.value.code == "video_too_long"
    with pytest.raises(VideoTooLongError):
        measure_duration(video, 5)
    assert measure_duration(video) == pytest.approx(12.0)

    st, got = DecodeStats(), []
    with pytest.raises(VideoTooLongError, match=r"decoding reached 5\.04 s"):
        for frame in iter_frames(video, 25.0, stats=st, max_duration_s=5):
            got.append(frame.t)
    assert got[-1] <= 5.0 and st.decoded <= 127  # stopped at the first frame past 5 s

    with pytest.raises(VideoTooLongError):
        extract_features(_Gray(), video, max_duration_s=5)
    feats, info, _ = extract_features(_Gray(), video, max_duration_s=20)
    assert info.duration == pytest.approx(12.0) and feats.shape == (75, 4)


def test_measuring_a_minute_of_raw_video_is_fast(tmp_path: Path) -> None:
    import time

    video = raw_h264(tmp_path / "minute.h264", 60.0, size="64x48")
    t0 = time.perf_counter()
    assert measure_duration(video) == pytest.approx(60.0)
    with pytest.raises(VideoTooLongError):
        measure_duration(video, 30)
    assert time.perf_counter() - t0 < 1.0  # demuxing only (about 10 ms here)


def test_container_that_understates_its_duration_is_caught_while_decoding(
    tmp_path: Path,
) -> None:
    video = mp4_declaring(tmp_path / "liar.mp4", seconds=10, declared_s=1)
    assert probe(video).duration == pytest.approx(1.0)  # what the header says
    assert probe(video, max_duration_s=5).duration == pytest.approx(1.0)
    assert measure_duration(video) == pytest.approx(10.0)  # what the packets say
    assert len(list(iter_frames(video, 25.0))) == 250  # no limit: all of it
    got = []
    with pytest.raises(VideoTooLongError, match=r"limit of 5 s"):
        got.extend(f.t for f in iter_frames(video, 25.0, max_duration_s=5))
    assert 120 <= len(got) <= 126 and got[-1] <= 5.0  # the frames before the limit
    # A declared duration over the limit is rejected up front, without measuring.
    with pytest.raises(VideoTooLongError, match=r"1\.00 s long \(declared\)"):
        probe(video, max_duration_s=0.5)


def test_frames_stacked_on_one_timestamp_are_bounded_by_count(tmp_path: Path) -> None:
    """1100 frames all presented at t = 0: decoded time never grows, yet decoding them is
    work; more frames than the limit holds at 1000 fps is too long."""
    path = tmp_path / "stacked.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        img = np.zeros((16, 16, 3), np.uint8)
        for i in range(1100):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                packet.pts = packet.dts = 0
                out.mux(packet)
        for packet in stream.encode():
            packet.pts = packet.dts = 0
            out.mux(packet)
    st = DecodeStats()
    assert len(list(iter_frames(path, 25.0, stats=st))) == 1 and st.decoded == 1100
    st = DecodeStats()
    with pytest.raises(VideoTooLongError, match=r"more than 0\.5 s of video"):
        list(iter_frames(path, 25.0, stats=st, max_duration_s=0.5))
    assert st.decoded == 1017


def test_duration_that_cannot_be_bounded() -> None:
    """Packets without timestamps or durations in a stream without a frame rate: nothing
    says how long they last (the meter is what measure_duration feeds every packet to)."""
    limits = decode._Limits(max_duration_s=60.0)
    meter = decode._DurationMeter(Fraction(1, 90000), 0.0, limits, "x.es")
    with pytest.raises(UnboundedDurationError, match="cannot be bounded") as e:
        meter.add(None, None, None)
    assert e.value.code == "duration_unknown"
    # The same packets are bounded by a frame rate, or by their own durations...
    meter = decode._DurationMeter(Fraction(1, 90000), 25.0, limits, "x.es")
    for _ in range(50):
        meter.add(None, None, None)
    assert meter.span == pytest.approx(2.0)
    meter = decode._DurationMeter(Fraction(1, 90000), 0.0, limits, "x.es")
    for _ in range(10):
        meter.add(None, None, 9000)
    assert meter.span == pytest.approx(1.0)
    # ...and timestamps win over counting (B-frame order: the earliest pts is not first).
    meter = decode._DurationMeter(Fraction(1, 90000), 25.0, limits, "x.es")
    for pts in (3600, 0, 7200, 10800):
        meter.add(pts, None, 3600)
    assert meter.span == pytest.approx(0.16)
    with pytest.raises(VideoTooLongError, match=r"limit of 60 s"):
        meter.add(90000 * 61, None, 3600)


# ----------------------------------------------------------------------------- size


@pytest.mark.parametrize("suffix", ["h264", "ts"])
def test_header_claiming_16384x16384_is_rejected_without_decoding(
    tmp_path: Path, suffix: str
) -> None:
    bomb = h264_claiming(tmp_path / "bomb.h264", 16384, 16384, tmp_path)
    if suffix == "ts":
        plain = bomb
        bomb = tmp_path / "bomb.ts"
        ffmpeg("-f", "h264", "-i", str(plain), "-c", "copy", str(bomb))
    # Unchanged without limits: FFmpeg drops the oversized header, the stream has no size.
    with pytest.raises(CorruptVideoError, match="zero size"):
        probe(bomb)
    with pytest.raises(VideoTooLargeError, match="16384x16384") as e:
        probe(bomb, max_dimension=8192, max_duration_s=3600)
    assert e.value.code == "resolution_too_large"
    st = DecodeStats()
    with pytest.raises(VideoTooLargeError, match="16384x16384"):
        list(iter_frames(bomb, 25.0, stats=st, max_pixels=8192 * 8192))
    assert st.decoded == 0


def test_16000x16000_header_is_rejected_before_anything_is_allocated(tmp_path: Path) -> None:
    """16000x16000 is within what FFmpeg accepts: opening the file without a pixel cap
    decodes a 384 MB picture (1.2 GB peak) while probing the stream. With limits, the
    process must not grow by even one such picture."""
    bomb = h264_claiming(tmp_path / "bomb16000.h264", 16000, 16000, tmp_path)
    code = (
        "import json, resource, sys\n"
        "from hamnet.video.decode import probe, iter_frames\n"
        "from hamnet.errors import VideoError\n"
        "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "before, out = rss(), []\n"
        "for call in (lambda: probe(sys.argv[1], max_dimension=8192),\n"
        "             lambda: list(iter_frames(sys.argv[1], 25.0, max_dimension=8192))):\n"
        "    try:\n"
        "        call()\n"
        "    except VideoError as e:\n"
        "        out.append(e.code)\n"
        "print(json.dumps({'codes': out, 'grew_mb': rss() - before}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True,
                         text=True, timeout=60, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["codes"] == ["resolution_too_large"] * 2
    assert got["grew_mb"] < 200, got  # one 16000x16000 yuv420p picture is 366 MiB


def test_width_height_and_pixel_limits_on_a_normal_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", [np.full((48, 64, 3), 100, np.uint8)] * 5)
    assert probe(video, max_dimension=64, max_pixels=64 * 48).width == 64
    with pytest.raises(VideoTooLargeError, match=r"64x48 pictures exceed the limit of 48 px"):
        probe(video, max_dimension=48)
    with pytest.raises(VideoTooLargeError, match=r"\(3072 pixels\) exceed the limit of 3071"):
        probe(video, max_pixels=64 * 48 - 1)
    st = DecodeStats()
    with pytest.raises(VideoTooLargeError):
        list(iter_frames(video, 25.0, stats=st, max_dimension=63))
    assert st.decoded == 0
    assert len(list(iter_frames(video, 25.0, max_dimension=64, max_pixels=3072))) == 5
    with pytest.raises(VideoTooLargeError):
        extract_features(_Gray(), video, max_pixels=1000)
    with pytest.raises(ValueError, match="max_dimension"):
        probe(video, max_dimension=0)


def test_resolution_growing_mid_stream_is_caught_before_conversion(tmp_path: Path) -> None:
    """The header (first piece: 32x24) is within the limit; the second piece (48x32) is not,
    and is refused when its first picture is decoded."""
    a, b = tmp_path / "a.ts", tmp_path / "b.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=0.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(a))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=25:duration=0.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-output_ts_offset", "0.4", str(b))
    both = tmp_path / "ab.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    assert probe(both, max_dimension=40).width == 32
    got = []
    with pytest.raises(VideoTooLargeError, match="48x32"):
        got.extend(f.image.shape for f in iter_frames(both, 25.0, max_dimension=40))
    assert 0 < len(got) <= 10 and set(got) == {(24, 32, 3)}


# ----------------------------------------------------------------------------- predict_video


def test_predict_video_passes_the_limits_down(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
    from hamnet import pipeline
    from hamnet.bundle import write_bundle
    from hamnet.video import backbone as bb
    from headgen import write_head

    bb.register_backbone("gray_limits", lambda spec, d, p: _Gray())
    try:
        spec = BackboneSpec("gray_limits", **{k: v for k, v in _Gray.spec.to_dict().items()
                                              if k != "name"})
        head = write_head(tmp_path / "head.onnx", 4, 2)
        bundle = write_bundle(tmp_path / "bundle", head, ["a", "b"], spec, name="t")
        video = raw_h264(tmp_path / "clip.h264", 3.0)
        res = pipeline.predict_video(bundle, video, max_duration_s=10, max_dimension=64,
                                     max_pixels=64 * 64)
        assert res["video"]["duration"] == pytest.approx(3.0)
        for kw, err in ((dict(max_duration_s=2), VideoTooLongError),
                        (dict(max_dimension=16), VideoTooLargeError)):
            with pytest.raises(err) as e:
                pipeline.predict_video(bundle, video, **kw)
            assert str(tmp_path) not in str(e.value) and "clip.h264" in str(e.value)
            assert isinstance(e.value, VideoError)
    finally:
        bb._REGISTRY.pop("gray_limits", None)
        pipeline.clear_caches()
