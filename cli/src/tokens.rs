//! `hostwatch token create|list|revoke`: the bearer tokens of the
//! collector's HTTPS API, and enrollment tokens (`--enroll`: agents enroll
//! with them, a number of times, until they expire) (Admin `CreateToken`,
//! `ListTokens`, `RevokeToken`). A token's text is printed once, at
//! creation: the collector keeps only its digest.

use crate::UsageError;
use crate::client::ClientConfig;
use crate::read::print_table;
use clap::{Subcommand, ValueEnum};
use hostwatch_alerting::format_rfc3339;
use hostwatch_proto::v1::admin_client::AdminClient;
use hostwatch_proto::v1::{
    ApiToken, CreateTokenRequest, CreateTokenResponse, ListTokensRequest, RevokeTokenRequest, Role,
};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// A token's lifetime when `--ttl` is not given.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(90 * 86_400);
/// The longest lifetime the collector accepts.
const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it, this once: the collector keeps only
    /// its digest. Send it as `Authorization: Bearer <token>` to the HTTPS
    /// API; or, with --enroll, give it to `hostwatch-agent enroll --token`.
    Create {
        /// Unique name: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter
        /// or digit. Required for API tokens; an enrollment token without
        /// one is named enroll-<8 hex digits>.
        #[arg(long)]
        name: Option<String>,
        /// What it may do: both roles read through the HTTPS API. Not with --enroll.
        #[arg(
            long,
            value_enum,
            required_unless_present = "enroll",
            conflicts_with = "enroll"
        )]
        role: Option<TokenRole>,
        /// An enrollment token: agents enroll with it (`hostwatch-agent
        /// enroll`), at most --uses times, until it expires.
        #[arg(long)]
        enroll: bool,
        /// Enrollments it allows (1 to 100000); default 1.
        #[arg(long)]
        uses: Option<u32>,
        /// Host ids it may enroll: a glob where * stands for any run of
        /// characters (web-*); any host id if absent.
        #[arg(long)]
        hosts: Option<String>,
        /// Lifetime (90d, 12h, 1y ...), or `never`; default 90d, and 1h
        /// for an enrollment token (which must expire within 30d).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
        /// Print JSON (the token and its entry) instead of the token alone.
        #[arg(long)]
        json: bool,
    },
    /// List tokens: name, role, creation, expiry (never their text).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: refused by the collector from this moment.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// A token's role.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TokenRole {
    Viewer,
    Operator,
}

impl TokenRole {
    fn wire(self) -> Role {
        match self {
            TokenRole::Viewer => Role::Viewer,
            TokenRole::Operator => Role::Operator,
        }
    }
}

/// An enrollment token's lifetime when `--ttl` is not given.
const DEFAULT_ENROLL_TTL: Duration = Duration::from_secs(3600);

/// A token's lifetime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Ttl {
    Never,
    For(Duration),
}

fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s == "never" {
        return Ok(Ttl::Never);
    }
    match crate::read::parse_duration(s) {
        Ok(d) if d > MAX_TTL => Err(format!(
            "{s:?} is more than ten years (3650d); `never` for no expiry"
        )),
        Ok(d) => Ok(Ttl::For(d)),
        Err(e) => Err(format!("{e}; or `never` for no expiry")),
    }
}

/// Creates a token through Admin on `channel`.
pub(crate) async fn create(
    channel: Channel,
    name: &str,
    role: TokenRole,
    ttl: Ttl,
) -> Result<CreateTokenResponse, tonic::Status> {
    let (ttl_ms, never_expires) = match ttl {
        Ttl::Never => (0, true),
        Ttl::For(d) => (i64::try_from(d.as_millis()).unwrap_or(i64::MAX), false),
    };
    let request = CreateTokenRequest {
        name: name.to_owned(),
        role: role.wire() as i32,
        ttl_ms,
        never_expires,
        ..Default::default()
    };
    Ok(AdminClient::new(channel)
        .create_token(request)
        .await?
        .into_inner())
}

/// What `token create` was asked for.
enum NewToken {
    Api {
        name: String,
        role: TokenRole,
    },
    Enroll {
        name: String,
        uses: u32,
        hosts: String,
    },
}

