//! Certificates, rustls configurations and peer identity for hostwatch.
//!
//! Every hostwatch connection is TLS 1.3 with a client certificate signed by
//! the deployment's CA (optional in the handshake only for the HTTPS API,
//! which authenticates each request: [`ClientAuth`]); who a peer is comes
//! from its certificate's URI SAN (`hostwatch://<role>/<name>`), never from
//! anything the peer says.
//!
//! Layout:
//! - [`Identity`] and [`Role`]: the URI SAN and its parsing;
//! - [`Ca`]: creating a CA and issuing role certificates with rcgen (quick
//!   starts and tests; production users bring their own PKI);
//! - [`TlsFiles`], [`server_config`] ([`server_config_with`]),
//!   [`client_config`]: rustls configurations from PEM files;
//! - [`peer_identity`]: identity of a verified peer certificate;
//! - [`enroll`]: the issuing CA, CA pins, certificate signing requests and
//!   the agent certificates issued from them;
//! - [`transport`]: the TLS listener (for tonic, and for the HTTPS API)
//!   and the channel connector for tonic.

pub mod enroll;
pub mod transport;

pub use enroll::{CaPin, CsrError, IssuedAgent};

use hostwatch_runtime::config;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// ALPN protocol of gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol of HTTP/1.1, offered beside h2 by the HTTP API.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// URI scheme of hostwatch identities.
const SCHEME: &str = "hostwatch://";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    BadFile { path: PathBuf, what: String },
    #[error("invalid identity {0:?}: expected hostwatch://agent|operator|viewer|collector/<name>")]
    BadIdentity(String),
    #[error("invalid name {0:?}: use 1 to 253 characters of letters, digits, '.', '-' and '_'")]
    BadName(String),
    #[error("certificate has no hostwatch:// URI SAN")]
    NoIdentity,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("a certificate issued by an intermediate (issuing) CA may only be an agent's")]
    IntermediateNotAgent,
    #[error("no random bytes from the operating system")]
    Random,
    #[error("invalid CA pin {0:?}: expected sha256: and 64 hex digits (`hostwatch certs pin`)")]
    BadPin(String),
    #[error("not a usable certificate: {0}")]
    BadCertificate(String),
}

/// What a certificate holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends samples of its own host through Ingest.
    Agent,
    /// Reads through Query and manages through Admin.
    Operator,
    /// Reads through Query and the HTTP API; no Admin.
    Viewer,
    /// Serves agents and operators.
    Collector,
}

impl Role {
    /// Whether the role may read what the collector stores (Query, the
    /// HTTP API): operators and viewers.
    pub fn may_read(self) -> bool {
        matches!(self, Role::Operator | Role::Viewer)
    }

    /// The role's name in URIs, file names and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Collector => "collector",
        }
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "agent" => Ok(Role::Agent),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            "collector" => Ok(Role::Collector),
            _ => Err(PkiError::BadIdentity(s.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's role and name, as written in its certificate's URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    /// Host id for agents, person or tool for operators, instance for collectors.
    pub name: String,
}

impl Identity {
    /// Builds an identity, checking that `name` is usable as a host id.
    pub fn new(role: Role, name: &str) -> Result<Self, PkiError> {
        validate_name(name)?;
        Ok(Identity {
            role,
            name: name.to_owned(),
        })
    }

    /// The URI SAN form, `hostwatch://<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.role, self.name)
    }

    /// Parses `hostwatch://<role>/<name>`.
    pub fn parse_uri(uri: &str) -> Result<Self, PkiError> {
        let bad = || PkiError::BadIdentity(uri.to_owned());
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let (role, name) = rest.split_once('/').ok_or_else(bad)?;
        let role = role.parse().map_err(|_| bad())?;
        Identity::new(role, name).map_err(|_| bad())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

/// Host ids and names become URI path segments, file names and label
/// values, so they are kept to a conservative alphabet.
fn validate_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_owned()))
    }
}

