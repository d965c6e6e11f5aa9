// The host page: charts of one host over a time range shared by all of
// them (picked from presets, typed in, or dragged on any chart), read
// from the Prometheus API's range queries; beside them its facts, the
// process snapshot at a moment clicked on a chart, its alerts and their
// history (hostinfo.js). While the range is a preset (the last hour ...)
// and the tab is seen, the page reads everything again every REFRESH_MS;
// a zoomed or typed range stays as drawn.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";
import * as info from "./hostinfo.js";
import { byId, cause, silencedBy, stateText } from "./alertview.js";
import { Connection } from "./connection.js";

const REFRESH_MS = 10_000;
const PRESETS = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400 };
const DEFAULT_PRESET = "1h";
/**
 * Points per series: one per PX_PER_POINT pixels of the chart's width (a
 * line drawn finer than that shows nothing more, as Grafana's
 * maxDataPoints follows a panel's width), between MIN_POINTS and
 * MAX_POINTS, so a chart stays light at any range and width.
 */
const PX_PER_POINT = 2;
const MIN_POINTS = 100;
const MAX_POINTS = 400;
const MIN_STEP_S = 1;
const CHART_HEIGHT = 220;
const MIN_CHART_WIDTH = 280;
const MIN_RATE_WINDOW_S = 60;
/** Custom ranges: no shorter than this, and not into the future. */
const MIN_RANGE_S = 10;
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/** A PromQL string literal of `value`. */
function literal(value) {
  return `"${value.replace(/[\\"]/g, "\\$&")}"`;
}

/** A selector of the metrics `names` (a regex of metric names) of `h` (a host matcher). */
function metrics(names, h) {
  return `{__name__=~"${names}",${h}}`;
}

/**
 * The label `name` set to `value` on every series of `expr`: series of
 * expressions joined by `or` keep apart by it (an operator drops a
 * metric's name).
 */
function tagged(expr, name, value) {
  return `label_replace(${expr}, "${name}", "${value}", "", "")`;
}

/**
 * The charts: a title, its queries (each series labelled) and its unit;
 * counters as rates over `windowS` seconds, or (`delta`) as their
 * increase from one point to the next. `order` lists a chart's series
 * labels in the order they are drawn. Each distinct `expr` is one
 * request: a chart's metrics are read together where PromQL can tell
 * their series apart, and two charts may share a request, each keeping
 * the series its query's `pick` accepts, so that every request of the
 * page fits in a connection's streams (`limits.max_streams_per_connection`).
 */
