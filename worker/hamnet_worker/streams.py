"""The live-stream task: one stream per worker slot, for as long as it plays (docs/STREAMS.md).

``process_stream`` wires the stages: claim the stream (lease), open the source
(:mod:`hamnet_worker.live`), resample and encode snippets with the bundle's backbone as frames
arrive, run :class:`hamnet.online.OnlineLocalizer` over its sliding window, and publish every
segment that closes to the stream's event log (SSE, rolling result) and the callback URL.

Why the message is acknowledged at once (``acks_late=False``, unlike jobs): a stream runs for
hours, longer than the broker's visibility timeout, and an unacknowledged message would be
handed to a second worker while the first still plays it. Recovery is the stream's own lease
instead: a keeper thread renews it every heartbeat; the slot thread of every stream worker
child puts streams whose lease expired (their worker died) back in ``queued`` and publishes
them again, up to ``HAMNET_MAX_ATTEMPTS`` times, then they end ``failed`` ``worker_lost``.

Source drops: the task reconnects with exponential backoff (0.5 s doubling to 8 s) and ends
``failed`` with ``stream_unreachable`` (never connected) or ``stream_lost`` (was live) once the
source has stayed down for ``HAMNET_STREAM_DOWN_S``. A connection that ends (EOF) is opened
again; when the source then has nothing new (a finished file or HLS playlist, replayed), or
declared a finite duration that was reached, the stream ends ``finished``.

Stream time: seconds since the first frame of the first connection. A reconnection whose
timestamps continue the old timeline (HLS, MPEG-TS) skips what was already seen and continues
the window; one whose timeline jumped (an RTSP/RTMP source restarted at zero) is placed by the
wall clock since the stream began. A gap of more than a snippet flushes the window (its
segments are published) and starts a new one at the new time.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init
from hamnet_jobs.record import utcnow
from hamnet_jobs.streams import STREAM_TASK, StreamRecord, StreamStore, send_stream

from hamnet_worker.live import Resampler, SnippetEncoder, SourceDown, iter_source
from hamnet_worker.runtime import get_runtime

log = logging.getLogger("hamnet.worker.streams")

STREAMS_ENV = "HAMNET_WORKER_STREAMS"  # off | also | only, set by `hamnet worker --streams`
SLOT_PATTERN = "hamnet:stream-slot:*"
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


def slot_key(name: str) -> str:
    return f"hamnet:stream-slot:{name}"


def streams_mode() -> str:
    return os.environ.get(STREAMS_ENV, "off")


def stream_store(rt: Any) -> StreamStore:
    s = rt.settings
    return StreamStore(rt.store.r, ttl=s.job_ttl_s, events_max=s.stream_events_max)


# ------------------------------------------------------------------------------ worker slot


class Slot:
    """This child's stream slot: a heartbeat saying whether it plays a stream (``/metrics``
    counts slots and busy slots) and the reaper of streams whose worker died."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.busy: str | None = None
        self._stop = threading.Event()

    def beat(self) -> None:
        s = self.rt.settings
        info = {"name": self.rt.name, "busy": self.busy, "seen_at": utcnow()}
        self.rt.store.r.set(slot_key(self.rt.name), json.dumps(info),
                            px=int(3 * s.heartbeat_s * 1000))
        store = stream_store(self.rt)
        for sid in store.requeue_expired(s.max_attempts):
            log.warning("stream %s: its worker stopped renewing the lease; queued again", sid)
            send_stream(self.rt.publisher(), sid, s.stream_queue, s.stream_max_s)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.beat()
                except Exception:
                    log.warning("stream slot heartbeat failed", exc_info=True)
                self._stop.wait(self.rt.settings.heartbeat_s)

        threading.Thread(target=loop, name="hamnet-stream-slot", daemon=True).start()


_slot: Slot | None = None


@worker_process_init.connect
def _start_slot(**_: Any) -> None:
    global _slot
    if streams_mode() != "off":
        _slot = Slot(get_runtime())
        _slot.start()


# ------------------------------------------------------------------------------ callbacks


