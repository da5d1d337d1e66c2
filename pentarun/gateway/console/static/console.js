/* pentarun operator console: what the server-rendered pages do in the browser.
 *
 * No framework and no build step; htmx (vendored) swaps fragments. Everything that changes
 * something goes to the JSON API (/api/...) with the session cookie and the page's CSRF token
 * (X-CSRF-Token, from <meta name="csrf-token">): the API decides, this file only asks.
 *
 *   [data-api-url] button       one API call (data-api-method, data-api-body JSON), after an
 *                               optional confirmation (data-confirm, data-reason)
 *   form[data-api-url]          the form's fields as a JSON body ({name} in the URL takes a
 *                               field's value); problems are shown at their fields
 *   after success               data-toast, data-refresh (htmx events), data-done (reload,
 *                               close, redirect:URL with {field}s of the answer), data-secret
 *                               (a value shown once, with a copy button), data-result
 *   [data-dialog-url]           a server fragment in the page's <dialog> (approval)
 *   [data-preview-src]          a camera's live MJPEG in the dialog
 *   live feed                   GET /api/feed read as a stream: each event with a plugin
 *                               triggers "pv-plugin-<key>" (fragments refresh themselves)
 *   logs                        EventSource on /api/plugins/<key>/logs/stream, level filter
 *   upload                      drag and drop or the file input, upload progress, refusals
 *   wizard                      a sandboxed iframe's {"type": "pentarun.config"} messages
 *
 * No inline script or style anywhere (the CSP allows neither); text from the server is put
 * into the page with textContent, never as HTML, except fragments the server rendered.
 */
