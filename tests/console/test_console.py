#!/usr/bin/env python3
"""The web console in a real browser (Debian's chromium, driven by Python
playwright) against a real collector and a real agent on this machine.

Run by tests/console/run.sh, which installs both and builds the programs.
Certificates come from `hostwatch certs`; everything listens on 127.0.0.1.
Exits non-zero on the first failed check, with the processes' logs.
"""

import argparse
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
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
HOST = "console-test-host"
# Waits are bounded: data within this, a refresh within REFRESH_WAIT_S.
DATA_WAIT_S = 60
REFRESH_WAIT_S = 40
IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
# Fires as soon as the host has sent its uptime; added to the collector's
# configuration (and reloaded) only for the alerts page's checks, so the
# earlier checks see the host without alerts of the test's own.
FIRING_RULE_NAME = "console_test_has_uptime"
FIRING_RULE = f"""
[[alerting.rules]]
name = "{FIRING_RULE_NAME}"
kind = "threshold"
metric = "host_uptime_seconds"
aggregate = "last"
window = "1s"
op = ">"
raise = 0
for = "0s"
labels = {{ severity = "info" }}
annotations = {{ summary = "{{{{ host }}}} is up" }}
"""
# The hooks the alerts page's "Test a hook" offers: one to the test's own
# webhook receiver, one to a port nothing listens on. Their matchers keep
# real alerts away: only tests reach them.
HOOK_OK = "console-webhook"
HOOK_DOWN = "console-down"
RECEIVER_ANSWER = "received by the console test's receiver"
HOOKS = """
[alerting]
[[alerting.hooks]]
name = "{ok}"
kind = "webhook"
url = "http://127.0.0.1:{receiver}/hook"
match = ["alertname=only-tests-reach-this-hook"]
[[alerting.hooks]]
name = "{down}"
kind = "webhook"
url = "http://127.0.0.1:{closed}/hook"
timeout = "2s"
match = ["alertname=only-tests-reach-this-hook"]
"""
# The agent's top-N processes: every process of a machine with at most
# this many, the agent's own included.
AGENT_TOP_PROCESSES = 128


def iec(n):
    """The console's IEC bytes (collector/console/format.js)."""
    unit, value = 0, float(n)
    while value >= 1024 and unit < len(IEC) - 1:
        value /= 1024
        unit += 1
    digits = 0 if unit == 0 or value >= 100 else 1 if value >= 10 else 2
    text = f"{value:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {IEC[unit]}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(condition, what):
    if not condition:
        raise AssertionError(what)


class WebhookReceiver:
    """An HTTP receiver on 127.0.0.1 recording every POSTed JSON body and
    answering 200 with RECEIVER_ANSWER."""

    def __init__(self):
        self.bodies = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                answer = RECEIVER_ANSWER.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tests(self, status):
        """The test notifications received with `status` (firing, resolved)."""
        return [
            b
            for b in self.bodies
            if b.get("status") == status and [a["labels"].get("alertname") for a in b["alerts"]] == ["HostwatchTestNotification"]
        ]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Processes:
    """The collector and agent, with their logs; stopped at exit."""

    def __init__(self, work):
        self.work = work
        self.running = {}

    def start(self, name, argv):
        log = open(self.work / f"{name}.log", "wb")
        self.running[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.work)

    def stop(self, name):
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def signal(self, name, number):
        self.running[name].send_signal(number)

    def pid(self, name):
        return self.running[name].pid

    def kill(self, name):
        process = self.running.pop(name)
        process.kill()
        process.wait()

    def stop_all(self):
        for name in list(self.running):
            self.stop(name)

    def logs(self):
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.work.glob("*.log"))
        )


def setup(bins, work, receiver):
    """Certificates and configurations for a collector (its hooks to
    `receiver` and to a closed port) and an agent."""
    certs = work / "certs"
    hostwatch = str(bins / "hostwatch")

    def run(*args):
        subprocess.run([hostwatch, *args], check=True, capture_output=True)

    run("certs", "init", "--dir", str(certs))
    run("certs", "issue", "--role", "collector", "--name", "console", "--dir", str(certs), "--ip", "127.0.0.1")
    run("certs", "issue", "--role", "agent", "--name", HOST, "--dir", str(certs))
    run("certs", "issue", "--role", "viewer", "--name", "browser", "--dir", str(certs))
    run("certs", "issue", "--role", "operator", "--name", "admin", "--dir", str(certs))
    grpc, http = free_port(), free_port()
    (work / "collector.toml").write_text(
        f"""listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
data_dir = "collector-data"
host_down_after = "3s"
{HOOKS.format(ok=HOOK_OK, down=HOOK_DOWN, receiver=receiver.port, closed=free_port())}
[tls]
ca = "certs/ca.pem"
cert = "certs/collector-console.pem"
key = "certs/collector-console.key"
"""
    )
    (work / "cli.toml").write_text(
        f"""collector = "127.0.0.1:{grpc}"

[tls]
ca = "certs/ca.pem"
cert = "certs/operator-admin.pem"
key = "certs/operator-admin.key"
"""
    )
    (work / "agent.toml").write_text(
        f"""collector = "127.0.0.1:{grpc}"
interval = "1s"
state_dir = "agent-state"

[processes]
top = {AGENT_TOP_PROCESSES}

[tls]
ca = "certs/ca.pem"
cert = "certs/agent-{HOST}.pem"
key = "certs/agent-{HOST}.key"
"""
    )
    return http, certs


def api(http, certs, path, **params):
    """GET on the HTTP API with the viewer's certificate: `data`."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "viewer-browser.pem"), str(certs / "viewer-browser.key"))
    url = f"https://127.0.0.1:{http}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return json.load(response)["data"]


def wait_for_data(http, certs, processes):
    """Until the API holds the host's CPU (a rate, so two samples) and file systems."""
    deadline = time.monotonic() + DATA_WAIT_S
    while time.monotonic() < deadline:
        try:
            cpu = api(http, certs, "/api/v1/query", query=f'host_cpu_utilization_ratio{{cpu="total",host="{HOST}"}}')
            fs = api(http, certs, "/api/v1/query", query=f'host_filesystem_size_bytes{{host="{HOST}"}}')
            if cpu["result"] and fs["result"]:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no data from the agent within {DATA_WAIT_S} s\n{processes.logs()}")


def memory_total():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def check_headers(headers, what):
    csp = headers.get("content-security-policy", "")
    check(csp.startswith("default-src 'self'") and "unsafe" not in csp, f"{what}: Content-Security-Policy {csp!r}")
    for name, want in [
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ]:
        check(headers.get(name) == want, f"{what}: {name} is {headers.get(name)!r}, want {want!r}")


