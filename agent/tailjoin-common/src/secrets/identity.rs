//! Who this machine is, as sent to a provisioning server with a POST: hostname, machine id,
//! boot id and MAC addresses. None of it is secret; the server decides whether to hand out a key.

use std::path::Path;

/// Who this machine is: the body the agent POSTs to a provisioning server.
pub use crate::wire::KeyRequest as MachineIdentity;

impl MachineIdentity {
    /// Reads the identity from the running system; missing pieces are left empty.
    pub fn gather() -> Self {
        Self::gather_from(Path::new("/"))
    }

    /// The same, under another root (tests).
    pub fn gather_from(root: &Path) -> Self {
        let read = |p: &str| {
            crate::fs_read::read_text(&root.join(p), 4096)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let mut macs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) {
            for e in entries.flatten() {
                let addr =
                    crate::fs_read::read_text(&e.path().join("address"), 4096).unwrap_or_default();
                macs.push(addr.trim().to_owned());
            }
        }
        MachineIdentity {
            hostname: read("proc/sys/kernel/hostname"),
            machine_id: read("etc/machine-id"),
            boot_id: read("proc/sys/kernel/random/boot_id"),
            mac_addresses: hardware_macs(macs),
            tpm: None,
            tpm_proof: None,
        }
    }
}

/// Keeps real, unique hardware addresses: drops loopback's all-zero address and malformed ones,
/// lower-cases and sorts.
pub fn hardware_macs(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = raw
        .into_iter()
        .map(|m| m.to_ascii_lowercase())
        .filter(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
                && m != "00:00:00:00:00:00"
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_macs_are_kept() {
        let macs = hardware_macs(vec![
            "00:00:00:00:00:00".into(),
            "52:54:00:12:34:56".into(),
            "AA:BB:CC:DD:EE:FF".into(),
            "52:54:00:12:34:56".into(),
            "not-a-mac".into(),
            String::new(),
        ]);
        assert_eq!(macs, vec!["52:54:00:12:34:56", "aa:bb:cc:dd:ee:ff"]);
    }

    #[test]
    fn identity_is_read_from_the_system_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        w("proc/sys/kernel/hostname", "rack1-node7\n");
        w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        w("proc/sys/kernel/random/boot_id", "b00t\n");
        w("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        w("sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        let id = MachineIdentity::gather_from(d.path());
        assert_eq!(id.hostname, "rack1-node7");
        assert_eq!(id.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(id.boot_id, "b00t");
        assert_eq!(id.mac_addresses, vec!["52:54:00:12:34:56"]);
    }
}
