//! Enrolment of netbooting machines. A MAC the provisioner does not know yet is put on the
//! pending list (`netboot-pending.json`, written by the server only) instead of being silently
//! refused; an admin approves it once with `tailjoin-provisioner approve MAC`, which adds it to
//! `netboot-approved.json` (written by the CLI only). The server re-reads the approved list on
//! every boot request, so an approval or revocation takes effect without a restart.

use super::boot_store::read_optional;
use super::config::normalize_mac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tailjoin_common::fs_write::write_atomic;

pub const APPROVED_FILE: &str = "netboot-approved.json";
pub const PENDING_FILE: &str = "netboot-pending.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approved_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMac {
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub client: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ApprovedDoc {
    version: u32,
    macs: BTreeMap<String, Approval>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PendingDoc {
    version: u32,
    macs: BTreeMap<String, PendingMac>,
}

fn parse_doc<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, String> {
    match read_optional(path)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a tailjoin enrolment list ({e}); fix or remove it",
                path.display()
            )
        }),
    }
}

fn save_doc<T: Serialize>(path: &Path, doc: &T) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(doc).map_err(|e| e.to_string())?;
    write_atomic(path, &text, 0o644).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A MAC typed by an admin, normalised, or an error saying what is wrong.
pub fn parse_admin_mac(raw: &str) -> Result<String, String> {
    normalize_mac(raw).ok_or_else(|| {
        format!(
            "{raw:?} is not a MAC address; write it as six hex pairs, e.g. 52:54:00:12:34:56 (as `tailjoin-provisioner pending` lists it)"
        )
    })
}

/// The approved MACs (absent file: none).
pub fn approved(state_dir: &Path) -> Result<BTreeMap<String, Approval>, String> {
    parse_doc::<ApprovedDoc>(&state_dir.join(APPROVED_FILE)).map(|d| d.macs)
}

/// Adds `mac` to the approved list. `Ok(false)` if it was approved already.
pub fn approve(state_dir: &Path, mac: &str, now: &str) -> Result<bool, String> {
    let path = state_dir.join(APPROVED_FILE);
    let mut doc: ApprovedDoc = parse_doc(&path)?;
    if doc.macs.contains_key(mac) {
        return Ok(false);
    }
    doc.version = 1;
    doc.macs.insert(
        mac.to_owned(),
        Approval {
            approved_at: now.to_owned(),
        },
    );
    save_doc(&path, &doc).map(|()| true)
}

/// Removes `mac` from the approved list. `Ok(false)` if it was not on it.
pub fn revoke(state_dir: &Path, mac: &str) -> Result<bool, String> {
    let path = state_dir.join(APPROVED_FILE);
    let mut doc: ApprovedDoc = parse_doc(&path)?;
    if doc.macs.remove(mac).is_none() {
        return Ok(false);
    }
    doc.version = 1;
    save_doc(&path, &doc).map(|()| true)
}

/// The pending list as the server last wrote it.
pub fn pending(state_dir: &Path) -> Result<BTreeMap<String, PendingMac>, String> {
    parse_doc::<PendingDoc>(&state_dir.join(PENDING_FILE)).map(|d| d.macs)
}

/// The server's copy of the pending list.
#[derive(Debug)]
pub struct Pending {
    doc: PendingDoc,
    path: PathBuf,
}

impl Pending {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join(PENDING_FILE);
        Ok(Pending {
            doc: parse_doc(&path)?,
            path,
        })
    }

    /// Records a boot request of an unknown MAC; `Ok(true)` the first time the MAC is seen.
    pub fn note(&mut self, mac: &str, client: &str, now: &str) -> Result<bool, String> {
        let first = note_pure(&mut self.doc.macs, mac, client, now);
        self.doc.version = 1;
        save_doc(&self.path, &self.doc)?;
        Ok(first)
    }

    /// The MAC was let through: it is no longer pending.
    pub fn forget(&mut self, mac: &str) -> Result<(), String> {
        if self.doc.macs.remove(mac).is_some() {
            save_doc(&self.path, &self.doc)?;
        }
        Ok(())
    }
}

/// Most MACs kept pending: beyond it, the oldest-seen is forgotten (a flood of made-up MACs
/// must not grow the file without bound).
pub const MAX_PENDING: usize = 1024;

fn note_pure(map: &mut BTreeMap<String, PendingMac>, mac: &str, client: &str, now: &str) -> bool {
    if let Some(p) = map.get_mut(mac) {
        p.last_seen = now.to_owned();
        p.count = p.count.saturating_add(1);
        p.client = client.to_owned();
        return false;
    }
    while map.len() >= MAX_PENDING {
        let oldest = map
            .iter()
            .min_by(|a, b| a.1.last_seen.cmp(&b.1.last_seen))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => map.remove(&k),
            None => break,
        };
    }
    map.insert(
        mac.to_owned(),
        PendingMac {
            first_seen: now.to_owned(),
            last_seen: now.to_owned(),
            count: 1,
            client: client.to_owned(),
        },
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_revoke_and_pending_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mac = parse_admin_mac("52-54-00-12-34-5A").unwrap();
        assert_eq!(mac, "52:54:00:12:34:5a");
        assert!(
            parse_admin_mac("52:54:00")
                .unwrap_err()
                .contains("six hex pairs")
        );
        assert!(approve(d.path(), &mac, "t1").unwrap());
        assert!(!approve(d.path(), &mac, "t2").unwrap());
        assert_eq!(approved(d.path()).unwrap()[&mac].approved_at, "t1");
        assert!(revoke(d.path(), &mac).unwrap());
        assert!(!revoke(d.path(), &mac).unwrap());
        assert!(approved(d.path()).unwrap().is_empty());

        let mut p = Pending::open(d.path()).unwrap();
        assert!(p.note(&mac, "10.0.2.15", "t1").unwrap());
        assert!(!p.note(&mac, "10.0.2.16", "t2").unwrap());
        let listed = pending(d.path()).unwrap();
        assert_eq!(listed[&mac].count, 2);
        assert_eq!(
            (
                listed[&mac].first_seen.as_str(),
                listed[&mac].client.as_str()
            ),
            ("t1", "10.0.2.16")
        );
        p.forget(&mac).unwrap();
        assert!(pending(d.path()).unwrap().is_empty());
        std::fs::write(d.path().join(APPROVED_FILE), "[").unwrap();
        assert!(approved(d.path()).unwrap_err().contains("fix or remove"));
    }

    #[test]
    fn the_pending_list_is_bounded() {
        let mut m = BTreeMap::new();
        for i in 0..MAX_PENDING + 5 {
            note_pure(&mut m, &format!("mac{i}"), "c", &format!("{i:08}"));
        }
        assert_eq!(m.len(), MAX_PENDING);
        assert!(!m.contains_key("mac0") && m.contains_key(&format!("mac{}", MAX_PENDING + 4)));
    }
}
