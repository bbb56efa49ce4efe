// The live page: polls /api/state and draws tables and charts with the DOM and inline SVG.
// No library and nothing fetched from elsewhere; every value is set as text, never as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const HOUR_S = 3600;
const refreshMs = Number(document.body.dataset.refreshMs) || 5000;
let selected = null;  // id of the stream drawn in the big chart (default: the one with most lag)
let lastState = null;
const namespace = document.body.dataset.namespace || "";

// Names without the namespace, which the header shows once (the full name is the tooltip).
function short(name) {
  return namespace && name && name.startsWith(namespace + ".") ? name.slice(namespace.length + 1) : name;
}
function named(tag, attrs, name, fallback) {
  return el(tag, Object.assign({ title: name || null }, attrs), name ? short(name) : fallback);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child === null || child === undefined ? "" : String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function fmtInt(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }
function fmtSeconds(s) { return s === null || s === undefined ? "-" : Number(s).toFixed(1); }
function fmtClock(epochS) { return new Date(epochS * 1000).toISOString().slice(11, 19) + " UTC"; }
function fmtAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function statusBadge(status, extra) {
  const key = String(status).toLowerCase();
  return el("span", { class: `status ${key}${extra ? " " + extra : ""}` }, status);
}

function fillBody(table, rows, columns, emptyText) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    body.append(el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText)));
  }
  for (const row of rows) body.append(row);
}

// -- charts ---------------------------------------------------------------------------------

function scale(points, now, width, height, pad) {
  const max = Math.max(1, ...points.map((p) => p.lag));
  const x = (t) => pad.left + (width - pad.left - pad.right) * (1 - Math.min(HOUR_S, Math.max(0, now - t)) / HOUR_S);
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - v / max);
  return { max, x, y };
}

function sparkline(points, now) {
  const width = 160, height = 30, pad = { left: 1, right: 4, top: 4, bottom: 4 };
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img" });
  if (points.length > 0) {
    const { x, y } = scale(points, now, width, height, pad);
    root.append(svg("polyline", { class: "line", points: points.map((p) => `${x(p.at).toFixed(1)},${y(p.lag).toFixed(1)}`).join(" ") }));
    const last = points[points.length - 1];
    root.append(svg("circle", { cx: x(last.at).toFixed(1), cy: y(last.lag).toFixed(1), r: 2.5, fill: "#1d4ed8" }));
  }
  return root;
}

function bigChart(stream, now) {
  const box = document.getElementById("chart");
  box.replaceChildren();
  if (!stream) {
    box.append(el("p", { class: "muted" }, "no lag samples yet"));
    return;
  }
  const name = stream.subscription || stream.event_type || stream.topic || stream.group;
  box.append(el("div", { class: "title" }, `Lag of ${short(name)} (group ${short(stream.group)}), last hour, records`));
  const width = Math.max(480, Math.min(1100, box.clientWidth - 20 || 900)), height = 180;
  const pad = { left: 56, right: 12, top: 10, bottom: 22 };
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lag-chart", role: "img" });
  const points = stream.history;
  const { max, x, y } = scale(points, now, width, height, pad);
  for (const fraction of [0, 0.5, 1]) {
    const value = Math.round(max * fraction);
    root.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }));
    const label = svg("text", { x: pad.left - 6, y: y(value) + 4, "text-anchor": "end" });
    label.textContent = fmtInt(value);
    root.append(label);
  }
  root.append(svg("line", { class: "axis", x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }));
  root.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }));
  for (const minutes of [60, 45, 30, 15, 0]) {
    const label = svg("text", { x: x(now - minutes * 60), y: height - 6, "text-anchor": minutes === 60 ? "start" : minutes === 0 ? "end" : "middle" });
    label.textContent = minutes === 0 ? "now" : `-${minutes} min`;
    root.append(label);
  }
  if (points.length > 0) {
    const coords = points.map((p) => `${x(p.at).toFixed(1)},${y(p.lag).toFixed(1)}`);
    const base = y(0).toFixed(1);
    root.append(svg("polygon", { class: "area", points: `${x(points[0].at).toFixed(1)},${base} ${coords.join(" ")} ${x(points[points.length - 1].at).toFixed(1)},${base}` }));
    root.append(svg("polyline", { class: "line", points: coords.join(" ") }));
    for (const p of points.slice(-1)) root.append(svg("circle", { cx: x(p.at), cy: y(p.lag), r: 3, fill: "#1d4ed8" }));
  }
  box.append(root);
}

