// "Test a hook" on the alerts page, for operators: the hooks in force in
// a list, a firing or resolved test notification sent through the
// collector (the same test as `hostwatch alerts test-hook`), and what the
// receiver answered or the error. Viewers never see it (the collector
// refuses them anyway).

import * as api from "./api.js";
import { el } from "./dom.js";

/** How each result reads, as the CLI words it. */
const RESULTS = {
  delivered: "delivered",
  retry: "not delivered (a retry might succeed)",
  failed: "refused",
};

/** The panel; hidden until `show(hooks)`. */
export class HookTest {
  constructor() {
    this.hook = el("select", { id: "hook-test-hook", name: "hook" });
    this.kind = el(
      "select",
      { id: "hook-test-kind", name: "kind" },
      el("option", { value: "firing", text: "Firing alert" }),
      el("option", { value: "resolved", text: "Its resolution" }),
    );
    this.button = el("button", { type: "submit", id: "hook-test-send", text: "Send test" });
    this.form = el(
      "form",
      { class: "tools hook-test-form", id: "hook-test-form" },
      el("label", { for: "hook-test-hook", text: "Hook" }),
      this.hook,
      el("label", { for: "hook-test-kind", text: "Send" }),
      this.kind,
      this.button,
    );
    this.none = el("p", { class: "none", id: "hook-test-none", text: "No hooks are configured ([[alerting.hooks]] in the collector's configuration).", hidden: "" });
    this.result = el("p", { class: "hook-test-result", id: "hook-test-result", role: "status", "aria-live": "polite" });
    this.section = el(
      "section",
      { class: "panel hook-test", id: "hook-test", "aria-labelledby": "hook-test-title", hidden: "" },
      el("h2", { id: "hook-test-title", text: "Test a hook" }),
      el("p", { class: "help", text: "Sends a made-up alert, HostwatchTestNotification, through the hook now (outside its queue and retries) and shows what the receiver answered." }),
      this.none,
      this.form,
      this.result,
    );
    this.names = "";
    this.form.addEventListener("submit", (event) => this.submit(event));
  }

  /** Shows the panel with `hooks` (`[{name, kind}]`), keeping the one chosen. */
  show(hooks) {
    const names = JSON.stringify(hooks);
    if (names !== this.names) {
      // Rebuilt only when the hooks changed, so a refresh does not undo a choice.
      const chosen = this.hook.value;
      this.hook.replaceChildren(...hooks.map((h) => el("option", { value: h.name, text: `${h.name} (${h.kind})` })));
      if (hooks.some((h) => h.name === chosen)) this.hook.value = chosen;
      this.names = names;
    }
    this.none.hidden = hooks.length > 0;
    this.form.hidden = hooks.length === 0;
    this.section.hidden = false;
  }

  hide() {
    this.section.hidden = true;
  }

  /** Sends the test the form describes and shows the answer. */
  async submit(event) {
    event.preventDefault();
    const hook = this.hook.value;
    if (!hook) return;
    const resolve = this.kind.value === "resolved";
    this.button.disabled = true;
    // What was sent, beside the result, so a reader (and the browser test) can tell one answer from the last.
    Object.assign(this.result.dataset, { hook, kind: this.kind.value, result: "sending" });
    this.result.textContent = `Sending a test to ${hook}…`;
    try {
      const answer = await api.testHook(hook, resolve);
      this.result.dataset.result = answer.result;
      this.result.textContent = `${answer.hook}: ${RESULTS[answer.result] || answer.result}: ${answer.answer}`;
    } catch (e) {
      if (!(e instanceof api.ApiError)) throw e;
      this.result.dataset.result = "error";
      this.result.textContent = `The test was not sent: ${e.message}.`;
    } finally {
      this.button.disabled = false;
    }
  }
}
