// The local runtime's dashboard: polls /.knsd/status and /.knsd/history once a second, draws SVG charts.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000;
const KEEP = 3600;

const view = { window: 300, samples: [], lastT: 0, status: null };

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value, integer) {
  if (value <= 0) return 1;
  if (integer) return Math.max(1, Math.ceil(value));
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

// One chart: series of [t, value] with a colour; step lines for counts; bands where `band(sample)` holds.
function draw(svg, samples, series, options) {
  const width = svg.clientWidth || 600;
  const height = svg.clientHeight || 210;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const pad = { l: 40, r: options.right ? 46 : 14, t: 10, b: 22 };
  const t1 = view.status ? view.status.now : Date.now() / 1000;
  // The chosen window, shrunk to the history there is (at least a minute), so a short run fills the chart.
  const first = samples.length ? samples[0].t : t1;
  const t0 = t1 - Math.min(view.window, Math.max(60, t1 - first));
  const shown = samples.filter((s) => s.t >= t0 - 2);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const scale = (max) => (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  const left = series.filter((s) => !s.right);
  const right = series.filter((s) => s.right);
  const maxOf = (list) => Math.max(0, ...shown.flatMap((s) => list.map((d) => d.value(s) ?? 0)));
  const leftMax = niceMax(Math.max(maxOf(left), options.min || 0), options.integer);
  const rightMax = niceMax(maxOf(right), false);
  const yl = scale(leftMax);
  const yr = scale(rightMax);

  if (options.band) {
    for (let i = 0; i < shown.length; i++) {
      if (!options.band(shown[i])) continue;
      const end = i + 1 < shown.length ? shown[i + 1].t : t1;
      svg.append(el("rect", { x: x(shown[i].t), y: pad.t, width: Math.max(1, x(end) - x(shown[i].t)),
        height: height - pad.t - pad.b, fill: css("--panic"), opacity: 0.13 }));
    }
  }
  for (let i = 0; i <= 4; i++) {
    const v = (leftMax * i) / 4;
    if (options.integer && !Number.isInteger(v)) continue;
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: yl(v), y2: yl(v), class: "grid" }));
    svg.append(el("text", { x: pad.l - 6, y: yl(v) + 4, "text-anchor": "end" }, String(+v.toFixed(2))));
    if (right.length) {
      const r = (rightMax * i) / 4;
      svg.append(el("text", { x: width - pad.r + 6, y: yr(r) + 4 }, String(+r.toFixed(2))));
    }
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    svg.append(el("text", { x: x(t), y: height - 5, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" },
      clock(t)));
  }
  for (const s of series) {
    const y = s.right ? yr : yl;
    // Runs of consecutive samples with a value; a run of one (a lone latency) is drawn as a dot.
    const runs = [[]];
    for (const sample of shown) {
      const v = s.value(sample);
      if (v === null || v === undefined) { if (runs[runs.length - 1].length) runs.push([]); continue; }
      runs[runs.length - 1].push([x(sample.t), y(v)]);
    }
    for (const run of runs.filter((r) => r.length)) {
      if (run.length === 1) {
        svg.append(el("circle", { cx: run[0][0], cy: run[0][1], r: 3, fill: css(s.color) }));
        continue;
      }
      let d = `M${run[0][0].toFixed(1)},${run[0][1].toFixed(1)}`;
      for (const [px, py] of run.slice(1)) d += s.step ? `H${px.toFixed(1)}V${py.toFixed(1)}` : `L${px.toFixed(1)},${py.toFixed(1)}`;
      const path = el("path", { d, class: "line", stroke: css(s.color) });
      if (s.dashed) path.setAttribute("stroke-dasharray", "6 4");
      if (s.width) path.setAttribute("stroke-width", s.width);
      svg.append(path);
    }
  }
}

