//! Errors, one enum per boundary, and how they map to exit statuses.
//!
//! No error ever carries key material: secret sources report where a key was looked for and
//! why it could not be used, never what was read.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Exit statuses of `tailjoin` and `tailjoin-provisioner`, stable for systemd's `RestartPreventExitStatus=` and scripts.
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
    /// A key server refused the request, or stayed unavailable: the facts the agent decides
    /// on (whether a new boot cures it), beside the same message as [`SecretError::Unavailable`].
    #[error("cannot read the auth key from {source_name}: {reason}; {fix}")]
    KeyServer {
        source_name: String,
        reason: String,
        fix: String,
        failure: KeyServerFailure,
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

/// How a key server failed, machine-readably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyServerFailure {
    /// It answered with a refusal (a 4xx): `kind` is its `Tailjoin-Refusal` header
    /// ([`crate::wire::REFUSAL_HEADER`]) when it sent one, as the provisioner does.
    Refused { status: u16, kind: Option<String> },
    /// It could not be reached, or answered only "busy" or "failed" (5xx, 408, 409, 429),
    /// until the retries or `retry.key_fetch_deadline_secs` ran out.
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
