"""The model registry through the real stack: Redis, one Celery worker started *before* any
model is published, the gateway with two API keys, the operator CLI publishing bundles.

A job with ``model=NAME`` is resolved at submission to an immutable version, the running
worker loads that version on first use (no restart) and the result names it; another key's
model and an unknown one are 404 (nothing of the upload stays behind); a version in use
cannot be deleted; the worker's bounded cache drops the least recently used bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hamnet_jobs.record import new_job_id
from hamnet_jobs.store import JobStore, connect
from hamnet_procs import RedisServer, start_gateway, start_worker, wait_for, wait_worker_ready

pytestmark = [pytest.mark.service]

KEYS = {"alpha": "alpha-key-7c1d2e", "beta": "beta-key-93fa01"}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def err(r: httpx.Response) -> str:
    return r.json()["error"]["code"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, service_env: dict[str, str]):
    """Own Redis, worker and gateway (API keys on; model cache of one registry bundle)."""
    root = tmp_path_factory.mktemp("registry")
    redis_srv = RedisServer(root / "redis").start()
    env = {**service_env, "HAMNET_REDIS_URL": redis_srv.url,
           "HAMNET_DATA_DIR": str(root / "data"), "HAMNET_MODEL_CACHE_SIZE": "1",
           "HAMNET_API_KEYS": ",".join(KEYS.values())}
    worker = start_worker(env, root / "worker.log")
    gateway = None
    try:
        info = wait_worker_ready(redis_srv.client(), worker)
        gateway, url = start_gateway(env, root / "gateway.log")
        yield {"url": url, "env": env, "redis": redis_srv, "worker": worker,
               "worker_name": info["name"], "data": root / "data"}
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()
        redis_srv.stop()


@pytest.fixture()
def api(stack):
    with httpx.Client(base_url=stack["url"], timeout=120) as c:
        yield c


def variant(bundle_dir: Path, dest: Path, name: str) -> Path:
    """The test bundle as another model: same weights, its own manifest name and card title,
    hence its own checksum (the registry and the worker's cache key on it)."""
    shutil.copytree(bundle_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["name"] = name
    if isinstance(manifest.get("card"), dict):
        manifest["card"]["title"] = f"{name} (registry test)"
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hamnet_service.models_cli", "models", *args],
                          env=stack["env"], capture_output=True, text=True, timeout=120)


def submit(api: httpx.Client, video: Path, who: str = "alpha", **fields: str) -> httpx.Response:
    with open(video, "rb") as fh:
        return api.post("/v1/jobs", headers=auth(who), data=fields,
                        files={"file": (video.name, fh, "video/mp4")})


def finished(api: httpx.Client, job_id: str, who: str = "alpha") -> dict:
    def done() -> dict | None:
        job = api.get(f"/v1/jobs/{job_id}", headers=auth(who)).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, 240, f"job {job_id}")


def heartbeat(stack) -> dict:
    raw = stack["redis"].client().get(f"hamnet:worker:{stack['worker_name']}")
    return json.loads(raw)


def leftovers(stack) -> list[str]:
    data = stack["data"]
    return sorted(p.name for sub in ("incoming", "uploads") for p in (data / sub).glob("*"))


