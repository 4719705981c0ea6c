// corral panel: the live log view (app_logs.html).
// Lines come from the app, so they are attacker-controlled text: they only ever reach the
// page as text nodes (textContent), never as HTML.
"use strict";

(() => {
  const root = document.querySelector("[data-logs]");
  if (!root) return;
  const view = root.querySelector("[data-lines]");
  const follow = root.querySelector("[data-follow]");
  const state = root.querySelector("[data-state]");
  const streamForm = root.querySelector("[data-stream-form]");
  const keep = Number(root.dataset.keep) || 5000;
  const RETRY_MAX_MS = 15000;

  let pending = [];     // items not on the page yet: {instance, stream, line} or {note}
  let held = 0;         // lines that came while paused and did not fit in `pending`
  let frame = 0;
  let socket = null;
  let retryMs = 1000;
  let retryTimer = 0;
  const instances = new Set(Array.from(view.querySelectorAll("[data-instance]"), (n) => n.dataset.instance));

  // The stream selector reloads the page (the server renders that stream's tail).
  streamForm.querySelector("[data-stream-show]").hidden = true;
  streamForm.querySelector("select").addEventListener("change", () => streamForm.requestSubmit());

  function setState(name, text) {
    state.dataset.state = name;
    state.textContent = text;
  }

  function atBottom() {
    return view.scrollHeight - view.scrollTop - view.clientHeight < 24;
  }

  function lineNode(item) {
    const node = document.createElement("span");
    node.className = item.stream === "err" ? "ln err" : "ln out";
    const instance = document.createElement("span");
    instance.className = "in";
    instance.setAttribute("aria-hidden", "true");
    instance.textContent = String(item.instance);
    node.append(instance, document.createTextNode(`${item.line}\n`));
    return node;
  }

  function noteNode(text) {
    const node = document.createElement("span");
    node.className = "meta";
    node.textContent = `— ${text} —\n`;
    return node;
  }

  function push(items) {
    pending.push(...items);
    if (pending.length > keep) {
      const extra = pending.length - keep;
      held += pending.slice(0, extra).filter((item) => !item.note).length;
      pending = pending.slice(extra);
    }
    if (follow.checked) schedule();
    else setState("paused", `paused · ${pending.length + held} new`);
  }

  function note(text) {
    push([{ note: text }]);
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  // One DOM update per animation frame, however many messages came in between.
  function render() {
    frame = 0;
    if (!pending.length && !held) return;
    const stick = atBottom();
    const fragment = document.createDocumentFragment();
    if (held) fragment.append(noteNode(`${held} lines left out: the page keeps the newest ${keep}`));
    for (const item of pending) {
      if (item.note) {
        fragment.append(noteNode(item.note));
        continue;
      }
      fragment.append(lineNode(item));
      instances.add(String(item.instance));
    }
    pending = [];
    held = 0;
    view.querySelector("[data-empty]")?.remove();
    view.append(fragment);
    for (let extra = view.childElementCount - keep; extra > 0; extra--) view.firstElementChild.remove();
    view.classList.toggle("multi", instances.size > 1);
    if (stick) view.scrollTop = view.scrollHeight;
  }

  function onMessage(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (Array.isArray(data.lines)) push(data.lines);
    if (data.skipped) note(`${data.skipped} lines skipped: the app wrote faster than they could be sent`);
    if (data.dropped) note(`${data.dropped} log chunks lost: the daemon dropped them for this slow reader`);
    if (data.error) note(data.error);  // the close that follows says whether to retry
  }

  function connect() {
    clearTimeout(retryTimer);
    const ws = corral.socket(root.dataset.ws);
    socket = ws;
    setState("connecting", "connecting…");
    ws.addEventListener("open", () => {
      if (retryMs > 1000) note("reconnected: lines written while disconnected are not shown");
      retryMs = 1000;
      setState(follow.checked ? "live" : "paused", follow.checked ? "live" : "paused");
    });
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      if (event.code === 4401) {
        setState("ended", "session ended: reload the page");
        return;
      }
      if (event.code >= 4000 && event.code < 5000) {  // refused: retrying would not help
        setState("ended", "stopped");
        return;
      }
      setState("connecting", "reconnecting…");
      retryTimer = setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    });
  }

  // Follow off: the view holds still (lines keep coming and wait); on: they are shown.
  follow.addEventListener("change", () => {
    if (follow.checked) {
      if (socket && socket.readyState === WebSocket.OPEN) setState("live", "live");
      schedule();
      view.scrollTop = view.scrollHeight;
    } else if (socket) {
      setState("paused", "paused");
    }
  });

  view.scrollTop = view.scrollHeight;
  connect();
})();
