// The fleet page: every host, worst first, with its figures, refreshed
// from the collector at most every REFRESH_MS while the page is seen.
//
// Built for fleets of tens of thousands of hosts: the host list and last
// seen times come from the collector's host registry (one compact
// request, no series read), and the only query over every host is the
// CPU that orders them. The table renders only the rows in view (a
// window over the sorted, filtered list, rows of one height), and the
// figures only rows show (memory, file systems, load, the sparkline) are
// asked for those rows' hosts alone, as they come into view.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";
import { Connection } from "./connection.js";

const REFRESH_MS = 10_000;
/** Hosts listed: those the registry saw within this window. */
const HOSTS_WINDOW_S = 7 * 86_400;
const SPARK_WINDOW_S = 3600;
const SPARK_STEP_S = 60;
/** PromQL's lookback: an instant query sees samples at most this old. */
const LOOKBACK_S = 300;
/** Rows rendered beyond each edge of the view, so that a short scroll shows rows at once. */
const OVERSCAN_ROWS = 8;
/** A row's pitch until one is measured (px): console.css fixes rows' height. */
const ROW_GUESS_PX = 57;
/** Quiet time after scrolling before the figures of the rows come into view are asked for. */
const DETAILS_DEBOUNCE_MS = 150;

/** The one query over every host: it orders the fleet (busiest first) and says which send data. */
const CPU = 'host_cpu_utilization_ratio{cpu="total"}';

/** The queries of the figures rows show, for the hosts `hosts` (a PromQL regex literal) matches. */
function detailQueries(hosts) {
  const of = (metric) => `${metric}{host=~${hosts}}`;
  const [size, free, avail] = ["size", "free", "available"].map((k) => of(`host_filesystem_${k}_bytes`));
  return {
    memUsed: of("host_memory_used_bytes"),
    memTotal: of("host_memory_total_bytes"),
    // Used share of a file system as df counts it, used / (used + available)
    // with used = size - free, written with each operand once (an empty
    // file system: available / 0 is +Inf, the share 0).
    fs: `1 / (1 + ${avail} / (${size} - ${free}))`,
    load1: of("host_load1"),
    cores: of("host_cpu_count"),
    spark: `host_cpu_utilization_ratio{cpu="total",host=~${hosts}}`,
  };
}

/** Severities from worst; others rank after them. */
const SEVERITIES = ["critical", "warning", "info"];

function severityRank(severity) {
  const i = SEVERITIES.indexOf(severity);
  return i < 0 ? SEVERITIES.length : i;
}

const STATUS = {
  down: { symbol: "✕", text: "Down", help: "the collector stored nothing of it within host_down_after, and its agent did not stop cleanly" },
  up: { symbol: "●", text: "Up", help: "sending data" },
  silent: { symbol: "◌", text: "No recent data", help: `no sample in the last ${LOOKBACK_S / 60} min and not down (such as a planned stop)` },
  revoked: { symbol: "⊘", text: "Revoked", help: "refused by the collector (hosts revoke); not paged as down" },
};

/**
 * A host's status from the collector's host registry (`registered`, its
 * compact record, or undefined for a host only its samples name) and
 * whether it has a CPU sample within the lookback: down when the
 * registry says no batch of it was stored within `host_down_after` and
 * its agent did not say goodbye (what host-down rules page on), up with
 * a recent sample, else without recent data. A revoked host is only
 * revoked: the collector refuses it, and host-down rules do not page it.
 */
export function hostStatus(registered, hasSample) {
  if (registered && registered.revoked) return "revoked";
  if (registered && !registered.up && !registered.cleanShutdown) return "down";
  return hasSample ? "up" : "silent";
}

/**
 * Every host, worst first, as of `nowS`: the registry's hosts seen within
 * HOSTS_WINDOW_S and any other with a CPU sample, with their CPU and alerts.
 */
