//! The data model: series keys, points, batches, matchers.

use crate::TsdbError;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest metric or label name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Longest label value accepted.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;
/// Most labels a series may carry, `host` included.
pub const MAX_LABELS: usize = 32;
/// The label the store sets on every series from the batch's host.
pub const HOST_LABEL: &str = "host";

/// One label pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Hash of a metric and a label set that ignores the labels' order (a sum
/// of one FxHash per label). Kept in memory only, never stored: the store's
/// and the evaluator's per-sample series lookups start from it.
pub fn series_hash(metric: &str, labels: &[Label]) -> u64 {
    series_hash_of(
        metric,
        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
    )
}

/// [`series_hash`] of labels given as (name, value) pairs.
pub(crate) fn series_hash_of<'a>(
    metric: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> u64 {
    fn one(value: impl Hash) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        value.hash(&mut h);
        h.finish()
    }
    labels.fold(one(metric), |sum, pair| sum.wrapping_add(one(pair)))
}

/// A series' identity: metric name plus labels sorted by name, `host` among them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: Vec<Label>,
}

impl SeriesKey {
    /// Builds a key for `host`, validating names and sorting labels.
    pub fn for_host(host: &str, metric: &str, labels: &[Label]) -> Result<Self, TsdbError> {
        validate_name(metric)?;
        if labels.len() + 1 > MAX_LABELS {
            return Err(TsdbError::Invalid(format!(
                "{metric}: {} labels, at most {MAX_LABELS} allowed",
                labels.len() + 1
            )));
        }
        let mut all = Vec::with_capacity(labels.len() + 1);
        for label in labels {
            validate_name(&label.name)?;
            if label.name == HOST_LABEL {
                return Err(TsdbError::Invalid(format!(
                    "{metric}: label `host` is set by the collector, not the agent"
                )));
            }
            validate_value(&label.value)?;
            all.push(label.clone());
        }
        validate_value(host)?;
        all.push(Label::new(HOST_LABEL, host));
        all.sort();
        if all.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(TsdbError::Invalid(format!(
                "{metric}: duplicate label name"
            )));
        }
        Ok(SeriesKey {
            metric: metric.to_owned(),
            labels: all,
        })
    }

    /// Value of label `name`, if set.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// The host the series belongs to.
    pub fn host(&self) -> &str {
        self.label(HOST_LABEL).unwrap_or_default()
    }

    /// Binary encoding: metric, then name/value pairs, each NUL-terminated.
    /// Names and values never contain NUL (validated), so it is unambiguous.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(self.metric.as_bytes());
        out.push(0);
        for label in &self.labels {
            out.extend_from_slice(label.name.as_bytes());
            out.push(0);
            out.extend_from_slice(label.value.as_bytes());
            out.push(0);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, TsdbError> {
        let corrupt = || TsdbError::Corrupt("series key".to_owned());
        let mut parts = bytes.split(|b| *b == 0);
        let metric = parts.next().ok_or_else(corrupt)?;
        let metric = std::str::from_utf8(metric)
            .map_err(|_| corrupt())?
            .to_owned();
        let rest: Vec<&[u8]> = parts.collect();
        // The trailing NUL leaves one empty part at the end.
        let (last, pairs) = rest.split_last().ok_or_else(corrupt)?;
        if !last.is_empty() || pairs.len() % 2 != 0 {
            return Err(corrupt());
        }
        let labels = pairs
            .chunks(2)
            .map(|pair| {
                let name = std::str::from_utf8(pair[0]).map_err(|_| corrupt())?;
                let value = std::str::from_utf8(pair[1]).map_err(|_| corrupt())?;
                Ok(Label::new(name, value))
            })
            .collect::<Result<_, TsdbError>>()?;
        Ok(SeriesKey { metric, labels })
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        f.write_str("{")?;
        for (i, label) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        f.write_str("}")
    }
}

fn validate_name(name: &str) -> Result<(), TsdbError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok
        && name.len() <= MAX_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err(TsdbError::Invalid(format!(
            "invalid name {:?}: use [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_NAME_LEN} bytes",
            truncate(name)
        )))
    }
}