class Callbacks:
    """Signed POSTs of segment events to the stream's callback URL, in order, from a thread
    (a slow receiver never stalls the stream). Bounded: when more than ``maxsize`` events
    wait, new ones are dropped and counted as failed."""

    def __init__(self, rt: Any, rec: StreamRecord, maxsize: int = 1000) -> None:
        from hamnet_jobs.webhooks import master_key, signing_secret

        s = rt.settings
        self.url, self.stream_id = rec.callback_url, rec.id
        self.allow_private = s.callback_allow_private
        self.secret = signing_secret(master_key(rt.store.r, s.callback_secret), rec.owner)
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=maxsize)
        self.delivered = self.failed = 0
        self._t = threading.Thread(target=self._run, name="hamnet-stream-callbacks",
                                   daemon=True)
        self._t.start()

    def send(self, payload: dict[str, Any]) -> None:
        try:
            self.q.put_nowait(payload)
        except queue.Full:
            self.failed += 1

    def _run(self) -> None:
        from hamnet_worker.callbacks import deliver_once

        while (item := self.q.get()) is not None:
            for attempt in range(3):
                out = deliver_once(self.url, item, secret=self.secret,
                                   allow_private=self.allow_private,
                                   delivery_id=f"stream-{self.stream_id}-{item['seq']}")
                if out.ok or not out.retryable:
                    break
                time.sleep(1.0 + attempt)
            if out.ok:
                self.delivered += 1
            else:
                self.failed += 1

    def close(self, timeout: float = 15.0) -> None:
        try:
            self.q.put(None, timeout=1.0)
        except queue.Full:
            return
        self._t.join(timeout)


# ------------------------------------------------------------------------------ the task


class Stopped(Exception):
    """DELETE, or this attempt lost the stream's lease."""


