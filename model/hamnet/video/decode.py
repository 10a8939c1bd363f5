"""Streaming video decoding with PyAV, resampled to a fixed frame rate by timestamps.

Why timestamps and not frame counting: HAM-Net features are defined at 25 fps (one 16-frame
snippet = 0.64 s). Phone videos are often variable-frame-rate and 30/60 fps; counting decoded
frames would stretch or squeeze time and put every detected action at the wrong second. For
each output time ``k / fps`` we take the latest decoded frame whose presentation time is
``<= k / fps`` (the first frame for times before it), which is what ``ffmpeg -vf fps=25``
does up to rounding and is exact for constant-rate input at the same fps.

Why streaming: a frame is converted to RGB only when it is emitted, and only the previous
decoded frame is kept, so memory does not grow with video length and frames that the
resampling drops (60 -> 25 fps) are never converted.

Errors are domain exceptions (:mod:`hamnet.errors`) with the file name in the message: not a
video, no video stream, corrupt/truncated (partial decodes warn with
:class:`PartialDecodeWarning` and keep what was decoded; nothing decodable raises).

Content limits (untrusted uploads): :func:`probe`, :func:`iter_frames` and
:func:`measure_duration` take ``max_duration_s``/``max_dimension``/``max_pixels``.

* Size is decided from the stream header, before a picture is decoded, and FFmpeg itself is told
  to refuse pictures much larger than the limits (``AVCodecContext.max_pixels``), so a header
  that claims 16000x16000 costs neither a 400 MB frame nor the decode FFmpeg does while opening.
* Duration is enforced on *decoded* presentation time (relative to the first frame) while
  decoding, never on what the container declares: a raw ``.h264`` elementary stream declares
  nothing, and an MP4 can declare anything. Timestamp games (all frames at one instant) are
  bounded too, by a frame count: at most ``_MAX_FRAME_RATE`` frames per allowed second.
* :func:`measure_duration` bounds a file that declares no duration by demuxing its packets
  without decoding (milliseconds for a minute of video), from packet timestamps or, when there
  are none, packet durations / the frame rate; a file with neither cannot be bounded.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from hamnet.errors import (
    CorruptVideoError,
    NotAVideoError,
    NoVideoStreamError,
    UnboundedDurationError,
    VideoError,
    VideoTooLargeError,
    VideoTooLongError,
)

log = logging.getLogger(__name__)

_EPS = 1e-6  # seconds; timestamps are rationals converted to float
_MAX_PROBE_PACKETS = 500  # packets read by probe() to find the first decodable frame
_MAX_CONSECUTIVE_ERRORS = 100  # undecodable packets in a row before we give up on a file
_LIMIT_TOLERANCE_S = 1e-3  # a video "exceeds" max_duration_s only by more than this
# Frames per second of allowed duration before a stream counts as too long whatever its
# timestamps say (the service rejects frame rates above 1000 as implausible, too).
_MAX_FRAME_RATE = 1000.0
# FFmpeg's own picture-size cap is a memory backstop with headroom over our exact check (FFmpeg
# checks stride-aligned widths): pixels * 5/4 + this.
_PIXEL_CAP_SLACK = 1 << 16
# What FFmpeg logs when it refuses a picture size (libavutil/imgutils.c).
_SIZE_COMPLAINT = re.compile(r"Picture size (\d+)x(\d+) (?:is invalid|exceeds)")
_log_capture_lock = threading.Lock()

# Magic numbers of common video containers: a file that starts like one of these but cannot be
# opened is corrupt/truncated, not "not a video".
_CONTAINER_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"OggS"),
)


class PartialDecodeWarning(UserWarning):
    """Part of the video could not be decoded; the decodable part is used."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream.

    ``width``/``height`` are the *display* size (after rotation). ``rotation`` is the clockwise
    rotation in degrees (0/90/180/270) applied to decoded pictures to display them upright.
    ``duration`` is 0.0 when neither stream nor container declares one.
    """

    duration: float
    fps: float
    width: int
    height: int
    rotation: int
    num_frames_est: int
    codec: str

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "duration": self.duration,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "num_frames_est": self.num_frames_est,
            "codec": self.codec,
        }


@dataclass(frozen=True)
class Frame:
    """One resampled frame: ``image`` uint8 ``[H, W, 3]`` RGB, ``t`` its output time (k/fps)."""

    image: np.ndarray
    t: float


@dataclass
class DecodeStats:
    """Filled in by :func:`iter_frames` while it runs (pass one in to read it afterwards)."""

    decoded: int = 0  # frames the decoder produced
    emitted: int = 0  # frames yielded after resampling
    bad_packets: int = 0
    end_time: float = 0.0  # end of the last decoded frame, seconds from the first frame
    partial: bool = False
    messages: list[str] = field(default_factory=list)
    warning: str | None = None  # the PartialDecodeWarning message, when there is one


# ----------------------------------------------------------------------------- opening


def _reason(e: Exception) -> str:
    """FFmpeg's reason without the file name PyAV appends (messages name the file once, as
    the caller gave it, so a service can replace it with a public name)."""
    reason = getattr(e, "strerror", None)
    return str(reason) if reason else str(e)


def _looks_like_container(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return any(head[off : off + len(m)] == m for off, m in _CONTAINER_MAGIC)


def _open(
    path: str | Path, options: dict[str, str] | None = None
) -> av.container.InputContainer:
    """Open a container, turning every failure into a precise :class:`VideoError`.
    ``options`` go to the demuxer and to the decoders FFmpeg opens while probing streams."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: file not found")
    if not p.is_file():  # directories, FIFOs (which would block forever), devices
        raise NotAVideoError(f"{p}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise NotAVideoError(f"{p}: empty file (0 bytes)")
    try:
        return av.open(str(p), mode="r", timeout=30.0, options=options)
    except av.error.FFmpegError as e:
        if _looks_like_container(p):
            raise CorruptVideoError(
                f"{p}: looks like a video container but cannot be opened (truncated or "
                f"corrupt; {size} bytes): {_reason(e)}"
            ) from None
        raise NotAVideoError(
            f"{p}: not a video file (no known container format): {_reason(e)}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{p}: cannot read file: {_reason(e)}") from None


@dataclass(frozen=True)
class _Limits:
    """The caller's content limits (``None``: unbounded)."""

    max_duration_s: float | None = None
    max_dimension: int | None = None
    max_pixels: int | None = None

    @classmethod
    def make(
        cls,
        max_duration_s: float | None,
        max_dimension: int | None,
        max_pixels: int | None,
    ) -> _Limits | None:
        for name, v in (("max_duration_s", max_duration_s), ("max_dimension", max_dimension),
                        ("max_pixels", max_pixels)):
            try:
                ok = v is None or (not isinstance(v, bool) and 0 < float(v) < math.inf)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{name} must be None or a finite number > 0, got {v!r}")
        if max_duration_s is None and max_dimension is None and max_pixels is None:
            return None
        return cls(
            None if max_duration_s is None else float(max_duration_s),
            None if max_dimension is None else int(max_dimension),
            None if max_pixels is None else int(max_pixels),
        )

    @property
    def sized(self) -> bool:
        return self.max_dimension is not None or self.max_pixels is not None

    @property
    def pixel_cap(self) -> int | None:
        """FFmpeg's ``max_pixels`` (per picture): generous over ours, it is only a backstop."""
        caps = [c for c in (self.max_pixels, self.max_dimension and self.max_dimension ** 2)
                if c]
        if not caps:
            return None
        return min(caps) + min(caps) // 4 + _PIXEL_CAP_SLACK

    @property
    def open_options(self) -> dict[str, str] | None:
        cap = self.pixel_cap
        return None if cap is None else {"max_pixels": str(cap)}

    @property
    def frame_budget(self) -> float:
        """Most frames (decoded or demuxed) a video within ``max_duration_s`` may have."""
        if self.max_duration_s is None:
            return math.inf
        return _MAX_FRAME_RATE * max(1.0, self.max_duration_s) + 16

    def check_size(self, width: int, height: int, path: str | Path) -> None:
        md, mp = self.max_dimension, self.max_pixels
        if md is not None and (width > md or height > md):
            raise VideoTooLargeError(
                f"{path}: {width}x{height} pictures exceed the limit of {md} px on either side"
            )
        if mp is not None and width * height > mp:
            raise VideoTooLargeError(
                f"{path}: {width}x{height} pictures ({width * height} pixels) exceed the limit "
                f"of {mp} pixels"
            )

    def check_decoded_time(self, t: float, path: str | Path) -> None:
        if self.max_duration_s is not None and t > self.max_duration_s + _LIMIT_TOLERANCE_S:
            raise VideoTooLongError(
                f"{path}: longer than the limit of {self.max_duration_s:g} s (decoding reached "
                f"{t:.2f} s)"
            )

    def check_count(self, n: int, what: str, path: str | Path) -> None:
        if n > self.frame_budget:
            raise VideoTooLongError(
                f"{path}: over {n - 1} {what}, more than {self.max_duration_s:g} s of video "
                f"can hold at {_MAX_FRAME_RATE:g} per second (whatever the timestamps say)"
            )


def _ffmpeg_size_complaint(path: str | Path, options: dict[str, str] | None) -> str | None:
    """Re-open a file whose video stream came out 0x0 and return the picture size FFmpeg
    refused (``"16384x16384"``), if that is why. FFmpeg drops such a header (a picture over
    its own ``INT_MAX`` bound or our ``max_pixels``) and only says so in its log, so the log is
    captured for this one call (PyAV keeps FFmpeg's log off by default: it is switched on for
    the duration, under a lock). Only reached for files that are already unusable."""
    import av.logging as avlog

    with _log_capture_lock:
        level, skip = avlog.get_level(), avlog.get_skip_repeated()
        if level is None or level < avlog.ERROR:
            avlog.set_level(avlog.ERROR)
        avlog.set_skip_repeated(False)  # a repeat of the last message would not be captured
        try:
            with avlog.Capture(local=True) as logs:
                try:
                    av.open(str(path), mode="r", timeout=30.0, options=options).close()
                except (av.error.FFmpegError, OSError, UnicodeDecodeError):
                    pass
        finally:
            avlog.set_skip_repeated(skip)
            avlog.set_level(level)
    for _lvl, _name, message in logs:
        m = _SIZE_COMPLAINT.search(message)
        if m:
            return f"{m[1]}x{m[2]}"
    return None


def _video_stream(
    container: av.container.InputContainer,
    path: str | Path,
    limits: _Limits | None = None,
    options: dict[str, str] | None = None,
) -> av.VideoStream:
    """The first video stream; with size limits, its header size is checked here, before any
    picture is decoded (``options``: what the container was opened with)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(
            f"{path}: no video stream (streams found: {', '.join(kinds)})"
        )
    stream = container.streams.video[0]
    cc = stream.codec_context
    if not cc.width or not cc.height:
        if limits is not None and limits.sized:
            size = _ffmpeg_size_complaint(path, options)
            if size is not None:
                raise VideoTooLargeError(
                    f"{path}: the video stream header declares {size} pictures, which the "
                    "decoder refuses to allocate"
                )
        raise CorruptVideoError(
            f"{path}: video stream has zero size ({cc.width}x{cc.height})"
        )
    if limits is not None:
        limits.check_size(int(cc.width), int(cc.height), path)
        cap = limits.pixel_cap
        if cap is not None:  # the decoder is opened lazily, on the first packet
            cc.options = dict(cc.options or {}) | {"max_pixels": str(cap)}
    return stream


def _tag_rotation(stream: av.VideoStream) -> int:
    """Legacy ``rotate`` metadata tag (clockwise degrees), 0 when absent/invalid."""
    try:
        return int(float(stream.metadata.get("rotate", 0))) % 360
    except (TypeError, ValueError):
        return 0


def _frame_rotation(frame: av.VideoFrame) -> int:
    """Clockwise display rotation from the frame's display matrix (PyAV reports the
    counter-clockwise angle of the matrix), snapped to a multiple of 90 degrees."""
    try:
        ccw = frame.rotation
    except Exception:  # noqa: BLE001 - very old PyAV / exotic side data
        return 0
    return (-int(round(ccw / 90.0)) * 90) % 360


def _stream_fps(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return 0.0


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    return 0.0


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream):
    """Decode frames until the first one (bounded number of packets); None if none."""
    errors = 0
    for n, packet in enumerate(container.demux(stream)):
        if n >= _MAX_PROBE_PACKETS:
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            errors += 1
            continue
        if frames:
            return frames[0]
    return None


class _DurationMeter:
    """How long a stream is, from its packets alone (see :func:`measure_duration`).

    Integer arithmetic in the stream's time base (1500 packets of 1/25 s are 60 s, not
    59.99999999999); packets without a duration count ``1 / fps`` each.
    """

    def __init__(
        self, time_base, fps: float, limits: _Limits, path: str | Path
    ) -> None:
        self.num, self.den = (
            (time_base.numerator, time_base.denominator) if time_base else (0, 1)
        )
        self.fps, self.limits, self.path = fps, limits, path
        self.count = 0  # packets
        self.timed = 0  # packets with a timestamp
        self.first = 0  # earliest timestamp (B-frames: not the first packet's), ticks
        self.end = 0  # latest timestamp + that packet's duration, ticks
        self.end_open = False  # the packet that ends last has no duration: add 1 / fps
        self.ticks = 0  # sum of packet durations, ticks
        self.nominal = 0  # packets without a duration

    def _seconds(self, ticks: int) -> float:
        return ticks * self.num / self.den

    @property
    def span(self) -> float:
        ts = 0.0
        if self.timed:
            ts = self._seconds(self.end - self.first)
            if self.end_open and self.fps > 0:
                ts += 1.0 / self.fps
            if self.timed == self.count:  # timestamps everywhere: they are the truth
                return ts
        nominal = self.nominal / self.fps if self.nominal else 0.0
        return max(ts, self._seconds(self.ticks) + nominal)  # the frames must fit, too

    def add(self, pts: int | None, dts: int | None, duration: int | None) -> None:
        self.count += 1
        dur = int(duration) if duration and duration > 0 and self.num else 0
        if dur:
            self.ticks += dur
        elif self.fps > 0:
            self.nominal += 1
        ts = pts if pts is not None else dts
        if ts is not None and self.num:
            if not self.timed or ts < self.first:
                self.first = ts
            if not self.timed or ts + dur > self.end:
                self.end, self.end_open = ts + dur, not dur
            self.timed += 1
        elif not dur and not self.fps > 0:
            raise UnboundedDurationError(
                f"{self.path}: the duration cannot be bounded: the container declares none "
                "and the video packets have neither timestamps, durations nor a frame rate"
            )
        limit = self.limits.max_duration_s
        if limit is not None:
            span = self.span
            if span > limit + _LIMIT_TOLERANCE_S:
                raise VideoTooLongError(
                    f"{self.path}: longer than the limit of {limit:g} s (its first "
                    f"{self.count} packets already span {span:.2f} s)"
                )
            self.limits.check_count(self.count, "packets", self.path)


def _measure(path: str | Path, max_duration_s: float | None) -> tuple[float, int]:
    """``(span in seconds, number of video packets)``, see :func:`measure_duration`."""
    limits = _Limits.make(max_duration_s, None, None) or _Limits()
    # Only packets are needed: FFmpeg may not allocate a single picture while it probes the
    # streams (which is also faster: it then decodes nothing at all).
    container = _open(path, {"max_pixels": "1"})
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(
                f"{path}: no video stream (streams found: {', '.join(kinds)})"
            )
        stream = container.streams.video[0]
        meter = _DurationMeter(stream.time_base, _stream_fps(stream), limits, path)
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # damaged container: decoding stops here, too
                break
            if packet.size:  # the empty packet at the end is a flush marker, not a frame
                meter.add(packet.pts, packet.dts, packet.duration)
        return meter.span, meter.count
    finally:
        container.close()


def measure_duration(path: str | Path, limit_s: float | None = None) -> float:
    """Seconds from the first video frame to the end of the last, from the demuxed packets
    alone (nothing is decoded): for files whose container declares no duration (raw
    ``.h264``/``.hevc``/``.m2v`` elementary streams, some ``.ts``).

    The span of the packet timestamps (earliest presentation time to the latest one plus its
    duration), or, for packets without timestamps, the sum of their durations or ``1 / fps``
    each, which is the time the decoder will assign them. Stops reading as soon as the span
    exceeds ``limit_s`` (or the packets outnumber what ``limit_s`` can hold at
    ``_MAX_FRAME_RATE``) and raises :class:`VideoTooLongError`; raises
    :class:`UnboundedDurationError` when a packet has neither a timestamp, a duration nor a
    frame rate to count it with.
    """
    return _measure(path, limit_s)[0]


def probe(
    path: str | Path,
    *,
    max_duration_s: float | None = None,
    max_dimension: int | None = None,
    max_pixels: int | None = None,
) -> VideoInfo:
    """Read the container header and decode the first frame (which is how we learn the
    display rotation, and proves that at least something is decodable).

    With limits (for untrusted files): the header's picture size is checked against
    ``max_dimension`` (either side) and ``max_pixels`` before any picture is decoded
    (:class:`VideoTooLargeError`), and FFmpeg refuses to allocate much larger ones. With
    ``max_duration_s``, a declared duration above it raises :class:`VideoTooLongError`, and a
    file that declares none is measured (:func:`measure_duration`): ``duration`` is then the
    measured one and ``num_frames_est`` the number of packets. Without limits, the behaviour is
    unchanged (``duration`` 0.0 when nothing is declared). The limits only make the answer
    honest up front: :func:`iter_frames` enforces them again on what it decodes.
    """
    limits = _Limits.make(max_duration_s, max_dimension, max_pixels)
    options = limits.open_options if limits is not None else None
    container = _open(path, options)
    try:
        stream = _video_stream(container, path, limits, options)
        cc = stream.codec_context
        fps = _stream_fps(stream)
        duration = _declared_duration(container, stream)
        if stream.frames and stream.frames > 0:
            num = int(stream.frames)
        else:
            num = int(round(duration * fps)) if fps else 0
        if limits is not None and limits.max_duration_s is not None:
            if duration > limits.max_duration_s + _LIMIT_TOLERANCE_S:
                raise VideoTooLongError(
                    f"{path}: {duration:.2f} s long (declared), over the limit of "
                    f"{limits.max_duration_s:g} s"
                )
            if duration <= 0:
                duration, packets = _measure(path, limits.max_duration_s)
                if num <= 0:
                    num = packets
        try:
            first = _first_frame(container, stream)
        except av.error.FFmpegError as e:
            raise CorruptVideoError(
                f"{path}: cannot read the video stream: {_reason(e)}"
            ) from None
        if first is None:
            raise CorruptVideoError(f"{path}: no decodable video frame")
        if limits is not None:
            limits.check_size(int(first.width), int(first.height), path)
        rotation = _frame_rotation(first) or _tag_rotation(stream)
        w, h = first.width or cc.width, first.height or cc.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(
            duration=duration,
            fps=fps,
            width=int(w),
            height=int(h),
            rotation=rotation,
            num_frames_est=num,
            codec=str(cc.name),
        )
    finally:
        container.close()


# ----------------------------------------------------------------------------- geometry


def output_size(
    width: int, height: int, resize_shorter: int | None, crop: int | None
) -> tuple[int, int, int, int]:
    """``(resized_w, resized_h, out_w, out_h)`` for a display-size ``width x height`` picture.

    The shorter side becomes ``resize_shorter`` (aspect kept, long side rounded); if the
    result would be smaller than ``crop`` the shorter side becomes ``crop`` instead, because a
    centre crop must never read outside the picture.
    """
    if width < 1 or height < 1:
        raise VideoError(f"invalid frame size {width}x{height}")
    short = min(width, height)
    target = resize_shorter if resize_shorter is not None else short
    if crop is not None:
        target = max(target, crop)
    if target == short:
        rw, rh = width, height
    else:
        scale = target / short
        if width <= height:
            rw, rh = target, max(target, int(round(height * scale)))
        else:
            rw, rh = max(target, int(round(width * scale))), target
    if crop is None:
        return rw, rh, rw, rh
    return rw, rh, crop, crop


def center_crop(image: np.ndarray, crop: int | None) -> np.ndarray:
    """Centre ``crop x crop`` window (top/left offsets rounded down, like torchvision)."""
    if crop is None:
        return image
    h, w = image.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return image[top : top + crop, left : left + crop]


def _to_rgb(
    frame: av.VideoFrame, rotation: int, size: tuple[int, int], crop: int | None
) -> np.ndarray:
    """Decoded picture -> upright uint8 RGB of display size ``size`` (bilinear resize in
    swscale when needed; a mid-stream resolution change is resized to the first frame's
    geometry so every output frame has the same shape), then centre-cropped."""
    rw, rh = size
    if rotation in (90, 270):  # resize before rotating: the stored picture is transposed
        rw, rh = rh, rw
    if (frame.width, frame.height) == (rw, rh):
        rgb = frame.to_ndarray(format="rgb24")
    else:
        rgb = frame.reformat(
            width=rw, height=rh, format="rgb24", interpolation="BILINEAR"
        ).to_ndarray()
    if rotation:
        rgb = np.rot90(rgb, k=-(rotation // 90))  # negative k = clockwise
    return np.ascontiguousarray(center_crop(rgb, crop))


def _to_shared_rgb(
    frame: av.VideoFrame, rotation: int, size: tuple[int, int], crop: int | None
) -> np.ndarray:
    rgb = _to_rgb(frame, rotation, size, crop)
    rgb.setflags(write=False)  # shared by repeated output frames
    return rgb


# ----------------------------------------------------------------------------- frames


def iter_frames(
    path: str | Path,
    fps: float,
    resize_shorter: int | None = None,
    crop: int | None = None,
    max_seconds: float | None = None,
    threads: int = 0,
    stats: DecodeStats | None = None,
    *,
    max_duration_s: float | None = None,
    max_dimension: int | None = None,
    max_pixels: int | None = None,
    warn: bool = True,
    convert_pool: Executor | None = None,
) -> Iterator[Frame]:
    """Yield frames resampled to ``fps``: frame k has ``t = k / fps`` and shows the latest
    decoded picture presented at or before ``t``; the last output time is the last one before
    the end of the last decoded frame. Frames are upright (rotation metadata applied), resized
    so the shorter side is ``resize_shorter`` and centre-cropped to ``crop`` (see
    :func:`output_size`).

    Raises :class:`VideoError` subclasses for files that yield nothing; warns with
    :class:`PartialDecodeWarning` when decoding stops early or packets are skipped.

    Limits (``None``: unbounded): :class:`VideoTooLongError` as soon as a decoded frame's
    presentation time (from the first frame) or the end of the last one exceeds
    ``max_duration_s``, whatever the container declares, or more frames are decoded than
    ``max_duration_s`` can hold; :class:`VideoTooLargeError` when the stream header, or any
    decoded picture (a mid-stream size change), is wider or higher than ``max_dimension`` or
    has more than ``max_pixels`` pixels, checked before a picture is converted (and the
    header before anything is decoded). Frames already yielded stay valid; the error ends the
    iteration. ``max_seconds`` (analyse only the start) is not a limit: decoding stops there.

    ``threads``: FFmpeg decoder threads (frame and slice threading; 0 lets FFmpeg pick one per
    core). ``warn=False`` leaves the partial-decode warning to the caller: the message is in
    ``stats.warning`` (a decoder running in a producer thread must not warn there, because
    warning filters and ``pytest.warns`` belong to the consumer's thread).

    ``convert_pool``: convert (resize, rotate, crop) pictures in these threads instead of the
    decoding one; each ``Frame.image`` is then a ``Future`` of the array, in output order
    (the pipelined extractor resolves them a few frames behind, so conversions of large
    pictures run in parallel while FFmpeg decodes the next ones; swscale releases the GIL).
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    limits = _Limits.make(max_duration_s, max_dimension, max_pixels)
    st = stats if stats is not None else DecodeStats()
    options = limits.open_options if limits is not None else None
    container = _open(path, options)
    try:
        stream = _video_stream(container, path, limits, options)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        declared = _declared_duration(container, stream)
        src_fps = _stream_fps(stream) or fps
        # Bound the output even if timestamps are garbage (a pts far in the future would
        # otherwise make us repeat the last frame for "hours"): stop a minute (or 10 %) past
        # the declared duration.
        hard_end = declared + max(60.0, 0.1 * declared) if declared > 0 else math.inf
        rotation: int | None = None
        size: tuple[int, int] = (0, 0)  # display size after resizing, set by the first frame
        t0: float | None = None
        pending: av.VideoFrame | None = None
        pending_t = 0.0
        pending_rgb: np.ndarray | Future[np.ndarray] | None = None
        last_dt = 1.0 / src_fps
        k = 0
        limit = math.inf if max_seconds is None else max_seconds
        consecutive = 0
        stopped_early = False

        def emit_until(t_end: float) -> Iterator[Frame]:
            nonlocal k, pending_rgb
            while k / fps < t_end - _EPS and k / fps < limit - _EPS:
                if pending_rgb is None:
                    if convert_pool is not None:
                        pending_rgb = convert_pool.submit(
                            _to_shared_rgb, pending, rotation, size, crop)
                    else:
                        pending_rgb = _to_shared_rgb(pending, rotation, size, crop)
                yield Frame(pending_rgb, k / fps)  # type: ignore[arg-type]
                k += 1
                st.emitted += 1

        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # container-level damage: keep what we have
                st.messages.append(f"demuxing stopped: {_reason(e)}")
                stopped_early = True
                break
            try:
                decoded = packet.decode()
                consecutive = 0
            except av.error.FFmpegError as e:
                st.bad_packets += 1
                consecutive += 1
                if len(st.messages) < 5:
                    st.messages.append(f"undecodable packet: {_reason(e)}")
                if consecutive >= _MAX_CONSECUTIVE_ERRORS:
                    st.messages.append(f"gave up after {consecutive} bad packets in a row")
                    stopped_early = True
                    break
                continue
            for frame in decoded:
                st.decoded += 1
                if limits is not None:
                    limits.check_size(int(frame.width), int(frame.height), path)
                    limits.check_count(st.decoded, "frames", path)
                if frame.time is not None:
                    ft = float(frame.time)
                else:  # no timestamp: assume the nominal frame interval
                    ft = (t0 + pending_t + last_dt) if t0 is not None else 0.0
                if t0 is None:
                    t0 = ft
                    rotation = _frame_rotation(frame) or _tag_rotation(stream)
                    dw, dh = frame.width, frame.height
                    if rotation in (90, 270):
                        dw, dh = dh, dw
                    rw, rh, _, _ = output_size(dw, dh, resize_shorter, crop)
                    size = (rw, rh)
                t = ft - t0
                if t > hard_end:
                    st.messages.append(
                        f"timestamp {t:.1f} s lies far beyond the declared {declared:.1f} s"
                    )
                    stopped_early = True
                    break
                if limits is not None:
                    limits.check_decoded_time(t, path)
                if pending is not None:
                    if t > pending_t + _EPS:
                        last_dt = t - pending_t
                    yield from emit_until(t)
                pending, pending_t, pending_rgb = frame, max(t, pending_t), None
                if k / fps >= limit - _EPS:
                    break
            if k / fps >= limit - _EPS or stopped_early:
                break
        if pending is None:
            detail = f" ({'; '.join(st.messages)})" if st.messages else ""
            raise CorruptVideoError(f"{path}: no decodable video frame{detail}")
        dur = pending.duration
        if dur and pending.time_base is not None and dur > 0:
            last_dt = float(dur * pending.time_base)
        st.end_time = min(pending_t + last_dt, hard_end)
        if limits is not None:
            limits.check_decoded_time(st.end_time, path)
        yield from emit_until(st.end_time)
        short = declared > 0 and st.end_time < declared - max(0.5, 2.0 / src_fps)
        if max_seconds is None and (stopped_early or st.bad_packets or short):
            st.partial = True
            what = []
            if st.bad_packets:
                what.append(f"{st.bad_packets} undecodable packet(s) skipped")
            if stopped_early or short:
                what.append(
                    f"decoded {st.end_time:.2f} s of {declared:.2f} s declared"
                    if declared > 0
                    else f"decoding stopped at {st.end_time:.2f} s"
                )
            msg = f"{path}: partially decoded: " + ", ".join(what)
            st.warning = msg
            if warn:
                log.warning(msg)
                warnings.warn(msg, PartialDecodeWarning, stacklevel=2)
    finally:
        container.close()


def is_video_file(path: str | Path) -> bool:
    """Cheap check used by CLIs to skip obviously wrong inputs before queueing them."""
    try:
        probe(path)
    except VideoError:
        return False
    return True


__all__ = [
    "DecodeStats",
    "Frame",
    "PartialDecodeWarning",
    "VideoInfo",
    "center_crop",
    "iter_frames",
    "measure_duration",
    "output_size",
    "probe",
    "is_video_file",
]
