//! The two steps of a TPM-proven key request (`netboot.tpm`; decisions in
//! [`crate::tpm_gate`], challenges in [`crate::tpm::challenge`]):
//! 1. the machine shows its EK (and certificate) and an AK: the gate decides, and an allowed
//!    machine gets a credential wrapped to that EK and AK;
//! 2. the machine proves its TPM unwrapped it: only then is a key minted, and it goes out sealed
//!    under that credential.

use super::mint_answer::Sealing;
use super::{Held, Provisioner, Reply, reply, retry_later, text};
use crate::audit::AuditLine;
use crate::boot_store::now_unix;
use crate::enrol::ShownEk;
use crate::policy::{KeyRequest, Refusal, check_network};
use crate::tpm::challenge::TpmRefusal;
use crate::tpm::public::TpmPublic;
use crate::tpm_gate::{EvidenceGate, ProvenBy, gate_evidence, still_proven};
use secrecy::SecretString;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tailjoin_common::time::rfc3339;
use tailjoin_common::wire::{
    TpmChallenge, TpmChallengeAnswer, TpmEvidence, TpmProof, from_hex, to_hex,
};

/// What step 1 decided, kept with the challenge for step 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeGrant {
    /// The EK is enrolled (or CA-certified): no token is needed.
    Proven(ProvenBy),
    /// The boot-token path decides; the TPM only seals the key.
    TokenDecides,
}

impl From<TpmRefusal> for Refusal {
    fn from(r: TpmRefusal) -> Self {
        match r {
            TpmRefusal::Malformed(why) => Refusal::TpmMalformed(why),
            TpmRefusal::ActivationFailed => Refusal::ActivationFailed,
            TpmRefusal::ChallengeUnknown => Refusal::TpmChallengeUnknown,
            TpmRefusal::Busy => Refusal::TpmBusy,
        }
    }
}

/// Largest EK certificate read (real ones are 1–2 KiB).
const MAX_EK_CERT: usize = 8 * 1024;

fn unhex(field: &str, text: &str, max: usize) -> Result<Vec<u8>, Refusal> {
    match from_hex(text) {
        Some(b) if !b.is_empty() && b.len() <= max => Ok(b),
        Some(_) => Err(Refusal::TpmMalformed(format!(
            "{field} is empty or longer than {max} bytes"
        ))),
        None => Err(Refusal::TpmMalformed(format!("{field} is not hex"))),
    }
}

