// The alerts page: pending and firing alerts with their cause, the
// active silences (created from an alert and expired here by operators),
// a hook's test (operators only), and the transition history, filtered by host, alert name and state
// (kept in the address). Refreshed at most every REFRESH_MS while the
// page is seen.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";
import { byId, cause, historyTable, silencedBy, stateText } from "./alertview.js";
import { SilenceForm, silenceList } from "./silenceview.js";
import { HookTest } from "./hooktest.js";

const REFRESH_MS = 10_000;
/** Transitions shown at most, the newest. */
const HISTORY_LIMIT = 200;
const SEVERITIES = ["critical", "warning", "info"];
const STATES = ["pending", "firing", "resolved", "inactive"];
/** The history filter's fields: the address' parameter and the endpoint's. */
const FILTERS = ["host", "alertname", "state"];

function rank(a) {
  const severity = SEVERITIES.indexOf(a.labels.severity);
  return [a.state === "firing" ? 0 : 1, severity < 0 ? SEVERITIES.length : severity];
}

/**
 * One pending or firing alert, with its cause and the silences muting
 * it (`silences` by id); for operators, `onSilence(alert, button)` and
 * `onExpire(silence, button)` (else null).
 */
function alertItem(a, silences, onSilence, onExpire) {
  const since = Date.parse(a.activeAt);
  const host = a.labels.host;
  const silenced = (a.silencedBy || []).length > 0;
  const expire = onExpire
    ? (s) => {
        const button = el("button", { type: "button", class: "expire-silence", text: "Expire silence", "aria-label": `Expire silence ${s.id}` });
        button.addEventListener("click", () => onExpire(s, button));
        return el("span", { class: "alert-actions" }, button);
      }
    : null;
  return el(
    "li",
    {
      class: `alert alert-${a.state}${silenced ? " alert-silenced" : ""}`,
      "data-alertname": a.labels.alertname || "",
      "data-host": host || "",
      "data-state": a.state,
      "data-silenced": String(silenced),
    },
    el("span", { class: `alerts severity-${a.labels.severity || "other"}`, text: stateText(a) }),
    " ",
    el("strong", { text: a.labels.alertname || "" }),
    host ? el("span", {}, " on ", el("a", { href: `/hosts/${encodeURIComponent(host)}`, text: host })) : "",
    el("span", { class: "detail", text: a.annotations.summary || "" }),
    el("span", { class: "detail", text: `since ${fmt.dateTime(since)} (${fmt.ago(since)})` }),
    cause(a.annotations) || "",
    silencedBy(a, silences, expire),
    onSilence ? silenceButton(a, onSilence) : "",
  );
}

function silenceButton(a, onSilence) {
  const button = el("button", { type: "button", class: "silence-alert", text: "Silence", "aria-label": `Silence ${a.labels.alertname || "this alert"}${a.labels.host ? ` on ${a.labels.host}` : ""}` });
  button.addEventListener("click", () => onSilence(a, button));
  return el("div", { class: "alert-actions" }, button);
}

