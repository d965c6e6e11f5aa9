//! What the store holds: the metric names of its series, for queries that
//! select series by a pattern over names rather than by one name.

use crate::TsdbError;
use crate::store::{Store, poisoned};

impl Store {
    /// Names of the metrics with at least one series, sorted.
    pub fn metric_names(&self) -> Result<Vec<String>, TsdbError> {
        let inner = self.inner()?;
        let index = inner.index.read().map_err(|_| poisoned())?;
        let mut names: Vec<String> = index
            .by_metric
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        drop(index);
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Batch, Options, Point, SeriesInput, Store};

    #[test]
    fn metric_names_lists_each_stored_metric_once_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            maintenance_interval: None,
            clock: std::sync::Arc::new(|| 1_000_000),
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        assert!(store.metric_names().unwrap().is_empty());
        let series = |metric: &str| SeriesInput {
            metric: metric.to_owned(),
            labels: vec![],
            points: vec![Point {
                t_ms: 999_000,
                value: 1.0,
            }],
        };
        for (seq, host) in ["a", "b"].into_iter().enumerate() {
            let batch = Batch {
                host: host.to_owned(),
                source: 1,
                seq: seq as u64 + 1,
                series: vec![series("host_load1"), series("host_cpu_seconds_total")],
                processes: vec![],
                malformed: 0,
            };
            store.append(&batch).unwrap();
        }
        assert_eq!(
            store.metric_names().unwrap(),
            ["host_cpu_seconds_total", "host_load1"]
        );
    }
}
