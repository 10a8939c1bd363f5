/* HAM-Net web page: upload a video, follow the job, draw the detected segments.
 * Plain browser JavaScript, no build step, no external assets. Talks to the REST API under
 * v1/ (relative to this page, so the page also works behind a path prefix). */
(function () {
  "use strict";

  var KEY_STORAGE = "hamnet.apiKey";
  var POLL_MS = 700;
  var SVG_NS = "http://www.w3.org/2000/svg";
  var TERMINAL = { succeeded: true, failed: true, cancelled: true };
  var STAGES = {
    queued: "Waiting for a worker",
    upload: "Uploading",
    uploading: "Uploading",
    probe: "Checking the video",
    decode: "Decoding frames",
    features: "Extracting features",
    localize: "Localizing actions",
    postprocess: "Localizing actions",
    save: "Saving the result",
    done: "Done"
  };

  function $(id) { return document.getElementById(id); }

  var el = {
    form: $("upload-form"), file: $("file"), fileName: $("file-name"), drop: $("file-drop"),
    minScore: $("min-score"), apiKey: $("api-key"), submit: $("submit"), cancel: $("cancel"),
    progressCard: $("progress-card"), progress: $("progress"), pct: $("progress-pct"),
    progressText: $("progress-text"), jobId: $("job-id"),
    error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), errorCode: $("error-code"),
    resultCard: $("result-card"), summary: $("result-summary"), video: $("video"), videoNote: $("video-note"),
    timeline: $("timeline"), segTable: $("segments-table"), segCount: $("segment-count"),
    classScores: $("class-scores"), modelInfo: $("model-info"),
    demoBanner: $("demo-banner"), demoBannerText: $("demo-banner-text"),
    domainWarning: $("domain-warning"),
    card: $("model-card"), cardTitle: $("card-title"), cardSummary: $("card-summary"),
    cardUse: $("card-intended-use"), cardLimits: $("card-limitations"),
    cardClassesBlock: $("card-classes-block"), cardClasses: $("card-classes"),
    cardTrainingBlock: $("card-training-block"), cardTraining: $("card-training"),
    cardMetricsBlock: $("card-metrics-block"), cardMetrics: $("card-metrics")
  };

  var state = {
    jobId: null, pollTimer: null, objectUrl: null, result: null, xhr: null,
    pollFailures: 0, playheadFrame: 0, layout: null
  };

  /* ---------------------------------------------------------------- helpers */

  function api(path) { return new URL(path, document.baseURI).toString(); }

  function apiKey() { return el.apiKey.value.trim(); }

  function saveApiKey() {
    try {
      var k = apiKey();
      if (k) { localStorage.setItem(KEY_STORAGE, k); } else { localStorage.removeItem(KEY_STORAGE); }
    } catch (e) { /* storage disabled: the field's value is still used */ }
  }

  function authHeaders() {
    var h = { "Accept": "application/json" };
    var k = apiKey();
    if (k) { h["Authorization"] = "Bearer " + k; }
    return h;
  }

  function setState(s) { document.body.setAttribute("data-state", s); }

  function fmtTime(t) {
    if (!isFinite(t)) { return "–"; }
    var neg = t < 0; t = Math.abs(t);
    var h = Math.floor(t / 3600), m = Math.floor((t - h * 3600) / 60), s = t - h * 3600 - m * 60;
    var out;
    if (h > 0) { out = h + ":" + (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + Math.floor(s); }
    else if (m > 0) { out = m + ":" + (s < 10 ? "0" : "") + s.toFixed(1); }
    else { out = s.toFixed(1) + " s"; }
    return (neg ? "-" : "") + out;
  }

  function fmtScore(x) { return (typeof x === "number" && isFinite(x)) ? x.toFixed(2) : "–"; }

  function isNum(x) { return typeof x === "number" && isFinite(x); }

  /* A calibrated confidence in [0, 1] as a percentage; "–" when the model has no calibration. */
  function fmtConf(x) {
    if (!isNum(x)) { return "–"; }
    if (x > 0 && x < 0.005) { return "<1%"; }
    if (x < 1 && x > 0.995) { return ">99%"; }
    return Math.round(x * 100) + "%";
  }

  function segmentText(s) {
    var c = isNum(s.confidence) ? "confidence " + fmtConf(s.confidence) + ", " : "";
    return c + "score " + fmtScore(Number(s.score));
  }

  function colorFor(id, i) {
    var k = (typeof id === "number" && isFinite(id)) ? id : i;
    var hue = Math.round((k * 137.508 + 200) % 360);
    return "hsl(" + hue + " 62% 48%)";
  }

  function svg(tag, attrs, parent) {
    var n = document.createElementNS(SVG_NS, tag);
    if (attrs) { Object.keys(attrs).forEach(function (a) { n.setAttribute(a, String(attrs[a])); }); }
    if (parent) { parent.appendChild(n); }
    return n;
  }

  /* Turn any error body the gateway may send into {code, message}. */
  function errorFrom(status, body, fallback) {
    var code = "http_" + status, message = fallback || ("HTTP " + status);
    if (body && typeof body === "object") {
      var e = body.error || body.detail || body;
      if (typeof e === "string") { message = e; }
      else if (Array.isArray(e)) {
        code = "invalid_request";
        message = e.map(function (d) { return (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d)); }).join("; ");
      } else if (e && typeof e === "object") {
        if (e.code) { code = e.code; }
        if (e.message) { message = e.message; } else if (e.detail) { message = String(e.detail); }
      }
    } else if (typeof body === "string" && body.trim()) {
      message = body.trim().slice(0, 400);
    }
    if (status === 401 || status === 403) {
      message += " — enter a valid API key above.";
    }
    return { code: code, message: message, status: status };
  }

  function parseJSON(text) { try { return JSON.parse(text); } catch (e) { return text; } }

  function getJSON(path) {
    return fetch(api(path), { headers: authHeaders(), cache: "no-store" }).then(function (r) {
      return r.text().then(function (t) {
        var body = parseJSON(t);
        if (!r.ok) {
          var err = errorFrom(r.status, body);
          var ra = r.headers.get("Retry-After");
          if (ra) { err.retryAfter = Number(ra); }
          throw err;
        }
        return body;
      });
    });
  }

  /* ---------------------------------------------------------------- messages */

  function showError(err, title) {
    el.errorTitle.textContent = title || "Something went wrong";
    el.errorMessage.textContent = (err && err.message) || String(err);
    el.errorCode.textContent = err && err.code ? "code: " + err.code : "";
    el.error.hidden = false;
  }

  function clearError() { el.error.hidden = true; el.errorMessage.textContent = ""; el.errorCode.textContent = ""; }

  function setProgress(pct, text) {
    var p = Math.max(0, Math.min(100, Number(pct) || 0));
    el.progress.value = p;
    el.progress.textContent = Math.round(p) + "%";
    el.pct.textContent = Math.round(p) + "%";
    if (text !== undefined) { el.progressText.textContent = text; }
  }

  function busy(on) {
    el.submit.disabled = on;
    el.file.disabled = on;
    el.cancel.hidden = !on;
  }

  /* ---------------------------------------------------------------- model info */

  function loadModelInfo() {
    getJSON("v1/models").then(function (data) {
      var m = data;
      if (Array.isArray(data)) { m = data[0]; }
      else if (data && Array.isArray(data.models)) { m = data.models[0]; }
      else if (data && Array.isArray(data.data)) { m = data.data[0]; }
      if (!m) { document.body.dataset.model = "loaded"; return; }
      var parts = [];
      if (m.name) { parts.push(m.name + (m.version ? " " + m.version : "")); }
      var classes = m.classes || (m.manifest && m.manifest.classes);
      if (Array.isArray(classes)) { parts.push(classes.length + " classes"); }
      var prov = m.providers || m.provider || m.execution_provider;
      if (Array.isArray(prov)) { prov = prov.join(", "); }
      if (prov) { parts.push("on " + String(prov).replace(/ExecutionProvider/g, "")); }
      el.modelInfo.textContent = parts.length ? "Model: " + parts.join(" · ") : "";
      showModel(m);
      document.body.dataset.model = "loaded";
    }).catch(function (err) {
      if (err && (err.status === 401 || err.status === 403)) {
        el.modelInfo.textContent = "This server needs an API key.";
      }
      document.body.dataset.model = "failed";
    });
  }

  function addText(parent, tag, text, cls) {
    var n = document.createElement(tag);
    n.textContent = text;
    if (cls) { n.className = cls; }
    parent.appendChild(n);
    return n;
  }

  function fmtMetric(v) {
    if (isNum(v)) { return Number.isInteger(v) ? String(v) : v.toFixed(3); }
    if (Array.isArray(v)) { return v.map(fmtMetric).join(", "); }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    return String(v);
  }

  /* Nested metrics as "a · b: value" rows (objects flattened, arrays joined). */
  function metricRows(obj, prefix, out) {
    Object.keys(obj || {}).forEach(function (k) {
      var v = obj[k], name = prefix ? prefix + " · " + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) { metricRows(v, name, out); }
      else if (v !== null && v !== undefined && v !== "") { out.push([name.replace(/_/g, " "), fmtMetric(v)]); }
    });
    return out;
  }

  function pct(x) { return isNum(x) ? (100 * x).toFixed(1) + " %" : "–"; }

  /* Held-out metrics of the card as [name, value, class] rows: detection mAP per tIoU, its
   * average, how many videos; then calibration and domain-check summaries. */
  function metricsRows(card) {
    var rows = [], m = card.metrics;
    if (m && typeof m === "object") {
      var what = [];
      if (isNum(m.videos)) { what.push(m.videos + " videos"); }
      if (isNum(m.instances)) { what.push(m.instances + " action instances"); }
      if (what.length) { rows.push(["measured on", what.join(", ") + " never seen in training", ""]); }
      if (Array.isArray(m.tiou) && Array.isArray(m.mAP) && m.tiou.length === m.mAP.length) {
        rows.push(["detection mAP", m.tiou.map(function (t, i) {
          return "@" + Number(t).toFixed(1) + " " + pct(m.mAP[i]);
        }).join(" · "), "mono"]);
      }
      if (isNum(m.average_mAP)) { rows.push(["average mAP", pct(m.average_mAP), "mono"]); }
      var known = { videos: 1, instances: 1, tiou: 1, mAP: 1, average_mAP: 1, seed: 1, note: 1 };
      metricRows(Object.keys(m).reduce(function (o, k) { if (!known[k]) { o[k] = m[k]; } return o; }, {}), "", [])
        .forEach(function (r) { rows.push([r[0], r[1], "mono"]); });
      if (m.note) { rows.push(["note", String(m.note), ""]); }
    }
    var cal = card.calibration;
    if (cal && isNum(cal.ece)) {
      rows.push(["confidence", "calibration error " + pct(cal.ece) + (isNum(cal.segments) ? " on " + cal.segments + " held-out segments" : ""), ""]);
    }
    var dom = card.domain;
    if (dom && isNum(dom.heldout_videos) && isNum(dom.heldout_flagged)) {
      rows.push(["out-of-domain check", dom.heldout_flagged + " of " + dom.heldout_videos + " held-out videos wrongly flagged", ""]);
    }
    return rows;
  }

  /* The demo banner and the model card, from GET /v1/models. */
  function showModel(m) {
    var card = m.card || null;
    var synthetic = m.synthetic === true || !!(card && card.synthetic);
    el.demoBanner.hidden = !synthetic;
    el.demoBannerText.textContent = synthetic ? (m.notice || ("Demo model: " + ((card && card.summary) ||
      "trained only on rendered motion patterns; it will not recognise real-world actions."))) : "";
    if (!card) { el.card.hidden = true; return; }
    el.card.hidden = false;
    el.cardTitle.textContent = card.title ? "— " + card.title : "";
    el.cardSummary.textContent = card.summary || "";
    el.cardUse.textContent = card.intended_use || "–";
    el.cardLimits.textContent = "";
    (card.limitations || []).forEach(function (t) { addText(el.cardLimits, "li", String(t)); });
    if (!el.cardLimits.children.length) { addText(el.cardLimits, "li", "none stated"); }
    el.cardClasses.textContent = "";
    (card.classes || []).forEach(function (c) {
      if (!c) { return; }
      addText(el.cardClasses, "dt", String(c.name !== undefined ? c.name : c));
      addText(el.cardClasses, "dd", c.description ? String(c.description) : "");
    });
    el.cardClassesBlock.hidden = !el.cardClasses.children.length;
    var td = card.training_data;
    var bits = [];
    if (td && typeof td === "object") {
      if (td.description) { bits.push(String(td.description)); }
      if (isNum(td.videos)) { bits.push(td.videos + " training videos"); }
      if (td.source) { bits.push("source: " + td.source); }
    } else if (td) { bits.push(String(td)); }
    el.cardTraining.textContent = bits.join(" · ");
    el.cardTrainingBlock.hidden = !bits.length;
    el.cardMetrics.textContent = "";
    metricsRows(card).forEach(function (row) {
      addText(el.cardMetrics, "dt", row[0]);
      addText(el.cardMetrics, "dd", row[1], row[2]);
    });
    el.cardMetricsBlock.hidden = !el.cardMetrics.children.length;
  }

  /* ---------------------------------------------------------------- upload */

  function chosenFile() { return el.file.files && el.file.files[0]; }

  function onFileChosen() {
    var f = chosenFile();
    el.fileName.textContent = f ? f.name + " (" + (f.size / 1048576).toFixed(1) + " MB)" : "or drop a video file here";
    el.drop.classList.toggle("has-file", !!f);
    clearError();
  }

  function upload(ev) {
    if (ev) { ev.preventDefault(); }
    clearError();
    var f = chosenFile();
    if (!f) { showError({ code: "no_file", message: "Choose a video file first." }, "No video chosen"); el.file.focus(); return; }
    var ms = el.minScore.value.trim();
    if (ms !== "" && !(Number(ms) >= 0 && Number(ms) <= 1)) {
      showError({ code: "invalid_min_score", message: "Minimum confidence must be a number from 0 to 1." }, "Check the form");
      el.minScore.focus(); return;
    }
    stopPolling();
    resetResult();
    if (state.objectUrl) { URL.revokeObjectURL(state.objectUrl); }
    state.objectUrl = URL.createObjectURL(f);
    state.jobId = null;

    var fd = new FormData();
    fd.append("file", f, f.name);
    if (ms !== "") { fd.append("min_score", ms); }
    if (window.hamnetModels) { window.hamnetModels.addTo(fd); }  // models.js: the picker

    var xhr = new XMLHttpRequest();
    state.xhr = xhr;
    xhr.open("POST", api("v1/jobs"));
    var hs = authHeaders();
    Object.keys(hs).forEach(function (k) { xhr.setRequestHeader(k, hs[k]); });
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { setProgress(0, "Uploading… " + Math.round(100 * e.loaded / e.total) + "%"); }
    };
    xhr.onerror = function () {
      state.xhr = null; busy(false); setState("failed");
      showError({ code: "network_error", message: "Could not reach the server." }, "Upload failed");
    };
    xhr.onabort = function () { state.xhr = null; busy(false); setState("idle"); el.progressText.textContent = "Upload cancelled."; };
    xhr.onload = function () {
      state.xhr = null;
      var body = parseJSON(xhr.responseText);
      if (xhr.status < 200 || xhr.status >= 300) {
        busy(false); setState("failed");
        var err = errorFrom(xhr.status, body);
        var ra = xhr.getResponseHeader("Retry-After");
        if (ra) { err.message += " Try again in " + ra + " s."; }
        showError(err, "The server refused the video");
        el.progressText.textContent = "";
        return;
      }
      var id = body && (body.id || body.job_id);
      if (!id) { busy(false); setState("failed"); showError({ code: "bad_response", message: "The server did not return a job id." }); return; }
      startJob(id, body);
    };
    busy(true);
    setState("uploading");
    el.progressCard.hidden = false;
    el.jobId.textContent = "";
    setProgress(0, "Uploading…");
    xhr.send(fd);
  }

  /* ---------------------------------------------------------------- job polling */

  function startJob(id, first) {
    state.jobId = id;
    state.pollFailures = 0;
    el.jobId.textContent = "job " + id;
    try { history.replaceState(null, "", "#job=" + encodeURIComponent(id)); } catch (e) { /* file:// etc. */ }
    busy(true);
    el.progressCard.hidden = false;
    if (first && first.status) { showJob(first); }
    poll();
  }

  function stopPolling() {
    if (state.pollTimer) { clearTimeout(state.pollTimer); state.pollTimer = null; }
  }

  function showJob(job) {
    var st = job.status || "queued";
    setState(st);
    var stage = job.stage || (st === "queued" ? "queued" : "");
    var label = STAGES[stage] || (stage ? stage.charAt(0).toUpperCase() + stage.slice(1) : "");
    var pct = st === "succeeded" ? 100 : (job.progress || 0);
    var text;
    if (st === "queued") { text = "Queued — " + (label || "waiting for a worker") + "…"; }
    else if (st === "running") { text = (label || "Working") + "…"; }
    else if (st === "succeeded") { text = "Done."; }
    else if (st === "cancelled") { text = "Cancelled."; }
    else { text = "Failed."; }
    setProgress(pct, text);
  }

  function poll() {
    var id = state.jobId;
    if (!id) { return; }
    getJSON("v1/jobs/" + encodeURIComponent(id)).then(function (job) {
      if (id !== state.jobId) { return; }
      state.pollFailures = 0;
      showJob(job);
      if (job.status === "succeeded") { busy(false); fetchResult(id); }
      else if (job.status === "failed") {
        busy(false);
        showError(job.error || { code: "failed", message: "The job failed." }, "The video could not be analysed");
      } else if (job.status === "cancelled") { busy(false); }
      else { state.pollTimer = setTimeout(poll, POLL_MS); }
    }).catch(function (err) {
      if (id !== state.jobId) { return; }
      if (err && err.status === 404) {
        busy(false); setState("failed");
        showError({ code: err.code || "not_found", message: "This job no longer exists (it expired or was deleted)." }, "Job not found");
        return;
      }
      if (err && (err.status === 401 || err.status === 403)) {
        busy(false); setState("failed"); showError(err, "Not allowed"); return;
      }
      state.pollFailures += 1;
      if (state.pollFailures > 20) { busy(false); setState("failed"); showError(err, "Lost contact with the server"); return; }
      el.progressText.textContent = "Connection problem, retrying…";
      state.pollTimer = setTimeout(poll, Math.min(5000, POLL_MS * Math.pow(1.5, state.pollFailures)));
    });
  }

  function cancelJob() {
    if (state.xhr) { state.xhr.abort(); return; }
    var id = state.jobId;
    if (!id) { return; }
    stopPolling();
    fetch(api("v1/jobs/" + encodeURIComponent(id)), { method: "DELETE", headers: authHeaders() }).then(function (r) {
      if (!r.ok && r.status !== 404) {
        return r.text().then(function (t) { throw errorFrom(r.status, parseJSON(t)); });
      }
      state.jobId = null;
      busy(false); setState("cancelled");
      setProgress(el.progress.value, "Cancelled.");
    }).catch(function (err) { busy(false); showError(err, "Could not cancel the job"); });
  }

  function fetchResult(id) {
    getJSON("v1/jobs/" + encodeURIComponent(id) + "/result").then(function (res) {
      if (id !== state.jobId) { return; }
      renderResult(res);
      setState("succeeded");
    }).catch(function (err) { setState("failed"); showError(err, "Could not load the result"); });
  }

  /* ---------------------------------------------------------------- result */

  function resetResult() {
    state.result = null;
    state.layout = null;
    el.resultCard.hidden = true;
    el.timeline.textContent = "";
    el.segTable.tBodies[0].textContent = "";
    el.classScores.textContent = "";
    el.segCount.textContent = "0";
    el.domainWarning.hidden = true;
    document.body.removeAttribute("data-domain");
  }

  function resultDuration(res) {
    var d = res.video && Number(res.video.duration);
    if (d > 0 && isFinite(d)) { return d; }
    var end = 0;
    (res.segments || []).forEach(function (s) { end = Math.max(end, Number(s.end) || 0); });
    var att = res.attention || [];
    if (att.length && res.snippet_seconds) { end = Math.max(end, att.length * res.snippet_seconds); }
    if (!(end > 0) && isFinite(el.video.duration)) { end = el.video.duration; }
    return end > 0 ? end : 1;
  }

  /* Attention as [{t, v}] whatever the server's shape: numbers per snippet, [t, v] pairs or objects. */
  function attentionPoints(res) {
    var att = res.attention || [];
    var step = Number(res.snippet_seconds) || 0;
    var out = [];
    att.forEach(function (a, i) {
      var t, v;
      if (typeof a === "number") { v = a; t = step ? (i + 0.5) * step : i; }
      else if (Array.isArray(a)) {
        if (Array.isArray(a[0])) { v = Number(a[0][0]); } else if (a.length >= 2) { t = Number(a[0]); v = Number(a[1]); } else { v = Number(a[0]); }
        if (t === undefined) { t = step ? (i + 0.5) * step : i; }
      } else if (a && typeof a === "object") {
        v = Number(a.value !== undefined ? a.value : (a.score !== undefined ? a.score : a.attention));
        if (a.t !== undefined) { t = Number(a.t); }
        else if (a.time !== undefined) { t = Number(a.time); }
        else if (a.start !== undefined && a.end !== undefined) { t = (Number(a.start) + Number(a.end)) / 2; }
        else { t = step ? (i + 0.5) * step : i; }
      }
      if (isFinite(t) && isFinite(v)) { out.push({ t: t, v: v }); }
    });
    return out;
  }

  function lanesOf(res) {
    var order = {}, lanes = [], byLabel = {};
    var ranked = (res.classes && res.classes.length ? res.classes : res.video_scores) || [];
    ranked.forEach(function (c, i) { if (c && c.label !== undefined && !order[c.label]) { order[c.label] = { i: i, score: c.score }; } });
    (res.segments || []).forEach(function (s, i) {
      var key = String(s.label);
      if (!byLabel[key]) {
        byLabel[key] = { label: key, id: s.label_id, segments: [], score: order[key] ? order[key].score : undefined,
          rank: order[key] ? order[key].i : 1e6 + i };
        lanes.push(byLabel[key]);
      }
      byLabel[key].segments.push(s);
    });
    lanes.sort(function (a, b) { return a.rank - b.rank; });
    return lanes;
  }

  function renderResult(res) {
    state.result = res;
    el.resultCard.hidden = false;
    el.progressCard.hidden = false;
    setProgress(100, "Done.");

    if (state.objectUrl) {
      if (el.video.getAttribute("src") !== state.objectUrl) { el.video.src = state.objectUrl; }
      el.video.parentNode.hidden = false;
    } else {
      el.video.parentNode.hidden = true;
    }

    var segs = res.segments || [];
    var lanes = lanesOf(res);
    var v = res.video || {};
    // Out of domain: the model was not trained on anything like this video.
    var outOfDomain = !!(res.domain && res.domain.in_distribution === false);
    el.domainWarning.hidden = !outOfDomain;
    document.body.setAttribute("data-domain", res.domain ? (outOfDomain ? "out" : "in") : "unknown");
    var bits = [];
    bits.push(segs.length + (segs.length === 1 ? " segment" : " segments") + " of " + lanes.length + (lanes.length === 1 ? " action class" : " action classes"));
    if (v.duration) { bits.push("in " + fmtTime(Number(v.duration)) + " of video"); }
    if (v.width && v.height) { bits.push(v.width + "×" + v.height + (v.fps ? " @ " + Number(v.fps).toFixed(v.fps % 1 ? 2 : 0) + " fps" : "")); }
    if (res.model && res.model.name) { bits.push("model " + res.model.name + (res.model.version ? " " + res.model.version : "")); }
    el.summary.textContent = bits.join(" · ") + (state.objectUrl ? "" : " — pick the same file again to watch it.");

    drawTimeline();
    fillTable(segs);
    fillClasses((res.video_scores && res.video_scores.length ? res.video_scores : res.classes) || []);
    updatePlayhead();
    var heading = document.getElementById("result-title");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
  }

  function fillTable(segs) {
    var tb = el.segTable.tBodies[0];
    tb.textContent = "";
    el.segCount.textContent = String(segs.length);
    if (!segs.length) {
      var tr0 = tb.insertRow(); var td0 = tr0.insertCell(); td0.colSpan = 6;
      td0.textContent = "No action was found above the minimum confidence."; td0.className = "muted";
      return;
    }
    var sorted = segs.slice().sort(function (a, b) { return a.start - b.start; });
    sorted.forEach(function (s) {
      var tr = tb.insertRow();
      var c0 = tr.insertCell(); var dot = document.createElement("span"); dot.className = "dot";
      dot.style.background = colorFor(s.label_id, 0); c0.appendChild(dot); c0.appendChild(document.createTextNode(String(s.label)));
      tr.insertCell().textContent = fmtTime(Number(s.start));
      tr.insertCell().textContent = fmtTime(Number(s.end));
      var cc = tr.insertCell(); cc.className = "confidence"; cc.textContent = fmtConf(s.confidence);
      tr.insertCell().textContent = fmtScore(Number(s.score));
      var b = document.createElement("button"); b.type = "button"; b.className = "link";
      b.textContent = "Play"; b.setAttribute("aria-label", "Play " + s.label + " from " + fmtTime(Number(s.start)));
      b.addEventListener("click", function () { seek(Number(s.start), true); });
      tr.insertCell().appendChild(b);
    });
  }

  function fillClasses(classes) {
    el.classScores.textContent = "";
    classes = classes.slice().sort(function (a, b) { return (Number(b.score) || 0) - (Number(a.score) || 0); });
    classes.slice(0, 20).forEach(function (c) {
      var li = document.createElement("li");
      var name = document.createElement("span"); name.textContent = String(c.label);
      var bar = document.createElement("span"); bar.className = "bar";
      var fill = document.createElement("span"); fill.style.width = Math.max(0, Math.min(1, Number(c.score) || 0)) * 100 + "%";
      bar.appendChild(fill);
      var sc = document.createElement("span"); sc.className = "mono"; sc.textContent = fmtScore(Number(c.score));
      li.appendChild(name); li.appendChild(bar); li.appendChild(sc);
      el.classScores.appendChild(li);
    });
  }

  function niceStep(duration, px) {
    var want = Math.max(2, Math.floor(px / 80));
    var steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    for (var i = 0; i < steps.length; i++) { if (duration / steps[i] <= want) { return steps[i]; } }
    return steps[steps.length - 1];
  }

  function drawTimeline() {
    var res = state.result;
    if (!res) { return; }
    var box = el.timeline;
    box.textContent = "";
    var W = Math.max(300, Math.floor(box.clientWidth || 640));
    var narrow = W < 520;
    var L = narrow ? 96 : 150, R = 12, AXIS = 24, LANE = 26, GAP = 6, ATT = 56;
    var lanes = lanesOf(res);
    var pts = attentionPoints(res);
    var duration = resultDuration(res);
    var innerW = W - L - R;
    var SUB = 14, MAX_ROWS = 8;
    var maxScore = 0;
    // Overlapping segments of one class go to sub-rows of its lane so that none hides another.
    lanes.forEach(function (lane) {
      var ends = [];
      lane.placed = lane.segments.slice().sort(function (a, b) { return a.start - b.start || b.end - a.end; })
        .map(function (sg) {
          var r = 0;
          while (r < ends.length && ends[r] > Number(sg.start) + 1e-9 && r < MAX_ROWS - 1) { r++; }
          ends[r] = Math.max(ends[r] || 0, Number(sg.end));
          maxScore = Math.max(maxScore, Number(sg.score) || 0);
          return { seg: sg, row: r };
        });
      lane.rows = Math.max(1, ends.length);
      lane.height = lane.rows === 1 ? LANE : lane.rows * (SUB + 2) + 4;
    });
    var lanesTop = AXIS;
    var lanesH = lanes.length ? lanes.reduce(function (acc, l) { return acc + l.height + GAP; }, 0) : LANE + GAP;
    var attTop = lanesTop + lanesH + 4;
    var H = attTop + (pts.length ? ATT : 0) + 8;
    function x(t) { return L + Math.max(0, Math.min(1, t / duration)) * innerW; }
    state.layout = { x: x, L: L, W: W, innerW: innerW, duration: duration, H: H };

    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "group",
      "aria-label": "Detected actions over time, " + fmtTime(duration) + " long", "class": "timeline-svg" }, box);
    root.setAttribute("id", "timeline-svg");

    // time axis and grid
    var axis = svg("g", { "class": "axis", "aria-hidden": "true" }, root);
    var step = niceStep(duration, innerW);
    for (var t = 0; t <= duration + 1e-9; t += step) {
      var xx = x(t);
      svg("line", { x1: xx, x2: xx, y1: AXIS - 4, y2: H - 4, "class": "grid" }, axis);
      var anchor = t === 0 ? "start" : (xx > W - R - 30 ? "end" : "middle");
      var lab = svg("text", { x: anchor === "end" ? W - 2 : xx, y: AXIS - 8, "class": "tick", "text-anchor": anchor }, axis);
      lab.textContent = step < 1 ? t.toFixed(1) + "s" : fmtTime(t).replace(".0 s", "s").replace(/\.0$/, "");
    }

    // a transparent band to click anywhere on the timeline and seek there
    var band = svg("rect", { x: L, y: AXIS, width: innerW, height: H - AXIS, "class": "seek-band" }, root);
    band.addEventListener("click", function (ev) {
      var r = root.getBoundingClientRect();
      var px = (ev.clientX - r.left) * (W / r.width);
      seek(((px - L) / innerW) * duration, false);
    });

    // one lane per class
    var lanesG = svg("g", { "class": "lanes" }, root);
    if (!lanes.length) {
      var none = svg("text", { x: L + 8, y: lanesTop + LANE / 2 + 4, "class": "none" }, lanesG);
      none.textContent = "No action found above the minimum confidence";
    }
    var y = lanesTop;
    lanes.forEach(function (lane, li) {
      var laneY = y;
      y += lane.height + GAP;
      var g = svg("g", { "class": "lane", "data-label": lane.label }, lanesG);
      svg("rect", { x: L, y: laneY, width: innerW, height: lane.height, rx: 4, "class": "lane-bg" }, g);
      var name = svg("text", { x: L - 8, y: laneY + lane.height / 2 + 4, "text-anchor": "end", "class": "lane-label" }, g);
      var shown = lane.label.length > (narrow ? 10 : 20) ? lane.label.slice(0, narrow ? 9 : 19) + "…" : lane.label;
      name.textContent = shown;
      var nt = svg("title", null, name); nt.textContent = lane.label + (lane.score !== undefined ? " (video score " + fmtScore(lane.score) + ")" : "");
      var color = colorFor(lane.id, li);
      lane.placed.forEach(function (p) {
        var s = p.seg;
        var s0 = Number(s.start), s1 = Number(s.end);
        var ry = lane.rows === 1 ? laneY + 2 : laneY + 3 + p.row * (SUB + 2);
        var rh = lane.rows === 1 ? LANE - 4 : SUB;
        var rel = isNum(s.confidence) ? s.confidence
          : (maxScore > 0 ? Math.max(0, Number(s.score) || 0) / maxScore : 1);
        var x0 = x(s0), w = Math.max(3, x(s1) - x0);
        var sg = svg("g", {
          "class": "segment", tabindex: 0, role: "button", focusable: "true",
          "data-label": lane.label, "data-start": s0, "data-end": s1, "data-score": s.score,
          "data-confidence": isNum(s.confidence) ? s.confidence : "",
          "aria-label": lane.label + " from " + fmtTime(s0) + " to " + fmtTime(s1) + ", " + segmentText(s)
        }, g);
        svg("rect", { x: x0, y: ry, width: w, height: rh, rx: 3, fill: color,
          "fill-opacity": (0.4 + 0.6 * rel).toFixed(2) }, sg);
        var tt = svg("title", null, sg);
        tt.textContent = lane.label + ": " + fmtTime(s0) + " – " + fmtTime(s1) + " (" + segmentText(s) + ")";
        sg.addEventListener("click", function (ev) { ev.stopPropagation(); selectSegment(sg); seek(s0, false); });
        sg.addEventListener("keydown", function (ev) {
          if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); selectSegment(sg); seek(s0, true); }
        });
      });
    });

    // attention curve
    if (pts.length) {
      var ag = svg("g", { "class": "attention", "aria-label": "attention curve" }, root);
      var vmax = 1;
      pts.forEach(function (p) { if (p.v > vmax) { vmax = p.v; } });
      var vmin = Math.min(0, Math.min.apply(null, pts.map(function (p) { return p.v; })));
      var h = ATT - 10;
      function y(v) { return attTop + 4 + h - ((v - vmin) / (vmax - vmin || 1)) * h; }
      svg("rect", { x: L, y: attTop, width: innerW, height: ATT - 2, rx: 4, "class": "lane-bg" }, ag);
      var al = svg("text", { x: L - 8, y: attTop + ATT / 2 + 4, "text-anchor": "end", "class": "lane-label" }, ag);
      al.textContent = "attention";
      var d = "", area = "M" + x(pts[0].t).toFixed(1) + "," + y(vmin).toFixed(1);
      pts.forEach(function (p, i) {
        var seg = x(p.t).toFixed(1) + "," + y(p.v).toFixed(1);
        d += (i ? "L" : "M") + seg; area += "L" + seg;
      });
      area += "L" + x(pts[pts.length - 1].t).toFixed(1) + "," + y(vmin).toFixed(1) + "Z";
      svg("path", { d: area, "class": "attention-area" }, ag);
      svg("path", { d: d, "class": "attention-line", id: "attention-curve" }, ag);
      ag.addEventListener("click", function (ev) {
        var r = root.getBoundingClientRect();
        seek((((ev.clientX - r.left) * (W / r.width)) - L) / innerW * duration, false);
      });
    }

    // playhead
    var ph = svg("g", { id: "playhead", "class": "playhead", "aria-hidden": "true" }, root);
    svg("line", { x1: L, x2: L, y1: AXIS - 4, y2: H - 4 }, ph);
    svg("path", { d: "M-5,0 L5,0 L0,7 Z", "class": "playhead-knob" }, ph);
    updatePlayhead();
  }

  function selectSegment(node) {
    var prev = el.timeline.querySelectorAll(".segment.selected");
    for (var i = 0; i < prev.length; i++) { prev[i].classList.remove("selected"); }
    node.classList.add("selected");
  }

  function seek(t, play) {
    if (!isFinite(t)) { return; }
    var lay = state.layout;
    if (lay) { t = Math.max(0, Math.min(lay.duration, t)); }
    var v = el.video;
    try { v.currentTime = t; } catch (e) { /* not loaded yet */ }
    document.body.setAttribute("data-last-seek", t.toFixed(3));
    updatePlayhead(t);
    if (play && v.paused && v.src) { var p = v.play(); if (p && p.catch) { p.catch(function () {}); } }
  }

  function updatePlayhead(tOpt) {
    var lay = state.layout;
    var ph = document.getElementById("playhead");
    if (!lay || !ph) { return; }
    var t = (typeof tOpt === "number") ? tOpt : (el.video.currentTime || 0);
    var xx = lay.x(t);
    ph.setAttribute("transform", "translate(" + (xx - lay.L) + ",0)");
    ph.querySelector(".playhead-knob").setAttribute("transform", "translate(" + lay.L + ",18)");
    var segs = el.timeline.querySelectorAll(".segment");
    for (var i = 0; i < segs.length; i++) {
      var s = Number(segs[i].getAttribute("data-start")), e = Number(segs[i].getAttribute("data-end"));
      segs[i].classList.toggle("active", t >= s && t <= e);
    }
  }

  function playheadLoop() {
    updatePlayhead();
    state.playheadFrame = el.video.paused ? 0 : requestAnimationFrame(playheadLoop);
  }

  /* ---------------------------------------------------------------- wiring */

  function init() {
    try { el.apiKey.value = localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { /* storage off */ }
    el.apiKey.addEventListener("input", saveApiKey);
    el.apiKey.addEventListener("change", function () { saveApiKey(); loadModelInfo(); });
    el.file.addEventListener("change", onFileChosen);
    el.form.addEventListener("submit", upload);
    el.cancel.addEventListener("click", cancelJob);

    ["dragenter", "dragover"].forEach(function (n) {
      el.drop.addEventListener(n, function (e) { e.preventDefault(); el.drop.classList.add("dragging"); });
    });
    ["dragleave", "drop"].forEach(function (n) {
      el.drop.addEventListener(n, function () { el.drop.classList.remove("dragging"); });
    });
    el.drop.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
        el.file.files = e.dataTransfer.files; onFileChosen();
      }
    });

    el.video.addEventListener("timeupdate", function () { updatePlayhead(); });
    el.video.addEventListener("seeked", function () { updatePlayhead(); });
    el.video.addEventListener("play", function () { if (!state.playheadFrame) { playheadLoop(); } });
    el.video.addEventListener("error", function () {
      if (!state.objectUrl) { return; }
      el.videoNote.hidden = false;
      el.videoNote.textContent = "This browser cannot play this video file; the timeline and the table still show what was found.";
    });
    el.video.addEventListener("loadedmetadata", function () {
      el.videoNote.hidden = true;
      if (state.result && !(state.result.video && state.result.video.duration)) { drawTimeline(); }
    });

    var resizeTimer = 0;
    function redraw() { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawTimeline, 80); }
    if (window.ResizeObserver) {
      var lastW = 0;
      new ResizeObserver(function () {
        var w = el.timeline.clientWidth;
        if (w && w !== lastW) { lastW = w; redraw(); }
      }).observe(el.timeline);
    } else { window.addEventListener("resize", redraw); }

    loadModelInfo();
    var m = /job=([^&]+)/.exec(location.hash || "");
    if (m) { startJob(decodeURIComponent(m[1])); }
  }

  // exposed for debugging and tests
  window.hamnet = { state: state, seek: seek, render: renderResult, showModel: showModel };
  init();
})();
