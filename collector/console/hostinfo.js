// The host page's panels beside its charts: facts, the process snapshot
// at a moment, the alert history and the predicted time to full, read
// from hostwatch's own endpoints and the Prometheus API (docs/api.md).

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";
import { historyTable } from "./alertview.js";

/** Transitions shown on the host page; the alerts page shows more. */
const HISTORY_LIMIT = 20;
/** The shortest trend a time to full is predicted from. */
const MIN_TREND_S = 600;

/** A term and its description, for a facts list. */
function fact(name, value, key) {
  return [el("dt", { text: name }), el("dd", { "data-fact": key, text: value })];
}

/** A certificate's expiry for people: when, and how long until (or since). */
function certificate(expiry) {
  if (!expiry) return "expiry not known yet (recorded when its agent next connects)";
  const ms = Date.parse(expiry);
  const left = (ms - Date.now()) / 1000;
  return left > 0 ? `expires ${fmt.dateTime(ms)} (in ${fmt.duration(left)})` : `expired ${fmt.dateTime(ms)} (${fmt.ago(ms)})`;
}

/** The facts panel's content: the collector's record of the host, or why there is none. */
export async function facts(host) {
  let status;
  try {
    status = await api.host(host);
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 404) {
      return [el("p", { class: "none", text: "The collector has no record of this host: its agent never connected." })];
    }
    throw e;
  }
  const f = status.facts;
  const seen = Date.parse(status.lastSeen);
  const state = status.up ? ["●", "Up"] : ["✕", "Down"];
  const list = [
    el("dt", { text: "Status" }),
    el(
      "dd",
      { "data-fact": "status" },
      el("span", { class: `status status-${status.up ? "up" : "down"}` }, el("span", { "aria-hidden": "true", text: `${state[0]} ` }), state[1]),
      `, ${status.connected ? "connected" : "not connected"}`,
      status.cleanShutdown ? " (its agent stopped cleanly)" : "",
    ),
    ...fact("Last seen", `${fmt.dateTime(seen)} (${fmt.ago(seen)})`, "seen"),
  ];
  if (!f) {
    list.push(...fact("Facts", "not sent yet by its agent", "none"));
    return [el("dl", { class: "facts" }, ...list)];
  }
  const boot = Date.parse(f.bootTime);
  list.push(
    ...fact("OS", [f.osName, f.osVersion].filter(Boolean).join(" ") || fmt.NONE, "os"),
    ...fact("Kernel", `${f.kernelVersion || fmt.NONE}${f.architecture ? ` (${f.architecture})` : ""}`, "kernel"),
    ...fact("CPU", `${f.cpuCount} × ${f.cpuModel || "unknown model"}`, "cpu"),
    ...fact("Memory", fmt.bytes(f.memoryBytes), "memory"),
    ...fact("Booted", `${fmt.dateTime(boot)} (up ${fmt.duration((Date.now() - boot) / 1000)})`, "boot"),
    ...fact("Agent", `version ${f.agentVersion || fmt.NONE}`, "agent"),
  );
  list.push(...fact("Certificate", certificate(status.certificateExpiry), "certificate"));
  return [el("dl", { class: "facts" }, ...list)];
}

