/* Starts Swagger UI on this service's OpenAPI document. A script file, not inline, so that it
 * runs under the page's Content-Security-Policy (script-src 'self'). "Try it out" requests carry
 * the API key the web page saved in this browser (localStorage "hamnet.apiKey"), if any. */
(function () {
  "use strict";
  var KEY_STORAGE = "hamnet.apiKey";

  function savedKey() {
    try { return localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
  }

  window.ui = window.SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).toString(),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: function (req) {
      var key = savedKey();
      if (key && req.headers && !req.headers.Authorization) {
        req.headers.Authorization = "Bearer " + key;
      }
      return req;
    }
  });
})();