function charts(host, windowS = 60) {
  const h = `host=${literal(host)}`;
  const w = `[${windowS}s]`;
  // Used share of a file system as df counts it: used / (used + available).
  const used = `(host_filesystem_size_bytes{${h}} - host_filesystem_free_bytes{${h}})`;
  const fileSystems = [
    tagged(`${used} / (${used} + host_filesystem_available_bytes{${h}})`, "figure", "space"),
    tagged(`1 - host_filesystem_inodes_free{${h}} / host_filesystem_inodes{${h}}`, "figure", "inodes"),
  ].join(" or ");
  const fileSystem = (figure) => ({ expr: fileSystems, pick: (m) => m.figure === figure, label: (m) => m.mountpoint });
  // Both directions of a device's counters; rate() drops the metric's name, so it becomes a label.
  const perDevice = (metrics) => ({
    expr: Object.entries(metrics)
      .map(([direction, metric]) => tagged(`rate(${metric}{${h}}${w})`, "direction", direction))
      .join(" or "),
    label: (m) => `${m.device} ${m.direction}`,
  });
  const agent = { expr: metrics(["hostwatch_agent_spool_bytes", ...Object.keys(AGENT)].join("|"), h) };
  return [
    { id: "cpu", title: "CPU by mode", unit: "ratio", queries: [{ expr: `host_cpu_time_ratio{${h},mode!="idle"}`, label: (m) => m.mode }] },
    {
      id: "memory",
      title: "Memory and swap",
      unit: "bytes",
      queries: [{ expr: metrics(Object.keys(MEMORY).join("|"), h), label: (m) => MEMORY[m.__name__] }],
      order: Object.values(MEMORY),
    },
    {
      id: "load",
      title: "Load per core",
      unit: "number",
      // Division drops the metric's name: its minutes become a label first.
      queries: [
        {
          expr: `label_replace(${metrics("host_load(1|5|15)", h)}, "minutes", "$1", "__name__", "host_load(.+)") / on(host) group_left host_cpu_count{${h}}`,
          label: (m) => `${m.minutes} min`,
        },
      ],
      order: ["1 min", "5 min", "15 min"],
    },
    {
      id: "pressure",
      title: "Pressure (share of time stalled)",
      unit: "ratio",
      queries: [{ expr: `host_pressure_avg10_ratio{${h}}`, label: (m) => `${m.resource} ${m.kind}` }],
    },
    { id: "space", title: "File system space used", unit: "ratio", queries: [fileSystem("space")] },
    { id: "inodes", title: "File system inodes used", unit: "ratio", queries: [fileSystem("inodes")] },
    {
      id: "disk",
      title: "Disk IO",
      unit: "bytesPerSecond",
      queries: [perDevice({ read: "host_disk_read_bytes_total", written: "host_disk_written_bytes_total" })],
    },
    {
      id: "network",
      title: "Network IO",
      unit: "bytesPerSecond",
      queries: [perDevice({ in: "host_network_receive_bytes_total", out: "host_network_transmit_bytes_total" })],
    },
    {
      id: "spool",
      title: "Agent spool (waiting to be sent)",
      unit: "bytes",
      queries: [{ ...agent, pick: (m) => m.__name__ === "hostwatch_agent_spool_bytes", label: () => "spool" }],
    },
    {
      id: "agent",
      title: "Agent health (per point: reconnects, dropped batches)",
      unit: "number",
      queries: [
        {
          ...agent,
          pick: (m) => Object.hasOwn(AGENT, m.__name__),
          label: (m) => AGENT[m.__name__].label,
          delta: (m) => AGENT[m.__name__].delta,
        },
      ],
      order: Object.values(AGENT).map((a) => a.label),
    },
  ];
}

/** The memory chart's metrics and their series' labels, in the order drawn. */
const MEMORY = {
  host_memory_used_bytes: "used",
  host_memory_cached_bytes: "cached",
  host_memory_buffers_bytes: "buffers",
  host_memory_total_bytes: "total",
  host_swap_used_bytes: "swap used",
};

/** The agent health chart's metrics: labels in the order drawn, counters drawn as increases. */
const AGENT = {
  hostwatch_agent_spool_batches: { label: "batches waiting", delta: false },
  hostwatch_agent_reconnects_total: { label: "reconnects", delta: true },
  hostwatch_agent_spool_dropped_batches_total: { label: "dropped batches", delta: true },
  hostwatch_agent_connected: { label: "connected (1 = yes)", delta: false },
};

/** Severities from worst. */
const SEVERITIES = ["critical", "warning", "info"];

const FORMAT = {
  ratio: fmt.percent,
  bytes: fmt.bytes,
  bytesPerSecond: (v) => `${fmt.bytes(v)}/s`,
  number: (v) => fmt.number(v),
};

/**
 * The range the URL asks for: `?range=` a preset, or `?from=&to=` (Unix
 * seconds or ISO 8601). A malformed one gives the default and a message.
 */
export function parseRange(search, nowS) {
  const params = new URLSearchParams(search);
  const preset = (name) => ({ preset: name, start: nowS - PRESETS[name], end: nowS });
  if (params.has("from") || params.has("to")) {
    const time = (text) => {
      if (text === null || text.trim() === "") return NaN;
      const n = Number(text);
      return Number.isFinite(n) ? n : Date.parse(text) / 1000;
    };
    const [start, end] = [time(params.get("from")), time(params.get("to"))];
    let problem = null;
    if (!Number.isFinite(start) || !Number.isFinite(end)) problem = "from and to must both be times (Unix seconds or ISO 8601)";
    else if (end - start < MIN_RANGE_S) problem = `from must be at least ${MIN_RANGE_S} s before to`;
    else if (start > nowS) problem = "from is in the future";
    if (problem) return { ...preset(DEFAULT_PRESET), problem: `The range in the address is not valid (${problem}); showing the last hour.` };
    return { preset: null, start, end: Math.min(end, nowS) };
  }
  const name = params.get("range") || DEFAULT_PRESET;
  if (!(name in PRESETS)) {
    return { ...preset(DEFAULT_PRESET), problem: `Unknown range “${name}” in the address (use ${Object.keys(PRESETS).join(", ")}); showing the last hour.` };
  }
  return preset(name);
}

