/* HAM-Net web page: live streams (docs/STREAMS.md). Starts a stream by URL (POST /v1/streams),
 * reads its Server-Sent Events (GET /v1/streams/{id}/events) and draws the timeline as it
 * grows: one lane per class, one bar per segment, the axis following the stream time.
 *
 * Why fetch and not EventSource: EventSource cannot send the Authorization header an API key
 * needs, so the feed is read with fetch() and parsed here (the same text/event-stream format;
 * Last-Event-ID is sent when the feed is reopened after a network error). */
(function () {
  "use strict";

  var KEY_STORAGE = "hamnet.apiKey";
  var $ = function (id) { return document.getElementById(id); };
  var el = {
    form: $("stream-form"), url: $("stream-url"), start: $("stream-start"), stop: $("stream-stop"),
    status: $("stream-status"), timeline: $("stream-timeline"), list: $("stream-segments"),
    keyInput: $("api-key")
  };
  if (!el.form) { return; }

  // Styles of this section (style.css belongs to the upload page; 'unsafe-inline' styles are
  // allowed by the page's CSP).
  var css = document.createElement("style");
  css.textContent =
    ".stream-timeline{margin:12px 0}" +
    ".stream-lane{display:flex;align-items:center;gap:8px;margin:4px 0}" +
    ".stream-lane-label{width:6em;font-size:.9em}" +
    ".stream-track{position:relative;flex:1;height:18px;border-radius:4px;background:var(--line,#ddd)}" +
    ".stream-seg{position:absolute;top:2px;bottom:2px;border-radius:3px;background:var(--accent,#2b6cb0)}" +
    ".stream-axis{font-size:.85em;text-align:right}" +
    ".stream-segments{font-family:ui-monospace,monospace;font-size:.9em;max-height:14em;overflow:auto}";
  document.head.appendChild(css);

  var state = { id: null, segments: [], status: null, streamTime: 0, lastSeq: 0, ended: false,
                controller: null };

  function api(path) { return new URL(path, document.baseURI).toString(); }

  function apiKey() {
    var k = el.keyInput ? el.keyInput.value.trim() : "";
    if (!k) { try { k = localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { k = ""; } }
    return k;
  }

  function headers(extra) {
    var h = extra || {};
    var k = apiKey();
    if (k) { h.Authorization = "Bearer " + k; }
    return h;
  }

  function say(text, kind) {
    el.status.textContent = text;
    el.status.dataset.kind = kind || "";
  }

  function fmt(t) {
    var m = Math.floor(t / 60), s = t - 60 * m;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(1);
  }

  function render() {
    var segs = state.segments;
    var total = Math.max(state.streamTime, 1);
    segs.forEach(function (s) { total = Math.max(total, s.end); });
    var labels = [];
    segs.forEach(function (s) { if (labels.indexOf(s.label) < 0) { labels.push(s.label); } });
    labels.sort();
    el.timeline.textContent = "";
    el.timeline.dataset.total = String(total);
    labels.forEach(function (label) {
      var lane = document.createElement("div");
      lane.className = "stream-lane";
      lane.dataset.label = label;
      var name = document.createElement("span");
      name.className = "stream-lane-label";
      name.textContent = label;
      lane.appendChild(name);
      var track = document.createElement("div");
      track.className = "stream-track";
      segs.forEach(function (s) {
        if (s.label !== label) { return; }
        var bar = document.createElement("span");
        bar.className = "stream-seg";
        bar.style.left = (100 * s.start / total) + "%";
        bar.style.width = Math.max(0.4, 100 * (s.end - s.start) / total) + "%";
        bar.dataset.seq = String(s.seq);
        bar.title = label + " " + fmt(s.start) + "–" + fmt(s.end) +
          (s.confidence != null ? " (confidence " + Math.round(100 * s.confidence) + "%)" : "");
        track.appendChild(bar);
      });
      lane.appendChild(track);
      el.timeline.appendChild(lane);
    });
    var axis = document.createElement("div");
    axis.className = "stream-axis muted";
    axis.textContent = "0:00.0 … " + fmt(total) + " (stream time)";
    el.timeline.appendChild(axis);
  }

  function addSegment(s) {
    state.segments.push(s);
    state.streamTime = Math.max(state.streamTime, s.stream_time || 0, s.end);
    var li = document.createElement("li");
    li.dataset.seq = String(s.seq);
    li.textContent = s.label + "  " + fmt(s.start) + " – " + fmt(s.end) +
      (s.confidence != null ? "  · confidence " + Math.round(100 * s.confidence) + "%" : "");
    el.list.appendChild(li);
    render();
  }

  function onEvent(kind, data) {
    if (kind === "segment") {
      addSegment(data);
    } else if (kind === "status") {
      state.status = data.state;
      if (data.stream_time) { state.streamTime = Math.max(state.streamTime, data.stream_time); }
      say("Stream " + data.state + (data.stream_time ? " at " + fmt(data.stream_time) : "") + "…");
      render();
    } else if (kind === "end") {
      state.ended = true;
      state.status = data.status;
      var why = data.error ? ": " + data.error.code + " — " + data.error.message : "";
      say("Stream " + data.status + why + " (" + state.segments.length + " segments).",
          data.status === "failed" ? "error" : "");
      el.stop.hidden = true;
      el.start.disabled = false;
    }
    document.body.dataset.stream = state.status || "";
  }

  // Parse text/event-stream from a fetch() body, calling onEvent per event.
  function follow() {
    if (state.ended || !state.id) { return; }
    var ctrl = new AbortController();
    state.controller = ctrl;
    var h = headers({ Accept: "text/event-stream" });
    if (state.lastSeq) { h["Last-Event-ID"] = String(state.lastSeq); }
    fetch(api("v1/streams/" + encodeURIComponent(state.id) + "/events"),
          { headers: h, cache: "no-store", signal: ctrl.signal }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      var reader = r.body.getReader();
      var dec = new TextDecoder();
      var buf = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { return; }
          buf += dec.decode(chunk.value, { stream: true });
          var parts = buf.split("\n\n");
          buf = parts.pop();
          parts.forEach(function (block) {
            var kind = null, data = null, id = null;
            block.split("\n").forEach(function (line) {
              if (line.indexOf("event: ") === 0) { kind = line.slice(7); }
              else if (line.indexOf("data: ") === 0) { data = line.slice(6); }
              else if (line.indexOf("id: ") === 0) { id = parseInt(line.slice(4), 10); }
            });
            if (id) { state.lastSeq = id; }
            if (kind && data) { onEvent(kind, JSON.parse(data)); }
          });
          return pump();
        });
      }
      return pump();
    }).then(function () {
      if (!state.ended) { setTimeout(follow, 2000); }  // closed early: resume after lastSeq
    }).catch(function (e) {
      if (e.name === "AbortError") { return; }
      if (!state.ended) { say("Connection to the event feed lost (" + e.message + "); retrying…"); setTimeout(follow, 3000); }
    });
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var url = el.url.value.trim();
    if (!url) { say("Enter the URL of a live stream.", "error"); return; }
    if (state.controller) { state.controller.abort(); }
    state = { id: null, segments: [], status: null, streamTime: 0, lastSeq: 0, ended: false,
              controller: null };
    el.list.textContent = "";
    render();
    el.start.disabled = true;
    say("Starting…");
    var body = { url: url };
    var picker = document.getElementById("model-select");
    if (picker && picker.value && picker.value !== "default") { body.model = picker.value; }
    fetch(api("v1/streams"), { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                               body: JSON.stringify(body) }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, status: r.status, body: j }; });
    }).then(function (res) {
      if (!res.ok) {
        var err = res.body && res.body.error ? res.body.error : { code: "http_" + res.status, message: "" };
        say("Refused: " + err.code + " — " + err.message, "error");
        el.start.disabled = false;
        return;
      }
      state.id = res.body.id;
      el.stop.hidden = false;
      document.body.dataset.streamId = state.id;
      say("Stream " + state.id + " queued…");
      follow();
    }).catch(function (e) {
      say("Could not start the stream: " + e.message, "error");
      el.start.disabled = false;
    });
  });

  el.stop.addEventListener("click", function () {
    if (!state.id) { return; }
    fetch(api("v1/streams/" + encodeURIComponent(state.id)), { method: "DELETE", headers: headers() })
      .then(function () { say("Stopping…"); });
  });

  window.hamnetStreams = { state: function () { return state; } };
})();
