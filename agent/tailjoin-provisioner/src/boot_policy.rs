//! Who gets a boot (a netboot token): the pure decision for one boot request, and what a refused
//! machine is told on its console.

use super::config::{AllowRules, normalize_mac};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootRefusal {
    /// The `mac` parameter is not a MAC address (shown sanitised).
    BadMac {
        shown: String,
    },
    Network {
        mac: String,
        client: IpAddr,
    },
    /// Not in allow.macs and not approved: put on the pending list.
    Pending {
        mac: String,
    },
    RateLimited {
        mac: String,
    },
    /// netboot.l2_check: the request did not come from the MAC it names.
    L2 {
        mac: String,
        refusal: crate::l2_check::L2Refusal,
    },
}

impl BootRefusal {
    pub fn kind(&self) -> &'static str {
        match self {
            BootRefusal::BadMac { .. } => "mac_malformed",
            BootRefusal::Network { .. } => "network_not_allowed",
            BootRefusal::Pending { .. } => "mac_pending_approval",
            BootRefusal::RateLimited { .. } => "rate_limited",
            BootRefusal::L2 { refusal, .. } => refusal.kind(),
        }
    }

    pub fn mac(&self) -> Option<&str> {
        match self {
            BootRefusal::BadMac { .. } => None,
            BootRefusal::Network { mac, .. }
            | BootRefusal::Pending { mac }
            | BootRefusal::RateLimited { mac }
            | BootRefusal::L2 { mac, .. } => Some(mac),
        }
    }

    /// One line for the machine's console: the reason, naming the MAC, and the fix.
    pub fn console_line(&self) -> String {
        match self {
            BootRefusal::BadMac { shown } => format!(
                "tailjoin: refused: {shown:?} is not a MAC address; chain to /v1/boot.ipxe?mac=${{net0/mac}}"
            ),
            BootRefusal::Network { mac, client } => format!(
                "tailjoin: refused {mac}: the address {client} is in none of the provisioner's allow.networks; add it there"
            ),
            BootRefusal::Pending { mac } => format!(
                "tailjoin: {mac} is waiting for approval; on the provisioner run: tailjoin-provisioner approve {mac}"
            ),
            BootRefusal::RateLimited { mac } => {
                format!("tailjoin: too many boot requests just now; {mac} will ask again")
            }
            BootRefusal::L2 { mac, refusal } => format!("tailjoin: {}", refusal.message(mac)),
        }
    }
}

/// A `mac` parameter as it may be shown on a console or in a log: printable, bounded, and
/// without characters that mean something to iPXE.
pub fn shown(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.'))
        .take(32)
        .collect()
}

/// Decides a boot request for the MAC given as `raw_mac` from `client`. Returns the normalised
/// MAC and which checks matched.
pub fn decide(
    rules: &AllowRules,
    require_approval: bool,
    approved: &BTreeMap<String, super::enrol::Approval>,
    client: IpAddr,
    raw_mac: &str,
) -> Result<(String, Vec<&'static str>), BootRefusal> {
    let mac = normalize_mac(raw_mac).ok_or_else(|| BootRefusal::BadMac {
        shown: shown(raw_mac),
    })?;
    let mut matched = Vec::new();
    if let Some(nets) = &rules.networks {
        if !nets.iter().any(|n| n.contains(client)) {
            return Err(BootRefusal::Network { mac, client });
        }
        matched.push("network");
    }
    if rules.macs.as_ref().is_some_and(|m| m.contains(&mac)) {
        matched.push("mac");
    } else if approved.contains_key(&mac) {
        matched.push("approved");
    } else if require_approval || rules.macs.is_some() {
        return Err(BootRefusal::Pending { mac });
    }
    Ok((mac, matched))
}

/// Whether a MAC a token was issued for may still use it (its approval may have been revoked
/// since): the same MAC rule as [`decide`], without the network (checked per request).
pub fn mac_still_allowed(
    rules: &AllowRules,
    require_approval: bool,
    approved: &BTreeMap<String, super::enrol::Approval>,
    mac: &str,
) -> bool {
    rules
        .macs
        .as_ref()
        .is_some_and(|m| m.iter().any(|x| x == mac))
        || approved.contains_key(mac)
        || (!require_approval && rules.macs.is_none())
}

/// The delay before a refused machine asks again: `first` doubling per attempt, capped.
pub fn backoff_secs(first: u64, attempt: u32) -> u64 {
    let cap = super::netboot_config::MAX_RETRY_SECS;
    first
        .checked_mul(1u64.checked_shl(attempt.min(16)).unwrap_or(u64::MAX))
        .unwrap_or(cap)
        .min(cap)
}

/// Spreads a retry delay over 75–125 % of itself (`unit` in [0, 1), from a random source), at
/// least 1 s: after a power cut, machines refused together must not come back together. The
/// doubling and the cap stay what the documentation says on average.
pub fn jittered_secs(secs: u64, unit: f64) -> u64 {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    ((secs as f64) * (0.75 + 0.5 * unit)).round().max(1.0) as u64
}

