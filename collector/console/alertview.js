// Alerts as people read them: their cause from the annotations the
// alerting engine adds (docs/alerting.md), and their transition history.
// Shared by the host page and the alerts page.

import * as fmt from "./format.js";
import { el } from "./dom.js";

/** Annotations the engine adds, in the order shown, with their names for people. */
const CAUSES = [
  ["cause", "Cause"],
  ["top_processes", "Top processes"],
  ["processes_at", "Processes sampled at"],
  ["mountpoint", "Mount"],
  ["time_to_full", "Time to full"],
  ["predicted_full_at", "Predicted full at"],
  ["last_seen", "Last seen"],
  ["resolved_by", "Resolved by"],
];
/** Annotations holding an RFC 3339 time, shown in local time. */
const TIMES = new Set(["processes_at", "predicted_full_at", "last_seen"]);

function annotationText(key, value) {
  if (!TIMES.has(key)) return value;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? `${fmt.dateTime(ms)} (${fmt.ago(ms)})` : value;
}

/** An alert's annotations (its summary left out) as a list of terms: the engine's first, then the rule's. */
export function cause(annotations = {}) {
  const known = new Map(CAUSES);
  const keys = [
    ...CAUSES.map(([k]) => k).filter((k) => k in annotations),
    ...Object.keys(annotations).filter((k) => k !== "summary" && !known.has(k)).sort(),
  ];
  if (keys.length === 0) return null;
  return el(
    "dl",
    { class: "cause" },
    ...keys.flatMap((k) => [el("dt", { text: known.get(k) || k }), el("dd", { text: annotationText(k, annotations[k]) })]),
  );
}

/**
 * The silences muting alert `a` (its `silencedBy` ids, looked up in
 * `silences`, a Map by id): each with its id, comment and end, and, when
 * `expire(silence)` is given (operators), the control it returns to end
 * it. Nothing for an alert no silence mutes.
 */
export function silencedBy(a, silences, expire = null) {
  const ids = a.silencedBy || [];
  if (ids.length === 0) return "";
  const items = ids.map((id) => {
    const s = silences.get(id);
    const ends = s ? Date.parse(s.endsAt) : NaN;
    return el(
      "li",
      { class: "silenced", "data-silence": id },
      "Silenced by ",
      el("code", { text: id }),
      // A silence made since the list was read: its id alone until the next read.
      s ? ` · ends ${fmt.dateTime(ends)} (in ${fmt.duration((ends - Date.now()) / 1000)})` : "",
      s && s.comment ? el("span", { class: "comment", text: ` · “${s.comment}”` }) : "",
      s && expire ? expire(s) : "",
    );
  });
  return el("ul", { class: "silenced-by", "aria-label": "Silenced: notifications muted" }, ...items);
}

/** The silences as a Map by id. */
export function byId(silences) {
  return new Map(silences.map((s) => [s.id, s]));
}

/** An alert's state in words (with "silenced" when a silence mutes it), for its badge. */
export function stateText(a) {
  const state = a.state === "firing" ? "Firing" : "Pending";
  const silenced = (a.silencedBy || []).length > 0 ? " · silenced" : "";
  return `${state} · ${a.labels.severity || "no severity"}${silenced}`;
}

const PHASES = { pending: "Pending", firing: "Firing", resolved: "Resolved", inactive: "Inactive" };

/**
 * Transitions (oldest first from the API) as a table, newest first;
 * `withHost` adds the host's column.
 */
export function historyTable(transitions, { withHost = false, caption = "" } = {}) {
  const columns = [["at", "When"], ...(withHost ? [["host", "Host"]] : []), ["alert", "Alert"], ["change", "Change"], ["value", "Value"]];
  const rows = [...transitions].reverse().map((t) => {
    const at = Date.parse(t.at);
    const cells = {
      at: [el("span", { class: "ago", title: fmt.ago(at), text: fmt.dateTime(at) })],
      host: [t.labels.host ? el("a", { href: `/hosts/${encodeURIComponent(t.labels.host)}`, text: t.labels.host }) : el("span", { text: fmt.NONE })],
      alert: [el("strong", { text: t.alertname }), el("span", { class: "detail", text: t.annotations.summary || "" })],
      change: [
        el(
          "span",
          {},
          el("span", { class: `phase phase-${t.from}`, text: PHASES[t.from] || t.from }),
          " → ",
          el("span", { class: `phase phase-${t.to}`, text: PHASES[t.to] || t.to }),
        ),
        t.flapping ? el("span", { class: "detail", text: "flapping: fired again soon after resolving" }) : "",
      ],
      value: [el("span", { text: fmt.number(Number(t.value), 3) })],
    };
    return el(
      "tr",
      { "data-id": String(t.id), "data-to": t.to, "data-alertname": t.alertname, "data-host": t.labels.host || "" },
      ...columns.map(([key, title]) => el("td", { class: `col-${key}`, "data-label": title }, ...cells[key])),
    );
  });
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "data history" },
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, ...columns.map(([key, title]) => el("th", { scope: "col", class: `col-${key}`, text: title })))),
      el("tbody", {}, ...rows),
    ),
  );
}
