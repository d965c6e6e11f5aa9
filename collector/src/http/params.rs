//! Request parameters as Prometheus reads them: from the query string and
//! a form-encoded body alike; times as RFC 3339 or Unix seconds; durations
//! as seconds or PromQL durations (`15s`, `1m30s`).

use super::error::ApiError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The beginning and the end of time for the series endpoints: an open
/// range (Go's zero time, which clients send for no time, and the year
/// 9999), in milliseconds.
pub(crate) const MIN_TIME_MS: i64 = -62_135_596_800_000;
pub(crate) const MAX_TIME_MS: i64 = 253_402_300_799_000;

/// The parameters of one request, in the order sent: the query string's,
/// then the form body's.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Adds the pairs of a query string or form body.
    pub(crate) fn extend_from(&mut self, encoded: &[u8]) {
        self.0.extend(form_urlencoded::parse(encoded).into_owned());
    }

    /// The value of `name`, if any and not empty; a form body's wins over
    /// the query string's, as in Prometheus (Go's `FormValue`).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`match[]`).
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The PromQL expression, `query`.
    pub(crate) fn expression(&self) -> Result<String, ApiError> {
        self.get("query")
            .map(str::to_owned)
            .ok_or_else(|| ApiError::param("query", "query must not be empty"))
    }

    /// Parameter `name` as a time; required.
    pub(crate) fn time(&self, name: &str) -> Result<i64, ApiError> {
        parse_time(self.get(name).unwrap_or_default()).map_err(|e| ApiError::param(name, e))
    }

    /// Parameter `name` as a time, or `default` when absent.
    pub(crate) fn time_or(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        self.get(name).map_or(Ok(default), |text| {
            parse_time(text).map_err(|e| ApiError::param(name, e))
        })
    }

    /// Parameter `name` as a duration in milliseconds; required.
    pub(crate) fn required_duration(&self, name: &str) -> Result<i64, ApiError> {
        parse_duration(self.get(name).unwrap_or_default()).map_err(|e| ApiError::param(name, e))
    }

    /// Parameter `name` as a duration in milliseconds, if present.
    pub(crate) fn duration(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|text| parse_duration(text).map_err(|e| ApiError::param(name, e)))
            .transpose()
    }

    /// Parameter `name` as a count, 0 (no limit) when absent.
    pub(crate) fn limit(&self, name: &str) -> Result<usize, ApiError> {
        self.get(name).map_or(Ok(0), |text| {
            text.parse().map_err(|_| {
                ApiError::param(name, format!("cannot parse {text:?} to a valid limit"))
            })
        })
    }
}

/// How Prometheus writes its earliest and latest times, which its clients
/// send back for an open range.
const MIN_TIME_TEXT: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_TEXT: &str = "292277025-08-18T07:12:54.999999999Z";

/// A time as Prometheus' API reads it: Unix seconds (a float), RFC 3339,
/// or its earliest and latest times; milliseconds since the epoch.
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    match text {
        MIN_TIME_TEXT => return Ok(MIN_TIME_MS),
        MAX_TIME_TEXT => return Ok(MAX_TIME_MS),
        _ => {}
    }
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(format!("cannot parse {text:?} to a valid timestamp"));
        }
        // Rounded to milliseconds like Prometheus; out-of-range values
        // saturate, and the engine's own checks refuse what they must.
        return Ok((seconds * 1000.0).round() as i64);
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}

/// A duration as Prometheus' API reads it: seconds (a float), or a PromQL
/// duration; milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        let ms = seconds * 1000.0;
        if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
            return Err(format!(
                "cannot parse {text:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms.round() as i64);
    }
    promql_parser::util::parse_duration(text)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .map_err(|_| format!("cannot parse {text:?} to a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("-1.5"), Ok(-1_500));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781+02:00"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(parse_time(MIN_TIME_TEXT), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_TEXT), Ok(MAX_TIME_MS));
        assert_eq!(parse_time("-62135596800"), Ok(MIN_TIME_MS));
        for bad in ["soon", "", "NaN", "Inf", "2015-07-01"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_seconds_or_promql_durations() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("15s"), Ok(15_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("-3"), Ok(-3_000));
        for bad in ["fast", "1e300", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_body_wins_over_the_query_string_and_match_repeats() {
        let mut params = Params::default();
        params.extend_from(b"query=up&match%5B%5D=a&time=");
        params.extend_from(b"query=down&match[]=b");
        assert_eq!(params.get("query"), Some("down"));
        assert_eq!(params.get("time"), None);
        assert_eq!(params.all("match[]"), ["a", "b"]);
        assert!(params.time_or("query", 0).is_err());
        assert_eq!(params.expression().unwrap(), "down");
        assert!(params.time("time").is_err() && params.required_duration("step").is_err());
        assert!(Params::default().expression().is_err());
        assert_eq!(params.limit("limit").unwrap(), 0);
    }
}
