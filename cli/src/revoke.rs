//! `hostwatch hosts revoke HOST [--reason TEXT]` and `hostwatch hosts
//! revoked`: cutting a host off (Admin `RevokeHost`: its certificates are
//! refused at every handshake and its open streams closed) and listing
//! every revoked host with its reason and time (`ListRevokedHosts`).

use crate::client::ClientConfig;
use crate::read::{fetch_hosts, print_table};
use hostwatch_alerting::format_rfc3339;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{ListRevokedHostsRequest, RevokeHostRequest, RevokedHost};
use serde::Serialize;
use std::path::Path;

#[derive(clap::Subcommand)]
pub(crate) enum HostsCommand {
    /// Revoke a host: its certificates are refused from now on, its open
    /// streams closed; it enrolls again only with a token created later.
    Revoke {
        /// The host id.
        host: String,
        /// Why (shown by `hosts revoked`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List revoked hosts: host, when, by whom, why, serials.
    Revoked {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct RevokedJson<'a> {
    host: &'a str,
    reason: &'a str,
    revoked: String,
    revoked_by: &'a str,
    serials: &'a [String],
    /// When a newer enrollment token enrolled it again, if it did.
    reinstated: Option<String>,
}

fn revoked_json(r: &RevokedHost) -> RevokedJson<'_> {
    RevokedJson {
        host: &r.host_id,
        reason: &r.reason,
        revoked: format_rfc3339(r.revoked_ms),
        revoked_by: &r.revoked_by,
        serials: &r.serials,
        reinstated: (r.reinstated_ms != 0).then(|| format_rfc3339(r.reinstated_ms)),
    }
}

pub(crate) fn run(config_path: &Path, command: HostsCommand) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    match command {
        HostsCommand::Revoke { host, reason } => {
            let request = RevokeHostRequest {
                host_id: host,
                reason,
            };
            let revoked = config.call(AdminClient::new, |mut admin| async move {
                admin.revoke_host(request).await
            })?;
            println!(
                "revoked {} ({} connection(s) closed; serials denied: {}). It enrolls again only with a token created from now on.",
                revoked.host_id,
                revoked.connections_closed,
                if revoked.serials.is_empty() {
                    "none known".to_owned()
                } else {
                    revoked.serials.join(", ")
                }
            );
            // Nothing issued, connected or ever seen: a typo would leave
            // the host meant untouched, so say so (the revocation stands).
            if revoked.serials.is_empty() && revoked.connections_closed == 0 {
                let known = fetch_hosts(&config)?;
                if !known.iter().any(|h| h.host_id == revoked.host_id) {
                    eprintln!(
                        "warning: {} is not a host this collector knows (none connected or was enrolled with that id): check the name",
                        revoked.host_id
                    );
                }
            }
        }
        HostsCommand::Revoked { json } => {
            let hosts = config
                .call(AdminClient::new, |mut admin| async move {
                    admin.list_revoked_hosts(ListRevokedHostsRequest {}).await
                })?
                .hosts;
            let out: Vec<RevokedJson<'_>> = hosts.iter().map(revoked_json).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let mut rows = vec![[
                "HOST".to_owned(),
                "REVOKED".to_owned(),
                "BY".to_owned(),
                "REASON".to_owned(),
                "SERIALS".to_owned(),
                "REINSTATED".to_owned(),
            ]];
            rows.extend(out.iter().map(|r| {
                [
                    r.host.to_owned(),
                    r.revoked.clone(),
                    r.revoked_by.to_owned(),
                    r.reason.to_owned(),
                    r.serials.join(","),
                    r.reinstated.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            }));
            print_table(&rows);
        }
    }
    Ok(())
}
