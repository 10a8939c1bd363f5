"""Response bodies of the API (pydantic v2); they are what ``openapi.yaml`` publishes and what
schemathesis checks the live responses against, so they must say exactly what is returned."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Stage = Literal["decode", "features", "localize"]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. `not_a_video`, `queue_full`")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ModelCardSummary(BaseModel):
    """The compact model card a result carries: enough to tell what the model can know."""

    model_config = ConfigDict(extra="allow")
    title: str | None = None
    synthetic: bool | None = Field(
        None, description="true: the synthetic demo model, trained only on rendered motion "
        "patterns; it does not recognise real-world actions")
    summary: str | None = None
    intended_use: str | None = None
    limitations: list[str] = Field(default_factory=list)


class ModelRef(BaseModel):
    """Which model made (or will make) a job's result."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    version: str | None = None
    checksum: str | None = Field(None, description="SHA-256 of the bundle manifest")
    card: ModelCardSummary | None = Field(
        None, description="compact model card: set in results of bundles that have one, null "
        "in job records; the full card is in `GET /v1/models`")
    ref: str | None = Field(
        None, description="the registry reference the job was resolved to at submission: "
        "`default` or `NAME@VERSION` (`name`/`version` are the bundle's own)")


class ResultModel(ModelRef):
    """The model of a result: identity, compact card, and how it ran."""

    backbone: str | None = Field(None, description="feature extractor (`motion`, `i3d`)")
    provider: str | None = Field(None, description="ONNX Runtime provider of the backbone")
    head_provider: str | None = Field(None, description="ONNX Runtime provider of the head")
    profile: str | None = Field(None, description="post-processing profile applied")


class JobParams(BaseModel):
    min_score: float | None = Field(
        None, description="segments whose calibrated `confidence` is below this were dropped "
        "(on bundles without calibration: whose raw `score` is below it)")
    min_raw_score: float | None = Field(
        None, description="segments whose raw `score` is below this were dropped")
    include: list[str] | None = None
    exclude: list[str] | None = None


class VideoInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    duration: float
    fps: float
    width: int
    height: int


class CallbackDelivery(BaseModel):
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(0, ge=0, description="delivery attempts so far (bounded, backoff)")
    http_status: int | None = Field(None, description="status of the last attempt's answer")
    last_error: str | None = None
    last_attempt_at: str | None = None
    delivered_at: str | None = None


class WebhookSecret(BaseModel):
    secret: str = Field(description="HMAC-SHA256 key of this API key's callbacks: verify "
                        "`Hamnet-Signature: t=<unix time>,v1=<hex>` over `<t>.<body>`")


class SourceInfo(BaseModel):
    uri: str = Field(description="the source URL; query values are shown as `REDACTED` (a "
                     "presigned URL's signature is a credential)")
    kind: Literal["https", "http", "s3"]


class OutputInfo(BaseModel):
    uri: str = Field(description="`s3://` object the result JSON is written to")
    written: bool | None = Field(None, description="null until the job succeeded; false: "
                                 "the write failed (`error`), the result is still kept")
    written_at: str | None = None
    error: str | None = None


class JobSourceRequest(BaseModel):
    """``POST /v1/jobs`` as JSON: a remote video instead of an upload."""

    model_config = ConfigDict(extra="forbid")
    source_url: str = Field(max_length=2048, description="`https://`, `http://` or "
                            "`s3://bucket/key` (docs/SOURCES.md)")
    output_uri: str | None = Field(None, max_length=2048, description="`s3://bucket/prefix/` "
                                   "or `same` (next to an s3:// source): where the result JSON "
                                   "is also written")
    model: str | None = Field(None, description="`NAME[@VERSION]`; default: the default model")
    min_score: float | None = Field(None, ge=0, le=1)
    min_raw_score: float | None = None
    include: list[str] | str | None = None
    exclude: list[str] | str | None = None
    callback_url: str | None = Field(None, max_length=2048)
    tag: str | None = Field(None, max_length=200)


class Job(BaseModel):
    id: str
    status: Status
    stage: Stage | None = Field(None, description="current stage while running")
    progress: int = Field(ge=0, le=100, description="0-100; 100 exactly when succeeded")
    attempts: int = Field(0, ge=0, description="deliveries to a worker so far")
    created_at: str
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: ErrorDetail | None = None
    model: ModelRef | None = None
    filename: str | None = None
    size_bytes: int | None = None
    video: VideoInfo | None = None
    params: JobParams = Field(default_factory=JobParams)
    callback_url: str | None = None
    callback: CallbackDelivery | None = Field(None, description="outcome of the callback")
    requeues: int = Field(0, ge=0, description="times the job was queued again because its "
                          "worker was lost")
    tag: str | None = None
    source: SourceInfo | None = Field(None, description="the remote source (docs/SOURCES.md)")
    output: OutputInfo | None = Field(None, description="the result copy (`output_uri`)")
    batch: str | None = Field(None, description="id of the batch the job belongs to")
    links: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