/// A host id is a label value: at most MAX_LABEL_VALUE_LEN bytes, no NUL, not empty.
pub(crate) fn validate_host(host: &str) -> Result<(), TsdbError> {
    if host.is_empty() {
        return Err(TsdbError::Invalid("host id is empty".to_owned()));
    }
    validate_value(host)
}

fn validate_value(value: &str) -> Result<(), TsdbError> {
    if value.len() > MAX_LABEL_VALUE_LEN || value.contains('\0') {
        return Err(TsdbError::Invalid(format!(
            "invalid label value {:?}: at most {MAX_LABEL_VALUE_LEN} bytes, no NUL",
            truncate(value)
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One sample: a wall-clock time in milliseconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t_ms: i64,
    pub value: f64,
}

/// Points of one series, as an agent sends them (no `host` label).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInput {
    pub metric: String,
    pub labels: Vec<Label>,
    pub points: Vec<Point>,
}

/// One agent batch: the unit of durability and of exactly-once storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Host id, from the agent's certificate.
    pub host: String,
    /// The agent's spool id; sequence numbers are unique per (host, source).
    pub source: u64,
    /// The batch's sequence number.
    pub seq: u64,
    pub series: Vec<SeriesInput>,
    /// Top-process snapshots taken while sampling this batch.
    pub processes: Vec<ProcessSnapshot>,
    /// Samples and snapshots of the batch its sender could not read (left
    /// out of `series` and `processes`): counted as rejected.
    pub malformed: u64,
}

/// The top processes of a host at one moment (an event, not series).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSnapshot {
    pub t_ms: i64,
    pub processes: Vec<ProcessInfo>,
}

/// One process of a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    pub command: String,
    pub user: String,
    /// Cores in use (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    pub start_time_ms: i64,
}

/// Why samples of a batch were not stored, counted per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// NaN or infinite values.
    pub non_finite: u64,
    /// Timestamps further in the future than the tolerance.
    pub future: u64,
    /// Timestamps older than the retention window.
    pub too_old: u64,
    /// Timestamps older than their series' newest sample by more than the
    /// out-of-order tolerance.
    pub out_of_order: u64,
    /// A second sample for a timestamp the series already holds (the first
    /// value is kept; an identical repeat is counted here too).
    pub duplicate: u64,
    /// Samples of series that would exceed the host's series limit.
    pub series_limit: u64,
    /// Samples of series with invalid names, labels or too many labels.
    pub invalid_series: u64,
    /// Samples beyond the most one series may hold in one chunk window
    /// ([`crate::Options::max_window_samples`]).
    pub too_dense: u64,
    /// Samples and snapshots the caller could not read (counted by it in
    /// [`Batch::malformed`]), e.g. arrays of unequal length.
    pub malformed: u64,
}

impl Rejections {
    /// Total samples rejected.
    pub fn total(&self) -> u64 {
        self.non_finite
            + self.future
            + self.too_old
            + self.out_of_order
            + self.duplicate
            + self.series_limit
            + self.invalid_series
            + self.too_dense
            + self.malformed
    }
}

/// What [`crate::Store::append`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The batch was stored before (a replay); nothing was written.
    pub duplicate: bool,
    /// Samples stored.
    pub stored: u64,
    pub rejected: Rejections,
    /// The first rejection's explanation, for the log.
    pub first_error: Option<String>,
}

/// A label matcher of a query.
#[derive(Debug, Clone)]
pub enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    /// Fully anchored regular expression.
    Regex(String, regex::Regex),
    NotRegex(String, regex::Regex),
}

impl Matcher {
    /// A regex matcher; the pattern is anchored at both ends, as in PromQL.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, TsdbError> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| TsdbError::Invalid(format!("regex for {name}: {e}")))?;
        Ok(if negate {
            Matcher::NotRegex(name.to_owned(), re)
        } else {
            Matcher::Regex(name.to_owned(), re)
        })
    }

    /// The label the matcher looks at.
    pub fn name(&self) -> &str {
        match self {
            Matcher::Equal(n, _) | Matcher::NotEqual(n, _) => n,
            Matcher::Regex(n, _) | Matcher::NotRegex(n, _) => n,
        }
    }

    /// Whether `key` satisfies the matcher; an absent label is the empty string.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.matches_value(key.label(self.name()))
    }

    /// Whether the matcher's label, with this value (absent = ""), matches.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match self {
            Matcher::Equal(_, v) => value == v,
            Matcher::NotEqual(_, v) => value != v,
            Matcher::Regex(_, re) => re.is_match(value),
            Matcher::NotRegex(_, re) => !re.is_match(value),
        }
    }
}

