//! Who gets a key: the pure checks of a request against the allowlists. Boot tokens are checked
//! by [`super::tokens`], which holds state; this module only says whether one is needed.

use super::config::AllowRules;
use std::net::IpAddr;

/// What a booting machine sends (the agent's POST body), defined once for both programs.
pub use tailjoin_common::wire::KeyRequest;
use tailjoin_common::wire::refusal_kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Network {
        client: IpAddr,
    },
    Mac,
    TokenMissing,
    TokenUnknown,
    TokenUsed {
        label: String,
    },
    TokenInFlight {
        label: String,
    },
    /// A netboot-issued token whose time ran out.
    TokenExpired {
        label: String,
    },
    /// A netboot-issued token replaced by a newer one for the same MAC (or its MAC was revoked).
    TokenRevoked {
        label: String,
    },
    /// A netboot-issued token presented by a machine that does not report the MAC it was issued for.
    /// netboot.l2_check: the request did not come from the MAC its token is bound to.
    L2 {
        mac: String,
        refusal: crate::l2_check::L2Refusal,
    },
    TokenOtherMac {
        label: String,
    },
    /// A MAC booted without approval (for its TPM to prove it) asked without TPM proof.
    NotApproved {
        mac: String,
    },
    /// `netboot.tpm`: this machine gets keys only with TPM proof (`mac`: the MAC enrolled with
    /// a TPM; `None` when every machine must prove, "required").
    TpmRequired {
        mac: Option<String>,
    },
    /// A MAC the request names is enrolled with another TPM.
    EkMismatch {
        mac: String,
        shown: String,
    },
    /// The requester's TPM did not unwrap the credential.
    ActivationFailed,
    /// The challenge answered is not open: never opened, answered already, or expired.
    TpmChallengeUnknown,
    /// The TPM parts of the request cannot be used.
    TpmMalformed(String),
    /// Too many TPM challenges outstanding.
    TpmBusy,
}

impl Refusal {
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::TokenMissing => 401,
            Refusal::TokenInFlight { .. } | Refusal::TpmChallengeUnknown => 409,
            Refusal::TpmMalformed(_) => 400,
            Refusal::TpmBusy => 503,
            _ => 403,
        }
    }

    /// Short machine-readable reason, for the audit log and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Network { .. } => "network_not_allowed",
            Refusal::Mac => "mac_not_allowed",
            Refusal::TokenMissing => "boot_token_missing",
            Refusal::TokenUnknown => refusal_kind::BOOT_TOKEN_UNKNOWN,
            Refusal::TokenUsed { .. } => refusal_kind::BOOT_TOKEN_USED,
            Refusal::TokenInFlight { .. } => "boot_token_in_use",
            Refusal::TokenExpired { .. } => refusal_kind::BOOT_TOKEN_EXPIRED,
            Refusal::TokenRevoked { .. } => refusal_kind::BOOT_TOKEN_REVOKED,
            Refusal::TokenOtherMac { .. } => "boot_token_other_mac",
            Refusal::L2 { refusal, .. } => refusal.kind(),
            Refusal::TpmRequired { .. } => "tpm-required",
            Refusal::NotApproved { .. } => "mac_pending_approval",
            Refusal::EkMismatch { .. } => "ek-mismatch",
            Refusal::ActivationFailed => "activation-failed",
            Refusal::TpmChallengeUnknown => "tpm-challenge-unknown",
            Refusal::TpmMalformed(_) => "tpm-malformed",
            Refusal::TpmBusy => "tpm-busy",
        }
    }

    /// What the machine is told (and the log says). Never the token.
    pub fn message(&self) -> String {
        match self {
            Refusal::Network { client } => {
                format!("refused: the client address {client} is in none of allow.networks")
            }
            Refusal::Mac => "refused: none of the machine's MAC addresses is in allow.macs".into(),
            Refusal::TokenMissing => {
                "refused: a boot token is required (Authorization: Bearer TOKEN; tailjoin.boot_token= on the kernel command line)".into()
            }
            Refusal::TokenUnknown => "refused: the boot token is not one this provisioner knows: never issued here (another provisioner's, or mistyped), or expired more than a day ago and forgotten; a netbooted machine gets a fresh one at its next boot".into(),
            Refusal::TokenUsed { label } => {
                format!("refused: the boot token ({label}) was used already; boot tokens work once")
            }
            Refusal::TokenInFlight { label } => {
                format!("refused: the boot token ({label}) is being used by another request right now")
            }
            Refusal::TokenExpired { label } => {
                format!("refused: the boot token ({label}) has expired; reboot the machine to get a fresh one")
            }
            Refusal::TokenRevoked { label } => {
                format!("refused: the boot token ({label}) was revoked (a newer boot of the machine was issued one, or its MAC was revoked)")
            }
            Refusal::TokenOtherMac { label } => {
                format!("refused: the boot token ({label}) is bound to a MAC address this machine does not report")
            }
            Refusal::L2 { mac, refusal } => refusal.message(mac),
            Refusal::NotApproved { mac } => format!(
                "refused: {mac} is not approved; it booted so that its TPM could prove it (an EK certificate from netboot.tpm_ek_ca_files), and it showed none; to let it in without a TPM run on the provisioner: tailjoin-provisioner approve {mac}"
            ),
            Refusal::TpmRequired { mac: Some(mac) } => format!(
                "refused: {mac} is enrolled with a TPM and gets keys only with proof from that TPM (tailjoin with its TPM reachable; netboot.tpm \"when-enrolled\")"
            ),
            Refusal::TpmRequired { mac: None } => "refused: keys are released only with TPM proof (netboot.tpm \"required\"); the machine's tailjoin must reach its TPM".into(),
            Refusal::EkMismatch { mac, shown } => format!(
                "refused: {mac} is enrolled with another TPM than the one shown (EK {shown}); if its TPM or mainboard was replaced, run on the provisioner: tailjoin-provisioner approve {mac}"
            ),
            Refusal::ActivationFailed => "refused: the TPM did not unwrap the credential (activation failed): this is not the TPM the challenge was made for".into(),
            Refusal::TpmChallengeUnknown => "refused: no such TPM challenge (expired, answered already, or another provisioner's); ask again from the start".into(),
            Refusal::TpmMalformed(why) => format!("refused: the TPM parts of the request cannot be used: {why}"),
            Refusal::TpmBusy => "busy: too many TPM challenges are outstanding; retry later".into(),
        }
    }
}

