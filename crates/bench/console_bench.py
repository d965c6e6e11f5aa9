#!/usr/bin/env python3
"""The browser half of `hostwatch-bench console` (crates/bench/src/console.rs),
which starts the collector and runs this script with Python playwright
driving Debian's chromium (never `playwright install`).

1. Records the API requests the fleet page makes on its first load, then
   replays exactly those requests `--replays` times, all at once as the
   page sends them, each on a new connection as a viewer of its own: per request and per set, time from sending to the
   last byte of the answer.
2. Starts chromium with a profile of its own on disk (a new one each
   run), as a user's browser has: it keeps the console's assets in its
   HTTP cache and V8's code cache of their scripts, which a private
   context (`browser.new_context()`) keeps none of. Logs in there with a
   viewer's token (CONSOLE_BENCH_TOKEN, which the bench creates), as a
   user does once, chromium trusting the collector's certificate by its
   key (`--spki-sha256`). Then loads the fleet page, then the host page
   at 24 h, `--runs` times each in a fresh tab. The host page's first
   two loads are reported apart (`host_24h_charts_first_ms`, the first):
   they fetch its own modules and the chart library, and a browser
   writes a script's code cache on its second run. Time to interactive (fleet) and to charts complete
   (host) is measured from navigation start (performance.timeOrigin) to
   the first frame after the page marked itself loaded (`main`'s
   data-loaded="true", set once the data is in and drawn: the rows in view
   with all their figures, every chart); the fleet's table must count
   every host (aria-rowcount) and the charts are counted. A fleet page not
   interactive within `--page-timeout-s` is reported as such and not
   loaded again. For the host page, where its loads' time went (Navigation,
   Resource and Paint Timing) and each process' CPU per load; then as many
   loads again in tabs left to finish starting before they navigate,
   reported beside the figure (`host_24h_charts_settled_tab_*`).
3. The tab's memory after the last fleet load: its JS heap (DevTools'
   Performance.getMetrics), DOM nodes and its renderer's resident memory.
4. With `--trace-loads N`, N more host page loads, each under a DevTools
   trace (in a private context: playwright traces a launched browser): the renderer main thread's CPU time up to the frame after the
   mark, by kind of work (medians), which a loaded machine stretches far
   less than the wall time.

Prints `name=value` lines (milliseconds, bytes) and `#` comments.
"""

import argparse
import base64
import shutil
import http.client
import json
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long a settled load's new tab is left idle before it navigates.
SETTLE_S = 0.5
# Bounded wait for the recording load.
RECORD_TIMEOUT_MS = 300_000

# Installed before any page script: notes when `main` is marked loaded and
# when the frame after that has been produced.
MARK_LOADED = """
window.__bench = {};
new MutationObserver(() => {
  const main = document.getElementById("main");
  if (!main || main.dataset.loaded !== "true" || window.__bench.loaded) return;
  window.__bench.loaded = performance.now();
  requestAnimationFrame(() => setTimeout(() => { window.__bench.painted = performance.now(); }, 0));
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-loaded"] });
"""


def percentile(values, p):
    """Nearest rank, as crates/bench/src/measure.rs computes it."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-p * len(ordered) // 100)))
    return ordered[int(rank) - 1]


def figure(name, value):
    print(f"{name}={value:.1f}" if isinstance(value, float) else f"{name}={value}", flush=True)


def record_fleet_requests(context, origin):
    """The API requests of the fleet page's first load, as sent."""
    page = context.new_page()
    urls = []
    page.on("request", lambda r: "/api/" in r.url and urls.append(r.url))
    page.goto(f"{origin}/")
    page.locator('main[data-loaded="true"]').wait_for(timeout=RECORD_TIMEOUT_MS)
    page.close()
    if not urls:
        raise SystemExit("the fleet page made no API request")
    # One set: a load whose requests outlived api.js's time limit is
    # retried by the page, and the retry's requests differ only in time.
    requests, seen = [], set()
    for url in map(urllib.parse.urlsplit, urls):
        params = [(k, v) for k, v in urllib.parse.parse_qsl(url.query) if k not in ("time", "start", "end")]
        key = (url.path, tuple(params))
        if key not in seen:
            seen.add(key)
            requests.append(url)
    if len(requests) < len(urls):
        print(f"# the fleet page sent {len(urls)} requests: its set of {len(requests)} retried", flush=True)
    return requests