/** `datetime-local` input text of a time in seconds (local time). */
function localInput(s) {
  const d = new Date(s * 1000 - new Date(s * 1000).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

/**
 * One chart's series on the grid [start, end] by step: uPlot's data and
 * labels; `read(expr)` answers a query's range request (once per
 * expression, shared by the charts that ask it).
 */
async function chartData(chart, range, step, read) {
  const results = await Promise.all(chart.queries.map((q) => read(q.expr)));
  const n = Math.floor((range.end - range.start) / step + 1e-9) + 1;
  const grid = Array.from({ length: n }, (_, i) => range.start + i * step);
  const series = [];
  results.forEach((result, qi) => {
    const query = chart.queries[qi];
    for (const s of result) {
      if (query.pick && !query.pick(s.metric)) continue;
      const column = new Array(n).fill(null);
      // An indexed loop: this runs once per point of every chart, mostly
      // before the engine has compiled it, where iterators cost most.
      const values = s.values;
      for (let k = 0; k < values.length; k += 1) {
        // The answer's times are the grid's: start + i × step.
        const i = Math.round((values[k][0] - range.start) / step);
        const value = Number(values[k][1]);
        // NaN (0 / 0: a file system without inodes) and infinities are gaps.
        if (i >= 0 && i < n && Number.isFinite(value)) column[i] = value;
      }
      const delta = typeof query.delta === "function" ? query.delta(s.metric) : query.delta;
      series.push({ label: query.label(s.metric), column: delta ? increases(column) : column });
    }
  });
  if (chart.order) series.sort((a, b) => chart.order.indexOf(a.label) - chart.order.indexOf(b.label));
  return { data: [grid, ...series.map((s) => s.column)], labels: series.map((s) => s.label) };
}

/**
 * A counter's increase from each point to the next (the first point and
 * those after a gap have none); a drop is a restart from 0, so the
 * increase is the new value, as PromQL's `increase` counts resets.
 */
export function increases(column) {
  return column.map((v, i) => {
    const before = i > 0 ? column[i - 1] : null;
    if (v === null || before === null) return null;
    return v >= before ? v - before : v;
  });
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** A time axis' labels (local time, 24-hour), finer for short spans. */
function axisTimes(spanS) {
  const pad = (n) => String(n).padStart(2, "0");
  return (u, splits) =>
    splits.map((s) => {
      const d = new Date(s * 1000);
      const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      if (spanS <= 600) return `${hm}:${pad(d.getSeconds())}`;
      if (spanS <= 86400) return hm;
      return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
    });
}

/** A value axis' width: room for its longest label (uPlot asks again as labels change). */
function labelWidth(u, values) {
  const longest = Math.max(0, ...(values || []).map((v) => String(v).length));
  return 20 + longest * 7.5;
}

/** Calls `onPick` with the time (seconds) of a click on `u`'s plot, not of a drag's end. */
function onClick(u, onPick) {
  let downX = null;
  u.over.addEventListener("mousedown", (e) => {
    downX = e.clientX;
  });
  u.over.addEventListener("click", (e) => {
    if (downX === null || Math.abs(e.clientX - downX) > 2) return;
    onPick(u.posToVal(e.offsetX, "x"));
  });
}

let uPlotLoaded = null;

/**
 * The chart library's class: uPlot's minified build (vendor/uplot), a
 * classic script that defines the global `uPlot`, run on first use
 * rather than with the console's modules (the host page's HTML preloads
 * it): the host page's requests go out first, and the other pages never
 * fetch it. A failed load is tried again on the next drawing.
 */
function uPlotClass() {
  if (!uPlotLoaded) {
    uPlotLoaded = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = new URL("./vendor/uplot/uPlot.iife.min.js", import.meta.url).href;
      script.addEventListener("load", () => (typeof window.uPlot === "function" ? resolve(window.uPlot) : reject(new Error("the chart library defined no uPlot"))));
      script.addEventListener("error", () => reject(new api.ApiError("the chart library could not be loaded", { unreachable: true })));
      document.head.append(script);
    });
    uPlotLoaded.catch(() => {
      uPlotLoaded = null;
    });
  }
  return uPlotLoaded;
}

/** The axes' colours of the page's theme (light or dark), read once per drawing. */
function axisStyle() {
  const grid = css("--grid");
  return { stroke: css("--muted"), grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
}

/** Points (values not null) in uPlot's `data`, the time column left out. */
function countPoints(data) {
  let points = 0;
  for (let c = 1; c < data.length; c += 1) {
    for (let i = 0; i < data[c].length; i += 1) if (data[c][i] !== null) points += 1;
  }
  return points;
}

/**
 * A chart in `box`, `width` pixels wide, of `data` over [`start`, `end`]
 * (seconds), drawn by `uPlot` (the library's class).
 */
function plot(uPlot, box, chart, { data, labels }, { width, start, end, axis }, onZoom, onPick) {
  const spanS = end - start;
  const format = FORMAT[chart.unit];
  const options = {
    width,
    height: CHART_HEIGHT,
    cursor: { sync: { key: "host-charts" }, drag: { x: true, y: false, setScale: false } },
    // The whole range asked for, though its last point may fall short of
    // its end (the grid steps from its start).
    scales: { x: { time: true, range: () => [start, end] }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.05 : 1] } },
    // Room between time labels for "hh:mm:ss", the widest.
    axes: [{ ...axis, space: 80, values: axisTimes(spanS) }, { ...axis, size: labelWidth, values: (u, splits) => splits.map(format) }],
    series: [
      { value: (u, v) => (v == null ? fmt.NONE : fmt.dateTime(v * 1000)) },
      ...labels.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        value: (u, v) => (v == null ? fmt.NONE : format(v)),
      })),
    ],
    hooks: {
      setSelect: [
        (u) => {
          if (u.select.width < 3) return;
          const from = u.posToVal(u.select.left, "x");
          const to = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          onZoom(from, to);
        },
      ],
    },
  };
  const u = new uPlot(options, data, box);
  onClick(u, onPick);
  // For tests and debugging: the chart object behind the canvas.
  box.uplot = u;
  return u;
}

