//! Enrollment: a host without a certificate trades an enrollment token and
//! a certificate signing request for its agent certificate, on a listener
//! of its own (`enroll_listen`: TLS 1.3 with the collector's certificate
//! followed by the CA, no client certificate, the Enroll service only).
//!
//! Layout: `store` (enrollment tokens, their uses, the certificates issued
//! per host); here the issuing CA as configured (`[enroll]`) and the
//! service. A request is checked in this order, so that nothing about a
//! host or a request is told to a caller without a usable token: the
//! token (and its host pattern, and whether the host holds a live
//! certificate), the CSR, then the certificate is made, and only then is
//! the token's use taken and the certificate recorded, in one step
//! (`EnrollStore::redeem`), which checks the token and the host again:
//! a refused request never uses a token up.
//!
//! Architecture invariant: the collector signs with the issuing CA only,
//! and only agent certificates, whose every field it chooses (URI SAN,
//! clientAuth, not a CA, a random serial, `enroll.cert_lifetime`); only
//! the public key comes from the request.

mod store;

pub(crate) use store::{
    EnrollEntry, EnrollStore, HostPattern, Issued, NewEnrollToken, Refused, Revoked,
};

use crate::CollectorError;
use crate::config::CollectorConfig;
use crate::shared::Shared;
use hostwatch_pki::transport::PeerInfo;
use hostwatch_pki::{Ca, CsrError, Identity, Role};
use hostwatch_proto::v1::enroll_server::Enroll;
use hostwatch_proto::v1::{EnrollRequest, EnrollResponse};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Certificates are valid from this long before they are issued, for
/// agents whose clock is a little behind; at most a tenth of the
/// lifetime, so that an agent renewing at two thirds of the validity it
/// sees renews at about two thirds of the lifetime.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

fn clock_skew(lifetime: Duration) -> Duration {
    CLOCK_SKEW.min(lifetime / 10)
}

/// The issuing CA and what an enrolled agent is handed with its certificate.
pub(crate) struct Issuing {
    ca: Ca,
    /// The root CA(s): the collector's `tls.ca`.
    root_pem: String,
    lifetime: Duration,
    /// Shortest time between two certificates for one host.
    min_renew_interval: Duration,
    /// The port of the main listener.
    ingest_port: u16,
}

impl Issuing {
    /// The issuing CA of `[enroll]` if it is configured (required with
    /// `enroll_listen`, see [`Issuing::load`]); without one, agents
    /// cannot renew their certificates here.
    pub(crate) fn configured(
        config: &CollectorConfig,
        ingest_port: u16,
    ) -> Result<Option<Issuing>, CollectorError> {
        let enroll = &config.enroll;
        if config.enroll_listen.is_none()
            && (enroll.issuer_cert.is_none() || enroll.issuer_key.is_none())
        {
            return Ok(None);
        }
        Issuing::load(config, ingest_port).map(Some)
    }

    /// The issuing CA of `[enroll]`; it must be signed by a CA of `tls.ca`
    /// (or agents it enrolls could not connect).
    pub(crate) fn load(
        config: &CollectorConfig,
        ingest_port: u16,
    ) -> Result<Issuing, CollectorError> {
        let enroll = &config.enroll;
        let missing = |key: &str| {
            CollectorError::Config(hostwatch_runtime::config::ConfigError::new(
                config
                    .path
                    .as_deref()
                    .unwrap_or(std::path::Path::new("collector.toml")),
                format!("{key} is required when enroll_listen is set"),
            ))
        };
        let cert = enroll
            .issuer_cert
            .as_ref()
            .ok_or_else(|| missing("enroll.issuer_cert"))?;
        let key = enroll
            .issuer_key
            .as_ref()
            .ok_or_else(|| missing("enroll.issuer_key"))?;
        let ca = Ca::load_files(cert, key)?;
        ca.check_issued_by(&config.tls.ca)?;
        let root_pem = std::fs::read_to_string(&config.tls.ca).map_err(|source| {
            hostwatch_pki::PkiError::Read {
                path: config.tls.ca.clone(),
                source,
            }
        })?;
        Ok(Issuing {
            ca,
            root_pem,
            lifetime: enroll.cert_lifetime,
            min_renew_interval: enroll.min_renew_interval.min(enroll.cert_lifetime / 10),
            ingest_port,
        })
    }
}

