"""``/v1/trainings``: train a model on a ready dataset, follow it, cancel it.
HTTP only; the work is in :mod:`hamnet_service.services.trainings`."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import Blobs, Datasets, OwnedTraining, Owner, Publisher, Trainings
from hamnet_service.errors import responses
from hamnet_service.schemas import Training, TrainingList, TrainingRequest
from hamnet_service.services import trainings as service

router = APIRouter(prefix="/v1", tags=["trainings"])


@router.post("/trainings", status_code=202, response_model=Training,
             summary="Train HAM-Net on a ready dataset (video-level labels only)",
             responses={202: {"description": "Accepted: the training is queued", "headers": {
                 "Location": {"description": "URL of the training",
                              "schema": {"type": "string"}}}},
                 **responses(400, 401, 404, 409, 422, 500, 503)})
async def create_training(body: TrainingRequest, response: Response, owner: Owner,
                          datasets: Datasets, store: Trainings,
                          publisher: Publisher) -> Training:
    rec = await run_in_threadpool(service.start_training, body, owner, datasets, store,
                                  publisher)
    response.headers["Location"] = f"/v1/trainings/{rec.id}"
    return Training.model_validate(service.view(rec))


@router.get("/trainings", response_model=TrainingList, summary="The caller's trainings",
            responses=responses(401, 403, 422, 503))
def list_trainings(owner: Owner, store: Trainings, limit: int = Query(50, ge=1, le=200),
                   offset: int = Query(0, ge=0, le=100_000)) -> TrainingList:
    recs, total = service.list_trainings(owner, store, limit, offset)
    return TrainingList(trainings=[Training.model_validate(service.view(r)) for r in recs],
                        total=total)


@router.get("/trainings/{training_id}", response_model=Training,
            summary="Status, stage, epoch, loss and validation-mAP history of a training",
            responses=responses(401, 404, 422, 503))
def get_training(rec: OwnedTraining) -> Training:
    return Training.model_validate(service.view(rec))


@router.delete("/trainings/{training_id}", status_code=204, response_class=Response,
               summary="Cancel a training (or forget a finished one)",
               responses=responses(401, 404, 422, 503))
async def delete_training(rec: OwnedTraining, store: Trainings, blobs: Blobs) -> Response:
    await run_in_threadpool(service.cancel_training, rec, store, blobs)
    return Response(status_code=204)
