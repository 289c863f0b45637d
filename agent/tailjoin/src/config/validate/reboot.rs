//! `reboot_on_key_failure`: bounds and defaults.

use super::super::raw::RawRebootOnKeyFailure;
use super::super::settings::{
    DEFAULT_REBOOT_DELAY_SECS, DEFAULT_REBOOT_JITTER_SECS, MAX_REBOOT_SECS, RebootOnKeyFailure,
};
use crate::error::ConfigError;
use std::time::Duration;
use tailjoin_common::config::invalid;

/// `None` when rebooting is off (absent, or `enabled` false or missing).
pub fn validate(
    raw: Option<RawRebootOnKeyFailure>,
) -> Result<Option<RebootOnKeyFailure>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let secs = |field: &str, value: Option<u64>, default: u64| {
        let v = value.unwrap_or(default);
        if v > MAX_REBOOT_SECS {
            return Err(invalid(
                &format!("reboot_on_key_failure.{field}"),
                format!("{v} is out of range"),
                &format!("use 0 to {MAX_REBOOT_SECS} seconds"),
            ));
        }
        Ok(Duration::from_secs(v))
    };
    let delay = secs("delay_secs", raw.delay_secs, DEFAULT_REBOOT_DELAY_SECS)?;
    let jitter = secs("jitter_secs", raw.jitter_secs, DEFAULT_REBOOT_JITTER_SECS)?;
    Ok(raw
        .enabled
        .unwrap_or(false)
        .then_some(RebootOnKeyFailure { delay, jitter }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_enabled_and_bounded_naming_the_field() {
        assert_eq!(validate(None).unwrap(), None);
        let raw = |enabled, delay, jitter| {
            Some(RawRebootOnKeyFailure {
                enabled,
                delay_secs: delay,
                jitter_secs: jitter,
            })
        };
        assert_eq!(validate(raw(None, Some(5), None)).unwrap(), None);
        assert_eq!(validate(raw(Some(false), None, None)).unwrap(), None);
        assert_eq!(
            validate(raw(Some(true), None, None)).unwrap(),
            Some(RebootOnKeyFailure {
                delay: Duration::from_secs(30),
                jitter: Duration::from_secs(30)
            })
        );
        assert_eq!(
            validate(raw(Some(true), Some(0), Some(0))).unwrap(),
            Some(RebootOnKeyFailure {
                delay: Duration::ZERO,
                jitter: Duration::ZERO
            })
        );
        let e = validate(raw(Some(true), Some(3601), None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reboot_on_key_failure.delay_secs") && e.contains("0 to 3600"),
            "{e}"
        );
        let e = validate(raw(Some(false), None, Some(99_999)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reboot_on_key_failure.jitter_secs"), "{e}");
    }
}
