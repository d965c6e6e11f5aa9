//! The fleet's certificates: a test CA, the collector's and an operator's,
//! and one per simulated agent. In a kept work directory (`--dir`) they are
//! reused by the next run while they stay valid for a while.

use crate::fixture::issue;
use anyhow::Context;
use hostwatch_pki::{Ca, Role, TlsFiles};
use std::path::Path;
use std::time::Instant;

/// Least validity a kept certificate must have left to be used again
/// (issued ones are valid for a day, the CA for two).
const REUSE_MARGIN_MS: i64 = 6 * 3_600_000;

/// What the bench connects and serves with.
pub(super) struct Certs {
    pub(super) collector: TlsFiles,
    pub(super) operator: TlsFiles,
    pub(super) agents: Vec<TlsFiles>,
    /// Agent certificates issued by this run (the others were kept).
    pub(super) issued: u32,
    pub(super) seconds: f64,
}

/// The certificates in `dir` (`ca.pem` and the role certificates at its
/// top, agents' under `agents/`), for `agents` hosts `host-<i>`.
pub(super) fn prepare(dir: &Path, agents: u32) -> anyhow::Result<Certs> {
    let started = Instant::now();
    let ca = match kept_ca(dir)? {
        Some(ca) => ca,
        None => {
            // A new CA: whatever was issued by the old one is useless.
            let _ = std::fs::remove_dir_all(dir.join("agents"));
            let ca = Ca::generate("bench CA", 2)?;
            ca.write(dir)?;
            ca
        }
    };
    let collector = issue(&ca, dir, Role::Collector, "bench")?;
    let operator = issue(&ca, dir, Role::Operator, "bench")?;
    let agents_dir = dir.join("agents");
    std::fs::create_dir_all(&agents_dir)?;
    std::fs::copy(dir.join("ca.pem"), agents_dir.join("ca.pem"))?;
    let mut files = Vec::with_capacity(agents as usize);
    let mut issued = 0;
    for i in 0..agents {
        let host = format!("host-{i}");
        let kept = TlsFiles {
            ca: agents_dir.join("ca.pem"),
            cert: agents_dir.join(format!("agent-{host}.pem")),
            key: agents_dir.join(format!("agent-{host}.key")),
        };
        if still_valid(&kept) {
            files.push(kept);
        } else {
            files.push(issue(&ca, &agents_dir, Role::Agent, &host)?);
            issued += 1;
        }
    }
    Ok(Certs {
        collector,
        operator,
        agents: files,
        issued,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The CA kept in `dir`, if there is one valid for a while yet.
fn kept_ca(dir: &Path) -> anyhow::Result<Option<Ca>> {
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
    };
    if !files.cert.exists() || !still_valid(&files) {
        return Ok(None);
    }
    Ca::load(dir)
        .map(Some)
        .with_context(|| format!("loading the CA kept in {}", dir.display()))
}

fn still_valid(files: &TlsFiles) -> bool {
    files.key.exists()
        && files
            .cert_validity_ms()
            .is_ok_and(|(_, not_after)| not_after > hostwatch_stdx::now_ms() + REUSE_MARGIN_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_directory_is_used_again_and_a_new_ca_reissues() {
        let dir = tempfile::tempdir().unwrap();
        let first = prepare(dir.path(), 3).unwrap();
        assert_eq!(first.issued, 3);
        assert_eq!(first.agents.len(), 3);
        let again = prepare(dir.path(), 4).unwrap();
        assert_eq!(again.issued, 1, "only the new host's");
        for agent in &again.agents {
            hostwatch_pki::client_config(agent).unwrap();
        }
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let fresh = prepare(dir.path(), 2).unwrap();
        assert_eq!(fresh.issued, 2);
    }
}