/** The page's fixed parts: heading, notice, range controls, a box per chart. */
function skeleton(main, host) {
  const parts = {
    status: el("p", { class: "counts", id: "host-status", "aria-live": "polite" }, "Loading…"),
    notice: el("p", { class: "notice", id: "host-notice", role: "alert", hidden: "" }),
    connectionNotice: el("p", { class: "notice", id: "host-connection-notice", role: "alert", hidden: "" }),
    presets: el(
      "div",
      { class: "presets", role: "group", "aria-label": "Time range" },
      ...Object.keys(PRESETS).map((name) =>
        el("button", { type: "button", "data-range": name, "aria-pressed": "false", text: name.replace(/(\d+)/, "$1 ") }),
      ),
    ),
    from: el("input", { type: "datetime-local", id: "range-from", step: "1", required: "" }),
    to: el("input", { type: "datetime-local", id: "range-to", step: "1", required: "" }),
    shown: el("p", { class: "help", id: "range-shown" }),
    boxes: new Map(),
  };
  parts.custom = el(
    "form",
    { class: "custom-range", id: "custom-range" },
    el("label", { for: "range-from", text: "From" }),
    parts.from,
    el("label", { for: "range-to", text: "to" }),
    parts.to,
    el("button", { type: "submit", text: "Show" }),
  );
  parts.alerts = el("ul", { class: "alert-list", id: "host-alerts" });
  parts.facts = el("div", { id: "host-facts" }, "Loading…");
  parts.history = el("div", { id: "host-history" }, "Loading…");
  parts.processesAt = el("input", { type: "datetime-local", id: "processes-time", step: "1", required: "" });
  parts.processesForm = el(
    "form",
    { class: "custom-range", id: "processes-form" },
    el("label", { for: "processes-time", text: "At" }),
    parts.processesAt,
    el("button", { type: "submit", text: "Show processes" }),
  );
  parts.processes = el("div", { id: "processes", "aria-live": "polite" }, el("p", { class: "none", text: "Click a moment on any chart, or pick a time, to see the top processes then." }));
  parts.ttf = el("ul", { class: "alert-list", id: "time-to-full", "aria-label": "Space and predicted time to full per mount" });
  parts.grid = el("div", { class: "charts" });
  for (const chart of charts(host)) {
    const box = el("div", { class: "chart-box", id: `chart-${chart.id}`, "data-chart": chart.id });
    const title = el("h2", { id: `title-${chart.id}`, text: chart.title });
    const section = el("section", { class: "chart", "aria-labelledby": title.id }, title, box);
    if (chart.id === "space") section.append(parts.ttf);
    parts.grid.append(section);
    parts.boxes.set(chart.id, box);
  }
  const panel = (id, title, ...content) => el("section", { class: "panel", id: `${id}-panel`, "aria-labelledby": `${id}-title` }, el("h2", { id: `${id}-title`, tabindex: "-1", text: title }), ...content);
  main.replaceChildren(
    el("p", { class: "crumbs" }, el("a", { href: "/", text: "Fleet" }), " / ", host),
    el("div", { class: "page-head" }, el("h1", { id: "host-name", text: host }), parts.status),
    parts.notice,
    parts.connectionNotice,
    el("div", { class: "panels" }, panel("facts", "Facts", parts.facts), panel("alerts", "Alerts", parts.alerts)),
    el("div", { class: "tools range-tools" }, parts.presets, parts.custom, parts.shown),
    parts.grid,
    panel("processes", "Top processes", parts.processesForm, parts.processes),
    panel("history", "Alert history", parts.history),
  );
  return parts;
}

