//! `tailjoin-provisioner --config FILE pending|approve MAC|revoke MAC`: the admin's side of
//! enrolment. It reads the configuration for the state directory and edits only the approved
//! list; the running server re-reads that list on every boot request.

use super::enrol::{self, Approved, PendingMac};
use crate::cli::ProvisionAction;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;
use tailjoin_common::error::exit;
use tailjoin_common::time::rfc3339;

pub fn main(config_path: &Path, action: &ProvisionAction) -> u8 {
    let settings = match super::load(config_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tailjoin-provisioner: {e}");
            return exit::CONFIG;
        }
    };
    let Some(nb) = settings.netboot.as_ref() else {
        eprintln!(
            "tailjoin-provisioner: {} has no netboot section, so there is no enrolment to manage; add \"netboot\" to the configuration",
            config_path.display()
        );
        return exit::CONFIG;
    };
    let dir = &settings.state_dir;
    let result = match action {
        ProvisionAction::Pending { json } => list_pending(dir, *json),
        ProvisionAction::Approve { mac, ek } => enrol::parse_admin_mac(mac).and_then(|mac| {
            let shown = match ek {
                Some(fp) => Some(enrol::parse_admin_ek(fp)?),
                None => enrol::pending(dir)?.remove(&mac).and_then(|p| p.ek),
            };
            let outcome = enrol::approve(dir, &mac, &rfc3339(SystemTime::now()), shown.as_ref())?;
            println!(
                "{mac}: {}; it boots unattended from its next boot request{}",
                approved_words(&outcome),
                if nb.require_approval {
                    ""
                } else {
                    " (netboot.require_approval is false: approval matters only where allow.macs is set)"
                }
            );
            Ok(())
        }),
        ProvisionAction::Revoke { mac } => enrol::parse_admin_mac(mac).and_then(|mac| {
            let was = enrol::revoke(dir, &mac)?;
            let listed = settings
                .allow
                .macs
                .as_ref()
                .is_some_and(|m| m.contains(&mac));
            println!(
                "{mac}: {}{}",
                if was {
                    "approval revoked; its unspent boot tokens are refused from now on"
                } else {
                    "was not approved"
                },
                if listed {
                    "; note: it is also in allow.macs in the configuration, remove it there too"
                } else {
                    ""
                }
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("tailjoin-provisioner: {e}");
            exit::CONFIG
        }
    }
}

fn approved_words(outcome: &Approved) -> String {
    match outcome {
        Approved::New { ek: None } => "approved".into(),
        Approved::New { ek: Some(ek) } => format!("approved, bound to its TPM (EK {ek})"),
        Approved::EkBound { ek, replaced: None } => {
            format!("bound to the TPM it showed (EK {ek}); only that TPM gets its keys from now on")
        }
        Approved::EkBound {
            ek,
            replaced: Some(old),
        } => format!("re-bound to a new TPM (EK {ek}, was {old}); the old TPM gets no more keys"),
        Approved::Already { ek: None } => "approved already".into(),
        Approved::Already { ek: Some(ek) } => format!("approved already, bound to EK {ek}"),
    }
}

/// Pending MACs that are not approved (an approved MAC stays on the server's list until its
/// next boot request), and approved ones whose machine showed a TPM other than the one bound
/// (not bound yet, or replaced): `approve` binds it.
fn waiting(dir: &Path) -> Result<BTreeMap<String, PendingMac>, String> {
    let approved = enrol::approved(dir)?;
    let mut p = enrol::pending(dir)?;
    p.retain(|mac, e| match (approved.get(mac), &e.ek) {
        (None, _) => true,
        (Some(a), Some(ek)) => a.ek_fingerprint.as_deref() != Some(ek.fingerprint.as_str()),
        (Some(_), None) => false,
    });
    Ok(p)
}

fn list_pending(dir: &Path, json: bool) -> Result<(), String> {
    let p = waiting(dir)?;
    if json {
        let list: Vec<serde_json::Value> = p
            .iter()
            .map(|(mac, e)| {
                serde_json::json!({
                    "mac": mac, "first_seen": e.first_seen, "last_seen": e.last_seen,
                    "count": e.count, "client": e.client,
                    "ek_fingerprint": e.ek.as_ref().map(|k| &k.fingerprint),
                    "ek_issuer": e.ek.as_ref().and_then(|k| k.issuer.as_ref()),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "pending": list }));
        return Ok(());
    }
    if p.is_empty() {
        println!("no machine is waiting for approval");
        return Ok(());
    }
    println!(
        "{:<17}  {:<24}  {:<24}  {:>6}  {:<15}  TPM",
        "MAC", "FIRST SEEN", "LAST SEEN", "COUNT", "CLIENT"
    );
    for (mac, e) in &p {
        let tpm = match &e.ek {
            None => "none shown".to_owned(),
            Some(ek) => format!(
                "EK {}{}",
                ek.fingerprint,
                ek.issuer
                    .as_deref()
                    .map(|i| format!(" (certificate by {i})"))
                    .unwrap_or_default()
            ),
        };
        println!(
            "{mac:<17}  {:<24}  {:<24}  {:>6}  {:<15}  {tpm}",
            e.first_seen, e.last_seen, e.count, e.client
        );
    }
    println!(
        "approve one with: tailjoin-provisioner --config FILE approve MAC (this binds the TPM it showed; compare the EK fingerprint with the name `tpm2_readpublic -c ek.ctx` prints on the machine after `tpm2_createek -G rsa -c ek.ctx`, less its leading 000b)"
    );
    Ok(())
}