/// How a range query with a step folds the samples of each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// The newest sample of the step.
    Last,
    /// Per-second increase of a counter over the step; a decrease is a
    /// counter reset, after which the counter counts from zero.
    Rate,
}

impl Aggregation {
    /// Every aggregation, in the order of [`Aggregation::name`]s documented for users.
    pub const ALL: [Aggregation; 7] = [
        Aggregation::Avg,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Sum,
        Aggregation::Count,
        Aggregation::Last,
        Aggregation::Rate,
    ];

    /// The lowercase name used by the CLI and the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Last => "last",
            Aggregation::Rate => "rate",
        }
    }

    /// Parses a [`Aggregation::name`].
    pub fn parse(name: &str) -> Result<Self, TsdbError> {
        Aggregation::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                TsdbError::Invalid(format!(
                    "unknown aggregation {name:?}: use avg, min, max, sum, count, last or rate"
                ))
            })
    }
}

/// Points of one series returned by a query, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub key: SeriesKey,
    pub points: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_hashes_ignore_label_order_and_tell_series_apart() {
        let labels = |pairs: &[(&str, &str)]| -> Vec<Label> {
            pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
        };
        let ab = labels(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            series_hash("host_load1", &ab),
            series_hash("host_load1", &ab)
        );
        assert_eq!(
            series_hash("m", &ab),
            series_hash("m", &labels(&[("b", "2"), ("a", "1")]))
        );
        assert_ne!(
            series_hash("host_load1", &[]),
            series_hash("host_load5", &[])
        );
        assert_ne!(
            series_hash("m", &labels(&[("a", "bc")])),
            series_hash("m", &labels(&[("ab", "c")]))
        );
        assert_ne!(
            series_hash("m", &ab),
            series_hash("m", &labels(&[("a", "1")]))
        );
    }

    #[test]
    fn key_encoding_round_trips() {
        let key = SeriesKey::for_host(
            "web1",
            "host_filesystem_free_bytes",
            &[
                Label::new("mountpoint", "/var/lib"),
                Label::new("device", ""),
            ],
        )
        .unwrap();
        assert_eq!(key.labels[0].name, "device");
        assert_eq!(key.host(), "web1");
        assert_eq!(SeriesKey::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn invalid_keys_are_refused_with_a_reason() {
        let cases: Vec<(&str, Vec<Label>)> = vec![
            ("", vec![]),
            ("9metric", vec![]),
            ("has space", vec![]),
            ("m", vec![Label::new("host", "other")]),
            ("m", vec![Label::new("a", "x"), Label::new("a", "y")]),
            ("m", vec![Label::new("a", "nul\0")]),
            (
                "m",
                vec![Label::new("a", "x".repeat(MAX_LABEL_VALUE_LEN + 1))],
            ),
            (
                "m",
                (0..MAX_LABELS)
                    .map(|i| Label::new(format!("l{i}"), "v"))
                    .collect(),
            ),
        ];
        for (metric, labels) in cases {
            let err = SeriesKey::for_host("h", metric, &labels).unwrap_err();
            assert!(matches!(err, TsdbError::Invalid(_)), "{metric} {labels:?}");
        }
    }

    #[test]
    fn matchers_treat_absent_labels_as_empty() {
        let key = SeriesKey::for_host("h", "m", &[Label::new("cpu", "0")]).unwrap();
        assert!(Matcher::Equal("cpu".into(), "0".into()).matches(&key));
        assert!(Matcher::Equal("device".into(), "".into()).matches(&key));
        assert!(
            Matcher::regex("cpu", "[0-9]+", false)
                .unwrap()
                .matches(&key)
        );
        assert!(!Matcher::regex("cpu", "1|2", false).unwrap().matches(&key));
        assert!(Matcher::regex("cpu", "total", true).unwrap().matches(&key));
        assert!(Matcher::regex("cpu", "(", false).is_err());
    }
}
