//! Who may get a key with or without TPM proof (`netboot.tpm`): the pure decisions, table-tested.
//!
//! - [`TpmMode::Required`]: no key without proof from an enrolled EK (or one whose certificate
//!   chains to `netboot.tpm_ek_ca_files`). Unknown machines boot, show their EK, and wait on the
//!   pending list until an admin runs `approve MAC`, which binds that EK.
//! - [`TpmMode::WhenEnrolled`] (the default): a MAC once bound to an EK never again gets a key
//!   without proof from that EK (no downgrade). Other machines keep the boot-token path; a TPM
//!   they show is offered on the pending list for `approve MAC` to bind.
//! - [`TpmMode::Off`]: TPMs are ignored; the boot-token path decides.
//!
//! A machine proven by its TPM needs no boot token: an expired or spent one cannot strand it.

use crate::enrol::Approval;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TpmMode {
    Required,
    #[default]
    WhenEnrolled,
    Off,
}

impl TpmMode {
    pub const WORDS: &'static str = "\"required\", \"when-enrolled\" or \"off\"";

    pub fn parse(word: &str) -> Option<TpmMode> {
        match word {
            "required" => Some(TpmMode::Required),
            "when-enrolled" => Some(TpmMode::WhenEnrolled),
            "off" => Some(TpmMode::Off),
            _ => None,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            TpmMode::Required => "required",
            TpmMode::WhenEnrolled => "when-enrolled",
            TpmMode::Off => "off",
        }
    }
}

/// What step 1 of a TPM-proven request (EK and AK shown) leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceGate {
    /// The EK is the one bound to `mac`, or its certificate chains to a configured CA: a
    /// challenge is opened and, once answered, the key is released with no token.
    Proven { mac: String, by: ProvenBy },
    /// Not bound (when-enrolled): the key goes through the boot-token path as without a TPM, but
    /// sealed to this TPM; the EK is offered on the pending list for `approve MAC` to bind.
    TokenDecides { mac: Option<String> },
    /// `required` and the EK is not enrolled: the machine waits on the pending list.
    AwaitApproval { mac: Option<String> },
    /// A MAC the request names is bound to another EK: a different TPM claims it.
    EkMismatch { mac: String },
    /// `off`: the TPM is not looked at.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvenBy {
    Enrolment,
    /// The EK certificate's issuer.
    Ca(String),
}

impl ProvenBy {
    pub fn describe(&self) -> String {
        match self {
            ProvenBy::Enrolment => "tpm-enrolled".into(),
            ProvenBy::Ca(issuer) => format!("tpm-ca {issuer}"),
        }
    }
}

/// The EK a MAC is bound to, if any.
fn bound_ek<'a>(approved: &'a BTreeMap<String, Approval>, mac: &str) -> Option<&'a str> {
    approved.get(mac).and_then(|a| a.ek_fingerprint.as_deref())
}

/// Step 1: the request names `macs`, shows the EK with fingerprint `ek`, whose certificate
/// chains to a configured CA with issuer `ca_issuer` (if it does).
pub fn gate_evidence(
    mode: TpmMode,
    macs: &[String],
    approved: &BTreeMap<String, Approval>,
    ek: &str,
    ca_issuer: Option<&str>,
) -> EvidenceGate {
    if mode == TpmMode::Off {
        return EvidenceGate::Ignored;
    }
    // The EK is who the machine is: a machine whose network card changed is still itself.
    let enrolled = macs
        .iter()
        .find(|m| bound_ek(approved, m) == Some(ek))
        .or_else(|| {
            approved
                .iter()
                .find(|(_, a)| a.ek_fingerprint.as_deref() == Some(ek))
                .map(|(m, _)| m)
        });
    if let Some(mac) = enrolled {
        return EvidenceGate::Proven {
            mac: mac.clone(),
            by: ProvenBy::Enrolment,
        };
    }
    if let Some(mac) = macs.iter().find(|m| bound_ek(approved, m).is_some()) {
        return EvidenceGate::EkMismatch { mac: mac.clone() };
    }
    let first = macs.first().cloned();
    if let (Some(issuer), Some(mac)) = (ca_issuer, &first) {
        return EvidenceGate::Proven {
            mac: mac.clone(),
            by: ProvenBy::Ca(issuer.to_owned()),
        };
    }
    match mode {
        TpmMode::Required => EvidenceGate::AwaitApproval { mac: first },
        _ => EvidenceGate::TokenDecides { mac: first },
    }
}

/// A request without TPM proof, for the machine `mac` (a boot token's MAC, else each MAC the
/// request names): `Err` with the MAC whose enrolment demands proof, or `None` under `required`.
pub fn gate_plain<'a>(
    mode: TpmMode,
    macs: impl IntoIterator<Item = &'a str>,
    approved: &BTreeMap<String, Approval>,
) -> Result<(), Option<String>> {
    match mode {
        TpmMode::Off => Ok(()),
        TpmMode::Required => Err(None),
        TpmMode::WhenEnrolled => match macs.into_iter().find(|m| bound_ek(approved, m).is_some()) {
            Some(m) => Err(Some(m.to_owned())),
            None => Ok(()),
        },
    }
}