/** Host ids' alphabet (crates/pki): a name outside it names no host. */
const HOST_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** The pending and firing alerts of `host`, asked of the API by its label. */
function hostAlerts(host) {
  return HOST_ID.test(host) ? api.alerts([`host="${host}"`]) : Promise.resolve([]);
}

/** Whether `host` has ever sent data: a sample now, or in the last year. */
async function known(host, seen, nowS) {
  if (seen.length > 0) return true;
  const match = `host_uptime_seconds{host=${literal(host)}}`;
  return (await api.labelValues("host", match, nowS - 365 * 86400, nowS)).length > 0;
}

class HostPage {
  constructor(main, connection, host) {
    Object.assign(this, { main, host, plots: new Map(), generation: 0, timer: 0, range: null, width: 0 });
    this.parts = skeleton(main, host);
    this.connection = new Connection(connection, this.parts.connectionNotice, { what: "the charts", refreshMs: REFRESH_MS });
  }

  /** Whether the page reads its data again by itself: a preset range, the tab seen. */
  refreshing() {
    return Boolean(this.range && this.range.preset && !this.range.problem) && !document.hidden;
  }

  /** Shows the range `search` names, as a new history entry. */
  go(search) {
    history.pushState(null, "", `${location.pathname}${search}`);
    this.draw();
  }

  /** The range the address names, shown in the controls. */
  showRange(nowS) {
    const { notice, presets, from, to } = this.parts;
    const range = parseRange(location.search, nowS);
    notice.hidden = !range.problem;
    notice.textContent = range.problem || "";
    for (const b of presets.children) b.setAttribute("aria-pressed", String(b.dataset.range === range.preset));
    from.value = localInput(range.start);
    to.value = localInput(range.end);
    return range;
  }

  /** The step (and rate window) of `range` for charts `width` pixels wide, shown with the range. */
  showStep(range, width) {
    const points = Math.min(MAX_POINTS, Math.max(MIN_POINTS, Math.floor(width / PX_PER_POINT)));
    range.step = Math.max(MIN_STEP_S, Math.ceil((range.end - range.start) / points));
    // A rate needs two samples in its window, whatever the agent's interval.
    range.window = Math.max(MIN_RATE_WINDOW_S, 4 * range.step);
    this.parts.shown.textContent =
      `${fmt.dateTime(range.start * 1000)} to ${fmt.dateTime(range.end * 1000)}, one point per ${fmt.duration(range.step)}; ` +
      `times in ${fmt.utcOffset(new Date())}; drag across a chart to zoom.`;
  }

  /** The charts' width in pixels: all of them share the grid's column width. */
  chartWidth() {
    const box = this.parts.boxes.values().next().value;
    return Math.max(MIN_CHART_WIDTH, box.clientWidth);
  }

