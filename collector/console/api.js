// The collector's Prometheus-compatible HTTP API (docs/api.md), the
// console's only source of data. Requests carry the browser's credentials
// (its client certificate or its session cookie) and time out rather than
// hang. A 401 means the session ended: the user is sent to the login page,
// which says so. Changes (POST) carry the CSRF token of the credential.

const TIMEOUT_MS = 8000;

/** A failed request: `unreachable` when no HTTP answer came back. */
export class ApiError extends Error {
  constructor(message, { status = 0, unreachable = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.unreachable = unreachable;
  }
}

/** Sends the user to the login page, saying the session ended. */
export function toLogin(reason = "expired") {
  const next = location.pathname + location.search;
  location.assign(`/login?${new URLSearchParams({ reason, next })}`);
}

/** `fetch` with the console's options and a time limit; resolves to `data`. */
async function request(url, options) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(url, {
      ...options,
      headers: { Accept: "application/json", ...options.headers },
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal,
    });
  } catch (e) {
    const why = e.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : e.message;
    throw new ApiError(`the collector is unreachable (${why})`, { unreachable: true });
  } finally {
    clearTimeout(timer);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`the collector answered ${response.status} without JSON`, {
      status: response.status,
      unreachable: response.status >= 500,
    });
  }
  if (response.status === 401) {
    toLogin("expired");
  }
  if (!response.ok || body.status !== "success") {
    const kind = body.errorType ? `${body.errorType}: ` : "";
    throw new ApiError(`${kind}${body.error || `HTTP ${response.status}`}`, {
      status: response.status,
    });
  }
  return body.data;
}

/** GET `path` with `params` (repeated keys as arrays); resolves to `data`. */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) query.append(key, String(v));
  }
  return request(`${path}?${query}`, { method: "GET" });
}

/** The session's answer, asked once for the page's parts that need it (a failed one is asked again). */
let sessionInfo = null;

/** Who the console runs as: `{via, role, name, expiresAt, csrfToken}`. */
export async function session({ fresh = false } = {}) {
  if (fresh || !sessionInfo) {
    const asked = request("/api/v1/session", { method: "GET" });
    sessionInfo = asked;
    asked.catch(() => {
      if (sessionInfo === asked) sessionInfo = null;
    });
  }
  return sessionInfo;
}

/**
 * Sends a change (`method`, POST by default) to `path` (`body` sent as
 * JSON when given) with the CSRF token; when that token is refused (the
 * collector restarted), fetches it again and tries once more.
 */
export async function post(path, body, method = "POST") {
  const send = async (info) =>
    request(path, {
      method,
      headers: {
        "X-CSRF-Token": info.csrfToken || "",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  try {
    return await send(await session());
  } catch (e) {
    if (e.status !== 403 || !e.message.includes("X-CSRF-Token")) throw e;
    return send(await session({ fresh: true }));
  }
}

/** An instant query at `timeS` (seconds): its result list. */
export async function instant(query, timeS) {
  const data = await get("/api/v1/query", { query, time: timeS });
  return data.result;
}

/** A range query: series with `values` as [seconds, "value"] pairs. */
export async function range(query, startS, endS, stepS) {
  const data = await get("/api/v1/query_range", { query, start: startS, end: endS, step: stepS });
  return data.result;
}

/** A label's values among series matching `match` with a sample in [startS, endS]. */
export async function labelValues(name, match, startS, endS) {
  return get(`/api/v1/label/${encodeURIComponent(name)}/values`, {
    "match[]": match,
    start: startS,
    end: endS,
  });
}

/** The alert rules in force, each with its pending and firing alerts. */
export async function rules() {
  const data = await get("/api/v1/rules");
  return data.groups.flatMap((g) => g.rules);
}

/** An instant vector's values by one label: Map(label value -> number). */
export function byLabel(result, label = "host") {
  const out = new Map();
  for (const s of result) out.set(s.metric[label], Number(s.value[1]));
  return out;
}

/** A PromQL string literal regex matching exactly the given values: `"a|b\\.c"`. */
export function anyOf(values) {
  const regex = values.map((v) => v.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&")).join("|");
  return `"${regex.replace(/[\\"]/g, "\\$&")}"`;
}

/** `params` without the empty ones, so an unset filter is not sent. */
function present(params) {
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
}

/** The first page of hosts (up to 500) with their status and facts: `{ hosts, next }`. */
export async function hosts() {
  return get("/api/v1/hostwatch/hosts");
}

/** A host's status and facts (hostwatch's own endpoint); 404 for a host never seen. */
export async function host(id) {
  return get(`/api/v1/hostwatch/hosts/${encodeURIComponent(id)}`);
}

/** The host's newest process snapshot at or before `timeS` (seconds), or null. */
export async function processes(host, timeS) {
  return get("/api/v1/hostwatch/processes", present({ host, time: timeS }));
}

/** Alert transitions, oldest first: `{ host, alertname, state, limit }`, each optional. */
export async function alertHistory(filter = {}) {
  return get("/api/v1/hostwatch/alerts/history", present(filter));
}

/**
 * The pending and firing alerts; with `filter`, only those whose labels
 * match every matcher (`name="value"`, `!=`, `=~`, `!~`; Alertmanager's
 * `filter`).
 */
export async function alerts(filter = []) {
  const data = await get("/api/v1/alerts", { filter });
  return data.alerts;
}

/** Silences, including those that ended in the last day, newest first. */
export async function silences() {
  return get("/api/v1/hostwatch/silences");
}

/** Creates a silence: `{ matchers: [{name, op, value}], duration | endsAt, comment }` (operators only). */
export async function createSilence(silence) {
  return post("/api/v1/hostwatch/silences", silence);
}

/** Ends the silence `id` now (operators only). */
export async function expireSilence(id) {
  return post(`/api/v1/hostwatch/silences/${encodeURIComponent(id)}`, undefined, "DELETE");
}

/** The hooks in force: `[{ name, kind }]`. */
export async function hooks() {
  return get("/api/v1/hostwatch/hooks");
}

/**
 * Sends the hook `name` a test notification now (its resolution with
 * `resolve`; operators only): `{ hook, resolve, result, answer }`, where
 * `result` is delivered, retry or failed.
 */
export async function testHook(name, resolve) {
  return post(`/api/v1/hostwatch/hooks/${encodeURIComponent(name)}/test`, { resolve });
}