// -- sections ---------------------------------------------------------------------------------

function renderLag(state) {
  const table = document.getElementById("lag-table");
  // Streams with lag first, the most behind on top; groups not on the cluster last.
  const streams = [...state.streams].sort((a, b) => (a.lag === null) - (b.lag === null) || (b.lag || 0) - (a.lag || 0)
    || a.group.localeCompare(b.group));
  if (!streams.some((s) => s.id === selected)) {
    const worst = streams.filter((s) => s.lag !== null).sort((a, b) => b.lag - a.lag)[0];
    selected = worst ? worst.id : null;
  }
  const rows = streams.map((s) => {
    const what = s.role === "router"
      ? `${s.subscription || s.event_type || "all subscriptions"} (routing)`
      : s.subscription || s.event_type || "-";
    const row = el("tr", { "data-stream": s.id, "data-role": s.role, class: s.id === selected ? "selected" : null },
      el("td", {}, s.department || "-"),
      el("td", { class: "subscription" }, what),
      named("td", { class: "name" }, s.group),
      named("td", { class: "name" }, s.topic, s.status === "NOTFOUND" ? "(not on the cluster)" : "(no commits yet)"),
      el("td", { class: "num lag-records" }, fmtInt(s.lag)),
      el("td", { class: "num lag-seconds" }, fmtSeconds(s.lag_seconds)),
      el("td", {}, statusBadge(s.status)),
      el("td", {}, sparkline(s.history, state.at)));
    row.addEventListener("click", () => { selected = s.id; render(lastState); });
    return row;
  });
  fillBody(table, rows, 8, "no consumer group of the bus to watch");
  bigChart(streams.find((s) => s.id === selected), state.at);
}

function renderGraphStatus(state) {
  const worst = new Map();
  const rank = { NOTFOUND: 0, OK: 1, WARN: 2, ERR: 3 };
  const classes = { NOTFOUND: "status-missing", OK: "status-ok", WARN: "status-warn", ERR: "status-err" };
  for (const s of state.streams) {
    if (!s.subscription) continue;
    const previous = worst.get(s.subscription);
    if (previous === undefined || rank[s.status] > rank[previous]) worst.set(s.subscription, s.status);
  }
  for (const node of document.querySelectorAll("svg.bus-graph g[data-subscription]")) {
    node.classList.remove(...Object.values(classes));
    const status = worst.get(node.dataset.subscription);
    if (status !== undefined) node.classList.add(classes[status] || "status-err");
  }
}

function renderDeadLetters(state) {
  const rows = state.dead_letters.map((d) => el("tr", { "data-owner": d.owner },
    el("td", {}, d.kind === "router" ? "router" : d.owner),
    el("td", {}, d.department || "-"),
    named("td", { class: "name" }, d.topic),
    el("td", { class: "num dlq-count" }, d.count === null ? "none yet" : fmtInt(d.count))));
  fillBody(document.getElementById("dlq-table"), rows, 4, "no dead-letter topics known");
}

function renderConnectors(state) {
  const rows = state.connectors.map((c) => el("tr", { "data-connector": c.name },
    el("td", {}, `${c.name} (${c.type})`),
    el("td", {}, c.department),
    el("td", {}, c.side),
    el("td", {}, statusBadge(c.stale ? `${c.state}, silent` : c.state, c.stale ? "stale" : null)),
    el("td", {}, c.updated_at ? fmtAgo(c.updated_at) : "never reported"),
    el("td", { class: "error-text" }, c.error || "")));
  fillBody(document.getElementById("connector-table"), rows, 6, "the topology has no connectors");
}

