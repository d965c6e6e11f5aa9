//! `hostwatch certs init|issue|pin`: a root CA, the issuing CA that signs
//! enrolled agents, and role certificates. Production deployments may
//! bring their own PKI; the only requirement is the
//! `hostwatch://<role>/<name>` URI SAN.

use crate::UsageError;
use clap::Subcommand;
use hostwatch_pki::{Ca, CaPin, Identity, IssueOptions, Role, cert_stem};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(crate) enum CertsCommand {
    /// Create a root CA (ca.pem, ca.key) and the issuing CA it signs for
    /// enrolled agents (issuing.pem, issuing.key) in DIR; print the CA pin.
    /// Once the collector's and operators' certificates are issued, ca.key
    /// can go offline: the collector needs ca.pem, issuing.pem and issuing.key.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate for a role, signed by the CA in DIR.
    Issue {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Host id (agent), person or tool (operator, viewer) or instance
        /// (collector).
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// DNS names the certificate answers to (collectors); repeatable.
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// IP addresses the certificate answers to (collectors); repeatable.
        #[arg(long = "ip")]
        ip_addresses: Vec<IpAddr>,
    },
    /// Print the CA pin agents enroll with: sha256: and the hex SHA-256 of
    /// the CA certificate's SubjectPublicKeyInfo.
    Pin {
        /// The root CA's certificate.
        #[arg(long, default_value = "/etc/hostwatch/ca.pem")]
        ca: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a role: use agent, operator, viewer or collector"))
}

pub(crate) fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, days } => {
            let ca_path = dir.join("ca.pem");
            if ca_path.exists() {
                return Err(UsageError(format!(
                    "{} exists; refusing to replace a CA (certificates signed by it would stop working)",
                    ca_path.display()
                ))
                .into());
            }
            check_days(days)?;
            create_dir(&dir)?;
            let root = Ca::generate("hostwatch CA", days)?;
            root.write(&dir)?;
            root.generate_issuing(days)?.write_issuing(&dir)?;
            let pin = CaPin::of(&root.cert_der()?)?;
            // The pin alone on stdout (`PIN=$(...)`), the rest on stderr.
            println!("{pin}");
            eprintln!(
                "created the root CA {} ({}) and the issuing CA for agents {} ({}).\n\
                 Agents enroll with --ca-pin {pin} (`hostwatch certs pin` prints it again).",
                ca_path.display(),
                dir.join("ca.key").display(),
                dir.join("issuing.pem").display(),
                dir.join("issuing.key").display(),
            );
            Ok(())
        }
        CertsCommand::Issue {
            role,
            name,
            dir,
            days,
            dns_names,
            ip_addresses,
        } => {
            check_days(days)?;
            let identity = Identity::new(role, &name).map_err(|e| UsageError(e.to_string()))?;
            let ca = Ca::load(&dir)?;
            let mut options = IssueOptions::valid_for_days(days);
            options.dns_names = dns_names;
            options.ip_addresses = ip_addresses;
            let (cert, key) = ca
                .issue(&identity, &options)?
                .write(&dir, &cert_stem(&identity))?;
            println!(
                "issued {} for {}: {} and {}",
                identity.role,
                identity.uri(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
        CertsCommand::Pin { ca } => {
            println!("{}", CaPin::of_file(&ca)?);
            Ok(())
        }
    }
}

fn check_days(days: i64) -> Result<(), UsageError> {
    if (1..=36500).contains(&days) {
        Ok(())
    } else {
        Err(UsageError(format!("--days {days}: use 1 to 36500")))
    }
}

pub(crate) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))
}
