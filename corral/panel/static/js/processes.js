// corral panel: the live process table and the app page's live status.
// The page is complete without this file (server-rendered, plain POST forms); this keeps it
// current over the WebSocket /t/{tenant}/ws/processes and turns the action forms into
// fetch() calls to the JSON API, so nothing reloads.
"use strict";

(() => {
  const root = document.querySelector("[data-processes]");
  if (!root || !window.corral) return;
  const { api, socket, formatBytes, formatUptime } = window.corral;
  const tenant = root.dataset.tenant;
  const onePage = root.dataset.appPage || null; // the app page shows one app
  const apiBase = `/api/v1/tenants/${encodeURIComponent(tenant)}/apps`;
  const pageBase = `/t/${encodeURIComponent(tenant)}/apps`;
  const LABELS = { start: "Started", stop: "Stopped", restart: "Restarted", reload: "Reloaded",
                   scale: "Scaled", delete: "Deleted" };
  const confirmText = (name) =>
    `Delete the app “${name}”? Its processes are stopped and its configuration is removed.`;

  const cpuText = (cpu) => (cpu == null ? "-" : `${cpu.toFixed(1)} %`);
  // As the server writes times (templating.py's `when`): 2026-11-23 21:50:47, local time.
  const two = (n) => String(n).padStart(2, "0");
  const when = (ts) => {
    if (!ts) return "-";
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  };
  const field = (scope, name) => scope.querySelector(`[data-field="${name}"]`);
  const setText = (el, text) => { if (el && el.textContent !== text) el.textContent = text; };

  // --- messages --------------------------------------------------------------------
  const flashBox = document.querySelector("[data-flash]");
  function flash(message, kind) {
    if (!flashBox) return;
    const box = document.createElement("div");
    box.className = `flash ${kind}`;
    box.setAttribute("role", kind === "bad" ? "alert" : "status");
    const text = document.createElement("span");
    text.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "small";
    close.textContent = "Dismiss";
    close.addEventListener("click", () => box.remove());
    box.append(text, close);
    flashBox.replaceChildren(box);
    if (kind === "ok") setTimeout(() => box.remove(), 6000);
  }

  function setLive(state, text) {
    for (const el of document.querySelectorAll("[data-live]")) {
      el.dataset.live = state;
      el.textContent = text;
    }
  }

  // --- rendering ---------------------------------------------------------------------
  function setStatus(el, app) {
    if (!el) return;
    el.className = el.className.split(" ").filter((c) => c === "status" || c === "big")
      .concat(app.status).join(" ");
    setText(el, app.label);
  }

  function setDots(el, members) {
    if (!el) return;
    const dots = members.map((m) => {
      const dot = document.createElement("i");
      dot.className = `dot ${m.status}`;
      dot.title = `instance ${m.instance}: ${m.status}`;
      return dot;
    });
    el.replaceChildren(...dots);
  }

  // Everything in a row or on the app page that depends on the app (URLs included, so a
  // row cloned from the <template> becomes this app's row).
  function fill(scope, app) {
    scope.dataset.app = app.name;
    const link = scope.querySelector("a.name");
    if (link) {
      setText(link, app.name);
      link.href = `${pageBase}/${encodeURIComponent(app.name)}`;
    }
    setText(field(scope, "id"), `#${app.id}`);
    setStatus(field(scope, "status"), app);
    setDots(field(scope, "dots"), app.members);
    setText(field(scope, "exec_mode"), app.exec_mode);
    setText(field(scope, "instances"), String(app.instances));
    setText(field(scope, "cpu"), cpuText(app.cpu));
    setText(field(scope, "memory"), formatBytes(app.memory));
    setText(field(scope, "uptime"), formatUptime(app.uptime));
    setText(field(scope, "restarts"), String(app.restarts));
    for (const form of scope.querySelectorAll("form[data-verb]")) {
      const verb = form.dataset.verb;
      form.action = `${pageBase}/${encodeURIComponent(app.name)}/${verb}`;
      if (verb === "delete") form.dataset.confirm = confirmText(app.name);
      const button = form.querySelector("button");
      if (!button || form.dataset.busy) continue;
      const count = form.querySelector('input[name="count"]');
      button.disabled =
        (verb === "start" && app.status === "online") ||
        (verb === "stop" && app.status === "stopped") ||
        (verb === "scale" && count && count.value === "-1" && app.instances <= 1);
    }
  }

  function renderTable(data) {
    const rows = root.querySelector("[data-rows]");
    const template = root.querySelector("template[data-row-template]");
    if (!rows || !template) return;
    const existing = new Map([...rows.querySelectorAll("tr[data-app]")].map((tr) => [tr.dataset.app, tr]));
    const ordered = data.apps.map((app) => {
      let tr = existing.get(app.name);
      existing.delete(app.name);
      if (!tr) tr = template.content.firstElementChild.cloneNode(true);
      fill(tr, app);
      return tr;
    });
    for (const tr of existing.values()) tr.remove();
    ordered.forEach((tr, i) => { if (rows.children[i] !== tr) rows.insertBefore(tr, rows.children[i] || null); });
    root.querySelector("[data-table]").hidden = data.apps.length === 0;
    root.querySelector("[data-empty]").hidden = data.apps.length !== 0 || Boolean(data.error);
    renderLimit(data);
  }

  function renderLimit(data) {
    setText(document.querySelector('[data-field="app-count"]'), String(data.count));
    setText(document.querySelector('[data-field="app-noun"]'), data.count === 1 ? "app" : "apps");
    const link = document.querySelector("[data-new-app]");
    const off = document.querySelector("[data-new-app-full]");
    if (!link || !off) return;
    const full = data.limit >= 0 && data.count >= data.limit;
    link.hidden = full;
    off.hidden = !full;
    const hint = document.querySelector('[data-field="limit-hint"]');
    if (hint) {
      hint.hidden = !full;
      hint.textContent = data.limit === 0 ? "This tenant may not run apps."
        : `App limit reached: ${data.count} of ${data.limit}.`;
    }
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function renderApp(data) {
    const app = data.apps.find((a) => a.name === onePage);
    const bar = root.querySelector("[data-app]");
    if (!app) {
      if (!data.error) setLive("ended", "this app no longer exists");
      return;
    }
    fill(root, app);
    if (bar) bar.dataset.app = app.name;
    const body = root.querySelector("[data-instances]");
    if (!body) return;
    body.replaceChildren(...app.members.map((m) => {
      const tr = document.createElement("tr");
      const status = cell("", "");
      const badge = document.createElement("span");
      badge.className = `status ${m.status}`;
      badge.textContent = m.status;
      status.append(badge);
      if (m.error) {
        const why = document.createElement("span");
        why.className = "error msg";
        why.textContent = ` ${m.error}`;
        status.append(why);
      }
      tr.append(
        cell(String(m.instance), "num"), status, cell(m.pid == null ? "-" : String(m.pid), "num mono"),
        cell(cpuText(m.cpu), "num"), cell(formatBytes(m.memory), "num"),
        cell(formatUptime(m.uptime), "num"), cell(String(m.restarts), "num"),
        cell(when(m.started_at), "muted"),
        cell(m.last_exit || "-", "muted"),
      );
      return tr;
    }));
  }

  function render(data) {
    if (data.error) {
      setLive("reconnecting", `daemon unreachable: ${data.error}`);
      return;
    }
    setLive("live", "live");
    const down = document.querySelector("[data-daemon-error]");
    if (down) down.remove(); // it answers again
    if (onePage) renderApp(data); else renderTable(data);
  }

  // --- the stream ----------------------------------------------------------------------
  let delay = 1000;
  function connect() {
    const ws = socket(root.dataset.ws);
    ws.addEventListener("open", () => { delay = 1000; });
    ws.addEventListener("message", (event) => {
      try { render(JSON.parse(event.data)); } catch (error) { console.warn("bad update", error); }
    });
    ws.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) {
        setLive("ended", "not live: reload the page (your session or rights changed)");
        return;
      }
      setLive("reconnecting", "reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  }
  connect();

  // --- actions over the API ------------------------------------------------------------
  // panel.js asks for confirmation first (it prevents the first submit); we act on the
  // confirmed one.
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.verb || event.defaultPrevented) return;
    if (form.dataset.confirm && !form.dataset.confirmed) return;
    event.preventDefault();
    delete form.dataset.confirmed;
    const scope = form.closest("[data-app]");
    const name = scope ? scope.dataset.app : onePage;
    const verb = form.dataset.verb;
    const body = {};
    const count = form.querySelector('input[name="count"]');
    if (count) body.count = count.value;
    const button = form.querySelector("button");
    form.dataset.busy = "1";
    if (button) button.disabled = true;
    let app = null;
    try {
      const data = await api("POST", `${apiBase}/${encodeURIComponent(name)}/${verb}`, body);
      if (verb === "delete") {
        if (onePage && root.dataset.afterDelete) { location.assign(root.dataset.afterDelete); return; }
        const row = root.querySelector(`tr[data-app="${CSS.escape(name)}"]`);
        if (row) row.classList.add("gone");
      }
      app = data.app || null;
      const what = verb === "scale" && app ? ` to ${app.instances}` : "";
      flash(`${LABELS[verb] || verb} ${name}${what}.`, "ok");
    } catch (error) {
      flash(`${name}: ${error.message}`, "bad");
    } finally {
      delete form.dataset.busy;
      if (button) button.disabled = false;
    }
    // Show the answer at once; the stream confirms it a moment later.
    if (app && onePage) renderApp({ apps: [app] });
    else if (app && scope && scope.matches("tr")) fill(scope, app);
  });
})();
