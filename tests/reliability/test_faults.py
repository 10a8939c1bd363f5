"""Faults: nothing accepted is ever lost, nothing runs twice, nothing is left on disk.

Each scenario freezes the worker at a known point with the Redis proxy (``relprocs.HoldProxy``)
instead of sleeping and hoping, then crashes or cancels something and checks the end state in
Redis, on disk and through the API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from relprocs import Stack, sigcont, sigstop, wait_until

pytestmark = pytest.mark.service

STAGE_WRITE = {
    # stage the job is in when cancelled -> the worker write that is held meanwhile
    "queued": b'"status": "running"',  # begin(): the claim of a queued job
    "decode": b'"stage": "features"',  # the first write after decoding started
    "features": b'"stage": "localize"',
    "localize": b'"status": "succeeded"',  # finish(): result and terminal status
}


def counters(stack: Stack) -> dict[str, int]:
    return {k: int(v) for k, v in stack.r().hgetall("hamnet:stats:jobs").items()}


def assert_clean(stack: Stack) -> None:
    """No upload, partial or scratch file left, no job still marked active."""
    wait_until(lambda: not stack.files_left(), 10, f"files left: {stack.files_left()}")
    r = stack.r()
    assert r.zcard("hamnet:queued") == 0 and r.zcard("hamnet:running") == 0


def assert_healthy(stack: Stack, video: bytes) -> None:
    """The worker still takes and finishes work (it did not crash-loop or wedge)."""
    job = stack.submit(video, name="after.mp4")
    assert stack.wait_job(job["id"], 120)["status"] == "succeeded", stack.logs()


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory("faults", workers=1)


# ------------------------------------------------------------------------------ cancellation


@pytest.mark.parametrize("stage", list(STAGE_WRITE))
def test_cancel_during_stage(stack: Stack, videos, stage: str) -> None:
    """DELETE while the worker is provably in ``stage`` (its next write is held): the job
    ends ``cancelled``, the worker stops at that write (it loses the WATCH race), no result is
    ever stored, and upload and scratch files are gone."""
    data = videos["short"].read_bytes()
    before = counters(stack)
    hold = stack.proxy.hold(STAGE_WRITE[stage])
    try:
        job = stack.submit(data)
        hold.wait_hit(60)
        seen = stack.job(job["id"])
        if stage == "queued":
            assert seen["status"] == "queued"
        else:
            assert (seen["status"], seen["stage"]) == ("running", stage), seen
        with stack.client() as c:
            assert c.delete(f"/v1/jobs/{job['id']}").status_code == 204
            view = c.get(f"/v1/jobs/{job['id']}").json()
            assert view["status"] == "cancelled", view
    finally:
        hold.release()
    final = stack.wait_job(job["id"], 60)
    assert final["status"] == "cancelled" and final["error"] is None
    # The worker noticed at its next write and stopped: no result, ever.
    time.sleep(1.0)
    assert stack.r().get(f"hamnet:result:{job['id']}") is None
    with stack.client() as c:
        r = c.get(f"/v1/jobs/{job['id']}/result")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_cancelled"
        # a second DELETE forgets the cancelled job
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
    after = counters(stack)
    assert after.get("succeeded", 0) == before.get("succeeded", 0)
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1
    assert_clean(stack)


def test_cancel_after_success_forgets(stack: Stack, videos) -> None:
    job = stack.submit(videos["short"].read_bytes())
    assert stack.wait_job(job["id"])["status"] == "succeeded"
    with stack.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}/result").status_code == 200
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert c.get(f"/v1/jobs/{job['id']}/result").status_code == 404
    r = stack.r()
    assert r.get(f"hamnet:job:{job['id']}") is None and r.get(f"hamnet:result:{job['id']}") is None
    assert_clean(stack)


# ------------------------------------------------------------------------------ worker crashes


def test_kill9_worker_child_mid_job(stack: Stack, videos) -> None:
    """The prefork child dies (OOM killer, kill -9) while the job is running: the parent
    requeues the message (acks_late + reject_on_worker_lost), a fresh child runs it, and the
    job succeeds once, with the second attempt counted."""
    before = counters(stack)
    hold = stack.proxy.hold(STAGE_WRITE["decode"])
    job = stack.submit(videos["short"].read_bytes())
    hold.wait_hit(60)
    pid = stack.child_pid_running(job["id"])
    os.kill(pid, signal.SIGKILL)
    hold.drop()  # its pending write dies with it
    final = stack.wait_job(job["id"], 180)
    assert final["status"] == "succeeded", (final, stack.logs())
    assert final["attempts"] == 2
    after = counters(stack)
    assert after["succeeded"] == before.get("succeeded", 0) + 1
    assert stack.r().get(f"hamnet:result:{job['id']}") is not None
    assert_duplicate_delivery_is_skipped(stack, job["id"])
    assert_clean(stack)


def assert_duplicate_delivery_is_skipped(stack: Stack, job_id: str) -> None:
    """A late duplicate of the message (a redelivery after the job finished) changes
    nothing: same record, same result, no second success counted."""
    from hamnet_jobs.queue import publisher, send_job

    record = stack.r().get(f"hamnet:job:{job_id}")
    result = stack.r().get(f"hamnet:result:{job_id}")
    before = counters(stack)
    send_job(publisher(stack.redis.url), job_id)
    wait_until(lambda: stack.r().llen("gpu") == 0 and not stack.r().hlen("unacked"), 30,
               "the duplicate consumed")
    time.sleep(0.5)
    assert stack.r().get(f"hamnet:job:{job_id}") == record
    assert stack.r().get(f"hamnet:result:{job_id}") == result
    assert counters(stack) == before


def test_duplicate_delivery_while_running_is_deferred(stack_factory, videos) -> None:
    """A second copy of a running job's message (what kombu does to unacknowledged messages
    when a worker's broker connection drops) reaches an idle second worker: it must not run
    the job alongside the first, nor count an attempt; it comes back later and skips."""
    from hamnet_jobs.queue import publisher, send_job

    s = stack_factory("dup", workers=2)
    hold = s.proxy.hold(STAGE_WRITE["features"])
    job = s.submit(videos["short"].read_bytes())
    hold.wait_hit(60)
    owner = s.child_pid_running(job["id"])
    send_job(publisher(s.redis.url), job["id"])
    logs = lambda: "".join(w.log.read_text(errors="replace") for w in s.workers)  # noqa: E731
    wait_until(lambda: "deferring this delivery" in logs(), 30, "the duplicate deferred")
    assert s.job(job["id"])["attempts"] == 1
    hold.release()
    final = s.wait_job(job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
    assert owner in {i["pid"] for i in s.worker_infos()}  # no child was lost on the way
    # the deferred copy comes back, sees a finished job and skips
    wait_until(lambda: s.r().llen("gpu") == 0 and not s.r().hlen("unacked"), 30,
               "the deferred copy consumed")
    time.sleep(1)
    assert counters(s)["succeeded"] == 1 and s.job(job["id"]) == final
    assert_clean(s)


def kill_whole_worker_mid_job(s: Stack, videos) -> tuple[dict, set[int]]:  # noqa: ANN001
    """Submit a job, ``kill -9`` the whole worker (parent and child) while it extracts
    features, start a fresh worker and wait until it is ready. Returns the job and the pids of
    the dead worker's children."""
    hold = s.proxy.hold(STAGE_WRITE["features"])
    job = s.submit(videos["short"].read_bytes())
    hold.wait_hit(60)
    old = {i["pid"] for i in s.worker_infos()}
    s.workers[0].kill9()
    hold.drop()
    assert s.job(job["id"])["status"] == "running"
    s.start_worker()
    s.wait_workers(1, exclude_pids=old)
    return job, old


