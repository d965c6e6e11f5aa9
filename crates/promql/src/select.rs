//! Reading series from the store: PromQL matchers to the store's, and
//! `__name__` matched against the stored metric names.

use crate::value::{Labels, METRIC_NAME};
use crate::{Limits, PromqlError};
use hostwatch_tsdb::{Label, Matcher, Point, SeriesKey, Store, TsdbError};
use promql_parser::label::MatchOp;
use promql_parser::parser::VectorSelector;
use std::sync::Arc;
use std::time::Instant;

/// A series computed by the engine (a subquery's): labels and points,
/// oldest first.
pub(crate) struct RawSeries {
    pub(crate) labels: Labels,
    pub(crate) points: Vec<Point>,
}

/// A stored series a selector matched: its PromQL labels and where the
/// store keeps it; its points are read when it is evaluated, one series
/// at a time.
pub(crate) struct Selected {
    pub(crate) labels: Labels,
    key: Arc<SeriesKey>,
    id: u64,
}

/// The stored series matching `vs`, sorted by label set.
pub(crate) fn select(store: &Store, vs: &VectorSelector) -> Result<Vec<Selected>, PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromqlError::BadData(format!(
            "`or` between label matchers is not supported: {vs}"
        )));
    }
    let mut names = Vec::new();
    let mut labels = Vec::new();
    for m in &vs.matchers.matchers {
        let matcher = match &m.op {
            MatchOp::Equal => Matcher::Equal(m.name.clone(), m.value.clone()),
            MatchOp::NotEqual => Matcher::NotEqual(m.name.clone(), m.value.clone()),
            MatchOp::Re(re) => Matcher::Regex(m.name.clone(), re.clone()),
            MatchOp::NotRe(re) => Matcher::NotRegex(m.name.clone(), re.clone()),
        };
        if m.name == METRIC_NAME {
            names.push(matcher);
        } else {
            labels.push(matcher);
        }
    }
    if let Some(name) = &vs.name {
        names.push(Matcher::Equal(METRIC_NAME.to_owned(), name.clone()));
    }
    let metrics: Vec<String> = match names.iter().find_map(|m| match m {
        Matcher::Equal(_, v) => Some(v.clone()),
        _ => None,
    }) {
        Some(name) => vec![name],
        None => store.metric_names().map_err(execution)?,
    };
    let mut out = Vec::new();
    for metric in metrics {
        if !names.iter().all(|m| m.matches_value(Some(&metric))) {
            continue;
        }
        for (key, id) in store.select_shared(&metric, &labels).map_err(execution)? {
            out.push(Selected {
                labels: promql_labels(&key),
                key,
                id,
            });
        }
    }
    // The store answers in key order, which is label order but for label
    // names sorting before `__name__`: then this sorts, else it only checks.
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

/// A stored series' labels as PromQL has them: the key's, with the metric
/// name as `__name__` in its place by name (replacing a stored label of
/// that name, as `value::set` would), built in one pass.
fn promql_labels(key: &SeriesKey) -> Labels {
    let mut labels = Vec::with_capacity(key.labels.len() + 1);
    let at = key
        .labels
        .partition_point(|l| l.name.as_str() < METRIC_NAME);
    labels.extend_from_slice(&key.labels[..at]);
    labels.push(Label::new(METRIC_NAME, key.metric.as_str()));
    let after = match key.labels.get(at) {
        Some(l) if l.name == METRIC_NAME => at + 1,
        _ => at,
    };
    labels.extend_from_slice(&key.labels[after..]);
    labels
}

/// The points of `series` in `[start, end]`, oldest first.
pub(crate) fn points(
    store: &Store,
    series: &Selected,
    start: i64,
    end: i64,
) -> Result<Vec<Point>, PromqlError> {
    store
        .series_points(&series.key, series.id, start, end.saturating_add(1))
        .map_err(execution)
}

/// Whether `series` has a point in `[start, end]`, decoding no more of
/// it than that takes.
fn has_points(store: &Store, series: &Selected, start: i64, end: i64) -> Result<bool, PromqlError> {
    store
        .series_has_points(&series.key, series.id, start, end.saturating_add(1))
        .map_err(execution)
}

/// The longest span whose points [`points_many`] reads for many series at
/// once: a few lookbacks (an instant query's `[5m]`), so that holding every
/// selected series' points together stays about the size of the answer.
pub(crate) const MANY_SPAN_MS: i64 = 15 * 60 * 1000;

/// The points of each of `series` in `[start, end]`, oldest first, in the
/// order given, read together in the store's key order (see
/// `Store::series_points_many`); for spans of at most [`MANY_SPAN_MS`].
pub(crate) fn points_many(
    store: &Store,
    series: &[Selected],
    start: i64,
    end: i64,
) -> Result<Vec<Vec<Point>>, PromqlError> {
    let asked: Vec<(&SeriesKey, u64)> = series.iter().map(|s| (&*s.key, s.id)).collect();
    store
        .series_points_many(&asked, start, end.saturating_add(1))
        .map_err(execution)
}

/// The newest point of each of `series` in `[start, end]`, in the order
/// given (see `Store::series_newest_many`): an instant vector selector's
/// sample, mostly known without reading a chunk.
pub(crate) fn newest_many(
    store: &Store,
    series: &[Selected],
    start: i64,
    end: i64,
) -> Result<Vec<Option<Point>>, PromqlError> {
    let asked: Vec<(&SeriesKey, u64)> = series.iter().map(|s| (&*s.key, s.id)).collect();
    store
        .series_newest_many(&asked, start, end.saturating_add(1))
        .map_err(execution)
}

/// The label sets of the stored series that match any of `selectors`
/// (each a vector selector, as the HTTP API's `match[]`) and, with a
/// `range`, hold a sample in it (an existence check: see
/// `Store::series_has_points`): sorted, each once. Each series looked at
/// counts as one sample against `limits.max_samples`, and the deadline is
/// checked at each.
pub(crate) fn matching_series(
    store: &Store,
    selectors: &[String],
    range: Option<(i64, i64)>,
    limits: Limits,
    started: Instant,
) -> Result<Vec<Labels>, PromqlError> {
    let mut out = Vec::new();
    let mut looked_at = 0usize;
    for selector in selectors {
        let expr = promql_parser::parser::parse(selector).map_err(PromqlError::BadData)?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(PromqlError::BadData(format!(
                "invalid parameter \"match[]\": {selector} is not a vector selector"
            )));
        };
        for series in select(store, &vs)? {
            looked_at += 1;
            if looked_at > limits.max_samples {
                return Err(PromqlError::TooManySamples("series selection"));
            }
            if started.elapsed() >= limits.timeout {
                return Err(PromqlError::Timeout("series selection"));
            }
            if let Some((start, end)) = range
                && !has_points(store, &series, start, end)?
            {
                continue;
            }
            out.push(series.labels);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn execution(e: TsdbError) -> PromqlError {
    PromqlError::Execution(format!("reading series: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::set;

    #[test]
    fn a_series_labels_hold_its_metric_name_in_order() {
        for names in [&["cpu"][..], &["A", "cpu"], &["Z", "__name__", "a"], &[]] {
            let labels: Vec<Label> = names.iter().map(|n| Label::new(*n, "v")).collect();
            let key = SeriesKey::for_host("h", "m", &labels).unwrap();
            let mut expected = key.labels.clone();
            set(&mut expected, METRIC_NAME, &key.metric);
            assert_eq!(promql_labels(&key), expected, "{names:?}");
            assert!(expected.is_sorted_by(|a, b| a.name < b.name));
        }
    }
}
