"""Labelled archives: inspect an uploaded ``.zip`` / ``.tar`` / ``.tar.gz`` without trusting it,
parse its ``labels.csv``, and extract the listed videos one at a time with byte caps.

Why the checks happen in this order: everything that can be decided from the archive's
directory (format, member names, types, counts, declared sizes, compression ratios) and from
``labels.csv`` is decided *before* a single video byte is written anywhere, so those errors
are answered in the request (4xx, nothing stored). Only probing the videos (a sandboxed child
per video, :mod:`hamnet_service.probing`) is slow; that runs after the 202, in
:mod:`hamnet_service.services.datasets`.

The format is recognised by content (magic bytes), never by the file name. A tar stream is read
sequentially: each member's declared size is checked *before* the reader skips over its data,
so a gzip bomb is refused without being inflated.
"""

from __future__ import annotations

import csv
import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

LABELS_FILE = "labels.csv"
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg",
                              ".mpeg", ".ts", ".mts", ".ogv", ".flv", ".wmv", ".3gp"})
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
IGNORED_DIRS = ("__MACOSX",)
_MAX_LABELS_BYTES = 4 << 20
_MAX_REPORTED = 50


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 5000
    max_total_bytes: int = 16 << 30  # uncompressed
    max_member_bytes: int = 2 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, per zip member or whole gzip stream
    min_videos: int = 2
    ratio_floor_bytes: int = 1 << 20  # members smaller than this may compress as they like


