//! `reboot_on_key_failure`, validated.

use std::time::Duration;

/// [`RebootOnKeyFailure::delay`] when none is configured.
pub const DEFAULT_REBOOT_DELAY_SECS: u64 = 30;
/// [`RebootOnKeyFailure::jitter`] when none is configured.
pub const DEFAULT_REBOOT_JITTER_SECS: u64 = 30;
/// The most either may be: an hour.
pub const MAX_REBOOT_SECS: u64 = 3600;

/// Reboot when the key cannot be had for a reason a new boot cures (present only when
/// enabled), after `delay` plus up to `jitter` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebootOnKeyFailure {
    pub delay: Duration,
    pub jitter: Duration,
}
