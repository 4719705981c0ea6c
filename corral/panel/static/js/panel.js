// corral panel: shared helpers. No framework, no inline script (the CSP forbids it).
"use strict";

const corral = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // fetch() with the session's CSRF token; JSON in, JSON out; errors carry the server's message.
  async function api(method, url, body) {
    const init = { method, headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
                   credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.error || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }

  // A WebSocket to a path of this panel (same origin: the server checks it exactly).
  function socket(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return new WebSocket(`${scheme}//${location.host}${path}`);
  }

  function formatBytes(n) {
    if (n == null) return "-";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function formatUptime(seconds) {
    if (seconds == null || seconds < 0) return "-";
    const s = Math.floor(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  // <form data-confirm="Delete app x?">: ask in a modal dialog before submitting.
  function confirmDialog(message) {
    return new Promise((resolve) => {
      const dialog = document.createElement("dialog");
      dialog.className = "confirm";
      const text = document.createElement("p");
      text.textContent = message;
      const row = document.createElement("div");
      row.className = "row";
      const yes = document.createElement("button");
      yes.textContent = "Yes, do it";
      yes.className = "danger";
      yes.dataset.role = "confirm";
      const no = document.createElement("button");
      no.textContent = "Cancel";
      no.dataset.role = "cancel";
      row.append(yes, no);
      dialog.append(text, row);
      document.body.append(dialog);
      const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
      yes.addEventListener("click", () => done(true));
      no.addEventListener("click", () => done(false));
      dialog.addEventListener("cancel", () => done(false));
      dialog.showModal();
      no.focus();
    });
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm || form.dataset.confirmed) return;
    event.preventDefault();
    if (await confirmDialog(form.dataset.confirm)) {
      form.dataset.confirmed = "1";
      form.requestSubmit(event.submitter || undefined);
    }
  });

  return { api, socket, csrf, formatBytes, formatUptime, confirmDialog };
})();
window.corral = corral;
