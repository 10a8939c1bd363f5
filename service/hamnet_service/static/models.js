/* HAM-Net web page: the model picker. Lists GET /v1/models (the default model, the caller's
 * own and the shared ones; refreshed when the API key changes), sends the chosen reference as
 * the `model` form field of the upload (app.js calls window.hamnetModels.addTo(formData)),
 * and shows the chosen model's banner and card (window.hamnet.showModel from app.js). */
(function () {
  "use strict";

  var KEY_STORAGE = "hamnet.apiKey";
  var select = document.getElementById("model-select");
  var keyInput = document.getElementById("api-key");
  var note = document.getElementById("model-note");
  var models = {};

  function apiKey() {
    var k = keyInput ? keyInput.value.trim() : "";
    if (!k) { try { k = localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { k = ""; } }
    return k;
  }

  function label(m) {
    var owner = m.ref === "default" ? "default model" : (m.shared ? "shared" : "yours");
    var text = m.ref + " — " + (m.card && m.card.title ? m.card.title : m.name) + " (" + owner + ")";
    if (m.synthetic) { text += " · demo"; }
    return text;
  }

  function describe(m) {
    if (!note) { return; }
    var bits = [(m.classes || []).length + " classes: " + (m.classes || []).join(", ")];
    if (m.published) { bits.push("published " + String(m.published).slice(0, 10)); }
    if (m.versions && m.versions.length > 1) { bits.push("versions " + m.versions.join(", ")); }
    note.textContent = bits.join(" · ");
  }

  function chosen() { return select && models[select.value]; }

  function onChange() {
    var m = chosen();
    if (!m) { return; }
    describe(m);
    if (window.hamnet && window.hamnet.showModel) { window.hamnet.showModel(m); }
    var info = document.getElementById("model-info");
    if (info && document.body.dataset.model === "loaded") {
      var prov = (m.providers || []).join(", ").replace(/ExecutionProvider/g, "");
      info.textContent = "Model: " + m.ref + " (" + m.name + " " + m.version + ") · " +
        (m.classes || []).length + " classes" + (prov ? " · on " + prov : "");
    }
    select.dataset.chosen = m.ref;
  }

  function load() {
    if (!select) { return; }
    var headers = { "Accept": "application/json" };
    var k = apiKey();
    if (k) { headers["Authorization"] = "Bearer " + k; }
    var keep = select.value;
    fetch(new URL("v1/models", document.baseURI).toString(), { headers: headers, cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) {
        var list = (data && data.models) || [];
        models = {};
        select.textContent = "";
        list.forEach(function (m) {
          var ref = m.ref || "default";
          models[ref] = m;
          var opt = document.createElement("option");
          opt.value = ref;
          opt.textContent = label(m);
          select.appendChild(opt);
        });
        if (keep && models[keep]) { select.value = keep; }
        select.disabled = list.length < 2;
        select.dataset.loaded = String(list.length);
        var m = chosen();
        if (m) { describe(m); select.dataset.chosen = m.ref; }
        if (m && m.ref !== "default") { onChange(); }
      })
      .catch(function () {
        select.textContent = "";
        var opt = document.createElement("option");
        opt.value = "";
        opt.textContent = "default model";
        select.appendChild(opt);
        select.disabled = true;
        select.dataset.loaded = "0";
      });
  }

  window.hamnetModels = {
    /* The upload's `model` field: nothing for the default model (as before the registry). */
    addTo: function (fd) {
      var m = chosen();
      if (m && m.ref && m.ref !== "default") { fd.append("model", m.ref); }
    },
    chosen: chosen,
    reload: load
  };

  if (select) { select.addEventListener("change", onChange); }
  if (keyInput) { keyInput.addEventListener("change", load); }
  load();
})();