function skeleton(main, silenceForm, hookTest) {
  const input = (name, label, attrs = {}) => [
    el("label", { for: `filter-${name}`, text: label }),
    el("input", { id: `filter-${name}`, name, autocomplete: "off", ...attrs }),
  ];
  const state = el("select", { id: "filter-state", name: "state" }, el("option", { value: "", text: "any" }), ...STATES.map((s) => el("option", { value: s, text: s })));
  const parts = {
    counts: el("p", { class: "counts", id: "alert-counts", "aria-live": "polite" }, "Loading…"),
    notice: el("p", { class: "notice", id: "alerts-notice", role: "alert", hidden: "" }),
    active: el("ul", { class: "alert-list", id: "active-alerts" }),
    hosts: el("datalist", { id: "known-hosts" }),
    rules: el("datalist", { id: "known-rules" }),
    history: el("div", { id: "history" }),
    silences: el("ul", { class: "alert-list", id: "silences", tabindex: "-1" }),
    silenceNotice: el("p", { class: "notice", id: "silences-notice", role: "alert", hidden: "" }),
    announce: el("p", { class: "sr-status", id: "silences-status", role: "status" }),
    historyNotice: el("p", { class: "notice", id: "history-notice", role: "alert", hidden: "" }),
  };
  parts.form = el(
    "form",
    { class: "tools history-filter", id: "history-filter", role: "search" },
    ...input("host", "Host", { list: "known-hosts" }),
    ...input("alertname", "Alert", { list: "known-rules" }),
    el("label", { for: "filter-state", text: "Entered" }),
    state,
    el("button", { type: "submit", text: "Filter" }),
    el("button", { type: "reset", text: "Clear" }),
    parts.hosts,
    parts.rules,
  );
  const section = (id, title, ...content) => el("section", { class: "panel", "aria-labelledby": id }, el("h2", { id, text: title }), ...content);
  main.replaceChildren(
    el("div", { class: "page-head" }, el("h1", { text: "Alerts" }), parts.counts),
    parts.notice,
    section("active-title", "Pending and firing", parts.active),
    silenceForm,
    section("silences-title", "Silences", parts.silenceNotice, parts.announce, parts.silences),
    hookTest,
    section("history-title", "History", parts.form, parts.historyNotice, parts.history),
  );
  return parts;
}

/** The history filter the address names. */
function filterOf(search) {
  const params = new URLSearchParams(search);
  return Object.fromEntries(FILTERS.map((k) => [k, (params.get(k) || "").trim()]));
}

class AlertsPage {
  constructor(main, connection) {
    Object.assign(this, { main, connection, generation: 0, operator: false });
    this.silenceForm = new SilenceForm((silence) => this.onSilenced(silence));
    this.hookTest = new HookTest();
    this.parts = skeleton(main, this.silenceForm.form, this.hookTest.section);
  }

  /** Shows the filter the address names in the form. */
  showFilter() {
    const filter = filterOf(location.search);
    for (const k of FILTERS) this.parts.form.elements[k].value = filter[k];
    return filter;
  }

  /** Reads and draws everything; `refill` puts the address' filter into the form (not on a refresh, which would undo typing). */
  async draw({ refill = true } = {}) {
    const mine = (this.generation += 1);
    const filter = refill ? this.showFilter() : filterOf(location.search);
    this.main.dataset.loaded = "false";
    try {
      const [alerts, rules, hosts, silences, session] = await Promise.all([api.alerts(), api.rules(), api.hosts(), api.silences(), api.session()]);
      this.operator = session.role === "operator";
      // Only operators may test a hook: viewers are not offered it.
      const hooks = this.operator ? await api.hooks() : null;
      let history;
      let problem = "";
      try {
        history = await api.alertHistory({ ...filter, limit: HISTORY_LIMIT });
      } catch (e) {
        // A filter naming an unknown host or state: the page stays, the message says why.
        if (!(e instanceof api.ApiError) || e.unreachable || ![400, 404].includes(e.status)) throw e;
        problem = `No history for this filter: ${e.message}.`;
      }
      if (mine !== this.generation) return;
      this.drawActive(alerts, silences);
      this.drawSilences(silences);
      if (hooks) this.hookTest.show(hooks);
      else this.hookTest.hide();
      this.parts.rules.replaceChildren(...rules.map((r) => el("option", { value: r.name })));
      this.parts.hosts.replaceChildren(...hosts.hosts.map((h) => el("option", { value: h.host })));
      this.parts.historyNotice.hidden = !problem;
      this.parts.historyNotice.textContent = problem;
      if (history) this.drawHistory(history, filter);
      else this.parts.history.replaceChildren();
      this.parts.notice.hidden = true;
      this.connection.className = "connection";
      this.connection.textContent = `Updated ${fmt.time(Date.now())}`;
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      this.connection.className = `connection ${e.unreachable ? "connection-down" : "connection-error"}`;
      this.connection.textContent = e.unreachable ? "⚠ Collector unreachable" : "⚠ The collector refused the request";
      this.parts.notice.hidden = false;
      this.parts.notice.textContent = `Could not read the alerts: ${e.message}.`;
    }
    this.main.dataset.loaded = "true";
  }

