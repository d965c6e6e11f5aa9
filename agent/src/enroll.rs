//! `hostwatch-agent enroll`: makes this host's key, has the collector sign
//! it with an enrollment token, and writes what the agent needs to run:
//! `agent.toml` and `agent-ca.pem` in `--dir` (`/etc/hostwatch`, root's:
//! the agent cannot change whom it trusts, and a collector's `ca.pem` on
//! the same host is left alone), `agent.pem` and `agent.key` in
//! `--pki-dir` (`/var/lib/hostwatch-agent/pki`, in the state directory the
//! systemd unit lets the agent write, as kubelet's `/var/lib/kubelet/pki`),
//! where renewal replaces them.
//!
//! Order matters: nothing is sent before the collector's chain has been
//! verified against the pinned CA and the collector's name (the TLS
//! handshake, [`hostwatch_pki::transport::connect_pinned`]), so a wrong pin
//! or a collector of another deployment never sees the token; the key is
//! made on this host and never leaves it; nothing is written before the
//! certificate is in hand, and an existing key is replaced only when asked.
//! Run as root, it gives the key and the certificate, their directory and
//! a state directory it creates to the user the agent runs as (`--user`,
//! by default the packages' `hostwatch` when it exists): the key is that
//! user's alone (mode 0600).

use hostwatch_pki::{CaPin, CertPair, Identity, Role};
use hostwatch_proto::v1::EnrollRequest;
use hostwatch_proto::v1::enroll_client::EnrollClient;
use nix::unistd::{Uid, User};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait for the connection, and then for the answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What `enroll` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// host:port of the collector's enrollment listener (enroll_listen).
    #[arg(long)]
    pub collector: String,
    /// The enrollment token (`hostwatch token create --enroll`); from the
    /// environment rather than the command line keeps it out of `ps`.
    #[arg(long, env = "HOSTWATCH_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The CA pin (`hostwatch certs pin`): sha256: and 64 hex digits.
    #[arg(long, value_parser = parse_pin)]
    pub ca_pin: CaPin,
    /// This host's id; default: the host name.
    #[arg(long)]
    pub host_id: Option<String>,
    /// Where agent.toml and agent-ca.pem are written (they stay the
    /// caller's).
    #[arg(long, default_value = "/etc/hostwatch")]
    pub dir: PathBuf,
    /// Where agent.pem and agent.key are written, and renewed (the agent's
    /// user's, mode 0700); default: pki in --state-dir.
    #[arg(long)]
    pub pki_dir: Option<PathBuf>,
    /// Replace an existing agent.key, and ask the collector to issue a
    /// certificate even if this host id holds one that has not expired.
    #[arg(long)]
    pub replace: bool,
    /// host:port where the agent streams its samples (the collector's
    /// listen); default: the host of --collector and the port the
    /// collector tells.
    #[arg(long)]
    pub ingest: Option<String>,
    /// Name the collector's certificate must carry; default: the host of
    /// --collector.
    #[arg(long)]
    pub server_name: Option<String>,
    /// state_dir of the written agent.toml; made the agent's user's if
    /// enroll creates it.
    #[arg(long, default_value = "/var/lib/hostwatch-agent")]
    pub state_dir: PathBuf,
    /// The user the agent runs as, who gets the key and the certificate
    /// (only root can give them away); default, when run as root:
    /// `hostwatch`, the packages' service user, if it exists.
    #[arg(long)]
    pub user: Option<String>,
}

/// The user the packages create and the systemd units run as.
pub const SERVICE_USER: &str = "hostwatch";

fn parse_pin(text: &str) -> Result<CaPin, String> {
    text.parse()
        .map_err(|e: hostwatch_pki::PkiError| e.to_string())
}

/// Why enrolling failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Bad arguments or files in the way: nothing was sent.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(#[from] hostwatch_pki::transport::ConnectError),
    #[error("the collector refused the enrollment ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
    #[error(transparent)]
    Pki(#[from] hostwatch_pki::PkiError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the collector's answer is unusable: {0}")]
    Answer(String),
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub host_id: String,
    pub config: PathBuf,
    pub serial: String,
    pub not_after_ms: i64,
    pub ingest: String,
    /// Where the key and the certificate are.
    pub pki_dir: PathBuf,
    /// The user the files were given to, if not the caller.
    pub owner: Option<String>,
}