/// Validity and extra names of an issued certificate.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names (server certificates).
    pub dns_names: Vec<String>,
    /// IP addresses (server certificates).
    pub ip_addresses: Vec<IpAddr>,
}

impl IssueOptions {
    /// Valid from an hour ago (clock skew) for `days` days.
    pub fn valid_for_days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        IssueOptions {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    /// The names a collector on this machine answers to: localhost, the
    /// loopback addresses and `hostname`.
    pub fn with_local_names(mut self, hostname: Option<&str>) -> Self {
        self.dns_names.push("localhost".to_owned());
        if let Some(h) = hostname.filter(|h| !h.is_empty() && *h != "localhost") {
            self.dns_names.push(h.to_owned());
        }
        self.ip_addresses.extend([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        self
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertPair {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertPair {
    /// Writes `<stem>.pem` and `<stem>.key` (mode 0600) in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

impl CertPair {
    /// Replaces the files `cert` and `key` with this pair, each at once:
    /// written to a temporary file beside it (the key with mode 0600),
    /// synced, then renamed over it, and the directory synced; a reader
    /// sees the old file or the new one, never a part. The key is renamed
    /// first, so the pair on disk mismatches only between the two renames.
    pub fn replace_files(&self, cert: &Path, key: &Path) -> Result<(), PkiError> {
        let key_temp = temp_beside(key);
        let cert_temp = temp_beside(cert);
        let written = write_file(&key_temp, self.key_pem.as_bytes(), 0o600)
            .and_then(|()| write_file(&cert_temp, self.cert_pem.as_bytes(), 0o644))
            .and_then(|()| rename(&key_temp, key))
            .and_then(|()| rename(&cert_temp, cert))
            .and_then(|()| sync_dir(key))
            .and_then(|()| sync_dir(cert));
        if written.is_err() {
            let _ = std::fs::remove_file(&key_temp);
            let _ = std::fs::remove_file(&cert_temp);
        }
        written
    }

    /// Checks that [`replace_files`](Self::replace_files) could write
    /// beside `cert` and `key`, by creating and removing the temporary
    /// files it writes: a renewal asks for no certificate it could not save.
    pub fn check_replaceable(cert: &Path, key: &Path) -> Result<(), PkiError> {
        for path in [key, cert] {
            let temp = temp_beside(path);
            write_file(&temp, b"", 0o600)?;
            std::fs::remove_file(&temp).map_err(|source| PkiError::Write {
                path: temp.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `path` with `.new` appended: in the same directory, so a rename over
/// `path` is atomic.
fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), PkiError> {
    std::fs::rename(from, to).map_err(|source| PkiError::Write {
        path: to.to_owned(),
        source,
    })
}

/// Syncs the directory of `path`, so that a rename in it survives a crash.
fn sync_dir(path: &Path) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    // Made anew, never opened through what is there: the directory may be
    // the agent's while root writes in it (enroll), and a link left at
    // `path` must not point root's write elsewhere.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

fn read_file(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A certificate authority that issues hostwatch role certificates.
pub struct Ca {
    pair: CertPair,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// File stem of the CA in a certificate directory (`ca.pem`, `ca.key`).
    pub const STEM: &'static str = "ca";

    /// Creates a new CA valid for `days` days.
    pub fn generate(common_name: &str, days: i64) -> Result<Self, PkiError> {
        let options = IssueOptions::valid_for_days(days);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // Path length 1: the root signs role certificates and one level of
        // CAs, the issuing CA (`enroll`), which signs no CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pair,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Ca::load_paths(
            &dir.join(format!("{}.pem", Self::STEM)),
            &dir.join(format!("{}.key", Self::STEM)),
        )
    }

    fn load_paths(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = read_file(cert_path)?;
        let key_pem = read_file(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadFile {
            path: key_path.to_owned(),
            what: format!("not a usable private key: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadFile {
            path: cert_path.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(Ca {
            pair: CertPair { cert_pem, key_pem },
            issuer,
        })
    }

    /// Writes `ca.pem` and `ca.key` to `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        self.pair.write(dir, Self::STEM).map(|_| ())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pair.cert_pem
    }

    /// Issues a certificate for `identity`, usable both as TLS client and
    /// server certificate.
    pub fn issue(&self, identity: &Identity, options: &IssueOptions) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        for dns in &options.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        for ip in &options.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// File stem of a role certificate in a certificate directory, e.g.
/// `agent-web1` for `agent-web1.pem` and `agent-web1.key`.
pub fn cert_stem(identity: &Identity) -> String {
    format!("{}-{}", identity.role, identity.name)
}

/// Paths of the PEM files a TLS endpoint needs: the `[tls]` section of
/// every hostwatch configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate(s) that peers' certificates must chain to.
    pub ca: PathBuf,
    /// This endpoint's certificate chain.
    pub cert: PathBuf,
    /// This endpoint's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// [`files_digest`](hostwatch_stdx::files_digest) of the CA,
    /// certificate and key files: changes when any of them does.
    pub fn digest(&self) -> u64 {
        hostwatch_stdx::files_digest(&[&self.ca, &self.cert, &self.key])
    }
}

struct LoadedFiles {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: Identity,
}

impl TlsFiles {
    /// The same files, relative paths taken from `base` (the directory of
    /// the configuration file that named them).
    pub fn resolve(&self, base: &Path) -> TlsFiles {
        TlsFiles {
            ca: config::resolve(base, &self.ca),
            cert: config::resolve(base, &self.cert),
            key: config::resolve(base, &self.key),
        }
    }

    fn load(&self) -> Result<LoadedFiles, PkiError> {
        let ca = read_certs(&self.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| PkiError::BadFile {
                path: self.ca.clone(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let chain = read_certs(&self.cert)?;
        let identity = peer_identity(&chain[0]).map_err(|e| PkiError::BadFile {
            path: self.cert.clone(),
            what: e.to_string(),
        })?;
        let key_pem = read_file(&self.key)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::BadFile {
                path: self.key.clone(),
                what: format!("no PEM private key: {e}"),
            })?;
        Ok(LoadedFiles {
            roots,
            chain,
            key,
            identity,
        })
    }

    /// The identity in this endpoint's own certificate.
    pub fn own_identity(&self) -> Result<Identity, PkiError> {
        let chain = read_certs(&self.cert)?;
        peer_identity(&chain[0]).map_err(|e| PkiError::BadFile {
            path: self.cert.clone(),
            what: e.to_string(),
        })
    }
}

/// Reads every certificate of a PEM file; at least one must be there.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::BadFile {
            path: path.to_owned(),
            what: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::BadFile {
            path: path.to_owned(),
            what: "no PEM certificate in file".to_owned(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a server asks of its clients' certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate chaining to the CA, or no handshake (gRPC); ALPN h2.
    Required,
    /// A certificate chaining to the CA if one is presented; clients
    /// without one complete the handshake and must authenticate otherwise
    /// (the HTTP API). ALPN h2 and http/1.1.
    Optional,
    /// No client certificate is asked for: every client is anonymous
    /// (enrollment, whose clients have none yet). The server presents its
    /// chain followed by the CA certificate(s), so that a client holding
    /// only a pin of the CA's key finds the CA to verify against. ALPN h2.
    Anonymous,
}

/// A TLS 1.3-only server configuration that requires a client certificate
/// chaining to `files.ca`, with ALPN h2. Returns the server's own identity too.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Identity), PkiError> {
    server_config_with(files, ClientAuth::Required)
}

/// [`server_config`] with client certificates as `client_auth` says.
///
/// A client certificate issued by a CA other than a trust anchor of
/// `files.ca` itself (an issuing CA, see [`enroll`]) is accepted only with
/// the agent role: the root may sign every role, an intermediate only agents.
pub fn server_config_with(
    files: &TlsFiles,
    client_auth: ClientAuth,
) -> Result<(Arc<ServerConfig>, Identity), PkiError> {
    server_config_with_crl(files, client_auth, None)
}

/// Reads the certificate revocation lists (PEM, one or more) of `path`.
pub fn read_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, PkiError> {
    use rustls::pki_types::CertificateRevocationListDer;
    let pem = read_file(path)?;
    let bad = |what: String| PkiError::BadFile {
        path: path.to_owned(),
        what,
    };
    let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(bad("no PEM X509 CRL in file".to_owned()));
    }
    Ok(crls)
}

/// [`server_config_with`], refusing client certificates that the
/// certificate revocation lists of the file `crl` (PEM) name. Those lists
/// must be signed by a CA of the chain; certificates of CAs without a list
/// there are not refused for it.
pub fn server_config_with_crl(
    files: &TlsFiles,
    client_auth: ClientAuth,
    crl: Option<&Path>,
) -> Result<(Arc<ServerConfig>, Identity), PkiError> {
    server_config_denying(files, client_auth, crl, None)
}

/// [`server_config_with_crl`], refusing in the handshake the client
/// certificates `denylist` denies, with the `certificate_revoked` alert.
pub(crate) fn server_config_denying(
    files: &TlsFiles,
    client_auth: ClientAuth,
    crl: Option<&Path>,
    denylist: Option<&transport::Denylist>,
) -> Result<(Arc<ServerConfig>, Identity), PkiError> {
    let crls = match crl {
        Some(path) => read_crls(path)?,
        None => Vec::new(),
    };
    let loaded = files.load()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    // Whole DER names, as x509-parser gives the client certificate's issuer.
    let anchors: Vec<Vec<u8>> = read_certs(&files.ca)?
        .iter()
        .filter_map(|ca| {
            let (_, ca) = x509_parser::parse_x509_certificate(ca.as_ref()).ok()?;
            Some(ca.subject().as_raw().to_vec())
        })
        .collect();
    let verifier = || {
        WebPkiClientVerifier::builder_with_provider(Arc::new(loaded.roots.clone()), provider())
            .with_crls(crls.clone())
            // A CRL covers its issuer's certificates only; the others
            // (the issuing CA's, say, with a CRL for the root) are not
            // refused for having none.
            .allow_unknown_revocation_status()
    };
    let crl_error = |e: rustls::server::VerifierBuilderError| match crl {
        Some(path) => PkiError::BadFile {
            path: path.to_owned(),
            what: format!("the certificate revocation list does not load: {e}"),
        },
        None => PkiError::from(e),
    };
    let (mut config, alpn) = match client_auth {
        ClientAuth::Required => (
            builder
                .with_client_cert_verifier(IssuerRoles::wrap(
                    verifier().build().map_err(crl_error)?,
                    anchors,
                    denylist,
                ))
                .with_single_cert(loaded.chain, loaded.key)?,
            vec![ALPN_H2.to_vec()],
        ),
        ClientAuth::Optional => (
            builder
                .with_client_cert_verifier(IssuerRoles::wrap(
                    verifier()
                        .allow_unauthenticated()
                        .build()
                        .map_err(crl_error)?,
                    anchors,
                    denylist,
                ))
                .with_single_cert(loaded.chain, loaded.key)?,
            vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
        ),
        ClientAuth::Anonymous => {
            let mut chain = loaded.chain;
            for ca in read_certs(&files.ca)? {
                if !chain.contains(&ca) {
                    chain.push(ca);
                }
            }
            (
                builder
                    .with_no_client_auth()
                    .with_single_cert(chain, loaded.key)?,
                vec![ALPN_H2.to_vec()],
            )
        }
    };
    config.alpn_protocols = alpn;
    Ok((Arc::new(config), loaded.identity))
}

/// A client verifier that, once webpki has verified a chain, also refuses
/// a certificate not issued by a trust anchor itself unless it is an
/// agent's (see [`server_config_with`]), and one the deny list denies
/// (`CertificateError::Revoked`, which rustls sends as the
/// `certificate_revoked` alert: the agent can say it was revoked).
#[derive(Debug)]
struct IssuerRoles {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// Subjects (DER) of the trust anchors.
    anchors: Vec<Vec<u8>>,
    denylist: Option<transport::Denylist>,
}

impl IssuerRoles {
    fn wrap(
        inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
        anchors: Vec<Vec<u8>>,
        denylist: Option<&transport::Denylist>,
    ) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        Arc::new(IssuerRoles {
            inner,
            anchors,
            denylist: denylist.cloned(),
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for IssuerRoles {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let by_anchor = self
            .anchors
            .iter()
            .any(|subject| subject.as_slice() == cert.issuer().as_raw());
        if self
            .denylist
            .as_ref()
            .is_some_and(|denylist| denylist.refuses_certificate(end_entity))
        {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        if by_anchor || peer_identity(end_entity).is_ok_and(|id| id.role == Role::Agent) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                    PkiError::IntermediateNotAgent,
                ))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS 1.3-only client configuration presenting `files.cert`, trusting
/// only `files.ca`, with ALPN h2. Returns the client's own identity too.
pub fn client_config(files: &TlsFiles) -> Result<(Arc<ClientConfig>, Identity), PkiError> {
    let loaded = files.load()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(loaded.roots)
        .with_client_auth_cert(loaded.chain, loaded.key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((Arc::new(config), loaded.identity))
}

/// The hostwatch identity in a certificate's URI SAN. Call it only on a
/// certificate rustls has verified.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<Identity, PkiError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| PkiError::NoIdentity)?;
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Err(PkiError::NoIdentity);
    };
    san.value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(SCHEME) => {
                Some(Identity::parse_uri(uri))
            }
            _ => None,
        })
        .unwrap_or(Err(PkiError::NoIdentity))
}

/// When a certificate stops being valid (its notAfter), in milliseconds
/// since the Unix epoch; `None` if it cannot be parsed.
pub fn certificate_expiry_ms(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed.validity().not_after.timestamp().checked_mul(1000)
}

/// A certificate's serial number, lowercase hex without leading zeros;
/// `None` if it cannot be parsed.
pub fn certificate_serial_hex(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(serial_hex(parsed.raw_serial()))
}

/// The serial number of big-endian bytes `raw`, lowercase hex without
/// leading zeros: the one form logs, answers and deny lists show.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// When a certificate starts and stops being valid (notBefore, notAfter),
/// in milliseconds since the Unix epoch; `None` if it cannot be parsed.
pub fn certificate_validity_ms(cert: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    Some((
        validity.not_before.timestamp().checked_mul(1000)?,
        validity.not_after.timestamp().checked_mul(1000)?,
    ))
}

impl TlsFiles {
    /// [`certificate_validity_ms`] of the first certificate of `cert`.
    pub fn cert_validity_ms(&self) -> Result<(i64, i64), PkiError> {
        let certs = read_certs(&self.cert)?;
        certificate_validity_ms(&certs[0]).ok_or_else(|| PkiError::BadFile {
            path: self.cert.clone(),
            what: "the certificate's validity cannot be read".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_round_trip() {
        let id = Identity::new(Role::Agent, "web-1.example.com").unwrap();
        assert_eq!(id.uri(), "hostwatch://agent/web-1.example.com");
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
        let viewer = Identity::parse_uri("hostwatch://viewer/grafana").unwrap();
        assert_eq!(viewer, Identity::new(Role::Viewer, "grafana").unwrap());
        assert!(viewer.role.may_read() && Role::Operator.may_read());
        assert!(!Role::Agent.may_read() && !Role::Collector.may_read());
    }

    #[test]
    fn bad_identities_are_refused() {
        for uri in [
            "",
            "https://agent/x",
            "hostwatch://agent",
            "hostwatch://agent/",
            "hostwatch://root/x",
            "hostwatch://agent/a/b",
            "hostwatch://agent/a b",
            "hostwatch://agent/..",
        ] {
            assert!(Identity::parse_uri(uri).is_err(), "{uri} accepted");
        }
    }

    #[test]
    fn issued_certificate_carries_identity() {
        let ca = Ca::generate("test CA", 1).unwrap();
        let id = Identity::new(Role::Operator, "alice").unwrap();
        let pair = ca.issue(&id, &IssueOptions::valid_for_days(1)).unwrap();
        let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        assert_eq!(peer_identity(&der).unwrap(), id);
        assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn ca_round_trips_through_files_and_configs_build() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", 1).unwrap();
        ca.write(dir.path()).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let id = Identity::new(Role::Collector, "main").unwrap();
        let options = IssueOptions::valid_for_days(1).with_local_names(Some("box"));
        let (cert, key) = ca
            .issue(&id, &options)
            .unwrap()
            .write(dir.path(), &cert_stem(&id))
            .unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert,
            key,
        };
        let (_, own) = server_config(&files).unwrap();
        assert_eq!(own, id);
        client_config(&files).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tls_files_load_as_a_section_and_resolve_relative_paths() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            tls: TlsFiles,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        let good = "[tls]\nca = \"ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.key\"\n";
        std::fs::write(&path, good).unwrap();
        let example: Example = config::load(&path, "HOSTWATCH_TEST_PKI_TLS").unwrap();
        let files = example.tls.resolve(&config::base_dir(&path));
        assert_eq!(files.ca, dir.path().join("ca.pem"));
        assert_eq!(files.cert, PathBuf::from("/abs/c.pem"));
        assert_eq!(files.key, dir.path().join("k.key"));
        std::fs::write(&path, format!("{good}extra = 1\n")).unwrap();
        let err = config::load::<Example>(&path, "HOSTWATCH_TEST_PKI_TLS")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn unreadable_and_malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let files = TlsFiles {
            ca: garbage.clone(),
            cert: garbage.clone(),
            key: dir.path().join("missing.key"),
        };
        let err = server_config(&files).err().unwrap().to_string();
        assert!(err.contains("garbage.pem"), "{err}");
        let missing = TlsFiles {
            ca: dir.path().join("missing-ca.pem"),
            ..files
        };
        let err = client_config(&missing).err().unwrap().to_string();
        assert!(err.contains("missing-ca.pem"), "{err}");
        assert!(Ca::load(dir.path()).is_err());
    }

    #[test]
    fn replaced_files_are_whole_and_the_key_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test", 1).unwrap();
        let identity = Identity::new(Role::Agent, "web-1").unwrap();
        let old = ca
            .issue(&identity, &IssueOptions::valid_for_days(1))
            .unwrap();
        let (cert, key) = old.write(dir.path(), "agent").unwrap();
        let new = ca
            .issue(&identity, &IssueOptions::valid_for_days(2))
            .unwrap();
        new.replace_files(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), new.cert_pem);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), new.key_pem);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let files = TlsFiles {
            ca: cert.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        let (not_before, not_after) = files.cert_validity_ms().unwrap();
        assert!(
            not_after - not_before >= 2 * 86_400_000,
            "{not_before} {not_after}"
        );
        // A directory that is not there: an error naming the file, the old pair kept.
        let gone = dir.path().join("gone/agent.pem");
        let err = new.replace_files(&gone, &key).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
        // Checked beforehand the same, leaving nothing behind.
        CertPair::check_replaceable(&cert, &key).unwrap();
        let err = CertPair::check_replaceable(&gone, &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gone/agent.pem.new"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// A link left where the temporary key is written (by whoever owns
    /// the directory) is replaced, not written through.
    #[test]
    fn a_link_at_the_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test", 1).unwrap();
        let identity = Identity::new(Role::Agent, "web-1").unwrap();
        let pair = ca
            .issue(&identity, &IssueOptions::valid_for_days(1))
            .unwrap();
        let (cert, key) = pair.write(dir.path(), "agent").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, temp_beside(&key)).unwrap();
        pair.replace_files(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), pair.key_pem);
        assert!(!std::fs::symlink_metadata(&key).unwrap().is_symlink());
    }
}
