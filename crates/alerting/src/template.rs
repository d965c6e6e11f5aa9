//! Annotation templates: `{{ host }}`, `{{ value }}`, `{{ threshold }}`,
//! `{{ labels.mountpoint }}`, with an optional filter:
//! `{{ value | percent }}`, `| bytes`, `| duration` (seconds), `| round`,
//! `| time` (seconds since the Unix epoch as a UTC date and time).
//! Templates are parsed when rules load, so a typo is a configuration
//! error, not a broken page.
//!
//! Hooks that write for people (PagerDuty, Opsgenie, Slack) use the same
//! language for their title and body, with the notification's words
//! instead of the rule's numbers: `{{ status }}`, `{{ count }}`,
//! `{{ summary }}`, `{{ annotations.NAME }}` (see [`Vocabulary`]).

use std::collections::BTreeMap;

/// Variables a rule's template may use besides `labels.NAME`.
const VARIABLES: &[&str] = &[
    "host",
    "value",
    "threshold",
    "clear",
    "rule",
    "for",
    "window",
    "horizon",
    "limit",
];

/// Variables a hook's template may use besides `labels.NAME` and
/// `annotations.NAME`.
const NOTIFICATION_VARIABLES: &[&str] = &["host", "rule", "status", "count", "summary"];

/// Which words a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocabulary {
    /// A rule's annotation: the rule's figures (`value`, `threshold`, ...)
    /// and the alert's labels.
    Rule,
    /// A hook's title or body: the notification's `status` (firing or
    /// resolved), `count` (its alerts), and the labels and annotations of
    /// its first alert (firing ones first); `summary` is that alert's
    /// summary annotation, or "RULE on HOST" without one.
    Notification,
}

impl Vocabulary {
    fn known(self, name: &str) -> bool {
        let words = match self {
            Vocabulary::Rule => VARIABLES,
            Vocabulary::Notification => NOTIFICATION_VARIABLES,
        };
        let map_key = |prefix: &str| {
            name.strip_prefix(prefix).is_some_and(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        };
        words.contains(&name)
            || map_key("labels.")
            || (self == Vocabulary::Notification && map_key("annotations."))
    }

    fn describe(self) -> String {
        match self {
            Vocabulary::Rule => format!("{}, labels.NAME", VARIABLES.join(", ")),
            Vocabulary::Notification => format!(
                "{}, labels.NAME, annotations.NAME",
                NOTIFICATION_VARIABLES.join(", ")
            ),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var { name: String, filter: Filter },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    None,
    Percent,
    Bytes,
    Duration,
    Round,
    Time,
}

/// What a template is rendered with.
#[derive(Debug, Default)]
pub struct Context<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub rule: &'a str,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub clear: Option<f64>,
    pub for_s: Option<f64>,
    pub window_s: Option<f64>,
    pub horizon_s: Option<f64>,
    pub limit: Option<f64>,
    /// Hooks' templates: the notification's alert's annotations.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// Hooks' templates: "firing" or "resolved".
    pub status: Option<&'a str>,
    /// Hooks' templates: the number of alerts notified.
    pub count: Option<f64>,
    /// Hooks' templates: the alert's summary.
    pub summary: Option<&'a str>,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed {{{{ in template {0:?}")]
    Unclosed(String),
    #[error("unknown template variable {name:?} (known: {known})")]
    UnknownVariable { name: String, known: String },
    #[error("unknown template filter {0:?} (known: percent, bytes, duration, round, time)")]
    UnknownFilter(String),
}

impl Template {
    /// Parses a rule's `text`; unknown variables and filters are errors.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_for(text, Vocabulary::Rule)
    }

    /// Parses `text` using the words of `vocabulary`.
    pub fn parse_for(text: &str, vocabulary: Vocabulary) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed(text.to_owned()))?;
            let inner = after[..end].trim();
            let (name, filter) = match inner.split_once('|') {
                Some((n, f)) => (n.trim(), parse_filter(f.trim())?),
                None => (inner, Filter::None),
            };
            if !vocabulary.known(name) {
                return Err(TemplateError::UnknownVariable {
                    name: name.to_owned(),
                    known: vocabulary.describe(),
                });
            }
            parts.push(Part::Var {
                name: name.to_owned(),
                filter,
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The text with every variable replaced; a variable without a value
    /// renders as "?" (a page with a gap beats no page).
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, filter } => out.push_str(&render_var(name, *filter, ctx)),
            }
        }
        out
    }
}

fn parse_filter(name: &str) -> Result<Filter, TemplateError> {
    Ok(match name {
        "percent" => Filter::Percent,
        "bytes" => Filter::Bytes,
        "duration" => Filter::Duration,
        "round" => Filter::Round,
        "time" => Filter::Time,
        other => return Err(TemplateError::UnknownFilter(other.to_owned())),
    })
}

