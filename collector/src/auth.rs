//! Who is calling: the peer identity the TLS listener attached to the
//! connection, checked against the role an RPC requires.

use hostwatch_pki::Role;
use hostwatch_pki::transport::PeerInfo;
use tonic::{Request, Status};

/// The verified peer of `request`, if it holds `role`; PERMISSION_DENIED otherwise.
pub(crate) fn require<T>(request: &Request<T>, role: Role) -> Result<PeerInfo, Status> {
    // Every connection comes through the mTLS listener, which attaches a
    // PeerInfo; a request without one did not, and gets nothing.
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
    if peer.identity.role != role {
        tracing::warn!(peer.addr = %peer.addr, peer.id = %peer.identity, required = %role, "call refused: wrong role");
        return Err(Status::permission_denied(format!(
            "{} may not call this service: it requires the {role} role",
            peer.identity
        )));
    }
    Ok(peer)
}