/// Enrolls this host (see the module's doc).
pub async fn enroll(args: &EnrollArgs) -> Result<Enrolled, EnrollError> {
    let usage = EnrollError::Usage;
    let host_id = match &args.host_id {
        Some(id) => id.clone(),
        None => sysinfo::System::host_name()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| usage("cannot read this host's name: give --host-id".to_owned()))?,
    };
    Identity::new(Role::Agent, &host_id).map_err(|e| usage(format!("--host-id: {e}")))?;
    let (host, _) = split_address(&args.collector).ok_or_else(|| {
        usage(format!(
            "--collector {:?}: expected host:port",
            args.collector
        ))
    })?;
    if let Some(ingest) = &args.ingest {
        split_address(ingest)
            .ok_or_else(|| usage(format!("--ingest {ingest:?}: expected host:port")))?;
    }
    let owner = owner(args.user.as_deref(), nix::unistd::geteuid())?;
    // agent.toml's relative paths are relative to its directory, not to
    // where enroll ran.
    let state_dir = std::path::absolute(&args.state_dir).map_err(|e| {
        usage(format!(
            "--state-dir {}: cannot make it absolute: {e}",
            args.state_dir.display()
        ))
    })?;
    let pki_dir = match &args.pki_dir {
        Some(dir) => std::path::absolute(dir).map_err(|e| {
            usage(format!(
                "--pki-dir {}: cannot make it absolute: {e}",
                dir.display()
            ))
        })?,
        None => state_dir.join("pki"),
    };
    let files = Files {
        dir: args.dir.clone(),
        state_dir,
        cert: pki_dir.join("agent.pem"),
        key: pki_dir.join("agent.key"),
        pki_dir,
    };
    let key_path = &files.key;
    if key_path.exists() && !args.replace {
        return Err(usage(format!(
            "{} exists: this host is enrolled; --replace makes a new key and certificate",
            key_path.display()
        )));
    }
    let (key, csr) = hostwatch_pki::enroll::agent_request(&host_id)?;
    let channel = hostwatch_pki::transport::connect_pinned(
        &args.collector,
        args.server_name.as_deref(),
        args.ca_pin,
        TIMEOUT,
    )
    .await?;
    let request = EnrollRequest {
        token: args.token.clone(),
        host_id: host_id.clone(),
        csr,
        replace: args.replace,
    };
    let answer = tokio::time::timeout(TIMEOUT, EnrollClient::new(channel).enroll(request))
        .await
        .map_err(|_| EnrollError::Answer(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|status| EnrollError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    let port = u16::try_from(answer.ingest_port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| EnrollError::Answer(format!("ingest port {}", answer.ingest_port)))?;
    let ingest = args.ingest.clone().unwrap_or(format!("{host}:{port}"));
    let config = agent_toml(args.server_name.as_deref(), &files, &ingest, &answer);
    write_files(
        &files,
        &key.serialize_pem(),
        &answer,
        &config,
        owner.as_ref(),
    )?;
    Ok(Enrolled {
        host_id,
        config: args.dir.join("agent.toml"),
        serial: answer.serial,
        not_after_ms: answer.not_after_ms,
        ingest,
        pki_dir: files.pki_dir,
        owner: owner.map(|user| user.name),
    })
}

/// Whom the key and the certificate are given to: `None` leaves them the caller's
/// (`euid`). Decided before anything is sent, so that a user who does not
/// exist stops the enrollment before the token is used.
fn owner(requested: Option<&str>, euid: Uid) -> Result<Option<User>, EnrollError> {
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|e| EnrollError::Usage(format!("--user {name}: cannot look it up: {e}")))
    };
    let user = match requested {
        Some(name) => lookup(name)?.ok_or_else(|| {
            EnrollError::Usage(format!(
                "--user {name}: no such user; the packages create {SERVICE_USER:?}: \
                 name the user the agent runs as"
            ))
        })?,
        // Unprivileged, the files stay the caller's: it runs the agent.
        None if !euid.is_root() => return Ok(None),
        None => match lookup(SERVICE_USER)? {
            Some(user) => user,
            None => return Ok(None),
        },
    };
    if user.uid == euid {
        return Ok(None);
    }
    if !euid.is_root() {
        return Err(EnrollError::Usage(format!(
            "--user {}: only root can give files to another user; run enroll as root or as {}",
            user.name, user.name
        )));
    }
    Ok(Some(user))
}

