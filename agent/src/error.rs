//! Errors, one enum per boundary, and how they map to exit statuses.
//!
//! No error ever carries key material: secret sources report where a key was looked for and
//! why it could not be used, never what was read.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Exit statuses of `tailjoin`, stable for systemd's `RestartPreventExitStatus=` and scripts.
pub mod exit {
    /// Success (`check-config` ok, `status` found a Running node, `run` stopped by a signal).
    pub const OK: u8 = 0;
    /// An unexpected internal failure.
    pub const INTERNAL: u8 = 1;
    /// The configuration or the command line is invalid.
    pub const CONFIG: u8 = 2;
    /// The control server rejected the auth key (invalid, expired or already used).
    pub const KEY_REJECTED: u8 = 3;
    /// The auth key could not be read from its source.
    pub const KEY_UNAVAILABLE: u8 = 4;
    /// Transient failures went on past the configured retry bounds.
    pub const GAVE_UP: u8 = 5;
    /// `status`: the node is not Running (or the agent's state is unknown).
    pub const NOT_RUNNING: u8 = 6;
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}{message}", file_prefix(file), field_prefix(field))]
    Syntax {
        file: Option<PathBuf>,
        field: String,
        message: String,
    },
    #[error("{}{field}: {problem}; {fix}", file_prefix(file))]
    Invalid {
        file: Option<PathBuf>,
        field: String,
        problem: String,
        fix: String,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("config {}: ", f.display()))
        .unwrap_or_default()
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl ConfigError {
    /// Names the file the error was found in.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Syntax { field, message, .. } => ConfigError::Syntax {
                file: Some(path.to_owned()),
                field,
                message,
            },
            ConfigError::Invalid {
                field,
                problem,
                fix,
                ..
            } => ConfigError::Invalid {
                file: Some(path.to_owned()),
                field,
                problem,
                fix,
            },
            other => other,
        }
    }
}

/// Reading the auth key from its source.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read the auth key from {source_name}: {reason}; {fix}")]
    Unavailable {
        source_name: String,
        reason: String,
        fix: String,
    },
    #[error("the auth key from {source_name} is empty; put the key in it (one line)")]
    Empty { source_name: String },
    #[error("the auth key file {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}` or deliver the key as a systemd credential", path.display(), path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "the auth key from {source_name} is an OAuth client secret (tskey-client-…); tailscaled cannot log in with it directly — use a pre-authorized auth key (tskey-auth-…) or a key source that mints keys"
    )]
    OAuthClientSecret { source_name: String },
    #[error(
        "the auth key from {source_name} contains whitespace or control characters inside it (between its first and last character; whitespace around it is trimmed); a key is one token on one line"
    )]
    Malformed { source_name: String },
}

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
    fn config_errors_name_file_and_field() {
        let e = ConfigError::Invalid {
            file: None,
            field: "retry.max_attempts".into(),
            problem: "0 is out of range".into(),
            fix: "use 1 to 1000".into(),
        }
        .in_file(Path::new("/etc/tailjoin.json"));
        assert_eq!(
            e.to_string(),
            "config /etc/tailjoin.json: retry.max_attempts: 0 is out of range; use 1 to 1000"
        );
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
