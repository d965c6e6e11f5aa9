// Units for people: IEC bytes, percentages, durations, local times with
// their UTC offset. Every figure the console shows goes through here.

const IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** `x` with `digits` decimals, without trailing zeros: "1.5", "300". */
function fixed(x, digits) {
  const text = x.toFixed(digits);
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

/** Shown where a figure is missing. */
export const NONE = "—";

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** Bytes in IEC units: "512 B", "1.5 GiB", "12 GiB", "300 GiB". */
export function bytes(n) {
  if (!finite(n)) return NONE;
  let unit = 0;
  let value = Math.abs(n);
  while (value >= 1024 && unit < IEC.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${n < 0 ? "-" : ""}${fixed(value, digits)} ${IEC[unit]}`;
}

/** A ratio (0..1) as a percentage: "0.4%", "12%", "100%". */
export function percent(ratio) {
  if (!finite(ratio)) return NONE;
  const p = ratio * 100;
  const digits = Math.abs(p) < 10 && p !== 0 ? 1 : 0;
  return `${p.toFixed(digits)}%`;
}

/** A plain number with at most `digits` decimals: "0.42", "3". */
export function number(x, digits = 2) {
  if (!finite(x)) return NONE;
  return fixed(x, digits);
}

/** A duration in seconds, in its two largest units: "45 s", "3 min 20 s", "2 h 5 min", "4 d 1 h". */
export function duration(seconds) {
  if (!finite(seconds)) return NONE;
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const parts = [];
  for (const [size, name] of [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]]) {
    if (s >= size || parts.length > 0) {
      parts.push([Math.floor(s / size), name]);
      s %= size;
    }
    if (parts.length === 2) break;
  }
  return parts
    .filter(([n], i) => i === 0 || n > 0)
    .map(([n, name]) => `${n} ${name}`)
    .join(" ");
}

/** How long ago a time (milliseconds since the epoch) was: "12 s ago". */
export function ago(ms, nowMs = Date.now()) {
  if (!finite(ms)) return NONE;
  const seconds = (nowMs - ms) / 1000;
  return seconds < 1 ? "just now" : `${duration(seconds)} ago`;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** The browser's UTC offset at a time: "UTC+01:00", "UTC−05:30", "UTC". */
export function utcOffset(date) {
  const minutes = -date.getTimezoneOffset();
  if (minutes === 0) return "UTC";
  const sign = minutes > 0 ? "+" : "−";
  const abs = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** A local date and time with its UTC offset: "2026-12-06 01:02:03 UTC+01:00". */
export function dateTime(ms) {
  if (!finite(ms)) return NONE;
  const d = new Date(ms);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${date} ${time(ms)}`;
}

/** A local time of day with its UTC offset: "01:02:03 UTC+01:00". */
export function time(ms) {
  if (!finite(ms)) return NONE;
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${utcOffset(d)}`;
}