async function load(nowS) {
  const [registry, cpu, active] = await Promise.all([
    api.get("/api/v1/hostwatch/hosts", { compact: "true" }),
    api.instant(CPU, nowS),
    api.alerts(),
  ]);
  const cpuByHost = api.byLabel(cpu);
  const registered = new Map();
  for (const h of registry.hosts) {
    const ms = Date.parse(h.lastSeen);
    if (ms >= (nowS - HOSTS_WINDOW_S) * 1000) registered.set(h.host, Object.assign(h, { seenMs: ms }));
  }
  const alerts = alertsByHost(active);
  const list = [...new Set([...registered.keys(), ...cpuByHost.keys()])].map((id) => {
    const a = alerts.byHost.get(id) || { firing: [], pending: [] };
    const entry = registered.get(id);
    return {
      id,
      seenMs: entry ? entry.seenMs : NaN,
      // A recent sample as an instant query sees them, within the lookback.
      status: hostStatus(entry, cpuByHost.has(id)),
      cpu: cpuByHost.get(id),
      firing: a.firing,
      pending: a.pending,
    };
  });
  list.sort(worstFirst);
  return { hosts: list, unattached: alerts.unattached };
}

/** The figures of the rows of hosts `ids` as of `nowS`: Map(host -> figures). */
async function loadDetails(ids, nowS) {
  const queries = detailQueries(api.anyOf(ids));
  const q = (expr) => api.instant(expr, nowS);
  const [memUsed, memTotal, fs, load1, cores, spark] = await Promise.all([
    q(queries.memUsed),
    q(queries.memTotal),
    q(queries.fs),
    q(queries.load1),
    q(queries.cores),
    api.range(queries.spark, nowS - SPARK_WINDOW_S, nowS, SPARK_STEP_S),
  ]);
  const figures = {
    memUsed: api.byLabel(memUsed),
    memTotal: api.byLabel(memTotal),
    load1: api.byLabel(load1),
    cores: api.byLabel(cores),
  };
  const fullest = new Map();
  for (const s of fs) {
    const ratio = Number(s.value[1]);
    const best = fullest.get(s.metric.host);
    if (Number.isFinite(ratio) && (!best || ratio > best.ratio)) {
      fullest.set(s.metric.host, { ratio, mountpoint: s.metric.mountpoint });
    }
  }
  const sparks = new Map(spark.map((s) => [s.metric.host, s.values.map(([t, v]) => [t, Number(v)])]));
  return new Map(
    ids.map((id) => [
      id,
      {
        atS: nowS,
        memUsed: figures.memUsed.get(id),
        memTotal: figures.memTotal.get(id),
        load1: figures.load1.get(id),
        cores: figures.cores.get(id),
        fs: fullest.get(id),
        spark: sparks.get(id) || [],
      },
    ]),
  );
}

/** Pending and firing alerts by their `host` label, and how many firing ones have none. */
function alertsByHost(alerts) {
  const byHost = new Map();
  let unattached = 0;
  for (const alert of alerts) {
    const host = alert.labels.host;
    if (!host) {
      if (alert.state === "firing") unattached += 1;
      continue;
    }
    if (!byHost.has(host)) byHost.set(host, { firing: [], pending: [] });
    const entry = byHost.get(host);
    (alert.state === "firing" ? entry.firing : entry.pending).push(alert);
  }
  return { byHost, unattached };
}

function worstSeverity(alerts) {
  return alerts.reduce((worst, a) => Math.min(worst, severityRank(a.labels.severity)), SEVERITIES.length + 1);
}

/** Down first, then firing alerts by severity and count, then busiest; hosts without recent data last. */
function worstFirst(a, b) {
  const rank = (h) => {
    if (h.status === "down") return [0, 0, 0];
    if (h.firing.length > 0) return [1, worstSeverity(h.firing), -h.firing.length];
    return [h.status === "up" ? 2 : 3, 0, 0];
  };
  const [ra, rb] = [rank(a), rank(b)];
  for (let i = 0; i < ra.length; i += 1) if (ra[i] !== rb[i]) return ra[i] - rb[i];
  const busy = (h) => (Number.isFinite(h.cpu) ? h.cpu : -1);
  return busy(b) - busy(a) || a.id.localeCompare(b.id);
}