/// The Enroll service.
pub(crate) struct EnrollService {
    pub(crate) shared: Shared,
    pub(crate) issuing: Arc<Issuing>,
}

/// Why an Enroll call failed: the token store's refusals, the request's.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("host_id: {0}")]
    HostId(String),
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
}

impl Failure {
    fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Failure::Refused(
                Refused::Malformed | Refused::Unknown | Refused::Expired | Refused::UsedUp,
            ) => Status::unauthenticated(message),
            Failure::Refused(Refused::HostNotAllowed { .. } | Refused::HostRevoked { .. })
            | Failure::Csr(CsrError::AsksForCa | CsrError::OtherIdentity { .. }) => {
                Status::permission_denied(message)
            }
            Failure::Refused(Refused::HostEnrolled { .. }) => Status::already_exists(message),
            Failure::Refused(Refused::Unavailable(_)) => Status::unavailable(message),
            Failure::Csr(CsrError::Malformed(_) | CsrError::BadSignature) | Failure::HostId(_) => {
                Status::invalid_argument(message)
            }
            Failure::Issue(_) => Status::internal(message),
        }
    }
}

#[tonic::async_trait]
impl Enroll for EnrollService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let addr = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.addr.to_string())
            .unwrap_or_default();
        let request = request.into_inner();
        let (tokens, issuing) = (self.shared.tokens.enroll.clone(), self.issuing.clone());
        let host = request.host_id.clone();
        let replace = request.replace;
        // Signing and the store's flush block.
        let result = tokio::task::spawn_blocking(move || enroll(&tokens, &issuing, &request))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let counters = &self.shared.refused_messages;
        match result {
            Ok((response, token, reinstated)) => {
                counters.enrollments.fetch_add(1, Ordering::Relaxed);
                if let Some(revoked) = reinstated {
                    self.shared.denylist.allow(&revoked.host);
                    tracing::warn!(host.id = %host, token.name = %token, revoked_ms = revoked.revoked_ms, "revoked host reinstated by a newer enrollment token");
                }
                tracing::info!(peer.addr = %addr, host.id = %host, token.name = %token, serial = %response.serial, not_after_ms = response.not_after_ms, replace, "agent enrolled");
                Ok(Response::new(response))
            }
            Err(e) => {
                counters.enrollments_refused.fetch_add(1, Ordering::Relaxed);
                // The error never holds the token's text.
                tracing::warn!(peer.addr = %addr, host.id = %host, error = %e, "enrollment refused");
                Err(e.status())
            }
        }
    }
}

/// One enrollment (see the module's doc for the order); the response and
/// the token's name.
fn enroll(
    tokens: &EnrollStore,
    issuing: &Issuing,
    request: &EnrollRequest,
) -> Result<(EnrollResponse, String, Option<store::Revoked>), Failure> {
    let host = &request.host_id;
    Identity::new(Role::Agent, host).map_err(|e| Failure::HostId(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    tokens.check(&request.token, host, request.replace, now_ms)?;
    let spki = hostwatch_pki::enroll::check_csr(&request.csr, host)?;
    let not_after = now + issuing.lifetime;
    let issued = issuing
        .ca
        .issue_agent(&spki, host, now - clock_skew(issuing.lifetime), not_after)
        .map_err(|e| Failure::Issue(e.to_string()))?;
    let record = Issued {
        serial: issued.serial_hex.clone(),
        not_after_ms: issued.not_after_ms,
        issued_ms: now_ms,
        token: String::new(),
    };
    let (used, reinstated) =
        tokens.redeem(&request.token, host, request.replace, record, now_ms)?;
    Ok((
        EnrollResponse {
            certificate_chain_pem: format!("{}{}", issued.cert_pem, issuing.ca.cert_pem()),
            ca_pem: issuing.root_pem.clone(),
            serial: issued.serial_hex,
            not_after_ms: issued.not_after_ms,
            ingest_port: u32::from(issuing.ingest_port),
        },
        used.name,
        reinstated,
    ))
}

/// Why a Renew call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewFailure {
    #[error(
        "this collector has no issuing CA (enroll.issuer_cert, enroll.issuer_key): it cannot renew certificates"
    )]
    NoIssuingCa,
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("{0}")]
    Refused(Refused),
    #[error(
        "this host was issued a certificate {ago_ms} ms ago; renewals are at least \
         {interval:?} apart (enroll.min_renew_interval): retry in {retry_in_ms} ms"
    )]
    TooSoon {
        ago_ms: i64,
        interval: Duration,
        retry_in_ms: u64,
    },
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
}