def tls_contexts(args, n):
    """One per request: each its own viewer (replay-0, replay-1, ...), as the
    collector limits each identity's connections."""
    contexts = []
    for i in range(n):
        context = ssl.create_default_context(cafile=args.ca)
        stem = Path(args.replay_dir) / f"viewer-replay-{i % args.replay_viewers}"
        context.load_cert_chain(f"{stem}.pem", f"{stem}.key")
        contexts.append(context)
    return contexts


def replay(args, origin, requests):
    """Per request and per set latencies (ms) of `--replays` concurrent sets,
    each request on a new connection (its TLS handshake included)."""
    netloc = urllib.parse.urlsplit(origin).netloc
    host, port = netloc.rsplit(":", 1)
    contexts = tls_contexts(args, len(requests))
    per_request = [[] for _ in requests]
    sets = []
    errors = []

    def one(i, barrier):
        target = requests[i].path + ("?" + requests[i].query if requests[i].query else "")
        connection = http.client.HTTPSConnection(host, int(port), context=contexts[i], timeout=60)
        barrier.wait()
        start = time.perf_counter()
        try:
            connection.request("GET", target, headers={"Accept": "application/json", "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{target}: {e}")
            return
        finally:
            connection.close()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            errors.append(f"{target}: HTTP {response.status} {body[:200]!r}")
        per_request[i].append((elapsed, len(body)))

    for _ in range(args.replays):
        barrier = threading.Barrier(len(requests) + 1)
        threads = [threading.Thread(target=one, args=(i, barrier)) for i in range(len(requests))]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join(timeout=120)
        sets.append((time.perf_counter() - start) * 1000)
        if errors:
            raise SystemExit("replay failed: " + "; ".join(errors[:3]))
    return per_request, sets


def report_replay(requests, per_request, sets):
    worst = 0.0
    for request, samples in zip(requests, per_request):
        times = [t for t, _ in samples]
        query = urllib.parse.parse_qs(request.query)
        what = request.path + (" " + query["query"][0] if "query" in query else "")
        p99 = percentile(times, 99)
        worst = max(worst, p99)
        print(
            f"# {what[:110]}: p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, {samples[0][1]} bytes",
            flush=True,
        )
    figure("fleet_requests", len(requests))
    figure("fleet_request_p99_ms_worst", worst)
    figure("fleet_set_p50_ms", statistics.median(sets))
    figure("fleet_set_p99_ms", percentile(sets, 99))


# Resolves to MARK_LOADED's frame time once there is one, or null after
# `limit` ms. Polled by a timer of the page's own: playwright's
# `wait_for_function` would first evaluate its injected script (some
# hundred kilobytes) in the page, on the main thread the page loads on.
WAIT_PAINTED = """new Promise((resolve) => {
  const until = performance.now() + %d;
  const poll = () => {
    if (window.__bench && window.__bench.painted) resolve(window.__bench.painted);
    else if (performance.now() > until) resolve(null);
    else setTimeout(poll, 50);
  };
  poll();
})"""


def timed_load(context, url, check, timeout_s, cpu=None, settle=False):
    """Milliseconds from navigation start to the first frame after loaded,
    and what `check` (JavaScript) counts on the loaded page; with `cpu` (a
    `ProcessCpu`), the CPU time each kind of process spent from opening
    the tab to that frame is added to it. With `settle`, the new tab's
    renderer is left to finish starting (idle, then SETTLE_S) before the
    navigation begins."""
    before = cpu.sample() if cpu else None
    page = context.new_page()
    if settle:
        page.evaluate("() => new Promise((r) => requestIdleCallback(() => r(), { timeout: 2000 }))")
        time.sleep(SETTLE_S)
    cdp = context.new_cdp_session(page)
    page.goto(url, wait_until="commit")
    answer = cdp.send(
        "Runtime.evaluate",
        {"expression": WAIT_PAINTED % (timeout_s * 1000), "awaitPromise": True, "returnByValue": True},
    )
    cdp.detach()
    if cpu:
        cpu.add(before, cpu.sample())
    painted = answer.get("result", {}).get("value")
    if painted is None:
        page.close()
        raise PlaywrightTimeout(f"{url} not loaded within {timeout_s} s")
    counted = page.evaluate(check)
    return page, painted, counted


class ProcessCpu:
    """CPU time (user and system, from /proc) of the processes a page load
    keeps busy on this machine, by kind: chromium's browser, renderer, GPU
    and network processes (and its other helpers), playwright's driver,
    this script and the collector run with `--config collector_config`. Loads are
    summed; the per-load mean is reported, since /proc counts in ticks."""

    def __init__(self, collector_config):
        self.collector_config = collector_config
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.kinds = {}
        self.loads = 0

    def kind(self, pid, cmdline):
        if pid == os.getpid():
            return "python"
        if f"--config {self.collector_config}" in cmdline:
            return "collector"
        if "chromium" in cmdline:
            if "--type=" not in cmdline:
                return "browser"
            kind = cmdline.split("--type=", 1)[1].split()[0]
            if kind == "utility" and "NetworkService" in cmdline:
                return "network"
            return {"renderer": "renderer", "gpu-process": "gpu"}.get(kind, "chromium other")
        if "playwright" in cmdline and "node" in cmdline:
            return "playwright"
        return None

    def sample(self):
        """{pid: (kind, CPU ms)} of the processes of interest."""
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                kind = self.kind(int(entry.name), cmdline)
                if kind is None:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[int(entry.name)] = (kind, (int(fields[11]) + int(fields[12])) * self.tick_ms)
        return out

    def add(self, before, after):
        """One load: each process' CPU from `before` to `after` (a process
        started meanwhile, such as the tab's renderer, counts in full; one
        that ended meanwhile is left out)."""
        self.loads += 1
        for pid, (kind, ms) in after.items():
            earlier = before.get(pid)
            spent = ms - (earlier[1] if earlier and earlier[0] == kind else 0)
            self.kinds[kind] = self.kinds.get(kind, 0.0) + spent

    def report(self, what):
        if not self.loads:
            return
        per_load = {k: v / self.loads for k, v in sorted(self.kinds.items(), key=lambda kv: -kv[1])}
        print(
            f"# {what}, CPU per load by process (ms, mean of {self.loads}, from opening the tab to the frame after the mark): "
            + ", ".join(f"{k} {v:.0f}" for k, v in per_load.items())
            + f", all {sum(per_load.values()):.0f}",
            flush=True,
        )
        return sum(per_load.values())


def renderer_rss_bytes():
    """Resident bytes of this script's largest chromium renderer (the tab's)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def descends(pid):
        for _ in range(64):
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 0)
            if pid <= 1:
                return False
        return False

    best = 0
    for pid in parents:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"--type=renderer" in cmdline and descends(pid):
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) * 1024)
    return best


# The table holds a row for what is in view; it counts every host, and
# each row drawn has its CPU and its sparkline's points.
FLEET_CHECK = """() => {
  const rows = [...document.querySelectorAll("#hosts tbody tr[data-host]")];
  return {
    rowcount: Number(document.querySelector("#hosts").getAttribute("aria-rowcount")),
    rendered: rows.length,
    withCpu: rows.filter(r => /\\d/.test(r.querySelector(".col-cpu").textContent)).length,
    withSpark: rows.filter(r => Number(r.querySelector("canvas.spark").dataset.points) > 0).length,
  };
}"""
HOST_CHECK = """() => ({
  charts: document.querySelectorAll(".chart-box").length,
  drawn: document.querySelectorAll(".chart-box .uplot").length,
})"""
# Where a loaded host page's time went, from Navigation, Resource and
# Paint Timing (ms from navigation start): the page's HTML in, its parser's
# first asset asked for, the style sheets and modules it starts with in
# (from the cache), its first paint, its first API request sent, its
# last range request sent, its last API answer in, marked
# loaded, painted; and over its API requests the median and longest wait
# for an answer's first byte (the collector's time, queueing included),
# and the bytes they carried.
HOST_BREAKDOWN = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const all = performance.getEntriesByType("resource");
  const api = all.filter((r) => new URL(r.name).pathname.startsWith("/api/"));
  const ranges = api.filter((r) => r.name.includes("/query_range"));
  const max = (xs) => (xs.length ? Math.max(...xs) : 0);
  const min = (xs) => (xs.length ? Math.min(...xs) : 0);
  const firstApi = min(api.map((r) => r.startTime));
  const assets = all.filter((r) => new URL(r.name).pathname.startsWith("/assets/") && r.startTime < firstApi);
  const paint = performance.getEntriesByName("first-paint")[0];
  const waits = api.map((r) => r.responseStart - r.requestStart).sort((a, b) => a - b);
  return {
    html: nav.responseEnd,
    parse: min(assets.map((r) => r.startTime)),
    assets: max(assets.map((r) => r.responseEnd)),
    first_paint: paint ? paint.startTime : 0,
    first_api: firstApi,
    last_range_sent: max(ranges.map((r) => r.startTime)),
    last_api: max(api.map((r) => r.responseEnd)),
    loaded: window.__bench.loaded,
    painted: window.__bench.painted,
    api_wait_median: waits.length ? waits[Math.floor(waits.length / 2)] : 0,
    api_wait_max: max(waits),
    api_requests: api.length,
    api_kb: api.reduce((sum, r) => sum + r.encodedBodySize, 0) / 1024,
  };
}"""
# What a trace of a load records: the timeline (tasks, style, layout,
# paint), V8's compilation and execution, loading and the navigation's
# marks, with each event's thread CPU time.
TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "blink.user_timing",
    "loading",
    "toplevel",
    "v8",
    "v8.execute",
    "disabled-by-default-v8.compile",
]
# Kinds of main-thread work, by the first of their event names' parts that
# matches (exclusive CPU time: an event's own, less its children's).
TRACE_KINDS = [
    ("script", ("v8", "V8", "FunctionCall", "EvaluateScript", "RunMicrotasks", "AsyncTask", "GC")),
    ("style", ("UpdateLayoutTree", "recalcStyle", "updateStyle", "ParseAuthorStyleSheet", "CSSParser")),
    ("layout", ("Layout", "performLayout", "InlineNode", "Font")),
    ("paint", ("Paint", "Commit", "Canvas", "Raster", "Image")),
]


