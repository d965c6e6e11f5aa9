//! The HTTPS API's requests, counted and timed by handler: the route's
//! path with its parameters as written in the router (`{name}`), so a
//! label never holds what a client chose; console pages and assets are
//! `console`, anything else `other`.

use hostwatch_stdx::exposition::{Histogram, Kind, Text};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The routes of `http::api`, `http::hostwatch`, `http::silences`,
/// `http::hooks` and `http::login`, then the two catch-alls.
const HANDLERS: [&str; 25] = [
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/label/{name}/values",
    "/api/v1/metadata",
    "/api/v1/alerts",
    "/api/v1/rules",
    "/api/v1/status/buildinfo",
    "/api/v1/session",
    "/api/v1/hostwatch/hosts",
    "/api/v1/hostwatch/hosts/{host}",
    "/api/v1/hostwatch/processes",
    "/api/v1/hostwatch/alerts/history",
    "/api/v1/hostwatch/silences",
    "/api/v1/hostwatch/silences/{id}",
    "/api/v1/hostwatch/hooks",
    "/api/v1/hostwatch/hooks/{name}/test",
    "/-/healthy",
    "/-/ready",
    "/metrics",
    "/login",
    "/logout",
    CONSOLE,
    OTHER,
];
const CONSOLE: &str = "console";
const OTHER: &str = "other";

/// The handler of `path`, as an index into [`HANDLERS`].
fn handler(path: &str) -> usize {
    let matches = |pattern: &str| {
        let (mut p, mut q) = (pattern.split('/'), path.split('/'));
        loop {
            match (p.next(), q.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a.starts_with('{') => {
                    if b.is_empty() {
                        return false;
                    }
                }
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    };
    if let Some(i) = HANDLERS[..HANDLERS.len() - 2]
        .iter()
        .position(|p| matches(p))
    {
        return i;
    }
    let console = path == "/"
        || path == "/alerts"
        || path.starts_with("/hosts/")
        || path.starts_with("/assets/");
    HANDLERS.len() - if console { 2 } else { 1 }
}

/// One handler's requests: by status class (1xx to 5xx) and duration.
#[derive(Debug, Default)]
struct Handler {
    classes: [AtomicU64; 5],
    latency: Histogram,
}

/// Every handler's requests.
#[derive(Debug, Default)]
pub(crate) struct HttpFigures {
    handlers: [Handler; HANDLERS.len()],
}

impl HttpFigures {
    /// A request to `path` answered with `status` after `took`.
    pub(crate) fn observe(&self, path: &str, status: u16, took: Duration) {
        let handler = &self.handlers[handler(path)];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        handler.classes[class].fetch_add(1, Ordering::Relaxed);
        handler.latency.observe(took);
    }

    /// The handlers that had requests.
    pub(crate) fn write(&self, text: &mut Text) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let name = "hostwatch_collector_http_requests_total";
        text.family(
            name,
            Kind::Counter,
            "Authenticated HTTPS requests (and the login page's), by handler and status class.",
        );
        for (path, handler) in HANDLERS.iter().zip(&self.handlers) {
            for (code, count) in CLASSES.iter().zip(&handler.classes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    text.sample(name, &[("handler", *path), ("code", *code)], count as f64);
                }
            }
        }
        let name = "hostwatch_collector_http_request_duration_seconds";
        text.family(
            name,
            Kind::Histogram,
            "Time to answer HTTPS requests (the answer's body included: a query's whole evaluation), by handler.",
        );
        for (path, handler) in HANDLERS.iter().zip(&self.handlers) {
            let snapshot = handler.latency.snapshot();
            if snapshot.count() > 0 {
                text.histogram(name, &[("handler", *path)], &snapshot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_labelled_by_their_route_never_by_what_the_client_sent() {
        for (path, label) in [
            ("/api/v1/query", "/api/v1/query"),
            ("/api/v1/query_range", "/api/v1/query_range"),
            ("/api/v1/label/host/values", "/api/v1/label/{name}/values"),
            ("/api/v1/label//values", OTHER),
            ("/api/v1/label/a/b/values", OTHER),
            (
                "/api/v1/hostwatch/hosts/web-1",
                "/api/v1/hostwatch/hosts/{host}",
            ),
            ("/api/v1/hostwatch/hosts", "/api/v1/hostwatch/hosts"),
            (
                "/api/v1/hostwatch/silences/abc",
                "/api/v1/hostwatch/silences/{id}",
            ),
            (
                "/api/v1/hostwatch/hooks/pager/test",
                "/api/v1/hostwatch/hooks/{name}/test",
            ),
            ("/api/v1/hostwatch/hooks/pager", OTHER),
            ("/metrics", "/metrics"),
            ("/metrics/", OTHER),
            ("/", CONSOLE),
            ("/hosts/web-1", CONSOLE),
            ("/assets/1/app.js", CONSOLE),
            ("/api/v1/query/extra", OTHER),
            ("/random-attacker-path", OTHER),
            ("", OTHER),
        ] {
            assert_eq!(HANDLERS[handler(path)], label, "{path}");
        }
    }

    #[test]
    fn requests_are_written_by_handler_and_class_once_seen() {
        let figures = HttpFigures::default();
        figures.observe("/api/v1/query", 200, Duration::from_millis(3));
        figures.observe("/api/v1/query", 400, Duration::from_millis(1));
        figures.observe("/api/v1/label/job/values", 200, Duration::from_millis(1));
        let mut text = Text::new();
        figures.write(&mut text);
        let text = text.finish();
        assert!(text.contains("hostwatch_collector_http_requests_total{handler=\"/api/v1/query\",code=\"2xx\"} 1\n"), "{text}");
        assert!(text.contains("hostwatch_collector_http_requests_total{handler=\"/api/v1/query\",code=\"4xx\"} 1\n"), "{text}");
        assert!(text.contains("hostwatch_collector_http_request_duration_seconds_count{handler=\"/api/v1/label/{name}/values\"} 1\n"), "{text}");
        assert!(!text.contains("/api/v1/series"), "{text}");
    }
}
