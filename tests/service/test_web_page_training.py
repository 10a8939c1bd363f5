"""The page's "Train your own model" section in headless Chromium, against the real stack of
``conftest.py`` plus a training worker (``hamnet worker --queues train``): a bad archive shows
its error with the labels.csv line; a good one becomes ready; a training started from the page
draws its loss and validation-mAP curves (one point per epoch, from ``GET /v1/trainings``) and,
once published, the new model is selected in the model picker for the next video."""

from __future__ import annotations

import csv
import io
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
from hamnet_procs import ROOT, Proc, hamnet_argv, wait_for
from test_web_page import Browser, browser  # noqa: F401  (the module-scoped fixture)

pytestmark = [pytest.mark.browser, pytest.mark.service, pytest.mark.slow]


@pytest.fixture(scope="module")
def trainer(service_env: dict[str, str], redis_server, tmp_path_factory):  # noqa: ANN001
    log = tmp_path_factory.mktemp("logs") / "trainer.log"
    env = {**service_env, "HAMNET_TRAIN_THREADS": "1"}
    proc = Proc("trainer", hamnet_argv("worker", "--queues", "train", "--loglevel", "INFO"),
                env, log).start()
    r = redis_server.client()
    wait_for(lambda: any(r.scan_iter(match="hamnet:trainer:*")), 180, "trainer", proc)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("page-training")
    out = base / "rendered"
    subprocess.run(hamnet_argv("synth", "--out", str(out), "--count", "6", "--seed", "5",
                               "--duration", "10:14", "--classes", "spin,slide,pulse"),
                   check=True, cwd=ROOT, capture_output=True)
    rows: OrderedDict[str, list[str]] = OrderedDict()
    with open(out / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["video"], []).append(r["label"])
    good, bad = base / "clips.zip", base / "bad.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("labels.csv", "video,labels\n" + "".join(
            f"{v}.mp4,{';'.join(x)}\n" for v, x in rows.items()))
        for v in rows:
            z.write(out / "videos" / f"{v}.mp4", f"{v}.mp4")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labels.csv", "video,labels\na.mp4,spin|slide\n")
        z.write(out / "videos" / f"{next(iter(rows))}.mp4", "a.mp4")
    bad.write_bytes(buf.getvalue())
    return good, bad


def test_upload_train_follow_curves_and_pick_the_model(browser: Browser, gateway: str,  # noqa: F811
                                                       worker, trainer, archives) -> None:
    good, bad = archives
    b = browser
    b.goto(gateway + "/")
    b.set_files("#ds-file", [bad])
    b.click("#ds-upload")
    b.wait_for("document.getElementById('ds-status').dataset.state === 'failed'", 60,
               "bad archive refused")
    text = b.js("document.getElementById('ds-status').textContent")
    assert "labels_invalid" in text and "line 2" in text, text

    b.set_files("#ds-file", [good])
    b.js("document.getElementById('ds-name').value = 'page clips'")
    b.click("#ds-upload")
    b.wait_for("document.getElementById('ds-status').dataset.state === 'ready'", 120,
               "dataset ready")
    assert "6 videos" in b.js("document.getElementById('ds-status').textContent")
    assert b.js("document.getElementById('tr-start').disabled") is False

    b.js("document.getElementById('tr-name').value = 'page-model';"
         "document.getElementById('tr-epochs').value = '3'")
    b.click("#tr-start")
    state = b.wait_for("['succeeded','failed','cancelled'].includes(document.getElementById("
                       "'tr-status').dataset.state) && document.getElementById('tr-status')"
                       ".dataset.state", 600, "training end")
    status = b.js("document.getElementById('tr-status').textContent")
    assert state == "succeeded", status
    assert "page-model@1" in status and "epoch 3/3" in status, status
    chart = b.js("""(() => { const s = document.getElementById('tr-chart');
        return [s.hasAttribute('hidden') || s.getBoundingClientRect().height < 50,
                s.dataset.points, s.querySelectorAll('polyline').length,
                [...s.querySelectorAll('polyline')].map(p => p.getAttribute('points')
                    .split(' ').length)]; })()""")
    assert chart[0] is False and chart[1] == "3", chart
    assert chart[2] == 3 and chart[3] == [3, 3, 3], chart  # loss, validation loss, mAP
    b.wait_for("document.getElementById('model-select').value === 'page-model@1'", 30,
               "the new model selected")
    assert b.js_errors() == []