function renderCameras(state) {
  const target = state.figures && state.figures.maintenance ? state.figures.maintenance.working_order_target : 0.95;
  const rows = state.cameras.map((c) => {
    const percent = Math.round(c.ratio * 1000) / 10;
    const level = percent < 80 ? "low" : percent < 95 ? "mid" : "";
    const kept = c.total > 0 && c.online >= target * c.total;
    return el("tr", { "data-district": c.district },
      el("td", {}, c.district === "all" ? "all districts" : c.district),
      el("td", { class: "num" }, fmtInt(c.online)),
      el("td", { class: "num" }, fmtInt(c.total)),
      el("td", {}, el("span", { class: `bar ${level}` }, el("span", { style: `width:${Math.min(100, percent)}%` })), `${percent}%`),
      el("td", {}, c.total > 0 ? promiseBadge(kept) : "-"),
      el("td", {}, fmtAgo(c.at)));
  });
  fillBody(document.getElementById("camera-table"), rows, 6, "no data: nothing has published camera availability yet");
}

// -- the figures the city runs on -----------------------------------------------------------

function fmtPercent(x) { return x === null || x === undefined ? "-" : `${Math.round(x * 1000) / 10}%`; }
function fmtLatency(s) { return s === null || s === undefined ? "-" : Number(s).toFixed(3); }
function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "-"; }
function promiseBadge(kept) { return statusBadge(kept ? "kept" : "broken", kept ? "ok" : "err"); }

