//! Load averages over 1, 5 and 15 minutes, and the number of threads, from
//! `/proc/loadavg` (`0.52 0.40 0.31 2/345 6789`).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples, field};

pub(super) fn sample(text: &str, out: &mut Samples) -> Result<(), ParseError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let load: [f64; 3] = [
        field(&fields, 0, "load1")?,
        field(&fields, 1, "load5")?,
        field(&fields, 2, "load15")?,
    ];
    if load.iter().any(|l| !l.is_finite() || *l < 0.0) {
        return Err(ParseError::new("load average out of range"));
    }
    let threads: u64 = fields
        .get(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| ParseError::new("no runnable/total field"))?;
    out.push("host_load1", load[0]);
    out.push("host_load5", load[1]);
    out.push("host_load15", load[2]);
    out.push("host_threads", threads as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        let mut out = Samples::default();
        sample("0.52 0.40 0.31 2/345 6789\n", &mut out).unwrap();
        assert_eq!(out.get("host_load1", &[]), Some(0.52));
        assert_eq!(out.get("host_load15", &[]), Some(0.31));
        assert_eq!(out.get("host_threads", &[]), Some(345.0));
    }

    #[test]
    fn bad_loadavg_is_an_error_and_appends_nothing() {
        for text in [
            "",
            "0.5 0.4",
            "0.5 0.4 x 1/2 3",
            "0.5 0.4 0.3 12 3",
            "inf 0 0 1/2 3",
        ] {
            let mut out = Samples::default();
            assert!(sample(text, &mut out).is_err(), "{text:?}");
            assert!(out.0.is_empty());
        }
    }
}