class StreamRunner:
    def __init__(self, rt: Any, store: StreamStore, rec: StreamRecord) -> None:
        from hamnet.online import WindowConfig

        self.rt, self.store, self.rec = rt, store, rec
        self.s = s = rt.settings
        self.token = rec.lease or ""
        self.bundle = self._bundle()
        from hamnet import pipeline

        self.backbone = pipeline.get_backbone(self.bundle)
        self.head = pipeline.get_head(self.bundle)
        cfg = self.bundle.postprocess
        self.cfg = cfg
        cal = self.bundle.calibration
        self.cal = cal if cal is not None and cal.profile == cfg.profile else None
        self.snippet_s = self.backbone.spec.snippet_seconds
        self.window = WindowConfig.from_seconds(
            s.stream_window_s, s.stream_hop_s, s.stream_margin_s, self.snippet_s,
            s.stream_min_window_s, s.stream_dedupe_tiou)
        self.stop = threading.Event()
        self.lost = False
        self.callbacks = Callbacks(rt, rec) if rec.callback_url else None
        # time bookkeeping (see the module docstring)
        self.origin_at: float | None = rec.origin_at  # unix time of stream time 0
        # stream time = source time - src_offset; a resumed stream (its worker died) starts
        # from the record: HLS continues its timeline, other sources are placed by wall clock
        self.src_offset: float | None = rec.source_offset
        self.last_t = rec.stream_seconds if rec.origin_at is not None else -1.0
        self.last_frame_wall = time.time()
        self.ever_live = rec.origin_at is not None
        self.loc: Any = None
        self.resampler = Resampler(self.backbone.spec.fps, self.backbone.spec.resize_shorter,
                                   self.backbone.spec.crop)
        # one snippet at a time: a batch would hold finished snippets back (latency)
        self.encoder = SnippetEncoder(self.backbone, batch=1)
        self.seg_start = 0.0  # stream time of the current window run's first snippet
        self.state = "connecting"
        self.segments = rec.segments
        self.last_seq = rec.last_seq
        self.reconnects = rec.reconnects
        w = self.window
        self.window_info = {"window_s": round(w.window * self.snippet_s, 3),
                            "hop_s": round(w.hop * self.snippet_s, 3),
                            "margin_s": round(w.margin * self.snippet_s, 3),
                            "min_window_s": round(w.min_window * self.snippet_s, 3),
                            "dedupe_tiou": w.dedupe_tiou}

    def _bundle(self) -> Any:
        ref = (self.rec.model or {}).get("ref")
        if not ref or ref == "default":
            return self.rt.bundle()
        from hamnet import pipeline
        from hamnet_jobs.registry import ModelRegistry

        reg = ModelRegistry(self.rt.store.r, self.rt.storage)
        mv = reg.resolve(self.rec.owner, ref)
        path = reg.fetch(mv, Path(self.s.data_dir) / "models-cache")
        return pipeline.get_bundle(path)

    # ---- keeper: lease, DELETE, progress ---------------------------------------------------
    def _keeper(self) -> None:
        while not self.stop.wait(self.s.heartbeat_s):
            try:
                self._sync()
            except Exception:
                log.warning("stream %s: keeper failed", self.rec.id, exc_info=True)

    def _sync(self) -> None:
        self.store.renew(self.rec.id, self.token, self.s.lease_s)
        fields: dict[str, Any] = {
            "state": self.state, "segments": self.segments, "last_seq": self.last_seq,
            "stream_seconds": round(max(self.last_t, 0.0), 3), "origin_at": self.origin_at,
            "reconnects": self.reconnects, "window": self.window_info,
            "source_offset": self.src_offset}
        if self.callbacks is not None:
            fields["callbacks"] = {"delivered": self.callbacks.delivered,
                                   "failed": self.callbacks.failed}
        if self.store.update(self.rec.id, self.token, **fields) is None:
            self.lost = True
            self.stop.set()

    # ---- publishing ------------------------------------------------------------------------
    def _publish(self, segs: list[dict[str, Any]]) -> None:
        if not segs:
            return
        conf = self.cal([s["score"] for s in segs]) if self.cal is not None else None
        for i, seg in enumerate(segs):
            c = None if conf is None else round(float(conf[i]), 4)
            data = {"label": seg["label"], "label_id": seg["label_id"],
                    "start": round(seg["start"], 3), "end": round(seg["end"], 3),
                    "score": round(float(seg["score"]), 5), "confidence": c,
                    "stream_time": round(max(self.last_t, 0.0), 3)}
            if self.origin_at is not None:
                data["start_at"] = round(self.origin_at + seg["start"], 3)
                data["end_at"] = round(self.origin_at + seg["end"], 3)
            seq = self.store.publish(self.rec.id, "segment", data)
            self.segments += 1
            self.last_seq = seq
            if self.callbacks is not None:
                self.callbacks.send({"stream_id": self.rec.id, "event": "segment", "seq": seq,
                                     "segment": data, "published_at": time.time()})

    def _status(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.last_seq = self.store.publish(self.rec.id, "status", {
                "status": "running", "state": state,
                "stream_time": round(max(self.last_t, 0.0), 3)})

    # ---- the window ------------------------------------------------------------------------
    def _new_window(self, t0: float) -> None:
        from hamnet.online import OnlineLocalizer

        self._flush()
        self.resampler.reset(t0)
        self.encoder.reset()
        self.loc = OnlineLocalizer(self._run_head, list(self.bundle.classes), self.cfg,
                                   self.window, origin=t0)

    def _run_head(self, x: Any) -> tuple[Any, Any]:
        return self.head.run(x, name=f"stream {self.rec.id}")

    def _flush(self) -> None:
        if self.loc is None:
            return
        feats = self.encoder.drain()
        if feats is not None:
            self._publish(self.loc.push(feats))
        self._publish(self.loc.flush())
        self.loc = None

    def _frame(self, frame: Any, src_t: float) -> None:
        if self.src_offset is None:
            self.src_offset = src_t
            if self.origin_at is None:
                self.origin_at = time.time()
        t = src_t - self.src_offset
        if t <= self.last_t + 1e-6:
            return  # already seen (a replayed HLS playlist after reconnecting)
        if self.loc is None or t - self.last_t > 2 * self.snippet_s:
            self._new_window(max(t, 0.0))
        self.last_t = t
        self.last_frame_wall = time.time()
        if self.s.stream_max_s and t > self.s.stream_max_s:
            raise OverflowError
        for img, _ in self.resampler.feed(frame, t):
            feats = self.encoder.add(img)
            if feats is not None:
                self._publish(self.loc.push(feats))

    def _connect_once(self) -> tuple[int, dict[str, Any]]:
        """One connection; returns how many new frames it gave, and what it declared."""
        info: dict[str, Any] = {}
        new = 0
        first = True
        # a reopened source: skip decoding what was seen, if it replays the same timeline
        skip = self.last_t + self.src_offset if self.src_offset is not None else None
        for dec in iter_source(self.rec.url, self.s.stream_open_timeout_s,
                               stop=self.stop.is_set, info=info, skip_until=skip):
            if self.stop.is_set():
                break
            if first:
                first = False
                self._place(dec.t, "hls" in str(info.get("format")))
            before = self.last_t
            self._frame(dec.frame, dec.t)
            if self.last_t > before:
                new += 1
                if self.state != "live":
                    self.ever_live = True
                    self._status("live")
        return new, info

    def _place(self, src_t: float, hls: bool) -> None:
        """A connection's first frame: continue the timeline (HLS: a reopened playlist replays
        what it still lists, with the same timestamps, and what was seen is skipped), or
        place it by the wall clock (timestamps that went back: a restarted RTSP/RTMP/HTTP
        source; or far ahead of the time that passed)."""
        if self.src_offset is None or self.origin_at is None:
            if self.origin_at is not None:  # resumed after a worker loss: wall clock
                self.src_offset = src_t - (time.time() - self.origin_at)
            return
        if self.loc is None and not hls and self.last_t > 0:
            # a resumed non-HLS stream: its timestamps say nothing about what was seen
            self.src_offset = src_t - (time.time() - self.origin_at)
            return
        t = src_t - self.src_offset
        elapsed = time.time() - self.origin_at
        if (not hls and t < self.last_t - 1.0) or t > elapsed + 30.0:
            self.src_offset = src_t - elapsed

    def run(self) -> str:
        rec, store = self.rec, self.store
        keeper = threading.Thread(target=self._keeper, name="hamnet-stream-keeper",
                                  daemon=True)
        keeper.start()
        if _slot is not None:
            _slot.busy = rec.id
        self.store.publish(rec.id, "status", {"status": "running", "state": "connecting"})
        down_since: float | None = None
        started = time.time()
        failures = 0
        outcome: tuple[str, tuple[str, str] | None] = ("finished", None)
        try:
            while not self.stop.is_set():
                try:
                    new, info = self._connect_once()
                except SourceDown as e:
                    new, info = -1, {"error": str(e)}
                except OverflowError:
                    outcome = ("failed", ("stream_too_long", "the stream played longer than "
                                          f"the {self.s.stream_max_s:.0f} s limit"))
                    break
                if self.stop.is_set():
                    break
                if new > 0:
                    down_since, failures = None, 0
                    duration = info.get("duration")
                    if duration and self.last_t >= duration - 2 * self.snippet_s:
                        break  # a finite source played to its end
                    self._status("reconnecting")
                    self.reconnects += 1
                    continue  # EOF: open it again; nothing new then means it ended
                if new == 0 and "error" not in info and self.ever_live:
                    break  # opened again and had nothing new: the source has ended
                # down (or opened but gave nothing): back off, give up after stream_down_s
                self._status("reconnecting")
                if down_since is None:
                    down_since = self.last_frame_wall if self.ever_live else started
                if time.time() - down_since > self.s.stream_down_s:
                    code = "stream_lost" if self.ever_live else "stream_unreachable"
                    what = ("the source dropped and stayed down" if self.ever_live
                            else "the source could not be opened")
                    outcome = ("failed", (code, f"{what} for more than "
                                          f"{self.s.stream_down_s:.0f} s "
                                          f"({info.get('error', 'no frames')})"))
                    break
                self.stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                self.reconnects += 1
            self._flush()
        except Exception as e:
            log.exception("stream %s crashed", rec.id)
            outcome = ("failed", ("internal_error", f"stream processing failed "
                                  f"({type(e).__name__})"))
        finally:
            self.stop.set()
            keeper.join(timeout=5)
            if _slot is not None:
                _slot.busy = None
        if self.lost:
            cur = store.get(rec.id)
            status = cur.status if cur is not None else "gone"
            if cur is not None and cur.status == "stopped":
                self._sync_final()
                self._end_event("stopped", None)
            self._close_callbacks()
            return status
        self._sync_final()
        store.end(rec.id, self.token, outcome[0], outcome[1])  # type: ignore[arg-type]
        self._end_event(outcome[0], outcome[1])
        self._close_callbacks()
        return outcome[0]

    def _close_callbacks(self) -> None:
        if self.callbacks is None:
            return
        self.callbacks.close()
        try:
            self.store.note_callbacks(self.rec.id, self.callbacks.delivered,
                                      self.callbacks.failed)
        except Exception:
            log.warning("stream %s: callback counts not recorded", self.rec.id, exc_info=True)

    def _sync_final(self) -> None:
        try:
            self._sync()
        except Exception:
            log.warning("stream %s: final update failed", self.rec.id, exc_info=True)

    def _end_event(self, status: str, error: tuple[str, str] | None) -> None:
        err = {"code": error[0], "message": error[1]} if error else None
        seq = self.store.publish(self.rec.id, "end", {
            "status": status, "error": err, "segments": self.segments,
            "stream_time": round(max(self.last_t, 0.0), 3)})
        if self.callbacks is not None:
            self.callbacks.send({"stream_id": self.rec.id, "event": "end", "seq": seq,
                                 "status": status, "error": err, "published_at": time.time()})


@shared_task(name=STREAM_TASK, bind=True, acks_late=False, ignore_result=True)
def process_stream(self: Any, stream_id: str) -> str:
    rt = get_runtime()
    s = rt.settings
    store = stream_store(rt)
    rec, action = store.begin(stream_id, rt.name, s.lease_s, s.max_attempts)
    if action == "poison":
        store.publish(stream_id, "end", {"status": "failed", "error": {
            "code": "worker_lost", "message": rec.error.message if rec and rec.error else ""}})
    if action != "run" or rec is None:
        return action
    try:
        runner = StreamRunner(rt, store, rec)
    except Exception as e:  # the model cannot be loaded: the stream cannot run anywhere
        log.exception("stream %s: cannot start", stream_id)
        store.end(stream_id, rec.lease or "", "failed",
                  ("model_unavailable", f"the model could not be loaded ({type(e).__name__})"))
        store.publish(stream_id, "end", {"status": "failed", "error": {
            "code": "model_unavailable", "message": "the model could not be loaded"}})
        return "failed"
    return runner.run()


__all__ = ["STREAM_TASK", "Slot", "StreamRunner", "process_stream"]
