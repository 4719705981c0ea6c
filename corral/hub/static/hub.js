// Live values: a page with a #live[data-live] part listens on the bucket's WebSocket and
// re-reads that part of the page when an agent pushed something. No inline script (CSP).
"use strict";

(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.live) return;
  let delay = 1000;

  async function refresh() {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("live");
    if (fresh) live.replaceChildren(...fresh.childNodes);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + live.dataset.live);
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", () => { refresh().catch(() => {}); });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();