def screenshots(page, out, name):
    """Full-page screenshots at 1280 and 390 px wide; neither may scroll sideways."""
    for width, height in [(1280, 800), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        # The charts follow their boxes' width (a resize observer).
        page.wait_for_function(
            "() => [...document.querySelectorAll('.chart-box')].every(b => !b.uplot || b.uplot.width <= b.clientWidth)",
            timeout=5000,
        )
        overflow = page.evaluate("document.documentElement.scrollWidth")
        check(overflow <= width, f"{name} at {width} px is {overflow} px wide")
        page.screenshot(path=str(out / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def cell(row, column):
    return row.locator(f".col-{column}").inner_text().strip()


def check_host_row(page, http, certs):
    """The host's row shows the machine's own figures."""
    row = page.locator(f'tr[data-host="{HOST}"]')
    row.wait_for(timeout=REFRESH_WAIT_S * 1000)
    check(cell(row, "host") == HOST, f"host cell {cell(row, 'host')!r}")
    check("Up" in cell(row, "status"), f"status {cell(row, 'status')!r}")
    seen = cell(row, "seen")
    check(re.fullmatch(r"just now|\d+ s ago", seen), f"last seen {seen!r}")
    cpu = cell(row, "cpu")
    match = re.fullmatch(r"(\d+(?:\.\d)?)%", cpu)
    check(match and 0 <= float(match.group(1)) <= 100, f"CPU {cpu!r}")
    memory = cell(row, "memory")
    check(
        re.match(r"\d+(\.\d)?%\s", memory) and f" of {iec(memory_total())}" in memory,
        f"memory {memory!r} should end in 'of {iec(memory_total())}'",
    )
    fs = cell(row, "fs").split()
    check(re.fullmatch(r"\d+(\.\d)?%", fs[0]) and os.path.ismount(fs[-1]), f"fullest file system {fs!r}")
    cores = api(http, certs, "/api/v1/query", query=f'host_cpu_count{{host="{HOST}"}}')["result"]
    cores = int(float(cores[0]["value"][1]))
    load = cell(row, "load")
    want = f"on {cores} CPU{'' if cores == 1 else 's'}"
    check(re.match(r"\d+(\.\d+)?\s+load \d+(\.\d+)? ", load) and load.endswith(want), f"load {load!r}, want {want!r}")
    check(cell(row, "alerts") == "none" or "firing" in cell(row, "alerts"), f"alerts {cell(row, 'alerts')!r}")
    spark = row.locator("canvas.spark")
    points = int(spark.get_attribute("data-points"))
    label = spark.get_attribute("aria-label")
    check(points >= 1 and f"{points} points" in label, f"sparkline {points} points, label {label!r}")
    counts = page.locator("#counts").inner_text()
    check(counts.startswith("1 host: 1 up · 0 down"), f"counts {counts!r}")


# The console's formatting and range parsing, run in the page itself:
# (JavaScript expression, what it must give).
JS_CASES = [
    ("f.bytes(0)", "0 B"),
    ("f.bytes(1023)", "1023 B"),
    ("f.bytes(1536)", "1.5 KiB"),
    ("f.bytes(300 * 1024 ** 3)", "300 GiB"),
    ("f.bytes(12.34 * 1024 ** 4)", "12.3 TiB"),
    ("f.bytes(NaN)", "—"),
    ("f.percent(0.004)", "0.4%"),
    ("f.percent(0.1234)", "12%"),
    ("f.percent(1)", "100%"),
    ("f.duration(45)", "45 s"),
    ("f.duration(200)", "3 min 20 s"),
    ("f.duration(7260)", "2 h 1 min"),
    ("f.duration(90000)", "1 d 1 h"),
    ("f.ago(Date.now() - 90000)", "1 min 30 s ago"),
    ("/^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC([+−]\\d\\d:\\d\\d)?$/.test(f.dateTime(Date.now()))", True),
    ("h.parseRange('?range=6h', 1e6).start", 1e6 - 6 * 3600),
    ("h.parseRange('', 1e6).preset", "1h"),
    ("h.parseRange('?range=9y', 1e6).problem.startsWith('Unknown range')", True),
    ("h.parseRange('?from=2000&to=1000', 1e6).problem.includes('at least 10 s before')", True),
    ("h.parseRange('?from=1970-01-01T00:10:00Z&to=1200', 1e6).start", 600),
    ("h.parseRange('?from=100&to=2000000', 1e6).end", 1e6),
    ("h.parseRange('?from=2000000&to=3000000', 1e6).problem.includes('future')", True),
    # The fleet's status comes from the collector's host registry, never
    # from alerts or a rule's text: down is no batch stored within
    # host_down_after (`up` false) without a clean stop.
    ("fl.hostStatus({up: false, cleanShutdown: false}, false)", "down"),
    ("fl.hostStatus({up: false, cleanShutdown: false}, true)", "down"),
    ("fl.hostStatus({up: false, cleanShutdown: true}, false)", "silent"),
    ("fl.hostStatus({up: true, cleanShutdown: false}, true)", "up"),
    ("fl.hostStatus({up: true, cleanShutdown: false}, false)", "silent"),
    ("fl.hostStatus(undefined, true)", "up"),
    ("fl.hostStatus(undefined, false)", "silent"),
    ("fl.hostStatus({up: false, cleanShutdown: false, revoked: \"2026-12-06T07:00:00Z\"}, false)", "revoked"),
    # A silenced alert says so in words, and names its silence.
    ("a.stateText({state: 'firing', labels: {severity: 'critical'}, silencedBy: ['ab12']})", "Firing · critical · silenced"),
    ("a.stateText({state: 'pending', labels: {}})", "Pending · no severity"),
    ("a.silencedBy({silencedBy: []}, new Map())", ""),
    (
        "a.silencedBy({silencedBy: ['ab12']}, a.byId([{id: 'ab12', comment: 'disk swap', endsAt: new Date(Date.now() + 7290e3).toISOString()}])).textContent.replace(/ends .* \\(/, 'ends (')",
        "Silenced by ab12 · ends (in 2 h 1 min) · “disk swap”",
    ),
    # An alert's cause: the engine's annotations first, in their order, then the rule's; the summary left out.
    ("a.cause({summary: 's'})", None),
    (
        "[...a.cause({summary: 's', zone: 'z', time_to_full: '3 h', mountpoint: '/'}).children].map(e => e.textContent).join('|')",
        "Mount|/|Time to full|3 h|zone|z",
    ),
]


def check_javascript(page):
    """The pure functions of format.js, host.js, fleet.js and alertview.js, imported into the page.

    The cases go into the evaluated script's text: the page's own
    Content-Security-Policy forbids it to compile strings (no 'unsafe-eval').
    """
    got = page.evaluate(
        """async () => {
            const base = document.querySelector('script[type=module]').src.replace(/app\\.js$/, '');
            const f = await import(base + 'format.js');
            const h = await import(base + 'host.js');
            const a = await import(base + 'alertview.js');
            const fl = await import(base + 'fleet.js');
            return [%s];
        }"""
        % ", ".join(expr for expr, _ in JS_CASES)
    )
    for (expr, want), value in zip(JS_CASES, got):
        check(value == want, f"{expr} gave {value!r}, want {want!r}")


def check_quiet_host(context, origin):
    """Seen from 10 minutes ahead, the host has no sample within PromQL's
    lookback: "No recent data", with its real last sample time."""
    page = context.new_page()
    page.clock.set_fixed_time(time.time() + 600)
    page.goto(f"{origin}/")
    page.locator('main[data-loaded="true"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    row = page.locator(f'tr[data-host="{HOST}"]')
    check(row.get_attribute("data-status") == "silent", f"status ahead: {cell(row, 'status')!r}")
    check("No recent data" in cell(row, "status"), f"status ahead: {cell(row, 'status')!r}")
    seen = cell(row, "seen")
    check(re.fullmatch(r"(9|10) min( \d+ s)? ago", seen), f"last seen ahead: {seen!r}")
    counts = page.locator("#counts").inner_text()
    check(counts == "1 host: 0 up · 0 down · 0 alerting · 1 without recent data", f"counts ahead: {counts!r}")
    page.close()


# Hosts added for the windowed table's checks: more than a short window's rows.
FLEET_HOSTS = [f"fleet-{i:02}" for i in range(24)]


def start_fleet(bins, work, processes):
    """An agent for each of FLEET_HOSTS, a certificate and state of its own."""
    hostwatch = str(bins / "hostwatch")
    grpc = re.search(r'listen = "127.0.0.1:(\d+)"', (work / "collector.toml").read_text()).group(1)
    for name in FLEET_HOSTS:
        subprocess.run(
            [hostwatch, "certs", "issue", "--role", "agent", "--name", name, "--dir", str(work / "certs")],
            check=True,
            capture_output=True,
        )
        (work / f"agent-{name}.toml").write_text(
            f"""collector = "127.0.0.1:{grpc}"
interval = "2s"
state_dir = "agent-state-{name}"

[tls]
ca = "certs/ca.pem"
cert = "certs/agent-{name}.pem"
key = "certs/agent-{name}.key"
"""
        )
        processes.start(name, [str(bins / "hostwatch-agent"), "--config", f"agent-{name}.toml"])


def rendered(page):
    """The hosts of the table's rendered rows, by their row index."""
    pairs = page.evaluate(
        """() => [...document.querySelectorAll('#hosts tbody tr[data-host]')]
            .map(r => [Number(r.getAttribute('aria-rowindex')), r.dataset.host])"""
    )
    return dict(pairs)


def focused_row(page):
    """The row index of the row holding the focus, or None."""
    return page.evaluate("(() => { const r = document.activeElement.closest('tr'); return r && r.getAttribute('aria-rowindex'); })()")


def check_window(context, origin, bins, work, processes):
    """With more hosts than fit, the table renders the rows in view only:
    its row count is every host's; scrolling shows later hosts with their
    figures; the keyboard moves between rows and the focused row stays
    while scrolled away; the filter finds a host that was not rendered."""
    start_fleet(bins, work, processes)
    total = len(FLEET_HOSTS) + 1
    page = context.new_page()
    page.set_viewport_size({"width": 1280, "height": 400})
    page.goto(f"{origin}/")
    page.wait_for_function(
        f"() => document.querySelector('#hosts').getAttribute('aria-rowcount') === '{total + 1}'",
        timeout=REFRESH_WAIT_S * 1000,
    )
    counts = page.locator("#counts").inner_text()
    check(counts.startswith(f"{total} hosts:"), f"counts with the fleet {counts!r}")
    rows = rendered(page)
    check(2 in rows and len(rows) < total, f"rows rendered at the top: {rows}")
    check(total + 1 not in rows, f"the last row rendered before scrolling: {rows}")
    off_screen = next(h for h in FLEET_HOSTS if h not in rows.values())

    # Scrolled to the bottom: the last rows, with their figures.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    last = page.locator(f'#hosts tbody tr[aria-rowindex="{total + 1}"]')
    last.wait_for(timeout=5000)
    page.wait_for_function(
        f"""() => {{
            const row = document.querySelector('#hosts tbody tr[aria-rowindex="{total + 1}"]');
            return row && /%/.test(row.querySelector('.col-memory').textContent);
        }}""",
        timeout=REFRESH_WAIT_S * 1000,
    )
    rows = rendered(page)
    check(len(rows) < total and 2 not in rows, f"rows rendered at the bottom: {rows}")

    # The keyboard: Home from the last row's link, then the focused row
    # stays rendered while the view scrolls away from it.
    last.locator("a.host-name").focus()
    page.keyboard.press("Home")
    check(focused_row(page) == "2", f"Home focused row {focused_row(page)}")
    page.keyboard.press("ArrowDown")
    check(focused_row(page) == "3", f"ArrowDown focused row {focused_row(page)}")
    page.keyboard.press("End")
    check(focused_row(page) == str(total + 1), f"End focused row {focused_row(page)}")
    page.evaluate("window.scrollTo(0, 0)")
    page.locator('#hosts tbody tr[aria-rowindex="2"]').wait_for(timeout=5000)
    page.wait_for_timeout(300)
    check(focused_row(page) == str(total + 1), f"focus after scrolling away: row {focused_row(page)}")

    # The filter looks at every host, rendered or not.
    page.locator("#filter").fill(off_screen)
    page.locator(f'#hosts tbody tr[data-host="{off_screen}"]').wait_for(timeout=2000)
    matched = page.locator("#fleet-matched").inner_text()
    check(matched == f"1 of {total} hosts match “{off_screen}”.", f"filter's count {matched!r}")
    page.close()
    for name in FLEET_HOSTS:
        processes.stop(name)


def check_filter(page):
    box = page.locator("#filter")
    box.fill("no-such-host")
    empty = page.locator("#fleet-empty")
    check(empty.is_visible() and "no-such-host" in empty.inner_text(), "filter without match: no empty message")
    box.fill("status=up")
    page.locator(f'tr[data-host="{HOST}"]').wait_for(timeout=2000)
    box.fill("")


def chart_series(page, chart):
    """A chart's series read back from its uPlot object: label -> non-null values."""
    return page.locator(f'[data-chart="{chart}"]').evaluate(
        """box => box.uplot ? Object.fromEntries(box.uplot.series.slice(1).map((s, i) =>
            [s.label, box.uplot.data[i + 1].filter(v => v !== null)])) : null"""
    )


def x_range(page, chart):
    return page.locator(f'[data-chart="{chart}"]').evaluate("box => [box.uplot.scales.x.min, box.uplot.scales.x.max]")


def wait_loaded(page):
    page.locator('main[data-loaded="true"]').wait_for(timeout=REFRESH_WAIT_S * 1000)


# Each chart of the host page and a metric it draws.
CHART_METRICS = {
    "cpu": "host_cpu_time_ratio",
    "memory": "host_memory_used_bytes",
    "load": "host_load1",
    "pressure": "host_pressure_avg10_ratio",
    "space": "host_filesystem_size_bytes",
    "inodes": "host_filesystem_inodes",
    "disk": "host_disk_read_bytes_total",
    "network": "host_network_receive_bytes_total",
    "spool": "hostwatch_agent_spool_bytes",
    "agent": "hostwatch_agent_connected",
}


def check_every_chart(page, http, certs):
    """A chart per metric the agent sends here, with points; the empty state for the others."""
    for chart, metric in CHART_METRICS.items():
        stored = api(http, certs, "/api/v1/query", query=f'{metric}{{host="{HOST}"}}')["result"]
        series = chart_series(page, chart)
        if stored:
            check(series and any(series.values()), f"{chart}: the API holds {metric}, the chart has {series}")
        else:
            text = page.locator(f'[data-chart="{chart}"] .empty').inner_text()
            check(text == "No data for this host in this range.", f"{chart}: no {metric} stored, chart says {text!r}")


def check_host_page(page, origin, out, http, certs):
    """Charts with the machine's data; presets, zoom and bad ranges."""
    link = page.locator(f'tr[data-host="{HOST}"] a.host-name')
    asked = []
    record = lambda r: urllib.parse.urlsplit(r.url).path == "/api/v1/alerts" and asked.append(r.url)
    page.on("request", record)
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{origin}/hosts/{HOST}")
    wait_loaded(page)
    page.remove_listener("request", record)
    # The host's alerts only, by a label filter, not every host's.
    filters = [urllib.parse.parse_qs(urllib.parse.urlsplit(u).query).get("filter") for u in asked]
    check(filters and all(f == [f'host="{HOST}"'] for f in filters), f"the host page's alert requests {asked}")
    cpu = chart_series(page, "cpu")
    check(cpu and {"user", "system"} <= set(cpu) and all(cpu.values()), f"CPU chart {cpu}")
    check(all(0 <= v <= 1 for values in cpu.values() for v in values), "CPU modes outside 0..1")
    memory = chart_series(page, "memory")
    check(memory and memory.get("total"), f"memory chart {memory}")
    check(memory["total"][-1] == memory_total(), f"memory total {memory['total'][-1]} != {memory_total()}")
    check(all(memory["used"]) and max(memory["used"]) < memory_total(), f"memory used {memory.get('used')}")
    load = chart_series(page, "load")
    check(load and set(load) == {"1 min", "5 min", "15 min"} and all(load.values()), f"load chart {load}")
    check_every_chart(page, http, certs)
    alerts = [a for a in api(http, certs, "/api/v1/alerts")["alerts"] if a["labels"].get("host") == HOST]
    items = page.locator("#host-alerts li")
    if alerts:
        names = sorted(items.evaluate_all("lis => lis.map(li => li.dataset.alertname)"))
        check(names == sorted(a["labels"]["alertname"] for a in alerts), f"host alerts {names} != API's {alerts}")
    else:
        check(items.all_inner_texts() == ["No alerts pending or firing."], f"host alerts {items.all_inner_texts()}")

    # A preset: every chart spans it.
    page.locator('button[data-range="6h"]').click()
    page.wait_for_url("**range=6h")
    wait_loaded(page)
    check(page.locator('button[data-range="6h"]').get_attribute("aria-pressed") == "true", "6 h not pressed")
    for chart in ("cpu", "memory", "load"):
        lo, hi = x_range(page, chart)
        check(abs((hi - lo) - 6 * 3600) < 120, f"{chart} spans {hi - lo} s after picking 6 h")

    # A range typed in (local time), sent with Enter.
    now = time.time()
    local = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
    page.locator("#range-from").fill(local(now - 1800))
    page.locator("#range-to").fill(local(now))
    page.locator("#range-to").press("Enter")
    page.wait_for_url(f"**from={int(now - 1800)}&to={int(now)}")
    wait_loaded(page)
    check(x_range(page, "load") == [int(now - 1800), int(now)], f"typed range: load spans {x_range(page, 'load')}")

    # Dragging across one chart zooms all of them to the same range.
    now = time.time()
    page.goto(f"{origin}/hosts/{HOST}?from={int(now - 60)}&to={int(now)}")
    wait_loaded(page)
    # Whole in the window (the alerts above it may be long on a busy machine).
    page.locator('[data-chart="cpu"]').scroll_into_view_if_needed()
    over = page.locator('[data-chart="cpu"] .u-over').bounding_box()
    y = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + over["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.75, y, steps=5)
    page.mouse.move(over["x"] + over["width"] * 0.99, y, steps=5)
    page.mouse.up()
    page.wait_for_url(re.compile(r".*from=\d+&to=\d+$"))
    wait_loaded(page)
    check(page.locator("main").get_attribute("data-refreshing") == "false", "a zoomed range refreshes itself")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    start, end = float(query["from"][0]), float(query["to"][0])
    check(now - 35 <= start and end - start < 35, f"zoomed to {start}..{end}, dragged over {now - 30:.0f}..{now:.0f}")
    for chart in ("cpu", "memory", "load"):
        lo, hi = x_range(page, chart)
        check(abs(lo - start) <= 1 and abs(hi - end) <= 1, f"{chart} spans {lo}..{hi} after zooming to {start}..{end}")
    # The zoomed range holds the agent's samples: the screenshots show them.
    screenshots(page, out, "host")

    # Bad ranges in the address: a message, and the last hour.
    for search, message in [("?range=2x", "Unknown range"), ("?from=abc&to=1", "not valid"), (f"?from={int(now)}&to={int(now - 600)}", "not valid")]:
        page.goto(f"{origin}/hosts/{HOST}{search}")
        wait_loaded(page)
        notice = page.locator("#host-notice")
        check(notice.is_visible() and message in notice.inner_text(), f"{search}: notice {notice.inner_text()!r}")
        check(chart_series(page, "cpu"), f"{search}: no CPU chart")

    page.goto(f"{origin}/hosts/no-such-host")
    wait_loaded(page)
    empty = page.locator('[data-chart="cpu"] .empty').inner_text()
    check("No host named “no-such-host”" in empty, f"unknown host: {empty!r}")
    page.goto(f"{origin}/")
    wait_loaded(page)


def hostwatch_cli(bins, work, *args):
    """The `hostwatch` program as the operator `admin`: its stdout."""
    argv = [str(bins / "hostwatch"), "--config", str(work / "cli.toml"), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def check_token_login(browser, origin, bins, work, out):
    """A browser without a client certificate logs in with a token, sees
    the fleet, logs out; a bad token and an ended session say so."""
    token = hostwatch_cli(bins, work, "token", "create", "--name", "console", "--role", "viewer").strip()
    check(token.startswith("hwt_"), "no token from hostwatch token create")
    errors = []
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    context.on(
        "console",
        lambda m: m.type in ("error", "warning")
        # The refusals this test provokes, which the browser notes.
        and "status of 401" not in m.text
        and "net::ERR_ABORTED" not in m.text
        and errors.append(f"console {m.type}: {m.text} ({m.location.get('url')})"),
    )
    context.on("weberror", lambda e: errors.append(f"page error: {e.error}"))
    page = context.new_page()

    # The console sends to the login page, which says why.
    response = page.goto(f"{origin}/hosts/{HOST}")
    check(page.url.startswith(f"{origin}/login?reason=required"), f"without a credential: {page.url}")
    check(response.status == 200, f"the login page answered {response.status}")
    check_headers(response.headers, "/login")
    notice = page.locator("#notice").inner_text()
    check("Log in with an API token" in notice, f"login notice {notice!r}")
    screenshots(page, out, "login")

    # A bad token: the page again, with the reason, and no session.
    page.locator("#token").fill("hwt_" + "A" * 43)
    with page.expect_navigation():
        page.locator("button[type=submit]").click()
    notice = page.locator('#notice[role="alert"]')
    check("unknown or revoked" in notice.inner_text(), f"bad token: {notice.inner_text()!r}")
    check(not context.cookies(), f"a cookie after a bad token: {context.cookies()}")

    # The good token: back where the user was going, then the fleet.
    page.locator("#token").fill(token)
    with page.expect_navigation():
        page.locator("button[type=submit]").click()
    check(page.url == f"{origin}/hosts/{HOST}", f"after login: {page.url}")
    cookies = context.cookies()
    check(len(cookies) == 1, f"cookies {cookies}")
    cookie = cookies[0]
    check(
        cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/",
        f"session cookie {cookie}",
    )
    check(token[4:] not in cookie["value"], "the token is in the cookie")
    page.goto(f"{origin}/")
    page.locator('main[data-loaded="true"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    page.locator(f'tr[data-host="{HOST}"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    account = page.locator("#account").inner_text()
    check("console (viewer, token)" in account, f"account line {account!r}")

    # Logout: the login page, saying so; the console asks again.
    with page.expect_navigation(url=re.compile(r".*/login\?reason=logged_out.*")):
        page.locator("#logout").click()
    notice = page.locator("#notice").inner_text()
    check("logged out" in notice, f"after logout: {notice!r}")
    check(not context.cookies(), f"a cookie after logout: {context.cookies()}")
    page.goto(f"{origin}/")
    check("/login?reason=required" in page.url, f"/ after logout: {page.url}")

    # The session ends while the page is open (its token revoked): at its
    # next refresh, the page sends to the login page, saying why.
    page.locator("#token").fill(token)
    with page.expect_navigation():
        page.locator("button[type=submit]").click()
    page.locator(f'tr[data-host="{HOST}"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    hostwatch_cli(bins, work, "token", "revoke", "console")
    page.wait_for_url(re.compile(r".*/login\?reason=expired.*"), timeout=REFRESH_WAIT_S * 1000)
    notice = page.locator("#notice").inner_text()
    check("session has expired or ended" in notice, f"after the session ended: {notice!r}")
    check(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["next"] == ["/"], page.url)
    context.close()
    check(not errors, "errors in the browser console (token login):\n" + "\n".join(errors))


def cpu_count():
    """The CPUs /proc/stat lists, as the agent counts them."""
    return sum(1 for line in Path("/proc/stat").read_text().splitlines() if re.match(r"cpu\d", line))


def boot_time():
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def fact(page, key):
    return page.locator(f'[data-fact="{key}"]').inner_text().strip()


def check_facts(page, certs):
    """The facts panel against this machine (uname, /proc/stat, /proc/meminfo, /proc/cpuinfo) and the agent's certificate."""
    page.locator('#host-facts [data-fact="kernel"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    uname = os.uname()
    kernel = fact(page, "kernel")
    check(kernel == f"{uname.release} ({uname.machine})" or kernel.startswith(f"{uname.release} "), f"kernel {kernel!r}, uname says {uname.release}")
    cpu = fact(page, "cpu")
    check(cpu.startswith(f"{cpu_count()} × "), f"CPU {cpu!r}, /proc/stat lists {cpu_count()}")
    models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    if models:
        check(cpu.endswith(models[0].strip()), f"CPU {cpu!r}, /proc/cpuinfo says {models[0]!r}")
    memory = fact(page, "memory")
    check(memory == iec(memory_total()), f"memory {memory!r}, /proc/meminfo says {iec(memory_total())}")
    # Local time with its UTC offset, within a second of the kernel's boot time.
    boot = fact(page, "boot")
    shown = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot_time() + d)) for d in (-1, 0, 1)]
    check(any(boot.startswith(f"{t} UTC") for t in shown) and " (up " in boot, f"booted {boot!r}, /proc/stat says {shown[1]}")
    status = fact(page, "status")
    check("Up" in status and "connected" in status and "not connected" not in status, f"status {status!r}")
    seen = fact(page, "seen")
    check(re.search(r"\((just now|\d+ s ago)\)$", seen), f"last seen {seen!r}")
    check(re.fullmatch(r"version \d+\.\d+\.\d+\S*", fact(page, "agent")), f"agent {fact(page, 'agent')!r}")
    # The agent's certificate's notAfter, in local time.
    not_after = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(str(certs / f"agent-{HOST}.pem"))["notAfter"])
    expiry = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(not_after))
    certificate = fact(page, "certificate")
    check(certificate.startswith(f"expires {expiry} UTC") and "(in " in certificate, f"certificate {certificate!r}, the file says {expiry}")


def machine_processes():
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())


def check_process_table(page, agent_pid, before_ms):
    """The process table: real processes (names as /proc has them), the
    agent's own among them, from a snapshot at or before `before_ms`."""
    page.locator('#processes[data-loaded="true"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    rows = page.locator("#processes-table tbody tr")
    check(rows.count() > 0, f"no processes: {page.locator('#processes').inner_text()!r}")
    at = int(page.locator("#processes-at").get_attribute("data-ms"))
    check(at <= before_ms + 1, f"snapshot at {at} after the moment asked, {before_ms}")
    pids = []
    for row in rows.all():
        pid = int(cell(row, "pid"))
        pids.append(pid)
        comm = Path(f"/proc/{pid}/comm")
        try:
            name = comm.read_text().strip()
        except OSError:
            continue  # ended since the snapshot
        if name.startswith("kworker/"):
            continue  # a kernel worker's name follows the work it is doing
        check(cell(row, "name") == name, f"pid {pid}: {cell(row, 'name')!r}, /proc says {name!r}")
        check(re.fullmatch(r"\d+(\.\d)?%", cell(row, "cpu")), f"pid {pid}: CPU {cell(row, 'cpu')!r}")
        check(re.fullmatch(r"\d+(\.\d+)? (B|KiB|MiB|GiB)", cell(row, "memory")), f"pid {pid}: memory {cell(row, 'memory')!r}")
    check(agent_pid in pids or machine_processes() > AGENT_TOP_PROCESSES, f"the agent ({agent_pid}) is not among {pids}")


def check_host_refresh(page, origin):
    """A preset range reads its data again by itself, without a reload;
    the agent's health chart holds every series it names, with points."""
    page.goto(f"{origin}/hosts/{HOST}?range=1h")
    wait_loaded(page)
    check(page.locator("main").get_attribute("data-refreshing") == "true", "the last hour does not refresh itself")
    # A counter's increase takes two points a step apart (a step fits the
    # chart's width: seconds at 1 h): for a young agent, the page's own
    # refreshes bring them.
    page.wait_for_function(
        """() => { const u = document.querySelector('[data-chart="agent"]').uplot;
                   return u && u.data.slice(1).every(c => c.some(v => v !== null)); }""",
        timeout=(DATA_WAIT_S + REFRESH_WAIT_S) * 1000,
    )
    agent = chart_series(page, "agent")
    want = {"batches waiting", "reconnects", "dropped batches", "connected (1 = yes)"}
    check(agent and set(agent) == want and all(agent.values()), f"agent health chart {agent}")
    check(agent["connected (1 = yes)"][-1] == 1, f"the agent is connected, the chart says {agent['connected (1 = yes)']}")
    check(all(v >= 0 for v in agent["reconnects"] + agent["dropped batches"]), f"negative increases {agent}")
    page.evaluate("() => { window.beforeRefresh = true; }")
    end = x_range(page, "cpu")[1]
    page.wait_for_function(
        f"() => document.querySelector('[data-chart=\"cpu\"]').uplot.scales.x.max > {end}",
        timeout=REFRESH_WAIT_S * 1000,
    )
    check(page.evaluate("() => window.beforeRefresh === true"), "the page was reloaded rather than refreshed")
    line = page.locator("#connection").inner_text()
    check(line.startswith("Updated"), f"connection line after a refresh {line!r}")


def docs_screenshots(page, origin, out):
    """The pictures of docs/img (copied there by hand): the fleet at 1280
    and 390 px and the host page's top at 1280 px, each as much as a
    window shows (not the whole page), with the machine's clock."""
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{origin}/")
    page.locator(f'tr[data-host="{HOST}"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    page.screenshot(path=str(out / "docs-fleet-1280.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(out / "docs-fleet-390.png"))
    page.set_viewport_size({"width": 1280, "height": 1300})
    now = int(time.time())
    # The agent started a minute or two ago: a range its samples fill.
    page.goto(f"{origin}/hosts/{HOST}?from={now - 60}&to={now}")
    wait_loaded(page)
    page.screenshot(path=str(out / "docs-host-1280.png"))
    page.set_viewport_size({"width": 1280, "height": 800})


def check_host_panels(page, origin, out, http, certs, agent_pid):
    """Facts, a click on a chart showing that moment's processes (and the
    same from the keyboard), the predicted time to full, the alert history."""
    now = time.time()
    # A short range, so that a click near its end falls after the agent's first snapshot.
    page.goto(f"{origin}/hosts/{HOST}?from={int(now - 20)}&to={int(now)}")
    wait_loaded(page)
    check_facts(page, certs)

    # A click at 95% of the CPU chart's width: that moment's snapshot.
    over = page.locator('[data-chart="cpu"] .u-over')
    # Whole in the window, so that the click lands on it.
    page.locator('[data-chart="cpu"]').scroll_into_view_if_needed()
    box = over.bounding_box()
    clicked = page.locator('[data-chart="cpu"]').evaluate(
        "(b, x) => b.uplot.posToVal(x, 'x')", box["width"] * 0.95
    )
    page.mouse.click(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)
    check(page.url.endswith(f"to={int(now)}"), f"a click must not zoom: {page.url}")
    check_process_table(page, agent_pid, clicked * 1000)
    focused = page.evaluate("document.activeElement.id")
    check(focused == "processes-title", f"after a click the focus is on {focused!r}")
    screenshots(page, out, "host-processes")

    # From the keyboard: a time typed in, sent with Enter.
    moment = time.time() - 5
    page.locator("#processes-time").fill(time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(moment)))
    page.locator("#processes-time").press("Enter")
    check_process_table(page, agent_pid, int(moment) * 1000 + 1000)
    # Before the agent's first sample: no snapshot, said so.
    page.locator("#processes-time").fill("2001-01-01T00:00:00")
    page.locator("#processes-time").press("Enter")
    page.locator("#processes-empty").wait_for(timeout=5000)

    # Every mount of the space chart, with its prediction.
    mounts = api(http, certs, "/api/v1/query", query=f'host_filesystem_available_bytes{{host="{HOST}"}}')["result"]
    items = page.locator("#time-to-full li[data-mount]")
    shown = sorted(items.evaluate_all("lis => lis.map(li => li.dataset.mount)"))
    check(shown == sorted({m["metric"]["mountpoint"] for m in mounts}), f"time to full lists {shown}")
    for text in items.all_inner_texts():
        check(re.search(r"% used, .+ available; (full in .+|not filling)$", text), f"time to full {text!r}")

    # The alert history: as the API has it.
    history = api(http, certs, "/api/v1/hostwatch/alerts/history", host=HOST, limit=20)
    rows = page.locator("#host-history tbody tr")
    if history:
        check(rows.count() == len(history), f"host history shows {rows.count()} of {len(history)}")
    else:
        check(page.locator("#history-empty").is_visible(), "no empty state for the host's history")


def history_rows(page):
    return page.locator("#history tbody tr").evaluate_all(
        "trs => trs.map(tr => [tr.dataset.alertname, tr.dataset.to, tr.dataset.host])"
    )


def check_alerts_page(page, origin, out, http, certs, processes):
    """The alerts page: its empty state, then an always-firing rule added
    (by reloading the collector's rules) listed with its cause, and the
    history's filters."""
    page.goto(f"{origin}/")
    wait_loaded(page)
    page.locator("#nav-alerts").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{origin}/alerts")
    wait_loaded(page)
    check(page.locator("#nav-alerts").get_attribute("aria-current") == "page", "Alerts not the current page")
    active = api(http, certs, "/api/v1/alerts")["alerts"]
    if not active:
        check(page.locator("#no-alerts").inner_text() == "No alerts firing or pending.", "no empty state")

    config = Path(processes.work / "collector.toml")
    config.write_text(config.read_text().replace("[tls]", FIRING_RULE + "\n[tls]", 1))
    processes.signal("collector", signal.SIGHUP)
    firing = page.locator(f'#active-alerts li[data-alertname="{FIRING_RULE_NAME}"][data-state="firing"]')
    firing.wait_for(timeout=REFRESH_WAIT_S * 1000)
    text = firing.inner_text()
    check(text.startswith("Firing · info") and HOST in text and f"{HOST} is up" in text and "since" in text, f"firing alert {text!r}")
    counts = page.locator("#alert-counts").inner_text()
    check(re.fullmatch(r"[1-9]\d* firing · \d+ pending · 0 silenced", counts), f"counts {counts!r}")
    page.locator(f'#history tbody tr[data-alertname="{FIRING_RULE_NAME}"][data-to="firing"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
    screenshots(page, out, "alerts")

    # The filter, from the keyboard: the rule and the state it entered.
    page.locator("#filter-alertname").fill(FIRING_RULE_NAME)
    page.locator("#filter-state").select_option("firing")
    page.locator("#filter-alertname").press("Enter")
    page.wait_for_url(f"**/alerts?alertname={FIRING_RULE_NAME}&state=firing")
    wait_loaded(page)
    rows = history_rows(page)
    want = api(http, certs, "/api/v1/hostwatch/alerts/history", alertname=FIRING_RULE_NAME, state="firing", limit=200)
    check(rows and all(r == [FIRING_RULE_NAME, "firing", HOST] for r in rows), f"filtered history {rows}")
    check(len(rows) == len(want), f"filtered history shows {len(rows)}, the API has {len(want)}")
    # A state it never entered: the empty state.
    page.goto(f"{origin}/alerts?alertname={FIRING_RULE_NAME}&state=resolved")
    wait_loaded(page)
    empty = page.locator("#history-empty").inner_text()
    check(empty.startswith("No alert changed state matching alertname"), f"empty history {empty!r}")
    check(page.locator("#filter-state").input_value() == "resolved", "the address' filter is not in the form")
    # An unknown host: the API's message, not a blank page.
    page.goto(f"{origin}/alerts?host=no-such-host")
    wait_loaded(page)
    notice = page.locator("#history-notice")
    check(notice.is_visible() and "not_found" in notice.inner_text(), f"unknown host: {notice.inner_text()!r}")
    check(firing.count() == 1, "the firing alert should stay listed whatever the filter")


def api_as(http, certs, who, method, path, body=None, headers=None):
    """A request with the certificate `who` (viewer-browser, operator-admin): (status, JSON answer)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / f"{who}.pem"), str(certs / f"{who}.key"))
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"https://127.0.0.1:{http}{path}", data=data, method=method, headers=headers or {})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def cli_silences(bins, work):
    """`hostwatch silence list --json`, run as the operator `admin`."""
    return json.loads(hostwatch_cli(bins, work, "silence", "list", "--json"))


def check_silenced(alert, silence_id, comment, expire):
    """`alert` (a locator of an alert's item) is marked silenced in words,
    names the silence with its comment and end, and has the `expire`
    control (a selector; None: none, as for viewers)."""
    alert.and_(alert.page.locator('[data-silenced="true"]')).wait_for(timeout=10_000)
    badge = alert.locator(".alerts").inner_text()
    check(badge.endswith("· silenced"), f"silenced alert's state {badge!r}")
    note = alert.locator(f'.silenced-by li[data-silence="{silence_id}"]')
    text = note.inner_text()
    check(f"Silenced by {silence_id}" in text and comment in text and "ends " in text, f"silenced note {text!r}")
    controls = note.locator("button, a").count()
    if expire is None:
        check(controls == 0, f"a viewer has {controls} controls to expire the silence")
    else:
        check(note.locator(expire).count() == 1, f"no {expire} on the silenced alert")


def check_silences(operator, viewer, origin, out, http, certs, bins, work):
    """An operator silences the firing alert from the alerts page (from the
    keyboard), the CLI lists it, a viewer sees it but may not make one,
    and expiring it in the page ends it."""
    comment = "console test: silenced from the page"
    operator.goto(f"{origin}/alerts")
    wait_loaded(operator)
    alert = operator.locator(f'#active-alerts li[data-alertname="{FIRING_RULE_NAME}"][data-state="firing"]')
    alert.wait_for(timeout=REFRESH_WAIT_S * 1000)
    alert.locator("button.silence-alert").focus()
    operator.keyboard.press("Enter")
    form = operator.locator("#silence-form")
    form.wait_for(state="visible", timeout=5000)
    names = form.locator('.matcher-row [name="name"]').evaluate_all("inputs => inputs.map(i => i.value)")
    check({"alertname", "host", "severity"} <= set(names), f"the form's matchers {names}")
    values = form.locator('.matcher-row [name="value"]').evaluate_all("inputs => inputs.map(i => i.value)")
    check(FIRING_RULE_NAME in values and HOST in values, f"the form's matcher values {values}")
    # Remove the severity matcher; four hours; a comment; Enter submits.
    row = form.locator(".matcher-row").filter(has=operator.locator('[name="name"][value="severity"]'))
    row.locator("button.remove").click()
    check(form.locator(".matcher-row").count() == len(names) - 1, "the matcher was not removed")
    form.locator("#silence-duration").select_option("4h")
    form.locator("#silence-comment").fill(comment)
    form.locator("#silence-comment").press("Enter")
    item = operator.locator("#silences li.silence")
    item.first.wait_for(timeout=10_000)
    check(form.is_hidden(), "the form stays open after the silence was made")
    text = item.first.inner_text()
    check("by admin" in text and comment in text and f'alertname="{FIRING_RULE_NAME}"' in text, f"silence shown {text!r}")
    silence_id = item.first.get_attribute("data-id")

    # The CLI lists it: made by the operator's certificate, four hours.
    made = [s for s in cli_silences(bins, work) if s["id"] == silence_id]
    check(len(made) == 1, f"silence {silence_id} not in `hostwatch silence list`")
    made = made[0]
    check(made["active"] and made["created_by"] == "admin" and made["comment"] == comment, f"silence {made}")
    check(
        sorted(made["matchers"]) == sorted([f"alertname={FIRING_RULE_NAME}", f"host={HOST}"]),
        f"silence matchers {made['matchers']}",
    )
    span_s = (time_ms(made["ends"]) - time_ms(made["starts"])) / 1000
    check(abs(span_s - 4 * 3600) <= 1, f"silence lasts {span_s} s, want 4 h")
    # The alert it mutes says so, naming the silence, with its Expire button.
    check_silenced(alert, silence_id, comment, "button.expire-silence")
    muted = [a for a in api(http, certs, "/api/v1/alerts")["alerts"] if silence_id in a["silencedBy"]]
    check([a["labels"]["alertname"] for a in muted] == [FIRING_RULE_NAME], f"the API's alerts muted by it: {muted}")
    screenshots(operator, out, "alerts-silenced")
    # The host page's alert list too, with a link to the silence for operators.
    operator.goto(f"{origin}/hosts/{HOST}")
    wait_loaded(operator)
    on_host = operator.locator(f'#host-alerts li[data-alertname="{FIRING_RULE_NAME}"]')
    check_silenced(on_host, silence_id, comment, "a.expire-silence")
    on_host.locator("a.expire-silence").click()
    operator.wait_for_url(f"{origin}/alerts#silence-{silence_id}")
    wait_loaded(operator)
    operator.locator(f"#silence-{silence_id} button.expire").wait_for(timeout=5000)

    # A viewer sees the silence, no button to make or end one, and the
    # collector refuses the viewer's change even with its CSRF token.
    viewer.goto(f"{origin}/alerts")
    wait_loaded(viewer)
    viewer.locator(f'#silences li[data-id="{silence_id}"]').wait_for(timeout=5000)
    check(viewer.locator("button.silence-alert").count() == 0, "a viewer has a Silence button")
    check(viewer.locator("#silences button.expire").count() == 0, "a viewer has an Expire button")
    check_silenced(viewer.locator(f'#active-alerts li[data-alertname="{FIRING_RULE_NAME}"]'), silence_id, comment, None)
    viewer.goto(f"{origin}/hosts/{HOST}")
    wait_loaded(viewer)
    check_silenced(viewer.locator(f'#host-alerts li[data-alertname="{FIRING_RULE_NAME}"]'), silence_id, comment, None)
    _, session = api_as(http, certs, "viewer-browser", "GET", "/api/v1/session")
    body = {"matchers": [{"name": "host", "op": "=", "value": HOST}], "duration": "1h"}
    status, answer = api_as(
        http, certs, "viewer-browser", "POST", "/api/v1/hostwatch/silences", body, {"X-CSRF-Token": session["data"]["csrfToken"]}
    )
    check(status == 403 and "operator role" in answer["error"], f"a viewer's POST: {status} {answer}")
    status, answer = api_as(http, certs, "operator-admin", "POST", "/api/v1/hostwatch/silences", body)
    check(status == 403 and "X-CSRF-Token" in answer["error"], f"a POST without the CSRF token: {status} {answer}")

    # Expired from the alert it mutes: gone from the active list, the
    # alert no longer silenced, ended for the CLI.
    alert.locator("button.expire-silence").click()
    operator.locator(f'#silences li[data-id="{silence_id}"]').wait_for(state="detached", timeout=10_000)
    alert.and_(operator.locator('[data-silenced="false"]')).wait_for(timeout=10_000)
    check(alert.locator(".silenced-by").count() == 0, "the alert still names the expired silence")
    ended = [s for s in cli_silences(bins, work) if s["id"] == silence_id]
    check(ended and not ended[0]["active"], f"silence after Expire: {ended}")


def send_hook_test(page, hook, kind):
    """Sends `kind` (firing, resolved) to `hook` from the keyboard: the
    result line once it has the answer."""
    page.locator("#hook-test-hook").select_option(hook)
    page.locator("#hook-test-kind").select_option(kind)
    page.locator("#hook-test-send").focus()
    page.keyboard.press("Enter")
    # This test's answer, not the one before it (the hook and kind are set as it is sent).
    result = page.locator(f"#hook-test-result[data-hook='{hook}'][data-kind='{kind}']:not([data-result='sending'])")
    result.wait_for(timeout=20_000)
    return result


def check_hook_test(operator, viewer, origin, out, http, certs, receiver):
    """An operator tests hooks from the alerts page: the hooks in force are
    offered, the receiver gets the test notification and its resolution,
    the page shows its answer, and a receiver that is down shows the error;
    a viewer has no control and is refused by the endpoint."""
    operator.goto(f"{origin}/alerts")
    wait_loaded(operator)
    panel = operator.locator("#hook-test")
    check(panel.is_visible(), "no Test a hook panel for an operator")
    offered = operator.locator("#hook-test-hook option").evaluate_all("options => options.map(o => o.value)")
    hooks = [h["name"] for h in api(http, certs, "/api/v1/hostwatch/hooks")]
    check(offered == hooks and sorted(hooks) == sorted([HOOK_OK, HOOK_DOWN]), f"hooks offered {offered}, in force {hooks}")

    result = send_hook_test(operator, HOOK_OK, "firing")
    text = result.inner_text()
    check(result.get_attribute("data-result") == "delivered", f"test result {text!r}")
    check(text.startswith(f"{HOOK_OK}: delivered: HTTP 200") and RECEIVER_ANSWER in text, f"test result {text!r}")
    firing = receiver.tests("firing")
    check(len(firing) == 1, f"the receiver got {len(firing)} firing tests: {receiver.bodies}")
    summary = firing[0]["alerts"][0]["annotations"]["summary"]
    check(summary.startswith("Test notification from hostwatch"), f"test summary {summary!r}")
    check(firing[0]["receiver"] == HOOK_OK, f"test receiver {firing[0]['receiver']!r}")
    screenshots(operator, out, "alerts-hook-test")

    send_hook_test(operator, HOOK_OK, "resolved")
    check(len(receiver.tests("resolved")) == 1, f"the receiver got no resolved test: {receiver.bodies}")
    result = send_hook_test(operator, HOOK_DOWN, "firing")
    text = result.inner_text()
    check(result.get_attribute("data-result") == "retry", f"a test to a closed port: {text!r}")
    check(text.startswith(f"{HOOK_DOWN}: not delivered") and "127.0.0.1" in text, f"a test to a closed port: {text!r}")
    check(len(receiver.bodies) == 2, f"the receiver got {len(receiver.bodies)} requests, want 2")

    # A viewer sees no control; the endpoint refuses it with its CSRF token too.
    viewer.goto(f"{origin}/alerts")
    wait_loaded(viewer)
    check(viewer.locator("#hook-test").is_hidden(), "a viewer sees the Test a hook panel")
    check(viewer.locator("#hook-test-send:visible").count() == 0, "a viewer has a Send test button")
    _, session = api_as(http, certs, "viewer-browser", "GET", "/api/v1/session")
    status, answer = api_as(
        http, certs, "viewer-browser", "POST", f"/api/v1/hostwatch/hooks/{HOOK_OK}/test", {"resolve": False}, {"X-CSRF-Token": session["data"]["csrfToken"]}
    )
    check(status == 403 and "operator role" in answer["error"], f"a viewer's test: {status} {answer}")
    check(len(receiver.bodies) == 2, "a viewer's test reached the receiver")


def time_ms(rfc3339):
    """Milliseconds since the epoch of an RFC 3339 time ("...Z")."""
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000


def run(bins, out):
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hostwatch-console-") as tmp:
        work = Path(tmp)
        receiver = WebhookReceiver()
        http, certs = setup(bins, work, receiver)
        processes = Processes(work)
        try:
            processes.start("collector", [str(bins / "hostwatch-collector"), "--config", "collector.toml"])
            processes.start("agent", [str(bins / "hostwatch-agent"), "--config", "agent.toml"])
            wait_for_data(http, certs, processes)
            browse(bins, http, certs, out, processes, work, receiver)
        except Exception:
            print(processes.logs(), file=sys.stderr)
            raise
        finally:
            processes.stop_all()
            receiver.stop()


def browse(bins, http, certs, out, processes, work, receiver):
    origin = f"https://127.0.0.1:{http}"
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def reader_context(who="viewer-browser"):
            """A context holding the certificate `who` (the viewer's by default), its console errors collected."""
            context = browser.new_context(
                # The collector's certificate is from the test's own CA.
                ignore_https_errors=True,
                client_certificates=[
                    {
                        "origin": origin,
                        "certPath": str(certs / f"{who}.pem"),
                        "keyPath": str(certs / f"{who}.key"),
                    }
                ],
                viewport={"width": 1280, "height": 800},
            )
            # Every page of the context, the 404 page's included.
            context.on(
                "console",
                lambda m: m.type in ("error", "warning")
                # The browser notes the 404 page's own status; that is the point of it.
                and not (m.location.get("url", "").endswith("/no/such/page") and "status of 404" in m.text)
                # Nor the API's 404 for the unknown host the test asks about on purpose.
                and not ("no-such-host" in m.location.get("url", "") and "status of 404" in m.text)
                and errors.append(f"console {m.type}: {m.text} ({m.location.get('url')})"),
            )
            context.on("weberror", lambda e: errors.append(f"page error: {e.error}"))
            return context

        context = reader_context()
        page = context.new_page()
        assets = []
        page.on("response", lambda r: r.url.startswith(f"{origin}/assets/") and assets.append(r))

        response = page.goto(f"{origin}/")
        check(response.status == 200, f"/ answered {response.status}")
        check_headers(response.headers, "/")
        check(response.headers.get("cache-control") == "no-cache", f"/ cache-control {response.headers}")
        page.locator('main[data-loaded="true"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
        check_host_row(page, http, certs)
        check(len(assets) >= 4, f"assets loaded: {[a.url for a in assets]}")
        for asset in assets:
            check(asset.status == 200, f"{asset.url} answered {asset.status}")
            check_headers(asset.headers, asset.url)
            check("immutable" in asset.headers.get("cache-control", ""), f"{asset.url}: {asset.headers}")
        check_filter(page)
        check_javascript(page)
        check_quiet_host(context, origin)
        screenshots(page, out, "fleet")
        check_host_page(page, origin, out, http, certs)
        # The first context's clock was moved ahead (check_quiet_host):
        # these checks compare times with this machine's, so in a new one.
        fresh = reader_context()
        now_page = fresh.new_page()
        check_host_panels(now_page, origin, out, http, certs, processes.pid("agent"))
        check_host_refresh(now_page, origin)
        docs_screenshots(now_page, origin, out)
        check_alerts_page(now_page, origin, out, http, certs, processes)
        operator = reader_context("operator-admin")
        check_silences(operator.new_page(), now_page, origin, out, http, certs, bins, work)
        check_hook_test(operator.new_page(), now_page, origin, out, http, certs, receiver)
        operator.close()
        fresh.close()

        check(not errors, "errors in the browser console:\n" + "\n".join(errors))

        # The agent dies (a clean stop would not page): without a reload,
        # the host turns down once the collector's registry has stored
        # nothing of it within host_down_after.
        processes.kill("agent")
        page.locator(f'tr[data-host="{HOST}"][data-status="down"]').wait_for(timeout=REFRESH_WAIT_S * 1000)
        counts = page.locator("#counts").inner_text()
        check(counts.startswith("1 host: 0 up · 1 down"), f"counts after the agent stopped {counts!r}")
        status = cell(page.locator(f'tr[data-host="{HOST}"]'), "status")
        check("Down" in status, f"status after the agent stopped {status!r}")
        page.screenshot(path=str(out / "fleet-down-1280.png"), full_page=True)
        # The host page lists the firing host-down alert.
        host_page = context.new_page()
        host_page.goto(f"{origin}/hosts/{HOST}")
        wait_loaded(host_page)
        alert = host_page.locator('#host-alerts li[data-alertname="host_down"]').inner_text()
        check(alert.startswith("Firing · critical") and "since" in alert, f"host_down on the host page: {alert!r}")
        host_page.close()

        # A certificate needs no login: the account line names it.
        account = page.locator("#account").inner_text()
        check("browser (viewer, certificate)" in account, f"account line {account!r}")
        check(page.locator("#logout").count() == 0, "a logout button for a certificate")
        # Without a client certificate: the login page, and a token.
        check_token_login(browser, origin, bins, work, out)

        not_found = context.new_page()
        response = not_found.goto(f"{origin}/no/such/page")
        check(response.status == 404, f"/no/such/page answered {response.status}")
        check_headers(response.headers, "/no/such/page")
        check(not_found.locator("h1").inner_text() == "Page not found", "no 404 page")
        not_found.close()
        check(not errors, "errors in the browser console:\n" + "\n".join(errors))
        # In a context of its own: the first one's clock was moved ahead.
        fresh = reader_context()
        check_window(fresh, origin, bins, work, processes)
        fresh.close()
        check(not errors, "errors in the browser console:\n" + "\n".join(errors))

        # The collector stops: the page says so instead of going blank.
        processes.stop("collector")
        page.locator(".connection-down").wait_for(timeout=REFRESH_WAIT_S * 1000)
        line = page.locator("#connection").inner_text()
        check("Collector unreachable" in line, f"connection line {line!r}")
        check(page.locator(f'tr[data-host="{HOST}"]').count() == 1, "the last data should stay on the page")
        # The stopped collector's refused fetches are what the page reports,
        # not errors of its own: leave out the browser's network messages.
        own = [e for e in errors if "net::ERR_" not in e]
        check(not own, "errors in the browser console:\n" + "\n".join(own))
        page.screenshot(path=str(out / "fleet-unreachable-1280.png"), full_page=True)

        # The collector is back: the page picks up again without a reload.
        processes.start("collector", [str(bins / "hostwatch-collector"), "--config", "collector.toml"])
        page.wait_for_function(
            "() => document.querySelector('#connection').textContent.startsWith('Updated')",
            timeout=REFRESH_WAIT_S * 1000,
        )
        check(page.locator("#fleet-notice").is_hidden(), "the notice should go once the collector answers")
        check(page.locator(f'tr[data-host="{HOST}"]').count() == 1, f"{HOST} gone after the collector's restart")
        browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", type=Path, required=True, help="where hostwatch, hostwatch-collector and hostwatch-agent are")
    parser.add_argument("--out", type=Path, required=True, help="where to save screenshots")
    args = parser.parse_args()
    run(args.bin_dir.resolve(), args.out.resolve())
    print(f"console: all checks passed; screenshots in {args.out}")


if __name__ == "__main__":
    main()
