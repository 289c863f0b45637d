//! The `health` section, validated: the pull side (listener, textfile) and the push reporters.

use super::TokenSource;
use std::path::PathBuf;
use std::time::Duration;

/// Validated health settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub textfile: Option<PathBuf>,
    pub push: PushSettings,
}

/// The push reporters and how they deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// `None`: no heartbeats.
    pub heartbeat: Option<Duration>,
    pub timeout: Duration,
    pub attempts: u32,
    /// How long the agent waits on exit for reports not yet delivered (0: not at all).
    pub flush_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub allow_plain_http: bool,
    pub webhook: Option<WebhookSettings>,
    pub healthchecks: Option<TokenSource>,
    pub uptime_kuma: Option<TokenSource>,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            heartbeat: Some(Duration::from_secs(DEFAULT_HEARTBEAT_SECS)),
            timeout: Duration::from_secs(DEFAULT_PUSH_TIMEOUT_SECS),
            attempts: DEFAULT_PUSH_ATTEMPTS,
            flush_timeout: Duration::from_secs(DEFAULT_FLUSH_TIMEOUT_SECS),
            ca_file: None,
            allow_plain_http: false,
            webhook: None,
            healthchecks: None,
            uptime_kuma: None,
        }
    }
}

impl PushSettings {
    /// Whether any push reporter is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.healthchecks.is_some() || self.uptime_kuma.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: TokenSource,
    pub bearer_token: Option<TokenSource>,
}

pub const DEFAULT_HEARTBEAT_SECS: u64 = 300;
pub const DEFAULT_PUSH_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_PUSH_ATTEMPTS: u32 = 5;
/// Short: a netbooted machine pays it at every shutdown when an endpoint hangs.
pub const DEFAULT_FLUSH_TIMEOUT_SECS: u64 = 2;
