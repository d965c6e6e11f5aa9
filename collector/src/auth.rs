//! Who is calling: the peer identity the TLS listener attached to the
//! connection, checked against the roles an RPC or an HTTP request
//! accepts.

use hostwatch_pki::transport::PeerInfo;
use hostwatch_pki::{Identity, Role};
use std::net::SocketAddr;
use tonic::{Request, Status};

/// Who may call a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Agents only (Ingest).
    Agent,
    /// Operators and viewers (Query, the HTTP API).
    Read,
    /// Operators only (Admin).
    Operate,
}

impl Access {
    /// Whether `role` has this access.
    pub(crate) fn allows(self, role: Role) -> bool {
        match self {
            Access::Agent => role == Role::Agent,
            Access::Read => role.may_read(),
            Access::Operate => role == Role::Operator,
        }
    }

    fn roles(self) -> &'static str {
        match self {
            Access::Agent => "the agent role",
            Access::Read => "the operator or viewer role",
            Access::Operate => "the operator role",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) addr: SocketAddr,
    pub(crate) identity: Identity,
    /// When its certificate expires (ms since the Unix epoch), if known.
    pub(crate) certificate_expires_ms: Option<i64>,
}

/// Why a caller was turned away.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    /// No certificate with a hostwatch identity.
    #[error("no verified client certificate")]
    Unauthenticated,
    /// An identity whose role lacks the access.
    #[error("{identity} may not call this service: it requires {roles}")]
    Role {
        identity: Identity,
        roles: &'static str,
    },
}

/// The caller on `peer` (the connection's), if it has `access`.
pub(crate) fn check(peer: Option<&PeerInfo>, access: Access) -> Result<Caller, Denied> {
    // Every connection comes through the TLS listener, which attaches a
    // PeerInfo; a request without one did not, and gets nothing.
    let peer = peer.ok_or(Denied::Unauthenticated)?;
    let identity = peer.identity.clone().ok_or(Denied::Unauthenticated)?;
    if !access.allows(identity.role) {
        tracing::warn!(peer.addr = %peer.addr, peer.id = %identity, required = access.roles(), "call refused: wrong role");
        return Err(Denied::Role {
            identity,
            roles: access.roles(),
        });
    }
    Ok(Caller {
        addr: peer.addr,
        identity,
        certificate_expires_ms: peer.certificate_expires_ms,
    })
}

/// The verified caller of gRPC `request`, if it has `access`;
/// UNAUTHENTICATED or PERMISSION_DENIED otherwise.
pub(crate) fn require<T>(request: &Request<T>, access: Access) -> Result<Caller, Status> {
    check(request.extensions().get::<PeerInfo>(), access).map_err(|e| match e {
        Denied::Unauthenticated => Status::unauthenticated(e.to_string()),
        Denied::Role { .. } => Status::permission_denied(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_access_allows_its_roles_only() {
        use Role::*;
        for (access, allowed) in [
            (Access::Agent, vec![Agent]),
            (Access::Read, vec![Operator, Viewer]),
            (Access::Operate, vec![Operator]),
        ] {
            for role in [Agent, Operator, Viewer, Collector] {
                assert_eq!(
                    access.allows(role),
                    allowed.contains(&role),
                    "{access:?} {role}"
                );
            }
        }
    }
}