/** The labels a filter's `name=value` terms match: the host's, its status, and its alerts'. */
function hostLabels(h) {
  const labels = [["host", h.id], ["status", h.status], ["status", STATUS[h.status].text]];
  for (const alert of [...h.firing, ...h.pending]) {
    for (const [k, v] of Object.entries(alert.labels)) labels.push([k, v]);
    labels.push(["alert", alert.labels.alertname || ""], ["state", alert.state]);
  }
  return labels;
}

/** Whether host `h` matches every term: `name=value` against its labels, other words against its name. */
function matches(h, filter) {
  const terms = filter.toLowerCase().split(/\s+/).filter(Boolean);
  return terms.every((term) => {
    const eq = term.indexOf("=");
    if (eq <= 0) return h.id.toLowerCase().includes(term);
    const [name, value] = [term.slice(0, eq), term.slice(eq + 1)];
    return hostLabels(h).some(([k, v]) => k.toLowerCase() === name && String(v).toLowerCase().includes(value));
  });
}

const COLUMNS = [
  ["host", "Host"],
  ["status", "Status"],
  ["seen", "Last seen"],
  ["cpu", "CPU"],
  ["spark", "CPU, last hour"],
  ["memory", "Memory"],
  ["fs", "Fullest file system"],
  ["load", "Load per core"],
  ["alerts", "Alerts"],
];

/**
 * What drawing a sparkline needs to know of its canvas: its size and
 * colours. Read for every row before any is drawn, because setting a
 * canvas's size invalidates the layout, and a read after each write
 * would lay the whole table out again once per row.
 */
function measureSpark(canvas) {
  const style = getComputedStyle(canvas);
  return {
    canvas,
    w: canvas.clientWidth || 120,
    h: canvas.clientHeight || 28,
    grid: style.getPropertyValue("--grid").trim() || "#ccc",
    line: style.getPropertyValue("color").trim(),
  };
}

function drawSpark({ canvas, w, h, grid, line }, points, nowS) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, h - 0.5);
  ctx.lineTo(w, h - 0.5);
  ctx.stroke();
  const values = points.filter(([, v]) => Number.isFinite(v));
  if (values.length === 0) return;
  const x = (t) => ((t - (nowS - SPARK_WINDOW_S)) / SPARK_WINDOW_S) * (w - 2) + 1;
  const y = (v) => h - 1 - Math.min(1, Math.max(0, v)) * (h - 2);
  ctx.strokeStyle = line;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
  if (values.length === 1) ctx.lineTo(x(values[0][0]) + 2, y(values[0][1]));
  ctx.stroke();
}

function sparkLabel(points) {
  const values = points.map(([, v]) => v).filter(Number.isFinite);
  if (values.length === 0) return "CPU over the last hour: no data";
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  return `CPU over the last hour: ${values.length} points, from ${fmt.percent(lo)} to ${fmt.percent(hi)}`;
}

/** Shown in a figure's place until the row's figures are in. */
function pending() {
  return [el("span", { class: "none", text: "…", title: "loading" })];
}

