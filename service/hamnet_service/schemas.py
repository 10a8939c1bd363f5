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


class ModelRef(BaseModel):
    name: str | None = None
    version: str | None = None
    checksum: str | None = None


class JobParams(BaseModel):
    min_score: float | None = None
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
            "HAM-Net proposal (OIC) score: mean class activation inside the segment minus the "
            "mean just around it, plus 0.2 x the video-level class probability. Unbounded "
            "(typically -1 to 3); higher is more confident; ranks detections, not a probability."
        )
    )


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
    model: dict[str, Any]
    segments: list[Segment]
    classes: list[ClassScore]
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


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    checksum: str
    created: str | None = None
    classes: list[str]
    backbone: dict[str, Any]
    postprocess: dict[str, Any] = Field(default_factory=dict)
    providers: list[str] = Field(
        default_factory=list, description="execution providers the live workers report"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Any] = Field(default_factory=dict)
