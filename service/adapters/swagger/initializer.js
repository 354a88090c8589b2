// Swagger UI on this server's own description (no inline script: the page's
// Content-Security-Policy allows only files served from here).
"use strict";

window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json", // relative to /docs: the server's /openapi.json
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // never send the description to validator.swagger.io
    tryItOutEnabled: false,
  });
});