/** The cells of host `h`'s row, by column; `d` its figures (undefined until loaded). */
function cells(h, d, nowMs) {
  const status = STATUS[h.status];
  const worst = h.firing.length > 0 ? h.firing.reduce((w, a) => (severityRank(a.labels.severity) < severityRank(w.labels.severity) ? a : w)) : null;
  const names = [...new Set(h.firing.map((a) => a.labels.alertname))].join(", ");
  const quiet = h.pending.length > 0 ? `none firing, ${h.pending.length} pending` : "none";
  const out = {
    host: [el("a", { class: "host-name", href: `/hosts/${encodeURIComponent(h.id)}`, text: h.id, title: h.id })],
    status: [el("span", { class: `status status-${h.status}`, title: status.help }, el("span", { "aria-hidden": "true", text: `${status.symbol} ` }), status.text)],
    seen: [el("span", { class: "ago", "data-ms": String(h.seenMs), title: fmt.dateTime(h.seenMs), text: fmt.ago(h.seenMs, nowMs) })],
    cpu: [el("span", { class: "figure", text: fmt.percent(h.cpu) }), meter(h.cpu)],
    alerts: h.firing.length > 0
      ? [
          el("span", { class: `alerts severity-${worst.labels.severity || "other"}` }, `${h.firing.length} firing · ${worst.labels.severity || "no severity"}`),
          el("span", { class: "detail", text: names, title: names }),
        ]
      : [el("span", { class: "none", text: quiet, title: quiet })],
  };
  if (!d) {
    const spark = el("canvas", { class: "spark", role: "img", "aria-label": "CPU over the last hour: loading", "data-points": "0" });
    return { ...out, spark: [spark], memory: pending(), fs: pending(), load: pending() };
  }
  const memRatio = d.memUsed / d.memTotal;
  const perCore = d.load1 / d.cores;
  const loadText = Number.isFinite(perCore) ? `load ${fmt.number(d.load1)} on ${d.cores} CPU${d.cores === 1 ? "" : "s"}` : "";
  return {
    ...out,
    spark: [el("canvas", { class: "spark", role: "img", "aria-label": sparkLabel(d.spark), "data-points": String(d.spark.length) })],
    memory: [
      el("span", { class: "figure", text: fmt.percent(memRatio) }),
      meter(memRatio),
      el("span", { class: "detail", text: Number.isFinite(memRatio) ? `${fmt.bytes(d.memUsed)} of ${fmt.bytes(d.memTotal)}` : "" }),
    ],
    fs: d.fs
      ? [el("span", { class: "figure", text: fmt.percent(d.fs.ratio) }), meter(d.fs.ratio), el("span", { class: "detail mount", text: d.fs.mountpoint, title: d.fs.mountpoint })]
      : [el("span", { class: "none", text: fmt.NONE, title: "no file system reported" })],
    load: [
      el("span", { class: "figure", text: fmt.number(perCore) }),
      el("span", { class: "detail", text: loadText, title: loadText }),
    ],
  };
}

/** A bar for a ratio, its level as text for assistive technology. */
function meter(ratio) {
  const value = Number.isFinite(ratio) ? Math.min(1, Math.max(0, ratio)) : 0;
  const level = value >= 0.9 ? "high" : value >= 0.75 ? "raised" : "normal";
  return el("meter", { min: "0", max: "1", low: "0.75", high: "0.9", optimum: "0", value: String(value), class: `level-${level}`, "aria-hidden": "true" });
}

/** The page's fixed parts: heading and counts, filter, notice, table, empty state. */
function skeleton(main) {
  const filter = el("input", {
    id: "filter",
    type: "search",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "name, or label=value",
    "aria-describedby": "filter-help",
    "aria-controls": "hosts",
  });
  filter.value = new URLSearchParams(location.search).get("q") || "";
  const parts = {
    filter,
    counts: el("p", { class: "counts", id: "counts", "aria-live": "polite" }, "Loading…"),
    matched: el("p", { class: "matched", id: "fleet-matched", "aria-live": "polite", hidden: "" }),
    notice: el("p", { class: "notice", id: "fleet-notice", role: "alert", hidden: "" }),
    tbody: el("tbody"),
    empty: el("p", { class: "empty", id: "fleet-empty", hidden: "" }),
  };
  const head = el("tr", { "aria-rowindex": "1" }, ...COLUMNS.map(([key, title]) => el("th", { scope: "col", class: `col-${key}`, text: title })));
  const caption = "Hosts, worst first: down, then by their firing alerts' severity, then busiest. Rows are drawn as they scroll into view.";
  parts.table = el("table", { class: "hosts", id: "hosts", "aria-rowcount": "1" }, el("caption", { text: caption }), el("thead", {}, head), parts.tbody);
  const help =
    "Words match host names; name=value matches labels such as status=down, severity=critical or alertname=cpu_saturated. " +
    "In the table, ↑ and ↓, Page Up and Page Down, Home and End move between hosts.";
  main.replaceChildren(
    el("div", { class: "page-head" }, el("h1", { text: "Fleet" }), parts.counts),
    el("div", { class: "tools" }, el("label", { for: "filter", text: "Filter" }), filter, el("p", { id: "filter-help", class: "help", text: help })),
    parts.matched,
    parts.notice,
    el("div", { class: "table-wrap" }, parts.table),
    parts.empty,
  );
  return parts;
}

