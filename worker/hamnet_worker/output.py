"""The two remote ends of a job: its input when it names a ``source_url`` (downloaded into the
attempt's scratch directory) and its result copy when it names an ``output_uri`` (a JSON object
in S3). Policy and transfer live in :mod:`hamnet_jobs.sources`; this module wires them to a
job record, its progress callback and the store.

Why the result copy is written *before* the job is marked succeeded: an attempt that dies
between the two is run again and writes the same object again (an idempotent overwrite),
whereas writing after ``finish`` could lose the copy for good. A failed write is recorded on
the job (``output.written: false`` and the error) and never fails the computed result.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hamnet_jobs.record import JobRecord, utcnow
from hamnet_jobs.sources import SourceError, download, parse_s3_uri, s3_client

log = logging.getLogger("hamnet.worker")

# Decoder codes that, for a downloaded file, mean "what the URL served is not a video".
_NOT_VIDEO = frozenset({"not_a_video", "no_video_stream", "invalid_video", "corrupt_video"})


def input_path(job: JobRecord, storage: Any) -> Path:
    """Where this attempt keeps the video it decodes."""
    if job.source_url:
        return storage.scratch_dir(job.id) / f"{job.id}.video"
    return storage.upload_path(job.id)


def fetch_input(job: JobRecord, storage: Any, settings: Any, progress: Any) -> Path:
    """The job's video as a local file: the upload (``storage.fetch``) or, for a remote
    source, a fresh download into the scratch directory (an earlier attempt's scratch was
    released with it, so a redelivered job downloads again; nothing is shared between
    attempts). ``progress`` is called as the bytes arrive: it renews nothing but checks for
    cancellation and a lost lease, so a DELETE stops a long download too."""
    if not job.source_url:
        return storage.fetch(job.id)

    def on_bytes(n: int, total: int | None) -> None:
        progress("decode", 0.0)

    dest = input_path(job, storage)
    got = download(job.source_url, dest, settings, on_progress=on_bytes)
    log.info("job %s: downloaded %d bytes (%d resumes, %d restarts)", job.id, got.size,
             got.resumes, got.restarts)
    return got.path


def source_code(job: JobRecord, code: str) -> str:
    """A decoder error code as the job reports it: for a remote source, ``source_not_a_video``
    when the downloaded bytes are not a decodable video (limits keep their own codes)."""
    return "source_not_a_video" if job.source_url and code in _NOT_VIDEO else code


def write_output(job: JobRecord, result: dict[str, Any], settings: Any,
                 client: Any = None) -> dict[str, Any] | None:
    """Write the result JSON to ``job.output['uri']``; returns the job's new ``output``
    (``written`` true, or false with the ``error``), or None when the job names none."""
    target = (job.output or {}).get("uri")
    if not target:
        return None
    body = {**result, "id": job.id}
    if job.source:
        body["source"] = job.source.get("uri")
    try:
        loc = parse_s3_uri(target, field="output_uri")
        if client is None:
            client = s3_client(settings.s3_endpoint_url, settings.s3_region,
                               settings.source_timeout_s)
        client.put_object(Bucket=loc.bucket, Key=loc.key,
                          Body=json.dumps(body, indent=1).encode(),
                          ContentType="application/json")
    except SourceError as e:
        return {"uri": target, "written": False, "error": e.message}
    except Exception as e:  # botocore's ClientError, endpoint errors ...: reported on the job
        log.warning("job %s: writing the result to %s failed: %s", job.id, target,
                    f"{type(e).__name__}: {e}"[:300])
        code = str(((getattr(e, "response", None) or {}).get("Error") or {}).get("Code", ""))
        return {"uri": target, "written": False,
                "error": f"the result could not be written ({code or type(e).__name__})"}
    return {"uri": target, "written": True, "written_at": utcnow()}