  drawActive(alerts, silences) {
    alerts.sort((a, b) => rank(a)[0] - rank(b)[0] || rank(a)[1] - rank(b)[1]);
    const firing = alerts.filter((a) => a.state === "firing").length;
    const silenced = alerts.filter((a) => (a.silencedBy || []).length > 0).length;
    this.parts.counts.textContent = `${firing} firing · ${alerts.length - firing} pending · ${silenced} silenced`;
    const onSilence = this.operator ? (a, button) => this.silenceForm.open(a, button) : null;
    const onExpire = this.operator ? (s, button) => this.expire(s, button) : null;
    const known = byId(silences);
    const items = alerts.map((a) => alertItem(a, known, onSilence, onExpire));
    this.parts.active.replaceChildren(...(items.length > 0 ? items : [el("li", { class: "none", id: "no-alerts", text: "No alerts firing or pending." })]));
  }

  drawSilences(silences) {
    const onExpire = this.operator ? (s, button) => this.expire(s, button) : null;
    this.parts.silences.replaceChildren(...silenceList(silences, onExpire));
    // Opened from a host page's link to a silence: shown and focused once,
    // not again at each refresh.
    const target = !this.targetShown && location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
    if (target && this.parts.silences.contains(target)) {
      this.targetShown = true;
      target.scrollIntoView({ block: "center" });
      target.focus({ preventScroll: true });
    }
  }

  /** Ends the silence `s`, then shows the alerts and silences again. */
  async expire(s, button) {
    button.disabled = true;
    try {
      await api.expireSilence(s.id);
      this.parts.silenceNotice.hidden = true;
      this.parts.announce.textContent = `Silence ${s.id} expired.`;
      await this.redrawSilenced();
      this.parts.silences.focus();
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      button.disabled = false;
      this.parts.silenceNotice.textContent = `The silence was not expired: ${e.message}.`;
      this.parts.silenceNotice.hidden = false;
    }
  }

  /** The alerts (which silences mute them) and the silences, read again after a change. */
  async redrawSilenced() {
    const [alerts, silences] = await Promise.all([api.alerts(), api.silences()]);
    this.drawActive(alerts, silences);
    this.drawSilences(silences);
  }

  async onSilenced(silence) {
    this.parts.announce.textContent = `Silence ${silence.id} created.`;
    try {
      await this.redrawSilenced();
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      this.parts.silenceNotice.textContent = `Could not read the silences: ${e.message}.`;
      this.parts.silenceNotice.hidden = false;
    }
    this.parts.silences.focus();
  }

  drawHistory(history, filter) {
    const shown = FILTERS.filter((k) => filter[k]).map((k) => `${k} ${filter[k]}`);
    const what = shown.length > 0 ? ` matching ${shown.join(", ")}` : "";
    if (history.length === 0) {
      this.parts.history.replaceChildren(el("p", { class: "none", id: "history-empty", text: `No alert changed state${what}.` }));
      return;
    }
    const caption = `The newest ${history.length} changes${what}, newest first (at most ${HISTORY_LIMIT}).`;
    this.parts.history.replaceChildren(historyTable(history, { withHost: true, caption }));
  }

  /** The filter from the form, as a new history entry. */
  onFilter(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const k of FILTERS) {
      const v = this.parts.form.elements[k].value.trim();
      if (v) params.set(k, v);
    }
    const search = params.toString();
    history.pushState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
    this.draw();
  }
}

/** The alerts page in `main`; `connection` is the header's status line. */
export function mount(main, connection) {
  document.title = "Alerts · hostwatch";
  const page = new AlertsPage(main, connection);
  page.parts.form.addEventListener("submit", (event) => page.onFilter(event));
  page.parts.form.addEventListener("reset", () => {
    history.pushState(null, "", location.pathname);
    // After the form has cleared its fields.
    setTimeout(() => page.draw(), 0);
  });
  window.addEventListener("popstate", () => page.draw());
  setInterval(() => {
    if (!document.hidden) page.draw({ refill: false });
  }, REFRESH_MS);
  page.draw();
}
