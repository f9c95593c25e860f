//! Who may send admin requests (load, unload, traffic changes). With `--admin-token`, every such request must
//! carry it as a bearer token; without one, only clients on this host (loopback) are trusted, unless
//! `--allow-remote-admin true` opens admin requests to a network the operator trusts.
use std::fmt;
use std::net::SocketAddr;

use crate::error::{InferError, InferResult};

/// The admin rule the server runs with.
#[derive(Clone)]
pub enum AdminAccess {
    /// `Authorization: Bearer <token>` from anywhere.
    Token(String),
    /// Loopback clients only.
    Loopback,
    /// Anyone who reaches the port.
    Open,
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.write_str(match self {
            Self::Token(_) => "Token",
            Self::Loopback => "Loopback",
            Self::Open => "Open",
        })
    }
}

/// Who sent an admin request: the peer address of its connection and its `authorization` header or metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    pub peer: Option<SocketAddr>,
    pub authorization: Option<&'a str>,
}

impl fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{peer}"),
            None => f.write_str("an unknown client"),
        }
    }
}

impl Caller<'_> {
    /// On this host: a loopback address (an IPv4 one mapped into IPv6 too).
    fn is_loopback(&self) -> bool {
        self.peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
    }
}

impl AdminAccess {
    pub fn new(token: Option<String>, allow_remote: bool) -> Self {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => Self::Token(token),
            None if allow_remote => Self::Open,
            None => Self::Loopback,
        }
    }

    /// The rule in a sentence, for the start-up log.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Token(_) => "admin requests (load, unload, traffic changes) need the bearer token of --admin-token",
            Self::Loopback => {
                "admin requests (load, unload, traffic changes) are accepted only from loopback clients: set \
                 --admin-token to require a bearer token instead, or --allow-remote-admin true to accept them from \
                 any client of a trusted network"
            }
            Self::Open => {
                "admin requests (load, unload, traffic changes) are open to every client that reaches the HTTP or \
                 gRPC port (--allow-remote-admin true, no --admin-token)"
            }
        }
    }

    pub fn check(&self, caller: &Caller<'_>) -> InferResult<()> {
        match self {
            Self::Open => Ok(()),
            Self::Loopback if caller.is_loopback() => Ok(()),
            Self::Loopback => Err(InferError::Unauthenticated(format!(
                "admin requests are accepted only from loopback clients unless the server is given an --admin-token \
                 (sent as 'Authorization: Bearer <token>') or --allow-remote-admin true; this one came from {caller}"
            ))),
            Self::Token(token) => {
                let presented = caller
                    .authorization
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                if same_secret(presented, token) {
                    Ok(())
                } else {
                    Err(InferError::Unauthenticated(
                        "this admin request needs 'Authorization: Bearer <admin token>' (--admin-token)".into(),
                    ))
                }
            }
        }
    }
}

/// Compares every byte, so the time taken does not tell how much of a guess was right.
pub fn same_secret(presented: &str, token: &str) -> bool {
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str, authorization: Option<&'static str>) -> Caller<'static> {
        Caller {
            peer: Some(peer.parse().unwrap()),
            authorization,
        }
    }

    #[test]
    fn without_a_token_only_loopback_clients_are_trusted() {
        let access = AdminAccess::new(None, false);
        for local in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(access.check(&from(local, None)).is_ok(), "{local}");
        }
        for remote in ["192.0.2.2:5000", "[fd00::2]:1", "[::ffff:10.0.0.1]:5000", "0.0.0.0:1"] {
            let err = access.check(&from(remote, None)).unwrap_err();
            assert!(matches!(err, InferError::Unauthenticated(_)));
            assert!(err.to_string().contains("--admin-token"), "{err}");
        }
        assert!(
            access.check(&Caller::default()).is_err(),
            "an unknown peer is not trusted"
        );
    }

    #[test]
    fn a_token_is_needed_from_everywhere_and_remote_admin_can_be_opened() {
        let access = AdminAccess::new(Some("s3cret".into()), true);
        assert!(access.check(&from("127.0.0.1:1", None)).is_err());
        assert!(access.check(&from("127.0.0.1:1", Some("Bearer s3cre"))).is_err());
        assert!(access.check(&from("192.0.2.2:1", Some("Bearer s3cret"))).is_ok());
        assert!(AdminAccess::new(None, true).check(&from("192.0.2.2:1", None)).is_ok());
        assert!(matches!(
            AdminAccess::new(Some(String::new()), false),
            AdminAccess::Loopback
        ));
        assert_eq!(format!("{:?}", AdminAccess::new(Some("s3cret".into()), false)), "Token");
    }
}
