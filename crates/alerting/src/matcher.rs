//! Label matchers as operators write them: `name=value`, `name!=value`,
//! `name=~regex`, `name!~regex` (regexes anchored at both ends, as in
//! PromQL). Used by rules, hooks and silences, and by the CLI for its
//! query matchers; what a matcher matches is the store's
//! [`hostwatch_tsdb::Matcher`].

use hostwatch_tsdb::Matcher;
use std::fmt;

/// A matcher that cannot be used; the message quotes it.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("matcher without a label name")]
    NoName,
    #[error("matcher {text:?}: invalid label name {name:?}")]
    InvalidName { text: String, name: String },
    #[error("matcher {text:?}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")]
    NoOperator { text: String },
    #[error("matcher {matcher}: {source}")]
    Regex {
        /// As written: `name=~regex`.
        matcher: String,
        source: hostwatch_tsdb::TsdbError,
    },
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    matcher: Matcher,
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    /// Every operator, longest tokens first.
    const ALL: [MatchOp; 4] = [
        MatchOp::Regex,
        MatchOp::NotRegex,
        MatchOp::NotEqual,
        MatchOp::Equal,
    ];

    /// The operator written `token` (`=`, `!=`, `=~`, `!~`), if any.
    pub fn from_token(token: &str) -> Option<MatchOp> {
        MatchOp::ALL.into_iter().find(|op| op.token() == token)
    }

    /// As written between a matcher's name and value.
    pub fn token(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl LabelMatcher {
    /// A matcher from its parts; a bad regex is an error naming it.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        if name.is_empty() {
            return Err(MatcherError::NoName);
        }
        let matcher = match op {
            MatchOp::Equal => Matcher::Equal(name.to_owned(), value.to_owned()),
            MatchOp::NotEqual => Matcher::NotEqual(name.to_owned(), value.to_owned()),
            MatchOp::Regex | MatchOp::NotRegex => {
                Matcher::regex(name, value, op == MatchOp::NotRegex).map_err(|source| {
                    MatcherError::Regex {
                        matcher: format!("{name}{}{value}", op.token()),
                        source,
                    }
                })?
            }
        };
        Ok(LabelMatcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            matcher,
        })
    }

    /// Parses `name=value`, `name!=value`, `name=~regex` or `name!~regex`.
    /// A value may be wrapped in double quotes, as in PromQL.
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        // Longest operators first, so "!=" is not read as "=" after "x!".
        for op in MatchOp::ALL {
            if let Some((name, value)) = text.split_once(op.token()) {
                let name = name.trim();
                if name.is_empty() || name.ends_with(['!', '=']) {
                    continue;
                }
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(MatcherError::InvalidName {
                        text: text.to_owned(),
                        name: name.to_owned(),
                    });
                }
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                return LabelMatcher::new(name, op, value);
            }
        }
        Err(MatcherError::NoOperator {
            text: text.to_owned(),
        })
    }

    /// Whether the label `self.name`, as returned by `get` (absent = ""), matches.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        self.matcher.matches_value(value)
    }

    /// Whether a label set given as a lookup function matches.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matches_value(get(&self.name))
    }
}

impl PartialEq for LabelMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.token(), self.value)
    }
}

/// Whether every matcher matches the labels of `map`.
pub fn all_match(
    matchers: &[LabelMatcher],
    map: &std::collections::BTreeMap<String, String>,
) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(|name| map.get(name).map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parses_every_operator_and_quotes() {
        let cases = [
            ("cpu=total", "cpu", MatchOp::Equal, "total"),
            ("cpu=\"total\"", "cpu", MatchOp::Equal, "total"),
            ("fstype!=tmpfs", "fstype", MatchOp::NotEqual, "tmpfs"),
            ("mountpoint=~/var.*", "mountpoint", MatchOp::Regex, "/var.*"),
            (
                "device!~loop[0-9]+",
                "device",
                MatchOp::NotRegex,
                "loop[0-9]+",
            ),
            ("device=", "device", MatchOp::Equal, ""),
        ];
        for (text, name, op, value) in cases {
            let m = LabelMatcher::parse(text).unwrap();
            assert_eq!((m.name.as_str(), m.op, m.value.as_str()), (name, op, value));
            assert_eq!(LabelMatcher::parse(&m.to_string()).unwrap(), m);
        }
        for bad in ["", "novalue", "=x", "!=x", "a b=c", "x=~("] {
            assert!(LabelMatcher::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn regexes_are_anchored_and_absent_labels_are_empty() {
        let labels: BTreeMap<String, String> = [("mountpoint".into(), "/var/lib".into())].into();
        let yes = |t: &str| all_match(&[LabelMatcher::parse(t).unwrap()], &labels);
        assert!(yes("mountpoint=~/var.*"));
        assert!(!yes("mountpoint=~/var"));
        assert!(yes("mountpoint!~/home"));
        assert!(yes("device="));
        assert!(!yes("device!="));
        assert!(yes("mountpoint!=/"));
    }
}
