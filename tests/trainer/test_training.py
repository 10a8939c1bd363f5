"""Training through HTTP on a real stack: redis-server, gateway, training worker
(``hamnet worker --queues train``) and inference worker, all separate processes.

A dataset of 12 short rendered videos with video-level labels only is uploaded as a tar.gz;
a 2-epoch training publishes a model that a job then uses with ``model=``; a second training
on the same dataset reuses the cached features; a training whose worker is killed with
``kill -9`` resumes from its last epoch checkpoint (the epoch counter continues, it does not
start from zero); DELETE cancels a running training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tarfile
import time
from collections import OrderedDict
from pathlib import Path

import httpx
import pytest
from hamnet_procs import (
    ROOT,
    Proc,
    RedisServer,
    hamnet_argv,
    start_gateway,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def _archive(rendered: Path) -> bytes:
    rows: OrderedDict[str, list[str]] = OrderedDict()
    with open(rendered / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["video"], []).append(r["label"])
    labels = "video,labels\n" + "".join(f"{v},{';'.join(x)}\n" for v, x in rows.items())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = labels.encode()
        info = tarfile.TarInfo("clips/labels.csv")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
        for v in rows:
            t.add(rendered / "videos" / f"{v}.mp4", f"clips/{v}.mp4")
    return buf.getvalue()


def _trainer(env: dict[str, str], log: Path) -> Proc:
    return Proc("trainer", hamnet_argv("worker", "--queues", "train", "--loglevel", "INFO"),
                env, log).start()


def _trainer_up(r, proc: Proc) -> None:  # noqa: ANN001
    wait_for(lambda: any(r.scan_iter(match="hamnet:trainer:*")), 180, "trainer", proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path):
    base = tmp_path_factory.mktemp("trainer")
    redis = RedisServer(base / "redis").start()
    env = {**os.environ, "HAMNET_REDIS_URL": redis.url, "HAMNET_DATA_DIR": str(base / "data"),
           "HAMNET_BUNDLE": str(bundle_dir), "HAMNET_RATE_LIMIT_PER_MINUTE": "0",
           "HAMNET_HEARTBEAT_S": "1", "HAMNET_LEASE_S": "4", "HAMNET_TRAIN_THREADS": "1"}
    procs: dict[str, Proc] = {}
    try:
        procs["worker"] = start_worker(env, base / "worker.log")
        procs["trainer"] = _trainer(env, base / "trainer.log")
        gw, url = start_gateway(env, base / "gateway.log")
        procs["gateway"] = gw
        _trainer_up(redis.client(), procs["trainer"])
        rendered = base / "rendered"
        subprocess.run(hamnet_argv("synth", "--out", str(rendered), "--count", "12", "--seed",
                                   "5", "--duration", "10:14", "--classes", "spin,slide,pulse"),
                       check=True, cwd=ROOT, capture_output=True)
        yield {"url": url, "env": env, "base": base, "redis": redis, "procs": procs,
               "rendered": rendered}
    finally:
        for p in procs.values():
            p.stop()
        redis.stop()


def _poll(url: str, until: set[str], timeout: float, proc: Proc | None = None,
          pred=None) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    rec: dict = {}
    while time.monotonic() < deadline:
        rec = httpx.get(url, timeout=30).json()
        if rec.get("status") in until or (pred is not None and pred(rec)):
            return rec
        time.sleep(0.2)
    tail = proc.tail() if proc else ""
    raise AssertionError(f"{url} did not reach {until}: {json.dumps(rec)[:2000]}\n{tail}")


@pytest.fixture(scope="module")
def dataset(stack) -> dict:
    url = stack["url"]
    r = httpx.post(f"{url}/v1/datasets", files={"file": ("clips.tgz", _archive(
        stack["rendered"]))}, data={"name": "clips"}, timeout=120)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "validating"
    ds = _poll(f"{url}/v1/datasets/{r.json()['id']}", {"ready", "failed"}, 180)
    assert ds["status"] == "ready", ds
    assert ds["videos"] == 12 and set(ds["classes"]) == {"spin", "slide", "pulse"}
    return ds


def _train(url: str, dataset_id: str, name: str, epochs: int) -> dict:
    r = httpx.post(f"{url}/v1/trainings", json={"dataset": dataset_id, "name": name,
                                                "epochs": epochs}, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return r.json()


def test_train_publish_and_use_the_model(stack, dataset) -> None:
    url, trainer = stack["url"], stack["procs"]["trainer"]
    tr = _train(url, dataset["id"], "clips", 2)
    done = _poll(f"{url}/v1/trainings/{tr['id']}", {"succeeded", "failed", "cancelled"}, 600,
                 trainer)
    assert done["status"] == "succeeded", done
    assert [h["epoch"] for h in done["history"]] == [1, 2]
    assert all(h["loss"] > 0 and 0 <= h["val_map"] <= 1 for h in done["history"])
    assert done["split"] == {"train": 10, "validation": 2}
    assert done["metrics"]["feature_cache"] == {"hits": 0, "extracted": 12}
    ref = done["model"]["ref"]
    assert ref == "clips@1"
    video = sorted((stack["rendered"] / "videos").glob("*.mp4"))[0]
    r = httpx.post(f"{url}/v1/jobs", files={"file": (video.name, video.read_bytes())},
                   data={"model": ref}, timeout=60)
    assert r.status_code == 202, r.text
    job = _poll(f"{url}/v1/jobs/{r.json()['id']}", {"succeeded", "failed"}, 300,
                stack["procs"]["worker"])
    assert job["status"] == "succeeded", job
    res = httpx.get(f"{url}/v1/jobs/{job['id']}/result", timeout=30).json()
    assert res["model"]["ref"] == ref
    assert res["model"]["card"]["title"].startswith("clips: HAM-Net trained on dataset")
    assert {c["label"] for c in res["classes"]} == {"spin", "slide", "pulse"}

    # a second training on the same dataset reads the cached features: no video decoded
    tr2 = _train(url, dataset["id"], "clips", 1)
    done2 = _poll(f"{url}/v1/trainings/{tr2['id']}", {"succeeded", "failed"}, 600, trainer)
    assert done2["status"] == "succeeded", done2
    assert done2["metrics"]["feature_cache"] == {"hits": 12, "extracted": 0}
    assert done2["model"]["ref"] == "clips@2"


def test_killed_trainer_resumes_from_its_last_epoch(stack, dataset) -> None:
    url, env, base = stack["url"], stack["env"], stack["base"]
    tr = _train(url, dataset["id"], "resumed", 120)
    turl = f"{url}/v1/trainings/{tr['id']}"
    at = _poll(turl, {"succeeded", "failed"}, 600, stack["procs"]["trainer"],
               pred=lambda rec: rec.get("epoch", 0) >= 3)
    assert at["status"] == "running", at
    stack["procs"]["trainer"].kill9()
    killed_at = httpx.get(turl, timeout=30).json()["epoch"]
    assert killed_at < 120
    stack["procs"]["trainer"] = _trainer(env, base / "trainer2.log")
    done = _poll(turl, {"succeeded", "failed"}, 900, stack["procs"]["trainer"])
    assert done["status"] == "succeeded", done
    assert done["requeues"] >= 1 and done["attempts"] == 2
    assert done["resumed_from_epoch"] is not None and done["resumed_from_epoch"] >= 3
    assert done["resumed_from_epoch"] >= killed_at - 1  # at most the epoch in flight is redone
    # one row per epoch, in order: the counter continued instead of restarting at 1
    assert [h["epoch"] for h in done["history"]] == list(range(1, 121))


def test_delete_cancels_a_running_training(stack, dataset) -> None:
    url = stack["url"]
    tr = _train(url, dataset["id"], "cancelled", 400)
    turl = f"{url}/v1/trainings/{tr['id']}"
    at = _poll(turl, {"succeeded", "failed"}, 600, stack["procs"]["trainer"],
               pred=lambda rec: rec.get("epoch", 0) >= 1)
    assert at["status"] == "running", at
    assert httpx.delete(turl, timeout=30).status_code == 204
    assert httpx.get(turl, timeout=30).json()["status"] == "cancelled"
    r = stack["redis"].client()
    ckpt = Path(stack["env"]["HAMNET_DATA_DIR"]) / "blobs" / "trainings" / tr["id"]

    def stopped() -> bool:
        beats = [json.loads(r.get(k) or "{}") for k in r.scan_iter(match="hamnet:trainer:*")]
        return not ckpt.exists() and not any(b.get("busy_training") == tr["id"] for b in beats)

    wait_for(stopped, 120, "the trainer to stop the cancelled training",
             stack["procs"]["trainer"])
    assert httpx.get(turl, timeout=30).json()["epoch"] < 400
