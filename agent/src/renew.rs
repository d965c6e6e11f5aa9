//! Renewal of the agent's certificate: once two thirds of its validity
//! have passed, the agent makes a new key and a certificate signing
//! request, asks the collector to sign it (Ingest.Renew, over the mTLS
//! connection the shipper streams on, authenticated by the current
//! certificate; with several `collectors`, whichever one it streams to,
//! which is why the collectors of a pair share the CA and issuing CA), and replaces its key and certificate files, each
//! atomically. The configuration's `tls_check_interval` reload then sees
//! the files changed and the stream reconnects with them; the spool and
//! acknowledgements carry every batch across that reconnection.
//!
//! A failed renewal is retried with jittered exponential backoff, at most
//! a tenth of the time left (and at most [`MAX_RETRY`]) apart, and no
//! sooner than a refusing collector asks (`grpc-retry-pushback-ms`: it
//! issues one host at most one certificate per `enroll.min_renew_interval`),
//! counted and logged; the old certificate stays until a new one is in hand. The collector pages
//! (`agent_certificate_expiring`) if the certificate gets close to expiry.

use crate::config::AgentConfig;
use crate::health::Health;
use hostwatch_pki::CertPair;
use hostwatch_proto::v1::RenewRequest;
use hostwatch_proto::v1::ingest_client::IngestClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// First retry delay after a failed renewal; doubles from there.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest delay between renewal attempts.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Longest wait for the collector's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewError {
    #[error("the agent is stopping")]
    Stopping,
    #[error("the collector refused the renewal ({code:?}): {message}")]
    Refused {
        code: tonic::Code,
        message: String,
        /// How long the collector asked the agent to wait.
        pushback: Option<Duration>,
    },
    #[error("no answer from the collector within {0:?}")]
    NoAnswer(Duration),
    #[error("the renewed certificate is unusable: {0}")]
    Answer(hostwatch_pki::PkiError),
    #[error(
        "a renewed certificate could not be saved, so none is asked for: {0} \
         (the agent's user must be able to create files beside tls.cert and tls.key)"
    )]
    Unwritable(hostwatch_pki::PkiError),
    #[error(transparent)]
    Pki(#[from] hostwatch_pki::PkiError),
}

/// When a certificate valid from `not_before_ms` to `not_after_ms` is
/// renewed: two thirds of the way.
pub(crate) fn due_ms(not_before_ms: i64, not_after_ms: i64) -> i64 {
    not_before_ms + (not_after_ms - not_before_ms).max(0) * 2 / 3
}

/// Renews the certificate of `host_id` whenever it is due, until dropped.
/// `channel` is the shipper's connection, when it has one.
pub(crate) async fn run(
    mut configs: watch::Receiver<AgentConfig>,
    channel: watch::Receiver<Option<Channel>>,
    health: Arc<Health>,
    host_id: String,
) {
    let mut attempt: u32 = 0;
    let mut unreadable: Option<String> = None;
    loop {
        let config = configs.borrow_and_update().clone();
        let (not_before, not_after) = match config.tls.cert_validity_ms() {
            Ok(validity) => validity,
            Err(e) => {
                // The shipper reports unusable files too; said once per
                // change here, and looked at again later (not in a spin
                // when tls_check_interval is zero).
                let text = e.to_string();
                if unreadable.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot read the certificate's validity; no renewal until it loads");
                    unreadable = Some(text);
                }
                let again = match config.tls_check_interval {
                    Duration::ZERO => MAX_RETRY,
                    every => every,
                };
                wait_or_reload(&mut configs, again).await;
                continue;
            }
        };
        unreadable = None;
        health.certificate(not_before, not_after);
        let now = hostwatch_stdx::now_ms();
        let due = due_ms(not_before, not_after);
        if now < due && attempt == 0 {
            let wait = Duration::from_millis((due - now) as u64);
            wait_or_reload(&mut configs, wait).await;
            continue;
        }
        match renew_once(&config, &channel, &host_id).await {
            Ok((serial, not_after_ms)) => {
                attempt = 0;
                health.renewed();
                tracing::info!(host.id = %host_id, serial = %serial, not_after_ms, cert = %config.tls.cert.display(), "certificate renewed; the stream switches to it at the next tls check");
                // The files changed: wait for their reload rather than
                // reading them again at once.
                wait_or_reload(&mut configs, config.tls_check_interval).await;
            }
            Err(e) => {
                health.renewal_failed();
                let left = Duration::from_millis((not_after - now).max(0) as u64);
                let delay = retry_delay(attempt, left, &e);
                attempt = attempt.saturating_add(1);
                tracing::warn!(host.id = %host_id, error = %e, retry_in = ?delay, not_after_ms = not_after, "certificate renewal failed; the current certificate stays");
                wait_or_reload(&mut configs, delay).await;
            }
        }
    }
}