def test_kill9_whole_worker_then_restart(stack_factory, videos) -> None:
    """The whole worker (parent and child) is killed mid-job and nothing is left to requeue
    the message: it stays unacknowledged in Redis, and a worker started later redelivers it
    after the visibility timeout. It completes exactly once."""
    s = stack_factory("kill-all", workers=1, HAMNET_SOFT_TIME_LIMIT="8",
                      HAMNET_TIME_LIMIT="10", HAMNET_VISIBILITY_TIMEOUT="12")
    job, old = kill_whole_worker_mid_job(s, videos)
    final = s.wait_job(job["id"], 90)
    assert final["status"] == "succeeded", (final, s.logs())
    assert final["attempts"] == 2
    assert counters(s)["succeeded"] == 1
    assert_clean(s)


def test_kill9_whole_worker_recovers_within_a_minute_with_defaults(stack_factory, videos) -> None:
    """The same crash with the *default* time limits (soft 1800 s, hard 1900 s, visibility
    2400 s) and heartbeat (5 s): the broker alone would hand the job back after 40 minutes.
    The job's lease (30 s, renewed on every heartbeat) expires instead, a live worker puts it
    back in the queue, and it runs again within 60 s of that worker being available: once,
    with one more attempt, one result. The recovery time is printed for RELIABILITY.md."""
    from hamnet_jobs.queue import publisher, send_job

    s = stack_factory("kill-all-defaults", workers=1, HAMNET_SOFT_TIME_LIMIT="1800",
                      HAMNET_TIME_LIMIT="1900", HAMNET_VISIBILITY_TIMEOUT="2400",
                      HAMNET_HEARTBEAT_S="5")
    job, old = kill_whole_worker_mid_job(s, videos)
    t_ready = time.monotonic()

    def running_on_live_worker() -> int | None:
        for i in s.worker_infos():  # the dead child's heartbeat may linger for 15 s
            if i.get("busy_job") == job["id"] and i["pid"] not in old:
                return int(i["pid"])
        return None

    new_pid = wait_until(running_on_live_worker, 75, "the job running on the new worker")
    recovered = time.monotonic() - t_ready
    print(f"\nwhole-worker kill -9: job running again on a live worker {recovered:.1f} s "
          "after it became available (defaults: lease 30 s, heartbeat 5 s)")
    assert new_pid not in old
    assert recovered <= 60, recovered
    final = s.wait_job(job["id"], 120)
    assert final["status"] == "succeeded", (final, s.logs())
    assert final["attempts"] == 2 and final["requeues"] == 1, final
    assert counters(s)["succeeded"] == 1 and counters(s)["requeued"] == 1
    assert s.r().get(f"hamnet:result:{job['id']}") is not None
    # The dead worker's message is still unacknowledged in Redis (until the 2400 s visibility
    # timeout). When the broker hands it back - here a copy, at once - it changes nothing.
    record, result = s.r().get(f"hamnet:job:{job['id']}"), s.r().get(f"hamnet:result:{job['id']}")
    assert s.r().hlen("unacked") == 1
    send_job(publisher(s.redis.url), job["id"])
    wait_until(lambda: s.r().llen("gpu") == 0 and s.r().hlen("unacked") == 1, 30,
               "the late copy consumed")
    time.sleep(1)
    assert s.r().get(f"hamnet:job:{job['id']}") == record
    assert s.r().get(f"hamnet:result:{job['id']}") == result
    assert counters(s)["succeeded"] == 1
    assert_clean(s)