  /**
   * Reads and draws everything for the address' range; `refresh` when
   * only time moved on (the page stays marked loaded meanwhile). Every
   * request is sent at once; once all are in, every chart and panel is
   * drawn in one task, so the page is laid out and painted once rather
   * than after each answer. A failed request leaves its part as it was;
   * the others are drawn and the failure shown.
   */
  async draw({ refresh = false } = {}) {
    clearTimeout(this.timer);
    const mine = (this.generation += 1);
    const nowS = Date.now() / 1000;
    const range = this.showRange(nowS);
    this.range = range;
    if (!refresh) this.main.dataset.loaded = "false";
    const host = literal(this.host);
    // A newer range asked for meanwhile: its drawing wins.
    const current = () => mine === this.generation;
    // The panels' requests first: they need no layout; the charts' step
    // needs their width, which the first read of it lays the page out for.
    const seen = api.instant(`timestamp(host_uptime_seconds{host=${host}})`, nowS);
    const ever = seen.then((result) => known(this.host, result, nowS));
    // Each part: its data, and how it is drawn.
    const parts = [
      [Promise.all([hostAlerts(this.host), api.silences(), api.session()]), ([alerts, silences, session]) => this.drawAlerts(alerts, silences, session)],
      [info.facts(this.host), (facts) => this.parts.facts.replaceChildren(...facts)],
      [info.history(this.host), (rows) => this.parts.history.replaceChildren(...rows)],
      [info.timeToFull(`host=${host}`, range), (ttf) => this.parts.ttf.replaceChildren(...ttf)],
      [
        Promise.all([seen, ever]),
        ([result, e]) => {
          this.parts.status.textContent =
            result.length > 0 ? `last sample ${fmt.ago(Number(result[0].value[1]) * 1000)}` : e ? "no sample in the last 5 min" : "";
        },
      ],
    ];
    this.width = this.chartWidth();
    this.showStep(range, this.width);
    // Read while the page's layout and style are fresh, before any drawing.
    const style = { width: this.width, start: range.start, end: range.end, axis: axisStyle() };
    const list = charts(this.host, range.window);
    const asked = new Map();
    const read = (expr) => {
      if (!asked.has(expr)) asked.set(expr, api.range(expr, range.start, range.end, range.step));
      return asked.get(expr);
    };
    for (const chart of list) {
      const data = chartData(chart, range, range.step, read);
      parts.push([Promise.all([data, ever, uPlotClass()]), ([d, e, uPlot]) => this.drawChart(chart, d, e, { ...style, uPlot })]);
    }
    const settled = await Promise.allSettled(parts.map(([promise]) => promise));
    if (!current()) return;
    let failure = null;
    settled.forEach((outcome, i) => {
      if (outcome.status === "fulfilled") parts[i][1](outcome.value);
      else failure = failure || outcome.reason;
    });
    if (failure && !(failure instanceof api.ApiError)) throw failure;
    if (failure) {
      this.connection.failed(failure);
    } else {
      if (!this.parts.processesAt.value) this.parts.processesAt.value = localInput(range.end);
      this.main.dataset.loaded = "true";
      this.connection.ok();
    }
    const refreshing = this.refreshing();
    this.connection.show(refreshing);
    // For tests and debugging: whether the page refreshes itself.
    this.main.dataset.refreshing = String(refreshing);
    if (refreshing) this.timer = setTimeout(() => this.draw({ refresh: true }), REFRESH_MS);
  }

  /**
   * The host's pending and firing alerts, firing first, then by
   * severity, with the silences muting them (`silences`); operators get a
   * link to each silence on the alerts page, where they can expire it.
   */
  drawAlerts(active, silences, session) {
    const rank = (a) => [a.state === "firing" ? 0 : 1, SEVERITIES.indexOf(a.labels.severity) + 1 || SEVERITIES.length + 1];
    const alerts = [...active].sort((a, b) => rank(a)[0] - rank(b)[0] || rank(a)[1] - rank(b)[1]);
    const known = byId(silences);
    const expire =
      session.role === "operator"
        ? (s) => el("a", { class: "expire-silence", href: `/alerts#silence-${encodeURIComponent(s.id)}`, text: "expire it on the Alerts page" })
        : null;
    const items = alerts.map((a) => {
      const since = Date.parse(a.activeAt);
      const silenced = (a.silencedBy || []).length > 0;
      return el(
        "li",
        { class: `alert alert-${a.state}${silenced ? " alert-silenced" : ""}`, "data-alertname": a.labels.alertname || "", "data-silenced": String(silenced) },
        el("span", { class: `alerts severity-${a.labels.severity || "other"}`, text: stateText(a) }),
        " ",
        el("strong", { text: a.labels.alertname || "" }),
        el("span", { class: "detail", text: a.annotations.summary || "" }),
        el("span", { class: "detail", title: fmt.dateTime(since), text: `since ${fmt.dateTime(since)} (${fmt.ago(since)})` }),
        cause(a.annotations) || "",
        silencedBy(a, known, expire),
      );
    });
    this.parts.alerts.replaceChildren(...(items.length > 0 ? items : [el("li", { class: "none", text: "No alerts pending or firing." })]));
  }