function series(values) {
  const width = 160, height = 30, pad = 3;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img" });
  const max = Math.max(1, ...values);
  const x = (i) => pad + (width - 2 * pad) * (values.length > 1 ? i / (values.length - 1) : 1);
  const y = (v) => height - pad - (height - 2 * pad) * v / max;
  if (values.length > 0) {
    root.append(svg("polyline", { class: "line", points: values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
  }
  return root;
}

function renderSharing(figures) {
  const sharing = figures.sharing;
  const met = sharing.event_types_share !== null && sharing.event_types_share >= sharing.target;
  const summary = document.getElementById("sharing-summary");
  summary.replaceChildren(
    el("span", { id: "sharing-types" }, `Event types shared: ${sharing.event_types_shared} of ${sharing.event_types} (${fmtPercent(sharing.event_types_share)})`),
    " \u00b7 ",
    el("span", { id: "sharing-records" }, `records shared: ${fmtInt(sharing.records_shared)} of ${fmtInt(sharing.records)} (${fmtPercent(sharing.records_share)})`),
    " \u00b7 ",
    `target ${fmtPercent(sharing.target)} of the event types: `,
    sharing.event_types_share === null ? "no records yet" : statusBadge(met ? "met" : "below", met ? "ok" : "err"));
  const rows = sharing.departments.map((d) => el("tr", { "data-sharing-department": d.department },
    el("td", { title: d.title }, d.department),
    el("td", { class: "num" }, fmtInt(d.published)),
    el("td", { class: "num" }, fmtInt(d.shared)),
    el("td", { class: "num" }, fmtInt(d.received)),
    el("td", { class: "name" }, Object.entries(d.received_from).map(([p, n]) => `${p} ${fmtInt(n)}`).join(", "))));
  fillBody(document.getElementById("sharing-table"), rows, 5, "the topology has no departments");
  const types = sharing.by_event_type.map((t) => el("tr", { "data-sharing-type": t.event_type },
    el("td", {}, t.event_type),
    el("td", {}, t.publisher),
    el("td", { class: "num" }, fmtInt(t.records)),
    el("td", { class: "num" }, fmtInt(t.shared)),
    el("td", { class: "num" }, fmtPercent(t.records ? t.shared / t.records : null)),
    el("td", { class: "name" }, t.reached.join(", "))));
  fillBody(document.getElementById("sharing-types-table"), types, 6, "the topology has no event types");
}

function renderMaintenance(figures) {
  const m = figures.maintenance;
  if (!m) {
    fillBody(document.getElementById("fault-table"), [], 8, "the topology runs no processors: no maintenance figures");
    fillBody(document.getElementById("breach-table"), [], 8, "the topology runs no processors");
    return;
  }
  document.getElementById("maintenance-promise").textContent =
    `At least ${fmtPercent(m.working_order_target)} of the cameras in working order; a fault answered within ` +
    `${m.answer_within_h} h and repaired within ${m.repair_within_h} h (as the processors' SLA tracker records it, in event time).`;
  const rows = m.districts.map((d) => el("tr", { "data-fault-district": d.district },
    el("td", {}, d.district === "all" ? "all districts" : d.district),
    el("td", { class: "num" }, fmtInt(d.open)),
    el("td", { class: "num" }, fmtInt(d.faults)),
    el("td", { class: "num" }, fmtInt(d.answer.kept)),
    el("td", { class: d.answer.broken ? "num broken" : "num" }, fmtInt(d.answer.broken)),
    el("td", { class: "num" }, fmtInt(d.repair.kept)),
    el("td", { class: d.repair.broken ? "num broken" : "num" }, fmtInt(d.repair.broken)),
    el("td", { class: d.answer.overdue + d.repair.overdue ? "num broken" : "num" },
      `${fmtInt(d.answer.overdue)} / ${fmtInt(d.repair.overdue)}`)));
  fillBody(document.getElementById("fault-table"), rows, 8, "no camera fault recorded");
  const breaches = m.breaches.map((b) => el("tr", { "data-breach": `${b.camera_id}|${b.deadline}|${b.opened_at}` },
    el("td", {}, b.camera_id),
    el("td", {}, b.district || "-"),
    el("td", {}, b.owner_department || "-"),
    el("td", {}, b.deadline === "answer" ? `answer within ${m.answer_within_h} h` : `repair within ${m.repair_within_h} h`),
    el("td", {}, fmtTime(b.opened_at)),
    el("td", {}, fmtTime(b.due_at)),
    el("td", {}, b.done_at ? `late, ${fmtTime(b.done_at)}` : "not yet"),
    el("td", { class: "name" }, b.case_id || "-")));
  if (m.breaches_total > m.breaches.length) {
    breaches.push(el("tr", { class: "more" }, el("td", { colspan: 8 }, `and ${fmtInt(m.breaches_total - m.breaches.length)} earlier`)));
  }
  fillBody(document.getElementById("breach-table"), breaches, 8, "no promise broken");
}

function renderThroughput(figures) {
  const reading = document.getElementById("figures-reading");
  reading.hidden = figures.caught_up;
  reading.textContent = figures.caught_up ? "" : `still counting what the topics hold (${fmtInt(figures.records_read)} records read so far)`;
  const rows = figures.throughput.map((t) => el("tr", { "data-throughput": t.event_type },
    el("td", {}, t.event_type),
    el("td", {}, t.publisher),
    el("td", { class: "num" }, fmtInt(t.last_hour)),
    el("td", { class: "num" }, Number(t.per_second).toFixed(2)),
    el("td", { class: "num" }, fmtInt(t.delivered_last_hour)),
    el("td", {}, series(t.per_minute))));
  fillBody(document.getElementById("throughput-table"), rows, 6, "the topology has no event types");
  const latency = figures.latency.map((l) => el("tr", { "data-latency": l.subscription },
    el("td", {}, l.department),
    el("td", { title: l.event_type }, l.subscription),
    el("td", { class: "num" }, fmtInt(l.deliveries)),
    el("td", { class: "num" }, fmtLatency(l.p50_s)),
    el("td", { class: "num" }, fmtLatency(l.p99_s)),
    el("td", { class: "num" }, fmtLatency(l.max_s))));
  fillBody(document.getElementById("latency-table"), latency, 6, "the topology has no subscriptions");
}

function renderFigures(state) {
  if (!state.figures) return;
  renderSharing(state.figures);
  renderMaintenance(state.figures);
  renderThroughput(state.figures);
}

function render(state) {
  if (!state) return;
  lastState = state;
  document.getElementById("updated").textContent = state.at === null
    ? "waiting for the first poll of the cluster ..."
    : `${state.city}${state.namespace ? " (" + state.namespace + ")" : ""}: updated ${fmtClock(state.at)}, every ${state.interval_s} s`;
  const problems = document.getElementById("problems");
  problems.replaceChildren(...state.problems.map((p) => el("li", {}, p)));
  problems.hidden = state.problems.length === 0;
  if (state.at === null) return;
  renderLag(state);
  renderGraphStatus(state);
  renderDeadLetters(state);
  renderConnectors(state);
  renderCameras(state);
  renderFigures(state);
  document.body.dataset.rendered = String(state.at);
}

async function refresh() {
  try {
    const answer = await fetch("/api/state", { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) throw new Error(`/api/state answered ${answer.status}`);
    render(await answer.json());
  } catch (error) {
    const problems = document.getElementById("problems");
    problems.replaceChildren(el("li", {}, `the page cannot reach its server: ${error.message}`));
    problems.hidden = false;
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

refresh();