fn render_var(name: &str, filter: Filter, ctx: &Context<'_>) -> String {
    let label = |l: &str| ctx.labels.and_then(|m| m.get(l)).cloned();
    let number = match name {
        "host" => return label("host").unwrap_or_else(|| "?".to_owned()),
        "rule" => return ctx.rule.to_owned(),
        "status" => return ctx.status.unwrap_or("?").to_owned(),
        "summary" => return ctx.summary.unwrap_or("?").to_owned(),
        "count" => ctx.count,
        "value" => ctx.value,
        "threshold" => ctx.threshold,
        "clear" => ctx.clear,
        "for" => ctx.for_s,
        "window" => ctx.window_s,
        "horizon" => ctx.horizon_s,
        "limit" => ctx.limit,
        other => {
            if let Some(a) = other.strip_prefix("annotations.") {
                return ctx
                    .annotations
                    .and_then(|m| m.get(a))
                    .cloned()
                    .unwrap_or_default();
            }
            let l = other.strip_prefix("labels.").unwrap_or(other);
            return label(l).unwrap_or_default();
        }
    };
    let Some(v) = number else {
        return "?".to_owned();
    };
    let duration_default = matches!(name, "for" | "window" | "horizon");
    match filter {
        Filter::Percent => format!("{}%", format_number(v * 100.0, 1)),
        Filter::Bytes => format_bytes(v),
        Filter::Duration => format_duration(v),
        Filter::Round => format_number(v, 0),
        Filter::Time => format_time(v),
        Filter::None if duration_default => format_duration(v),
        Filter::None => format_number(v, 3),
    }
}

/// `v` with at most `decimals` decimals, trailing zeros dropped.
pub fn format_number(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Bytes in binary units, e.g. "23.5 GiB".
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as a short human duration, e.g. "3h 20m"; infinite as "never".
pub fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "never".to_owned();
    }
    let s = seconds.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Seconds since the Unix epoch as `2026-12-06 10:41:40 UTC` (what
/// `journalctl --since` takes); "?" outside what a date can be.
pub fn format_time(seconds: f64) -> String {
    if !seconds.is_finite() || !(0.0..=253_402_300_799.0).contains(&seconds) {
        return "?".to_owned();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.round() as u64);
    // RFC 3339 without its T and Z, which some readers of a page stumble on.
    let text = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", text.replace('T', " ").trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_labels_and_filters() {
        let labels: BTreeMap<String, String> = [
            ("host".into(), "web1".into()),
            ("mountpoint".into(), "/var".into()),
        ]
        .into();
        let ctx = Context {
            labels: Some(&labels),
            rule: "disk_full",
            value: Some(0.0734),
            threshold: Some(0.1),
            for_s: Some(300.0),
            ..Context::default()
        };
        let t = Template::parse(
            "{{ host }}:{{labels.mountpoint}} at {{ value | percent }} (< {{ threshold|percent }} for {{ for }}), {{ value }} {{ clear }}",
        )
        .unwrap();
        assert_eq!(t.render(&ctx), "web1:/var at 7.3% (< 10% for 5m), 0.073 ?");
        let b = Template::parse("{{ value | bytes }} {{ value | round }} {{ value | duration }}")
            .unwrap();
        let ctx = Context {
            value: Some(5.0 * 1024.0 * 1024.0 * 1024.0),
            ..Context::default()
        };
        assert_eq!(b.render(&ctx), "5.0 GiB 5368709120 62137d 20h");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (text, needle) in [
            ("{{ hots }}", "hots"),
            ("{{ value | percentage }}", "percentage"),
            ("{{ value", "unclosed"),
            ("{{ labels. }}", "labels."),
        ] {
            let err = Template::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .render(&Context::default()),
            "plain"
        );
    }

    #[test]
    fn hook_templates_use_the_notification_words() {
        let labels: BTreeMap<String, String> = [("host".into(), "web1".into())].into();
        let annotations: BTreeMap<String, String> = [("cause".into(), "yes (pid 7)".into())].into();
        let ctx = Context {
            labels: Some(&labels),
            annotations: Some(&annotations),
            rule: "cpu_saturated",
            status: Some("firing"),
            count: Some(2.0),
            summary: Some("CPU of web1 at 97%"),
            ..Context::default()
        };
        let t = Template::parse_for(
            "[{{ status }}:{{ count }}] {{ summary }} ({{ rule }} on {{ host }}; {{ annotations.cause }}{{ annotations.none }})",
            Vocabulary::Notification,
        )
        .unwrap();
        assert_eq!(
            t.render(&ctx),
            "[firing:2] CPU of web1 at 97% (cpu_saturated on web1; yes (pid 7))"
        );
        for (text, vocabulary) in [
            ("{{ value }}", Vocabulary::Notification),
            ("{{ annotations.summary }}", Vocabulary::Rule),
            ("{{ status }}", Vocabulary::Rule),
        ] {
            let err = Template::parse_for(text, vocabulary)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown template variable"), "{err}");
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(0.4), "0s");
        assert_eq!(format_duration(90.0), "1m 30s");
        assert_eq!(format_duration(3.0 * 86_400.0 + 7_200.0 + 5.0), "3d 2h");
        assert_eq!(format_duration(f64::INFINITY), "never");
    }

    #[test]
    fn times_are_utc_dates() {
        let t = Template::parse("failed at {{ value | time }}").unwrap();
        let ctx = Context {
            value: Some(1_796_553_700.4),
            ..Context::default()
        };
        assert_eq!(t.render(&ctx), "failed at 2026-12-06 10:41:40 UTC");
        assert_eq!(format_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(-1.0), "?");
        assert_eq!(format_time(f64::NAN), "?");
        assert_eq!(format_time(1e300), "?");
    }
}
