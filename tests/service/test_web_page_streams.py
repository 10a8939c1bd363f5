"""The page's live-stream section in headless Chromium, against the real stack of
``test_streams.py`` (redis-server, a stream worker, uvicorn) and a live HLS source on loopback:
a stream started from the page shows its timeline growing while the source still plays, ends
with the same segments as the API's rolling result, and breaks no CSP rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import test_streams  # noqa: E402
from livesource import DirServer, HLSWriter  # noqa: E402
from test_web_page import Browser  # noqa: E402

# the stream stack and video of test_streams.py (module-scoped: one more worker, this module's)
stream_stack = test_streams.stream_stack
stream_video = test_streams.stream_video
sapi = test_streams.sapi

pytestmark = [pytest.mark.browser, pytest.mark.service]


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    b.watch_csp()
    yield b
    b.close()


def test_page_watches_a_stream_timeline_grow(browser: Browser, sapi: httpx.Client,
                                             stream_stack: dict, stream_video: Path,
                                             tmp_path: Path) -> None:
    hls = HLSWriter(stream_video, tmp_path / "hls", rate=2.0).start()
    srv = DirServer(tmp_path / "hls").start()
    try:
        hls.wait_playlist()
        browser.goto(stream_stack["url"] + "/")
        browser.js(f"document.getElementById('stream-url').value = "
                   f"{json.dumps(srv.url('index.m3u8'))}")
        browser.click("#stream-start")
        sid = browser.wait_for("document.body.dataset.streamId", 30, "stream created")
        browser.wait_for("window.hamnetStreams.state().segments.length > 0", 120,
                         "a first segment on the page")
        first = browser.js("window.hamnetStreams.state().segments.length")
        grew_while_playing = not hls.done()
        browser.wait_for("window.hamnetStreams.state().ended", 150, "the stream's end")
        st = browser.js("(() => { const s = window.hamnetStreams.state(); return "
                        "{status: s.status, segs: s.segments.map(x => x.seq)}; })()")
        assert st["status"] == "finished"
        assert grew_while_playing and len(st["segs"]) >= first
        # the timeline has one bar per segment, in one lane per class
        bars = browser.js("[...document.querySelectorAll('#stream-timeline .stream-seg')]"
                          ".map(b => +b.dataset.seq)")
        assert sorted(bars) == sorted(st["segs"])
        lanes = browser.js("[...document.querySelectorAll('#stream-timeline .stream-lane')]"
                           ".map(l => l.dataset.label)")
        rec = sapi.get(f"/v1/streams/{sid}").json()
        assert [s["seq"] for s in rec["recent"]] == st["segs"]
        assert sorted(lanes) == sorted({s["label"] for s in rec["recent"]})
        items = browser.js("document.querySelectorAll('#stream-segments li').length")
        assert items == len(st["segs"])
        assert "finished" in browser.js("document.getElementById('stream-status').textContent")
        assert browser.js("window.__csp") == []
        assert browser.js_errors() == []
    finally:
        hls.stop()
        srv.stop()


def test_page_shows_a_refused_url(browser: Browser, stream_stack: dict) -> None:
    browser.goto(stream_stack["url"] + "/")
    browser.js("document.getElementById('stream-url').value = 'file:///etc/passwd'")
    browser.click("#stream-start")
    browser.wait_for("document.getElementById('stream-status').textContent"
                     ".includes('invalid_stream_url')", 30, "the refusal")
    assert browser.js("document.getElementById('stream-start').disabled") is False
