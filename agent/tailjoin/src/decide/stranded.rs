//! Never stranded: whether a key failure is one a new boot cures, and when to reboot. Pure;
//! the agent's run path (`crate::reboot`) logs, reports, waits and asks systemd to reboot.
//!
//! A netbooted machine's boot token comes with its boot (the provisioner puts a fresh one on the
//! kernel command line of each boot script). When the provisioner refuses that token as
//! expired, spent, revoked or unknown (a provisioner restarted mid-boot for longer than the
//! token's lifetime, say), or stays unavailable past the key-fetch deadline, a new boot asks
//! again with a new token. Anything else (the machine not allowed, a TPM refused, a wrong
//! certificate, a bad configuration) would fail the same way after a reboot: rebooting would
//! only loop.

use crate::config::{KeySource, RebootOnKeyFailure};
use crate::error::{AgentError, KeyServerFailure, SecretError};
use std::time::Duration;
use tailjoin_common::wire::refusal_kind;

/// Why a new boot cures the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cure {
    /// The provisioner refused this boot's token; `kind` is its refusal (`boot_token_expired`,
    /// `boot_token_used`, `boot_token_unknown`, `boot_token_revoked`).
    BootToken { kind: String },
    /// The provisioner could not be reached, or answered only "busy"/"failed", until the
    /// retries or the key-fetch deadline ran out.
    ProvisionerUnavailable,
}

impl Cure {
    /// A short, stable name for the journal and the status file.
    pub fn kind(&self) -> &str {
        match self {
            Cure::BootToken { kind } => kind,
            Cure::ProvisionerUnavailable => "provisioner-unavailable",
        }
    }

    /// Why a new boot helps, for humans.
    pub fn why(&self) -> String {
        match self {
            Cure::BootToken { kind } => format!(
                "the provisioner refused this boot's token ({kind}); a new boot gets a fresh one"
            ),
            Cure::ProvisionerUnavailable => {
                "the provisioner stayed unavailable past the key-fetch deadline; a new boot asks \
                 it again with a fresh token"
                    .into()
            }
        }
    }
}

/// The boot-token refusals a new boot cures.
const CURED_BY_A_NEW_TOKEN: [&str; 4] = [
    refusal_kind::BOOT_TOKEN_EXPIRED,
    refusal_kind::BOOT_TOKEN_USED,
    refusal_kind::BOOT_TOKEN_UNKNOWN,
    refusal_kind::BOOT_TOKEN_REVOKED,
];

/// Whether a new boot cures `error`. Only a key from the kernel command line can: its token
/// comes with the boot. Any other source reads the same token (or none) after a reboot.
pub fn cure(source: &KeySource, error: &AgentError) -> Option<Cure> {
    if !matches!(source, KeySource::KernelCmdline(_)) {
        return None;
    }
    let AgentError::KeyUnavailable(SecretError::KeyServer { failure, .. }) = error else {
        return None;
    };
    match failure {
        KeyServerFailure::Unavailable => Some(Cure::ProvisionerUnavailable),
        KeyServerFailure::Refused {
            kind: Some(kind), ..
        } if CURED_BY_A_NEW_TOKEN.contains(&kind.as_str()) => {
            Some(Cure::BootToken { kind: kind.clone() })
        }
        KeyServerFailure::Refused { .. } => None,
    }
}

/// What to do about a failure: reboot after `delay`, for `cure`; `None` means exit as always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootPlan {
    pub cure: Cure,
    pub delay: Duration,
}

/// The plan for `error`: a reboot only when the setting is on and a new boot cures it.
/// `fraction` (0 to 1, drawn at random once per run) picks the jitter.
pub fn plan(
    setting: Option<&RebootOnKeyFailure>,
    source: &KeySource,
    error: &AgentError,
    fraction: f64,
) -> Option<RebootPlan> {
    let setting = setting?;
    let cure = cure(source, error)?;
    Some(RebootPlan {
        cure,
        delay: jittered(setting, fraction),
    })
}