def main_thread_cpu(trace_path, painted_ms):
    """The host page's renderer main thread's CPU time (ms) from navigation
    start to `painted_ms`: in all, and per kind of work; None when the trace
    lacks the page's navigation."""
    with open(trace_path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    thread = next(
        ((e["pid"], e["tid"]) for e in events if e.get("name") == "ParseHTML" and "/hosts/" in json.dumps(e.get("args", {}))),
        None,
    )
    starts = [e["ts"] for e in events if e.get("name") == "navigationStart" and "/hosts/" in json.dumps(e.get("args", {}))]
    if thread is None or not starts:
        return None
    start = starts[-1]
    end = start + painted_ms * 1000
    spans = sorted(
        (e for e in events if (e["pid"], e["tid"]) == thread and e.get("ph") == "X" and "tdur" in e and start <= e["ts"] <= end),
        key=lambda e: (e["ts"], -e["dur"]),
    )
    kinds = {name: 0.0 for name, _ in TRACE_KINDS}
    kinds["other"] = 0.0
    total, open_spans = 0.0, []
    for e in spans:
        while open_spans and open_spans[-1][0] <= e["ts"]:
            open_spans.pop()
        kind = next((name for name, parts in TRACE_KINDS if any(p in e["name"] for p in parts)), "other")
        kinds[kind] += e["tdur"] / 1000
        if open_spans:
            kinds[open_spans[-1][1]] -= e["tdur"] / 1000
        else:
            total += e["tdur"] / 1000
        open_spans.append((e["ts"] + e["dur"], kind))
    return total, kinds


def traced_loads(args, browser, context, url):
    """`--trace-loads` host page loads, each traced: medians of the main
    thread's CPU per load, next to the loads' wall times."""
    walls, totals, kinds = [], [], []
    trace_path = Path(args.replay_dir) / "host-page-trace.json"
    for _ in range(args.trace_loads):
        page = context.new_page()
        browser.start_tracing(page=page, path=str(trace_path), categories=TRACE_CATEGORIES)
        cdp = context.new_cdp_session(page)
        page.goto(url, wait_until="commit")
        answer = cdp.send(
            "Runtime.evaluate",
            {"expression": WAIT_PAINTED % (args.page_timeout_s * 1000), "awaitPromise": True, "returnByValue": True},
        )
        cdp.detach()
        browser.stop_tracing()
        page.close()
        painted = answer.get("result", {}).get("value")
        if painted is None:
            raise SystemExit(f"traced host page not loaded within {args.page_timeout_s} s")
        cpu = main_thread_cpu(trace_path, painted)
        trace_path.unlink()
        if cpu is None:
            print("# a traced host page load lacks its navigation in the trace: left out", flush=True)
            continue
        walls.append(painted)
        totals.append(cpu[0])
        kinds.append(cpu[1])
    if not totals:
        raise SystemExit("no traced host page load could be read")
    print(
        f"# host page traced, {len(totals)} loads: wall {statistics.median(walls):.0f} ms, main thread CPU "
        + ", ".join(f"{k} {statistics.median(c[k] for c in kinds):.0f}" for k in kinds[0])
        + " ms (medians)",
        flush=True,
    )
    figure("host_24h_main_thread_cpu_ms_median", statistics.median(totals))


def memory(context, page):
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    figure("fleet_js_heap_used_bytes", int(metrics["JSHeapUsedSize"]))
    figure("fleet_js_heap_total_bytes", int(metrics["JSHeapTotalSize"]))
    figure("fleet_dom_nodes", int(metrics["Nodes"]))
    figure("fleet_renderer_rss_bytes", renderer_rss_bytes())


def fleet_loads(args, context, origin, runs, measure_memory):
    """Fleet page loads (ms) until `runs` or the first not interactive within
    `--page-timeout-s`; the tab's memory after the last when asked."""
    times = []
    for run in range(runs):
        try:
            page, ms, counted = timed_load(context, f"{origin}/", FLEET_CHECK, args.page_timeout_s)
        except PlaywrightTimeout:
            print(f"# fleet page not interactive within {args.page_timeout_s} s (run {run})", flush=True)
            return times, False
        rendered = counted["rendered"]
        if counted["rowcount"] != args.hosts + 1 or not 0 < rendered == counted["withCpu"] == counted["withSpark"]:
            raise SystemExit(f"fleet run {run}: {counted} for {args.hosts} hosts")
        times.append(ms)
        if run == 0:
            figure("fleet_rows_rendered", rendered)
        if measure_memory and run == runs - 1:
            memory(context, page)
        page.close()
    return times, True


def report_loads(name, times, complete, timeout_s):
    print(f"# {name} (ms): {', '.join(f'{t:.0f}' for t in times) or 'none'}", flush=True)
    if complete:
        figure(f"{name}_ms_median", statistics.median(times))
        figure(f"{name}_ms_p99", percentile(times, 99))
    else:
        figure(f"{name}_ms_median", f"over-{timeout_s}-s")
        figure(f"{name}_ms_p99", f"over-{timeout_s}-s")


def pages(args, context, origin):
    fleet, complete = fleet_loads(args, context, origin, args.runs, True)
    report_loads("fleet_interactive", fleet, complete, args.page_timeout_s)
    url = f"{origin}/hosts/{args.host}?range=24h"
    first = []
    for _ in range(2):
        page, ms, _ = timed_load(context, url, HOST_CHECK, args.page_timeout_s)
        first.append(ms)
        page.close()
    print(f"# host page, its first two loads (ms): {first[0]:.0f}, {first[1]:.0f}", flush=True)
    figure("host_24h_charts_first_ms", first[0])
    host, breakdowns = [], []
    cpu = ProcessCpu(str(Path(args.replay_dir) / "data.toml"))
    for _ in range(args.runs):
        page, ms, counted = timed_load(context, url, HOST_CHECK, args.page_timeout_s, cpu)
        host.append(ms)
        breakdowns.append(page.evaluate(HOST_BREAKDOWN))
        page.close()
    # The same loads, each in a tab whose renderer has finished starting:
    # a fresh tab's renderer process starts while the page loads (the
    # browser opens the tab and navigates at once) and shares the cores
    # with it; a user's browser keeps a renderer started ahead, or
    # navigates a tab already open. Reported beside the figure, not in it.
    settled = []
    for _ in range(args.runs):
        page, ms, _ = timed_load(context, url, HOST_CHECK, args.page_timeout_s, settle=True)
        settled.append(ms)
        page.close()
    print(f"# host page charts drawn: {counted['drawn']} of {counted['charts']}", flush=True)
    print(
        "# host page, medians of its loads (ms from navigation start unless named): "
        + ", ".join(f"{k} {statistics.median(b[k] for b in breakdowns):.0f}" for k in breakdowns[0]),
        flush=True,
    )
    all_cpu = cpu.report("host page")
    report_loads("host_24h_charts", host, True, args.page_timeout_s)
    figure("host_24h_charts_drawn", counted["drawn"])
    figure("host_24h_cpu_ms_per_load", round(all_cpu))
    report_loads("host_24h_charts_settled_tab", settled, True, args.page_timeout_s)


VIEWPORT = {"width": 1280, "height": 800}


def new_context(browser, args):
    """A private context of `browser`, logged in."""
    return logged_in(browser.new_context(viewport=VIEWPORT), args)


def profile_context(playwright, args):
    """Chromium with a new profile on disk under the replay directory,
    logged in: the browser the page loads are measured in."""
    profile = Path(args.replay_dir) / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=args.chromium, args=chromium_args(args), viewport=VIEWPORT
    )
    return logged_in(context, args)