class Segment(BaseModel):
    label: str
    label_id: int
    start: float = Field(description="seconds from the start of the video")
    end: float
    score: float = Field(
        description=(
            "HAM-Net's raw proposal (OIC) score: mean class activation inside the segment minus "
            "the mean just around it, plus 0.2 x the video-level class probability. Unbounded "
            "(seen from about 0.01 to 5+), higher ranks first; not a probability and not "
            "comparable across models: use `confidence` to decide whether to trust a segment."
        )
    )
    confidence: float | None = Field(
        None, ge=0, le=1,
        description=(
            "calibrated probability that the segment is a true detection (right class, "
            "temporal IoU >= 0.5 with a real instance), measured on the model's held-out "
            "videos. Only meaningful for videos like those (see the result's `domain`); null "
            "when the bundle has no calibration."
        ),
    )


class Domain(BaseModel):
    """Whether the video looks like what the model was trained on."""

    in_distribution: bool = Field(
        description="`score <= threshold`. false: the video's features are unlike those of "
        "the videos the model was trained on; its segments (and their confidence) are "
        "unlikely to mean anything")
    score: float = Field(
        description="out-of-domain score of the video's features against the training "
        "videos' features: higher is less like them (the bundle's check, named in "
        "`GET /v1/models` `card.domain.method`: currently the fraction of feature values "
        "outside the range they take on the training videos)")
    threshold: float = Field(
        description="the bundle's cut-off: the largest score an in-domain video gets, chosen "
        "on held-out in-domain videos (a high quantile times a safety margin)")


class ClassScore(BaseModel):
    model_config = ConfigDict(extra="allow")
    label: str
    score: float


class ResultVideo(BaseModel):
    model_config = ConfigDict(extra="allow")
    duration: float
    fps: float
    width: int
    height: int


