//! The endpoints: Prometheus' query API over the store, through the one
//! PromQL engine (`hostwatch-promql`).

use super::error::ApiError;
use super::json::{self, labels as label_object};
use super::params::{MAX_TIME_MS, MIN_TIME_MS, Params};
use super::reference;
use crate::shared::Shared;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hostwatch_alerting::matcher::{LabelMatcher, all_match};
use hostwatch_promql::Value;
use hostwatch_tsdb::Label;
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

/// Largest form body read; a query is text, and Prometheus' clients send
/// a few kilobytes at most.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The Prometheus release whose HTTP API and PromQL semantics the API
/// follows (docs/api.md), reported as the version so clients such as
/// Grafana pick the matching features.
const PROMETHEUS_VERSION: &str = "2.42.0";

/// What the endpoints share: the collector's state, with the one PromQL
/// path (`shared.promql`: limits, places, blocking pool).
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) shared: Shared,
    /// The web console's sessions and login limiter.
    pub(crate) logins: super::login::Logins,
    /// `limits.message_timeout`: a form body must arrive within it.
    message_timeout: Duration,
}

impl Api {
    pub(crate) fn new(shared: Shared, config: &crate::config::CollectorConfig) -> Self {
        Api {
            message_timeout: config.limits.message_timeout,
            logins: super::login::Logins::new(&config.http),
            shared,
        }
    }

    /// The request's parameters: its query string, then a form body,
    /// which must arrive within `limits.message_timeout`.
    pub(super) async fn params(&self, request: Request) -> Result<Params, ApiError> {
        let (parts, body) = request.into_parts();
        let mut params = Params::default();
        if let Some(query) = parts.uri.query() {
            params.extend_from(query.as_bytes());
        }
        let form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if parts.method == Method::POST && form {
            let read = axum::body::to_bytes(body, MAX_FORM_BYTES);
            let body = tokio::time::timeout(self.message_timeout, read)
                .await
                .map_err(|_| ApiError::BadData("the form body took too long".into()))?
                .map_err(|e| ApiError::BadData(format!("cannot read the form body: {e}")))?;
            params.extend_from(&body);
        }
        Ok(params)
    }
}

impl Api {
    /// The request's body, which must be JSON (`what` says what it should
    /// hold), at most `MAX_FORM_BYTES` and arrive within
    /// `limits.message_timeout`.
    pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
        what: &str,
    ) -> Result<T, ApiError> {
        let (parts, body) = request.into_parts();
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::BadData(format!(
                "send a JSON body (Content-Type: application/json): {what}"
            )));
        }
        let read = axum::body::to_bytes(body, MAX_FORM_BYTES);
        let body = tokio::time::timeout(self.message_timeout, read)
            .await
            .map_err(|_| ApiError::BadData("the body took too long".into()))?
            .map_err(|e| ApiError::BadData(format!("cannot read the body: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadData(format!("invalid body: {e}; send {what}")))
    }
}

/// The request's `timeout` parameter, which may only shorten
/// `query.timeout`.
fn request_timeout(params: &Params) -> Result<Option<Duration>, ApiError> {
    Ok(params
        .duration("timeout")?
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
}

/// The API's routes; every one answers GET and form-encoded POST.
pub(crate) fn router(api: Api) -> Router {
    let router = Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route(
            "/api/v1/label/{name}/values",
            get(label_values).post(label_values),
        )
        .route("/api/v1/metadata", get(metadata).post(metadata))
        .route("/api/v1/alerts", get(alerts).post(alerts))
        .route("/api/v1/rules", get(rules).post(rules))
        .route("/api/v1/status/buildinfo", get(buildinfo).post(buildinfo))
        .route("/-/healthy", get(healthy).post(healthy))
        .route("/-/ready", get(ready).post(ready))
        .route("/metrics", get(metrics));
    super::hostwatch::routes(router)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()).into_response() })
        .with_state(api)
}

/// An endpoint's answer: `data` on success, the error's shape otherwise.
pub(super) async fn answer(data: impl Future<Output = Result<Json, ApiError>>) -> Response {
    match data.await {
        Ok(data) => json::success(data),
        Err(e) => e.into_response(),
    }
}

/// A query's answer: its result written straight as JSON on success.
async fn query_answer(value: impl Future<Output = Result<Value, ApiError>>) -> Response {
    match value.await {
        Ok(value) => json::query_success(&value),
        Err(e) => e.into_response(),
    }
}

async fn query(State(api): State<Api>, request: Request) -> Response {
    query_answer(async move {
        let params = api.params(request).await?;
        let expr = params.expression()?;
        let at = params.time_or("time", hostwatch_stdx::now_ms())?;
        let timeout = request_timeout(&params)?;
        let value = api.shared.promql.instant(expr, at, timeout).await?;
        Ok(value)
    })
    .await
}

async fn query_range(State(api): State<Api>, request: Request) -> Response {
    query_answer(async move {
        let params = api.params(request).await?;
        let expr = params.expression()?;
        let (start, end) = (params.time("start")?, params.time("end")?);
        let step = params.required_duration("step")?;
        let timeout = request_timeout(&params)?;
        let value = api
            .shared
            .promql
            .range(expr, (start, end, step), timeout)
            .await?;
        Ok(value)
    })
    .await
}