fn new_token_request(new: &NewToken, ttl: Ttl) -> Result<CreateTokenRequest, UsageError> {
    let ttl_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(match (new, ttl) {
        (NewToken::Api { name, role }, ttl) => CreateTokenRequest {
            name: name.clone(),
            role: role.wire() as i32,
            ttl_ms: match ttl {
                Ttl::Never => 0,
                Ttl::For(d) => ttl_ms(d),
            },
            never_expires: ttl == Ttl::Never,
            ..Default::default()
        },
        (NewToken::Enroll { .. }, Ttl::Never) => {
            return Err(UsageError(
                "--ttl never: an enrollment token must expire (at most 30d)".to_owned(),
            ));
        }
        (NewToken::Enroll { name, uses, hosts }, Ttl::For(d)) => CreateTokenRequest {
            name: name.clone(),
            role: Role::Agent as i32,
            ttl_ms: ttl_ms(d),
            never_expires: false,
            uses: *uses,
            hosts: hosts.clone(),
        },
    })
}

#[derive(Serialize)]
struct TokenJson<'a> {
    name: &'a str,
    role: &'static str,
    created: String,
    /// `None`: never.
    expires: Option<String>,
    expired: bool,
    created_by: &'a str,
    /// Enrollment tokens: the uses it allowed and has left, its host pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    uses: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uses_left: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<&'a str>,
}

fn token_json(t: &ApiToken) -> TokenJson<'_> {
    let enroll = t.role == Role::Agent as i32;
    TokenJson {
        name: &t.name,
        role: role_word(t.role),
        created: format_rfc3339(t.created_ms),
        expires: (t.expires_ms != 0).then(|| format_rfc3339(t.expires_ms)),
        expired: t.expired,
        created_by: &t.created_by,
        uses: enroll.then_some(t.uses),
        uses_left: enroll.then_some(t.uses_left),
        hosts: (enroll && !t.hosts.is_empty()).then_some(t.hosts.as_str()),
    }
}

fn role_word(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Viewer) => "viewer",
        Ok(Role::Operator) => "operator",
        Ok(Role::Agent) => "enroll",
        _ => "?",
    }
}

/// The expiry column: `never`, the time, or `expired TIME`.
fn expires_text(t: &TokenJson<'_>) -> String {
    match (&t.expires, t.expired) {
        (None, _) => "never".to_owned(),
        (Some(at), false) => at.clone(),
        (Some(at), true) => format!("expired {at}"),
    }
}

