//! Enrolment of netbooting machines. A MAC the provisioner does not know yet is put on the
//! pending list (`netboot-pending.json`, written by the server only) instead of being silently
//! refused; an admin approves it once with `tailjoin-provisioner approve MAC`, which adds it to
//! `netboot-approved.json` (written by the CLI only). The server re-reads the approved list on
//! every boot request, so an approval or revocation takes effect without a restart.
//!
//! A machine with a TPM shows its endorsement key (EK) when it asks for its key; the pending list
//! keeps the EK's fingerprint (and its certificate's issuer), and `approve MAC` binds that EK to
//! the MAC: from then on only that TPM gets the MAC's keys (`netboot.tpm`, [`crate::tpm_gate`]).
//! A new TPM or mainboard means `approve MAC` again.

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
    /// The EK bound to this MAC (`sha256:…`), when the machine showed its TPM before approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_fingerprint: Option<String>,
    /// That EK certificate's issuer, where the TPM holds a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_issuer: Option<String>,
}

/// An EK a machine showed: its fingerprint and its certificate's issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEk {
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// What `approve` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// Newly approved, with the EK it showed bound (if it showed one).
    New { ek: Option<String> },
    /// Approved before; now bound to the EK it showed (`replaced`: the EK bound before).
    EkBound {
        ek: String,
        replaced: Option<String>,
    },
    /// Approved before, with this EK (or none shown): nothing changed.
    Already { ek: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMac {
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub client: String,
    /// The TPM the machine showed with its last key request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek: Option<ShownEk>,
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

/// An EK fingerprint typed by an admin (`approve --ek`), or an error saying what it must look like.
pub fn parse_admin_ek(raw: &str) -> Result<ShownEk, String> {
    let fp = raw.trim().to_ascii_lowercase();
    let ok = fp
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(format!(
            "{raw:?} is not an EK fingerprint; write it as sha256: and 64 hex digits, as `tailjoin-provisioner pending` shows it (the digest in the name `tpm2_readpublic` prints for the EK, after 000b)"
        ));
    }
    Ok(ShownEk {
        fingerprint: fp,
        issuer: None,
    })
}

/// The approved MACs (absent file: none).
pub fn approved(state_dir: &Path) -> Result<BTreeMap<String, Approval>, String> {
    parse_doc::<ApprovedDoc>(&state_dir.join(APPROVED_FILE)).map(|d| d.macs)
}

/// Adds `mac` to the approved list, bound to `ek` (the EK it showed, from the pending list) when
/// given; an approved MAC is re-bound to a newly shown EK (a replaced TPM or mainboard).
pub fn approve(
    state_dir: &Path,
    mac: &str,
    now: &str,
    ek: Option<&ShownEk>,
) -> Result<Approved, String> {
    let path = state_dir.join(APPROVED_FILE);
    let mut doc: ApprovedDoc = parse_doc(&path)?;
    let outcome = approve_pure(&mut doc.macs, mac, now, ek);
    if !matches!(outcome, Approved::Already { .. }) {
        doc.version = 1;
        save_doc(&path, &doc)?;
    }
    Ok(outcome)
}

fn approve_pure(
    map: &mut BTreeMap<String, Approval>,
    mac: &str,
    now: &str,
    ek: Option<&ShownEk>,
) -> Approved {
    let fingerprint = ek.map(|e| e.fingerprint.clone());
    match map.get_mut(mac) {
        None => {
            map.insert(
                mac.to_owned(),
                Approval {
                    approved_at: now.to_owned(),
                    ek_fingerprint: fingerprint.clone(),
                    ek_issuer: ek.and_then(|e| e.issuer.clone()),
                },
            );
            Approved::New { ek: fingerprint }
        }
        Some(a) => match (ek, &a.ek_fingerprint) {
            (Some(shown), bound) if bound.as_deref() != Some(shown.fingerprint.as_str()) => {
                let replaced = a.ek_fingerprint.replace(shown.fingerprint.clone());
                a.ek_issuer = shown.issuer.clone();
                a.approved_at = now.to_owned();
                Approved::EkBound {
                    ek: shown.fingerprint.clone(),
                    replaced,
                }
            }
            _ => Approved::Already {
                ek: a.ek_fingerprint.clone(),
            },
        },
    }
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

    /// Records the EK a machine showed with its key request (`mac`: the MAC it named first).
    /// `Ok(true)` when this MAC and EK were not on the list together before.
    pub fn note_ek(
        &mut self,
        mac: &str,
        client: &str,
        now: &str,
        ek: &ShownEk,
    ) -> Result<bool, String> {
        note_pure(&mut self.doc.macs, mac, client, now);
        let entry = self.doc.macs.get_mut(mac);
        let first = entry.as_ref().is_some_and(|e| e.ek.as_ref() != Some(ek));
        if let Some(e) = entry {
            e.ek = Some(ek.clone());
        }
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
            ek: None,
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
        assert_eq!(
            approve(d.path(), &mac, "t1", None).unwrap(),
            Approved::New { ek: None }
        );
        assert_eq!(
            approve(d.path(), &mac, "t2", None).unwrap(),
            Approved::Already { ek: None }
        );
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
    fn approve_binds_the_ek_shown_and_rebinds_a_replaced_tpm() {
        let ek = |f: &str| ShownEk {
            fingerprint: f.into(),
            issuer: Some("CN=maker".into()),
        };
        let mut m = BTreeMap::new();
        assert_eq!(
            approve_pure(&mut m, "a", "t1", Some(&ek("sha256:1"))),
            Approved::New {
                ek: Some("sha256:1".into())
            }
        );
        assert_eq!(m["a"].ek_issuer.as_deref(), Some("CN=maker"));
        assert_eq!(
            approve_pure(&mut m, "a", "t2", Some(&ek("sha256:1"))),
            Approved::Already {
                ek: Some("sha256:1".into())
            }
        );
        assert_eq!(
            approve_pure(&mut m, "a", "t3", None),
            Approved::Already {
                ek: Some("sha256:1".into())
            },
            "approving again without a shown EK keeps the binding"
        );
        assert_eq!(
            approve_pure(&mut m, "a", "t4", Some(&ek("sha256:2"))),
            Approved::EkBound {
                ek: "sha256:2".into(),
                replaced: Some("sha256:1".into())
            }
        );
        approve_pure(&mut m, "b", "t5", None);
        assert_eq!(
            approve_pure(&mut m, "b", "t6", Some(&ek("sha256:3"))),
            Approved::EkBound {
                ek: "sha256:3".into(),
                replaced: None
            }
        );
        // The file of an older provisioner (no EK fields) still reads.
        let old: ApprovedDoc =
            serde_json::from_str(r#"{"version":1,"macs":{"a":{"approved_at":"t"}}}"#).unwrap();
        assert_eq!(old.macs["a"].ek_fingerprint, None);
    }

    #[test]
    fn an_admin_typed_ek_must_be_a_sha256_fingerprint() {
        let fp = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(
            parse_admin_ek(&fp).unwrap().fingerprint,
            fp.to_ascii_lowercase()
        );
        for bad in [
            "",
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            assert!(
                parse_admin_ek(bad).unwrap_err().contains("64 hex digits"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_pending_list_keeps_the_ek_a_machine_showed() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Pending::open(d.path()).unwrap();
        let ek = ShownEk {
            fingerprint: "sha256:1".into(),
            issuer: None,
        };
        assert!(p.note_ek("a", "10.0.0.1", "t1", &ek).unwrap());
        assert!(!p.note_ek("a", "10.0.0.1", "t2", &ek).unwrap());
        assert_eq!(pending(d.path()).unwrap()["a"].ek, Some(ek));
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
