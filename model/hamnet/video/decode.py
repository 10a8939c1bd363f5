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
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from hamnet.errors import CorruptVideoError, NotAVideoError, NoVideoStreamError, VideoError

log = logging.getLogger(__name__)

_EPS = 1e-6  # seconds; timestamps are rationals converted to float
_MAX_PROBE_PACKETS = 500  # packets read by probe() to find the first decodable frame
_MAX_CONSECUTIVE_ERRORS = 100  # undecodable packets in a row before we give up on a file

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


def _open(path: str | Path) -> av.container.InputContainer:
    """Open a container, turning every failure into a precise :class:`VideoError`."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: file not found")
    if not p.is_file():  # directories, FIFOs (which would block forever), devices
        raise NotAVideoError(f"{p}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise NotAVideoError(f"{p}: empty file (0 bytes)")
    try:
        return av.open(str(p), mode="r", timeout=30.0)
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


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(
            f"{path}: no video stream (streams found: {', '.join(kinds)})"
        )
    stream = container.streams.video[0]
    cc = stream.codec_context
    if not cc.width or not cc.height:
        raise CorruptVideoError(
            f"{path}: video stream has zero size ({cc.width}x{cc.height})"
        )
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


def probe(path: str | Path) -> VideoInfo:
    """Read the container header and decode the first frame (which is how we learn the
    display rotation, and proves that at least something is decodable)."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        fps = _stream_fps(stream)
        duration = _declared_duration(container, stream)
        if stream.frames and stream.frames > 0:
            num = int(stream.frames)
        else:
            num = int(round(duration * fps)) if fps else 0
        try:
            first = _first_frame(container, stream)
        except av.error.FFmpegError as e:
            raise CorruptVideoError(
                f"{path}: cannot read the video stream: {_reason(e)}"
            ) from None
        if first is None:
            raise CorruptVideoError(f"{path}: no decodable video frame")
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


# ----------------------------------------------------------------------------- frames


def iter_frames(
    path: str | Path,
    fps: float,
    resize_shorter: int | None = None,
    crop: int | None = None,
    max_seconds: float | None = None,
    threads: int = 0,
    stats: DecodeStats | None = None,
) -> Iterator[Frame]:
    """Yield frames resampled to ``fps``: frame k has ``t = k / fps`` and shows the latest
    decoded picture presented at or before ``t``; the last output time is the last one before
    the end of the last decoded frame. Frames are upright (rotation metadata applied), resized
    so the shorter side is ``resize_shorter`` and centre-cropped to ``crop`` (see
    :func:`output_size`).

    Raises :class:`VideoError` subclasses for files that yield nothing; warns with
    :class:`PartialDecodeWarning` when decoding stops early or packets are skipped.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    st = stats if stats is not None else DecodeStats()
    container = _open(path)
    try:
        stream = _video_stream(container, path)
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
        pending_rgb: np.ndarray | None = None
        last_dt = 1.0 / src_fps
        k = 0
        limit = math.inf if max_seconds is None else max_seconds
        consecutive = 0
        stopped_early = False

        def emit_until(t_end: float) -> Iterator[Frame]:
            nonlocal k, pending_rgb
            while k / fps < t_end - _EPS and k / fps < limit - _EPS:
                if pending_rgb is None:
                    pending_rgb = _to_rgb(pending, rotation, size, crop)
                    pending_rgb.setflags(write=False)  # shared by repeated output frames
                yield Frame(pending_rgb, k / fps)
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
    "output_size",
    "probe",
    "is_video_file",
]
