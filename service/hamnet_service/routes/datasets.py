"""``/v1/datasets``: upload a labelled archive, read its validation, list, delete.
HTTP only; the work is in :mod:`hamnet_service.services.datasets`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import Blobs, Datasets, OwnedDataset, Owner, Settings, Storage
from hamnet_service.errors import responses
from hamnet_service.schemas import Dataset, DatasetList
from hamnet_service.services import datasets as service

router = APIRouter(prefix="/v1", tags=["datasets"])

_UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary", "description":
                 "a .zip, .tar or .tar.gz holding videos and labels.csv (columns "
                 "`video,labels`, labels separated by `;`)"},
        "name": {"type": "string", "maxLength": 100, "description": "display name"},
    },
}


@router.post(
    "/datasets", status_code=202, response_model=Dataset,
    summary="Upload a labelled archive (videos + labels.csv); validated in the background",
    responses={202: {"description": "Accepted: `validating`, then `ready` or `failed`",
                     "headers": {"Location": {"description": "URL of the dataset",
                                              "schema": {"type": "string"}}}},
               **responses(400, 401, 408, 413, 415, 422, 500, 503, 507)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}}},
)
async def create_dataset(request: Request, response: Response, owner: Owner,
                         settings: Settings, store: Datasets, storage: Storage,
                         blobs: Blobs) -> Dataset:
    rec = await service.submit_dataset(request, owner=owner, settings=settings, store=store,
                                       storage=storage, blobs=blobs)
    response.headers["Location"] = f"/v1/datasets/{rec.id}"
    return Dataset.model_validate(service.view(rec))


@router.get("/datasets", response_model=DatasetList, summary="The caller's datasets",
            responses=responses(401, 403, 422, 503))
def list_datasets(owner: Owner, store: Datasets, limit: int = Query(50, ge=1, le=200),
                  offset: int = Query(0, ge=0, le=100_000)) -> DatasetList:
    recs, total = service.list_datasets(owner, store, limit, offset)
    return DatasetList(datasets=[Dataset.model_validate(service.view(r)) for r in recs],
                       total=total)


@router.get("/datasets/{dataset_id}", response_model=Dataset,
            summary="Status, video count, class counts and errors of a dataset",
            responses=responses(401, 404, 422, 503))
def get_dataset(rec: OwnedDataset) -> Dataset:
    return Dataset.model_validate(service.view(rec))


@router.delete("/datasets/{dataset_id}", status_code=204, response_class=Response,
               summary="Delete a dataset and its files", responses=responses(401, 404, 422, 503))
async def delete_dataset(rec: OwnedDataset, store: Datasets, blobs: Blobs) -> Response:
    await run_in_threadpool(service.delete_dataset, rec, store, blobs)
    return Response(status_code=204)