impl Provisioner {
    /// Step 1: the machine shows its TPM.
    pub(super) fn tpm_step1(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        evidence: &TpmEvidence,
    ) -> Reply {
        let refuse = |r: &Refusal, ek: Option<String>| self.refuse_tpm(client, ident, r, ek);
        if let Err(r) = check_network(&self.settings.allow, client) {
            return refuse(&r, None);
        }
        let parsed = unhex("tpm.ek_public", &evidence.ek_public, 1024).and_then(|ek_raw| {
            let ak_raw = unhex("tpm.ak_public", &evidence.ak_public, 1024)?;
            let ek = TpmPublic::parse_tpm2b(&ek_raw, "EK public area")
                .map_err(|e| Refusal::TpmMalformed(e.to_string()))?;
            Ok((ek_raw, ak_raw, ek))
        });
        let (ek_raw, ak_raw, ek) = match parsed {
            Ok(p) => p,
            Err(r) => return refuse(&r, None),
        };
        let fingerprint = ek.fingerprint();
        let cert = match &evidence.ek_certificate {
            None => None,
            Some(h) => match unhex("tpm.ek_certificate", h, MAX_EK_CERT) {
                Ok(c) => Some(c),
                Err(r) => return refuse(&r, Some(fingerprint)),
            },
        };
        let ca_issuer = self.ca_issuer(&ek, cert.as_deref(), &fingerprint);
        let shown = ShownEk {
            fingerprint: fingerprint.clone(),
            issuer: cert.as_deref().and_then(crate::tpm::ek_cert::issuer_of),
        };
        let approved = crate::enrol::approved(&self.settings.state_dir).unwrap_or_else(|e| {
            tracing::error!("{e}; treating no MAC as approved");
            Default::default()
        });
        let macs = ident.macs();
        let gate = gate_evidence(
            self.tpm_mode(),
            &macs,
            &approved,
            &fingerprint,
            ca_issuer.as_deref(),
        );
        let (mac, grant) = match gate {
            EvidenceGate::Proven { mac, by } => (mac, ChallengeGrant::Proven(by)),
            EvidenceGate::TokenDecides { mac } => {
                if let Some(m) = &mac {
                    self.note_shown_ek(client, m, &shown);
                }
                (mac.unwrap_or_default(), ChallengeGrant::TokenDecides)
            }
            EvidenceGate::EkMismatch { mac } => {
                self.note_shown_ek(client, &mac, &shown);
                return refuse(
                    &Refusal::EkMismatch {
                        mac,
                        shown: fingerprint.clone(),
                    },
                    Some(fingerprint),
                );
            }
            EvidenceGate::AwaitApproval { mac: None } => {
                return refuse(&Refusal::TpmRequired { mac: None }, Some(fingerprint));
            }
            EvidenceGate::AwaitApproval { mac: Some(mac) } => {
                return self.await_approval(client, ident, &mac, &shown);
            }
            EvidenceGate::Ignored => {
                return text(
                    500,
                    "internal error: a TPM request reached step 1 with netboot.tpm off",
                );
            }
        };
        let opened = match self.challenges.lock() {
            Ok(mut c) => c.open(
                &mac,
                &ek_raw,
                &ak_raw,
                grant,
                now_unix(),
                &mut rand_core::OsRng,
            ),
            Err(_) => return text(500, "internal error (TPM challenges)"),
        };
        let challenge = match opened {
            Ok(c) => c,
            Err(r) => return refuse(&r.into(), Some(fingerprint)),
        };
        tracing::info!(
            tailjoin_client = %client,
            "TPM challenge for {} ({client}, {mac}, EK {fingerprint})",
            ident.hostname_for_log()
        );
        let answer = TpmChallengeAnswer {
            tpm_challenge: TpmChallenge {
                id: challenge.id,
                id_object: to_hex(&challenge.wrapped.id_object),
                encrypted_secret: to_hex(&challenge.wrapped.encrypted_secret),
                ek_fingerprint: challenge.ek_fingerprint,
            },
        };
        match serde_json::to_string(&answer) {
            Ok(body) => reply(200, "application/json", body),
            Err(_) => text(500, "internal error: cannot encode the challenge"),
        }
    }

    /// Step 2: the machine proves its TPM unwrapped the credential; then the key is minted.
    pub(super) async fn tpm_step2(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        token: Option<SecretString>,
        proof: &TpmProof,
    ) -> Reply {
        let sent = from_hex(&proof.proof).unwrap_or_default();
        let answered = match self.challenges.lock() {
            Ok(mut c) => {
                let ek = c.ek_of(&proof.challenge_id);
                (c.answer(&proof.challenge_id, &sent, now_unix()), ek)
            }
            Err(_) => return text(500, "internal error (TPM challenges)"),
        };
        let proven = match answered {
            (Ok(p), _) => p,
            (Err(r), ek) => return self.refuse_tpm(client, ident, &r.into(), ek),
        };
        let ek = proven.ek_fingerprint.clone();
        let (matched, held) = match &proven.grant {
            ChallengeGrant::Proven(by) => {
                let approved = crate::enrol::approved(&self.settings.state_dir).unwrap_or_default();
                if !still_proven(&approved, &proven.mac, &ek, by) {
                    let r = Refusal::EkMismatch {
                        mac: proven.mac.clone(),
                        shown: ek.clone(),
                    };
                    return self.refuse_tpm(client, ident, &r, Some(ek));
                }
                let mut matched = match check_network(&self.settings.allow, client) {
                    Ok(m) => m,
                    Err(r) => return self.refuse_tpm(client, ident, &r, Some(ek)),
                };
                // Proven by its TPM: no boot token was looked at.
                matched.retain(|m| *m != "netboot_token");
                matched.push(match by {
                    ProvenBy::Enrolment => "tpm_enrolled",
                    ProvenBy::Ca(_) => "tpm_ca",
                });
                (matched, Held::None)
            }
            ChallengeGrant::TokenDecides => match self.authorize_token(client, ident, token) {
                Ok((matched, held)) => {
                    // The token's machine may be enrolled with another TPM than this one.
                    let approved =
                        crate::enrol::approved(&self.settings.state_dir).unwrap_or_default();
                    let bound_elsewhere = match &held {
                        Held::Issued(r) => approved
                            .get(&r.mac)
                            .and_then(|a| a.ek_fingerprint.as_deref())
                            .filter(|b| *b != ek)
                            .map(|_| r.mac.clone()),
                        _ => None,
                    };
                    if let Some(mac) = bound_elsewhere {
                        self.release(held);
                        let r = Refusal::EkMismatch {
                            mac,
                            shown: ek.clone(),
                        };
                        return self.refuse_tpm(client, ident, &r, Some(ek));
                    }
                    (matched, held)
                }
                Err(reply) => return *reply,
            },
        };
        let sealing = Sealing {
            credential: proven.credential,
            challenge_id: proof.challenge_id.clone(),
            ek_fingerprint: ek,
        };
        self.mint_and_answer(client, ident, matched, held, Some(sealing))
            .await
    }

