// Silences on the alerts page: the active ones listed, and the form that
// creates one from an alert's labels. Creating and expiring need the
// operator role; the page shows their buttons to operators only, and the
// collector refuses anyone else anyway.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { el } from "./dom.js";

const OPS = ["=", "!=", "=~", "!~"];
/** The form's durations: its label, the API's duration; "" asks for one. */
const DURATIONS = [
  ["1 hour", "1h"],
  ["4 hours", "4h"],
  ["1 day", "1d"],
  ["Custom", ""],
];

/** A matcher as written: `host="web1"`. */
function matcherText(m) {
  return `${m.name}${m.op}"${m.value}"`;
}

/** The active silences as a list; `onExpire(silence)` when operators may end them (else null). */
export function silenceList(silences, onExpire) {
  const active = silences.filter((s) => s.active);
  if (active.length === 0) return [el("li", { class: "none", id: "no-silences", text: "No active silences." })];
  return active.map((s) => {
    const ends = Date.parse(s.endsAt);
    const item = el(
      "li",
      // The id is a link target: the host page links an alert's silence here.
      { class: "silence", id: `silence-${s.id}`, "data-id": s.id, tabindex: "-1" },
      el("span", { class: "matchers" }, ...s.matchers.map((m) => el("code", { class: "matcher", text: matcherText(m) }))),
      el("span", { class: "detail", text: `by ${s.createdBy} · ends ${fmt.dateTime(ends)} (in ${fmt.duration((ends - Date.now()) / 1000)})` }),
      s.comment ? el("span", { class: "detail comment", text: s.comment }) : "",
    );
    if (onExpire) {
      const button = el("button", { type: "button", class: "expire", text: "Expire", "aria-label": `Expire silence ${s.matchers.map(matcherText).join(", ")}` });
      button.addEventListener("click", () => onExpire(s, button));
      item.append(button);
    }
    return item;
  });
}

/** One matcher's row in the form: name, operator, value, and a button to remove it. */
function matcherRow(index, m) {
  const id = (field) => `matcher-${index}-${field}`;
  const op = el("select", { id: id("op"), name: "op", "aria-label": "Operator" }, ...OPS.map((o) => el("option", { value: o, text: o })));
  op.value = m.op;
  const remove = el("button", { type: "button", class: "remove", text: "Remove", "aria-label": `Remove matcher ${m.name}` });
  const row = el(
    "li",
    { class: "matcher-row" },
    el("input", { id: id("name"), name: "name", value: m.name, "aria-label": "Label name", autocomplete: "off", required: "" }),
    op,
    el("input", { id: id("value"), name: "value", value: m.value, "aria-label": "Label value", autocomplete: "off" }),
    remove,
  );
  remove.addEventListener("click", () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    (next ? next.querySelector("input") : document.getElementById("silence-add-matcher")).focus();
  });
  return row;
}

/**
 * The form that creates a silence, hidden until `open(alert)`; calls
 * `onCreated(silence)` after the collector made it.
 */
export class SilenceForm {
  constructor(onCreated) {
    this.onCreated = onCreated;
    this.rows = 0;
    this.matchers = el("ul", { class: "matcher-rows", id: "silence-matchers" });
    this.duration = el("select", { id: "silence-duration", name: "duration" }, ...DURATIONS.map(([label, value]) => el("option", { value, text: label })));
    this.custom = el("input", { id: "silence-custom", name: "custom", placeholder: "such as 90m or 2d", autocomplete: "off", hidden: "" });
    this.customLabel = el("label", { for: "silence-custom", text: "Custom duration", hidden: "" });
    this.comment = el("input", { id: "silence-comment", name: "comment", autocomplete: "off" });
    this.error = el("p", { class: "notice", id: "silence-error", role: "alert", hidden: "" });
    this.title = el("h2", { id: "silence-form-title", text: "New silence" });
    const add = el("button", { type: "button", id: "silence-add-matcher", text: "Add matcher" });
    this.form = el(
      "form",
      { class: "panel silence-form", id: "silence-form", "aria-labelledby": "silence-form-title", hidden: "" },
      this.title,
      el("p", { class: "help", text: "Mutes notifications of alerts whose labels match every matcher." }),
      this.matchers,
      add,
      el(
        "div",
        { class: "tools" },
        el("label", { for: "silence-duration", text: "For" }),
        this.duration,
        this.customLabel,
        this.custom,
        el("label", { for: "silence-comment", text: "Comment" }),
        this.comment,
      ),
      this.error,
      el("div", { class: "tools" }, el("button", { type: "submit", id: "silence-create", text: "Create silence" }), el("button", { type: "button", id: "silence-cancel", text: "Cancel" })),
    );
    add.addEventListener("click", () => {
      this.addRow({ name: "", op: "=", value: "" }).querySelector("input").focus();
    });
    this.duration.addEventListener("change", () => {
      const custom = this.duration.value === "";
      this.custom.hidden = !custom;
      this.customLabel.hidden = !custom;
      if (custom) this.custom.focus();
    });
    this.form.querySelector("#silence-cancel").addEventListener("click", () => this.close());
    this.form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
    this.form.addEventListener("submit", (event) => this.submit(event));
  }

  addRow(m) {
    this.rows += 1;
    const row = matcherRow(this.rows, m);
    this.matchers.append(row);
    return row;
  }

  /** Opens the form with `alert`'s labels as equality matchers. */
  open(alert, returnTo) {
    this.returnTo = returnTo;
    this.matchers.replaceChildren();
    for (const [name, value] of Object.entries(alert.labels).sort(([a], [b]) => a.localeCompare(b))) this.addRow({ name, op: "=", value });
    this.title.textContent = `New silence for ${alert.labels.alertname || "an alert"}`;
    this.duration.value = "1h";
    this.duration.dispatchEvent(new Event("change"));
    this.comment.value = "";
    this.error.hidden = true;
    this.form.hidden = false;
    this.form.scrollIntoView({ block: "nearest" });
    this.matchers.querySelector("input").focus();
  }

  close() {
    this.form.hidden = true;
    if (this.returnTo && this.returnTo.isConnected) this.returnTo.focus();
  }

  /** The silence the form describes, as the API takes it. */
  value() {
    const matchers = [...this.matchers.children].map((row) => ({
      name: row.querySelector('[name="name"]').value.trim(),
      op: row.querySelector('[name="op"]').value,
      value: row.querySelector('[name="value"]').value,
    }));
    const duration = this.duration.value || this.custom.value.trim();
    return { matchers, duration, comment: this.comment.value.trim() };
  }

  async submit(event) {
    event.preventDefault();
    const button = this.form.querySelector("#silence-create");
    button.disabled = true;
    try {
      const silence = await api.createSilence(this.value());
      this.form.hidden = true;
      this.onCreated(silence);
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      // The collector names the problem (a bad matcher, a duration).
      this.error.textContent = `The silence was not created: ${e.message}.`;
      this.error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }
}
