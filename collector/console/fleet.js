// The fleet page: every host, worst first, with its figures, refreshed
// from the Prometheus API at most every REFRESH_MS while the page is seen.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";

const REFRESH_MS = 10_000;
/** Data older than this is called stale. */
const STALE_MS = 3 * REFRESH_MS;
/** Hosts listed: those with a sample in this window. */
const HOSTS_WINDOW_S = 7 * 86_400;
const SPARK_WINDOW_S = 3600;
const SPARK_STEP_S = 60;
/**
 * Hosts quiet for longer than the lookback whose last sample time is looked
 * up; beyond this many, their "last seen" stays unknown rather than the
 * lookup growing with the outage.
 */
const MAX_QUIET_LOOKUPS = 200;
/** PromQL's lookback: an instant query sees samples at most this old. */
const LOOKBACK_S = 300;

const QUERIES = {
  seen: "timestamp(host_uptime_seconds)",
  cpu: 'host_cpu_utilization_ratio{cpu="total"}',
  memUsed: "host_memory_used_bytes",
  memTotal: "host_memory_total_bytes",
  // Used share of a file system as df counts it: used / (used + available).
  fs:
    "(host_filesystem_size_bytes - host_filesystem_free_bytes)" +
    " / (host_filesystem_size_bytes - host_filesystem_free_bytes + host_filesystem_available_bytes)",
  load1: "host_load1",
  cores: "host_cpu_count",
};

/** Severities from worst; others rank after them. */
const SEVERITIES = ["critical", "warning", "info"];

function severityRank(severity) {
  const i = SEVERITIES.indexOf(severity);
  return i < 0 ? SEVERITIES.length : i;
}

const STATUS = {
  down: { symbol: "✕", text: "Down", help: "a host-down alert is firing" },
  up: { symbol: "●", text: "Up", help: "sending data" },
  silent: { symbol: "◌", text: "No recent data", help: `no sample in the last ${LOOKBACK_S / 60} min and no host-down alert (a planned stop)` },
};

