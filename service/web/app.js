// The vggserve page: sends an image to TF Serving's REST `:explain` verb and shows the
// answer (top classes, the explanation overlay, latency), and the model's versions.
// Plain script, no build step, no inline code: the page's Content-Security-Policy allows
// scripts and styles from this server only.
"use strict";

(() => {
  const TOKEN_KEY = "vggserve-token";
  const TOP_K = 5;
  // While the server has no version yet (404), loads one (503) or a version is on its way
  // in or out, the versions are asked again this often, so the view catches up by itself.
  const RETRY_MS = 2000;
  const RETRIES = 60;
  // Versions in these states are about to change: the view is read again, as above.
  const IN_TRANSIT = ["START", "LOADING", "UNLOADING"];
  const model = document.querySelector('meta[name="vggserve-model"]').content;
  const byId = (id) => document.getElementById(id);

  // The file last chosen, sent again once a token is given after a 401.
  let pending = null;
  let pictureUrl = null;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function modelPath() {
    const version = byId("version").value;
    const base = `/v1/models/${encodeURIComponent(model)}`;
    return version ? `${base}/versions/${encodeURIComponent(version)}` : base;
  }

  function withToken(headers = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
  }

  // One API call: the JSON answer, or an ApiError carrying the server's own message.
  async function call(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: withToken(options.headers) });
    } catch (err) {
      // The server refused to read the body (it closes the connection after a 413)
      // or could not be reached: the browser gives no response to show.
      throw new ApiError(0, `no answer from the server (${err.message}): it may be down, ` +
        "or it closed the connection because the file is larger than its limit " +
        "(--max-message-bytes)");
    }
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.error === "string"
        ? body.error
        : `HTTP ${response.status} ${response.statusText}`;
      if (response.status === 401) askForToken(message);
      throw new ApiError(response.status, message);
    }
    return { body, response };
  }

  function askForToken(message) {
    byId("auth-message").textContent = message;
    byId("auth").hidden = false;
  }

  function showError(message) {
    const error = byId("error");
    error.textContent = message;
    error.hidden = false;
  }

  // The server's own time for a call, from its Server-Timing header (milliseconds).
  function serverMs(response) {
    const match = /(?:^|,)\s*app;dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
    return match ? Number(match[1]) : null;
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
      reader.onerror = () => reject(new Error(`cannot read ${file.name}: ${reader.error}`));
      reader.readAsDataURL(file);
    });
  }

  async function send(file) {
    pending = file;
    byId("error").hidden = true;
    byId("result").hidden = true;
    byId("busy").hidden = false;
    try {
      const b64 = await readBase64(file);
      const started = performance.now();
      const { body, response } = await call(`${modelPath()}:explain`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ instances: [{ b64 }], top_k: TOP_K }),
      });
      show(file, body, performance.now() - started, serverMs(response));
      pending = null;
    } catch (err) {
      if (err.status !== 401) pending = null; // only a missing token's failure is retried
      showError(err.message);
    } finally {
      byId("busy").hidden = true;
    }
  }

  function show(file, answer, pageMs, serverTime) {
    const explanation = answer.explanations[0];
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    pictureUrl = URL.createObjectURL(file);
    byId("picture").src = pictureUrl;
    byId("picture").alt = `The image you sent: ${file.name}`;
    byId("picture-caption").textContent = `Your image: ${file.name}`;

    const overlay = byId("overlay");
    overlay.src = `data:image/png;base64,${explanation.overlay_png.b64}`;
    overlay.alt = `Explanation of class ${explanation.label}: the image with a heatmap over ` +
      "the regions that raised that class's score";
    byId("explained").textContent = explanation.label;

    const list = byId("top");
    list.replaceChildren(...explanation.top.map(([label, probability]) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(probability * 100).toFixed(1)}%`; // CSSOM: allowed by the CSP
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "probability";
      value.textContent = `${(probability * 100).toFixed(1)}%`;
      item.append(name, bar, value);
      return item;
    }));

    byId("answered-by").textContent =
      `Answered by ${answer.model_spec.name} version ${answer.model_spec.version}`;
    const server = serverTime === null ? "" : `; the server took ${serverTime.toFixed(0)} ms`;
    byId("latency").textContent =
      `Latency: ${pageMs.toFixed(0)} ms in this page (upload, queue, model, answer)${server}`;
    byId("result").hidden = false;
  }

  async function loadVersions(retries = RETRIES) {
    const rows = byId("versions");
    const select = byId("version");
    try {
      const [{ body: status }, { body: meta }] = await Promise.all([
        call(`/v1/models/${encodeURIComponent(model)}`),
        call(`/v1/models/${encodeURIComponent(model)}/metadata`),
      ]);
      const versions = status.model_version_status;
      rows.replaceChildren(...versions.map((v) => {
        const row = document.createElement("tr");
        for (const text of [v.version, v.state, v.status.error_message || v.status.error_code]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }));
      const available = versions.filter((v) => v.state === "AVAILABLE").map((v) => v.version);
      byId("served").textContent =
        `Serving version${available.length === 1 ? "" : "s"} ${available.join(", ") || "none"}` +
        ` (default ${meta.model_spec.version})`;
      const chosen = select.value;
      select.replaceChildren(select.options[0], ...available.map((version) => {
        const option = document.createElement("option");
        option.value = version;
        option.textContent = `version ${version}`;
        return option;
      }));
      select.value = available.includes(chosen) ? chosen : "";
      const changing = versions.some((v) => IN_TRANSIT.includes(v.state));
      if (changing && retries > 0) setTimeout(() => loadVersions(retries - 1), RETRY_MS);
    } catch (err) {
      byId("served").textContent = err.status === 401
        ? "The versions need a token"
        : `Versions unknown: ${err.message}`;
      if ((err.status === 404 || err.status === 503) && retries > 0) {
        setTimeout(() => loadVersions(retries - 1), RETRY_MS); // still loading: ask again
      }
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 3;
      cell.textContent = err.message;
      row.append(cell);
      rows.replaceChildren(row);
    }
  }

  function setUp() {
    const input = byId("file");
    input.addEventListener("change", () => {
      if (input.files.length) send(input.files[0]);
      input.value = ""; // choosing the same file again sends it again
    });

    const zone = byId("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer.files.length) send(event.dataTransfer.files[0]);
    });
    // A file dropped beside the zone must not replace the page with itself.
    for (const name of ["dragover", "drop"]) {
      window.addEventListener(name, (event) => event.preventDefault());
    }

    byId("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, byId("token").value.trim());
      byId("token").value = "";
      byId("auth").hidden = true;
      loadVersions();
      if (pending) send(pending);
    });
    byId("refresh").addEventListener("click", () => loadVersions());
    loadVersions();
  }

  setUp();
})();
