//! Logging set-up every hostwatch program shares.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Logs to stderr (journald picks it up under systemd), level from
/// `RUST_LOG`, else `default_level` (e.g. "info").
///
/// Every field value is written with its control characters escaped
/// ([`EscapedFields`]), so a peer's string (a host id, a goodbye reason, a
/// status message) can neither forge log lines nor reach a terminal as an
/// escape sequence.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(EscapedFields)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// tracing-subscriber's default field format, with every control character
/// (CR, LF, ESC, the C1 range ...) in a value written as a Rust escape
/// (`\n`, `\u{1b}`). The default escapes only some terminal controls, and
/// only in the message; `%`-formatted fields reach the log raw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapedFields {
    type Visitor = EscapingVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        EscapingVisitor(DefaultVisitor::new(target, true))
    }
}

/// The visitor of [`EscapedFields`].
#[derive(Debug)]
pub(crate) struct EscapingVisitor<'a>(DefaultVisitor<'a>);

impl Visit for EscapingVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, &Escaped(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default does: the message as text, other strings quoted.
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(
            field,
            &format_args!("{}", hostwatch_stdx::error_chain(value)),
        );
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

/// A value whose `Debug` output has its control characters escaped.
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{:?}", self.0)
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_in_every_field_are_escaped() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let evil = "a\r\nINFO forged\x1b[31m\u{9b}";
        let error = std::io::Error::other(evil);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", peer = %evil);
            let _guard = span.enter();
            tracing::info!(shown = %evil, debugged = ?evil, plain = evil, error = &error as &dyn std::error::Error, "said {evil}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains(['\r', '\x1b', '\u{9b}']), "{text}");
        assert_eq!(
            text.matches(r"a\r\nINFO forged\u{1b}[31m\u{9b}").count(),
            6,
            "{text}"
        );
    }
}
