"""The bad-input corpus (``corpus.py``) against one gateway and one worker: every kind gets its
documented rejection or job outcome, no answer is a 5xx, no message leaks a server path, the
worker never restarts, and no file is left behind (uploads, partials, scratch or TMPDIR).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from corpus import CASES, LIMITS, VIDEO_CODES, Case
from relprocs import Stack, wait_until

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def env(stack_factory, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("proc-tmp")
    stack = stack_factory("corpus", workers=1, TMPDIR=str(tmp), **LIMITS)
    first = stack.worker_infos()
    gen = tmp_path_factory.mktemp("corpus")
    from corpus import _good

    # One good job first: what the processes keep in TMPDIR for their lifetime (the prefork
    # pool's pymp-* directory, runtime session files) is there before the corpus starts.
    warm = stack.submit(_good(gen))
    assert stack.wait_job(warm["id"])["status"] == "succeeded"
    return {"stack": stack, "tmp": tmp, "tmp_before": sorted(tmp.iterdir()), "gen": gen,
            "children": {i["pid"] for i in first}, "jobs": []}


def _no_paths(message: str, stack: Stack) -> None:
    """Error messages are for clients: they must not reveal where the service keeps files."""
    for secret in (str(stack.data_dir), str(stack.root), "/tmp/", "/work/", "uploads/",
                   ".video", ".part"):
        assert secret not in message, f"message leaks {secret!r}: {message}"


def _send(stack: Stack, case: Case, gen: Path):
    req = case.make(gen)
    with stack.client() as c:
        return c.post("/v1/jobs", files=req.files, data=req.data or None, content=req.content,
                      headers=req.headers)


def _check(stack: Stack, env: dict, case: Case, r) -> None:
    exp = case.expect
    assert r.status_code < 500, r.text
    assert r.status_code in exp.status, f"{case.kind}: {r.status_code} {r.text}"
    body = r.json()
    if r.status_code != 202:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert body["error"]["code"] in exp.codes, f"{case.kind}: {body}"
        _no_paths(body["error"]["message"], stack)
        return
    env["jobs"].append(body["id"])
    job = stack.wait_job(body["id"], 120)
    assert job["status"] in exp.job, f"{case.kind}: {job}"
    if job["status"] == "failed":
        assert job["error"]["code"] in exp.job_codes, f"{case.kind}: {job['error']}"
        _no_paths(job["error"]["message"], stack)
    with stack.client() as c:  # the API view of a finished job is well-formed too
        view = c.get(f"/v1/jobs/{body['id']}").json()
        assert view["status"] == job["status"] and "owner" not in view


def _param(case: Case):
    return pytest.param(case, id=case.kind)


def test_corpus_has_25_kinds() -> None:
    assert len({c.kind for c in CASES}) >= 25


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(env: dict, case: Case) -> None:
    stack: Stack = env["stack"]
    _check(stack, env, case, _send(stack, case, env["gen"]))


@pytest.mark.parametrize("seed", range(6))
def test_mutated_mp4(env: dict, seed: int) -> None:
    """Random byte damage to a good clip (seeded, so a failure replays): any outcome but a
    5xx, a crash or a vague error code."""
    from corpus import _good

    stack: Stack = env["stack"]
    rng = random.Random(seed)
    data = bytearray(_good(env["gen"]))
    for _ in range(rng.choice((1, 8, 64))):
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
    with stack.client() as c:
        r = c.post("/v1/jobs", files={"file": ("m.mp4", bytes(data), "video/mp4")})
    assert r.status_code in (202, 415, 422), r.text
    if r.status_code != 202:
        assert r.json()["error"]["code"] in VIDEO_CODES + ("invalid_timing",
                                                           "resolution_too_small",
                                                           "resolution_too_large")
        return
    job = stack.wait_job(r.json()["id"], 120)
    env["jobs"].append(job["id"])
    assert job["status"] in ("succeeded", "failed")
    if job["status"] == "failed":
        assert job["error"]["code"] in VIDEO_CODES, job["error"]


@pytest.mark.parametrize(("content", "code"), [
    (b"definitely not a video" * 100, "not_a_video"),
    (b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8, "corrupt_video"),
])
def test_worker_does_not_trust_the_gateway(env: dict, content: bytes, code: str) -> None:
    """A job whose upload never went through the gateway's probe (an older gateway, a file
    replaced on shared storage): the worker must fail it with the precise code and a message
    fit for a client, and stay up."""
    from hamnet_jobs.queue import publisher, send_job
    from hamnet_jobs.record import new_job_id
    from hamnet_jobs.storage import Storage
    from hamnet_jobs.store import JobStore

    stack: Stack = env["stack"]
    job_id = new_job_id()
    Storage(stack.data_dir).upload_path(job_id).write_bytes(content)
    JobStore(stack.r()).create({"id": job_id, "owner": "anonymous", "filename": "x.mp4",
                                "params": {}})
    send_job(publisher(stack.redis.url), job_id)
    env["jobs"].append(job_id)
    job = stack.wait_job(job_id, 60)
    assert job["status"] == "failed" and job["error"]["code"] == code, job
    _no_paths(job["error"]["message"], stack)
    assert job["error"]["message"].startswith("x.mp4: "), job["error"]  # the client's name


def test_worker_never_restarted_and_nothing_left(env: dict) -> None:
    """Runs after the corpus (file order): the same worker child did every job, once each,
    and every byte that was uploaded is gone."""
    stack: Stack = env["stack"]
    assert all(p.alive() for p in stack.workers) and stack.gateway.alive()
    now = {i["pid"] for i in stack.worker_infos()}
    assert now == env["children"], "the worker child was replaced (it crashed)"
    for job_id in env["jobs"]:
        assert stack.job(job_id)["attempts"] == 1
    wait_until(lambda: not stack.files_left(), 10, f"files left: {stack.files_left()}")
    assert sorted(env["tmp"].iterdir()) == env["tmp_before"]
    log = "\n".join(p.log.read_text(errors="replace") for p in stack.workers)
    assert not re.search(r"WorkerLostError|Traceback|crashed", log), log[-3000:]
    assert "Traceback" not in stack.gateway.log.read_text(errors="replace")