/// [`backoff_secs`] with jitter from the system's random generator (the middle if it fails).
pub fn retry_delay_secs(first: u64, attempt: u32) -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let unit = match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    };
    jittered_secs(backoff_secs(first, attempt), unit).min(super::netboot_config::MAX_RETRY_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_a_delay_over_three_quarters_to_five_quarters() {
        assert_eq!(jittered_secs(40, 0.0), 30);
        assert_eq!(jittered_secs(40, 0.5), 40);
        assert_eq!(jittered_secs(40, 0.999_999), 50);
        assert_eq!(jittered_secs(1, 0.0), 1);
        assert_eq!(jittered_secs(0, 0.7), 1);
        assert_eq!(jittered_secs(40, f64::NAN), 40);
        assert_eq!(jittered_secs(40, 7.0), 50);
    }

    #[test]
    fn retry_delays_of_a_refused_fleet_are_spread_out() {
        let delays: std::collections::HashSet<u64> =
            (0..200).map(|_| retry_delay_secs(30, 0)).collect();
        assert!(delays.iter().all(|d| (22..=38).contains(d)), "{delays:?}");
        assert!(delays.len() >= 8, "200 machines got only {delays:?}");
    }
    use crate::config::Cidr;
    use crate::enrol::Approval;

    const MAC: &str = "52:54:00:12:34:56";

    /// (rules, require_approval, approved, client, mac) → outcome
    type Case<'a> = (
        &'a AllowRules,
        bool,
        &'a BTreeMap<String, Approval>,
        IpAddr,
        &'a str,
        Result<Vec<&'static str>, BootRefusal>,
    );

    fn approved(m: &[&str]) -> BTreeMap<String, Approval> {
        m.iter()
            .map(|s| {
                (
                    s.to_string(),
                    Approval {
                        ek_fingerprint: None,
                        ek_issuer: None,
                        approved_at: "t".into(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn decisions_table() {
        let lan: IpAddr = "10.0.2.15".parse().unwrap();
        let wan: IpAddr = "192.0.2.1".parse().unwrap();
        let nets = AllowRules {
            networks: Some(vec![Cidr::parse("10.0.2.0/24").unwrap()]),
            ..Default::default()
        };
        let listed = AllowRules {
            macs: Some(vec![MAC.into()]),
            ..Default::default()
        };
        let none = approved(&[]);
        let yes = approved(&[MAC]);
        let pending = Err(BootRefusal::Pending { mac: MAC.into() });
        // (rules, require_approval, approved, client, mac) -> outcome
        let cases: Vec<Case<'_>> = vec![
            (&nets, true, &none, lan, MAC, pending.clone()),
            (
                &nets,
                true,
                &yes,
                lan,
                "52-54-00-12-34-56",
                Ok(vec!["network", "approved"]),
            ),
            (
                &nets,
                true,
                &yes,
                wan,
                MAC,
                Err(BootRefusal::Network {
                    mac: MAC.into(),
                    client: wan,
                }),
            ),
            (&nets, false, &none, lan, MAC, Ok(vec!["network"])),
            (&listed, true, &none, lan, MAC, Ok(vec!["mac"])),
            (
                &listed,
                false,
                &none,
                lan,
                "52:54:00:00:00:01",
                Err(BootRefusal::Pending {
                    mac: "52:54:00:00:00:01".into(),
                }),
            ),
            (
                &nets,
                true,
                &yes,
                lan,
                "not-a-mac\n",
                Err(BootRefusal::BadMac {
                    shown: "not-a-mac".into(),
                }),
            ),
        ];
        for (i, (rules, req, appr, client, mac, want)) in cases.into_iter().enumerate() {
            let got = decide(rules, req, appr, client, mac).map(|(_, m)| m);
            assert_eq!(got, want, "case {i}");
        }
        assert!(mac_still_allowed(&nets, true, &yes, MAC));
        assert!(!mac_still_allowed(&nets, true, &none, MAC));
        assert!(mac_still_allowed(&nets, false, &none, MAC));
        assert!(!mac_still_allowed(
            &listed,
            false,
            &none,
            "52:54:00:00:00:01"
        ));
    }

    #[test]
    fn console_lines_name_the_mac_and_the_fix() {
        let p = BootRefusal::Pending { mac: MAC.into() };
        assert!(
            p.console_line()
                .contains("tailjoin-provisioner approve 52:54:00:12:34:56")
        );
        assert_eq!(shown("a;b$c{d}\"e f"), "abcdef");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let got: Vec<u64> = (0..6).map(|a| backoff_secs(30, a)).collect();
        assert_eq!(got, [30, 60, 120, 240, 300, 300]);
        assert_eq!(backoff_secs(300, u32::MAX), 300);
        assert_eq!(backoff_secs(7, 0), 7);
    }
}