/// The label sets of the series `match[]` selects (all series when
/// `match[]` is absent and `all` is allowed) in `start`..`end`.
async fn matching(api: &Api, params: &Params, all: bool) -> Result<Vec<Vec<Label>>, ApiError> {
    let mut selectors = params.all("match[]");
    if selectors.is_empty() {
        if !all {
            return Err(ApiError::BadData("no match[] parameter provided".into()));
        }
        selectors.push("{__name__=~\".+\"}".to_owned());
    }
    let start = params.time_or("start", MIN_TIME_MS)?;
    let end = params.time_or("end", MAX_TIME_MS)?;
    // An open range needs no look at the points: every stored series has
    // samples.
    let range = (start > MIN_TIME_MS || end < MAX_TIME_MS).then_some((start, end));
    Ok(api.shared.promql.series(selectors, range).await?)
}

/// At most `limit` items (0: all).
fn limited<T>(mut items: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 {
        items.truncate(limit);
    }
    items
}

async fn series(State(api): State<Api>, request: Request) -> Response {
    answer(async move {
        let params = api.params(request).await?;
        let limit = params.limit("limit")?;
        let found = matching(&api, &params, false).await?;
        let found: Vec<Json> = found.iter().map(|l| label_object(l)).collect();
        Ok(Json::Array(limited(found, limit)))
    })
    .await
}

/// The distinct strings `pick` takes from the labels of the series
/// `match[]` selects (every series without it), sorted, at most `limit`.
async fn label_strings(
    api: &Api,
    request: Request,
    pick: impl Fn(Label) -> Option<String>,
) -> Result<Json, ApiError> {
    let params = api.params(request).await?;
    let limit = params.limit("limit")?;
    let found: BTreeSet<String> = matching(api, &params, true)
        .await?
        .into_iter()
        .flatten()
        .filter_map(pick)
        .collect();
    Ok(json!(limited(found.into_iter().collect(), limit)))
}

async fn labels(State(api): State<Api>, request: Request) -> Response {
    answer(label_strings(&api, request, |l| Some(l.name))).await
}

async fn label_values(
    State(api): State<Api>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    answer(async move {
        if !hostwatch_promql::valid_label_name(&name) {
            return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
        }
        label_strings(&api, request, |l| (l.name == name).then_some(l.value)).await
    })
    .await
}

async fn metadata(State(api): State<Api>, request: Request) -> Response {
    answer(async move {
        let params = api.params(request).await?;
        let limit = params.limit("limit")?;
        Ok(reference::metadata_data(params.get("metric"), limit))
    })
    .await
}

/// `filter`'s label matchers (Alertmanager's `GET /api/v2/alerts?filter=`:
/// `name="value"`, `!=`, `=~`, `!~`, each repeated filter one matcher, all
/// of which an alert's labels must match), so a page about one host asks
/// for that host's alerts only.
fn alert_filter(params: &Params) -> Result<Vec<LabelMatcher>, ApiError> {
    params
        .all("filter")
        .iter()
        .map(|text| LabelMatcher::parse(text).map_err(|e| ApiError::param("filter", e)))
        .collect()
}

async fn alerts(State(api): State<Api>, request: Request) -> Response {
    let filter = match api.params(request).await.and_then(|p| alert_filter(&p)) {
        Ok(filter) => filter,
        Err(e) => return e.into_response(),
    };
    let mut alerts = api.shared.alerting.alerts();
    alerts.retain(|a| all_match(&filter, &a.labels));
    let by = api.shared.alerting.silenced(&alerts);
    json::success(reference::alerts_data(&reference::silenced(&alerts, &by)))
}

async fn rules(State(api): State<Api>) -> Response {
    let shared = &api.shared;
    let file = shared
        .config_path
        .as_ref()
        .map_or_else(|| "collector.toml".to_owned(), |p| p.display().to_string());
    let (rules, alerts) = (shared.alerting.rules(), shared.alerting.alerts());
    let by = shared.alerting.silenced(&alerts);
    let alerts = reference::silenced(&alerts, &by);
    json::success(reference::rules_data(&rules, &alerts, &file))
}

async fn buildinfo() -> Response {
    json::success(json!({
        "version": PROMETHEUS_VERSION,
        "revision": concat!("hostwatch ", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// The collector's own figures, in the Prometheus text format.
async fn metrics(State(api): State<Api>) -> Response {
    let text = crate::metrics::render(&api.shared).await;
    (
        [(
            header::CONTENT_TYPE,
            hostwatch_stdx::exposition::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn healthy() -> Response {
    (StatusCode::OK, "hostwatch is Healthy.\n").into_response()
}

/// Ready while the store can be read: not while it rebuilds itself after
/// a failed write.
async fn ready(State(api): State<Api>) -> Response {
    let store = api.shared.store.clone();
    let health = tokio::task::spawn_blocking(move || store.health()).await;
    match health {
        Ok(Ok(h)) if !matches!(h.condition, hostwatch_tsdb::Condition::Failed { .. }) => {
            (StatusCode::OK, "hostwatch is Ready.\n").into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "hostwatch is not ready.\n").into_response(),
    }
}