def chromium_args(args):
    # The collector's certificate is from the bench's own CA: trusted by
    # its key, as a deployment's CA is by its users' browsers, so that
    # chromium caches the console's assets (it caches nothing from a site
    # whose certificate it finds in error).
    spki = base64.b64encode(bytes.fromhex(args.spki_sha256)).decode()
    return [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki}"]


def logged_in(context, args):
    """`context` logged in with the viewer token (the session cookie), as
    a user who logged in once."""
    page = context.new_page()
    page.goto(f"{args.origin}/login")
    page.locator("#token").fill(args.token)
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{args.origin}/", timeout=RECORD_TIMEOUT_MS)
    page.close()
    context.add_init_script(MARK_LOADED)
    return context


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--origin", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument(
        "--spki-sha256",
        required=True,
        help="hex SHA-256 of the collector's certificate's key, which chromium trusts",
    )
    parser.add_argument("--replay-dir", required=True, help="holds viewer-replay-N.pem and .key")
    parser.add_argument("--replay-viewers", type=int, required=True, help="N from 0 to this")
    parser.add_argument("--host", required=True, help="the host whose page is loaded")
    parser.add_argument("--hosts", type=int, required=True, help="hosts the fleet page must list")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--page-timeout-s", type=int, default=180)
    parser.add_argument("--trace-loads", type=int, default=0, help="host page loads traced after the timed ones")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.token = os.environ.get("CONSOLE_BENCH_TOKEN", "")
    if not args.token:
        raise SystemExit("CONSOLE_BENCH_TOKEN (a viewer's API token) is not set")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=chromium_args(args))
        context = new_context(browser, args)
        requests = record_fleet_requests(context, args.origin)
        context.close()
        per_request, sets = replay(args, args.origin, requests)
        report_replay(requests, per_request, sets)
        context = profile_context(p, args)
        pages(args, context, args.origin)
        context.close()
        if args.trace_loads > 0:
            context = new_context(browser, args)
            traced_loads(args, browser, context, f"{args.origin}/hosts/{args.host}?range=24h")
            context.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