class Result(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    video: ResultVideo
    model: ResultModel
    segments: list[Segment]
    classes: list[ClassScore]
    domain: Domain | None = Field(
        None, description="whether the video looks like what the model was trained on; null "
        "when the bundle has no domain check")
    attention: list[float] | None = Field(None, description="attention per snippet, [0, 1]")
    snippet_seconds: float | None = None


class ActivityNetDetection(BaseModel):
    label: str
    score: float
    segment: list[float] = Field(min_length=2, max_length=2)


class ActivityNetResult(BaseModel):
    version: str
    results: dict[str, list[ActivityNetDetection]]
    external_data: dict[str, Any] = Field(default_factory=dict)


class CardClass(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None


class TrainingData(BaseModel):
    model_config = ConfigDict(extra="allow")
    source: str | None = Field(None, description="where the training videos come from")
    videos: int | None = Field(None, description="number of training videos")
    classes: int | None = Field(None, description="number of classes")
    description: str | None = None


class HeldOutMetrics(BaseModel):
    """Detection quality on videos the training never saw."""

    model_config = ConfigDict(extra="allow")
    tiou: list[float] = Field(default_factory=list, description="tIoU thresholds")
    mAP: list[float] = Field(default_factory=list,  # noqa: N815
                             description="detection mAP (fraction) at each tIoU threshold")
    average_mAP: float | None = Field(None, description="mean of `mAP`")  # noqa: N815
    videos: int | None = Field(None, description="held-out videos")
    instances: int | None = Field(None, description="action instances in them")
    seed: int | None = None
    note: str | None = None


class ModelCard(BaseModel):
    """What the model is, what it was trained on, what it is for and what it cannot do."""

    model_config = ConfigDict(extra="allow")
    format: str | None = Field(None, description="`hamnet-card/1`")
    title: str | None = None
    summary: str | None = None
    synthetic: bool | None = Field(
        None, description="true: the synthetic demo model, trained only on rendered motion "
        "patterns; it does not recognise real-world actions")
    training_data: TrainingData | None = None
    classes: list[CardClass] = Field(default_factory=list,
                                     description="each class and what it looks like")
    backbone: str | dict[str, Any] | None = Field(None, description="feature extractor")
    flow_method: str | None = Field(None, description="optical flow algorithm of the features")
    intended_use: str | None = None
    limitations: list[str] = Field(default_factory=list)
    metrics: HeldOutMetrics | None = Field(
        None, description="held-out detection mAP (null: not measured)")
    calibration: dict[str, Any] | None = Field(
        None, description="how `confidence` was calibrated and how well it holds on held-out "
        "videos (method, expected calibration error `ece`, segments)")
    domain: dict[str, Any] | None = Field(
        None, description="the out-of-domain check: method, threshold, held-out videos "
        "flagged")


class PostprocessSettings(BaseModel):
    """The post-processing in effect: the bundle's ``profile`` resolved into the values every
    flag actually takes (``official`` forces every fix off, ``fixed`` turns every fix on)."""

    model_config = ConfigDict(extra="allow")
    profile: str = Field(description="`official` (the official code's output, quirks "
                         "included), `fixed` (every quirk fix on) or `custom`")
    rat: int | None = Field(None, description="top-k divisor of the video-level score")
    class_thresh: float | None = Field(None, description="video-level probability a class "
                                       "needs to be localized at all")
    act_thresh_params: list[float] | None = Field(
        None, description="attention thresholds: `numpy.linspace(start, stop, num)`")
    gamma_oic: float | None = Field(None, description="weight of the video-level probability "
                                    "in the OIC score")
    oic_lambda: float | None = Field(None, description="outer region of the OIC score, as a "
                                     "fraction of the segment length on each side")
    nms_sigma: float | None = Field(None, description="Gaussian soft-NMS sigma")
    scale: float | None = None
    fps: float | None = Field(None, description="frame rate the snippets were cut at")
    snippet_frames: int | None = Field(None, description="frames per snippet")
    fix_snippet0: bool = Field(description="keep a proposal when snippet 0 alone passes")
    fix_symmetric_outer: bool = Field(description="symmetric outer region of the OIC score")
    fix_nms_seconds: bool = Field(description="no +1 s in soft-NMS lengths and intersections")
    nms_score_floor: float | None = Field(
        None, description="proposals whose soft-NMS score falls below this are dropped "
        "(null: none)")
    max_proposals_per_class: int | None = Field(
        None, description="proposals kept per class and video (null: all)")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    checksum: str
    created: str | None = None
    classes: list[str]
    backbone: dict[str, Any]
    synthetic: bool = Field(
        description="true: this is the synthetic demo model, trained only on rendered motion "
        "patterns; it will not recognise real-world actions")
    notice: str | None = Field(
        None, description="what a user must know before trusting a result (set for the "
        "synthetic demo model)")
    card: ModelCard | None = Field(None, description="the model card (null: the bundle has "
                                   "none)")
    calibrated: bool = Field(
        description="whether results carry a calibrated `confidence` per segment (false: "
        "`confidence` is null and `min_score` filters on the raw `score`)")
    postprocess: PostprocessSettings = Field(
        description="post-processing in effect: the profile and the effective value of every "
        "flag")
    providers: list[str] = Field(
        default_factory=list, description="execution providers the live workers report"
    )
    ref: str = Field("default", description="what to send as `model=` with `POST /v1/jobs` "
                     "to get exactly this version: `default` or `NAME@VERSION`")
    registry_name: str = Field("default", description="the model's name in the registry "
                               "(`default`: the deployment's own model)")
    registry_version: int = Field(1, ge=1, description="version in the registry (immutable)")
    versions: list[int] = Field(default_factory=list, description="every version of this "
                                "name the caller may use, oldest first")
    shared: bool = Field(True, description="readable by every caller (the default model and "
                         "operator-published models); false: the caller's own")
    published: str | None = Field(None, description="when this version was published")
    size_bytes: int | None = Field(None, description="total size of the bundle's files")
    source: dict[str, Any] | None = Field(None, description="where the version came from, "
                                          "e.g. `{\"training\": id, \"dataset\": id}`")


class ModelList(BaseModel):
    """``models[0]`` is the default model (unchanged from before the registry); the caller's
    own and the shared models follow, each at its latest version."""

    models: list[ModelInfo]


class ModelVersions(BaseModel):
    name: str = Field(description="registry name")
    versions: list[ModelInfo] = Field(description="oldest first; each with its full card")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Any] = Field(default_factory=dict)


class DatasetItemError(BaseModel):
    code: str
    message: str
    line: int | None = Field(None, description="line of labels.csv (1: the header)")
    member: str | None = Field(None, description="archive member")


class Dataset(BaseModel):
    """A labelled dataset (docs/TRAINING.md): ``validating`` -> ``ready`` | ``failed``."""

    id: str
    name: str
    status: Literal["validating", "ready", "failed"]
    stage: str | None = None
    progress: int = 0
    error: DatasetItemError | None = None
    errors: list[DatasetItemError] = Field(default_factory=list, description="one per bad "
                                           "video or labels.csv line")
    videos: int = 0
    classes: dict[str, int] = Field(default_factory=dict, description="videos per label")
    size_bytes: int | None = None
    filename: str | None = None
    created_at: str
    updated_at: str | None = None
    finished_at: str | None = None
    links: dict[str, str] = Field(default_factory=dict)


class DatasetList(BaseModel):
    datasets: list[Dataset]
    total: int


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$", description="a `ready` dataset")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="registry name of "
                      "the model it publishes (`model=NAME` on jobs)")
    backbone: Literal["motion"] = Field("motion", description="feature extractor")
    epochs: int | None = Field(None, ge=1, le=500, description="default: 4800 / the dataset's "
                                "videos, within 10-100 (60 for 80 videos, 20 for 240)")
    validation_fraction: float | None = Field(None, ge=0.0, le=0.5, description="share of "
                                              "videos held out for validation (default 0.2)")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="split and init seed")


