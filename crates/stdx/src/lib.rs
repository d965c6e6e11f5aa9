//! Small definitions every hostwatch crate shares, kept here once (as
//! rust-analyzer keeps its `stdx`) because this crate sits below all of
//! them: the storage engine and the alerting engine may not depend on the
//! programs' runtime (tokio, logging set-up), and the agent does not
//! depend on the storage engine.
//!
//! Layout: this file: [`now_ms`], [`backoff`], [`error_chain`],
//! [`with_sources`], [`files_digest`], [`escape_html`] and
//! [`retry_after`]; [`exposition`]: the Prometheus
//! text format and a latency histogram, for the collector's and the
//! agent's `/metrics`.

#![forbid(unsafe_code)]

pub mod exposition;

use rand::Rng;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock: the time base of
/// every sample and record (0 if the clock is set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Delay before retry `attempt` (0 for the first): `min * 2^attempt`,
/// capped at `max`, with equal jitter (half fixed, half random). The
/// random half spreads out a fleet that failed together (agents after a
/// collector restart, collectors retrying one receiver); the fixed half
/// keeps the delay from collapsing to zero.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// An error and its sources on one line, joined by ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    with_sources(error.to_string(), error.source())
}

/// `text`, then `source` and its own sources, joined by ": "; a source
/// whose text the line already holds is left out, since many errors
/// repeat their source's message in their own.
pub fn with_sources(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// A digest of the contents of `paths`, to tell whether any of them
/// changed since an earlier digest: the contents, not the modification
/// times, which a copy keeps and a write within the same second may not
/// move. A file that cannot be read counts by its error kind, so that one
/// going missing and coming back is a change each time. For change
/// detection within one process only: the digest is not stable across
/// Rust versions and is not a checksum to keep.
pub fn files_digest(paths: &[&Path]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        match std::fs::read(path) {
            Ok(contents) => contents.hash(&mut hasher),
            Err(e) => format!("{:?}", e.kind()).hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// `text` safe inside HTML text and quoted attribute values: the
/// console's pages and the e-mail hook's HTML part.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The longest wait a receiver's `Retry-After` is honoured for: a
/// longer one (or a date further ahead) is cut to it, so a receiver cannot
/// hold a hook's notifications or a forwarding destination back for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long a `Retry-After` header's `value` asks to wait, from `now`:
/// delay-seconds or an HTTP-date (RFC 9110, section 10.2.3), at most
/// [`MAX_RETRY_AFTER`]; a date already past asks for no wait. Anything
/// else is `None`, as if the header were absent.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only too many of them fail to parse.
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(30));
        for attempt in 0..40 {
            let d = backoff(attempt, min, max);
            let ceiling = min.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff(10, min, max)).collect();
        assert!(delays.len() > 1, "no jitter");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_joins_sources_and_skips_repeated_text() {
        let io = Layer("connection refused", None);
        let connect = Layer("connect: connection refused", Some(Box::new(io)));
        let top = Layer("cannot reach collector", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&top),
            "cannot reach collector: connect: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn now_ms_is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock reading before it is not milliseconds.
        assert!(now_ms() > 1_767_225_600_000);
    }

    #[test]
    fn files_digest_changes_with_contents_and_presence_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let paths = [a.as_path(), b.as_path()];
        let first = files_digest(&paths);
        assert_eq!(files_digest(&paths), first, "nothing changed");
        std::fs::write(&b, "two").unwrap();
        assert_eq!(files_digest(&paths), first, "rewritten with the same bytes");
        std::fs::write(&b, "three").unwrap();
        let changed = files_digest(&paths);
        assert_ne!(changed, first);
        std::fs::remove_file(&b).unwrap();
        let missing = files_digest(&paths);
        assert_ne!(missing, changed);
        std::fs::write(&b, "three").unwrap();
        assert_eq!(files_digest(&paths), changed, "back as it was");
        // The same contents under swapped names differ.
        assert_ne!(files_digest(&[b.as_path(), a.as_path()]), changed);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_capped_and_ignores_the_rest() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let secs = |s| Some(Duration::from_secs(s));
        // delay-seconds
        assert_eq!(retry_after("120", now), secs(120));
        assert_eq!(retry_after(" 0 ", now), secs(0));
        assert_eq!(retry_after("3600", now), secs(3600));
        assert_eq!(retry_after("3601", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        // HTTP-date in its three forms, 90 s after `now`.
        for date in [
            "Wed, 21 Oct 2015 07:29:30 GMT",
            "Wednesday, 21-Oct-15 07:29:30 GMT",
            "Wed Oct 21 07:29:30 2015",
        ] {
            assert_eq!(retry_after(date, now), secs(90), "{date}");
        }
        // Past: no wait; far ahead: the cap.
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), secs(0));
        assert_eq!(
            retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        // Unparseable: as if absent.
        for bad in [
            "",
            "-5",
            "+5",
            "1.5",
            "soon",
            "5 s",
            "Wed, 32 Oct 2015 07:29:30 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }
}