/// Gives `paths` to `user` (and its primary group).
fn give(paths: &[PathBuf], user: &User) -> Result<(), EnrollError> {
    for path in paths {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(
            |source| EnrollError::Write {
                path: path.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// The host (brackets kept around an IPv6 address) and port of `host:port`.
fn split_address(address: &str) -> Option<(String, u16)> {
    let uri: tonic::transport::Uri = format!("https://{address}").parse().ok()?;
    let authority = uri.authority()?;
    if authority.as_str() != address || address.contains('@') {
        return None;
    }
    let host = authority.host();
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), authority.port_u16()?))
}

/// Where enroll writes (absolute but for `dir`, which agent.toml's
/// relative paths are not needed for).
struct Files {
    /// agent.toml and agent-ca.pem.
    dir: PathBuf,
    state_dir: PathBuf,
    /// agent.pem and agent.key.
    pki_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The name of the CA file the agent trusts: not `ca.pem`, which a
/// collector on the same host has in the same directory.
pub const AGENT_CA_FILE: &str = "agent-ca.pem";

/// Writes agent-ca.pem, agent.pem, agent.key (mode 0600, also over an
/// existing key of another mode) and agent.toml. `owner` gets the
/// certificate, the key and their directory, which are the agent's to
/// read and renew, and the state directory if enroll makes it; the CA and
/// the configuration stay the caller's, so the agent cannot change whom
/// it trusts.
fn write_files(
    files: &Files,
    key_pem: &str,
    answer: &hostwatch_proto::v1::EnrollResponse,
    agent_toml: &str,
    owner: Option<&User>,
) -> Result<(), EnrollError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| EnrollError::Write { path, source }
    };
    std::fs::create_dir_all(&files.dir).map_err(write_err(&files.dir))?;
    let ca = files.dir.join(AGENT_CA_FILE);
    std::fs::write(&ca, &answer.ca_pem).map_err(write_err(&ca))?;
    let made_state_dir = !files.state_dir.exists();
    if made_state_dir {
        private_dir(&files.state_dir)?;
    }
    private_dir(&files.pki_dir)?;
    if let Some(user) = owner {
        if made_state_dir {
            give(std::slice::from_ref(&files.state_dir), user)?;
        }
        give(std::slice::from_ref(&files.pki_dir), user)?;
    }
    CertPair {
        cert_pem: answer.certificate_chain_pem.clone(),
        key_pem: key_pem.to_owned(),
    }
    .replace_files(&files.cert, &files.key)?;
    let config = files.dir.join("agent.toml");
    std::fs::write(&config, agent_toml).map_err(write_err(&config))?;
    match owner {
        Some(user) => give(&[files.cert.clone(), files.key.clone()], user),
        None => Ok(()),
    }
}