function charts() {
  const samples = view.samples;
  draw($("scale-chart"), samples, [
    { value: (s) => s.ready + s.pending, color: "--pending", step: true, width: 1.6 },
    { value: (s) => s.desired, color: "--desired", step: true, dashed: true },
    { value: (s) => s.ready, color: "--ready", step: true, width: 3 },
  ], { integer: true, min: 1, band: (s) => s.panic });
  draw($("concurrency-chart"), samples, [
    { value: (s) => s.buffered, color: "--pending", step: true, width: 1.4 },
    { value: (s) => s.panic_concurrency, color: "--panic" },
    { value: (s) => s.stable_concurrency, color: "--stable" },
  ], { min: 1, band: (s) => s.panic });
  draw($("traffic-chart"), samples, [
    { value: (s) => s.rps, color: "--rps" },
    { value: (s) => s.latency, color: "--latency", right: true },
  ], { min: 1, right: true });
}

function age(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function pods(status) {
  const rows = [];
  for (const rev of status.revisions) {
    for (const pod of rev.pods) rows.push(pod);
  }
  rows.sort((a, b) => a.created - b.created);
  $("pods").replaceChildren(...rows.map((pod) => {
    const tr = document.createElement("tr");
    tr.dataset.pod = pod.name;
    tr.dataset.state = pod.state;
    const cells = [pod.name, pod.revision, null, age(status.now - pod.created), pod.inflight, pod.served,
      pod.startup_seconds === null ? "–" : `${pod.startup_seconds.toFixed(1)} s`];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      if (i === 0) td.className = "name";
      if (i === 2) {
        const badge = document.createElement("span");
        badge.className = `badge ${pod.state}`;
        badge.textContent = pod.state;
        td.append(badge);
      } else td.textContent = String(value);
      tr.append(td);
    });
    return tr;
  }));
  $("no-pods").hidden = rows.length > 0;
}

function tiles(status) {
  const last = view.samples[view.samples.length - 1];
  const current = status.current || {};
  $("service").textContent = status.name;
  $("revision").textContent = status.latest_ready_revision || status.latest_revision || "no revision";
  $("stat-ready").textContent = last ? String(last.ready) : "–";
  $("stat-desired").textContent = last ? String(last.desired) : "–";
  $("stat-panic").textContent = current.panic ? "panic" : "stable";
  $("stat-panic").dataset.panic = String(Boolean(current.panic));
  $("stat-concurrency").textContent =
    `${(current.stable_concurrency || 0).toFixed(2)} / ${(current.panic_concurrency || 0).toFixed(2)}`;
  $("stat-buffered").textContent = last ? String(last.buffered) : "–";
  $("stat-inflight").textContent = last ? String(last.inflight) : "–";
  $("stat-rps").textContent = last ? last.rps.toFixed(1) : "–";
  const latencies = view.samples.slice(-60).filter((s) => s.latency !== null);
  $("stat-latency").textContent = latencies.length ? `${latencies[latencies.length - 1].latency.toFixed(2)} s` : "–";
}

async function refresh() {
  try {
    const [status, history] = await Promise.all([
      fetch("status").then((r) => r.json()),
      fetch(`history?since=${view.lastT}`).then((r) => r.json()),
    ]);
    view.status = status;
    view.samples.push(...history.samples);
    if (view.samples.length > KEEP) view.samples.splice(0, view.samples.length - KEEP);
    if (view.samples.length) view.lastT = view.samples[view.samples.length - 1].t;
    tiles(status);
    pods(status);
    charts();
    $("live").dataset.live = "true";
    $("live").textContent = `live · ${clock(status.now)}`;
  } catch (error) {
    $("live").dataset.live = "false";
    $("live").textContent = "disconnected";
  }
}

for (const button of document.querySelectorAll("[data-window]")) {
  button.addEventListener("click", () => {
    view.window = Number(button.dataset.window);
    for (const b of document.querySelectorAll("[data-window]")) b.setAttribute("aria-pressed", String(b === button));
    charts();
  });
}
window.addEventListener("resize", charts);

(async function loop() {
  for (;;) {
    await refresh();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
})();
