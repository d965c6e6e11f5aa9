//! Revoked hosts and certificate serials, which every listener sharing the
//! deny list refuses in the TLS handshake, with the `certificate_revoked`
//! alert, so the peer learns why (and again after it, before the
//! connection is admitted, for a revocation that came meanwhile), and
//! whose open connections it closes when they are denied.

use super::listener::{ListenerShared, lock};
use crate::{Identity, Role};
use rustls::pki_types::CertificateDer;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

/// What is denied, and the listeners that check it; cheap to clone.
#[derive(Clone, Default)]
pub struct Denylist(Arc<Mutex<Denied>>);

#[derive(Default)]
struct Denied {
    /// Agent host ids.
    hosts: HashSet<String>,
    /// Certificate serial numbers, lowercase hex without leading zeros.
    serials: HashSet<String>,
    listeners: Vec<Weak<ListenerShared>>,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let denied = lock(&self.0);
        f.debug_struct("Denylist")
            .field("hosts", &denied.hosts)
            .field("serials", &denied.serials)
            .finish_non_exhaustive()
    }
}

impl Denylist {
    /// Denies agent `host` and the certificates `serials`; closes their
    /// open connections on every listener. Returns the serials of the
    /// connections closed.
    pub fn deny(&self, host: &str, serials: &[String]) -> Vec<String> {
        let listeners = {
            let mut denied = lock(&self.0);
            denied.hosts.insert(host.to_owned());
            denied.serials.extend(serials.iter().map(|s| normalize(s)));
            denied.listeners.retain(|l| l.strong_count() > 0);
            denied.listeners.clone()
        };
        listeners
            .iter()
            .filter_map(Weak::upgrade)
            .flat_map(|listener| listener.close_matching(|peer, serial| self.denies(peer, serial)))
            .collect()
    }

    /// Denies the certificates `serials` only (of a reinstated host).
    pub fn deny_serials(&self, serials: &[String]) {
        lock(&self.0)
            .serials
            .extend(serials.iter().map(|s| normalize(s)));
    }

    /// Admits agent `host` again; the serials denied stay denied.
    pub fn allow(&self, host: &str) {
        lock(&self.0).hosts.remove(host);
    }

    /// Whether a peer with `identity` and a certificate of serial `serial`
    /// (lowercase hex) is refused.
    pub fn denies(&self, identity: &Option<Identity>, serial: Option<&str>) -> bool {
        let denied = lock(&self.0);
        let host = identity
            .as_ref()
            .is_some_and(|id| id.role == Role::Agent && denied.hosts.contains(&id.name));
        host || serial.is_some_and(|s| denied.serials.contains(&normalize(s)))
    }

    /// Whether the client certificate `end_entity` is refused; if so, the
    /// listener's handshake in this task learns whom it refused
    /// ([`refused_in`]). Called by the certificate verifier, which has no
    /// other way to tell the listener (rustls calls it without context).
    pub(crate) fn refuses_certificate(&self, end_entity: &CertificateDer<'_>) -> bool {
        let identity = crate::peer_identity(end_entity).ok();
        let serial = crate::certificate_serial_hex(end_entity);
        if !self.denies(&identity, serial.as_deref()) {
            return false;
        }
        let _ = REFUSED.try_with(|refused| *refused.borrow_mut() = Some((identity, serial)));
        true
    }

    pub(crate) fn register(&self, listener: &Arc<ListenerShared>) {
        lock(&self.0).listeners.push(Arc::downgrade(listener));
    }
}

/// A peer refused as revoked: its identity and certificate serial.
pub(crate) type RefusedPeer = (Option<Identity>, Option<String>);

tokio::task_local! {
    /// The peer the verifier refused as revoked in the handshake this task
    /// runs (see [`Denylist::refuses_certificate`]).
    static REFUSED: std::cell::RefCell<Option<RefusedPeer>>;
}

/// Runs `handshake`, and tells whom the verifier refused as revoked in it,
/// if it did.
pub(crate) async fn refused_in<F: std::future::Future>(
    handshake: F,
) -> (F::Output, Option<RefusedPeer>) {
    REFUSED
        .scope(std::cell::RefCell::new(None), async {
            let output = handshake.await;
            (output, REFUSED.with(|refused| refused.borrow_mut().take()))
        })
        .await
}

/// Serials compare as numbers: lowercase, without leading zeros.
fn normalize(serial: &str) -> String {
    let trimmed = serial.trim_start_matches('0').to_ascii_lowercase();
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_deny_agents_only_and_serials_compare_as_numbers() {
        let list = Denylist::default();
        let agent = Some(Identity::new(Role::Agent, "web-1").unwrap());
        let operator = Some(Identity::new(Role::Operator, "web-1").unwrap());
        assert!(!list.denies(&agent, None));
        assert!(list.deny("web-1", &["00AB".to_owned()]).is_empty());
        assert!(list.denies(&agent, None));
        assert!(!list.denies(&operator, None));
        assert!(list.denies(&operator, Some("ab")));
        assert!(!list.denies(&None, Some("abc")));
        list.allow("web-1");
        assert!(!list.denies(&agent, Some("cd")));
        assert!(list.denies(&agent, Some("ab")), "its serials stay denied");
        list.deny_serials(&["cd".to_owned()]);
        assert!(list.denies(&agent, Some("cd")));
    }
}
