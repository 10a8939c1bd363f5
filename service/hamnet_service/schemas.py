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


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Any] = Field(default_factory=dict)
