//! Enrollment's certificates: the issuing CA that signs agent certificates
//! only, the CA pin an agent checks the collector against, certificate
//! signing requests and the agent certificates made from them.
//!
//! The root CA signs role certificates (`certs issue`) and the issuing CA;
//! its key can then go offline. The issuing CA is a CA with path length 0
//! (it signs end certificates only) and the clientAuth extended key usage
//! (webpki checks it along the chain, so nothing it signs serves TLS);
//! that it signs agents only is enforced by every hostwatch listener: a
//! client certificate not issued by a trust anchor itself is admitted only
//! with the agent role ([`crate::server_config_with`]). X.509 name
//! constraints cannot say it: rustls-webpki refuses every URI SAN under a
//! URI name constraint (it does not implement them, and fails closed), and
//! rcgen cannot write one.

use crate::{Ca, CertPair, Identity, PkiError, Role, SCHEME, provider};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Prefix of a CA pin's text.
const PIN_PREFIX: &str = "sha256:";
/// Random bytes in an issued certificate's serial number.
const SERIAL_BYTES: usize = 16;

impl Ca {
    /// File stem of the issuing CA in a certificate directory
    /// (`issuing.pem`, `issuing.key`).
    pub const ISSUING_STEM: &'static str = "issuing";

    /// Creates an issuing CA signed by this (root) CA, valid for `days`
    /// days: it may sign end certificates for TLS clients only.
    pub fn generate_issuing(&self, days: i64) -> Result<Ca, PkiError> {
        let options = crate::IssueOptions::valid_for_days(days);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "hostwatch issuing CA (agents)");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: rcgen::Issuer::new(params, key),
            pair,
        })
    }

    /// Loads a CA from its certificate and key files.
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        Ca::load_paths(cert_path, key_path)
    }

    /// Checks that this CA's certificate is signed by a CA certificate of
    /// the PEM file `ca_file` (the deployment's root), so that what it
    /// issues chains to what listeners trust.
    pub fn check_issued_by(&self, ca_file: &Path) -> Result<(), PkiError> {
        let own = self.cert_der()?;
        let (_, own) = x509_parser::parse_x509_certificate(own.as_ref())
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let roots = crate::read_certs(ca_file)?;
        let signed = roots.iter().any(|root| {
            x509_parser::parse_x509_certificate(root.as_ref()).is_ok_and(|(_, root)| {
                root.subject().as_raw() == own.issuer().as_raw()
                    && own.verify_signature(Some(root.public_key())).is_ok()
            })
        });
        if signed {
            Ok(())
        } else {
            Err(PkiError::BadFile {
                path: ca_file.to_owned(),
                what: "no CA certificate here signed the issuing CA (enroll.issuer_cert): agents it enrolled could not connect".to_owned(),
            })
        }
    }

    /// A certificate revocation list (PEM) signed by this CA naming the
    /// certificates of serial numbers `serials` (hex), valid for `days`
    /// days: what a listener's `tls_crl` reads.
    pub fn revocation_list_pem(&self, serials: &[String], days: i64) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = serials
            .iter()
            .map(|hex| {
                // Whole bytes: a leading zero may have been left out.
                let hex = if hex.len() % 2 == 1 {
                    format!("0{hex}")
                } else {
                    hex.clone()
                };
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("?"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| PkiError::BadCertificate(format!("serial {hex:?} is not hex")))?;
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(days),
            crl_number: SerialNumber::from_slice(&random_serial()?),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Writes `issuing.pem` and `issuing.key` to `dir`.
    pub fn write_issuing(&self, dir: &Path) -> Result<(), PkiError> {
        self.pair.write(dir, Self::ISSUING_STEM).map(|_| ())
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        first_cert(&self.pair.cert_pem).ok_or(PkiError::NoIdentity)
    }

    /// Issues the certificate of agent `host` for the public key `spki_der`
    /// (a SubjectPublicKeyInfo, DER): URI SAN `hostwatch://agent/<host>`,
    /// clientAuth only, not a CA, a random serial, valid from `not_before`
    /// to `not_after`. Nothing else is taken from the requester.
    pub fn issue_agent(
        &self,
        spki_der: &[u8],
        host: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedAgent, PkiError> {
        let identity = Identity::new(Role::Agent, host)?;
        self.issue_client(spki_der, &identity, not_before, not_after)
    }

    /// [`Ca::issue_agent`] for any identity: a TLS client certificate.
    pub fn issue_client(
        &self,
        spki_der: &[u8],
        identity: &Identity,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedAgent, PkiError> {
        let public_key = SubjectPublicKeyInfo::from_der(spki_der)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&public_key, &self.issuer)?;
        Ok(IssuedAgent {
            cert_pem: cert.pem(),
            serial_hex: crate::serial_hex(&serial),
            not_after_ms: not_after.unix_timestamp().saturating_mul(1000),
        })
    }
}

/// An agent certificate just issued.
#[derive(Debug, Clone)]
pub struct IssuedAgent {
    pub cert_pem: String,
    /// The serial number, lowercase hex without leading zeros (as
    /// [`crate::certificate_serial_hex`] reads it back).
    pub serial_hex: String,
    /// ms since the Unix epoch.
    pub not_after_ms: i64,
}

/// A positive serial of [`SERIAL_BYTES`] random bytes: the top bit is
/// cleared so that the DER integer needs no sign byte.
fn random_serial() -> Result<[u8; SERIAL_BYTES], PkiError> {
    let mut serial = [0u8; SERIAL_BYTES];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    serial[0] &= 0x7f;
    // A zero serial is invalid; the chance is 2^-127, and this keeps it 0-free.
    serial[0] |= 0x01;
    Ok(serial)
}

fn first_cert(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pin of a CA: the SHA-256 digest of its certificate's
/// SubjectPublicKeyInfo (DER), as agents are given it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of the CA certificate `cert`.
    pub fn of(cert: &CertificateDer<'_>) -> Result<CaPin, PkiError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        Ok(CaPin(
            Sha256::digest(parsed.tbs_certificate.subject_pki.raw).into(),
        ))
    }

    /// The pin of the first certificate of the PEM file `path`.
    pub fn of_file(path: &Path) -> Result<CaPin, PkiError> {
        let certs = crate::read_certs(path)?;
        CaPin::of(&certs[0]).map_err(|e| PkiError::BadFile {
            path: path.to_owned(),
            what: e.to_string(),
        })
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PIN_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for CaPin {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        let bad = || PkiError::BadPin(s.to_owned());
        let digits = s.strip_prefix(PIN_PREFIX).ok_or_else(bad)?;
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut pin = [0u8; 32];
        for (byte, pair) in pin.iter_mut().zip(digits.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(CaPin(pin))
    }
}

/// Why a certificate signing request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the certificate signing request is not a DER PKCS#10 request: {0}")]
    Malformed(String),
    #[error("the certificate signing request's signature does not verify")]
    BadSignature,
    #[error("the certificate signing request asks for a CA certificate")]
    AsksForCa,
    #[error("the certificate signing request names {asked}, not {expected}")]
    OtherIdentity { asked: String, expected: String },
}

/// Checks the certificate signing request `der` of agent `host`: its
/// signature verifies, and it asks neither for a CA certificate nor for
/// another identity than `hostwatch://agent/<host>`. Returns the public
/// key (SubjectPublicKeyInfo, DER), the only thing taken from it.
pub fn check_csr(der: &[u8], host: &str) -> Result<Vec<u8>, CsrError> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("bytes after the request".to_owned()));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let expected = Identity {
        role: Role::Agent,
        name: host.to_owned(),
    }
    .uri();
    for extension in csr.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::AsksForCa),
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name
                        && uri.starts_with(SCHEME)
                        && *uri != expected
                    {
                        return Err(CsrError::OtherIdentity {
                            asked: (*uri).to_owned(),
                            expected,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// A new private key for an agent and its certificate signing request for
/// `hostwatch://agent/<host>`: the key never leaves the host.
pub fn agent_request(host: &str) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let identity = Identity::new(Role::Agent, host)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_string());
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// Checks that the first certificate of `chain_pem` (what a collector
/// answered a renewal with) is the agent certificate of `host` for `key`,
/// before it replaces a working one.
pub fn check_issued(chain_pem: &str, key: &KeyPair, host: &str) -> Result<(), PkiError> {
    let bad = |what: String| PkiError::BadCertificate(what);
    let cert = first_cert(chain_pem).ok_or_else(|| bad("no PEM certificate".to_owned()))?;
    let identity = crate::peer_identity(&cert)?;
    let expected = Identity::new(Role::Agent, host)?;
    if identity != expected {
        return Err(bad(format!("it is for {identity}, not {expected}")));
    }
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| bad(e.to_string()))?;
    if parsed.tbs_certificate.subject_pki.raw != rcgen::PublicKeyData::subject_public_key_info(key)
    {
        return Err(bad("it is not for the key this host made".to_owned()));
    }
    Ok(())
}

/// A TLS 1.3-only client configuration without a client certificate that
/// trusts a server only if the chain it presents holds a CA certificate
/// whose key is `pin`, and the server's certificate chains to that CA (as
/// the only trust anchor) for the server name: what an agent enrolling
/// checks before it sends anything. ALPN h2.
pub fn pinned_client_config(pin: CaPin) -> Result<Arc<ClientConfig>, PkiError> {
    let verifier = Arc::new(PinnedVerifier {
        pin,
        schemes: provider().signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// See [`pinned_client_config`].
#[derive(Debug)]
struct PinnedVerifier {
    pin: CaPin,
    schemes: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|cert| CaPin::of(cert).is_ok_and(|pin| pin == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the collector's certificate chain holds no CA with the pinned key {}",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.schemes)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.schemes)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssueOptions;

    fn csr_with(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn pins_print_and_parse() {
        let ca = Ca::generate("root", 1).unwrap();
        let pin = CaPin::of(&ca.cert_der().unwrap()).unwrap();
        let text = pin.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71, "{text}");
        assert_eq!(text.parse::<CaPin>().unwrap(), pin);
        let other = Ca::generate("root", 1).unwrap();
        assert_ne!(CaPin::of(&other.cert_der().unwrap()).unwrap(), pin);
        for bad in [
            "",
            "sha256:",
            &text[7..],
            &text[..70],
            &format!("{text}0"),
            &text.replace("sha256", "sha1"),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(bad.parse::<CaPin>(), Err(PkiError::BadPin(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_csr_gives_its_key_and_nothing_else() {
        let (key, der) = agent_request("web-1").unwrap();
        let spki = check_csr(&der, "web-1").unwrap();
        assert_eq!(spki, rcgen::PublicKeyData::subject_public_key_info(&key));
        let root = Ca::generate("root", 1).unwrap();
        let issuing = root.generate_issuing(1).unwrap();
        let now = OffsetDateTime::now_utc();
        let issued = issuing
            .issue_agent(&spki, "web-1", now, now + time::Duration::days(30))
            .unwrap();
        let der = first_cert(&issued.cert_pem).unwrap();
        assert_eq!(
            crate::peer_identity(&der).unwrap(),
            Identity::new(Role::Agent, "web-1").unwrap()
        );
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert_eq!(
            crate::certificate_serial_hex(&der).unwrap(),
            issued.serial_hex
        );
        // Leading zeros are not shown, whichever way the serial is read.
        assert_eq!(crate::serial_hex(&[0x00, 0x0a, 0xbc]), "abc");
        assert_eq!(crate::serial_hex(&[0x00]), "0");
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn an_issued_certificate_is_checked_against_its_key_and_host() {
        let (key, csr) = agent_request("web-1").unwrap();
        let spki = check_csr(&csr, "web-1").unwrap();
        let issuing = Ca::generate("root", 1)
            .unwrap()
            .generate_issuing(1)
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::days(1);
        let issued = issuing.issue_agent(&spki, "web-1", now, later).unwrap();
        check_issued(&issued.cert_pem, &key, "web-1").unwrap();
        let err = check_issued(&issued.cert_pem, &key, "web-2").unwrap_err();
        assert!(err.to_string().contains("not agent/web-2"), "{err}");
        let (other, _) = agent_request("web-1").unwrap();
        let err = check_issued(&issued.cert_pem, &other, "web-1").unwrap_err();
        assert!(err.to_string().contains("not for the key"), "{err}");
        assert!(check_issued("garbage", &key, "web-1").is_err());
    }

    #[test]
    fn bad_csrs_are_refused_with_their_reason() {
        assert!(matches!(
            check_csr(b"garbage", "a"),
            Err(CsrError::Malformed(_))
        ));
        let (_, mut der) = agent_request("a").unwrap();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(check_csr(&der, "a"), Err(CsrError::BadSignature));
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(check_csr(&csr_with(ca), "a"), Err(CsrError::AsksForCa));
        for uri in ["hostwatch://operator/a", "hostwatch://agent/b"] {
            let params = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut params = params;
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
            assert!(
                matches!(
                    check_csr(&csr_with(params), "a"),
                    Err(CsrError::OtherIdentity { .. })
                ),
                "{uri}"
            );
        }
        // Extensions it may ask for are ignored, not refused.
        let mut params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        assert!(check_csr(&csr_with(params), "a").is_ok());
        let _ = IssueOptions::valid_for_days(1);
    }
}
