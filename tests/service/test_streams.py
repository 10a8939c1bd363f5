"""Live streams through the real stack: redis-server, the gateway (uvicorn), a Celery worker
consuming the streams queue (``hamnet worker --streams only``, one slot), and a live source on
loopback: ffmpeg plays a rendered video into an HLS playlist that grows as it plays, served
by a local HTTP server (tests/service/livesource.py).

The window is shortened for a 40 s video (20 s window, 2.56 s hop, 1.28 s margin); times
are asserted against what the stream reports, never against the wall clock's speed.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hamnet_procs import (  # noqa: E402
    ROOT,
    Proc,
    RedisServer,
    hamnet_argv,
    start_gateway,
    wait_for,
)
from livesource import DirServer, HLSWriter, free_port  # noqa: E402

DOWN_S = 5.0


@pytest.fixture(scope="module")
def stream_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40 s rendered video with the mini bundle's classes (several instances)."""
    out = tmp_path_factory.mktemp("stream-video")
    subprocess.run(
        [sys.executable, "-m", "hamnet", "synth", "--out", str(out), "--count", "1",
         "--seed", "4242", "--duration", "40:40", "--classes", "spin,slide,pulse"],
        check=True, cwd=ROOT, capture_output=True,
    )
    return next((out / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def stream_stack(service_env: dict[str, str], redis_server: RedisServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A stream worker (one slot) and a gateway that allows loopback stream URLs."""
    logs = tmp_path_factory.mktemp("stream-logs")
    env = dict(service_env, HAMNET_SOURCE_ALLOW_PRIVATE="true",
               HAMNET_CALLBACK_ALLOW_PRIVATE="true",
               HAMNET_STREAM_WINDOW_S="20", HAMNET_STREAM_HOP_S="2.56",
               HAMNET_STREAM_MARGIN_S="1.28", HAMNET_STREAM_MIN_WINDOW_S="5",
               HAMNET_STREAM_DOWN_S=str(DOWN_S), HAMNET_STREAM_OPEN_TIMEOUT_S="3",
               HAMNET_LEASE_S="4")
    worker = Proc("stream-worker", hamnet_argv("worker", "--streams", "only", "--concurrency",
                                               "1", "--loglevel", "INFO"),
                  env, logs / "worker.log").start()
    r = redis_server.client()
    wait_for(lambda: any(json.loads(v).get("name") for k in r.scan_iter(
        match="hamnet:stream-slot:*") if (v := r.get(k))), 180, "stream slot", worker)
    gw, url = start_gateway(env, logs / "gateway.log")
    yield {"url": url, "worker": worker, "redis": r}
    gw.stop()
    worker.stop()


@pytest.fixture()
def sapi(stream_stack: dict) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_stack["url"], timeout=60) as c:
        # exactly this module's one slot, free (a stopped worker's slot key lives 3 heartbeats)
        wait_for(lambda: _slots(c) == (1.0, 0.0), 60, "one free stream slot")
        yield c


def _slots(c: httpx.Client) -> tuple[float, float]:
    text = c.get("/metrics").text
    vals = {}
    for line in text.splitlines():
        if line.startswith("hamnet_stream_slots{"):
            vals[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return vals.get("total", 0.0), vals.get("busy", 0.0)


def _metric(c: httpx.Client, name: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _events(c: httpx.Client, sid: str, headers: dict | None = None,
            timeout: float = 120) -> Iterator[tuple[int | None, str, dict]]:
    """Parse the SSE feed: (id, event, data) until the server closes it."""
    with c.stream("GET", f"/v1/streams/{sid}/events", headers=headers or {},
                  timeout=timeout) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        eid, kind, data = None, None, None
        for line in resp.iter_lines():
            if line.startswith("id: "):
                eid = int(line[4:])
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and kind is not None:
                yield eid, kind, data
                eid, kind, data = None, None, None


def test_refused_urls_without_allow_private(api: httpx.Client) -> None:
    """The session gateway keeps the default policy: loopback and private hosts refused."""
    for url in ("http://127.0.0.1:8080/index.m3u8", "rtsp://10.0.0.5/cam",
                "rtmp://localhost/live/x"):
        r = api.post("/v1/streams", json={"url": url})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_stream_url"
    r = api.post("/v1/streams", json={"url": "file:///etc/passwd"})
    assert r.status_code == 422 and "scheme" in r.json()["error"]["message"]
    r = api.post("/v1/streams", json={"nope": 1})
    assert r.status_code == 422


class _Hooks(http.server.BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append({"headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_segments_arrive_while_the_stream_plays(sapi: httpx.Client, stream_video: Path,
                                                tmp_path: Path, redis_server: RedisServer
                                                ) -> None:
    hls = HLSWriter(stream_video, tmp_path / "hls", rate=2.0).start()
    srv = DirServer(tmp_path / "hls").start()
    _Hooks.posts = []
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    try:
        hls.wait_playlist()
        created = sapi.post("/v1/streams", json={"url": srv.url("index.m3u8"), "tag": "t1",
                                                 "callback_url": hook_url})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert created.headers["location"] == f"/v1/streams/{sid}"
        # one slot: a second stream is refused while this one holds it
        second = sapi.post("/v1/streams", json={"url": srv.url("index.m3u8")})
        assert second.status_code == 429 and second.json()["error"]["code"] == "streams_busy"
        during, after, states, seqs = [], [], [], []
        end = None
        for eid, kind, data in _events(sapi, sid):
            seqs.append(eid)
            if kind == "segment":
                (after if hls.done() else during).append(data)
            elif kind == "status":
                states.append(data["state"])
            elif kind == "end":
                end = data
        assert end is not None and end["status"] == "finished", end
        assert "live" in states
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # segments were published while ffmpeg was still playing the file, each after it
        # closed in stream time, with absolute stream times (not window-relative ones)
        assert during, f"no segment before the source ended ({len(after)} after)"
        segs = during + after
        for s in segs:
            assert 0 <= s["start"] < s["end"] <= 40.5
            assert s["end"] <= s["stream_time"] + 0.65  # published once closed (+ a snippet)
        assert max(s["end"] for s in segs) > 20.0  # beyond the first 20 s window
        rec = sapi.get(f"/v1/streams/{sid}").json()
        assert rec["status"] == "finished" and rec["segments"] == len(segs)
        assert rec["stream_seconds"] > 35
        assert [s["seq"] for s in rec["recent"]] == [s["seq"] for s in segs]
        origin = rec["origin_at"]
        assert all(s["start_at"] == pytest.approx(origin + s["start"], abs=2e-3) for s in segs)
        # Last-Event-ID resumes after that event
        mid = segs[len(segs) // 2]["seq"]
        resumed = [e for e, _, _ in _events(sapi, sid, {"Last-Event-ID": str(mid)})]
        assert resumed[0] == mid + 1 and resumed[-1] == seqs[-1]
        listed = sapi.get("/v1/streams").json()
        assert sid in [s["id"] for s in listed["streams"]]
        assert _metric(sapi, "hamnet_stream_segments_published_total") >= len(segs)
        # the callback URL got every segment, in order, and the end, signed like job callbacks
        from hamnet_jobs.webhooks import master_key, signing_secret
        from hamnet_service.auth import ANONYMOUS
        from hamnet_worker.callbacks import verify

        wait_for(lambda: any(json.loads(p["body"])["event"] == "end" for p in _Hooks.posts),
                 30, "the end callback")
        secret = signing_secret(master_key(redis_server.client(), ""), ANONYMOUS)
        bodies = [json.loads(p["body"]) for p in _Hooks.posts]
        assert [b["seq"] for b in bodies if b["event"] == "segment"] == \
            [s["seq"] for s in segs]
        assert bodies[-1]["event"] == "end" and bodies[-1]["status"] == "finished"
        for p, b in zip(_Hooks.posts, bodies, strict=True):
            assert b["stream_id"] == sid
            assert p["headers"]["Hamnet-Delivery"] == f"stream-{sid}-{b['seq']}"
            assert verify(secret, p["headers"]["Hamnet-Signature"], p["body"])
            assert not verify(secret, p["headers"]["Hamnet-Signature"], p["body"] + b" ")
        wait_for(lambda: sapi.get(f"/v1/streams/{sid}").json()["callbacks"] ==
                 {"delivered": len(segs) + 1, "failed": 0}, 30, "callback counts")
    finally:
        hls.stop()
        srv.stop()
        hooks.shutdown()
        hooks.server_close()


def test_rtmp_source(sapi: httpx.Client, stream_video: Path) -> None:
    """An RTMP source: ffmpeg itself is the RTMP server (``-listen 1``), playing the video at
    twice its rate to the one client it accepts, the stream worker."""
    port = free_port()
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-readrate", "2", "-i",
         str(stream_video), "-c", "copy", "-f", "flv", "-listen", "1",
         f"rtmp://127.0.0.1:{port}/live/cam"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # ffmpeg listening
        created = sapi.post("/v1/streams", json={"url": f"rtmp://127.0.0.1:{port}/live/cam"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        segments, states = [], []
        for _, kind, data in _events(sapi, sid):
            if kind == "status":
                states.append(data["state"])
            elif kind == "segment":
                segments.append(data)
                if ffmpeg.poll() is None:  # published while the source still plays: enough
                    break
        assert "live" in states and segments, (states, segments)
        assert ffmpeg.poll() is None, "no segment before the RTMP source ended"
        for seg in segments:
            assert 0 <= seg["start"] < seg["end"] <= seg["stream_time"] + 0.65
        assert sapi.get(f"/v1/streams/{sid}").json()["status"] == "running"
        assert sapi.delete(f"/v1/streams/{sid}").status_code == 204
        ends = [d for _, k, d in _events(sapi, sid) if k == "end"]
        assert ends and ends[-1]["status"] == "stopped"
    finally:
        ffmpeg.kill()
        ffmpeg.wait()


def test_delete_stops_a_stream(sapi: httpx.Client, stream_video: Path, tmp_path: Path) -> None:
    hls = HLSWriter(stream_video, tmp_path / "hls", rate=1.0).start()
    srv = DirServer(tmp_path / "hls").start()
    try:
        hls.wait_playlist()
        sid = sapi.post("/v1/streams", json={"url": srv.url("index.m3u8")}).json()["id"]
        wait_for(lambda: sapi.get(f"/v1/streams/{sid}").json()["state"] == "live", 60,
                 "stream live")
        wait_for(lambda: _slots(sapi) == (1.0, 1.0), 30, "the slot counted busy")
        assert sapi.delete(f"/v1/streams/{sid}").status_code == 204
        assert sapi.get(f"/v1/streams/{sid}").json()["status"] == "stopped"
        ends = [d for _, k, d in _events(sapi, sid) if k == "end"]
        assert ends and ends[-1]["status"] == "stopped"
        assert not hls.done()  # stopped by DELETE, not by the source ending
        wait_for(lambda: _slots(sapi)[1] == 0, 30, "the slot is free again")
        # DELETE of a stopped stream forgets it
        assert sapi.delete(f"/v1/streams/{sid}").status_code == 204
        assert sapi.get(f"/v1/streams/{sid}").status_code == 404
    finally:
        hls.stop()
        srv.stop()


def test_source_drop_reconnects_then_fails(sapi: httpx.Client, stream_video: Path,
                                           tmp_path: Path) -> None:
    hls = HLSWriter(stream_video, tmp_path / "hls", rate=1.0).start()
    srv = DirServer(tmp_path / "hls").start()
    try:
        hls.wait_playlist()
        sid = sapi.post("/v1/streams", json={"url": srv.url("index.m3u8")}).json()["id"]
        wait_for(lambda: sapi.get(f"/v1/streams/{sid}").json()["state"] == "live", 60,
                 "stream live")
        time.sleep(2.0)
        srv.stop()  # the source goes away
        hls.stop()
        t_drop = time.monotonic()
        events = list(_events(sapi, sid))
        states = [d["state"] for _, k, d in events if k == "status"]
        assert "reconnecting" in states
        end = events[-1]
        assert end[1] == "end" and end[2]["status"] == "failed"
        assert end[2]["error"]["code"] == "stream_lost"
        assert time.monotonic() - t_drop >= DOWN_S - 1.0  # it kept trying before giving up
        rec = sapi.get(f"/v1/streams/{sid}").json()
        assert rec["status"] == "failed" and rec["error"]["code"] == "stream_lost"
        assert rec["reconnects"] >= 2 and rec["window"]["window_s"] == pytest.approx(20.48)
    finally:
        hls.stop()
        srv.stop()


def test_stream_of_a_killed_worker_is_resumed(sapi: httpx.Client, stream_stack: dict,
                                             stream_video: Path, tmp_path: Path) -> None:
    """SIGKILL the child playing a stream: its lease expires (HAMNET_LEASE_S=4), the new
    child's slot requeues it, and the stream goes on (HLS: same timeline, nothing twice)."""
    hls = HLSWriter(stream_video, tmp_path / "hls", rate=1.0).start()
    srv = DirServer(tmp_path / "hls").start()
    try:
        hls.wait_playlist()
        sid = sapi.post("/v1/streams", json={"url": srv.url("index.m3u8")}).json()["id"]
        wait_for(lambda: sapi.get(f"/v1/streams/{sid}").json()["stream_seconds"] > 8, 60,
                 "stream playing")
        raw = json.loads(stream_stack["redis"].get(f"hamnet:stream:{sid}"))
        os.kill(int(raw["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        events = list(_events(sapi, sid, timeout=180))
        assert events[-1][1] == "end" and events[-1][2]["status"] == "finished", events[-1]
        states = [d["state"] for _, k, d in events if k == "status"]
        assert states.count("connecting") >= 1 and states.count("live") >= 2  # played twice
        rec = sapi.get(f"/v1/streams/{sid}").json()
        assert rec["attempts"] == 2 and rec["status"] == "finished"
        assert rec["stream_seconds"] > 35
        segs = [d for _, k, d in events if k == "segment"]
        assert all(0 <= s["start"] < s["end"] <= 40.5 for s in segs)
        for i, a in enumerate(segs):  # the replayed playlist published nothing twice
            for b in segs[i + 1:]:
                if a["label"] == b["label"]:
                    inter = min(a["end"], b["end"]) - max(a["start"], b["start"])
                    union = max(a["end"], b["end"]) - min(a["start"], b["start"])
                    assert inter / union < 0.9, (a, b)
    finally:
        hls.stop()
        srv.stop()


def test_unreachable_source_fails_with_its_code(sapi: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/index.m3u8"  # nothing listens there
    sid = sapi.post("/v1/streams", json={"url": url}).json()["id"]
    events = list(_events(sapi, sid))
    assert events[-1][1] == "end"
    assert events[-1][2]["error"]["code"] == "stream_unreachable"
    assert _metric(sapi, 'hamnet_streams_ended_total{status="failed"}') >= 1


def test_unknown_stream_is_404(sapi: httpx.Client) -> None:
    r = sapi.get("/v1/streams/AAAAAAAAAAAAAAAAAAAAAA")
    assert r.status_code == 404 and r.json()["error"]["code"] == "stream_not_found"
    r = sapi.get("/v1/streams/AAAAAAAAAAAAAAAAAAAAAA/events")
    assert r.status_code == 404



def test_expired_lease_requeues_then_fails_worker_lost(redis_server: RedisServer) -> None:
    """A worker killed mid-stream stops renewing its lease: the stream goes back to queued
    (and is resumed, keeping its events), until HAMNET_MAX_ATTEMPTS, then fails."""
    import redis
    from hamnet_jobs.streams import StreamRecord, StreamStore, new_stream_id

    # a database of its own: the stream workers of this session reap db 0's leases too
    store = StreamStore(redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/15",
                                             decode_responses=True), ttl=600)
    store.r.flushdb()
    rec = store.create(StreamRecord(id=new_stream_id(), owner="t", url="rtsp://x/y"))
    got, action = store.begin(rec.id, "w1", lease_s=0.3, max_attempts=2)
    assert action == "run" and got.status == "running" and got.lease
    assert store.begin(rec.id, "w2", lease_s=0.3, max_attempts=2)[1] == "skip"  # held
    seq = store.publish(rec.id, "segment", {"label": "spin", "start": 1.0, "end": 2.0})
    assert store.requeue_expired(max_attempts=2) == []  # lease still valid
    time.sleep(0.5)
    assert store.update(rec.id, got.lease, state="live") is not None  # not yet reaped
    assert store.requeue_expired(max_attempts=2) == [rec.id]
    assert store.get(rec.id).status == "queued"
    assert store.update(rec.id, got.lease, state="live") is None  # the old attempt stops
    again, action = store.begin(rec.id, "w2", lease_s=0.3, max_attempts=2)
    assert action == "run" and again.attempts == 2 and again.lease != got.lease
    assert store.publish(rec.id, "status", {"state": "live"}) == seq + 1  # events continue
    time.sleep(0.5)
    assert store.requeue_expired(max_attempts=2) == []
    final = store.get(rec.id)
    assert final.status == "failed" and final.error.code == "worker_lost"
    assert [k for _, k, _ in store.events(rec.id)] == ["segment", "status"]