(function () {
  "use strict";

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const csrf = () => {
    const meta = $('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  function signIn() {
    const next = location.pathname + location.search;
    location.assign("/signin?next=" + encodeURIComponent(next));
  }

  // ---- the API ------------------------------------------------------------------------
  async function api(method, url, body) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf() };
    let payload;
    if (body !== undefined && body !== null) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (error) {
      return { ok: false, status: 0, data: { error: { code: "network", message: "The server could not be reached.", details: {} } } };
    }
    let data = null;
    if ((response.headers.get("Content-Type") || "").includes("application/json")) {
      try { data = await response.json(); } catch (error) { data = null; }
    }
    if (response.status === 401) signIn();
    return { ok: response.ok, status: response.status, data };
  }

  function errorOf(result) {
    const error = result.data && result.data.error;
    if (error && typeof error === "object") return error;
    return { code: "http_" + result.status, message: "The server answered " + result.status + ".", details: {} };
  }

  // ---- small pieces of UI ---------------------------------------------------------------
  function toast(text, kind) {
    const box = $("#toasts");
    if (!box || !text) return;
    const item = document.createElement("div");
    item.className = "toast " + (kind || "ok");
    item.textContent = text;
    box.append(item);
    setTimeout(() => item.remove(), kind === "error" ? 12000 : 5000);
  }

  function refresh(events) {
    if (!events || !window.htmx) return;
    for (const name of events.split(/\s+/).filter(Boolean)) window.htmx.trigger(document.body, name);
  }

  function fill(template, data) {
    return template.replace(/\{(\w+)\}/g, (match, name) =>
      data && data[name] !== undefined ? encodeURIComponent(String(data[name])) : match);
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      let done = false;
      try { done = document.execCommand("copy"); } catch (ignored) { done = false; }
      area.remove();
      return done;
    }
  }

  function showSecret(origin, value, label) {
    const scope = origin.closest("section, main") || document;
    const slot = $("[data-secret-slot]", scope) || $("[data-secret-slot]");
    if (!slot) return;
    slot.replaceChildren();
    const box = document.createElement("div");
    box.className = "secret";
    box.setAttribute("role", "alert");
    const title = document.createElement("p");
    title.textContent = (label || "The secret") + " (shown only now; copy it somewhere safe):";
    const code = document.createElement("code");
    code.id = "secret-value";
    code.className = "digest";
    code.textContent = value;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy";
    button.dataset.copy = "secret-value";
    box.append(title, code, button);
    slot.append(box);
    button.focus();
  }

  // ---- problems, at their fields when the answer names them --------------------------------
  function clearErrors(root) {
    for (const node of $$(".field-error", root)) node.textContent = "";
    for (const node of $$("[aria-invalid]", root)) node.removeAttribute("aria-invalid");
    const region = $(".form-errors", root);
    if (region) region.replaceChildren();
  }

  function fieldFor(form, path) {
    if (path === undefined || path === null) return null;
    const text = String(path);
    const byName = (name) => $$("[name], [data-path]", form).find((el) =>
      el.getAttribute("data-path") === name || el.getAttribute("name") === name) || null;
    const parts = text.split(/[/.]/).filter(Boolean);
    while (parts.length) {
      const found = byName(parts.join("."));
      if (found) return found;
      parts.pop();
    }
    return null;
  }

  function markField(field, message) {
    field.setAttribute("aria-invalid", "true");
    const slot = field.id ? document.getElementById(field.id + "-error") : null;
    if (!slot) return false;
    slot.textContent = slot.textContent ? slot.textContent + " " + message : message;
    return true;
  }

  function problemRow(problem) {
    const item = document.createElement("li");
    const code = problem.code ? problem.code + " " : "";
    const where = problem.path ? "at " + problem.path + ": " : "";
    item.textContent = code + where + (problem.message || "");
    return item;
  }

  function showError(origin, error) {
    const form = origin && origin.closest ? origin.closest("form") : null;
    if (!form) {
      toast((error.message || "Refused") + (error.code ? " (" + error.code + ")" : ""), "error");
      return;
    }
    clearErrors(form);
    const details = error.details || {};
    const unplaced = [];
    const problems = Array.isArray(details.problems) ? details.problems : [];
    for (const problem of problems) {
      let field = fieldFor(form, problem.path);
      const required = /^'([^']+)' is a required property/.exec(problem.message || "");
      if (required) field = fieldFor(form, (problem.path ? problem.path + "/" : "") + required[1]) || field;
      if (!field || !markField(field, problem.message || "")) unplaced.push(problem);
    }
    const named = details.field || details.parameter;
    const located = /at `\$\.([\w.]+)`/.exec(error.message || "");
    const target = fieldFor(form, named || (located && located[1]));
    if (!problems.length && target && markField(target, error.message || "")) {
      target.focus();
    }
    const region = $(".form-errors", form);
    if (!region) {
      toast(error.message, "error");
      return;
    }
    const head = document.createElement("p");
    head.textContent = (error.message || "Refused") + (error.code ? " (" + error.code + ")" : "");
    region.append(head);
    if (unplaced.length) {
      const list = document.createElement("ul");
      for (const problem of unplaced) list.append(problemRow(problem));
      region.append(list);
    }
    const first = $("[aria-invalid='true']", form);
    if (first) first.focus();
  }

  // ---- forms as JSON ------------------------------------------------------------------
  // names that would reach an object's prototype: never taken from a wizard's message
  const UNSAFE_KEYS = new Set(["__proto__", "constructor", "prototype"]);

  function setPath(object, path, value) {
    const parts = path.split(".");
    if (parts.some((part) => UNSAFE_KEYS.has(part))) return;
    let node = object;
    for (const part of parts.slice(0, -1)) {
      if (typeof node[part] !== "object" || node[part] === null || Array.isArray(node[part])) node[part] = {};
      node = node[part];
    }
    node[parts[parts.length - 1]] = value;
  }

  function readField(el) {
    const type = el.dataset.type || "string";
    const optional = el.hasAttribute("data-optional");
    if (type === "bool") return { value: el.checked };
    if (el.multiple) return { value: Array.from(el.selectedOptions).map((o) => o.value) };
    const raw = el.value;
    if (type === "list") {
      const items = raw.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      return items.length || !optional ? { value: items } : { skip: true };
    }
    if (raw.trim() === "" && (optional || type === "int" || type === "float" || type === "json")) return { skip: true };
    if (type === "int") {
      return { value: /^-?\d+$/.test(raw.trim()) ? Number.parseInt(raw, 10) : raw };
    }
    if (type === "float") {
      const number = Number(raw);
      return { value: Number.isFinite(number) ? number : raw };
    }
    if (type === "json" || type === "whole") {
      try {
        return { value: JSON.parse(raw) };
      } catch (error) {
        return { error: "This is not valid JSON: " + error.message };
      }
    }
    return { value: raw };
  }

  function formBody(form) {
    let body = {};
    const taken = {};
    let bad = false;
    for (const el of Array.from(form.elements)) {
      if (el.disabled || (!el.name && el.dataset.type !== "whole") || el.type === "submit" || el.type === "button" || el.type === "file") continue;
      const read = readField(el);
      if (read.error) {
        markField(el, read.error);
        bad = true;
        continue;
      }
      if (read.skip) continue;
      if (el.dataset.type === "whole") {
        body = read.value;
        continue;
      }
      taken[el.name] = read.value;
      setPath(body, el.name, read.value);
    }
    const template = form.dataset.apiUrl;
    const url = template.replace(/\{([\w.]+)\}/g, (match, name) => {
      if (taken[name] === undefined) return match;
      delete body[name];
      return encodeURIComponent(String(taken[name]));
    });
    return { url, body, bad };
  }

  // ---- carrying out an action -----------------------------------------------------------
  async function perform(origin, method, url, body) {
    const busy = origin.tagName === "FORM" ? $("button[type=submit]", origin) : origin;
    if (busy) { busy.disabled = true; busy.setAttribute("aria-busy", "true"); }
    let retry = false;
    try {
      const result = await api(method, url, body);
      if (result.ok) {
        after(origin, result.data || {});
        return result.data;
      }
      if (result.status === 401) return null;
      const error = errorOf(result);
      // an answer the action knows a stronger form of (uninstall ?force=1 past dependents)
      const d = origin.dataset;
      if (d.retryCode && d.retryCode === error.code && d.retryUrl && url !== d.retryUrl) {
        retry = await askConfirm({
          title: error.message + ". " + (d.retryConfirm || "Do it anyway?"),
          label: d.retryLabel || "Do it anyway",
          danger: true,
          from: origin,
        });
        if (!retry) return null;
      } else {
        showError(origin, error);
        return null;
      }
    } finally {
      if (busy && busy.isConnected) { busy.disabled = false; busy.removeAttribute("aria-busy"); }
    }
    return retry ? perform(origin, method, origin.dataset.retryUrl, body) : null;
  }

  function after(origin, data) {
    const d = origin.dataset;
    if (origin.tagName === "FORM") clearErrors(origin);
    if (d.secret && data[d.secret] !== undefined) showSecret(origin, String(data[d.secret]), d.secretLabel);
    if (d.result) {
      const out = document.getElementById(d.result);
      if (out) out.textContent = JSON.stringify(data, null, 2);
    }
    if (d.reset !== undefined && origin.tagName === "FORM") origin.reset();
    if (d.toast) toast(d.toast);
    refresh(d.refresh);
    const done = d.done || "";
    if (done === "reload") location.reload();
    else if (done === "close") closeModal();
    else if (done.startsWith("redirect:")) location.assign(fill(done.slice("redirect:".length), data));
  }

  // ---- the page's one dialog ------------------------------------------------------------
  const modal = () => $("#modal");
  let opener = null;

  function openModal(content, from) {
    const dialog = modal();
    if (!dialog) return;
    opener = from || document.activeElement;
    const body = $("#modal-body");
    body.replaceChildren();
    if (typeof content === "string") {
      body.innerHTML = content; // a fragment this server rendered (escaped there)
    } else {
      body.append(content);
    }
    if (window.htmx) window.htmx.process(body);
    if (!dialog.open) dialog.showModal();
    const first = $("[autofocus]", body) || $("button, [href], input, select, textarea", body);
    if (first) first.focus();
  }

  function closeModal() {
    const dialog = modal();
    if (dialog && dialog.open) dialog.close();
  }

  function onModalClosed() {
    $("#modal-body").replaceChildren(); // also ends a camera preview's stream
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  }

  function confirmAction(button) {
    return askConfirm({
      title: button.dataset.confirm || button.textContent.trim() + "?",
      label: button.textContent.trim(),
      danger: button.classList.contains("danger"),
      reason: button.dataset.reason,
      from: button,
    });
  }

  // a question in the page's dialog: resolves {reason} when confirmed, null otherwise
  function askConfirm(ask) {
    return new Promise((resolve) => {
      const dialog = modal();
      const box = document.createElement("div");
      const title = document.createElement("h2");
      title.id = "modal-title";
      title.textContent = ask.title;
      box.append(title);
      let reason = null;
      if (ask.reason) {
        const wrap = document.createElement("div");
        wrap.className = "field";
        const label = document.createElement("label");
        label.htmlFor = "modal-reason";
        label.textContent = "Reason" + (ask.reason === "required" ? "" : " (optional)");
        reason = document.createElement("textarea");
        reason.id = "modal-reason";
        reason.rows = 2;
        if (ask.reason === "required") reason.required = true;
        wrap.append(label, reason);
        box.append(wrap);
      }
      const actions = document.createElement("div");
      actions.className = "actions";
      const ok = document.createElement("button");
      ok.type = "button";
      ok.className = ask.danger ? "danger" : "primary";
      ok.textContent = ask.label;
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.textContent = "Cancel";
      actions.append(ok, cancel);
      box.append(actions);
      let answered = false;
      const finish = (value) => {
        if (answered) return;
        answered = true;
        dialog.removeEventListener("close", onClose);
        resolve(value);
        closeModal();
      };
      const onClose = () => finish(null);
      ok.addEventListener("click", () => {
        if (reason && reason.required && !reason.value.trim()) {
          reason.setAttribute("aria-invalid", "true");
          reason.focus();
          return;
        }
        finish({ reason: reason ? reason.value.trim() : "" });
      });
      cancel.addEventListener("click", () => finish(null));
      openModal(box, ask.from);
      dialog.addEventListener("close", onClose);
      (reason || ok).focus();
    });
  }

  async function openFragment(button) {
    let response;
    try {
      response = await fetch(button.dataset.dialogUrl, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
    } catch (error) {
      toast("The server could not be reached.", "error");
      return;
    }
    if (response.headers.get("HX-Redirect")) { signIn(); return; }
    if (!response.ok) { toast("Could not open it (" + response.status + ").", "error"); return; }
    openModal(await response.text(), button);
  }

  function openPreview(button) {
    const box = document.createElement("div");
    const title = document.createElement("h2");
    title.id = "modal-title";
    title.textContent = button.dataset.previewTitle || "Live preview";
    const image = document.createElement("img");
    image.className = "preview";
    image.alt = title.textContent;
    image.src = button.dataset.previewSrc;
    const actions = document.createElement("div");
    actions.className = "actions";
    const close = document.createElement("button");
    close.type = "button";
    close.dataset.dialogClose = "";
    close.textContent = "Close preview";
    actions.append(close);
    box.append(title, image, actions);
    openModal(box, button);
    close.focus();
  }

  // ---- one listener for every click and submit --------------------------------------------
  document.addEventListener("click", async (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const closer = target.closest("[data-dialog-close]");
    if (closer) { closeModal(); return; }
    const copier = target.closest("[data-copy]");
    if (copier) {
      const source = document.getElementById(copier.dataset.copy);
      const done = source ? await copy(source.textContent) : false;
      toast(done ? "Copied" : "Select it and copy it by hand", done ? "ok" : "error");
      return;
    }
    const dialogOpener = target.closest("[data-dialog-url]");
    if (dialogOpener) { event.preventDefault(); openFragment(dialogOpener); return; }
    const preview = target.closest("[data-preview-src]");
    if (preview) { event.preventDefault(); openPreview(preview); return; }
    const wizard = target.closest("[data-wizard-open]");
    if (wizard) { openWizard(wizard); return; }
    const button = target.closest("button[data-api-url]");
    if (!button) return;
    event.preventDefault();
    let body;
    if (button.dataset.apiBody) body = JSON.parse(button.dataset.apiBody);
    if (button.dataset.confirm || button.dataset.reason) {
      const answer = await confirmAction(button);
      if (!answer) return;
      if (button.dataset.reason && answer.reason) body = Object.assign({}, body || {}, { reason: answer.reason });
    }
    perform(button, button.dataset.apiMethod || "POST", button.dataset.apiUrl, body);
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.apiUrl) return;
    event.preventDefault();
    clearErrors(form);
    const { url, body, bad } = formBody(form);
    if (bad) { const first = $("[aria-invalid='true']", form); if (first) first.focus(); return; }
    const method = form.dataset.apiMethod || "POST";
    perform(form, method, url, method === "DELETE" ? undefined : body);
  });

  // ---- the live feed --------------------------------------------------------------------
  function feedStatus(text, live) {
    const node = $("#feed-status");
    if (!node) return;
    node.textContent = text;
    node.classList.toggle("live", Boolean(live));
  }

  function onFeedEvent(event) {
    document.dispatchEvent(new CustomEvent("pentarun:feed", { detail: event }));
    if (!window.htmx) return;
    if (event.plugin) {
      window.htmx.trigger(document.body, "pv-plugin-" + event.plugin);
      if ($("#plugin-rows") && !$('[data-plugin-row="' + CSS.escape(event.plugin) + '"]')) {
        window.htmx.trigger(document.body, "pv-plugins");
      }
    }
  }

  function parseBlock(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { name, data: data.join("\n") } : null;
  }

  function startFeed() {
    if (document.body.dataset.live !== "feed") return;
    let delay = 1000;
    let connected = false;
    const connect = async () => {
      try {
        const response = await fetch("/api/feed", { headers: { Accept: "text/event-stream" }, credentials: "same-origin", cache: "no-store" });
        if (response.status === 401) { signIn(); return; }
        if (!response.ok || !response.body) throw new Error("feed " + response.status);
        if (connected && window.htmx) window.htmx.trigger(document.body, "pv-resync"); // what was missed
        connected = true;
        delay = 1000;
        feedStatus("Live", true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const message = parseBlock(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (!message) continue;
            try { onFeedEvent(JSON.parse(message.data)); } catch (error) { /* not JSON: ignore */ }
          }
        }
      } catch (error) {
        /* reconnect below */
      }
      feedStatus("Reconnecting…", false);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
    connect();
  }

  function startFeedList() {
    const list = $("[data-feed-list]");
    if (!list) return;
    const filter = $("#feed-filter");
    document.addEventListener("pentarun:feed", (event) => {
      const data = event.detail || {};
      const type = String(data.type || "");
      const item = document.createElement("li");
      item.dataset.type = type;
      const when = document.createElement("time");
      const at = typeof data.at === "number" ? new Date(data.at * 1000) : new Date();
      when.dateTime = at.toISOString();
      when.textContent = at.toISOString().replace("T", " ").slice(0, 19) + " UTC";
      const kind = document.createElement("code");
      kind.textContent = type;
      const text = document.createElement("span");
      const parts = [];
      for (const key of ["plugin", "property", "state", "reason", "actor", "status"]) {
        if (data[key]) parts.push(key + ": " + data[key]);
      }
      if (data.data && typeof data.data === "object") parts.push(JSON.stringify(data.data));
      text.textContent = parts.join(" · ");
      item.append(when, " ", kind, " ", text);
      if (filter && filter.value && !type.startsWith(filter.value)) item.hidden = true;
      list.prepend(item);
      while (list.children.length > 200) list.lastElementChild.remove();
    });
    if (filter) {
      filter.addEventListener("input", () => {
        for (const item of Array.from(list.children)) item.hidden = Boolean(filter.value) && !item.dataset.type.startsWith(filter.value);
      });
    }
  }

  // ---- a plugin's logs ------------------------------------------------------------------
  function startLogs() {
    const list = $("[data-log-stream]");
    if (!list) return;
    const select = $("#log-level");
    const status = $("#log-status");
    let source = null;
    const say = (text) => { if (status) status.textContent = text; };
    const append = (line) => {
      const item = document.createElement("li");
      item.className = "level-" + String(line.level || "").toLowerCase();
      const at = new Date((line.at || 0) * 1000);
      const when = document.createElement("time");
      when.dateTime = at.toISOString();
      when.textContent = at.toISOString().slice(11, 23);
      const level = document.createElement("span");
      level.className = "level";
      level.textContent = line.level;
      const logger = document.createElement("span");
      logger.className = "logger";
      logger.textContent = line.logger;
      const message = document.createElement("span");
      message.className = "message";
      message.textContent = line.message;
      item.append(when, " ", level, " ", logger, " ", message);
      const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
      list.append(item);
      while (list.children.length > 500) list.firstElementChild.remove();
      if (atEnd) list.scrollTop = list.scrollHeight;
    };
    const open = () => {
      if (source) source.close();
      const level = select ? select.value : "";
      source = new EventSource(list.dataset.logStream + (level ? "?level=" + encodeURIComponent(level) : ""));
      source.onopen = () => { list.replaceChildren(); say("Live"); }; // the server resends its window
      source.onmessage = (event) => { try { append(JSON.parse(event.data)); } catch (error) { /* ignore */ } };
      source.addEventListener("gap", () => append({ at: Date.now() / 1000, level: "NOTE", logger: "console", message: "some lines came faster than shown and were skipped" }));
      source.onerror = () => say(source.readyState === EventSource.CLOSED ? "Disconnected" : "Reconnecting…");
    };
    if (select) select.addEventListener("change", open);
    open();
  }

  // ---- upload ---------------------------------------------------------------------------
  function startUpload() {
    const form = $("form[data-upload]");
    if (!form) return;
    const input = $("input[type=file]", form);
    const zone = $("[data-dropzone]", form);
    const chosen = $("#package-chosen");
    const bar = $("#upload-bytes");
    const problems = $("#upload-problems");
    const progress = $("#upload-progress");
    const show = () => { chosen.textContent = input.files.length ? "Chosen: " + input.files[0].name + " (" + Math.ceil(input.files[0].size / 1024) + " KiB)" : ""; };
    input.addEventListener("change", show);
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearErrors(form);
      problems.replaceChildren();
      const file = input.files[0];
      if (!file) { showError(input, { message: "Choose a package (.zip) first, or drop one here.", code: "no_file" }); return; }
      const data = new FormData();
      data.append("package", file, file.name);
      const request = new XMLHttpRequest();
      request.open("POST", form.dataset.uploadUrl);
      request.setRequestHeader("X-CSRF-Token", csrf());
      request.setRequestHeader("Accept", "application/json");
      request.responseType = "json";
      bar.hidden = false;
      bar.value = 0;
      request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) { bar.value = Math.round((100 * e.loaded) / e.total); bar.textContent = bar.value + " %"; } });
      const submit = $("button[type=submit]", form);
      submit.disabled = true;
      request.addEventListener("loadend", () => {
        submit.disabled = false;
        bar.hidden = true;
        const answer = request.response || {};
        if (request.status === 401) { signIn(); return; }
        if (request.status >= 200 && request.status < 300) {
          toast("Uploaded " + file.name);
          follow(progress, answer.key);
          return;
        }
        const error = errorOf({ status: request.status, data: answer });
        const list = Array.isArray(error.details && error.details.problems) ? error.details.problems : [];
        const head = document.createElement("h2");
        head.textContent = list.length ? "The package was refused: " + list.length + " problem(s)" : "The upload was refused";
        const message = document.createElement("p");
        message.textContent = error.message + (error.code ? " (" + error.code + ")" : "");
        problems.append(head, message);
        if (list.length) {
          const table = document.createElement("table");
          table.className = "data problems";
          const caption = document.createElement("caption");
          caption.textContent = "Every problem found";
          const headRow = document.createElement("tr");
          for (const name of ["Code", "Path", "Message"]) {
            const th = document.createElement("th");
            th.scope = "col";
            th.textContent = name;
            headRow.append(th);
          }
          const thead = document.createElement("thead");
          thead.append(headRow);
          const tbody = document.createElement("tbody");
          for (const problem of list) {
            const row = document.createElement("tr");
            for (const value of [problem.code, problem.path, problem.message]) {
              const cell = document.createElement("td");
              cell.textContent = value || "";
              row.append(cell);
            }
            tbody.append(row);
          }
          table.append(caption, thead, tbody);
          problems.append(table);
        }
        problems.focus();
      });
      request.send(data);
    });
  }

  function follow(region, key) {
    if (!region || !key || !window.htmx) return;
    region.setAttribute("hx-get", "/plugins/" + encodeURIComponent(key) + "/part/progress");
    region.setAttribute("hx-trigger", "load, pv-plugin-" + key + " from:body delay:100ms, pv-resync from:body");
    region.setAttribute("hx-swap", "innerHTML");
    window.htmx.process(region);
  }

  // ---- a package's setup wizard -----------------------------------------------------------
  function openWizard(button) {
    const panel = document.getElementById(button.getAttribute("aria-controls"));
    const frame = panel ? $("iframe[data-wizard-frame]", panel) : null;
    if (!panel || !frame) return;
    const opening = panel.hidden;
    panel.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    button.textContent = opening ? "Close the setup wizard" : "Open the setup wizard";
    if (opening && !frame.getAttribute("src")) {
      frame.addEventListener("load", () => {
        let init = {};
        try { init = JSON.parse(frame.dataset.init || "{}"); } catch (error) { init = {}; }
        // the frame is sandboxed (an opaque origin), so "*" is the only target it has
        frame.contentWindow.postMessage({ type: "pentarun.init", schema: init.schema, config: init.config }, "*");
      });
      frame.setAttribute("src", frame.dataset.src);
    }
    if (opening) frame.focus();
  }

  function isPlainObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function setField(el, value) {
    if (el.dataset.type === "bool") el.checked = value === true;
    else if (el.dataset.type === "list") el.value = Array.isArray(value) ? value.join("\n") : String(value);
    else if (el.dataset.type === "json" || el.dataset.type === "whole") el.value = JSON.stringify(value, null, 2);
    else el.value = value === null || value === undefined ? "" : String(value);
  }

  function safeCopy(value) {
    // plain data only, without prototype-reaching keys, at any depth
    if (Array.isArray(value)) return value.map(safeCopy);
    if (!isPlainObject(value)) return value;
    const copy = {};
    for (const [name, item] of Object.entries(value)) {
      if (!UNSAFE_KEYS.has(name)) copy[name] = safeCopy(item);
    }
    return copy;
  }

  function flatten(values, prefix, out) {
    for (const [name, value] of Object.entries(values)) {
      if (UNSAFE_KEYS.has(name)) continue;
      const path = prefix ? prefix + "." + name : name;
      if (isPlainObject(value) && !$('[data-path="' + CSS.escape(path) + '"]', $("#config-form"))) flatten(value, path, out);
      else out.push([path, value]);
    }
    return out;
  }

  function startWizardMessages() {
    window.addEventListener("message", (event) => {
      const frame = $("iframe[data-wizard-frame]");
      const form = $("form[data-config-form]");
      if (!frame || !form || event.source !== frame.contentWindow) return; // only that frame
      const message = event.data;
      if (!isPlainObject(message) || message.type !== "pentarun.config" || !isPlainObject(message.values)) return;
      const values = safeCopy(message.values);
      const status = $("#wizard-status");
      const whole = $('[data-type="whole"]', form);
      const extra = {};
      if (whole) {
        let current = {};
        try { current = JSON.parse(whole.value || "{}"); } catch (error) { current = {}; }
        setField(whole, Object.assign(isPlainObject(current) ? safeCopy(current) : {}, values));
      } else {
        for (const [path, value] of flatten(values, "", [])) {
          const field = $('[data-path="' + CSS.escape(path) + '"]', form);
          if (field) setField(field, value);
          else setPath(extra, path, value);
        }
      }
      clearErrors(form);
      const { url, body, bad } = formBody(form);
      if (bad) return;
      for (const [name, value] of Object.entries(extra)) body[name] = value;
      if (status) status.textContent = "The wizard proposed a configuration; checking it…";
      perform(form, "PUT", url, body).then((saved) => {
        if (status) status.textContent = saved ? "Saved the wizard's configuration." : "The configuration was refused: see the problems at the fields.";
      });
    });
  }

  // ---- start ------------------------------------------------------------------------------
  function start() {
    const dialog = modal();
    if (dialog) dialog.addEventListener("close", onModalClosed);
    startFeed();
    startFeedList();
    startLogs();
    startUpload();
    startWizardMessages();
    const wizard = $("[data-wizard-open][data-autoopen]");
    if (wizard) openWizard(wizard);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
