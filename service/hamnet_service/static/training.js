/* HAM-Net web page: train your own model. Uploads a labelled archive (POST /v1/datasets),
 * follows its validation (status, per-video errors), starts a training (POST /v1/trainings),
 * plots the loss and validation-mAP curves as epochs finish (an SVG drawn here: no library,
 * no CDN) and, when the model is published, selects it in the model picker (models.js) so the
 * next video uses it. Docs: docs/TRAINING.md. */
(function () {
  "use strict";

  var KEY_STORAGE = "hamnet.apiKey";
  var SVG = "http://www.w3.org/2000/svg";
  var STROKES = { "chart-loss": "#d9822b", "chart-val-loss": "#d9822b", "chart-map": "#2b7bd9" };
  function $(id) { return document.getElementById(id); }
  var el = {
    form: $("ds-form"), file: $("ds-file"), name: $("ds-name"), upload: $("ds-upload"),
    status: $("ds-status"), errors: $("ds-errors"), trainForm: $("tr-form"),
    model: $("tr-name"), epochs: $("tr-epochs"), start: $("tr-start"), cancel: $("tr-cancel"),
    trStatus: $("tr-status"), chart: $("tr-chart"), apiKey: $("api-key")
  };
  if (!el.form) { return; }
  var dataset = null;
  var training = null;
  var timer = null;

  function url(path) { return new URL(path, document.baseURI).toString(); }

  function headers(extra) {
    var h = extra || {};
    var k = el.apiKey ? el.apiKey.value.trim() : "";
    if (!k) { try { k = localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { k = ""; } }
    if (k) { h["Authorization"] = "Bearer " + k; }
    return h;
  }

  function call(method, path, body, json) {
    var opts = { method: method, headers: headers(json ? { "Content-Type": "application/json" } : {}),
                 cache: "no-store" };
    if (body !== undefined) { opts.body = json ? JSON.stringify(body) : body; }
    return fetch(url(path), opts).then(function (r) {
      if (r.status === 204) { return {}; }
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var err = (data && data.error) || {};
          var e = new Error((err.code ? err.code + ": " : "") + (err.message || "HTTP " + r.status));
          e.code = err.code;
          throw e;
        }
        return data;
      });
    });
  }

  function setText(node, text, state) {
    node.textContent = text;
    if (state) { node.dataset.state = state; } else { delete node.dataset.state; }
  }

  function showErrors(list) {
    el.errors.textContent = "";
    (list || []).forEach(function (e) {
      var li = document.createElement("li");
      var where = e.line ? "line " + e.line : "";
      if (e.member) { where += (where ? ", " : "") + e.member; }
      li.textContent = (where ? where + ": " : "") + e.code + " — " + e.message;
      el.errors.appendChild(li);
    });
    el.errors.hidden = !(list && list.length);
  }

  function showDataset(ds) {
    dataset = ds;
    var classes = Object.keys(ds.classes || {}).map(function (c) { return c + " (" + ds.classes[c] + ")"; });
    var text = "Dataset " + ds.name + ": " + ds.status;
    if (ds.status === "validating") { text += " (" + (ds.progress || 0) + "%)"; }
    text += " · " + ds.videos + " videos · " + classes.join(", ");
    if (ds.status === "failed" && ds.error) { text += " — " + ds.error.code + ": " + ds.error.message; }
    setText(el.status, text, ds.status);
    showErrors(ds.status === "failed" ? ds.errors : []);
    el.start.disabled = ds.status !== "ready";
  }

  function pollDataset(id) {
    call("GET", "v1/datasets/" + id).then(function (ds) {
      showDataset(ds);
      if (ds.status === "validating") { timer = setTimeout(function () { pollDataset(id); }, 700); }
    }).catch(function (e) { setText(el.status, String(e.message), "failed"); });
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!el.file.files || !el.file.files.length) {
      setText(el.status, "Choose a .zip, .tar or .tar.gz with your videos and labels.csv.", "failed");
      return;
    }
    clearTimeout(timer);
    var fd = new FormData();
    fd.append("file", el.file.files[0]);
    if (el.name.value.trim()) { fd.append("name", el.name.value.trim()); }
    el.upload.disabled = true;
    el.start.disabled = true;
    setText(el.status, "Uploading…", "validating");
    showErrors([]);
    call("POST", "v1/datasets", fd, false).then(function (ds) {
      showDataset(ds);
      pollDataset(ds.id);
    }).catch(function (e) {
      setText(el.status, "Archive refused: " + e.message, "failed");
    }).then(function () { el.upload.disabled = false; });
  });

  /* ---- the training and its curves ---- */

  function line(svg, pts, cls) {
    if (pts.length < 1) { return; }
    var p = document.createElementNS(SVG, "polyline");
    p.setAttribute("points", pts.map(function (q) { return q[0].toFixed(1) + "," + q[1].toFixed(1); }).join(" "));
    p.setAttribute("class", cls);
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", STROKES[cls] || "currentColor");
    p.setAttribute("stroke-width", "2");
    if (cls === "chart-val-loss") { p.setAttribute("stroke-dasharray", "5 4"); }
    svg.appendChild(p);
  }

  function label(svg, x, y, text, cls) {
    var t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    t.setAttribute("class", cls || "chart-label");
    t.setAttribute("font-size", "11");
    t.setAttribute("fill", "currentColor");
    t.textContent = text;
    svg.appendChild(t);
    return t;
  }

  function draw(history, epochs) {
    var svg = el.chart;
    var W = 560, H = 200, L = 40, R = 40, T = 14, B = 26;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var losses = history.map(function (h) { return h.loss; }).concat(
      history.map(function (h) { return h.val_loss; }).filter(function (v) { return v != null; }));
    var lmax = Math.max.apply(null, losses.concat([1e-6]));
    var lmin = losses.length ? Math.min.apply(null, losses) : 0;
    if (lmax - lmin < 1e-6) { lmin = 0; }
    var n = Math.max(epochs || 1, 1);
    function x(e) { return L + (W - L - R) * (n <= 1 ? 0.5 : (e - 1) / (n - 1)); }
    function yl(v) { return T + (H - T - B) * (1 - (v - lmin) / (lmax - lmin)); }
    function ym(v) { return T + (H - T - B) * (1 - v); }
    var axis = document.createElementNS(SVG, "rect");
    axis.setAttribute("x", L); axis.setAttribute("y", T);
    axis.setAttribute("width", W - L - R); axis.setAttribute("height", H - T - B);
    axis.setAttribute("class", "chart-frame"); axis.setAttribute("fill", "none");
    axis.setAttribute("stroke", "#8888");
    svg.appendChild(axis);
    line(svg, history.map(function (h) { return [x(h.epoch), yl(h.loss)]; }), "chart-loss");
    line(svg, history.filter(function (h) { return h.val_loss != null; })
      .map(function (h) { return [x(h.epoch), yl(h.val_loss)]; }), "chart-val-loss");
    line(svg, history.filter(function (h) { return h.val_map != null; })
      .map(function (h) { return [x(h.epoch), ym(h.val_map)]; }), "chart-map");
    label(svg, 2, T + 8, lmax.toFixed(2));
    label(svg, 2, H - B, lmin.toFixed(2));
    label(svg, W - R + 4, T + 8, "mAP 1");
    label(svg, W - R + 4, H - B, "0");
    label(svg, L, H - 6, "epoch 1");
    label(svg, W - R - 50, H - 6, "epoch " + n);
    label(svg, L + 6, H - B - 22, "— loss  - - validation loss (left axis)",
          "chart-label chart-loss-label").setAttribute("fill", STROKES["chart-loss"]);
    label(svg, L + 6, H - B - 8, "— validation mAP, video-level (right axis)",
          "chart-label chart-map-label").setAttribute("fill", STROKES["chart-map"]);
    svg.dataset.points = String(history.length);
    svg.setAttribute("width", "100%");
    svg.setAttribute("style", "max-width: 640px; display: block; margin-top: 8px");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    svg.removeAttribute("hidden");  /* an SVG element has no .hidden property */
  }

  function pickModel(ref) {
    if (!window.hamnetModels) { return; }
    window.hamnetModels.reload();
    var select = $("model-select");
    var tries = 0;
    (function wait() {
      tries += 1;
      var ok = select && Array.prototype.some.call(select.options, function (o) { return o.value === ref; });
      if (ok) {
        select.value = ref;
        select.dispatchEvent(new Event("change"));
      } else if (tries < 40) { setTimeout(wait, 250); }
    })();
  }

  function showTraining(tr) {
    training = tr;
    var text = "Training " + tr.name + ": " + tr.status;
    if (tr.stage) { text += " · " + tr.stage; }
    if (tr.stage === "features" && tr.stage_progress) {
      text += " " + tr.stage_progress.done + "/" + tr.stage_progress.total + " videos";
    }
    if (tr.epoch) { text += " · epoch " + tr.epoch + "/" + tr.epochs; }
    var last = tr.history && tr.history.length ? tr.history[tr.history.length - 1] : null;
    if (last) {
      text += " · loss " + last.loss.toFixed(3);
      if (last.val_map != null) { text += " · validation mAP " + (100 * last.val_map).toFixed(1) + "%"; }
    }
    if (tr.status === "succeeded" && tr.model) { text += " · published as " + tr.model.ref + " (selected above)"; }
    if (tr.error) { text += " — " + tr.error.code + ": " + tr.error.message; }
    setText(el.trStatus, text, tr.status);
    draw(tr.history || [], tr.epochs);
    var active = tr.status === "queued" || tr.status === "running";
    el.cancel.hidden = !active;
    el.start.disabled = active || !dataset || dataset.status !== "ready";
  }

  function pollTraining(id) {
    call("GET", "v1/trainings/" + id).then(function (tr) {
      showTraining(tr);
      if (tr.status === "queued" || tr.status === "running") {
        timer = setTimeout(function () { pollTraining(id); }, 1000);
      } else if (tr.status === "succeeded" && tr.model) {
        pickModel(tr.model.ref);
      }
    }).catch(function (e) { setText(el.trStatus, String(e.message), "failed"); });
  }

  el.trainForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!dataset || dataset.status !== "ready") { return; }
    var body = { dataset: dataset.id, name: el.model.value.trim() };
    var ep = parseInt(el.epochs.value, 10);
    if (ep > 0) { body.epochs = ep; }
    el.start.disabled = true;
    call("POST", "v1/trainings", body, true).then(function (tr) {
      showTraining(tr);
      pollTraining(tr.id);
    }).catch(function (e) {
      setText(el.trStatus, "Training refused: " + e.message, "failed");
      el.start.disabled = false;
    });
  });

  el.cancel.addEventListener("click", function () {
    if (!training) { return; }
    call("DELETE", "v1/trainings/" + training.id).catch(function () { /* shown by the poll */ });
  });
})();