impl RenewFailure {
    pub(crate) fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            RenewFailure::NoIssuingCa => Status::failed_precondition(message),
            RenewFailure::Csr(CsrError::AsksForCa | CsrError::OtherIdentity { .. }) => {
                Status::permission_denied(message)
            }
            RenewFailure::Csr(CsrError::Malformed(_) | CsrError::BadSignature) => {
                Status::invalid_argument(message)
            }
            RenewFailure::Refused(Refused::Unavailable(_)) => Status::unavailable(message),
            RenewFailure::Refused(_) => Status::permission_denied(message),
            RenewFailure::TooSoon { retry_in_ms, .. } => crate::convert::retry_after(
                Status::resource_exhausted(message),
                Duration::from_millis(*retry_in_ms),
            ),
            RenewFailure::Issue(_) => Status::internal(message),
        }
    }
}

/// Refuses a certificate issued `interval` or less after the last one,
/// issued at `last_ms`: an agent that fails to save what it is given must
/// not have certificates made at every retry. Checked before signing; two
/// renewals at once may both pass, which bounds nothing worse than one
/// more certificate.
fn too_soon(last_ms: i64, now_ms: i64, interval: Duration) -> Result<(), RenewFailure> {
    let ago_ms = now_ms - last_ms;
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    if ago_ms >= interval_ms {
        return Ok(());
    }
    Err(RenewFailure::TooSoon {
        ago_ms,
        interval,
        // A clock stepped back counts as just issued.
        retry_in_ms: (interval_ms - ago_ms.max(0)) as u64,
    })
}

/// Renews the certificate of agent `host` (the caller's, from its client
/// certificate) for the key of `csr`, with the checks of enrollment, and
/// records it. Blocks on signing and on the disk.
pub(crate) fn renew(
    tokens: &EnrollStore,
    issuing: Option<&Issuing>,
    host: &str,
    csr: &[u8],
) -> Result<hostwatch_proto::v1::RenewResponse, RenewFailure> {
    let issuing = issuing.ok_or(RenewFailure::NoIssuingCa)?;
    let spki = hostwatch_pki::enroll::check_csr(csr, host)?;
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let last = tokens.renewable(host).map_err(RenewFailure::Refused)?;
    if let Some(last) = last {
        too_soon(last.issued_ms, now_ms, issuing.min_renew_interval)?;
    }
    let issued = issuing
        .ca
        .issue_agent(
            &spki,
            host,
            now - clock_skew(issuing.lifetime),
            now + issuing.lifetime,
        )
        .map_err(|e| RenewFailure::Issue(e.to_string()))?;
    let record = Issued {
        serial: issued.serial_hex.clone(),
        not_after_ms: issued.not_after_ms,
        issued_ms: now_ms,
        token: String::new(),
    };
    tokens
        .record_renewal(host, record)
        .map_err(RenewFailure::Refused)?;
    Ok(hostwatch_proto::v1::RenewResponse {
        certificate_chain_pem: format!("{}{}", issued.cert_pem, issuing.ca.cert_pem()),
        serial: issued.serial_hex,
        not_after_ms: issued.not_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_within_the_interval_is_refused_with_the_time_left() {
        let minute = Duration::from_secs(60);
        assert!(too_soon(0, 60_000, minute).is_ok());
        assert!(too_soon(0, 600_000, minute).is_ok());
        let refused = too_soon(0, 20_000, minute).unwrap_err();
        let status = refused.status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "40000"
        );
        assert!(
            status.message().contains("enroll.min_renew_interval"),
            "{}",
            status.message()
        );
        // A clock stepped back: the whole interval.
        let RenewFailure::TooSoon { retry_in_ms, .. } = too_soon(30_000, 0, minute).unwrap_err()
        else {
            panic!("not TooSoon")
        };
        assert_eq!(retry_in_ms, 60_000);
    }
}