/** "3 hosts: 2 up · 1 down · 1 alerting", and what else is worth a word. */
function countsText(hosts, unattached) {
  const down = hosts.filter((h) => h.status === "down").length;
  const up = hosts.filter((h) => h.status === "up").length;
  const alerting = hosts.filter((h) => h.firing.length > 0).length;
  const revoked = hosts.filter((h) => h.status === "revoked").length;
  const silent = hosts.length - up - down - revoked;
  const parts = [`${up} up`, `${down} down`, `${alerting} alerting`];
  if (silent > 0) parts.push(`${silent} without recent data`);
  if (revoked > 0) parts.push(`${revoked} revoked`);
  if (unattached > 0) parts.push(`${unattached} firing alert${unattached === 1 ? "" : "s"} not about one host`);
  return `${hosts.length} host${hosts.length === 1 ? "" : "s"}: ${parts.join(" · ")}`;
}

/** A row of `px` pixels standing for the rows not rendered. */
function spacer(px) {
  const row = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: String(COLUMNS.length) }));
  // A CSSOM property, which the Content-Security-Policy allows (a style attribute it would not).
  row.style.height = `${px}px`;
  return row;
}

function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}

/** Keys that move the focus between the table's rows. */
const MOVES = new Set(["ArrowDown", "ArrowUp", "PageDown", "PageUp", "Home", "End"]);

class FleetPage {
  constructor(main, connection) {
    this.main = main;
    this.parts = skeleton(main);
    this.connection = new Connection(connection, this.parts.notice, { what: "the fleet", refreshMs: REFRESH_MS });
    /** Rendered rows by host: those in view and near it, and the focused one. */
    this.rows = new Map();
    /** Figures of hosts whose rows were rendered, by host; read again when older than the data. */
    this.details = new Map();
    /** The hosts the filter matches, in order, and their positions by host. */
    this.shown = [];
    this.index = new Map();
    /** The distance between two rows' tops (px), measured; 0 until then. */
    this.pitch = 0;
    Object.assign(this, { loading: false, data: null, nowS: 0, timer: 0 });
    Object.assign(this, { frame: 0, detailsTimer: 0, detailsBusy: false, detailsFailedS: NaN });
  }

  /** Counts, what the filter matches, and the table's rows in view. */
  render() {
    if (!this.data) return;
    const { filter, counts, matched, table, empty } = this.parts;
    const { hosts, unattached } = this.data;
    const text = countsText(hosts, unattached);
    if (counts.textContent !== text) counts.textContent = text;
    const term = filter.value.trim();
    this.shown = term ? hosts.filter((h) => matches(h, term)) : hosts;
    this.index = new Map(this.shown.map((h, i) => [h.id, i]));
    table.setAttribute("aria-rowcount", String(this.shown.length + 1));
    table.hidden = this.shown.length === 0;
    empty.hidden = this.shown.length > 0;
    matched.hidden = !term || this.shown.length === 0;
    const matchedText = `${this.shown.length} of ${hosts.length} host${hosts.length === 1 ? "" : "s"} match “${term}”.`;
    if (term && matched.textContent !== matchedText) matched.textContent = matchedText;
    if (hosts.length === 0) {
      empty.textContent =
        "No host has sent data in the last 7 days. Start an agent with a certificate from this collector's CA; it appears here within seconds.";
    } else if (this.shown.length === 0) {
      empty.textContent = `No host matches “${term}”.`;
    }
    this.renderWindow();
  }