def test_reaper_leaves_redeliverable_jobs_alone(stack_factory) -> None:
    """The worker's reaper fails jobs stuck in ``running``. It must not touch one whose
    message is still waiting for redelivery (younger than the visibility timeout plus a
    restore sweep): with the defaults (hard limit 1900 s, visibility 2400 s) a job whose whole
    worker died (container restart, node loss) would otherwise be failed as
    ``time_limit_exceeded`` ~8 minutes before Redis hands it to the restarted worker. A job
    older than that is genuinely lost and must be failed."""
    from hamnet_jobs.record import new_job_id
    from hamnet_jobs.store import JobStore

    s = stack_factory("reaper", workers=0, gateway=False, HAMNET_SOFT_TIME_LIMIT="4",
                      HAMNET_TIME_LIMIT="5", HAMNET_VISIBILITY_TIMEOUT="120",
                      HAMNET_RESTORE_INTERVAL="5")
    store = JobStore(s.r())
    ages = {"waiting": 60, "lost": 400}  # seconds since the (dead) worker claimed them
    ids = {}
    for name, age in ages.items():
        ids[name] = new_job_id()
        store.create({"id": ids[name], "owner": "anonymous", "params": {}})
        store.begin(ids[name], 3)
        s.r().zadd("hamnet:running", {ids[name]: time.time() - age})
    s.start_worker()
    s.wait_workers(1)
    wait_until(lambda: s.job(ids["lost"])["status"] == "failed", 30, "the lost job reaped")
    assert s.job(ids["lost"])["error"]["code"] == "time_limit_exceeded"
    time.sleep(2)
    assert s.job(ids["waiting"])["status"] == "running"


# ------------------------------------------------------------------------------ Redis restart


