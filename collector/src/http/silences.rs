//! Silences over HTTP, under `/api/v1/hostwatch/silences`, for the web
//! console: listing them (any role, as the alerts they mute are), and
//! creating and expiring them (the operator role, and a CSRF token from
//! a browser: [`Mutation`]). They go through the same functions as the
//! gRPC Admin service (`crate::silences`), so both check and answer
//! alike; the creator is the caller's certificate or token name.

use super::api::{Api, answer};
use super::caller::Mutation;
use super::error::ApiError;
use super::params::{parse_duration, parse_time};
use crate::silences::{self, SilenceRequest};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{delete, get};
use hostwatch_alerting::matcher::{LabelMatcher, MatchOp};
use hostwatch_alerting::{Silence, format_rfc3339};
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// What a new silence's body must hold, for error messages.
const NEW_SILENCE: &str = r#"{"matchers": [{"name": "host", "op": "=", "value": "web1"}], "duration": "4h" or "endsAt": "2030-01-01T00:00:00Z", "comment": "why"}"#;

/// `router` with the silences' endpoints added.
pub(super) fn routes(router: Router<Api>) -> Router<Api> {
    router
        .route("/api/v1/hostwatch/silences", get(list).post(create))
        .route("/api/v1/hostwatch/silences/{id}", delete(expire))
}

/// A new silence, as the console sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSilenceBody {
    matchers: Vec<MatcherBody>,
    /// When it starts (RFC 3339 or Unix seconds); now when absent.
    starts_at: Option<String>,
    /// How long from its start, as the API's durations: `4h`, `90m`,
    /// seconds. Either this or `ends_at`.
    duration: Option<String>,
    /// When it ends (RFC 3339 or Unix seconds).
    ends_at: Option<String>,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatcherBody {
    name: String,
    /// `=`, `!=`, `=~` or `!~`.
    op: String,
    value: String,
}

impl NewSilenceBody {
    /// The request for `crate::silences`, its times resolved at `now_ms`.
    fn request(self, now_ms: i64) -> Result<SilenceRequest, ApiError> {
        let starts_ms = self
            .starts_at
            .as_deref()
            .map(|t| parse_time(t).map_err(|e| ApiError::param("startsAt", e)))
            .transpose()?
            .unwrap_or(0);
        let from = if starts_ms == 0 { now_ms } else { starts_ms };
        let ends_ms = match (self.duration.as_deref(), self.ends_at.as_deref()) {
            (Some(text), None) => {
                let ms = parse_duration(text).map_err(|e| ApiError::param("duration", e))?;
                if ms <= 0 {
                    return Err(ApiError::param(
                        "duration",
                        format!("{text:?} is not a positive duration"),
                    ));
                }
                from.saturating_add(ms)
            }
            (None, Some(text)) => parse_time(text).map_err(|e| ApiError::param("endsAt", e))?,
            _ => {
                return Err(ApiError::BadData(
                    "give the silence either a duration (such as \"4h\") or an end (endsAt), not both"
                        .into(),
                ));
            }
        };
        let matchers = self
            .matchers
            .into_iter()
            .map(|m| {
                let op = MatchOp::from_token(&m.op).ok_or_else(|| {
                    ApiError::BadData(format!(
                        "matcher on {:?}: op must be \"=\", \"!=\", \"=~\" or \"!~\", not {:?}",
                        m.name, m.op
                    ))
                })?;
                Ok(silences::matcher_text(&m.name, op, &m.value)?)
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(SilenceRequest {
            matchers,
            starts_ms,
            ends_ms,
            comment: self.comment,
        })
    }
}

/// Silences, including those that ended in the last day, newest first.
async fn list(State(api): State<Api>) -> Response {
    answer(async move {
        let silences: Vec<Json> = silences::list(&api.shared)
            .into_iter()
            .map(silence_json)
            .collect();
        Ok(Json::Array(silences))
    })
    .await
}

/// Creates a silence from a JSON body ([`NEW_SILENCE`]); the operator
/// role only.
async fn create(State(api): State<Api>, Mutation(caller): Mutation, request: Request) -> Response {
    answer(async move {
        caller.require_operator()?;
        let body: NewSilenceBody = api.json_body(request, NEW_SILENCE).await?;
        let request = body.request(hostwatch_stdx::now_ms())?;
        let silence = silences::create(&api.shared, caller.name(), request).await?;
        Ok(silence_json(silence))
    })
    .await
}

/// Ends the silence `id` now; the operator role only.
async fn expire(
    State(api): State<Api>,
    Mutation(caller): Mutation,
    Path(id): Path<String>,
) -> Response {
    answer(async move {
        caller.require_operator()?;
        let silence = silences::expire(&api.shared, &id, caller.name(), "HTTP").await?;
        Ok(silence_json(silence))
    })
    .await
}

/// A silence, its matchers as name, operator and value, its times in
/// RFC 3339; `active` whether it mutes now.
fn silence_json(s: Silence) -> Json {
    let now = hostwatch_stdx::now_ms();
    let matchers: Vec<Json> = s
        .matchers
        .iter()
        .filter_map(|text| LabelMatcher::parse(text).ok())
        .map(|m| json!({"name": m.name, "op": m.op.token(), "value": m.value}))
        .collect();
    json!({
        "id": s.id,
        "matchers": matchers,
        "startsAt": format_rfc3339(s.starts_ms),
        "endsAt": format_rfc3339(s.ends_ms),
        "active": s.active_at(now),
        "createdBy": s.created_by,
        "createdAt": format_rfc3339(s.created_ms),
        "comment": s.comment,
    })
}
