// The header's connection line for a page that refreshes itself: when its
// data was last updated, "stale" once that is older than three refreshes,
// or since when the collector is unreachable or refusing (the page keeps
// its last data on screen), with the problem in the page's notice.

import * as fmt from "./format.js";

export class Connection {
  /**
   * `line` is the header's status line, `notice` the page's element for
   * the problem; `what` names the data ("the charts"), `refreshMs` the
   * page's refresh period.
   */
  constructor(line, notice, { what, refreshMs }) {
    Object.assign(this, { line, notice, what, refreshMs, okMs: NaN, error: null, failedSinceMs: NaN });
  }

  /** Data arrived at `nowMs`. */
  ok(nowMs = Date.now()) {
    Object.assign(this, { okMs: nowMs, error: null, failedSinceMs: NaN });
  }

  /** A request failed with the API error `e` at `nowMs`. */
  failed(e, nowMs = Date.now()) {
    if (!this.error) this.failedSinceMs = nowMs;
    this.error = e;
  }

  /** [class suffix or "", the line, the notice or ""]; stale only while `refreshing`. */
  state(nowMs, refreshing) {
    if (this.error) {
      const since = fmt.time(this.failedSinceMs);
      const held = Number.isFinite(this.okMs) ? `; showing data from ${fmt.time(this.okMs)}` : "";
      const retry = refreshing ? ` Retrying every ${this.refreshMs / 1000} s.` : "";
      const problem =
        this.error.status === 401
          ? `Not authorized: ${this.error.message}. The console needs an operator or viewer client certificate, or a login.`
          : `Could not read ${this.what}: ${this.error.message}.`;
      return this.error.unreachable
        ? ["down", `⚠ Collector unreachable since ${since}${held}.${retry}`, problem]
        : ["error", `⚠ The collector refused the request since ${since}${held}.`, problem];
    }
    if (refreshing && nowMs - this.okMs > 3 * this.refreshMs) return ["stale", `⚠ Data is stale: last updated at ${fmt.time(this.okMs)}.`, ""];
    return ["", Number.isFinite(this.okMs) ? `Updated ${fmt.time(this.okMs)}` : "Loading…", ""];
  }

  /**
   * Writes the line and the notice, only where their text changed (they
   * are live regions: screen readers are not told the same thing again).
   */
  show(refreshing, nowMs = Date.now()) {
    const [kind, line, problem] = this.state(nowMs, refreshing);
    const className = kind ? `connection connection-${kind}` : "connection";
    if (this.line.className !== className) this.line.className = className;
    if (this.line.textContent !== line) this.line.textContent = line;
    this.notice.hidden = !problem;
    if (problem && this.notice.textContent !== problem) this.notice.textContent = problem;
  }
}