class Training(BaseModel):
    """A training job; `history` has one row per finished epoch (losses, validation mAP)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    dataset: str
    backbone: str
    epochs: int
    validation_fraction: float
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str | None = None
    progress: int = 0
    epoch: int = 0
    history: list[dict[str, Any]] = Field(default_factory=list)
    error: ErrorDetail | None = None
    model: dict[str, Any] | None = Field(None, description="the published model: name, "
                                         "version, checksum, ref (send as `model=`)")
    metrics: dict[str, Any] | None = None
    created_at: str
    links: dict[str, str] = Field(default_factory=dict)


class TrainingList(BaseModel):
    trainings: list[Training]
    total: int


class BatchRequest(BaseModel):
    """``POST /v1/batches``: `sources` or `s3_prefix`, and the job options for all of them."""

    model_config = ConfigDict(extra="forbid")
    sources: list[str] | None = Field(None, description="source URLs, one job each")
    s3_prefix: str | None = Field(None, description="`s3://bucket/prefix/`: one job per video "
                                  "object under it (by extension)")
    output_uri: str | None = Field(None, description="`s3://bucket/prefix/` or `same`")
    model: str | None = None
    min_score: float | None = Field(None, ge=0, le=1)
    min_raw_score: float | None = None
    include: list[str] | str | None = None
    exclude: list[str] | str | None = None
    callback_url: str | None = None
    tag: str | None = Field(None, max_length=200)


class BatchCounts(BaseModel):
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = Field(0, description="jobs whose records are gone (TTL)")


class BatchJob(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    source: str
    error: ErrorDetail | None = None
    output: OutputInfo | None = None
    links: dict[str, str] = Field(default_factory=dict)


class Batch(BaseModel):
    id: str
    status: Literal["active", "done"] = Field(description="`done`: every job is finished")
    created_at: str
    s3_prefix: str | None = None
    output_uri: str | None = None
    tag: str | None = None
    counts: BatchCounts
    jobs: list[BatchJob]
    links: dict[str, str] = Field(default_factory=dict)


class BatchList(BaseModel):
    batches: list[Batch]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


# ---- live streams (docs/STREAMS.md) -----------------------------------------------------------


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048, description="rtsp://, rtmp://, an HLS playlist "
                     "(https://.../index.m3u8) or an http(s) progressive stream")
    model: str | None = Field(None, max_length=200, description="`default`, `name` or "
                              "`name@version`; none: the default model")
    callback_url: str | None = Field(None, max_length=2048, description="POSTed every "
                                     "segment as it closes, and the end, signed "
                                     "(`Hamnet-Signature`); public http(s) hosts only")
    tag: str | None = Field(None, max_length=200, description="free text echoed back")


class StreamSegment(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: int = Field(description="event sequence number (the SSE `id`)")
    label: str
    label_id: int
    start: float = Field(description="stream time, seconds since the stream's first frame")
    end: float
    score: float
    confidence: float | None = None
    start_at: float | None = Field(None, description="unix time of `start`")
    end_at: float | None = None
    stream_time: float = Field(description="how far the stream had played when published")
    published_at: float = Field(description="unix time the segment was published")


class Stream(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    url: str
    status: Literal["queued", "running", "finished", "failed", "stopped"]
    state: str | None = Field(None, description="while running: connecting, live, "
                              "reconnecting")
    error: ErrorDetail | None = None
    created_at: str
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    origin_at: float | None = Field(None, description="unix time of stream time 0")
    model: dict[str, Any] | None = None
    callback_url: str | None = None
    tag: str | None = None
    attempts: int = 0
    reconnects: int = Field(0, description="times the source was opened again")
    window: dict[str, Any] | None = Field(None, description="the sliding window in use "
                                          "(seconds; docs/STREAMS.md)")
    segments: int = Field(0, description="segments published so far")
    last_seq: int = 0
    stream_seconds: float = Field(0.0, description="stream time processed so far")
    callbacks: dict[str, int] = Field(default_factory=dict)
    recent: list[StreamSegment] | None = Field(None, description="the rolling result: the "
                                               "latest segments, oldest first")
    links: dict[str, str] = Field(default_factory=dict)


class StreamList(BaseModel):
    streams: list[Stream]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None
