// corral panel: the app page's CPU and memory chart.
//
// <div class="chart" data-chart-src="/api/v1/tenants/T/apps/A/metrics"></div> becomes a
// live chart: CPU % (left axis) and memory (right axis) over a chosen range, refreshed at
// the sampler's interval, with a hover tooltip. Drawn as SVG with DOM calls: no library,
// no innerHTML, no inline styles (classes in chart.css, which this script links itself).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const HEIGHT = 240;
  const PAD = { top: 14, right: 70, bottom: 28, left: 52 };
  const RANGES = [["1 h", 3600], ["6 h", 6 * 3600], ["24 h", 86400], ["7 d", 7 * 86400]];
  const TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600,
    12 * 3600, 86400, 2 * 86400];
  const MIN_REFRESH = 2;
  const MIN_SPAN = 300;
  const script = document.currentScript;

  // chart.css sits next to this script's folder (static/js -> static/css).
  function linkStylesheet() {
    const href = new URL("../css/chart.css", script ? script.src : location.href).href;
    const links = document.querySelectorAll('link[rel="stylesheet"]');
    if ([...links].some((link) => link.href === href)) return;
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    document.head.append(link);
  }

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (parent) parent.append(node);
    return node;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---------------------------------------------------------------- formatting

  const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function byteUnit(max) {
    let i = 0;
    while (max >= 1024 && i < BYTE_UNITS.length - 1) { max /= 1024; i++; }
    return i;
  }

  function formatBytes(n, unit = byteUnit(n)) {
    const value = n / 1024 ** unit;
    const digits = unit === 0 || Number.isInteger(value) || value >= 100 ? 0 : 1;
    return `${value.toFixed(digits)} ${BYTE_UNITS[unit]}`;
  }

  // Axis labels: round numbers, up to two decimals (0.25 %, 1.5 GiB).
  const short = (n) => String(Number(n.toFixed(2)));

  function formatCpu(n) {
    return `${n < 10 && !Number.isInteger(n) ? n.toFixed(1) : Math.round(n)} %`;
  }

  function formatTick(seconds, range) {
    const date = new Date(seconds * 1000);
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    if (range <= 86400) return time;
    return `${date.toLocaleDateString([], { weekday: "short" })} ${time}`;
  }

  function formatWhen(seconds) {
    return new Date(seconds * 1000).toLocaleString([], {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
      hourCycle: "h23",
    });
  }

  // ---------------------------------------------------------------- scales

  // A round step (1, 2, 2.5, 5 x 10^n) giving about `count` ticks up to `max`.
  function niceStep(max, count) {
    const raw = max / count;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  function niceAxis(max, count, floor) {
    const top = Math.max(max, floor);
    const step = niceStep(top, count);
    return { step, max: Math.ceil(top / step) * step };
  }

  // Time ticks on round local times (whole minutes, hours, days).
  function timeTicks(from, to, maxTicks) {
    const span = to - from;
    const step = TIME_STEPS.find((s) => span / s <= maxTicks) || TIME_STEPS[TIME_STEPS.length - 1];
    const offset = -new Date(from * 1000).getTimezoneOffset() * 60;
    const ticks = [];
    for (let t = Math.ceil((from + offset) / step) * step - offset; t <= to; t += step) ticks.push(t);
    return ticks;
  }

  // Break the lines where samples are missing (panel or daemon down, app not yet there).
  function segments(points, gap) {
    const out = [];
    let current = [];
    for (const point of points) {
      if (current.length && point.at - current[current.length - 1].at > gap) {
        out.push(current);
        current = [];
      }
      current.push(point);
    }
    if (current.length) out.push(current);
    return out;
  }

  function nearest(points, at) {
    let lo = 0;
    let hi = points.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (points[mid].at < at) lo = mid; else hi = mid;
    }
    return Math.abs(points[lo].at - at) <= Math.abs(points[hi].at - at) ? points[lo] : points[hi];
  }

  // ---------------------------------------------------------------- the chart

  class Chart {
    constructor(root) {
      this.root = root;
      this.src = root.dataset.chartSrc;
      this.range = Number(root.dataset.chartRange) || RANGES[0][1];
      this.points = [];
      this.interval = 10;
      this.loaded = false;
      this.error = "";
      this.width = 0;
      this.timer = null;
      this.hoverX = null;
      this.skew = 0;
      this.build();
    }

    build() {
      const root = this.root;
      root.classList.add("chart-live");
      const head = el("div", "chart-head");
      const legend = el("div", "chart-legend");
      this.values = {};
      for (const [key, label] of [["cpu", "CPU"], ["memory", "Memory"], ["instances", "Instances"]]) {
        const item = el("span", `chart-key chart-key-${key}`);
        const value = el("strong", "chart-value", "-");
        item.append(el("span", "chart-swatch"), el("span", "chart-label", label), value);
        legend.append(item);
        this.values[key] = value;
      }
      const ranges = el("div", "chart-ranges");
      ranges.setAttribute("role", "group");
      ranges.setAttribute("aria-label", "Time range");
      this.rangeButtons = RANGES.map(([label, seconds]) => {
        const button = el("button", "small", label);
        button.type = "button";
        button.dataset.range = String(seconds);
        button.addEventListener("click", () => this.setRange(seconds));
        ranges.append(button);
        return button;
      });
      head.append(legend, ranges);
      this.plot = el("div", "chart-plot");
      this.message = el("p", "chart-empty");
      this.message.setAttribute("role", "status");
      this.svg = svg("svg", { class: "chart-svg", role: "img", height: HEIGHT });
      this.plot.append(this.svg, this.message);
      root.replaceChildren(head, this.plot);
      this.markRange();
      new ResizeObserver(() => {
        if (this.plot.clientWidth !== this.width) this.draw();
      }).observe(this.plot);
      document.addEventListener("visibilitychange", () => {
        if (!document.hidden && this.root.isConnected) this.load();
      });
    }

    markRange() {
      for (const button of this.rangeButtons) {
        const active = Number(button.dataset.range) === this.range;
        button.classList.toggle("active", active);
        button.setAttribute("aria-pressed", String(active));
      }
    }

    setRange(seconds) {
      this.range = seconds;
      this.markRange();
      this.load();
    }

    async load() {
      clearTimeout(this.timer);
      if (!this.root.isConnected) return;
      if (!document.hidden) {
        const now = Date.now() / 1000 + this.skew;
        const maxPoints = Math.max(2, Math.min(1000, Math.floor((this.plot.clientWidth || 600) / 2)));
        const url = new URL(this.src, location.href);
        url.searchParams.set("since", (now - this.range).toFixed(0));
        url.searchParams.set("max_points", String(maxPoints));
        try {
          const response = await fetch(url, {
            credentials: "same-origin", headers: { Accept: "application/json" },
          });
          const data = await response.json().catch(() => ({}));
          if (!response.ok) {
            throw Object.assign(new Error(data.error || `HTTP ${response.status}`),
              { status: response.status });
          }
          this.points = Array.isArray(data.points) ? data.points : [];
          this.interval = Number(data.interval) || this.interval;
          // Times are the server's: a browser whose clock is off still asks for the
          // right range and puts "now" at the right edge.
          if (Number.isFinite(data.now)) this.skew = data.now - Date.now() / 1000;
          this.error = "";
        } catch (error) {
          this.error = `could not load the metrics: ${error.message}`;
          if (error.status === 404) this.points = []; // the app or tenant is gone
        }
        this.loaded = true;
        this.root.dataset.chartPoints = String(this.points.length);
        this.draw();
      }
      this.timer = setTimeout(() => this.load(), Math.max(this.interval, MIN_REFRESH) * 1000);
    }

    // kind: "empty" (no chart, a message in its place), "error" (the same, in red) or
    // "stale" (the chart stays, the message is a red line under it).
    showMessage(text, kind = "empty") {
      this.message.textContent = text;
      this.message.hidden = !text;
      this.message.classList.toggle("chart-error", kind !== "empty");
      this.message.classList.toggle("chart-stale", kind === "stale");
      this.root.classList.toggle("chart-is-empty", kind !== "stale");
    }

    updateLegend() {
      const last = this.points[this.points.length - 1];
      this.values.cpu.textContent = last ? formatCpu(last.cpu) : "-";
      this.values.memory.textContent = last ? formatBytes(last.memory) : "-";
      this.values.instances.textContent = last ? String(last.instances) : "-";
    }

    draw() {
      this.width = this.plot.clientWidth;
      this.svg.replaceChildren();
      this.updateLegend();
      if (!this.loaded) return this.showMessage("loading…");
      if (!this.points.length) {
        const every = Math.round(this.interval);
        return this.showMessage(this.error || `no samples yet: the panel samples every ${every} s`,
          this.error ? "error" : "empty");
      }
      // A failed refresh keeps the last points on screen, with the error under them.
      this.showMessage(this.error, "stale");
      if (this.width < PAD.left + PAD.right + 40) return;

      const width = this.width;
      const innerW = width - PAD.left - PAD.right;
      const innerH = HEIGHT - PAD.top - PAD.bottom;
      const now = Date.now() / 1000 + this.skew;
      const points = this.points;
      // The chosen range, or less when the samples start later (a new app, a panel that
      // just started): 30 s of samples squeezed into the last pixels of a week say nothing.
      const first = points[0].at;
      const from = Math.min(first, Math.max(now - this.range, Math.min(first, now - MIN_SPAN)));
      const to = Math.max(now, points[points.length - 1].at);
      // Both axes share the grid lines: memory gets as many round steps as CPU has.
      const cpuAxis = niceAxis(Math.max(...points.map((p) => p.cpu)), 4, 1);
      const steps = Math.round(cpuAxis.max / cpuAxis.step);
      const maxMemory = Math.max(1024 * 1024, ...points.map((p) => p.memory));
      const memUnit = byteUnit(maxMemory);
      const memStep = niceStep(maxMemory / 1024 ** memUnit, steps);
      const memAxis = { step: memStep, max: memStep * steps * 1024 ** memUnit };
      const x = (t) => PAD.left + ((t - from) / (to - from)) * innerW;
      const yCpu = (v) => PAD.top + innerH - (v / cpuAxis.max) * innerH;
      const yMem = (v) => PAD.top + innerH - (v / memAxis.max) * innerH;

      const root = this.svg;
      root.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
      root.setAttribute("width", String(width));
      const last = points[points.length - 1];
      root.setAttribute("aria-label",
        `CPU ${formatCpu(last.cpu)} and memory ${formatBytes(last.memory)} now; ` +
        `${points.length} points since ${formatWhen(from)}`);

      // Grid and axes: CPU on the left, memory on the right, sharing four grid lines.
      const grid = svg("g", { class: "chart-grid" }, root);
      for (let i = 0; i <= steps; i++) {
        const y = PAD.top + innerH - (i / steps) * innerH;
        svg("line", { x1: PAD.left, x2: PAD.left + innerW, y1: y, y2: y }, grid);
        const left = svg("text", { x: PAD.left - 8, y, class: "chart-tick chart-tick-cpu" }, root);
        left.textContent = `${short(i * cpuAxis.step)} %`;
        const right = svg("text", { x: PAD.left + innerW + 8, y, class: "chart-tick chart-tick-memory" }, root);
        right.textContent = `${short(i * memAxis.step)} ${BYTE_UNITS[memUnit]}`;
      }
      for (const t of timeTicks(from, to, Math.max(2, Math.floor(innerW / 110)))) {
        const tx = x(t);
        svg("line", { x1: tx, x2: tx, y1: PAD.top, y2: PAD.top + innerH, class: "chart-vgrid" }, grid);
        const label = svg("text", { x: tx, y: HEIGHT - 8, class: "chart-tick chart-tick-time" }, root);
        label.textContent = formatTick(t, this.range);
      }

      // The series: CPU as a filled line, memory as a line; each broken at gaps.
      const gap = Math.max(this.interval * 3, ((to - from) / points.length) * 3);
      const base = PAD.top + innerH;
      for (const part of segments(points, gap)) {
        const cpuLine = part.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${yCpu(p.cpu).toFixed(1)}`).join("");
        const memLine = part.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${yMem(p.memory).toFixed(1)}`).join("");
        const first = x(part[0].at).toFixed(1);
        const lastX = x(part[part.length - 1].at).toFixed(1);
        svg("path", { d: `${cpuLine}L${lastX},${base}L${first},${base}Z`, class: "chart-area-cpu" }, root);
        svg("path", { d: cpuLine, class: "chart-line chart-line-cpu" }, root);
        svg("path", { d: memLine, class: "chart-line chart-line-memory" }, root);
        if (part.length === 1) { // a lone sample has no line: show it as dots
          svg("circle", { cx: first, cy: yCpu(part[0].cpu), r: 3.5, class: "chart-dot chart-dot-cpu" }, root);
          svg("circle", { cx: first, cy: yMem(part[0].memory), r: 3.5, class: "chart-dot chart-dot-memory" }, root);
        }
      }
      svg("line", { x1: PAD.left, x2: PAD.left + innerW, y1: base, y2: base, class: "chart-axis" }, root);

      this.drawHover(root, { x, yCpu, yMem, from, to, innerW, innerH });
    }

    drawHover(root, scale) {
      const hover = svg("g", { class: "chart-hover" }, root);
      const guide = svg("line", { y1: PAD.top, y2: PAD.top + scale.innerH, class: "chart-guide" }, hover);
      const dotCpu = svg("circle", { r: 4, class: "chart-dot chart-dot-cpu" }, hover);
      const dotMem = svg("circle", { r: 4, class: "chart-dot chart-dot-memory" }, hover);
      const tip = svg("g", { class: "chart-tooltip" }, hover);
      const box = svg("rect", { rx: 5, ry: 5, class: "chart-tooltip-box" }, tip);
      const lines = ["when", "cpu", "memory", "instances"].map((key, i) =>
        svg("text", { x: 10, y: 18 + i * 16, class: `chart-tooltip-text chart-tooltip-${key}` }, tip));
      const hit = svg("rect", {
        x: PAD.left, y: PAD.top, width: scale.innerW, height: scale.innerH, class: "chart-hit",
      }, root);

      // px: the pointer's x in the SVG's coordinates; kept so a refresh keeps the tooltip.
      const show = (px) => {
        this.hoverX = px;
        const at = scale.from + ((px - PAD.left) / scale.innerW) * (scale.to - scale.from);
        const p = nearest(this.points, at);
        const cx = scale.x(p.at);
        guide.setAttribute("x1", cx);
        guide.setAttribute("x2", cx);
        dotCpu.setAttribute("cx", cx);
        dotCpu.setAttribute("cy", scale.yCpu(p.cpu));
        dotMem.setAttribute("cx", cx);
        dotMem.setAttribute("cy", scale.yMem(p.memory));
        lines[0].textContent = formatWhen(p.at);
        lines[1].textContent = `CPU ${formatCpu(p.cpu)}`;
        lines[2].textContent = `Memory ${formatBytes(p.memory)}`;
        lines[3].textContent = `${p.instances} instance${p.instances === 1 ? "" : "s"}`;
        hover.classList.add("chart-hover-on");
        const w = Math.max(...lines.map((line) => line.getComputedTextLength())) + 20;
        const h = 16 * lines.length + 12;
        box.setAttribute("width", w);
        box.setAttribute("height", h);
        const left = cx + 12 + w > PAD.left + scale.innerW ? cx - 12 - w : cx + 12;
        tip.setAttribute("transform", `translate(${left.toFixed(1)},${PAD.top + 4})`);
        this.root.dataset.chartHover = String(p.at);
      };
      const fromEvent = (event) => {
        const bounds = root.getBoundingClientRect();
        show(((event.clientX - bounds.left) / bounds.width) * this.width);
      };
      hit.addEventListener("pointermove", fromEvent);
      hit.addEventListener("pointerdown", fromEvent);
      hit.addEventListener("pointerleave", () => {
        this.hoverX = null;
        hover.classList.remove("chart-hover-on");
        delete this.root.dataset.chartHover;
      });
      if (this.hoverX != null) show(this.hoverX);
    }
  }

  function start() {
    linkStylesheet();
    for (const root of document.querySelectorAll(".chart[data-chart-src]")) {
      if (root.chart) continue;
      root.chart = new Chart(root);
      root.chart.draw();
      root.chart.load();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