/// Step 2, after the proof: whether the machine proven at step 1 is still allowed (its
/// enrolment may have been revoked, or rebound to a new TPM, in between).
pub fn still_proven(
    approved: &BTreeMap<String, Approval>,
    mac: &str,
    ek: &str,
    by: &ProvenBy,
) -> bool {
    match by {
        ProvenBy::Enrolment => bound_ek(approved, mac) == Some(ek),
        ProvenBy::Ca(_) => bound_ek(approved, mac).is_none_or(|b| b == ek),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "52:54:00:00:00:0a";
    const B: &str = "52:54:00:00:00:0b";
    const EK1: &str = "sha256:11";
    const EK2: &str = "sha256:22";

    fn approvals(list: &[(&str, Option<&str>)]) -> BTreeMap<String, Approval> {
        list.iter()
            .map(|(m, ek)| {
                (
                    m.to_string(),
                    Approval {
                        approved_at: "t".into(),
                        ek_fingerprint: ek.map(str::to_owned),
                        ek_issuer: None,
                    },
                )
            })
            .collect()
    }

    fn macs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn evidence_table() {
        use EvidenceGate::*;
        use TpmMode::*;
        let bound = approvals(&[(A, Some(EK1)), (B, None)]);
        let proven = |m: &str| Proven {
            mac: m.into(),
            by: ProvenBy::Enrolment,
        };
        type Case<'a> = (TpmMode, Vec<String>, &'a str, Option<&'a str>, EvidenceGate);
        let cases: Vec<Case> = vec![
            (Required, macs(&[A]), EK1, None, proven(A)),
            (WhenEnrolled, macs(&[A]), EK1, None, proven(A)),
            // The EK identifies the machine even when its MAC changed.
            (Required, macs(&["52:54:00:00:00:99"]), EK1, None, proven(A)),
            // Another TPM claiming an enrolled MAC, in every mode but off, CA or not.
            (
                Required,
                macs(&[A]),
                EK2,
                None,
                EkMismatch { mac: A.into() },
            ),
            (
                WhenEnrolled,
                macs(&[B, A]),
                EK2,
                Some("CA"),
                EkMismatch { mac: A.into() },
            ),
            (Off, macs(&[A]), EK2, None, Ignored),
            // Approved without an EK.
            (
                WhenEnrolled,
                macs(&[B]),
                EK2,
                None,
                TokenDecides {
                    mac: Some(B.into()),
                },
            ),
            (
                Required,
                macs(&[B]),
                EK2,
                None,
                AwaitApproval {
                    mac: Some(B.into()),
                },
            ),
            // A CA-certified EK counts as approved without a per-machine approve.
            (
                Required,
                macs(&["52:54:00:00:00:99"]),
                EK2,
                Some("CN=vendor"),
                Proven {
                    mac: "52:54:00:00:00:99".into(),
                    by: ProvenBy::Ca("CN=vendor".into()),
                },
            ),
            (
                Required,
                macs(&[]),
                EK2,
                Some("CN=vendor"),
                AwaitApproval { mac: None },
            ),
        ];
        for (i, (mode, m, ek, ca, want)) in cases.into_iter().enumerate() {
            assert_eq!(gate_evidence(mode, &m, &bound, ek, ca), want, "case {i}");
        }
    }

    #[test]
    fn a_bound_mac_never_again_gets_a_key_without_proof() {
        let bound = approvals(&[(A, Some(EK1)), (B, None)]);
        assert_eq!(
            gate_plain(TpmMode::WhenEnrolled, [B, A], &bound),
            Err(Some(A.into()))
        );
        assert_eq!(gate_plain(TpmMode::WhenEnrolled, [B], &bound), Ok(()));
        assert_eq!(gate_plain(TpmMode::Required, [B], &bound), Err(None));
        assert_eq!(gate_plain(TpmMode::Off, [A], &bound), Ok(()));
    }

    #[test]
    fn a_revoked_or_rebound_enrolment_is_no_longer_proven() {
        let bound = approvals(&[(A, Some(EK1))]);
        assert!(still_proven(&bound, A, EK1, &ProvenBy::Enrolment));
        assert!(!still_proven(&bound, A, EK2, &ProvenBy::Enrolment));
        assert!(!still_proven(
            &BTreeMap::new(),
            A,
            EK1,
            &ProvenBy::Enrolment
        ));
        let ca = ProvenBy::Ca("CN=v".into());
        assert!(still_proven(&BTreeMap::new(), B, EK2, &ca));
        assert!(!still_proven(&bound, A, EK2, &ca));
    }

    #[test]
    fn modes_read_and_print_their_words() {
        for m in [TpmMode::Required, TpmMode::WhenEnrolled, TpmMode::Off] {
            assert_eq!(TpmMode::parse(m.word()), Some(m));
        }
        assert_eq!(TpmMode::parse("yes"), None);
        assert_eq!(TpmMode::default(), TpmMode::WhenEnrolled);
    }
}
