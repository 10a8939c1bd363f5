"""``GET /v1/models``: what the service runs, so a result can be traced to its exact model."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import caller
from hamnet_service.errors import ApiError, responses
from hamnet_service.schemas import ModelInfo, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, responses=responses(401, 503),
            summary="The model bundle in service: classes, backbone, checksum, provider")
async def list_models(_: str = Depends(caller)) -> ModelList:
    b = await run_in_threadpool(state.model_state.get)
    if b is None:
        raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
    try:
        workers = state.store().workers()
    except Exception:
        workers = []
    providers = sorted({w["provider"] for w in workers if w.get("provider")})
    m = b.manifest
    return ModelList(models=[ModelInfo(
        name=b.name, version=b.version, checksum=b.checksum, created=b.created,
        classes=list(b.classes), backbone=dict(m.get("backbone") or {}),
        postprocess=dict(m.get("postprocess") or {}), providers=providers,
    )])