@dataclass
class Problem:
    code: str
    message: str
    line: int | None = None
    member: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ArchiveError(Exception):
    """An archive refused: ``status`` + ``code`` for the HTTP answer, ``problems`` (each
    naming a CSV line or an archive member) for the dataset's error list."""

    def __init__(self, status: int, code: str, message: str,
                 problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = problems or [Problem(code, message)]


@dataclass
class Entry:
    """One listed video: its member path, the name it gets in storage, its labels."""

    member: str
    name: str
    labels: list[str]
    line: int
    size: int = 0
    path: str = ""  # the member's full path in the archive (``member`` is relative to labels.csv)


@dataclass
class Listing:
    kind: str  # zip | tar | tar.gz
    entries: list[Entry] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0


def sniff(path: Path) -> str:
    """``zip``, ``tar.gz`` or ``tar`` from the first bytes; 415 ``unsupported_archive``."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError(415, "unsupported_archive", "the file is not a .zip, .tar or .tar.gz "
                       "archive (recognised by content, not by name)")


def _clean_name(raw: str) -> str:
    """The member's path, or ``archive_path_traversal`` for anything that could leave the
    extraction root (absolute, drive letter, backslash, ``..``)."""
    name = raw.replace("\\", "/") if "\\" in raw else raw
    if "\\" in raw or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise ArchiveError(422, "archive_path_traversal",
                           f"member {raw[:200]!r} has an absolute or Windows path",
                           [Problem("archive_path_traversal", "absolute path", member=raw[:200])])
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(422, "archive_path_traversal",
                           f"member {raw[:200]!r} climbs out of the archive with '..'",
                           [Problem("archive_path_traversal", "'..' in path", member=raw[:200])])
    return "/".join(parts)


@dataclass
class _Member:
    name: str
    size: int
    compressed: int | None


def _zip_members(path: Path, lim: ArchiveLimits) -> list[_Member]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(422, "archive_corrupt", f"the zip archive cannot be read: {e}") from None
    out, total = [], 0
    with zf:
        infos = zf.infolist()
        if len(infos) > lim.max_members:
            raise ArchiveError(422, "archive_too_many_files",
                               f"{len(infos)} members; at most {lim.max_members}")
        for info in infos:
            name = _clean_name(info.filename)
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.is_dir():
                continue
            if stat.S_ISLNK(mode):
                raise ArchiveError(422, "archive_symlink", f"member {name!r} is a symbolic "
                                   "link", [Problem("archive_symlink", "symbolic link",
                                                    member=name)])
            if mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                raise ArchiveError(422, "archive_special_file", f"member {name!r} is not a "
                                   "regular file", [Problem("archive_special_file",
                                                            "not a regular file", member=name)])
            if info.flag_bits & 0x1:
                raise ArchiveError(422, "archive_encrypted", f"member {name!r} is encrypted")
            total += info.file_size
            _check_sizes(name, info.file_size, info.compress_size, total, lim)
            out.append(_Member(name, info.file_size, info.compress_size))
    return out


def _check_sizes(name: str, size: int, compressed: int | None, total: int,
                 lim: ArchiveLimits) -> None:
    if size > lim.max_member_bytes:
        raise ArchiveError(422, "archive_too_large", f"member {name!r} unpacks to {size} "
                           f"bytes; at most {lim.max_member_bytes} per file",
                           [Problem("archive_too_large", "member too large", member=name)])
    if compressed is not None and size > lim.ratio_floor_bytes \
            and size > lim.max_ratio * max(compressed, 1):
        raise ArchiveError(422, "archive_bomb", f"member {name!r} expands {size} / "
                           f"{max(compressed, 1)} = more than {lim.max_ratio:g} times: refused "
                           "as a decompression bomb",
                           [Problem("archive_bomb", "compression ratio", member=name)])
    if total > lim.max_total_bytes:
        raise ArchiveError(422, "archive_bomb", f"the archive unpacks to more than "
                           f"{lim.max_total_bytes} bytes: refused as a decompression bomb")


def _tar_open(path: Path, kind: str) -> tarfile.TarFile:
    mode = "r|gz" if kind == "tar.gz" else "r|"
    try:
        return tarfile.open(path, mode)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(422, "archive_corrupt", f"the {kind} archive cannot be read: "
                           f"{e}") from None


def _tar_members(path: Path, kind: str, lim: ArchiveLimits) -> list[_Member]:
    compressed = path.stat().st_size
    out, total, count = [], 0, 0
    tf = _tar_open(path, kind)
    try:
        with tf:
            while True:
                try:
                    info = tf.next()  # reads one header; skipping the data is the next call
                except (tarfile.TarError, OSError, EOFError) as e:
                    raise ArchiveError(422, "archive_corrupt",
                                       f"the {kind} archive is damaged: {e}") from None
                if info is None:
                    break
                count += 1
                if count > lim.max_members:
                    raise ArchiveError(422, "archive_too_many_files",
                                       f"more than {lim.max_members} members")
                name = _clean_name(info.name)
                if info.isdir():
                    continue
                if info.issym() or info.islnk():
                    raise ArchiveError(422, "archive_symlink", f"member {name!r} is a "
                                       f"{'symbolic' if info.issym() else 'hard'} link",
                                       [Problem("archive_symlink", "link", member=name)])
                if not info.isreg() or info.issparse():
                    raise ArchiveError(422, "archive_special_file", f"member {name!r} is not "
                                       "a regular file (device, FIFO or sparse file)",
                                       [Problem("archive_special_file", "not a regular file",
                                                member=name)])
                total += info.size
                _check_sizes(name, info.size, None, total, lim)
                if kind == "tar.gz" and total > lim.ratio_floor_bytes \
                        and total > lim.max_ratio * compressed:
                    raise ArchiveError(422, "archive_bomb", f"the archive expands more than "
                                       f"{lim.max_ratio:g} times: refused as a decompression "
                                       "bomb")
                out.append(_Member(name, info.size, None))
    except ArchiveError:
        raise
    except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ArchiveError(422, "archive_corrupt", f"the {kind} archive is damaged: {e}") \
            from None
    return out


def _ignored(name: str) -> bool:
    parts = name.split("/")
    return parts[0] in IGNORED_DIRS or parts[-1].startswith(".")


def inspect(path: Path, lim: ArchiveLimits) -> Listing:
    """Check the archive's directory and its labels file; raise :class:`ArchiveError`."""
    kind = sniff(path)
    members = _zip_members(path, lim) if kind == "zip" else _tar_members(path, kind, lim)
    members = [m for m in members if not _ignored(m.name)]
    if not members:
        raise ArchiveError(422, "archive_empty", "the archive holds no files")
    labels = [m for m in members if PurePosixPath(m.name).name == LABELS_FILE]
    if not labels:
        raise ArchiveError(422, "labels_missing", f"the archive has no {LABELS_FILE} (columns "
                           "video,labels; labels separated by ';')")
    if len(labels) > 1:
        raise ArchiveError(422, "labels_invalid", f"the archive has {len(labels)} "
                           f"{LABELS_FILE} files ({', '.join(m.name for m in labels[:5])}); "
                           "put exactly one at the root of the videos")
    root = str(PurePosixPath(labels[0].name).parent)
    root = "" if root == "." else root + "/"
    if labels[0].size > _MAX_LABELS_BYTES:
        raise ArchiveError(422, "labels_invalid", f"{LABELS_FILE} is larger than "
                           f"{_MAX_LABELS_BYTES} bytes")
    text = read_member(path, kind, labels[0].name, _MAX_LABELS_BYTES)
    files = {m.name[len(root):]: m for m in members
             if m.name.startswith(root) and m is not labels[0]}
    outside = [m.name for m in members if not m.name.startswith(root)]
    listing = parse_labels(text, files, lim)
    listing.kind = kind
    for e in listing.entries:
        e.path = root + e.member
    if outside:
        raise ArchiveError(422, "labels_invalid", f"{len(outside)} file(s) outside the "
                           f"directory of {LABELS_FILE}: {', '.join(outside[:5])}",
                           [Problem("unlisted_member", f"outside the directory of "
                                    f"{LABELS_FILE}", member=n) for n in outside[:_MAX_REPORTED]])
    return listing


def read_member(path: Path, kind: str, name: str, cap: int) -> bytes:
    for member, fh in iter_members(path, kind, {name}):
        return _read_capped(fh, cap, member)
    raise ArchiveError(422, "archive_corrupt", f"member {name!r} cannot be read")


def _read_capped(fh: IO[bytes], cap: int, member: str) -> bytes:
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise ArchiveError(422, "archive_bomb", f"member {member!r} is larger than declared")
    return data


def iter_members(path: Path, kind: str, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """Open the ``wanted`` members (cleaned names) one after the other, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = _clean_name(info.filename)
                if name in wanted and not info.is_dir():
                    with zf.open(info) as fh:
                        yield name, fh
        return
    with _tar_open(path, kind) as tf:
        for info in tf:
            name = _clean_name(info.name)
            if name in wanted and info.isreg():
                fh = tf.extractfile(info)
                if fh is not None:
                    yield name, fh


def copy_member(fh: IO[bytes], dst: Path, declared: int, member: str) -> int:
    """Copy one member to ``dst``, never more than it declared (a lying header is a bomb)."""
    n = 0
    with open(dst, "wb") as out:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
            if n > declared:
                raise ArchiveError(422, "archive_bomb", f"member {member!r} is larger than "
                                   "declared", [Problem("archive_bomb", "larger than declared",
                                                        member=member)])
            out.write(chunk)
    return n


def _split_labels(raw: str, line: int) -> tuple[list[str], list[Problem]]:
    text = raw.strip()
    if not text:
        return [], [Problem("labels_invalid", "no labels (at least one, separated by ';')",
                            line=line)]
    for bad in (",", "|", "/", "\t"):
        if bad in text:
            return [], [Problem("labels_invalid", f"labels are separated by ';', not {bad!r}: "
                                f"{text[:80]!r}", line=line)]
    labels, problems = [], []
    for part in text.split(";"):
        lab = part.strip()
        if not lab:
            problems.append(Problem("labels_invalid", "empty label between ';'", line=line))
        elif not LABEL_RE.match(lab):
            problems.append(Problem("labels_invalid", f"label {lab[:80]!r}: use letters, "
                                    "digits, space, '_', '.', '+', '-' (at most 64, starting "
                                    "with a letter or digit)", line=line))
        elif lab not in labels:
            labels.append(lab)
    return labels, problems


def _lookup(video: str, files: dict[str, _Member]) -> str | None:
    """The member a ``video`` cell names: its path relative to labels.csv, with or without
    the extension (the synth tools write names without one)."""
    video = video.replace("\\", "/").strip()
    if video.startswith("./"):
        video = video[2:]
    if video in files:
        return video
    matches = [n for n in files if str(PurePosixPath(n).with_suffix("")) == video]
    return matches[0] if len(matches) == 1 else None


def parse_labels(data: bytes, files: dict[str, _Member], lim: ArchiveLimits) -> Listing:
    """``labels.csv`` -> entries; every problem names its line. Raises ``labels_invalid``
    (bad rows), ``not_a_video`` (a listed file that is not a video by its extension) or
    ``archive_empty``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ArchiveError(422, "labels_invalid", f"{LABELS_FILE} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[Problem] = []
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise ArchiveError(422, "labels_invalid", f"{LABELS_FILE} line 1: {e}") from None
    if header is None or [h.strip().lower() for h in header] != ["video", "labels"]:
        got = ",".join(header or [])[:120]
        raise ArchiveError(422, "labels_invalid", f"{LABELS_FILE} line 1: the header must be "
                           f"'video,labels' (got {got!r})",
                           [Problem("labels_invalid", "header must be 'video,labels'", line=1)])
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    classes: dict[str, int] = {}
    non_video: list[Problem] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                problems.append(Problem("labels_invalid", f"expected 2 fields (video,labels), "
                                        f"got {len(row)}; quote a field that contains a comma",
                                        line=line))
                continue
            video, raw = row[0].strip(), row[1]
            if not video:
                problems.append(Problem("labels_invalid", "empty video name", line=line))
                continue
            labels, bad = _split_labels(raw, line)
            problems += bad
            member = _lookup(video, files)
            if member is None:
                problems.append(Problem("video_missing", f"video {video[:120]!r} is listed but "
                                        "not in the archive", line=line))
                continue
            if member in seen:
                problems.append(Problem("labels_invalid", f"video {video[:120]!r} is listed "
                                        f"twice (first on line {seen[member]})", line=line,
                                        member=member))
                continue
            seen[member] = line
            if PurePosixPath(member).suffix.lower() not in VIDEO_EXTENSIONS:
                non_video.append(Problem("not_a_video", "not a video file (by its extension: "
                                         f"{', '.join(sorted(VIDEO_EXTENSIONS))})", line=line,
                                         member=member))
                continue
            if bad:
                continue
            ext = PurePosixPath(member).suffix.lower()
            entries.append(Entry(member, f"v{len(entries):05d}{ext}", labels, line,
                                 files[member].size))
            for lab in labels:
                classes[lab] = classes.get(lab, 0) + 1
    except csv.Error as e:
        problems.append(Problem("labels_invalid", f"malformed CSV: {e}", line=reader.line_num))
    unlisted = [n for n in files if n not in seen]
    problems += [Problem("unlisted_member", "in the archive but not listed in "
                         f"{LABELS_FILE}", member=n) for n in sorted(unlisted)]
    if problems:
        first = problems[0]
        where = f"line {first.line}" if first.line else f"member {first.member!r}"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ArchiveError(422, "labels_invalid", f"{LABELS_FILE} {where}: {first.message}"
                           f"{more}", (problems + non_video)[:_MAX_REPORTED])
    if non_video:
        raise ArchiveError(422, "not_a_video", f"{len(non_video)} listed file(s) are not "
                           f"videos: {', '.join(p.member or '' for p in non_video[:5])}",
                           non_video[:_MAX_REPORTED])
    if not entries:
        raise ArchiveError(422, "archive_empty", f"{LABELS_FILE} lists no videos")
    if len(entries) < lim.min_videos:
        raise ArchiveError(422, "dataset_too_small", f"{len(entries)} video(s); a dataset "
                           f"needs at least {lim.min_videos}")
    return Listing(kind="", entries=entries, classes=dict(sorted(classes.items())),
                   total_bytes=sum(e.size for e in entries))