    /// The issuer of the EK certificate when it chains to `netboot.tpm_ek_ca_files` and
    /// certifies this EK.
    fn ca_issuer(&self, ek: &TpmPublic, cert: Option<&[u8]>, fingerprint: &str) -> Option<String> {
        let (cas, cert) = (self.ek_cas.as_ref()?, cert?);
        let key = ek.rsa_storage_key().ok()?;
        match cas.verify(cert, &key, now_unix()) {
            Ok(ok) => Some(ok.issuer),
            Err(r) => {
                tracing::info!(
                    "EK {fingerprint}: its certificate does not count as approved ({}): {r}",
                    r.reason()
                );
                None
            }
        }
    }

    fn note_shown_ek(&self, client: IpAddr, mac: &str, shown: &ShownEk) {
        if let Some(p) = &self.pending {
            let noted = p
                .lock()
                .map_err(|_| "pending list poisoned".to_owned())
                .and_then(|mut p| {
                    p.note_ek(mac, &client.to_string(), &rfc3339(SystemTime::now()), shown)
                });
            if let Err(e) = noted {
                tracing::error!("{e}");
            }
        }
    }

    /// `required` and not enrolled: the machine waits on the pending list and asks again.
    fn await_approval(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        mac: &str,
        shown: &ShownEk,
    ) -> Reply {
        let first = match &self.pending {
            Some(p) => p
                .lock()
                .map_err(|_| "pending list poisoned".to_owned())
                .and_then(|mut p| {
                    p.note_ek(mac, &client.to_string(), &rfc3339(SystemTime::now()), shown)
                })
                .unwrap_or_else(|e| {
                    tracing::error!("{e}");
                    false
                }),
            None => false,
        };
        let message = format!(
            "waiting for approval: {mac} showed a TPM with EK {}; on the provisioner run: tailjoin-provisioner approve {mac}",
            shown.fingerprint
        );
        if first {
            self.audit_or_log(&AuditLine {
                reason: Some("tpm-pending-approval".into()),
                ek_fingerprint: Some(shown.fingerprint.clone()),
                ..self.line("pending", client, ident)
            });
        }
        tracing::warn!(tailjoin_client = %client, "{} ({client}): {message}", ident.hostname_for_log());
        let retry = self.settings.netboot.as_ref().map_or(30, |n| n.retry_secs);
        retry_later(503, &message, Duration::from_secs(retry))
    }

    fn refuse_tpm(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        refusal: &Refusal,
        ek: Option<String>,
    ) -> Reply {
        self.refuse_naming(client, ident, refusal, None, ek)
    }
}
