//! Quiet windows: named time intervals (`[[alerting.time_intervals]]`, as
//! Alertmanager's `time_intervals`: times of day, weekdays, days of the
//! month, months, in a time zone) and a hook's schedule made of them
//! (`active_time_intervals`, `mute_time_intervals`). While a hook's
//! schedule mutes it, the dispatcher holds its notifications (nothing is
//! queued or marked as told) and looks again when the window opens, so
//! what still fires then is sent, and what ended unseen is not.

use crate::config::KeyError;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use serde::Deserialize;
use std::sync::Arc;

/// `[[alerting.time_intervals]]`: a name and when it holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    pub name: String,
    /// It holds when any of these does.
    pub intervals: Vec<IntervalConfig>,
}

/// One `[[alerting.time_intervals.intervals]]`: it holds when every key
/// given does (a key left out holds always).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalConfig {
    /// Times of day, `{ start_time = "09:00", end_time = "17:00" }`, the end
    /// excluded (`"24:00"`: to the end of the day).
    #[serde(default)]
    pub times: Vec<TimeRangeConfig>,
    /// `"monday:friday"`, `"saturday"`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `"1:7"`, `"-1"` (the last day), `"-7:-1"`.
    #[serde(default)]
    pub days_of_month: Vec<String>,
    /// `"january:march"`, `"12"`.
    #[serde(default)]
    pub months: Vec<String>,
    /// An IANA time zone (`"Europe/Berlin"`, from the system's time zone
    /// database), `"UTC"` (the default) or a fixed offset (`"+02:00"`).
    pub location: Option<String>,
}

/// `{ start_time, end_time }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeConfig {
    pub start_time: String,
    pub end_time: String,
}

/// A validated time interval.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    pub name: String,
    specs: Vec<Spec>,
}

#[derive(Debug, Clone)]
struct Spec {
    /// Minutes of the day, start included, end excluded; empty: all day.
    times: Vec<(i32, i32)>,
    /// Bit `n` for the weekday `n` days after Monday; 0: every day.
    weekdays: u8,
    /// Inclusive ranges; negative days count from the month's end.
    days: Vec<(i8, i8)>,
    /// Bit `n` for month `n` (1 to 12); 0: every month.
    months: u16,
    tz: TimeZone,
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// How far ahead a muted hook's next opening is looked for; beyond, it is
/// looked for again a day later.
const HORIZON_DAYS: i32 = 8;
const DAY_MS: i64 = 86_400_000;

impl TryFrom<toml::Table> for TimeIntervalConfig {
    type Error = KeyError;

