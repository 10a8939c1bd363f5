"""The page's model picker in headless Chromium against the real stack (conftest.py): a model
published with the operator CLI after the worker started appears in the picker, choosing it
shows its card, and the upload runs on it (the job and the result name that version)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_web_page import Browser, browser  # noqa: F401 - the module-scoped fixture

pytestmark = [pytest.mark.browser, pytest.mark.service]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hamnet_service.models_cli", "models", *args],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def page_model(service_env: dict[str, str], bundle_dir: Path, tmp_path: Path):
    """A shared model: the test bundle under another manifest name and card title."""
    import shutil

    src = tmp_path / "pagemodel"
    shutil.copytree(bundle_dir, src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["name"] = "page-mini"
    manifest["card"]["title"] = "Page picker test model"
    (src / "manifest.json").write_text(json.dumps(manifest))
    out = _cli(service_env, "publish", str(src), "--name", "pagemodel")
    assert out.returncode == 0, out.stderr
    published = json.loads(out.stdout)
    yield published
    _cli(service_env, "delete", published["ref"])


def test_picker_lists_models_and_the_upload_uses_the_choice(
        browser: Browser, gateway: str, worker, page_model: dict,  # noqa: F811
        small_video: Path) -> None:
    b = browser
    b.goto(gateway + "/")
    b.wait_for("Number(document.getElementById('model-select').dataset.loaded) >= 2", 30,
               "models listed")
    options = b.js("[...document.getElementById('model-select').options].map(o => o.value)")
    assert options[0] == "default" and page_model["ref"] in options
    assert b.js("document.getElementById('model-select').value") == "default"
    assert b.js("document.getElementById('model-select').disabled") is False

    # choose it the way a person does: focus the select, pick, the page hears `change`
    b.js(f"""(() => {{ const s = document.getElementById('model-select');
        s.focus(); s.value = {json.dumps(page_model['ref'])};
        s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")
    b.wait_for("document.getElementById('card-title').textContent"
               ".includes('Page picker test model')", 10, "the chosen model's card")
    assert "spin" in b.js("document.getElementById('model-note').textContent")
    assert page_model["ref"] in b.js("document.getElementById('model-info').textContent")
    if os.environ.get("HAMNET_MODELS_SCREENSHOT"):  # a picture for a person to look at
        b.screenshot(Path(os.environ["HAMNET_MODELS_SCREENSHOT"]))

    b.set_files("#file", [small_video])
    b.click("#submit")
    state = b.wait_for("['succeeded','failed','cancelled'].includes(document.body.dataset."
                       "state) && document.body.dataset.state", 300, "job end")
    assert state == "succeeded", b.js("document.getElementById('error').innerText")
    job_id = b.js("decodeURIComponent(location.hash.split('job=')[1] || '')")
    job = httpx.get(f"{gateway}/v1/jobs/{job_id}", timeout=30).json()
    assert job["model"]["ref"] == page_model["ref"]
    assert job["model"]["checksum"] == page_model["checksum"]
    result = httpx.get(f"{gateway}/v1/jobs/{job_id}/result", timeout=30).json()
    assert result["model"]["ref"] == page_model["ref"] and result["model"]["name"] == "page-mini"
    assert not b.js_errors()
