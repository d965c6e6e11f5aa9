//! The one way into the PromQL engine (`hostwatch-promql`), for the HTTP
//! API and the gRPC `Query.Promql` alike: `[query]`'s limits (samples,
//! time), its places of queries running at once, and the blocking pool
//! (the engine reads the store synchronously). Both APIs hold one
//! [`Promql`], built once with the shared state, so they share the places
//! and answer alike.

use crate::config;
use hostwatch_promql::{Engine, Limits, PromqlError, Value};
use hostwatch_tsdb::{Label, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    /// The engine refused or failed the query (its error type says how).
    #[error(transparent)]
    Engine(#[from] PromqlError),
    /// No place among `query.max_concurrent` came free within the
    /// query's timeout.
    #[error("query timed out waiting for one of query.max_concurrent places ({0:?})")]
    NoPlace(Duration),
    /// The collector is stopping, or the query's task failed.
    #[error("{0}")]
    Unavailable(String),
}

/// The engine behind its limits; cheap to clone (handles).
#[derive(Clone)]
pub(crate) struct Promql {
    store: Arc<Store>,
    /// `query.max_samples` and `query.timeout`.
    limits: Limits,
    /// `query.max_concurrent` places.
    places: Arc<Semaphore>,
}

impl Promql {
    pub(crate) fn new(store: Arc<Store>, query: &config::Query) -> Self {
        Promql {
            store,
            limits: Limits {
                max_samples: query.max_samples,
                timeout: query.timeout,
            },
            places: Arc::new(Semaphore::new(query.max_concurrent)),
        }
    }

    /// `expr` evaluated at `at_ms`; `timeout` (a request's own) may only
    /// shorten `query.timeout`.
    pub(crate) async fn instant(
        &self,
        expr: String,
        at_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<Value, QueryError> {
        self.run(timeout, move |engine, store| {
            engine.instant(store, &expr, at_ms)
        })
        .await
    }

    /// `expr` evaluated at every `step_ms` from `start_ms` to `end_ms`
    /// (the engine checks the step, the order and the points per series).
    pub(crate) async fn range(
        &self,
        expr: String,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
        timeout: Option<Duration>,
    ) -> Result<Value, QueryError> {
        self.run(timeout, move |engine, store| {
            engine.range(store, &expr, start_ms, end_ms, step_ms)
        })
        .await
    }

    /// The label sets of the series `selectors` match (with a sample in
    /// `range`, if given); each series looked at counts as one sample.
    pub(crate) async fn series(
        &self,
        selectors: Vec<String>,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<Vec<Label>>, QueryError> {
        self.run(None, move |engine, store| {
            engine.series(store, &selectors, range)
        })
        .await
    }

    /// Runs `call` on the blocking pool once a place is free. Waiting for
    /// the place counts against the timeout: the engine gets what is left.
    async fn run<T: Send + 'static>(
        &self,
        timeout: Option<Duration>,
        call: impl FnOnce(&Engine, &Store) -> Result<T, PromqlError> + Send + 'static,
    ) -> Result<T, QueryError> {
        let timeout = timeout.map_or(self.limits.timeout, |t| t.min(self.limits.timeout));
        let asked = Instant::now();
        let place = tokio::time::timeout(timeout, self.places.clone().acquire_owned())
            .await
            .map_err(|_| QueryError::NoPlace(timeout))?
            .map_err(|_| QueryError::Unavailable("the collector is stopping".into()))?;
        let engine = Engine::new(Limits {
            timeout: timeout.saturating_sub(asked.elapsed()),
            ..self.limits
        });
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _place = place;
            call(&engine, &store)
        })
        .await
        .map_err(|e| QueryError::Unavailable(format!("query task failed: {e}")))?
        .map_err(QueryError::Engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_tsdb::{Options, Point};

    #[tokio::test]
    async fn queries_take_a_place_within_their_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        let query = config::Query {
            max_concurrent: 1,
            ..config::Query::default()
        };
        let promql = Promql::new(store, &query);
        let held = promql.places.clone().acquire_owned().await.unwrap();
        let err = promql
            .instant("1".into(), 0, Some(Duration::ZERO))
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::NoPlace(_)), "{err}");
        assert!(err.to_string().contains("query.max_concurrent"), "{err}");
        drop(held);
        let value = promql.instant("1 + 1".into(), 1_000, None).await.unwrap();
        let two = Point {
            t_ms: 1_000,
            value: 2.0,
        };
        assert_eq!(value, Value::Scalar(two));
        // A place, but no time left for the engine.
        let err = promql
            .instant("1".into(), 0, Some(Duration::ZERO))
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueryError::Engine(PromqlError::Timeout(_))),
            "{err}"
        );
        let err = promql
            .range("1".into(), (0, 1_000, 0), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueryError::Engine(PromqlError::BadData(_))),
            "{err}"
        );
        let none = promql.series(vec!["up".into()], None).await.unwrap();
        assert!(none.is_empty());
        // Every place is free again.
        assert_eq!(promql.places.available_permits(), 1);
    }
}