def test_redis_restart_with_jobs_queued_and_running(stack_factory, videos) -> None:
    """redis-server is killed (append-only file, fsync always) and restarted while two jobs
    are half done (one per worker) and three wait: every accepted job still finishes, exactly
    once, none fails because the store blinked, and none is run twice (kombu puts the running
    jobs' messages back on reconnect; those copies are deferred, then skipped)."""
    s = stack_factory("redis-restart", workers=2)
    data = videos["short"].read_bytes()
    holds = [s.proxy.hold(STAGE_WRITE["features"]) for _ in range(2)]
    running = []
    for i, hold in enumerate(holds):
        running.append(s.submit(data, name=f"r{i}.mp4"))
        hold.wait_hit(60)
    queued = [s.submit(data, name=f"q{i}.mp4") for i in range(3)]
    assert all(s.job(j["id"])["status"] == "running" for j in running)
    assert all(s.job(j["id"])["status"] == "queued" for j in queued)
    s.restart_redis(kill=True)
    for hold in holds:
        hold.release()  # the held writes now meet closed connections
    for j in [*running, *queued]:
        final = s.wait_job(j["id"], 180)
        assert final["status"] == "succeeded", (final, s.logs())
        assert final["attempts"] == 1, final
    assert counters(s)["succeeded"] == 5
    with s.client() as c:  # the gateway reconnected too
        assert c.get(f"/v1/jobs/{running[0]['id']}/result").status_code == 200
    assert_clean(s)
    assert_healthy(s, data)


def test_upload_while_redis_is_down(stack_factory, videos) -> None:
    """An upload arriving while Redis is down is refused (503 + Retry-After, after the store
    client's bounded retries), not accepted and lost, and leaves no file; once Redis is back
    the same upload is accepted."""
    s = stack_factory("redis-down", workers=0)
    data = videos["short"].read_bytes()
    s.redis.stop()
    try:
        t0 = time.monotonic()
        with s.client(timeout=60) as c:
            r = c.post("/v1/jobs", files={"file": ("v.mp4", data, "video/mp4")})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] in ("store_unavailable", "broker_unavailable")
        assert int(r.headers["retry-after"]) >= 1 and time.monotonic() - t0 < 45
        assert s.files_left() == []
    finally:
        s.redis.start()
    job = s.submit(data)
    assert s.job(job["id"])["status"] == "queued"


# ------------------------------------------------------------------------------ time limits


def test_soft_time_limit(stack_factory, videos) -> None:
    s = stack_factory("timelimit", workers=1, HAMNET_SOFT_TIME_LIMIT="2",
                      HAMNET_TIME_LIMIT="20", HAMNET_VISIBILITY_TIMEOUT="40")
    job = s.submit(videos["long"].read_bytes(), name="long.mp4")
    final = s.wait_job(job["id"], 120)
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit_exceeded"
    assert "2 s" in final["error"]["message"]
    assert_clean(s)
    assert_healthy(s, videos["short"].read_bytes())


def test_hard_time_limit_stuck_child(stack_factory, videos) -> None:
    """A child stuck where the soft limit cannot interrupt it (here: stopped) is killed at
    the hard limit; the job must end ``failed`` with ``time_limit_exceeded``, not stay
    ``running`` forever."""
    s = stack_factory("hardlimit", workers=1, HAMNET_SOFT_TIME_LIMIT="2",
                      HAMNET_TIME_LIMIT="4", HAMNET_VISIBILITY_TIMEOUT="30")
    hold = s.proxy.hold(STAGE_WRITE["decode"])
    job = s.submit(videos["short"].read_bytes())
    hold.wait_hit(60)
    pid = s.child_pid_running(job["id"])
    sigstop(pid)
    hold.release()
    try:
        final = s.wait_job(job["id"], 90)
    finally:
        try:
            sigcont(pid)
        except ProcessLookupError:
            pass
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit_exceeded"
    assert_clean(s)
    assert_healthy(s, videos["short"].read_bytes())


# ------------------------------------------------------------------------------ gateway crashes