  /**
   * The rows in view and OVERSCAN_ROWS beyond, and the row holding the
   * focus wherever it is; spacer rows stand for the others, so the
   * table is as tall as all its rows and scrolls as such.
   */
  renderWindow() {
    const { tbody } = this.parts;
    const pitch = this.pitch || ROW_GUESS_PX;
    const n = this.shown.length;
    const top = tbody.getBoundingClientRect().top;
    const first = clamp(Math.floor(-top / pitch) - OVERSCAN_ROWS, 0, n);
    const last = clamp(Math.ceil((window.innerHeight - top) / pitch) + OVERSCAN_ROWS, first, n);
    const indices = [];
    for (let i = first; i < last; i += 1) indices.push(i);
    const active = document.activeElement;
    const focusedRow = active && active.closest ? active.closest("tr[data-host]") : null;
    const focused = focusedRow && tbody.contains(focusedRow) ? this.index.get(focusedRow.dataset.host) : undefined;
    if (focused !== undefined && (focused < first || focused >= last)) {
      indices.push(focused);
      indices.sort((a, b) => a - b);
    }
    const wanted = new Set(indices.map((i) => this.shown[i].id));
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    for (const old of tbody.querySelectorAll("tr.spacer")) old.remove();
    const nowMs = Date.now();
    const nodes = [];
    const changed = [];
    let next = 0;
    for (const i of indices) {
      if (i > next) nodes.push(spacer((i - next) * pitch));
      nodes.push(this.renderRow(this.shown[i], i, nowMs, changed));
      next = i + 1;
    }
    if (n > next) nodes.push(spacer((n - next) * pitch));
    // Rows kept stay in place (moving the focused one would blur it);
    // the others go in around them, in order.
    let cursor = tbody.firstChild;
    for (const node of nodes) {
      if (node === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(node, cursor);
    }
    while (cursor) {
      const after = cursor.nextSibling;
      cursor.remove();
      cursor = after;
    }
    if (active && active.isConnected && document.activeElement !== active) active.focus({ preventScroll: true });
    const sparks = changed.map(([row]) => measureSpark(row.querySelector("canvas.spark")));
    changed.forEach(([, d], i) => d && drawSpark(sparks[i], d.spark, d.atS));
    if (!this.pitch && this.measurePitch() && Math.abs(this.pitch - pitch) > 1) {
      this.renderWindow();
      return;
    }
    this.wantDetails();
  }

  /** Host `h`'s row at position `i`, its cells redrawn (and noted in `changed`) when its data changed. */
  renderRow(h, i, nowMs, changed) {
    let row = this.rows.get(h.id);
    if (!row) {
      row = el("tr", { "data-host": h.id });
      for (const [key, title] of COLUMNS) {
        const attrs = { class: `col-${key}`, "data-label": title };
        row.append(key === "host" ? el("th", { ...attrs, scope: "row" }) : el("td", attrs));
      }
      this.rows.set(h.id, row);
    }
    row.setAttribute("aria-rowindex", String(i + 2));
    const d = this.details.get(h.id);
    if (row.host !== h || row.figures !== d) {
      row.host = h;
      row.figures = d;
      row.dataset.status = h.status;
      const content = cells(h, d, nowMs);
      // The host's link is drawn once, so that it keeps the focus.
      if (!row.children[0].firstElementChild) row.children[0].replaceChildren(...content.host);
      COLUMNS.forEach(([key], c) => c > 0 && row.children[c].replaceChildren(...content[key]));
      changed.push([row, d]);
    }
    return row;
  }

  /** The pitch of the rendered rows (px), from two neighbours or one row; whether one was measured. */
  measurePitch() {
    const rows = [...this.parts.tbody.querySelectorAll("tr[data-host]")];
    if (rows.length === 0) return false;
    const tops = rows.slice(0, 2).map((r) => r.getBoundingClientRect().top);
    const neighbours = rows.length > 1 && Number(rows[1].getAttribute("aria-rowindex")) === Number(rows[0].getAttribute("aria-rowindex")) + 1;
    this.pitch = neighbours ? tops[1] - tops[0] : rows[0].getBoundingClientRect().height;
    return this.pitch > 0;
  }

  /** Rendered hosts whose figures are missing or older than the data. */
  missingDetails() {
    return [...this.rows.keys()].filter((id) => {
      const d = this.details.get(id);
      return !d || d.atS < this.nowS;
    });
  }

  /** Asks for the figures rows lack once scrolling has paused. */
  wantDetails() {
    clearTimeout(this.detailsTimer);
    if (this.detailsBusy || this.detailsFailedS === this.nowS || this.missingDetails().length === 0) return;
    this.detailsTimer = setTimeout(() => this.fetchDetails(), DETAILS_DEBOUNCE_MS);
  }

  async fetchDetails() {
    const ids = this.missingDetails();
    if (this.detailsBusy || ids.length === 0) return;
    this.detailsBusy = true;
    try {
      for (const [id, d] of await loadDetails(ids, this.nowS)) this.details.set(id, d);
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      // Tried again with the next refresh, which reports the failure.
      this.detailsFailedS = this.nowS;
    } finally {
      this.detailsBusy = false;
    }
    this.renderWindow();
  }

  /** Refreshes the relative times between data refreshes. */
  tick() {
    const nowMs = Date.now();
    for (const span of this.parts.tbody.querySelectorAll(".ago")) span.textContent = fmt.ago(Number(span.dataset.ms), nowMs);
    this.connection.show(true);
  }

  /** The fleet, then the figures of the rows it puts in view; the page is loaded once both are drawn. */
  async refresh() {
    clearTimeout(this.timer);
    if (this.loading) return;
    this.loading = true;
    const nowS = Date.now() / 1000;
    try {
      const data = await load(nowS);
      Object.assign(this, { data, nowS });
      // Figures of hosts out of view are read again when they come back.
      for (const id of this.details.keys()) if (!this.rows.has(id)) this.details.delete(id);
      this.render();
      clearTimeout(this.detailsTimer);
      const ids = this.missingDetails();
      if (ids.length > 0 && !this.detailsBusy) {
        this.detailsBusy = true;
        try {
          for (const [id, d] of await loadDetails(ids, nowS)) this.details.set(id, d);
        } finally {
          this.detailsBusy = false;
        }
      }
      this.connection.ok();
      this.detailsFailedS = NaN;
      this.renderWindow();
      this.main.dataset.loaded = "true";
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      this.connection.failed(e);
      if (!this.data) this.parts.counts.textContent = "No data";
    } finally {
      this.loading = false;
    }
    this.connection.show(true);
    if (!document.hidden) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  onFilter() {
    const { filter } = this.parts;
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("q", filter.value);
    else url.searchParams.delete("q");
    history.replaceState(null, "", url);
    this.render();
  }

  /** Draws the rows in view at the next frame, once however many times asked. */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (this.data) this.renderWindow();
    });
  }

  /** Arrows, pages, Home and End on a row move the focus to another row's link, drawn first if need be. */
  onKey(event) {
    if (!MOVES.has(event.key) || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const row = event.target.closest("tr[data-host]");
    const from = row ? this.index.get(row.dataset.host) : undefined;
    if (from === undefined) return;
    event.preventDefault();
    const pitch = this.pitch || ROW_GUESS_PX;
    const page = Math.max(1, Math.floor(window.innerHeight / pitch) - 1);
    const last = this.shown.length - 1;
    const to = clamp({ ArrowDown: from + 1, ArrowUp: from - 1, PageDown: from + page, PageUp: from - page, Home: 0, End: last }[event.key], 0, last);
    const rowTop = this.parts.tbody.getBoundingClientRect().top + to * pitch;
    if (rowTop < 0 || rowTop + pitch > window.innerHeight) window.scrollBy(0, rowTop - (window.innerHeight - pitch) / 2);
    this.renderWindow();
    const target = this.rows.get(this.shown[to].id);
    if (target) target.querySelector("a.host-name").focus();
  }
}

/** The fleet page in `main`; `connection` is the header's status line. */
export function mount(main, connection) {
  const page = new FleetPage(main, connection);
  page.parts.filter.addEventListener("input", () => page.onFilter());
  page.parts.tbody.addEventListener("keydown", (e) => page.onKey(e));
  window.addEventListener("scroll", () => page.schedule(), { passive: true });
  window.addEventListener("resize", () => {
    page.pitch = 0;
    page.schedule();
  });
  // Nobody looking, nothing asked of the collector.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(page.timer);
    else page.refresh();
  });
  setInterval(() => page.tick(), 1000);
  page.refresh();
}