/// How long to wait after `failure`, the `attempt`th in a row with `left`
/// of the certificate's validity: jittered exponential backoff from
/// [`RETRY_BASE`] up to a tenth of `left` (within [`RETRY_BASE`] and
/// [`MAX_RETRY`]), and at least what a refusing collector asked for.
fn retry_delay(attempt: u32, left: Duration, failure: &RenewError) -> Duration {
    let max = (left / 10).clamp(RETRY_BASE, MAX_RETRY);
    let backoff = hostwatch_stdx::backoff(attempt, RETRY_BASE, max);
    match failure {
        RenewError::Refused {
            pushback: Some(asked),
            ..
        } => backoff.max(*asked),
        _ => backoff,
    }
}

/// Waits `wait`, or less if the configuration changes.
async fn wait_or_reload(configs: &mut watch::Receiver<AgentConfig>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = crate::config_changed(configs) => {}
    }
}

/// One renewal: a new key and request, the collector's answer checked,
/// the files replaced. Returns the new serial and expiry.
async fn renew_once(
    config: &AgentConfig,
    channel: &watch::Receiver<Option<Channel>>,
    host_id: &str,
) -> Result<(String, i64), RenewError> {
    let (cert, key) = (config.tls.cert.clone(), config.tls.key.clone());
    tokio::task::spawn_blocking(move || CertPair::check_replaceable(&cert, &key))
        .await
        .map_err(|e| RenewError::Pki(hostwatch_pki::PkiError::BadCertificate(e.to_string())))?
        .map_err(RenewError::Unwritable)?;
    // The certificate is renewed over the stream's connection: wait for one.
    let channel = channel
        .clone()
        .wait_for(Option::is_some)
        .await
        .map_err(|_| RenewError::Stopping)?
        .clone()
        .ok_or(RenewError::Stopping)?;
    let (key, csr) = hostwatch_pki::enroll::agent_request(host_id)?;
    let answer = tokio::time::timeout(
        ANSWER_TIMEOUT,
        IngestClient::new(channel).renew(RenewRequest { csr }),
    )
    .await
    .map_err(|_| RenewError::NoAnswer(ANSWER_TIMEOUT))?
    .map_err(|status| RenewError::Refused {
        code: status.code(),
        message: status.message().to_owned(),
        pushback: crate::shipper::pushback(&status),
    })?
    .into_inner();
    hostwatch_pki::enroll::check_issued(&answer.certificate_chain_pem, &key, host_id)
        .map_err(RenewError::Answer)?;
    let pair = CertPair {
        cert_pem: answer.certificate_chain_pem,
        key_pem: key.serialize_pem(),
    };
    // Writing and syncing block.
    let (cert, key) = (config.tls.cert.clone(), config.tls.key.clone());
    tokio::task::spawn_blocking(move || pair.replace_files(&cert, &key))
        .await
        .map_err(|e| RenewError::Pki(hostwatch_pki::PkiError::BadCertificate(e.to_string())))??;
    Ok((answer.serial, answer.not_after_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files that could not be replaced: refused at once, before waiting
    /// for a connection to ask over (there is none here).
    #[tokio::test]
    async fn no_certificate_is_asked_for_that_could_not_be_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "collector = \"127.0.0.1:1\"\nstate_dir = \"state\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"gone/agent.pem\"\nkey = \"gone/agent.key\"\n",
        )
        .unwrap();
        let config = AgentConfig::load(&path).unwrap();
        let (_keep, channel) = watch::channel(None);
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            renew_once(&config, &channel, "web-1"),
        )
        .await
        .expect("refused without waiting for a connection");
        let err = result.unwrap_err();
        assert!(matches!(err, RenewError::Unwritable(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("agent.key.new") && text.contains("tls.cert"),
            "{text}"
        );
    }

    #[test]
    fn failed_renewals_back_off_and_wait_as_long_as_the_collector_asks() {
        let left = Duration::from_secs(30 * 86_400);
        let failed = RenewError::NoAnswer(ANSWER_TIMEOUT);
        for attempt in 0..30 {
            let ceiling = RETRY_BASE
                .saturating_mul(1 << attempt.min(20))
                .min(MAX_RETRY);
            let delay = retry_delay(attempt, left, &failed);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
        // Little left: retried sooner, but never in a spin.
        let delay = retry_delay(30, Duration::ZERO, &failed);
        assert!(delay >= RETRY_BASE / 2 && delay <= RETRY_BASE, "{delay:?}");
        let too_soon = RenewError::Refused {
            code: tonic::Code::ResourceExhausted,
            message: "renewals are at least 10m apart".to_owned(),
            pushback: Some(Duration::from_secs(120)),
        };
        assert_eq!(retry_delay(0, left, &too_soon), Duration::from_secs(120));
    }

    #[test]
    fn renewal_is_due_two_thirds_of_the_way() {
        assert_eq!(due_ms(0, 30), 20);
        assert_eq!(due_ms(1_000, 91_000), 61_000);
        // A certificate that ends before it starts is due at once.
        assert_eq!(due_ms(50, 10), 50);
    }
}