def _slow_upload(url: str, total: int, out: dict, chunk: int = 64 * 1024,
                 pause: float = 0.05) -> None:
    """POST a multipart body of ``total`` bytes in slow chunks (a slow client); record how
    the request ended."""
    boundary = "relboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"slow.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()

    def body():
        yield head
        sent = 0
        while sent < total:
            yield b"\0" * chunk
            sent += chunk
            time.sleep(pause)
        yield f"\r\n--{boundary}--\r\n".encode()

    t0 = time.monotonic()
    try:
        with httpx.Client(timeout=httpx.Timeout(30.0)) as c:
            r = c.post(f"{url}/v1/jobs", content=body(), headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
            out["status"] = r.status_code
            out["body"] = r.text[:300]
    except httpx.HTTPError as e:
        out["error"] = type(e).__name__
    out["seconds"] = time.monotonic() - t0


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_gateway_dies_mid_upload(stack_factory, how: str) -> None:
    s = stack_factory(f"gw-{how}", workers=0)
    out: dict = {}
    # 8 MiB in 0.2 s steps of 64 KiB: about 25 s, longer than the gateway's 10 s grace period
    # on SIGTERM (an upload that finishes within the grace period is simply served).
    t = threading.Thread(target=_slow_upload, args=(s.url, 8 * 1024 * 1024, out),
                         kwargs={"pause": 0.2}, daemon=True)
    t.start()
    incoming = s.data_dir / "incoming"
    wait_until(lambda: any(p.stat().st_size > 300_000 for p in incoming.glob("*.part")), 30,
               "upload streaming to a partial file")
    t_kill = time.monotonic()
    if how == "kill9":
        s.gateway.kill9()
    else:
        s.gateway.stop(timeout=30, sig=signal.SIGTERM)
    t.join(40)
    assert not t.is_alive(), "the client hangs"
    if how == "kill9":
        assert "error" in out, out  # connection reset: the process is gone
    else:  # the request is ended cleanly: retry advice, or at worst a closed connection
        assert "error" in out or out.get("status") == 503, out
    assert time.monotonic() - t_kill < 25
    if how == "kill9":  # nobody was left to clean up: the restarted gateway does
        assert list(incoming.glob("*.part"))
        s.start_gateway(HAMNET_PARTIAL_IDLE_S="1")
    wait_until(lambda: not list(incoming.glob("*.part")), 15, "the partial upload removed")
    assert not list((s.data_dir / "uploads").iterdir())
    assert not s.r().keys("hamnet:job:*")


def test_slow_upload_is_not_swept(stack_factory) -> None:
    """A slow but live client (16 KiB every 0.2 s, 80 KB/s) on a gateway whose idle threshold
    is 2 s: its partial file must survive the sweeper and the upload be answered normally."""
    s = stack_factory("gw-slow", workers=0, HAMNET_PARTIAL_IDLE_S="2")
    out: dict = {}
    _slow_upload(s.url, 512 * 1024, out, chunk=16 * 1024, pause=0.2)
    assert out.get("status") == 415, out  # zeros: complete, probed, not a video
    assert s.files_left() == []


def test_stalled_upload_gets_408(stack_factory) -> None:
    """A client that starts an upload and then sends nothing is answered 408 after half the
    idle threshold (before the sweeper would take its file), and its partial is removed."""
    import socket

    s = stack_factory("gw-stall", workers=0, HAMNET_PARTIAL_IDLE_S="3")
    host, port = s.url.split("//")[1].split(":")
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.mp4"\r\n\r\n'
            + b"\0" * 200_000)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: 10000000\r\n\r\n" + body)
        t0 = time.monotonic()
        head = b""
        while b"}}" not in head and len(head) < 65536:  # headers and the JSON body
            part = sock.recv(4096)
            if not part:
                break
            head += part
        head = head.decode(errors="replace")
    assert head.startswith("HTTP/1.1 408"), head
    assert "upload_stalled" in head and time.monotonic() - t0 < 10
    wait_until(lambda: s.files_left() == [], 5, "the partial removed")


# ------------------------------------------------------------------------------ disk full


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 3 MiB tmpfs as the data directory (a real ENOSPC). Needs root/CAP_SYS_ADMIN."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_upload(stack_factory, small_disk: Path, videos) -> None:
    s = stack_factory("diskfull", workers=0, data_dir=small_disk)
    with s.client() as c:
        r = c.post("/v1/jobs", files={"file": ("big.mp4", b"\0" * (5 * 1024 * 1024),
                                               "video/mp4")})
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "insufficient_storage"
    assert s.files_left() == []
    assert not s.r().keys("hamnet:job:*")
    # the space is back: a normal upload is accepted
    job = s.submit(videos["short"].read_bytes())
    assert json.loads(s.r().get(f"hamnet:job:{job['id']}"))["status"] == "queued"
