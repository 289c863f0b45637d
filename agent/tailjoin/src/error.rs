//! The agent's errors: talking to tailscaled, and why `tailjoin run` stopped. The errors it
//! shares with the provisioner (configuration, secrets) and the exit statuses are
//! [`tailjoin_common::error`]'s.

use std::path::PathBuf;
pub use tailjoin_common::error::{ConfigError, KeyServerFailure, SecretError, exit};
use thiserror::Error;

/// Talking to tailscaled's LocalAPI.
#[derive(Debug, Error)]
pub enum LocalApiError {
    #[error("tailscaled's socket {} is not there; is tailscaled running?", path.display())]
    SocketAbsent { path: PathBuf },
    #[error("permission denied on tailscaled's socket {}: run tailjoin as root or as tailscaled's operator user", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("cannot reach tailscaled at {}: {message}", path.display())]
    Connect { path: PathBuf, message: String },
    #[error("tailscaled answered {endpoint} with HTTP {status}: {body}")]
    Http {
        endpoint: &'static str,
        status: u16,
        body: String,
    },
    #[error("tailscaled's answer to {endpoint} is not the JSON expected: {message}")]
    Decode {
        endpoint: &'static str,
        message: String,
    },
    #[error("the IPN bus stream ended")]
    BusClosed,
}

impl LocalApiError {
    /// Whether waiting and trying again can help.
    pub fn is_transient(&self) -> bool {
        match self {
            LocalApiError::SocketAbsent { .. }
            | LocalApiError::Connect { .. }
            | LocalApiError::BusClosed => true,
            LocalApiError::Http { status, .. } => *status >= 500,
            LocalApiError::PermissionDenied { .. } | LocalApiError::Decode { .. } => false,
        }
    }

    /// A short, stable name for journald's TAILJOIN_ERROR_KIND and the status file.
    pub fn kind(&self) -> &'static str {
        match self {
            LocalApiError::SocketAbsent { .. } => "tailscaled-absent",
            LocalApiError::PermissionDenied { .. } => "permission-denied",
            LocalApiError::Connect { .. } => "tailscaled-unreachable",
            LocalApiError::Http { status, .. } if *status >= 500 => "tailscaled-error",
            LocalApiError::Http { .. } => "tailscaled-refused",
            LocalApiError::Decode { .. } => "tailscaled-protocol",
            LocalApiError::BusClosed => "tailscaled-restarted",
        }
    }
}

/// Why `tailjoin run` stopped for good.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the auth key was rejected {attempts} time(s) by the control server: {reason}{}",
        rejection_hint(reason)
    )]
    KeyRejected { attempts: u32, reason: String },
    #[error(transparent)]
    KeyUnavailable(#[from] SecretError),
    #[error("gave up after {attempts} failed attempt(s) in a row; last error: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error(transparent)]
    LocalApi(LocalApiError),
    #[error("{0}")]
    UnitTimeout(String),
    #[error("{0}")]
    UnitMissing(String),
    #[error("{0}")]
    Internal(String),
}

/// Advice for rejections whose cause is not the key itself.
fn rejection_hint(reason: &str) -> &'static str {
    if reason.contains("requested tags") {
        "; headscale tags a node from its pre-auth key and refuses tags requested with one: \
         drop advertise_tags and put the tags on the key (`headscale preauthkeys create --tags`, \
         or a minting source)"
    } else {
        ""
    }
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) => exit::CONFIG,
            AgentError::KeyRejected { .. } => exit::KEY_REJECTED,
            AgentError::KeyUnavailable(_) => exit::KEY_UNAVAILABLE,
            AgentError::GaveUp { .. } => exit::GAVE_UP,
            AgentError::LocalApi(LocalApiError::PermissionDenied { .. }) => exit::CONFIG,
            AgentError::UnitTimeout(_) => exit::GAVE_UP,
            AgentError::UnitMissing(_) => exit::CONFIG,
            AgentError::LocalApi(_) | AgentError::Internal(_) => exit::INTERNAL,
        }
    }

    /// A short, stable name for journald's TAILJOIN_ERROR_KIND and the status file.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Config(_) => "config",
            AgentError::KeyRejected { .. } => "key-rejected",
            AgentError::KeyUnavailable(_) => "key-unavailable",
            AgentError::GaveUp { .. } => "gave-up",
            AgentError::LocalApi(e) => e.kind(),
            AgentError::UnitTimeout(_) => "unit-timeout",
            AgentError::UnitMissing(_) => "unit-missing",
            AgentError::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_rejection_says_where_tags_belong() {
        let e = AgentError::KeyRejected {
            attempts: 2,
            reason: "handling register with auth key: creating new node: requested tags [tag:a] are invalid or not permitted".into(),
        };
        assert!(e.to_string().contains("drop advertise_tags"), "{e}");
        let e = AgentError::KeyRejected {
            attempts: 2,
            reason: "invalid pre auth key".into(),
        };
        assert!(!e.to_string().contains("advertise_tags"));
    }

    #[test]
    fn exit_codes_are_distinct_per_failure() {
        let codes = [
            AgentError::KeyRejected {
                attempts: 2,
                reason: "x".into(),
            }
            .exit_code(),
            AgentError::GaveUp {
                attempts: 3,
                last: "y".into(),
            }
            .exit_code(),
            AgentError::KeyUnavailable(SecretError::Empty {
                source_name: "file /k".into(),
            })
            .exit_code(),
            AgentError::Internal("z".into()).exit_code(),
        ];
        assert_eq!(
            codes,
            [
                exit::KEY_REJECTED,
                exit::GAVE_UP,
                exit::KEY_UNAVAILABLE,
                exit::INTERNAL
            ]
        );
    }
}
