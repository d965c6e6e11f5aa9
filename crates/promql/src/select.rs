//! Reading series from the store: PromQL matchers to the store's, and
//! `__name__` matched against the stored metric names.

use crate::PromqlError;
use crate::value::{Labels, METRIC_NAME, set};
use hostwatch_tsdb::{Matcher, Point, Step, Store, TsdbError};
use promql_parser::label::MatchOp;
use promql_parser::parser::VectorSelector;

/// One selected series: its PromQL labels and raw points, oldest first.
pub(crate) struct RawSeries {
    pub(crate) labels: Labels,
    pub(crate) points: Vec<Point>,
}

/// Series matching `vs` with their points in `[start, end]`, sorted by
/// label set; series without points there are left out. Refused with
/// [`PromqlError::TooManySamples`] once they hold more than `budget` points.
pub(crate) fn read(
    store: &Store,
    vs: &VectorSelector,
    start: i64,
    end: i64,
    budget: usize,
) -> Result<Vec<RawSeries>, PromqlError> {
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
    let mut left = budget;
    let end_exclusive = end.saturating_add(1);
    for metric in metrics {
        if !names.iter().all(|m| m.matches_value(Some(&metric))) {
            continue;
        }
        let found = store
            .range_within(&metric, &labels, start, end_exclusive, Step::Raw, left)
            .map_err(|e| match e {
                TsdbError::TooManyPoints { .. } => PromqlError::TooManySamples("series selection"),
                e => execution(e),
            })?;
        for series in found {
            left = left.saturating_sub(series.points.len());
            let mut labels = series.key.labels;
            set(&mut labels, METRIC_NAME, &series.key.metric);
            out.push(RawSeries {
                labels,
                points: series.points,
            });
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

fn execution(e: TsdbError) -> PromqlError {
    PromqlError::Execution(format!("reading series: {e}"))
}