pub(crate) fn run(config_path: &Path, command: TokenCommand) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    match command {
        TokenCommand::Create {
            name,
            role,
            enroll,
            uses,
            hosts,
            ttl,
            json,
        } => {
            if !enroll && (uses.is_some() || hosts.is_some()) {
                return Err(UsageError(
                    "--uses and --hosts are for enrollment tokens: add --enroll".to_owned(),
                )
                .into());
            }
            let (new, default_ttl) = match (enroll, role, name) {
                (true, _, name) => (
                    NewToken::Enroll {
                        name: name.unwrap_or_default(),
                        uses: uses.unwrap_or(1),
                        hosts: hosts.unwrap_or_default(),
                    },
                    DEFAULT_ENROLL_TTL,
                ),
                (false, Some(role), Some(name)) => (NewToken::Api { name, role }, DEFAULT_TTL),
                (false, _, _) => {
                    return Err(UsageError(
                        "--name and --role are required for an API token (or --enroll)".to_owned(),
                    )
                    .into());
                }
            };
            let request = new_token_request(&new, ttl.unwrap_or(Ttl::For(default_ttl)))?;
            let created = config.call(AdminClient::new, |mut admin| async move {
                admin.create_token(request).await
            })?;
            let entry = created.entry.unwrap_or_default();
            if json {
                #[derive(Serialize)]
                struct Created<'a> {
                    token: &'a str,
                    #[serde(flatten)]
                    entry: TokenJson<'a>,
                }
                let out = Created {
                    token: &created.token,
                    entry: token_json(&entry),
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            // The token alone on stdout (`> file`), the explanation on stderr.
            println!("{}", created.token);
            let entry = token_json(&entry);
            if let NewToken::Enroll { .. } = new {
                // The pin of the CA this client trusts the collector by:
                // the deployment's root, as a rule (a wrong one makes
                // enroll stop before it sends the token).
                let pin = match hostwatch_pki::CaPin::of_file(&config.tls.ca) {
                    Ok(pin) => format!("{pin} (the pin of {})", config.tls.ca.display()),
                    Err(_) => "$(hostwatch certs pin)".to_owned(),
                };
                eprintln!(
                    "enrollment token {:?} created: {} uses, host ids {}, expires {}.\n\
                     It is shown only this once (the collector keeps only its digest).\n\
                     On each host: HOSTWATCH_ENROLL_TOKEN=<token> hostwatch-agent enroll \
                     --collector COLLECTOR:ENROLL_PORT --ca-pin {pin}",
                    entry.name,
                    entry.uses.unwrap_or_default(),
                    entry.hosts.unwrap_or("any"),
                    expires_text(&entry)
                );
                return Ok(());
            }
            eprintln!(
                "token {:?} created: role {}, expires {}.\n\
                 It is shown only this once (the collector keeps only its digest): store it now.\n\
                 Send it to the collector's HTTPS API (http_listen) as the header\n  \
                 Authorization: Bearer <token>\n\
                 for example: curl --cacert CA.pem -H \"Authorization: Bearer $(cat FILE)\" 'https://COLLECTOR:PORT/api/v1/query?query=host_load1'",
                entry.name,
                entry.role,
                expires_text(&entry)
            );
        }
        TokenCommand::List { json } => {
            let tokens = config
                .call(AdminClient::new, |mut admin| async move {
                    admin.list_tokens(ListTokensRequest {}).await
                })?
                .tokens;
            let out: Vec<TokenJson<'_>> = tokens.iter().map(token_json).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let mut rows = vec![[
                "NAME".to_owned(),
                "ROLE".to_owned(),
                "CREATED".to_owned(),
                "EXPIRES".to_owned(),
                "USES LEFT".to_owned(),
                "HOSTS".to_owned(),
                "BY".to_owned(),
            ]];
            for t in &out {
                rows.push([
                    t.name.to_owned(),
                    t.role.to_owned(),
                    t.created.clone(),
                    expires_text(t),
                    t.uses_left
                        .zip(t.uses)
                        .map_or("-".to_owned(), |(left, of)| format!("{left}/{of}")),
                    t.hosts
                        .unwrap_or(if t.uses.is_some() { "*" } else { "-" })
                        .to_owned(),
                    t.created_by.to_owned(),
                ]);
            }
            print_table(&rows);
        }
        TokenCommand::Revoke { name } => {
            let revoked = config.call(AdminClient::new, |mut admin| async move {
                admin.revoke_token(RevokeTokenRequest { name }).await
            })?;
            println!("revoked {}", revoked.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_durations_or_never_and_refuse_the_rest() {
        assert_eq!(parse_ttl("never").unwrap(), Ttl::Never);
        assert_eq!(parse_ttl("90d").unwrap(), Ttl::For(DEFAULT_TTL));
        assert_eq!(
            parse_ttl("12h").unwrap(),
            Ttl::For(Duration::from_secs(12 * 3600))
        );
        assert_eq!(parse_ttl("3650d").unwrap(), Ttl::For(MAX_TTL));
        for bad in ["", "0s", "soon", "-1d", "Never", "3651d", "20y"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enrollment_tokens_ask_for_the_agent_role_and_must_expire() {
        let enroll = NewToken::Enroll {
            name: String::new(),
            uses: 3,
            hosts: "web-*".to_owned(),
        };
        let request = new_token_request(&enroll, Ttl::For(DEFAULT_ENROLL_TTL)).unwrap();
        assert_eq!(request.role, Role::Agent as i32);
        assert_eq!((request.uses, request.hosts.as_str()), (3, "web-*"));
        assert_eq!(request.ttl_ms, 3_600_000);
        assert!(!request.never_expires);
        let err = new_token_request(&enroll, Ttl::Never).unwrap_err();
        assert!(err.0.contains("--ttl never"), "{}", err.0);
        let api = NewToken::Api {
            name: "g".to_owned(),
            role: TokenRole::Viewer,
        };
        let request = new_token_request(&api, Ttl::Never).unwrap();
        assert!(request.never_expires && request.ttl_ms == 0 && request.uses == 0);
    }
}