/** Reads everything the page shows, as of `nowS`. */
async function load(nowS) {
  const q = (expr) => api.instant(expr, nowS);
  const [hosts, seen, cpu, memUsed, memTotal, fs, load1, cores, spark, rules] = await Promise.all([
    api.labelValues("host", "host_uptime_seconds", nowS - HOSTS_WINDOW_S, nowS),
    q(QUERIES.seen),
    q(QUERIES.cpu),
    q(QUERIES.memUsed),
    q(QUERIES.memTotal),
    q(QUERIES.fs),
    q(QUERIES.load1),
    q(QUERIES.cores),
    api.range(QUERIES.cpu, nowS - SPARK_WINDOW_S, nowS, SPARK_STEP_S),
    api.rules(),
  ]);
  const seenS = api.byLabel(seen);
  const recent = new Set(seenS.keys());
  const missing = hosts.filter((h) => !seenS.has(h));
  if (missing.length > 0 && missing.length <= MAX_QUIET_LOOKUPS) {
    // Hosts quiet for longer than the lookback: their newest sample time,
    // found on a grid no coarser than the lookback.
    const expr =
      `max by (host) (max_over_time(timestamp(host_uptime_seconds{host=~${api.anyOf(missing)}})` +
      `[${HOSTS_WINDOW_S}s:${LOOKBACK_S}s]))`;
    for (const [host, t] of api.byLabel(await q(expr))) seenS.set(host, t);
  }
  const figures = {
    cpu: api.byLabel(cpu),
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
  const alerts = alertsByHost(rules);
  const list = hosts.map((id) => {
    const a = alerts.byHost.get(id) || { firing: [], pending: [], down: false };
    return {
      id,
      seenMs: seenS.has(id) ? seenS.get(id) * 1000 : NaN,
      status: a.down ? "down" : recent.has(id) ? "up" : "silent",
      cpu: figures.cpu.get(id),
      memUsed: figures.memUsed.get(id),
      memTotal: figures.memTotal.get(id),
      load1: figures.load1.get(id),
      cores: figures.cores.get(id),
      fs: fullest.get(id),
      spark: sparks.get(id) || [],
      firing: a.firing,
      pending: a.pending,
    };
  });
  list.sort(worstFirst);
  return { hosts: list, unattached: alerts.unattached };
}

/**
 * Pending and firing alerts by their `host` label; a host is down while
 * an alert of a host-down rule (its `query` is "host down") fires for it.
 */
function alertsByHost(rules) {
  const byHost = new Map();
  let unattached = 0;
  for (const rule of rules) {
    for (const alert of rule.alerts || []) {
      const host = alert.labels.host;
      if (!host) {
        if (alert.state === "firing") unattached += 1;
        continue;
      }
      if (!byHost.has(host)) byHost.set(host, { firing: [], pending: [], down: false });
      const entry = byHost.get(host);
      (alert.state === "firing" ? entry.firing : entry.pending).push(alert);
      if (alert.state === "firing" && rule.query === "host down") entry.down = true;
    }
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

/** Draws `points` ([seconds, ratio]) over the last hour into a small canvas. */
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

/** The cells of host `h`'s row, by column. */
function cells(h, nowMs) {
  const status = STATUS[h.status];
  const memRatio = h.memUsed / h.memTotal;
  const perCore = h.load1 / h.cores;
  const worst = h.firing.length > 0 ? h.firing.reduce((w, a) => (severityRank(a.labels.severity) < severityRank(w.labels.severity) ? a : w)) : null;
  const names = [...new Set(h.firing.map((a) => a.labels.alertname))].join(", ");
  return {
    host: [el("a", { class: "host-name", href: `/hosts/${encodeURIComponent(h.id)}`, text: h.id })],
    status: [el("span", { class: `status status-${h.status}`, title: status.help }, el("span", { "aria-hidden": "true", text: `${status.symbol} ` }), status.text)],
    seen: [el("span", { class: "ago", "data-ms": String(h.seenMs), title: fmt.dateTime(h.seenMs), text: fmt.ago(h.seenMs, nowMs) })],
    cpu: [el("span", { class: "figure", text: fmt.percent(h.cpu) }), meter(h.cpu)],
    spark: [el("canvas", { class: "spark", role: "img", "aria-label": sparkLabel(h.spark), "data-points": String(h.spark.length) })],
    memory: [
      el("span", { class: "figure", text: fmt.percent(memRatio) }),
      meter(memRatio),
      el("span", { class: "detail", text: Number.isFinite(memRatio) ? `${fmt.bytes(h.memUsed)} of ${fmt.bytes(h.memTotal)}` : "" }),
    ],
    fs: h.fs
      ? [el("span", { class: "figure", text: fmt.percent(h.fs.ratio) }), meter(h.fs.ratio), el("span", { class: "detail mount", text: h.fs.mountpoint })]
      : [el("span", { class: "none", text: fmt.NONE, title: "no file system reported" })],
    load: [
      el("span", { class: "figure", text: fmt.number(perCore) }),
      el("span", { class: "detail", text: Number.isFinite(perCore) ? `load ${fmt.number(h.load1)} on ${h.cores} CPU${h.cores === 1 ? "" : "s"}` : "" }),
    ],
    alerts: h.firing.length > 0
      ? [
          el("span", { class: `alerts severity-${worst.labels.severity || "other"}` }, `${h.firing.length} firing · ${worst.labels.severity || "no severity"}`),
          el("span", { class: "detail", text: names }),
        ]
      : [el("span", { class: "none", text: h.pending.length > 0 ? `none firing, ${h.pending.length} pending` : "none" })],
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
  });
  filter.value = new URLSearchParams(location.search).get("q") || "";
  const parts = {
    filter,
    counts: el("p", { class: "counts", id: "counts", "aria-live": "polite" }, "Loading…"),
    notice: el("p", { class: "notice", id: "fleet-notice", role: "alert", hidden: "" }),
    tbody: el("tbody"),
    empty: el("p", { class: "empty", id: "fleet-empty", hidden: "" }),
  };
  const head = el("tr", {}, ...COLUMNS.map(([key, title]) => el("th", { scope: "col", class: `col-${key}`, text: title })));
  const caption = "Hosts, worst first: down, then by their firing alerts' severity, then busiest";
  parts.table = el("table", { class: "hosts", id: "hosts" }, el("caption", { text: caption }), el("thead", {}, head), parts.tbody);
  const help = "Words match host names; name=value matches labels such as status=down, severity=critical or alertname=cpu_saturated.";
  main.replaceChildren(
    el("div", { class: "page-head" }, el("h1", { text: "Fleet" }), parts.counts),
    el("div", { class: "tools" }, el("label", { for: "filter", text: "Filter" }), filter, el("p", { id: "filter-help", class: "help", text: help })),
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
  const silent = hosts.length - up - down;
  const parts = [`${up} up`, `${down} down`, `${alerting} alerting`];
  if (silent > 0) parts.push(`${silent} without recent data`);
  if (unattached > 0) parts.push(`${unattached} firing alert${unattached === 1 ? "" : "s"} not about one host`);
  return `${hosts.length} host${hosts.length === 1 ? "" : "s"}: ${parts.join(" · ")}`;
}

class FleetPage {
  constructor(main, connection) {
    this.main = main;
    this.connection = connection;
    this.parts = skeleton(main);
    /** Table rows by host, kept across refreshes so focus and scroll stay. */
    this.rows = new Map();
    Object.assign(this, { loading: false, data: null, nowS: 0, okMs: NaN, error: null, failedSinceMs: NaN, timer: 0 });
  }

  render() {
    if (!this.data) return;
    const { filter, counts, tbody, table, empty } = this.parts;
    const { hosts, unattached } = this.data;
    counts.textContent = countsText(hosts, unattached);
    const shown = hosts.filter((h) => matches(h, filter.value));
    const nowMs = Date.now();
    for (const h of shown) this.renderRow(h, nowMs);
    const order = shown.map((h) => h.id);
    const keep = new Set(order);
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    const current = [...tbody.children].map((r) => r.dataset.host);
    if (current.join("\n") !== order.join("\n")) tbody.append(...order.map((id) => this.rows.get(id)));
    const sparks = shown.map((h) => measureSpark(this.rows.get(h.id).querySelector("canvas.spark")));
    shown.forEach((h, i) => drawSpark(sparks[i], h.spark, this.nowS));
    table.hidden = shown.length === 0;
    empty.hidden = shown.length > 0;
    if (hosts.length === 0) {
      empty.textContent =
        "No host has sent data in the last 7 days. Start an agent with a certificate from this collector's CA; it appears here within seconds.";
    } else if (shown.length === 0) {
      empty.textContent = `No host matches “${filter.value.trim()}”.`;
    }
  }

  renderRow(h, nowMs) {
    let row = this.rows.get(h.id);
    if (!row) {
      row = el("tr", { "data-host": h.id });
      for (const [key, title] of COLUMNS) {
        const attrs = { class: `col-${key}`, "data-label": title };
        row.append(key === "host" ? el("th", { ...attrs, scope: "row" }) : el("td", attrs));
      }
      this.rows.set(h.id, row);
    }
    row.dataset.status = h.status;
    const content = cells(h, nowMs);
    COLUMNS.forEach(([key], i) => row.children[i].replaceChildren(...content[key]));
  }

  /** The header's line and the page's notice: fresh, stale, or unreachable. */
  showConnection() {
    const { notice } = this.parts;
    const [kind, line, problem] = this.connectionState(Date.now());
    // Live regions: changed only when their text does, so screen readers
    // are not told the same thing every second.
    const className = kind ? `connection connection-${kind}` : "connection";
    if (this.connection.className !== className) this.connection.className = className;
    if (this.connection.textContent !== line) this.connection.textContent = line;
    notice.hidden = !problem;
    if (problem && notice.textContent !== problem) notice.textContent = problem;
  }

  /** [class suffix or "", the header's line, the notice or ""]. */
  connectionState(nowMs) {
    if (this.error) {
      const since = fmt.time(this.failedSinceMs);
      const held = Number.isFinite(this.okMs) ? `; showing data from ${fmt.time(this.okMs)}` : "";
      const problem =
        this.error.status === 401
          ? `Not authorized: ${this.error.message}. The console needs an operator or viewer client certificate.`
          : `Could not read the fleet: ${this.error.message}.`;
      return this.error.unreachable
        ? ["down", `⚠ Collector unreachable since ${since}${held}. Retrying every ${REFRESH_MS / 1000} s.`, problem]
        : ["error", `⚠ The collector refused the request since ${since}${held}.`, problem];
    }
    if (nowMs - this.okMs > STALE_MS) return ["stale", `⚠ Data is stale: last updated at ${fmt.time(this.okMs)}.`, ""];
    return ["", Number.isFinite(this.okMs) ? `Updated ${fmt.time(this.okMs)}` : "Loading…", ""];
  }

  /** Refreshes the relative times between data refreshes. */
  tick() {
    const nowMs = Date.now();
    for (const span of this.parts.tbody.querySelectorAll(".ago")) span.textContent = fmt.ago(Number(span.dataset.ms), nowMs);
    this.showConnection();
  }

  async refresh() {
    clearTimeout(this.timer);
    if (this.loading) return;
    this.loading = true;
    const nowS = Date.now() / 1000;
    try {
      const data = await load(nowS);
      Object.assign(this, { data, nowS, okMs: Date.now(), error: null, failedSinceMs: NaN });
      this.main.dataset.loaded = "true";
      this.render();
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      if (!this.error) this.failedSinceMs = Date.now();
      this.error = e;
      if (!this.data) this.parts.counts.textContent = "No data";
    } finally {
      this.loading = false;
    }
    this.showConnection();
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
}

/** The fleet page in `main`; `connection` is the header's status line. */
export function mount(main, connection) {
  const page = new FleetPage(main, connection);
  page.parts.filter.addEventListener("input", () => page.onFilter());
  // Nobody looking, nothing asked of the collector.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(page.timer);
    else page.refresh();
  });
  setInterval(() => page.tick(), 1000);
  page.refresh();
}