/// For a netboot-issued token: the network list still applies; the MAC check was made when the
/// token was issued, and the token's own MAC binding is checked by [`super::boot_issue`].
pub fn check_network(rules: &AllowRules, client: IpAddr) -> Result<Vec<&'static str>, Refusal> {
    match &rules.networks {
        Some(nets) if !nets.iter().any(|n| n.contains(client)) => Err(Refusal::Network { client }),
        Some(_) => Ok(vec!["network", "netboot_token"]),
        None => Ok(vec!["netboot_token"]),
    }
}

/// Checks the lists that need no state. Returns which checks matched (for the audit line).
pub fn check_lists(
    rules: &AllowRules,
    client: IpAddr,
    req: &KeyRequest,
    token_present: bool,
) -> Result<Vec<&'static str>, Refusal> {
    let mut matched = Vec::new();
    if let Some(nets) = &rules.networks {
        if !nets.iter().any(|n| n.contains(client)) {
            return Err(Refusal::Network { client });
        }
        matched.push("network");
    }
    if let Some(macs) = &rules.macs {
        if !req.macs().iter().any(|m| macs.contains(m)) {
            return Err(Refusal::Mac);
        }
        matched.push("mac");
    }
    if rules.tokens_required {
        if !token_present {
            return Err(Refusal::TokenMissing);
        }
        matched.push("boot_token");
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn req(macs: &[&str]) -> KeyRequest {
        KeyRequest {
            hostname: "node\x07-1".into(),
            mac_addresses: macs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_configured_list_must_match() {
        let rules = AllowRules {
            macs: Some(vec!["52:54:00:00:00:01".into()]),
            networks: Some(vec![Cidr::parse("10.0.0.0/24").unwrap()]),
            tokens_required: true,
        };
        let inside: IpAddr = "10.0.0.9".parse().unwrap();
        let outside: IpAddr = "10.9.0.9".parse().unwrap();
        let good = req(&["02:00:00:00:00:09", "52:54:00:00:00:01"]);
        assert_eq!(
            check_lists(&rules, inside, &good, true),
            Ok(vec!["network", "mac", "boot_token"])
        );
        assert_eq!(
            check_lists(&rules, outside, &good, true),
            Err(Refusal::Network { client: outside })
        );
        assert_eq!(
            check_lists(&rules, inside, &req(&["52:54:00:00:00:02"]), true),
            Err(Refusal::Mac)
        );
        assert_eq!(
            check_lists(&rules, inside, &good, false),
            Err(Refusal::TokenMissing)
        );
    }

    #[test]
    fn macs_are_compared_normalised() {
        let rules = AllowRules {
            macs: Some(vec!["52:54:00:00:00:0a".into()]),
            ..Default::default()
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_lists(&rules, ip, &req(&["52-54-00-00-00-0A"]), false).is_ok());
        assert!(check_lists(&rules, ip, &req(&[]), false).is_err());
    }

    #[test]
    fn refusals_map_to_statuses_and_never_name_the_token() {
        assert_eq!(Refusal::TokenMissing.http_status(), 401);
        assert_eq!(Refusal::Mac.http_status(), 403);
        let r = Refusal::TokenUsed {
            label: "rack1-node3".into(),
        };
        assert!(r.message().contains("rack1-node3") && r.message().contains("once"));
        assert_eq!(req(&[]).hostname_for_log(), "node-1");
    }
}
