//! File handles of the whole system (`/proc/sys/fs/file-nr`): allocated,
//! and the most the kernel allows (`fs.file-max`).

#![cfg(target_os = "linux")]

use super::{ParseError, Samples, field};

/// `3179 0 2466246` (tab-separated): allocated, free (always 0 since Linux 2.6), maximum.
pub(super) fn sample(text: &str, out: &mut Samples) -> Result<(), ParseError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    if fields.len() != 3 {
        return Err(ParseError::new(format!(
            "{} fields instead of 3 in {text:?}",
            fields.len()
        )));
    }
    let allocated: u64 = field(&fields, 0, "allocated")?;
    let maximum: u64 = field(&fields, 2, "maximum")?;
    // The limit first: alert rules divide by it.
    out.push("host_file_descriptors_limit", maximum as f64);
    out.push("host_file_descriptors_allocated", allocated as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_allocated_and_maximum() {
        let mut out = Samples::default();
        sample("3179\t0\t2466246\n", &mut out).unwrap();
        assert_eq!(
            out.get("host_file_descriptors_allocated", &[]),
            Some(3179.0)
        );
        assert_eq!(
            out.get("host_file_descriptors_limit", &[]),
            Some(2_466_246.0)
        );
    }

    #[test]
    fn malformed_is_an_error() {
        for text in ["", "1 0", "1 0 x", "-1 0 5", "1 0 2 3"] {
            let mut out = Samples::default();
            assert!(sample(text, &mut out).is_err(), "{text:?}");
            assert!(out.0.is_empty(), "{text:?}");
        }
    }
}
