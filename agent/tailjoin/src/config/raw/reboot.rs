//! `reboot_on_key_failure` as written.

use serde::{Deserialize, Serialize};

/// What a netbooted machine does when its key cannot be had for a reason a new boot cures
/// (its boot token expired, spent, revoked or unknown; the provisioner unavailable past the
/// key-fetch deadline): reboot after a delay, or (the default) exit with status 4.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRebootOnKeyFailure {
    /// Reboot at all [default: false].
    pub enabled: Option<bool>,
    /// Seconds to wait before rebooting [default: 30].
    pub delay_secs: Option<u64>,
    /// Up to this many seconds more, drawn at random, so that a fleet does not reboot in step
    /// [default: 30].
    pub jitter_secs: Option<u64>,
}

impl RawRebootOnKeyFailure {
    /// Lays `top` on `self`: every field set in `top` wins.
    pub fn overlay(self, top: Self) -> Self {
        RawRebootOnKeyFailure {
            enabled: top.enabled.or(self.enabled),
            delay_secs: top.delay_secs.or(self.delay_secs),
            jitter_secs: top.jitter_secs.or(self.jitter_secs),
        }
    }
}
