"""End to end over real processes: a rendered video with known ground truth goes through the
gateway, Redis and a Celery worker; the main action instance must come back with the right
label and tIoU >= 0.5, the result must validate against the published schema, and the job's
JSON must be in Redis."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from hamnet.bundle import load_bundle
from hamnet_procs import ROOT

pytestmark = [pytest.mark.service, pytest.mark.slow]


def wait_terminal(api: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        seen.append((job["status"], job["stage"], job["progress"]))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            job["_seen"] = seen
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {seen[-1]} after {timeout} s")


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def gt_video(tmp_path_factory, bundle_dir) -> tuple[Path, dict]:
    """A video rendered like the bundle's training videos (its scene settings travel in the
    manifest), from a seed the bundle never saw."""
    from hamnet.bundle import load_bundle
    from hamnet.demo.synth import SceneConfig, make_plan, render_frames, write_mp4

    scene = dict((load_bundle(bundle_dir).training or {}).get("scene") or {})
    known = set(SceneConfig.__dataclass_fields__)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in scene.items() if k in known}
    kw.update(instances=(1, 2), classes_per_video=(1, 1))
    cfg = SceneConfig(**kw)
    plan = make_plan(5150, 0, cfg)
    out = tmp_path_factory.mktemp("gt") / "gt.mp4"
    write_mp4(out, render_frames(plan), plan.fps)
    inst = [{"label": i.label, "start": float(i.start), "end": float(i.end)}
            for i in plan.instances]
    return out, {"duration": plan.duration, "instances": inst}


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((ROOT / "openapi.yaml").read_text())


def validate(schema: dict, name: str, doc: dict) -> None:
    import jsonschema

    jsonschema.validate(doc, {"$ref": f"#/components/schemas/{name}",
                              "components": schema["components"]})


def test_known_action_is_found(api, worker, gt_video, schema, redis_server, data_dir,
                               bundle_dir) -> None:
    video, gt = gt_video
    with open(video, "rb") as fh:
        r = api.post("/v1/jobs", files={"file": ("gt.mp4", fh, "video/mp4")})
    assert r.status_code == 202, r.text
    validate(schema, "Job", r.json())
    job = wait_terminal(api, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100 and job["attempts"] == 1
    stages = [s for _, s, _ in job["_seen"] if s]
    assert stages == sorted(stages, key=["decode", "features", "localize"].index)
    progress = [p for _, _, p in job["_seen"]]
    assert progress == sorted(progress), "progress never goes back"

    result = api.get(f"/v1/jobs/{job['id']}/result").json()
    validate(schema, "Result", result)
    assert abs(result["video"]["duration"] - gt["duration"]) < 0.2
    for seg in result["segments"]:
        assert 0 <= seg["start"] < seg["end"] <= result["video"]["duration"] + 1e-6
        assert math.isfinite(seg["score"])  # OIC score: unbounded, documented in the schema
    anet = api.get(f"/v1/jobs/{job['id']}/result", params={"format": "activitynet"}).json()
    validate(schema, "ActivityNetResult", anet)
    assert len(anet["results"][job["id"]]) == len(result["segments"])

    # The job's JSON and its result are in Redis, with a TTL; the upload is gone.
    r_ = redis_server.client()
    stored = json.loads(r_.get(f"hamnet:job:{job['id']}"))
    assert stored["status"] == "succeeded" and r_.ttl(f"hamnet:job:{job['id']}") > 0
    assert json.loads(r_.get(f"hamnet:result:{job['id']}"))["segments"] == result["segments"]
    assert not list((data_dir / "uploads").glob(f"{job['id']}*"))
    assert not (data_dir / "scratch" / job["id"]).exists()

    # The service's bundle is the trained mini bundle (hamnet.demo): its own held-out mAP@0.5
    # must be real, and the main instance of this unseen video must be found.
    held_out = (load_bundle(bundle_dir).training or {}).get("held_out") or {}
    at05 = dict(zip([round(t, 2) for t in held_out.get("tiou", [])], held_out.get("mAP", []),
                    strict=False)).get(0.5)
    assert at05 is not None and at05 > 0.05, held_out
    main = max(gt["instances"], key=lambda i: i["end"] - i["start"])
    best = max((tiou((s["start"], s["end"]), (main["start"], main["end"]))
                for s in result["segments"] if s["label"] == main["label"]), default=0.0)
    assert best >= 0.5, (main, result["segments"][:10])


def test_filters_are_applied(api, worker, gt_video) -> None:
    video, gt = gt_video
    label = gt["instances"][0]["label"]
    r = api.post("/v1/jobs", files={"file": ("gt.mp4", video.read_bytes(), "video/mp4")},
                 data={"exclude": label, "min_score": "0.05"})
    assert r.status_code == 202, r.text
    job = wait_terminal(api, r.json()["id"])
    assert job["status"] == "succeeded"
    result = api.get(f"/v1/jobs/{job['id']}/result").json()
    # min_score filters on the calibrated confidence (the raw score when a bundle has none)
    assert all(s["label"] != label for s in result["segments"])
    assert all((s["confidence"] if s["confidence"] is not None else s["score"]) >= 0.05
               for s in result["segments"])


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25:duration=150", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "ultrafast", "-y", str(out)], check=True)
    return out


def test_cancel_while_running(api, worker, long_video, data_dir, redis_server) -> None:
    r = api.post("/v1/jobs", files={"file": ("long.mp4", long_video.read_bytes(), "video/mp4")})
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while api.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    # The worker notices at its next progress report and removes its files.
    deadline = time.monotonic() + 60
    while any(json.loads(v).get("busy_job") == job_id
              for v in redis_server.client().mget(
                  list(redis_server.client().scan_iter("hamnet:worker:*"))) if v):
        assert time.monotonic() < deadline, "worker kept running a cancelled job"
        time.sleep(0.2)
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert api.get(f"/v1/jobs/{job_id}/result").status_code == 409
    assert redis_server.client().get(f"hamnet:result:{job_id}") is None
    assert not list((data_dir / "uploads").glob(f"{job_id}*"))
    assert not (data_dir / "scratch" / job_id).exists()
