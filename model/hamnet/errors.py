"""Domain exceptions of the ``hamnet`` package.

Every error a user can cause (bad file, bad shape, bad config) is a :class:`HamnetError` with a
message that names the file and the problem. The CLI prints the message and exits with status 2
instead of a traceback; the service maps the subclasses to HTTP codes in its routes.
"""


class HamnetError(Exception):
    """Base class for user-facing errors."""

    code = "hamnet_error"


class ConfigError(HamnetError):
    code = "invalid_config"


class DataError(HamnetError):
    """Missing/corrupt feature or annotation files, wrong shapes, NaNs, unknown labels."""

    code = "invalid_data"


class CheckpointError(HamnetError):
    code = "invalid_checkpoint"


class BundleError(HamnetError):
    code = "invalid_bundle"


class ExportError(HamnetError):
    code = "export_failed"


class VideoError(HamnetError):
    """A file that cannot be decoded as a video (subclasses say why)."""

    code = "invalid_video"


class NotAVideoError(VideoError):
    code = "not_a_video"


class NoVideoStreamError(VideoError):
    code = "no_video_stream"


class CorruptVideoError(VideoError):
    code = "corrupt_video"


class VideoTooShortError(VideoError):
    code = "video_too_short"


class VideoTooLongError(VideoError):
    """Longer than the caller's duration limit, measured from decoded (or demuxed) timestamps,
    or more frames than that duration can hold."""

    code = "video_too_long"


class VideoTooLargeError(VideoError):
    """Picture width, height or pixel count above the caller's limits (decided from the stream
    header, before a picture of that size is allocated)."""

    code = "resolution_too_large"


class UnboundedDurationError(VideoError):
    """A duration limit was asked for, but the file has neither timestamps nor a frame rate
    that would allow bounding how long it is."""

    code = "duration_unknown"


class MissingDependencyError(HamnetError):
    """An optional extra (``hamnet[train]``, ``hamnet[video]``) is needed but not installed."""

    code = "missing_dependency"