/// Makes `dir` mode 0700 (as the unit's StateDirectoryMode), its missing
/// parents with the default mode (the agent's user passes through them).
fn private_dir(dir: &Path) -> Result<(), EnrollError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| EnrollError::Write {
        path: dir.to_owned(),
        source,
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(err(e)),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// A ready agent.toml: the defaults of every other key apply (see
/// `deploy/agent.toml` for them).
fn agent_toml(
    server_name: Option<&str>,
    files: &Files,
    ingest: &str,
    answer: &hostwatch_proto::v1::EnrollResponse,
) -> String {
    let quoted = |s: &str| toml_string(s);
    let server_name = match server_name {
        Some(name) => format!("server_name = {}\n", quoted(name)),
        None => String::new(),
    };
    format!(
        "# Written by `hostwatch-agent enroll` (certificate serial {serial}).\n\
         # Every key not here has its default: deploy/agent.toml lists them\n\
         # (/etc/hostwatch/agent.toml.example from the package).\n\
         # A second collector to fail over to: replace `collector` with\n\
         # collectors = [{collector}, \"other:7070\"] (docs/operations.md).\n\
         collector = {collector}\n\
         {server_name}\
         state_dir = {state_dir}\n\
         \n\
         \n\
         # The certificate and key are renewed where they are: a directory\n\
         # the agent's user may write. It trusts agent-ca.pem, which it may not.\n\
         [tls]\n\
         ca = {ca}\n\
         cert = {cert}\n\
         key = {key}\n",
        serial = answer.serial,
        collector = quoted(ingest),
        state_dir = quoted(&files.state_dir.display().to_string()),
        ca = quoted(AGENT_CA_FILE),
        cert = quoted(&files.cert.display().to_string()),
        key = quoted(&files.key.display().to_string()),
    )
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split_address("collector.example.com:7071"),
            Some(("collector.example.com".to_owned(), 7071))
        );
        assert_eq!(
            split_address("[::1]:7071"),
            Some(("[::1]".to_owned(), 7071))
        );
        for bad in [
            "",
            "collector",
            "collector:",
            "a:b",
            "a:1/x",
            "user@a:1",
            ":1",
        ] {
            assert_eq!(split_address(bad), None, "{bad}");
        }
    }

    fn usage(result: Result<Option<User>, EnrollError>) -> String {
        match result {
            Err(EnrollError::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_user_is_refused_by_name() {
        let message = usage(owner(Some("hostwatch-no-such-user"), Uid::current()));
        assert!(
            message.contains("--user hostwatch-no-such-user") && message.contains("no such user"),
            "{message}"
        );
    }

    #[test]
    fn unprivileged_enrollment_gives_nothing_away() {
        let unprivileged = Uid::from_raw(65534);
        // Whether or not the packages' user exists here.
        assert!(owner(None, unprivileged).unwrap().is_none());
        let message = usage(owner(Some("root"), unprivileged));
        assert!(message.contains("only root"), "{message}");
        // Naming oneself changes nothing.
        let me = User::from_uid(Uid::current()).unwrap().unwrap();
        assert!(owner(Some(&me.name), Uid::current()).unwrap().is_none());
    }

    #[test]
    fn root_gives_the_files_to_the_named_or_the_service_user() {
        let root = Uid::from_raw(0);
        let nobody = owner(Some("nobody"), root).unwrap().unwrap();
        assert_eq!(nobody.name, "nobody");
        assert!(owner(Some("root"), root).unwrap().is_none());
        let service = User::from_name(SERVICE_USER).unwrap();
        assert_eq!(
            owner(None, root).unwrap().map(|u| u.name),
            service.map(|u| u.name)
        );
    }

    #[test]
    fn given_files_change_owner() {
        if !Uid::effective().is_root() {
            println!("NOT RUN: only root can give files away (owner() is tested unprivileged)");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key");
        std::fs::write(&key, "k").unwrap();
        let nobody = User::from_name("nobody").unwrap().unwrap();
        give(std::slice::from_ref(&key), &nobody).unwrap();
        let meta = std::fs::metadata(&key).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (nobody.uid.as_raw(), nobody.gid.as_raw())
        );
        let gone = dir.path().join("gone");
        let err = give(&[gone], &nobody).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }

    #[test]
    fn the_written_agent_toml_loads_with_an_absolute_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let answer = hostwatch_proto::v1::EnrollResponse {
            serial: "0a".to_owned(),
            ..Default::default()
        };
        let state_dir = std::path::absolute(Path::new("relative/state")).unwrap();
        let files = Files {
            dir: dir.path().to_owned(),
            state_dir: state_dir.clone(),
            pki_dir: state_dir.join("pki"),
            cert: state_dir.join("pki/agent.pem"),
            key: state_dir.join("pki/agent.key"),
        };
        let text = agent_toml(
            Some("collector.example.com"),
            &files,
            "10.0.0.1:7070",
            &answer,
        );
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::AgentConfig::load(&path).unwrap();
        assert_eq!(config.collectors.len(), 1);
        assert_eq!(config.collectors[0].address, "10.0.0.1:7070");
        assert_eq!(
            config.collectors[0].server_name.as_deref(),
            Some("collector.example.com")
        );
        assert_eq!(config.state_dir, state_dir);
        assert_eq!(config.tls.key, state_dir.join("pki/agent.key"));
        assert_eq!(config.tls.cert, state_dir.join("pki/agent.pem"));
        assert_eq!(config.tls.ca, dir.path().join("agent-ca.pem"));
    }

    #[test]
    fn toml_strings_escape_quotes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