def test_published_model_serves_without_restart(stack, api, bundle_dir: Path, small_video: Path,
                                                tmp_path: Path) -> None:
    pid = stack["worker"].pid
    src = variant(bundle_dir, tmp_path / "custom", "custom-mini")
    out = cli(stack, "publish", str(src), "--name", "custom", "--api-key", KEYS["alpha"],
              "--source", '{"training": "t-test"}')
    assert out.returncode == 0, out.stderr
    published = json.loads(out.stdout)
    assert published["ref"] == "custom@1" and published["source"] == {"training": "t-test"}

    models = api.get("/v1/models", headers=auth("alpha")).json()["models"]
    assert models[0]["ref"] == "default" and models[0]["registry_name"] == "default"
    mine = [m for m in models if m["registry_name"] == "custom"]
    assert len(mine) == 1 and mine[0]["ref"] == "custom@1" and mine[0]["shared"] is False
    assert mine[0]["checksum"] == published["checksum"] and mine[0]["versions"] == [1]
    assert mine[0]["card"]["title"] == "custom-mini (registry test)"
    detail = api.get("/v1/models/custom", headers=auth("alpha")).json()
    assert [v["registry_version"] for v in detail["versions"]] == [1]

    r = submit(api, small_video, model="custom")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["model"]["ref"] == "custom@1" and job["model"]["name"] == "custom-mini"
    assert job["model"]["checksum"] == published["checksum"]
    done = finished(api, job["id"])
    assert done["status"] == "succeeded", done
    result = api.get(f"/v1/jobs/{job['id']}/result", headers=auth("alpha")).json()
    assert result["model"]["ref"] == "custom@1"
    assert result["model"]["name"] == "custom-mini"
    assert result["model"]["checksum"] == published["checksum"]
    assert stack["worker"].pid == pid and stack["worker"].alive()  # the same worker
    # the heartbeat is rewritten every few seconds: wait for the one after the load
    deadline = time.monotonic() + 30
    while True:
        hb = heartbeat(stack)
        refs = [m["ref"] for m in hb["model"]["registry_models"]]
        if refs == ["custom@1"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert hb["model_loaded"] and refs == ["custom@1"]

    # a job without model= still runs the default model
    plain = submit(api, small_video).json()
    assert plain["model"]["ref"] == "default"
    res = finished(api, plain["id"])
    assert res["status"] == "succeeded"
    default_result = api.get(f"/v1/jobs/{plain['id']}/result", headers=auth("alpha")).json()
    assert default_result["model"]["ref"] == "default"
    assert default_result["model"]["checksum"] == models[0]["checksum"] != published["checksum"]


def test_unknown_and_foreign_models_are_not_found(stack, api, small_video: Path) -> None:
    before = leftovers(stack)
    for who, ref in (("alpha", "nosuchmodel"), ("alpha", "custom@99"), ("beta", "custom")):
        r = submit(api, small_video, who=who, model=ref)
        assert r.status_code == 404 and err(r) == "model_not_found", (who, ref, r.text)
    r = submit(api, small_video, model="Not A Name")
    assert r.status_code == 422 and err(r) == "invalid_model_ref"
    assert leftovers(stack) == before  # nothing of those uploads stayed
    r = api.get("/v1/models/custom", headers=auth("beta"))
    assert r.status_code == 404 and err(r) == "model_not_found"
    listed = [m["ref"] for m in api.get("/v1/models", headers=auth("beta")).json()["models"]]
    assert listed == ["default"]
    r = api.delete("/v1/models/custom/versions/1", headers=auth("beta"))
    assert r.status_code == 404 and err(r) == "model_not_found"
    r = api.delete("/v1/models/default/versions/1", headers=auth("alpha"))
    assert r.status_code == 409 and err(r) == "model_protected"
    r = submit(api, small_video, model="custom", include="no-such-label")
    assert r.status_code == 422 and err(r) == "unknown_label"


def test_shared_model_is_readable_by_every_key(stack, api, bundle_dir: Path,
                                               tmp_path: Path) -> None:
    src = variant(bundle_dir, tmp_path / "team", "team-mini")
    out = cli(stack, "publish", str(src), "--name", "team")
    assert out.returncode == 0, out.stderr
    for who in KEYS:
        models = api.get("/v1/models", headers=auth(who)).json()["models"]
        team = [m for m in models if m["registry_name"] == "team"]
        assert team and team[0]["shared"] is True
    r = api.delete("/v1/models/team/versions/1", headers=auth("alpha"))
    assert r.status_code == 404  # shared models are the operator's to delete
    listing = cli(stack, "list")
    assert listing.returncode == 0 and "team@1" in listing.stdout
    assert cli(stack, "delete", "team@1").returncode == 0


def test_delete_in_use_is_refused(stack, api) -> None:
    store = JobStore(connect(stack["redis"].url))
    from hamnet_service.auth import owner_of

    model = api.get("/v1/models/custom", headers=auth("alpha")).json()["versions"][0]
    # a queued job of alpha's on custom@1 (recorded but not handed to a worker)
    job, _ = store.create({"id": new_job_id(), "owner": owner_of(KEYS["alpha"]), "sha256": "x",
                           "model": {"name": model["name"], "version": model["version"],
                                     "checksum": model["checksum"], "ref": "custom@1"}})
    store.mark_enqueued(job.id)
    r = api.delete("/v1/models/custom/versions/1", headers=auth("alpha"))
    assert r.status_code == 409 and err(r) == "model_in_use"
    assert api.delete(f"/v1/jobs/{job.id}", headers=auth("alpha")).status_code == 204
    r = api.delete("/v1/models/custom/versions/1", headers=auth("alpha"))
    assert r.status_code == 204, r.text
    assert api.get("/v1/models/custom", headers=auth("alpha")).status_code == 404
    assert not (stack["data"] / "models" / owner_of(KEYS["alpha"]) / "custom" / "1").exists()


def test_worker_cache_is_bounded(stack, api, bundle_dir: Path, small_video: Path,
                                 tmp_path: Path) -> None:
    refs = []
    for name in ("lru-a", "lru-b"):
        src = variant(bundle_dir, tmp_path / name, f"{name}-mini")
        out = cli(stack, "publish", str(src), "--name", name, "--api-key", KEYS["alpha"])
        assert out.returncode == 0, out.stderr
        job = submit(api, small_video, model=name).json()
        assert finished(api, job["id"])["status"] == "succeeded"
        refs.append(f"{name}@1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the next heartbeat reports the cache
            loaded = [m["ref"] for m in heartbeat(stack)["model"]["registry_models"]]
            if loaded == [refs[-1]]:
                break
            time.sleep(0.5)
        assert loaded == [refs[-1]]  # HAMNET_MODEL_CACHE_SIZE=1: the older one was dropped