    fn try_from(table: toml::Table) -> Result<Self, KeyError> {
        crate::config::entry::from_keys(table)
    }
}

impl TimeIntervalConfig {
    /// Validates the interval; the error names the key.
    pub fn compile(&self) -> Result<TimeInterval, KeyError> {
        if !crate::config::valid_name(&self.name) {
            return Err(KeyError::new(
                "name",
                "name must match [a-zA-Z_][a-zA-Z0-9_]*",
            ));
        }
        if self.intervals.is_empty() {
            return Err(KeyError::new(
                "intervals",
                "intervals needs at least one entry",
            ));
        }
        let specs = self
            .intervals
            .iter()
            .enumerate()
            .map(|(i, spec)| spec.compile(&format!("intervals[{i}].")))
            .collect::<Result<_, _>>()?;
        Ok(TimeInterval {
            name: self.name.clone(),
            specs,
        })
    }
}

impl IntervalConfig {
    fn compile(&self, at: &str) -> Result<Spec, KeyError> {
        let times = self
            .times
            .iter()
            .map(|t| {
                let key = format!("{at}times");
                let start = minute_of_day(&key, &t.start_time, false)?;
                let end = minute_of_day(&key, &t.end_time, true)?;
                if start >= end {
                    return Err(KeyError::new(
                        &key,
                        format!(
                            "{key}: start_time {:?} must be before end_time {:?}",
                            t.start_time, t.end_time
                        ),
                    ));
                }
                Ok((start, end))
            })
            .collect::<Result<_, _>>()?;
        let mut weekdays = 0u8;
        for text in &self.weekdays {
            let (a, b) = range(&format!("{at}weekdays"), text, |s| named(s, &WEEKDAYS))?;
            for d in a..=b {
                weekdays |= 1 << d;
            }
        }
        let mut months = 0u16;
        for text in &self.months {
            let (a, b) = range(&format!("{at}months"), text, |s| {
                named(s, &MONTHS)
                    .map(|m| m + 1)
                    .or_else(|| s.parse::<u8>().ok().filter(|m| (1..=12).contains(m)))
            })?;
            for m in a..=b {
                months |= 1 << m;
            }
        }
        let days = self
            .days_of_month
            .iter()
            .map(|text| {
                let key = format!("{at}days_of_month");
                let day = |s: &str| {
                    s.parse::<i8>()
                        .ok()
                        .filter(|d| (1..=31).contains(d) || (-31..=-1).contains(d))
                };
                let (a, b) = split_range(&key, text, day)?;
                // Both from the start or both from the end, in order.
                if (a > 0) != (b > 0) || a > b {
                    return Err(range_error(&key, text));
                }
                Ok((a, b))
            })
            .collect::<Result<_, _>>()?;
        let tz = match self.location.as_deref() {
            None => TimeZone::UTC,
            Some(location) => time_zone(&format!("{at}location"), location)?,
        };
        Ok(Spec {
            times,
            weekdays,
            days,
            months,
            tz,
        })
    }
}

/// `"HH:MM"` as minutes of the day; `"24:00"` only as an end.
fn minute_of_day(key: &str, text: &str, end: bool) -> Result<i32, KeyError> {
    let invalid = || {
        KeyError::new(
            key,
            format!("{key}: {text:?} must be HH:MM from 00:00 to 24:00"),
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(invalid)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(invalid());
    }
    let h: i32 = h.parse().map_err(|_| invalid())?;
    let m: i32 = m.parse().map_err(|_| invalid())?;
    let minute = h * 60 + m;
    if !(0..60).contains(&m) || minute > 24 * 60 || (minute == 24 * 60 && !end) {
        return Err(invalid());
    }
    Ok(minute)
}

fn named(text: &str, names: &[&str]) -> Option<u8> {
    let text = text.to_ascii_lowercase();
    names.iter().position(|n| *n == text).map(|i| i as u8)
}

fn range_error(key: &str, text: &str) -> KeyError {
    KeyError::new(
        key,
        format!("{key}: {text:?} is not a value or an ordered range first:last"),
    )
}

fn split_range<T: Copy>(
    key: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<(T, T), KeyError> {
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    match (parse(a.trim()), parse(b.trim())) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(range_error(key, text)),
    }
}

fn range(key: &str, text: &str, parse: impl Fn(&str) -> Option<u8>) -> Result<(u8, u8), KeyError> {
    let (a, b) = split_range(key, text, parse)?;
    if a > b {
        return Err(range_error(key, text));
    }
    Ok((a, b))
}

/// `"UTC"`, `"+02:00"`/`"-05:30"`, or an IANA name.
fn time_zone(key: &str, text: &str) -> Result<TimeZone, KeyError> {
    if text == "UTC" {
        return Ok(TimeZone::UTC);
    }
    if let Some(rest) = text.strip_prefix(['+', '-']) {
        let sign = if text.starts_with('-') { -1 } else { 1 };
        let offset = minute_of_day(key, rest, false)
            .ok()
            .and_then(|minutes| Offset::from_seconds(sign * minutes * 60).ok())
            .ok_or_else(|| {
                KeyError::new(key, format!("{key}: {text:?} is not a UTC offset ±HH:MM"))
            })?;
        return Ok(TimeZone::fixed(offset));
    }
    TimeZone::get(text).map_err(|e| {
        KeyError::new(
            key,
            format!(
                "{key}: {text:?} is not a known time zone (an IANA name, \"UTC\" or ±HH:MM): {e}"
            ),
        )
    })
}

impl Spec {
    fn contains(&self, t: Timestamp) -> bool {
        let local = t.to_zoned(self.tz.clone());
        let weekday = local.weekday().to_monday_zero_offset();
        if self.weekdays != 0 && self.weekdays & (1 << weekday) == 0 {
            return false;
        }
        if self.months != 0 && self.months & (1 << local.month()) == 0 {
            return false;
        }
        if !self.days.is_empty() {
            let last = local.days_in_month();
            let day = local.day();
            let from_start = |d: i8| if d < 0 { last + 1 + d } else { d };
            if !self
                .days
                .iter()
                .any(|&(a, b)| (from_start(a)..=from_start(b)).contains(&day))
            {
                return false;
            }
        }
        if self.times.is_empty() {
            return true;
        }
        let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
        self.times
            .iter()
            .any(|&(start, end)| (start..end).contains(&minute))
    }

    /// Instants after `t` and within the horizon at which `contains` may
    /// change: local midnights and the ends of the time ranges.
    fn boundaries(&self, t: Timestamp, out: &mut Vec<i64>) {
        let mut date: Date = t.to_zoned(self.tz.clone()).date();
        for _ in 0..=HORIZON_DAYS {
            let minutes = std::iter::once(0).chain(self.times.iter().flat_map(|&(a, b)| [a, b]));
            for minute in minutes {
                let day = if minute == 24 * 60 {
                    date.tomorrow().ok()
                } else {
                    Some(date)
                };
                let at = day.and_then(|d| {
                    let time = d.at((minute / 60 % 24) as i8, (minute % 60) as i8, 0, 0);
                    self.tz.to_ambiguous_zoned(time).compatible().ok()
                });
                if let Some(at) = at {
                    out.push(at.timestamp().as_millisecond());
                }
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
    }
}

impl TimeInterval {
    /// Whether the interval holds at `t_ms` (milliseconds since the epoch).
    pub fn contains(&self, t_ms: i64) -> bool {
        match Timestamp::from_millisecond(t_ms) {
            Ok(t) => self.specs.iter().any(|s| s.contains(t)),
            Err(_) => false,
        }
    }
}

/// When a hook may notify: inside one of its active intervals (if it has
/// any) and outside all of its mute intervals.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub active: Vec<Arc<TimeInterval>>,
    pub mute: Vec<Arc<TimeInterval>>,
}

impl Schedule {
    /// Whether the hook holds its notifications at `t_ms`.
    pub fn muted_at(&self, t_ms: i64) -> bool {
        self.mute.iter().any(|i| i.contains(t_ms))
            || (!self.active.is_empty() && !self.active.iter().any(|i| i.contains(t_ms)))
    }

    /// The first instant after `t_ms` at which the hook is not muted, or,
    /// if none comes within the horizon, one a day later to look again.
    pub fn next_open(&self, t_ms: i64) -> i64 {
        let Ok(t) = Timestamp::from_millisecond(t_ms) else {
            return t_ms.saturating_add(DAY_MS);
        };
        let mut candidates = Vec::new();
        for interval in self.active.iter().chain(&self.mute) {
            for spec in &interval.specs {
                spec.boundaries(t, &mut candidates);
            }
        }
        candidates.retain(|&c| c > t_ms);
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .find(|&c| !self.muted_at(c))
            .unwrap_or(t_ms.saturating_add(DAY_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{assert_refused, compile_text};

    /// Milliseconds of an RFC 3339 time.
    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn interval(toml_text: &str) -> TimeInterval {
        let config: TimeIntervalConfig = toml::from_str(toml_text).unwrap();
        config.compile().unwrap()
    }

    const WORKING_HOURS: &str = r#"
name = "working_hours"
[[intervals]]
weekdays = ["monday:friday"]
times = [{ start_time = "09:00", end_time = "17:00" }]
location = "+01:00"
"#;

    #[test]
    fn working_hours_hold_on_weekdays_between_the_times_in_their_zone() {
        let hours = interval(WORKING_HOURS);
        // 2026-12-07 is a Monday; 09:00 at +01:00 is 08:00 UTC.
        assert!(!hours.contains(at("2026-12-07T07:59:59Z")));
        assert!(hours.contains(at("2026-12-07T08:00:00Z")));
        assert!(hours.contains(at("2026-12-07T15:59:59Z")));
        assert!(!hours.contains(at("2026-12-07T16:00:00Z")));
        // Saturday.
        assert!(!hours.contains(at("2026-12-05T10:00:00Z")));
        // Friday.
        assert!(hours.contains(at("2026-12-11T10:00:00Z")));
    }

    #[test]
    fn active_intervals_open_at_the_next_working_morning() {
        let schedule = Schedule {
            active: vec![Arc::new(interval(WORKING_HOURS))],
            mute: vec![],
        };
        // Saturday noon: muted until Monday 09:00 local.
        let saturday = at("2026-12-05T12:00:00Z");
        assert!(schedule.muted_at(saturday));
        assert_eq!(schedule.next_open(saturday), at("2026-12-07T08:00:00Z"));
        // Friday evening too.
        assert_eq!(
            schedule.next_open(at("2026-12-11T16:30:00Z")),
            at("2026-12-14T08:00:00Z")
        );
        assert!(!schedule.muted_at(at("2026-12-07T08:00:00Z")));
    }

    #[test]
    fn mute_intervals_hold_inside_and_open_at_their_end() {
        let nights = interval(
            r#"
name = "nights"
[[intervals]]
times = [{ start_time = "22:00", end_time = "24:00" }, { start_time = "00:00", end_time = "07:00" }]
[[intervals]]
days_of_month = ["-1"]
months = ["december"]
"#,
        );
        let schedule = Schedule {
            active: vec![],
            mute: vec![Arc::new(nights)],
        };
        assert!(!schedule.muted_at(at("2026-12-07T21:59:00Z")));
        assert!(schedule.muted_at(at("2026-12-07T23:00:00Z")));
        assert_eq!(
            schedule.next_open(at("2026-12-07T23:00:00Z")),
            at("2026-12-08T07:00:00Z")
        );
        // New Year's Eve is muted all day, and the night after it.
        assert!(schedule.muted_at(at("2026-12-31T12:00:00Z")));
        assert_eq!(
            schedule.next_open(at("2026-12-31T12:00:00Z")),
            at("2027-01-01T07:00:00Z")
        );
        assert!(!schedule.muted_at(at("2026-11-30T12:00:00Z")));
    }

    #[test]
    fn local_times_follow_daylight_saving_time() {
        // Central European rules without the system's database: 09:00 is
        // 08:00 UTC in winter and 07:00 UTC in summer.
        let mut hours = interval(WORKING_HOURS);
        hours.specs[0].tz = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let schedule = Schedule {
            active: vec![Arc::new(hours)],
            mute: vec![],
        };
        // Saturday 2027-03-27; the clocks go forward on Sunday the 28th.
        assert_eq!(
            schedule.next_open(at("2027-03-27T12:00:00Z")),
            at("2027-03-29T07:00:00Z")
        );
        assert_eq!(
            schedule.next_open(at("2026-12-05T12:00:00Z")),
            at("2026-12-07T08:00:00Z")
        );
    }

    #[test]
    fn a_window_beyond_the_horizon_is_looked_for_again_a_day_later() {
        let june = interval("name = \"june\"\n[[intervals]]\nmonths = [\"june\"]\n");
        let schedule = Schedule {
            active: vec![Arc::new(june)],
            mute: vec![],
        };
        let t = at("2026-12-05T12:00:00Z");
        assert_eq!(schedule.next_open(t), t + DAY_MS);
    }

    #[test]
    fn iana_zones_and_offsets_are_read() {
        for location in ["UTC", "+05:30", "-08:00", "Europe/Berlin"] {
            let text = format!("name = \"x\"\n[[intervals]]\nlocation = {location:?}\n");
            let config: TimeIntervalConfig = toml::from_str(&text).unwrap();
            config.compile().unwrap();
        }
    }

    fn section(interval: &str) -> String {
        format!("[alerting]\n[[alerting.time_intervals]]\nname = \"quiet\"\n{interval}\n")
    }

    #[test]
    fn bad_time_intervals_name_the_interval_and_the_key() {
        let spec = |body: &str| section(&format!("[[alerting.time_intervals.intervals]]\n{body}"));
        let cases = [
            (section(""), "intervals"),
            (
                section("intervals = []"),
                "intervals needs at least one entry",
            ),
            (
                spec("times = [{ start_time = \"9:00\", end_time = \"17:00\" }]"),
                "intervals[0].times: \"9:00\" must be HH:MM",
            ),
            (
                spec("times = [{ start_time = \"17:00\", end_time = \"09:00\" }]"),
                "must be before end_time",
            ),
            (
                spec("times = [{ start_time = \"24:00\", end_time = \"24:00\" }]"),
                "intervals[0].times",
            ),
            (
                spec("times = [{ start_time = \"10:60\", end_time = \"11:00\" }]"),
                "intervals[0].times",
            ),
            (spec("times = [{ start_time = \"10:00\" }]"), "end_time"),
            (
                spec("weekdays = [\"funday\"]"),
                "intervals[0].weekdays: \"funday\"",
            ),
            (
                spec("weekdays = [\"friday:monday\"]"),
                "intervals[0].weekdays",
            ),
            (
                spec("days_of_month = [\"0\"]"),
                "intervals[0].days_of_month",
            ),
            (
                spec("days_of_month = [\"-1:5\"]"),
                "intervals[0].days_of_month",
            ),
            (
                spec("days_of_month = [\"32\"]"),
                "intervals[0].days_of_month",
            ),
            (spec("months = [\"13\"]"), "intervals[0].months"),
            (spec("months = [\"smarch\"]"), "intervals[0].months"),
            (
                spec("location = \"Mars/Olympus\""),
                "intervals[0].location: \"Mars/Olympus\"",
            ),
            (spec("location = \"+25:00\""), "intervals[0].location"),
            (spec("colour = \"blue\""), "colour"),
        ];
        assert_refused(&cases, Some("alerting.time_intervals[0] \"quiet\""));
        let twice = format!(
            "{}{}",
            section("[[alerting.time_intervals.intervals]]"),
            "[[alerting.time_intervals]]\nname = \"quiet\"\n[[alerting.time_intervals.intervals]]\n"
        );
        assert_refused(
            &[(twice, "defined twice")],
            Some("alerting.time_intervals[1] \"quiet\""),
        );
        assert_refused(
            &[(
                "[alerting]\n[[alerting.time_intervals]]\nname = \"a b\"\n[[alerting.time_intervals.intervals]]\n".to_owned(),
                "name must match",
            )],
            None,
        );
    }

    #[test]
    fn hooks_name_only_defined_intervals() {
        let hook = |keys: &str| {
            format!(
                "{}[[alerting.time_intervals.intervals]]\nweekdays = [\"saturday:sunday\"]\n[[alerting.hooks]]\nname = \"h\"\nkind = \"exec\"\ncommand = [\"true\"]\n{keys}\n",
                section("")
            )
        };
        let set = compile_text(&hook(
            "active_time_intervals = [\"quiet\"]\nmute_time_intervals = [\"quiet\"]",
        ))
        .unwrap();
        let schedule = &set.hooks[0].schedule;
        assert_eq!((schedule.active.len(), schedule.mute.len()), (1, 1));
        assert_refused(
            &[
                (
                    hook("mute_time_intervals = [\"nights\"]"),
                    "mute_time_intervals: no time interval named \"nights\" (defined: quiet)",
                ),
                (
                    hook("active_time_intervals = [\"nights\"]"),
                    "active_time_intervals: no time interval named \"nights\"",
                ),
                (
                    hook("active_time_intervals = \"quiet\""),
                    "active_time_intervals",
                ),
            ],
            Some("alerting.hooks[0] \"h\""),
        );
    }
}
