"""The bad-input corpus: hostile, broken or merely unusual uploads, generated from nothing (ffmpeg
test sources, byte patching), each with the documented answer it must get.

An answer is either an HTTP rejection (status and error code) or an accepted job that must end
in a given status (and, when ``failed``, with a given error code). Unusual but valid videos
(rotated, VFR, interlaced, odd names) must *succeed*: rejecting good input is a bug too.

Each kind is small (kilobytes, sub-second to generate) so the whole corpus runs in the test
suite; the few that need a limit to trip use the deliberately small limits of the corpus stack
(``LIMITS``).
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Limits of the stack the corpus runs against (tests/reliability/test_bad_input.py).
LIMITS = {
    "HAMNET_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "HAMNET_MAX_DURATION_S": "600",
    "HAMNET_MAX_DIMENSION": "4096",
    "HAMNET_MAX_FIELD_BYTES": "4096",
    "HAMNET_MAX_FIELDS": "8",
}
VIDEO_CODES = ("not_a_video", "no_video_stream", "corrupt_video", "invalid_video",
               "video_too_short")


@dataclass
class Expect:
    """``status``: the HTTP status of the POST (202 for an accepted job); ``codes``: allowed
    error codes of the rejection; ``job``: allowed final job statuses; ``job_codes``: allowed
    error codes when the job failed."""

    status: tuple[int, ...]
    codes: tuple[str, ...] = ()
    job: tuple[str, ...] = ()
    job_codes: tuple[str, ...] = ()


@dataclass
class Request:
    """What to send: multipart ``files``/``data`` (httpx style) or a raw ``content`` body."""

    files: Any = None
    data: dict[str, str] = field(default_factory=dict)
    content: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    kind: str
    make: Callable[[Path], Request]
    expect: Expect
    why: str = ""


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=120)


def _clip(out: Path, src: str = "testsrc=size=64x48:rate=10:duration=2",
          *opts: str) -> Path:
    _ff("-f", "lavfi", "-i", src, *(opts or ("-pix_fmt", "yuv420p", "-c:v", "libx264",
                                             "-preset", "ultrafast")), str(out))
    return out


def _file(name: str, data: bytes, ctype: str = "video/mp4") -> Request:
    return Request(files={"file": (name, data, ctype)})


def _good(d: Path) -> bytes:
    p = d / "good.mp4"
    if not p.exists():
        _clip(p)
    return p.read_bytes()


def _faststart(d: Path) -> bytes:
    """The good clip with its index (moov) before the frames, so frames can be damaged while
    the container still opens."""
    p = d / "fast.mp4"
    if not p.exists():
        _good(d)
        _ff("-i", str(d / "good.mp4"), "-c", "copy", "-movflags", "+faststart", str(p))
    return p.read_bytes()


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, body in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# ------------------------------------------------------------------------------- generators


def empty(d: Path) -> Request:
    return _file("empty.mp4", b"")


def truncated_mp4(d: Path) -> Request:
    """moov atom at the end (no faststart) and the last two thirds cut off: the index of the
    frames is gone."""
    data = _good(d)
    return _file("truncated.mp4", data[: len(data) // 3])


def truncated_header(d: Path) -> Request:
    return _file("head.mp4", _good(d)[:40])


def wrong_magic(d: Path) -> Request:
    data = bytearray(_good(d))
    data[4:8] = b"XXXX"  # 'ftyp' -> garbage: no demuxer recognises it
    data[0:4] = b"\xde\xad\xbe\xef"
    return _file("magic.mp4", bytes(data))


def random_bytes(d: Path) -> Request:
    return _file("random.mp4", os.urandom(64 * 1024))


def text_file(d: Path) -> Request:
    return _file("notes.mp4", b"just some text, not a video\n" * 200, "text/plain")


def html_file(d: Path) -> Request:
    return _file("x.mp4", b"<!doctype html><script>alert(1)</script>" * 50, "text/html")


def png_image(d: Path) -> Request:
    p = d / "i.png"
    _ff("-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", str(p))
    return _file("image.mp4", p.read_bytes())


def jpeg_image(d: Path) -> Request:
    p = d / "i.jpg"
    _ff("-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", str(p))
    return _file("image.mp4", p.read_bytes())


def audio_only(d: Path) -> Request:
    p = d / "a.m4a"
    _ff("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(p))
    return _file("audio.mp4", p.read_bytes())


def zip_renamed(d: Path) -> Request:
    p = d / "v.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("video.mp4", _good(d))
    return _file("archive.mp4", p.read_bytes())


def zero_size(d: Path) -> Request:
    """A Y4M stream whose header declares a 0x0 picture."""
    return _file("zero.y4m", b"YUV4MPEG2 W0 H0 F10:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\0" * 64)


def one_by_one(d: Path) -> Request:
    """A genuine 1x1 video: 20 frames of raw 4:4:4 Y4M (3 bytes each)."""
    head = b"YUV4MPEG2 W1 H1 F10:1 Ip A1:1 C444\n"
    return _file("1x1.y4m", head + b"FRAME\n\x80\x80\x80" * 20)


def tiny_15px(d: Path) -> Request:
    p = d / "15.mkv"
    _clip(p, "testsrc=size=15x15:rate=10:duration=2", "-c:v", "ffv1")
    return _file("15x15.mkv", p.read_bytes())


def one_frame(d: Path) -> Request:
    p = d / "1f.mp4"
    _clip(p, "testsrc=size=64x48:rate=10", "-frames:v", "1", "-pix_fmt", "yuv420p",
          "-c:v", "libx264")
    return _file("oneframe.mp4", p.read_bytes())


def huge_resolution_header(d: Path) -> Request:
    """A Y4M header promising 60000x60000 (5.4 GB a frame) followed by 1 kB: must be refused
    without allocating the frame."""
    head = b"YUV4MPEG2 W60000 H60000 F25:1 Ip A1:1 C420jpeg\nFRAME\n"
    return _file("huge.y4m", head + b"\x80" * 1024)


def too_wide(d: Path) -> Request:
    """A real, decodable 5000x16 frame: above the stack's 4096-pixel limit."""
    w, h = 5000, 16
    head = f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode()
    frame = b"FRAME\n" + b"\x80" * (w * h * 3 // 2)
    return _file("wide.y4m", head + frame * 2)


def long_sparse(d: Path) -> Request:
    """An hour of video at one frame every 30 s (kilobytes): over the 600 s duration limit."""
    p = d / "long.mp4"
    _clip(p, "color=c=blue:size=32x32:rate=1/30:duration=3600", "-pix_fmt", "yuv420p",
          "-c:v", "libx264", "-preset", "ultrafast")
    return _file("long.mp4", p.read_bytes())


def absurd_fps(d: Path) -> Request:
    """Declared 5000 fps (MP4, timebase 1/10000): above any camera's rate."""
    p = d / "fps.mp4"
    _clip(p, "testsrc=size=64x48:rate=5000:duration=0.05", "-pix_fmt", "yuv420p", "-c:v",
          "libx264", "-preset", "ultrafast")
    return _file("fps.mp4", p.read_bytes())


def absurd_timebase(d: Path) -> Request:
    """A 10 fps clip muxed with a track timescale of 3 ticks a second: frame times collapse
    and stretch (ffprobe: 60/19 fps, 6.3 s). Odd but readable."""
    p = d / "tb.mp4"
    _clip(p, "testsrc=size=64x48:rate=10:duration=2", "-pix_fmt", "yuv420p", "-c:v",
          "libx264", "-preset", "ultrafast", "-video_track_timescale", "3")
    return _file("timebase.mp4", p.read_bytes())


def rotated(d: Path) -> Request:
    """A display-matrix rotation of 90 degrees (phone video held upright)."""
    _good(d)
    p = d / "rot.mp4"
    _ff("-i", str(d / "good.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(p))
    return _file("rotated.mp4", p.read_bytes())


def vfr(d: Path) -> Request:
    """Variable frame rate: two of every three frames dropped, timestamps kept."""
    p = d / "vfr.mkv"
    _clip(p, "testsrc=size=64x48:rate=25:duration=3", "-vf", "select='not(mod(n\\,3))+lt(n\\,10)'",
          "-fps_mode", "vfr", "-c:v", "ffv1")
    return _file("vfr.mkv", p.read_bytes())


def interlaced(d: Path) -> Request:
    p = d / "int.mp4"
    _clip(p, "testsrc=size=64x48:rate=25:duration=2", "-vf", "interlace", "-pix_fmt",
          "yuv420p", "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "interlaced=1")
    return _file("interlaced.mp4", p.read_bytes())


def corrupt_frames(d: Path) -> Request:
    """A valid container whose coded frames are overwritten with noise after the header."""
    data = bytearray(_faststart(d))
    mdat = data.find(b"mdat")
    rnd = os.urandom(len(data) - mdat - 8)
    data[mdat + 8:] = rnd
    return _file("noise.mp4", bytes(data))


def corrupt_tail(d: Path) -> Request:
    """Decodable start, noise after the first third of the coded frames: the worker decodes
    what it can (a partial result) or fails the job as ``corrupt_video``, never crashes."""
    data = bytearray(_faststart(d))
    mdat = data.find(b"mdat")
    start = mdat + 8 + (len(data) - mdat - 8) // 3
    data[start:] = os.urandom(len(data) - start)
    return _file("tail.mp4", bytes(data))


def unicode_name(d: Path) -> Request:
    return _file("видео 🎬 動画 \u202e4pm.mp4", _good(d))


def traversal_name(d: Path) -> Request:
    return _file("../../../../../../tmp/hamnet-pwned.mp4", _good(d))


def backslash_name(d: Path) -> Request:
    return _file("..\\..\\windows\\system32\\x.mp4", _good(d))


def wrong_part_type(d: Path) -> Request:
    return _file("v.mp4", _good(d), "application/x-msdownload")


def no_content_type(d: Path) -> Request:
    return Request(content=_good(d), headers={"Content-Type": ""})


def not_multipart(d: Path) -> Request:
    return Request(content=_good(d), headers={"Content-Type": "video/mp4"})


def no_boundary(d: Path) -> Request:
    return Request(content=_good(d), headers={"Content-Type": "multipart/form-data"})


def oversized(d: Path) -> Request:
    return _file("big.mp4", b"\0" * (3 * 1024 * 1024))


def oversized_chunked(d: Path) -> Request:
    """Over the limit, sent chunked without Content-Length: cut off while streaming."""
    body = _multipart("b0und", [("file", "big.mp4", b"\0" * (3 * 1024 * 1024))])

    def gen():
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]

    return Request(content=gen(), headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def chunked_ok(d: Path) -> Request:
    body = _multipart("b0und", [("file", "chunked.mp4", _good(d))])

    def gen():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    return Request(content=gen(), headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def malformed_multipart(d: Path) -> Request:
    return Request(content=b"--b0und\r\nthis is not a header\r\n\r\nxx\r\n--b0und--\r\n",
                   headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def unterminated_multipart(d: Path) -> Request:
    body = _multipart("b0und", [("file", "v.mp4", _good(d))])
    return Request(content=body[:-12],
                   headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def no_disposition(d: Path) -> Request:
    return Request(content=b"--b0und\r\nContent-Type: video/mp4\r\n\r\nxx\r\n--b0und--\r\n",
                   headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def missing_file_part(d: Path) -> Request:
    return Request(files={"video": ("v.mp4", _good(d), "video/mp4")})


def two_files(d: Path) -> Request:
    g = _good(d)
    return Request(files=[("file", ("a.mp4", g, "video/mp4")), ("file", ("b.mp4", g,
                                                                        "video/mp4"))])


def huge_field(d: Path) -> Request:
    return Request(files={"file": ("v.mp4", _good(d), "video/mp4")}, data={"tag": "x" * 100_000})


def many_fields(d: Path) -> Request:
    body = _multipart("b0und", [(f"f{i}", None, b"1") for i in range(50)]
                      + [("file", "v.mp4", _good(d))])
    return Request(content=body, headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def huge_part_headers(d: Path) -> Request:
    """A part header line of 1 MB (python-multipart keeps header bytes in memory)."""
    body = (b"--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n"
            b"X-Junk: " + b"a" * (1024 * 1024) + b"\r\n\r\n" + _good(d) + b"\r\n--b0und--\r\n")
    return Request(content=body, headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def non_utf8_field(d: Path) -> Request:
    body = _multipart("b0und", [("tag", None, b"\xff\xfe\xfd"), ("file", "v.mp4", _good(d))])
    return Request(content=body, headers={"Content-Type": "multipart/form-data; boundary=b0und"})


def _params(**fields: str) -> Callable[[Path], Request]:
    def make(d: Path) -> Request:
        return Request(files={"file": ("v.mp4", _good(d), "video/mp4")}, data=fields)

    return make


REJECT_VIDEO = Expect((415, 422), VIDEO_CODES)
OK = Expect((202,), job=("succeeded",))

CASES: list[Case] = [
    Case("empty_file", empty, Expect((422,), ("empty_file",))),
    Case("truncated_mp4", truncated_mp4, REJECT_VIDEO, "frame index (moov) cut off"),
    Case("truncated_header", truncated_header, REJECT_VIDEO),
    Case("wrong_magic", wrong_magic, REJECT_VIDEO),
    Case("random_bytes", random_bytes, Expect((415,), ("not_a_video",))),
    Case("text_file", text_file, Expect((415,), ("not_a_video",))),
    Case("html_file", html_file, Expect((415,), ("not_a_video",))),
    Case("png_image", png_image, Expect((415,), ("not_a_video",))),
    Case("jpeg_image", jpeg_image, Expect((415,), ("not_a_video",))),
    Case("audio_only", audio_only, Expect((415,), ("no_video_stream",))),
    Case("zip_renamed", zip_renamed, Expect((415,), ("not_a_video",))),
    Case("zero_by_zero", zero_size, REJECT_VIDEO),
    Case("one_by_one", one_by_one, Expect((422,), ("resolution_too_small",))),
    Case("fifteen_px", tiny_15px, Expect((422,), ("resolution_too_small",))),
    Case("one_frame", one_frame, Expect((422,), ("video_too_short",))),
    Case("huge_resolution_header", huge_resolution_header, REJECT_VIDEO),
    Case("too_wide", too_wide, Expect((422,), ("resolution_too_large",))),
    Case("long_sparse", long_sparse, Expect((422,), ("video_too_long",))),
    Case("absurd_fps", absurd_fps, Expect((422,), ("invalid_timing",))),
    Case("absurd_timebase", absurd_timebase, OK),
    Case("rotated", rotated, OK),
    Case("vfr", vfr, OK),
    Case("interlaced", interlaced, OK),
    Case("corrupt_frames", corrupt_frames, REJECT_VIDEO),
    Case("corrupt_tail", corrupt_tail, Expect((202, 415, 422), VIDEO_CODES,
                                              job=("succeeded", "failed"),
                                              job_codes=("corrupt_video",))),
    Case("unicode_filename", unicode_name, OK),
    Case("traversal_filename", traversal_name, OK),
    Case("backslash_filename", backslash_name, OK),
    Case("wrong_part_content_type", wrong_part_type, OK),
    Case("no_content_type", no_content_type, Expect((415,), ("unsupported_media_type",))),
    Case("not_multipart", not_multipart, Expect((415,), ("unsupported_media_type",))),
    Case("no_boundary", no_boundary, Expect((415,), ("unsupported_media_type",))),
    Case("oversized", oversized, Expect((413,), ("file_too_large",))),
    Case("oversized_chunked", oversized_chunked, Expect((413,), ("file_too_large",))),
    Case("chunked_without_length", chunked_ok, OK),
    Case("malformed_multipart", malformed_multipart, Expect((400,), ("malformed_multipart",))),
    Case("unterminated_multipart", unterminated_multipart,
         Expect((400,), ("malformed_multipart",))),
    Case("part_without_disposition", no_disposition, Expect((400,), ("malformed_multipart",))),
    # the misnamed part is read as a form field: too long for one (or, if short, unknown)
    Case("missing_file_part", missing_file_part, Expect((422,), ("missing_file",))),
    Case("two_file_parts", two_files, Expect((422,), ("too_many_files",))),
    Case("huge_form_field", huge_field, Expect((413,), ("field_too_large",))),
    Case("too_many_fields", many_fields, Expect((413,), ("too_many_fields",))),
    Case("huge_part_header", huge_part_headers, Expect((400, 413, 431),
                                                       ("malformed_multipart",
                                                        "header_too_large"))),
    Case("non_utf8_field", non_utf8_field, Expect((422,), ("invalid_parameter",))),
    Case("min_score_out_of_range", _params(min_score="7"), Expect((422,),
                                                                   ("invalid_parameter",))),
    Case("min_score_nan", _params(min_score="nan"), Expect((422,), ("invalid_parameter",))),
    Case("unknown_label", _params(include="wave,nope"), Expect((422,), ("unknown_label",))),
    Case("unknown_field", _params(colour="red"), Expect((422,), ("unknown_field",))),
    Case("callback_not_http", _params(callback_url="gopher://example.com/"),
         Expect((422,), ("invalid_callback_url",))),
    Case("tag_control_chars", _params(tag="a\x00b\x1b[31m"), Expect((422,),
                                                                    ("invalid_parameter",))),
]

