//! Connection tracking (`/proc/sys/net/netfilter/nf_conntrack_count` and
//! `nf_conntrack_max`): entries in the table and its limit, past which the
//! kernel drops new connections. Without the `nf_conntrack` module the
//! files are absent: no series, and not a problem.

#![cfg(target_os = "linux")]

use super::{FileError, ParseError, ProcFs, Samples};
use std::io;

const COUNT: &str = "sys/net/netfilter/nf_conntrack_count";
const MAX: &str = "sys/net/netfilter/nf_conntrack_max";

fn number(text: &str) -> Result<u64, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::new(format!("{:?} is not a count", text.trim())))
}

/// Appends both figures, or nothing when the module is not loaded.
pub(super) fn sample(fs: &mut ProcFs, out: &mut Samples) -> Result<(), FileError> {
    let count = match fs.parse(COUNT, number) {
        Err(FileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        other => other?,
    };
    let max = fs.parse(MAX, number)?;
    // The limit first: alert rules divide by it.
    out.push("host_conntrack_limit", max as f64);
    out.push("host_conntrack_entries", count as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(files: &[(&str, &str)]) -> (tempfile::TempDir, ProcFs) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let fs = ProcFs::new(dir.path().to_owned());
        (dir, fs)
    }

    #[test]
    fn reads_entries_and_limit() {
        let (_dir, mut fs) = proc_with(&[(COUNT, "118\n"), (MAX, "262144\n")]);
        let mut out = Samples::default();
        sample(&mut fs, &mut out).unwrap();
        assert_eq!(out.get("host_conntrack_entries", &[]), Some(118.0));
        assert_eq!(out.get("host_conntrack_limit", &[]), Some(262_144.0));
    }

    #[test]
    fn no_module_is_no_series_and_no_problem() {
        let (_dir, mut fs) = proc_with(&[]);
        let mut out = Samples::default();
        sample(&mut fs, &mut out).unwrap();
        assert!(out.0.is_empty());
    }

    #[test]
    fn malformed_or_half_missing_is_a_problem() {
        let (_dir, mut fs) = proc_with(&[(COUNT, "many\n"), (MAX, "10\n")]);
        let mut out = Samples::default();
        let err = sample(&mut fs, &mut out).unwrap_err();
        assert!(err.to_string().contains("nf_conntrack_count"), "{err}");
        let (_dir, mut fs) = proc_with(&[(COUNT, "1\n")]);
        let err = sample(&mut fs, &mut out).unwrap_err();
        assert!(err.to_string().contains("nf_conntrack_max"), "{err}");
        assert!(out.0.is_empty());
    }
}
