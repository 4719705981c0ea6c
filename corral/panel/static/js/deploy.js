// corral panel: one deploy's output, followed live (deploy_run.html).
// The output comes from the build (git, pip, npm, the app's own steps): attacker-controlled
// text. It only ever reaches the page as text nodes (textContent), never as HTML.
"use strict";

(() => {
  const root = document.querySelector("[data-deploy-run]");
  if (!root || !root.dataset.ws) return;  // finished deploys are shown whole by the server
  const view = root.querySelector("[data-output]");
  const state = root.querySelector("[data-state]");
  const status = root.querySelector("[data-status]");
  const errorLine = root.querySelector("[data-field=error]");
  const FINAL = new Set(["succeeded", "failed"]);
  const RETRY_MAX_MS = 15000;
  let retryMs = 1000;
  let finished = false;

  function setState(name, text) {
    state.dataset.state = name;
    state.textContent = text;
  }

  function atBottom() {
    return view.scrollHeight - view.scrollTop - view.clientHeight < 24;
  }

  // As the server writes times (its `when` filter): YYYY-MM-DD HH:MM:SS, local time.
  function when(seconds) {
    const d = new Date(seconds * 1000);
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  function setField(name, text) {
    const node = root.querySelector(`[data-field=${name}]`);
    if (node) node.textContent = text;
  }

  function showRecord(record) {
    status.textContent = record.status;
    status.className = `status ${record.status}`;
    setField("ref", record.ref || "-");
    setField("commit", record.commit || "-");
    setField("release", record.release || "-");
    if (record.started) setField("started", when(record.started));
    if (record.duration != null) setField("duration", corral.formatUptime(record.duration));
    if (record.error) {
      errorLine.textContent = record.step ? `Failed at ${record.step}: ${record.error}` : record.error;
      errorLine.hidden = false;
    }
    if (FINAL.has(record.status)) {
      finished = true;
      if (record.status === "succeeded") setState("done", "finished");
      else setState("ended", "finished: failed");
      root.querySelector("[data-reload]")?.remove();
    }
  }

  function show(update) {
    const stick = atBottom();
    update();
    if (stick) view.scrollTop = view.scrollHeight;
  }

  function onMessage(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (typeof data.output === "string") show(() => { view.textContent = data.output; });
    if (typeof data.append === "string") show(() => view.append(document.createTextNode(data.append)));
    if (data.deploy) showRecord(data.deploy);
    if (data.error) {
      show(() => {
        const note = document.createElement("span");
        note.className = "meta";
        note.textContent = `\n— ${data.error} —\n`;
        view.append(note);
      });
    }
  }

  function connect() {
    const ws = corral.socket(root.dataset.ws);
    setState("connecting", "connecting…");
    ws.addEventListener("open", () => {
      retryMs = 1000;
      if (!finished) setState("live", "live");
    });
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", (event) => {
      if (finished) return;
      if (event.code === 4401) {
        setState("ended", "session ended: reload the page");
        return;
      }
      if (event.code >= 4000 && event.code < 5000) {
        setState("ended", "stopped");
        return;
      }
      // The first message of a new socket is the whole output: nothing is lost or doubled.
      setState("connecting", "reconnecting…");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    });
  }

  view.scrollTop = view.scrollHeight;
  connect();
})();