/// `delay` plus `fraction` of `jitter`, whole seconds; a fraction outside 0..=1 (or NaN) is
/// clamped, so the result never exceeds `delay + jitter`.
pub fn jittered(setting: &RebootOnKeyFailure, fraction: f64) -> Duration {
    let f = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let extra = (setting.jitter.as_secs() as f64 * f).round() as u64;
    setting.delay + Duration::from_secs(extra.min(setting.jitter.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CmdlineSource, HttpKeySource};

    fn cmdline() -> KeySource {
        let raw = crate::config::parse(r#"{"auth_key": {"kernel_cmdline": {}}}"#).unwrap();
        let s = raw.validate().unwrap();
        assert!(matches!(
            s.auth_key,
            KeySource::KernelCmdline(CmdlineSource { .. })
        ));
        s.auth_key
    }

    fn http() -> KeySource {
        let raw =
            crate::config::parse(r#"{"auth_key": {"http": {"url": "https://p/k"}}}"#).unwrap();
        let s = raw.validate().unwrap();
        assert!(matches!(s.auth_key, KeySource::Http(HttpKeySource { .. })));
        s.auth_key
    }

    fn server(failure: KeyServerFailure) -> AgentError {
        AgentError::KeyUnavailable(SecretError::KeyServer {
            source_name: "kernel command line".into(),
            reason: "HTTP 403 Forbidden: refused".into(),
            fix: "fix".into(),
            failure,
        })
    }

    fn refused(kind: Option<&str>) -> AgentError {
        server(KeyServerFailure::Refused {
            status: 403,
            kind: kind.map(str::to_owned),
        })
    }

    #[test]
    fn only_a_boot_token_refusal_or_an_unavailable_provisioner_is_cured_by_a_new_boot() {
        let token = |k: &str| Some(Cure::BootToken { kind: k.to_owned() });
        let cases: Vec<(&str, AgentError, Option<Cure>)> = vec![
            (
                "expired",
                refused(Some("boot_token_expired")),
                token("boot_token_expired"),
            ),
            (
                "used",
                refused(Some("boot_token_used")),
                token("boot_token_used"),
            ),
            (
                "unknown",
                refused(Some("boot_token_unknown")),
                token("boot_token_unknown"),
            ),
            (
                "revoked",
                refused(Some("boot_token_revoked")),
                token("boot_token_revoked"),
            ),
            (
                "unavailable",
                server(KeyServerFailure::Unavailable),
                Some(Cure::ProvisionerUnavailable),
            ),
            ("network", refused(Some("network_not_allowed")), None),
            ("mac", refused(Some("mac_not_allowed")), None),
            ("pending", refused(Some("mac_pending_approval")), None),
            ("other mac", refused(Some("boot_token_other_mac")), None),
            ("tpm-required", refused(Some("tpm-required")), None),
            ("ek-mismatch", refused(Some("ek-mismatch")), None),
            (
                "activation-failed",
                refused(Some("activation-failed")),
                None,
            ),
            ("no header", refused(None), None),
            (
                "tls",
                AgentError::KeyUnavailable(SecretError::Unavailable {
                    source_name: "s".into(),
                    reason: "certificate".into(),
                    fix: "ca_file".into(),
                }),
                None,
            ),
            (
                "empty",
                AgentError::KeyUnavailable(SecretError::Empty {
                    source_name: "s".into(),
                }),
                None,
            ),
            (
                "rejected by headscale",
                AgentError::KeyRejected {
                    attempts: 2,
                    reason: "invalid".into(),
                },
                None,
            ),
            (
                "gave up",
                AgentError::GaveUp {
                    attempts: 3,
                    last: "x".into(),
                },
                None,
            ),
        ];
        for (name, error, want) in cases {
            assert_eq!(cure(&cmdline(), &error), want, "{name}");
            assert_eq!(cure(&http(), &error), None, "{name}, http source");
        }
    }

    #[test]
    fn a_plan_needs_the_setting_and_a_cure() {
        let setting = RebootOnKeyFailure {
            delay: Duration::from_secs(10),
            jitter: Duration::from_secs(20),
        };
        let e = refused(Some("boot_token_expired"));
        assert_eq!(plan(None, &cmdline(), &e, 0.5), None);
        assert_eq!(plan(Some(&setting), &http(), &e, 0.5), None);
        assert_eq!(
            plan(
                Some(&setting),
                &cmdline(),
                &refused(Some("ek-mismatch")),
                0.5
            ),
            None
        );
        let p = plan(Some(&setting), &cmdline(), &e, 0.5).unwrap();
        assert_eq!(p.delay, Duration::from_secs(20));
        assert_eq!(p.cure.kind(), "boot_token_expired");
        assert!(p.cure.why().contains("fresh one"));
    }

    #[test]
    fn the_jitter_stays_within_its_bounds() {
        let s = RebootOnKeyFailure {
            delay: Duration::from_secs(30),
            jitter: Duration::from_secs(30),
        };
        let cases = [
            (0.0, 30),
            (0.5, 45),
            (1.0, 60),
            (0.999, 60),
            (-3.0, 30),
            (7.0, 60),
            (f64::NAN, 30),
            (f64::INFINITY, 60),
        ];
        for (fraction, secs) in cases {
            assert_eq!(
                jittered(&s, fraction),
                Duration::from_secs(secs),
                "{fraction}"
            );
        }
        let none = RebootOnKeyFailure {
            delay: Duration::from_secs(5),
            jitter: Duration::ZERO,
        };
        assert_eq!(jittered(&none, 0.9), Duration::from_secs(5));
    }
}
