//! The L2 check (`netboot.l2_check`): where the provisioner shares the machines' Ethernet
//! segment (the pixiecore box usually does), the MAC a request names must be the MAC the kernel
//! saw the request come from: the neighbour-table (ARP) entry of the client's IPv4 address.
//!
//! What it stops: a LAN neighbour asking for the boot (and so the token) of another machine's
//! MAC, or presenting another machine's token, from its own network card. What it does not stop:
//! a neighbour that changes its own MAC to the victim's (MAC spoofing) — the kernel then sees the
//! victim's MAC; only the TPM path stops that. It does not apply where the provisioner cannot see
//! the machine's MAC: requests from loopback (pixiecore's API calls come from pixiecore itself)
//! and requests that crossed a router (no neighbour entry: refused, since the admin said the
//! machines share the segment). IPv4 only: an IPv6 client has no entry in /proc/net/arp.
//!
//! The decision is pure ([`check`]); [`read_neighbours`] reads the table of the provisioner's own
//! network namespace.

use std::net::{IpAddr, Ipv4Addr};

/// ATF_COM: the entry is complete (the MAC is known).
const ATF_COM: u32 = 0x2;

/// One complete neighbour entry: an IPv4 address and its MAC (lower case, colons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L2Refusal {
    /// No complete neighbour entry for the client: not on this segment (or IPv6).
    NoNeighbour { client: IpAddr },
    /// The client's MAC on the wire is not the one the request names.
    Mismatch { client: IpAddr, seen: String },
}

impl L2Refusal {
    pub fn kind(&self) -> &'static str {
        match self {
            L2Refusal::NoNeighbour { .. } => "l2_no_neighbour",
            L2Refusal::Mismatch { .. } => "l2_mac_mismatch",
        }
    }

    /// What the machine and the log are told, naming the MAC the request claimed.
    pub fn message(&self, claimed: &str) -> String {
        match self {
            L2Refusal::NoNeighbour { client } => format!(
                "refused {claimed}: the provisioner has no IPv4 neighbour entry for {client}, so it cannot check the request's MAC on the wire (netboot.l2_check needs the machines on the provisioner's own segment)"
            ),
            L2Refusal::Mismatch { client, seen } => format!(
                "refused {claimed}: the request from {client} came from the network card {seen} (netboot.l2_check)"
            ),
        }
    }
}

/// Parses /proc/net/arp: the complete entries; the header and malformed lines are skipped.
pub fn parse_proc_net_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ip: Ipv4Addr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            let mac = tailjoin_common::wire::normalize_mac(f.get(3)?)?;
            (flags & ATF_COM != 0).then_some(Neighbour { ip, mac })
        })
        .collect()
}

/// The provisioner's own neighbour table (IPv4).
pub fn read_neighbours() -> std::io::Result<Vec<Neighbour>> {
    Ok(parse_proc_net_arp(&std::fs::read_to_string(
        "/proc/net/arp",
    )?))
}

/// Whether a request from `client` may name `claimed_mac` (normalised). Loopback clients are not
/// checked (see the module's text).
pub fn check(client: IpAddr, claimed_mac: &str, table: &[Neighbour]) -> Result<(), L2Refusal> {
    let v4 = match client {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if client.is_loopback() || v4.is_some_and(|a| a.is_loopback()) {
        return Ok(());
    }
    let Some(entry) = v4.and_then(|a| table.iter().find(|n| n.ip == a)) else {
        return Err(L2Refusal::NoNeighbour { client });
    };
    if entry.mac == claimed_mac {
        Ok(())
    } else {
        Err(L2Refusal::Mismatch {
            client,
            seen: entry.mac.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
10.231.0.2       0x1         0x2         52:54:00:aa:00:02     *        veth0
10.231.0.3       0x1         0x0         00:00:00:00:00:00     *        veth0
10.231.0.4       0x1         0x6         52:54:00:AA:00:04     *        veth0
garbage line
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn complete_entries_are_read_and_incomplete_ones_skipped() {
        let t = parse_proc_net_arp(ARP);
        assert_eq!(
            t,
            vec![
                Neighbour {
                    ip: "10.231.0.2".parse().unwrap(),
                    mac: "52:54:00:aa:00:02".into()
                },
                Neighbour {
                    ip: "10.231.0.4".parse().unwrap(),
                    mac: "52:54:00:aa:00:04".into()
                },
            ]
        );
    }

    #[test]
    fn the_claimed_mac_must_be_the_one_on_the_wire() {
        let t = parse_proc_net_arp(ARP);
        assert_eq!(check(ip("10.231.0.2"), "52:54:00:aa:00:02", &t), Ok(()));
        assert_eq!(
            check(ip("::ffff:10.231.0.2"), "52:54:00:aa:00:02", &t),
            Ok(())
        );
        let e = check(ip("10.231.0.2"), "52:54:00:aa:00:04", &t).unwrap_err();
        assert_eq!(e.kind(), "l2_mac_mismatch");
        assert!(e.message("52:54:00:aa:00:04").contains("52:54:00:aa:00:02"));
        // Incomplete, absent, routed or IPv6: no entry, refused.
        for c in ["10.231.0.3", "10.9.9.9", "fd00::2"] {
            assert_eq!(
                check(ip(c), "52:54:00:aa:00:02", &t).unwrap_err().kind(),
                "l2_no_neighbour",
                "{c}"
            );
        }
    }

    #[test]
    fn loopback_is_not_checked() {
        for c in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(check(ip(c), "52:54:00:aa:00:09", &[]), Ok(()), "{c}");
        }
    }
}
