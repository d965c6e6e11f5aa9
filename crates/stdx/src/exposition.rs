//! The Prometheus text exposition format (version 0.0.4), written by hand
//! for the collector's and the agent's `/metrics`, and the latency
//! histogram both fill.
//!
//! Why not a client library: `prometheus-client`, the Prometheus
//! project's Rust client, writes OpenMetrics only: a counter's family is
//! named without its `_total` and its sample with it, which the 0.0.4
//! parser of `promtool check metrics` reads as a family of its own
//! without help, and refuses ("no help text"). Besides, the figures here
//! are read at scrape time from counters that already exist, so a
//! registry of metric objects would only copy them, and the agent keeps
//! its size.
//!
//! [`Text`] writes families: `# HELP`, `# TYPE`, then samples, label
//! values and help texts escaped as the format says. [`Histogram`] counts
//! durations into fixed buckets with relaxed atomics, no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) for latencies from a fraction of a millisecond
/// (an acknowledgement, a small query) to ten seconds (a query at its
/// limits, a maintenance pass).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A text exposition being written: families, each once, each followed
/// by its samples.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Self {
        Text::default()
    }

    /// Starts family `name`: its `# HELP` and `# TYPE` lines. The samples
    /// that follow, until the next family, must be its own.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name), "metric name {name:?}");
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape(help, false),
            kind.as_str()
        );
        self
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
        self
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// One histogram's samples (the family begun with [`Kind::Histogram`]):
    /// its cumulative buckets, `+Inf` last, then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            let le = match h.bounds.get(i) {
                Some(bound) => format_value(*bound),
                None => "+Inf".to_owned(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        self.value(h.sum_seconds);
        let _ = write!(self.out, "\n{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// The exposition written so far.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|le| ("le", le));
        for (i, (name, value)) in labels.iter().copied().chain(le).enumerate() {
            debug_assert!(valid_name(name), "label name {name:?}");
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{name}=\"{}\"", escape(value, true));
        }
        self.out.push('}');
    }

    fn value(&mut self, value: f64) {
        self.out.push_str(&format_value(value));
    }
}

/// A sample value as the format writes it: `NaN`, `+Inf`, `-Inf`, or the
/// shortest decimal that reads back as the same float.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// Backslashes and line feeds escaped, and double quotes too in a label
/// value.
fn escape(text: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quotes && c == '"');
    if !text.contains(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, a metric name (label names have no colon,
/// and these are the program's own).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Durations counted into fixed buckets: relaxed atomics only, so it can
/// sit on a hot path (two additions per observation).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every
    /// bound.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Histogram {
    /// A histogram with the increasing upper `bounds` (seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A histogram of [`LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Histogram::new(LATENCY_BUCKETS)
    }

    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = self.bounds.partition_point(|bound| *bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::latency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes_are_written_as_the_format_says() {
        let mut text = Text::new();
        text.family("a_total", Kind::Counter, "line one\nback\\slash \"quoted\"")
            .sample("a_total", &[("reason", "x\"y\\z\nw")], 3.0)
            .sample("a_total", &[("reason", "plain"), ("hook", "h")], 0.5);
        text.single("b_bytes", Kind::Gauge, "Bytes.", f64::INFINITY);
        text.single("c", Kind::Gauge, "C.", f64::NAN);
        text.single("d", Kind::Gauge, "D.", f64::NEG_INFINITY);
        text.single("e", Kind::Gauge, "E.", 1e21);
        assert_eq!(
            text.finish(),
            "# HELP a_total line one\\nback\\\\slash \"quoted\"\n# TYPE a_total counter\n\
             a_total{reason=\"x\\\"y\\\\z\\nw\"} 3\n\
             a_total{reason=\"plain\",hook=\"h\"} 0.5\n\
             # HELP b_bytes Bytes.\n# TYPE b_bytes gauge\nb_bytes +Inf\n\
             # HELP c C.\n# TYPE c gauge\nc NaN\n\
             # HELP d D.\n# TYPE d gauge\nd -Inf\n\
             # HELP e E.\n# TYPE e gauge\ne 1000000000000000000000\n"
        );
    }

    #[test]
    fn values_read_back_as_the_same_float() {
        for v in [0.1, 1.0 / 3.0, 1e-9, 123456789.125, -2.5, 0.0, 5e-324] {
            assert_eq!(format_value(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn a_histogram_counts_into_its_buckets_and_writes_them_cumulative() {
        static BOUNDS: &[f64] = &[0.01, 0.1];
        let h = Histogram::new(BOUNDS);
        for ms in [1, 10, 50, 100, 101, 3000] {
            h.observe(Duration::from_millis(ms));
        }
        let snapshot = h.snapshot();
        // 10 ms is at most 0.01, 100 ms at most 0.1: bounds are inclusive.
        assert_eq!(snapshot.buckets, [2, 2, 2]);
        assert_eq!(snapshot.count(), 6);
        assert!((snapshot.sum_seconds - 3.262).abs() < 1e-9);
        let mut text = Text::new();
        text.family("x_seconds", Kind::Histogram, "X.");
        text.histogram("x_seconds", &[("endpoint", "q")], &snapshot);
        assert_eq!(
            text.finish(),
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{endpoint=\"q\",le=\"0.01\"} 2\n\
             x_seconds_bucket{endpoint=\"q\",le=\"0.1\"} 4\n\
             x_seconds_bucket{endpoint=\"q\",le=\"+Inf\"} 6\n\
             x_seconds_sum{endpoint=\"q\"} 3.262\n\
             x_seconds_count{endpoint=\"q\"} 6\n"
        );
        let mut text = Text::new();
        text.histogram("y", &[], &Histogram::latency().snapshot());
        let text = text.finish();
        assert!(text.starts_with("y_bucket{le=\"0.0005\"} 0\n"), "{text}");
        assert!(text.ends_with("y_sum 0\ny_count 0\n"), "{text}");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("hostwatch_collector_up"));
        assert!(valid_name("_a:b9"));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
