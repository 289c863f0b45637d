//! The validated settings the agent runs with: every default applied, every value checked.

mod auth_key;
mod health;
mod reboot;

pub use auth_key::{
    CmdlineSource, HeadscaleApi, HttpKeySource, KeySource, MintApi, MintSource, ResponseFormat,
    TailscaleApi, TokenSource, TpmPolicy, UserRef,
};
pub use health::{
    DEFAULT_FLUSH_TIMEOUT_SECS, DEFAULT_HEARTBEAT_SECS, DEFAULT_PUSH_ATTEMPTS,
    DEFAULT_PUSH_TIMEOUT_SECS, HealthSettings, PushSettings, WebhookSettings,
};

pub use reboot::{
    DEFAULT_REBOOT_DELAY_SECS, DEFAULT_REBOOT_JITTER_SECS, MAX_REBOOT_SECS, RebootOnKeyFailure,
};
pub use tailjoin_common::config::LogLevel;

use super::raw::OnStopped;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/tailjoin";

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub socket: PathBuf,
    pub login_server: Option<String>,
    pub hostname: Option<String>,
    pub advertise_tags: Vec<String>,
    pub ephemeral: bool,
    pub prefs: JoinPrefs,
    pub auth_key: KeySource,
    pub on_stopped: OnStopped,
    pub join_timeout: Duration,
    pub retry: RetryPolicy,
    pub state_dir: PathBuf,
    pub log_level: LogLevel,
    pub tailscaled_unit: String,
    pub wait_for_units: Vec<String>,
    pub units_timeout: Duration,
    pub health: HealthSettings,
    /// `None`: a key failure ends the agent (exit status 4), as without the setting.
    pub reboot_on_key_failure: Option<RebootOnKeyFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPrefs {
    pub accept_routes: bool,
    pub accept_dns: bool,
    pub shields_up: bool,
    pub advertise_routes: Vec<String>,
    pub ssh: bool,
    pub operator: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub key_attempts: u32,
    /// Fetching or minting the key (HTTP, kernel command line, minting APIs) gives up after
    /// this long, retries included.
    pub key_fetch_deadline: Duration,
}

/// [`RetryPolicy::key_fetch_deadline`] when none is configured.
pub const DEFAULT_KEY_FETCH_DEADLINE_SECS: u64 = 300;

impl RetryPolicy {
    /// Backoff for fetching or minting a key: `max_attempts` tries in all, with jitter.
    pub fn key_fetch_backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }
}