  /** One chart, in place of its earlier drawing; `ever`: whether the host has ever sent data. */
  drawChart(chart, data, ever, style) {
    const box = this.parts.boxes.get(chart.id);
    const old = this.plots.get(chart.id);
    if (old) old.destroy();
    this.plots.delete(chart.id);
    box.replaceChildren();
    delete box.uplot;
    const points = countPoints(data.data);
    box.dataset.points = String(points);
    if (!ever) {
      box.append(el("p", { class: "empty", text: `No host named “${this.host}” has sent data in the last year.` }));
    } else if (points === 0) {
      box.append(el("p", { class: "empty", text: "No data for this host in this range." }));
    } else {
      const zoom = (a, b) => this.go(`?from=${Math.floor(a)}&to=${Math.ceil(b)}`);
      const pick = (t) => this.showProcesses(t, true);
      this.plots.set(chart.id, plot(style.uPlot, box, chart, data, style, zoom, pick));
    }
  }

  /**
   * The top processes of the snapshot at or before `timeS`; after a click
   * on a chart, the panel is scrolled to and its heading focused.
   */
  async showProcesses(timeS, clicked = false) {
    const mine = (this.processesAsked = (this.processesAsked || 0) + 1);
    this.parts.processesAt.value = localInput(Math.round(timeS));
    this.parts.processes.dataset.loaded = "false";
    let content;
    try {
      content = await info.processes(this.host, timeS);
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      content = [el("p", { class: "notice", text: `Could not read the processes: ${e.message}.` })];
    }
    // A later click won meanwhile.
    if (mine !== this.processesAsked) return;
    this.parts.processes.replaceChildren(...content);
    this.parts.processes.dataset.loaded = "true";
    if (clicked) {
      const title = document.getElementById("processes-title");
      title.scrollIntoView({ block: "start" });
      title.focus({ preventScroll: true });
    }
  }

  /** The range typed into the custom fields. */
  onCustom(event) {
    event.preventDefault();
    const time = (input) => Math.floor(new Date(input.value).getTime() / 1000);
    this.go(`?from=${time(this.parts.from)}&to=${time(this.parts.to)}`);
  }
}

/** The host page for `host` in `main`; `connection` is the header's status line. */
export function mount(main, connection, host) {
  document.title = `${host} · hostwatch`;
  const page = new HostPage(main, connection, host);
  page.parts.presets.addEventListener("click", (event) => {
    const name = event.target.closest("button")?.dataset.range;
    if (name) page.go(`?range=${name}`);
  });
  page.parts.custom.addEventListener("submit", (event) => page.onCustom(event));
  page.parts.processesForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const t = new Date(page.parts.processesAt.value).getTime() / 1000;
    if (Number.isFinite(t)) page.showProcesses(t);
  });
  window.addEventListener("popstate", () => page.draw());
  // Nobody looking, nothing asked of the collector; back in view, fresh data at once.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(page.timer);
    else if (page.range && page.range.preset) page.draw({ refresh: true });
  });
  // "Updated at", "stale" and "unreachable since" follow the clock.
  setInterval(() => page.connection.show(page.refreshing()), 1000);
  // Charts follow the grid's width; a change of its height alone (charts
  // drawn, panels filled) redraws nothing.
  new ResizeObserver(() => {
    const width = page.chartWidth();
    if (width === page.width) return;
    page.width = width;
    for (const u of page.plots.values()) u.setSize({ width, height: CHART_HEIGHT });
  }).observe(page.parts.grid);
  page.draw();
}