/** The processes panel's content for the snapshot at or before `timeS`. */
export async function processes(host, timeS) {
  const snapshot = await api.processes(host, timeS);
  const asked = fmt.dateTime(timeS * 1000);
  if (!snapshot) {
    return [el("p", { class: "none", id: "processes-empty", text: `No process snapshot at or before ${asked}.` })];
  }
  const at = Date.parse(snapshot.time);
  const rows = [...snapshot.processes]
    .sort((a, b) => b.cpuCores - a.cpuCores || b.rssBytes - a.rssBytes)
    .map((p) =>
      el(
        "tr",
        { "data-pid": String(p.pid) },
        el("td", { class: "col-pid", "data-label": "PID", text: String(p.pid) }),
        el("th", { scope: "row", class: "col-name", "data-label": "Name", title: p.command, text: p.name }),
        el("td", { class: "col-user", "data-label": "User", text: p.user || fmt.NONE }),
        el("td", { class: "col-cpu", "data-label": "CPU", text: fmt.percent(p.cpuCores) }),
        el("td", { class: "col-memory", "data-label": "Memory", text: fmt.bytes(p.rssBytes) }),
      ),
    );
  const head = [["pid", "PID"], ["name", "Name"], ["user", "User"], ["cpu", "CPU"], ["memory", "Memory"]];
  return [
    el("p", { class: "help", id: "processes-at", "data-ms": String(at) }, `Snapshot taken ${fmt.dateTime(at)}, the newest at or before ${asked}. CPU: 100% is one core busy; memory: resident.`),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "data processes", id: "processes-table" },
        el("caption", { text: `Top processes of ${host}` }),
        el("thead", {}, el("tr", {}, ...head.map(([key, title]) => el("th", { scope: "col", class: `col-${key}`, text: title })))),
        el("tbody", {}, ...rows),
      ),
    ),
  ];
}

/** The alert history panel's content: the host's newest transitions. */
export async function history(host) {
  let transitions;
  try {
    transitions = await api.alertHistory({ host, limit: HISTORY_LIMIT });
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 404) return [el("p", { class: "none", text: "No alert history: the collector has no record of this host." })];
    throw e;
  }
  const more = el("a", { href: `/alerts?host=${encodeURIComponent(host)}`, text: "all of this host's alerts" });
  if (transitions.length === 0) return [el("p", { class: "none", id: "history-empty" }, "No alert has changed state for this host. See ", more, ".")];
  return [historyTable(transitions, { caption: `The newest ${transitions.length} changes, newest first` }), el("p", { class: "help" }, "More on ", more, ".")];
}

/**
 * Each file system's space and its predicted time to full at the end of
 * `range`, from the trend (predict_linear) of its available bytes over
 * the range shown (at least MIN_TREND_S): one list item per mount.
 */
export async function timeToFull(selector, range) {
  const w = `[${Math.max(MIN_TREND_S, Math.round(range.end - range.start))}s]`;
  const avail = `host_filesystem_available_bytes{${selector}}`;
  const now = `predict_linear(${avail}${w}, 0)`;
  // a(t) = a0 + s t, so a0 / (a(0) - a(3600)) * 3600 = -a0 / s: seconds
  // until nothing is available, positive only while space shrinks.
  const ttf = `${now} / (${now} - predict_linear(${avail}${w}, 3600)) * 3600`;
  const used = `(host_filesystem_size_bytes{${selector}} - host_filesystem_free_bytes{${selector}})`;
  // The three figures in one request, each series tagged with its figure
  // (`or` keeps them all: their labels differ by the tag).
  const tag = (expr, figure) => `label_replace(${expr}, "figure", "${figure}", "", "")`;
  const result = await api.instant(
    `${tag(`${used} / (${used} + ${avail})`, "ratio")} or ${tag(avail, "available")} or ${tag(ttf, "seconds")}`,
    range.end,
  );
  const byMount = (figure) => api.byLabel(result.filter((s) => s.metric.figure === figure), "mountpoint");
  const [ratio, bytes, seconds] = [byMount("ratio"), byMount("available"), byMount("seconds")];
  if (ratio.size === 0) return [el("li", { class: "none", text: "No file system reported at the end of this range." })];
  return [...ratio.keys()].sort().map((mount) => {
    const s = seconds.get(mount);
    const prediction = Number.isFinite(s) && s > 0 ? `full in ${fmt.duration(s)}` : "not filling";
    return el(
      "li",
      { "data-mount": mount },
      el("strong", { class: "mount", text: mount }),
      ` ${fmt.percent(ratio.get(mount))} used, ${fmt.bytes(bytes.get(mount))} available; `,
      el("span", { class: "ttf", text: prediction }),
    );
  });
}
