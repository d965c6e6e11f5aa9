#!/usr/bin/env python3
"""The browser half of `hostwatch-bench console` (crates/bench/src/console.rs),
which starts the collector and runs this script with Python playwright
driving Debian's chromium (never `playwright install`).

1. Records the API requests the fleet page makes on its first load, then
   replays exactly those requests `--replays` times, all at once as the
   page sends them (one keep-alive connection each), with the browser's
   client certificate: per request and per set, time from sending to the
   last byte of the answer.
2. Loads the fleet page, then the host page at 24 h, `--runs` times each
   in a fresh tab. Time to interactive (fleet) and to charts complete
   (host) is measured from navigation start (performance.timeOrigin) to
   the first frame after the page marked itself loaded (`main`'s
   data-loaded="true", set once the data is in and drawn: every row with
   its figures, every chart); the rows and charts are counted.
3. The tab's memory after the fleet page: its JS heap (DevTools'
   Performance.getMetrics) and its renderer's resident memory (/proc).

Prints `name=value` lines (milliseconds, bytes) and `#` comments.
"""

import argparse
import http.client
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

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
# Bounded waits: a page is loaded within this or the run fails.
LOAD_TIMEOUT_MS = 120_000

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
    page.locator('main[data-loaded="true"]').wait_for(timeout=LOAD_TIMEOUT_MS)
    page.close()
    if not urls:
        raise SystemExit("the fleet page made no API request")
    return [urllib.parse.urlsplit(u) for u in urls]


def tls_context(args):
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    return context


def replay(args, origin, requests):
    """Per request and per set latencies (ms) of `--replays` concurrent sets."""
    netloc = urllib.parse.urlsplit(origin).netloc
    host, port = netloc.rsplit(":", 1)
    context = tls_context(args)
    connections = [http.client.HTTPSConnection(host, int(port), context=context, timeout=30) for _ in requests]
    per_request = [[] for _ in requests]
    sets = []
    errors = []

    def one(i, barrier):
        target = requests[i].path + ("?" + requests[i].query if requests[i].query else "")
        barrier.wait()
        start = time.perf_counter()
        try:
            connections[i].request("GET", target, headers={"Accept": "application/json"})
            response = connections[i].getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{target}: {e}")
            return
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
            t.join(timeout=60)
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


def timed_load(context, url, check):
    """Milliseconds from navigation start to the first frame after loaded,
    and what `check` (JavaScript) counts on the loaded page."""
    page = context.new_page()
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.__bench && window.__bench.painted", timeout=LOAD_TIMEOUT_MS)
    painted = page.evaluate("window.__bench.painted")
    counted = page.evaluate(check)
    return page, painted, counted


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


def pages(args, context, origin):
    fleet_check = """() => ({
      rows: document.querySelectorAll("#hosts tbody tr").length,
      withCpu: [...document.querySelectorAll("#hosts tbody td.col-cpu")].filter(c => /\\d/.test(c.textContent)).length,
    })"""
    host_check = """() => ({
      charts: document.querySelectorAll(".chart-box").length,
      drawn: document.querySelectorAll(".chart-box .uplot").length,
    })"""
    fleet, host = [], []
    for run in range(args.runs):
        page, ms, counted = timed_load(context, f"{origin}/", fleet_check)
        if counted["rows"] != args.hosts or counted["withCpu"] != args.hosts:
            raise SystemExit(f"fleet run {run}: {counted} for {args.hosts} hosts")
        fleet.append(ms)
        if run == args.runs - 1:
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            figure("fleet_js_heap_used_bytes", int(metrics["JSHeapUsedSize"]))
            figure("fleet_js_heap_total_bytes", int(metrics["JSHeapTotalSize"]))
            figure("fleet_dom_nodes", int(metrics["Nodes"]))
            figure("fleet_renderer_rss_bytes", renderer_rss_bytes())
        page.close()
        page, ms, counted = timed_load(context, f"{origin}/hosts/{args.host}?range=24h", host_check)
        host.append(ms)
        page.close()
    print(f"# fleet page loads (ms): {', '.join(f'{t:.0f}' for t in fleet)}", flush=True)
    print(f"# host page loads at 24 h (ms): {', '.join(f'{t:.0f}' for t in host)}", flush=True)
    print(f"# host page charts drawn: {counted['drawn']} of {counted['charts']}", flush=True)
    figure("fleet_interactive_ms_median", statistics.median(fleet))
    figure("fleet_interactive_ms_p99", percentile(fleet, 99))
    figure("host_24h_charts_ms_median", statistics.median(host))
    figure("host_24h_charts_ms_p99", percentile(host, 99))
    figure("host_24h_charts_drawn", counted["drawn"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--origin", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", required=True, help="the host whose page is loaded")
    parser.add_argument("--hosts", type=int, required=True, help="hosts the fleet page must list")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(
            # The collector's certificate is from the bench's own CA.
            ignore_https_errors=True,
            viewport={"width": 1280, "height": 800},
            client_certificates=[{"origin": args.origin, "certPath": args.cert, "keyPath": args.key}],
        )
        context.add_init_script(MARK_LOADED)
        requests = record_fleet_requests(context, args.origin)
        per_request, sets = replay(args, args.origin, requests)
        report_replay(requests, per_request, sets)
        pages(args, context, args.origin)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
