//! The end of every allowed key request: a turn in the mint queue, the mint, the token spent
//! durably, the audit line, then the answer: the key in clear JSON, or sealed under the credential
//! a TPM unwrapped ([`tailjoin_common::key_seal`]).

use super::{Held, HeldGuard, Provisioner, Reply, reply, retry_later, text};
use crate::audit::AuditLine;
use crate::policy::KeyRequest;
use secrecy::{ExposeSecret, SecretString};
use std::net::IpAddr;
use std::time::Duration;
use tailjoin_common::key_seal::{CREDENTIAL_BYTES, seal};
use tailjoin_common::mint::{MintRequest, MintedKey, mint};
use tailjoin_common::wire::{KeyAnswer, SealedKeyAnswer, to_hex};

/// How the key of a TPM-proven request goes out: sealed for that TPM, and named in the audit.
pub struct Sealing {
    pub credential: [u8; CREDENTIAL_BYTES],
    pub challenge_id: String,
    pub ek_fingerprint: String,
}

impl Provisioner {
    pub(super) async fn mint_and_answer(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        mut matched: Vec<&'static str>,
        held: Held,
        sealing: Option<Sealing>,
    ) -> Reply {
        let held = HeldGuard {
            prov: self,
            held: Some(held),
        };
        let label = held.label();
        let ek = sealing.as_ref().map(|s| s.ek_fingerprint.clone());

        // Wait for a turn to mint. A client that gives up meanwhile drops this future: the guard
        // gives its token back and nothing is minted.
        let turn = match self.admission.admit().await {
            Ok(turn) => turn,
            Err(busy) => {
                held.release();
                tracing::warn!(
                    tailjoin_client = %client,
                    "mint queue full: {} waited {}s for a turn ({} more waiting); answered 503, retry in {}s",
                    ident.hostname_for_log(),
                    self.settings.admission.queue_wait.as_secs(),
                    busy.waiting,
                    busy.retry_after.as_secs()
                );
                return retry_later(
                    503,
                    "busy: too many machines are getting keys at once; retry later",
                    busy.retry_after,
                );
            }
        };
        if turn.waited >= Duration::from_secs(1) {
            tracing::info!(
                tailjoin_client = %client,
                "{} waited {:.1}s for a turn to mint ({} still waiting)",
                ident.hostname_for_log(),
                turn.waited.as_secs_f64(),
                turn.behind
            );
        }

        let request = MintRequest {
            tags: self.settings.tags.clone(),
            ephemeral: self.settings.ephemeral,
            expiry: self.settings.key_expiry,
            description: format!("tailjoin-provision {}", ident.hostname_for_log()),
        };
        let minted = match mint(
            &self.settings.mint,
            &request,
            self.credentials_dir.as_deref(),
        )
        .await
        {
            Ok(m) => m,
            Err(f) => {
                drop(turn);
                held.release();
                tracing::error!(
                    tailjoin_client = %client,
                    "cannot mint a key for {} ({client}): {}; {}",
                    ident.hostname_for_log(),
                    f.reason,
                    f.fix
                );
                self.audit_or_log(&AuditLine {
                    reason: Some(format!("mint_failed: {}", f.reason)),
                    boot_token: label,
                    ek_fingerprint: ek,
                    ..self.line("refused", client, ident)
                });
                return text(
                    502,
                    format!("the control server could not mint a key: {}", f.reason),
                );
            }
        };

        // Built before anything records the key as handed out: the answer is borrowed parts
        // (strings, a bool, a list), which serialise without fail.
        let body = match self.answer_body(&minted, sealing.as_ref()) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!("not handing out key {}: {e}", minted.id);
                return text(500, "internal error: cannot encode the answer");
            }
        };
        drop(turn);
        if let Err(e) = held.commit() {
            tracing::error!("not handing out key {}: {e}", minted.id);
            return text(500, "internal error: cannot record the boot token as used");
        }

        if sealing.is_some() {
            matched.push("tpm");
        }
        matched.sort_unstable();
        let line = AuditLine {
            boot_token: label,
            matched,
            key_id: Some(minted.id.clone()),
            expires: minted.expires.clone(),
            ephemeral: Some(self.settings.ephemeral),
            tags: Some(self.settings.tags.clone()),
            ek_fingerprint: ek,
            ..self.line("issued", client, ident)
        };
        if let Err(e) = self.audit.write(&line) {
            tracing::error!("not handing out key {}: {e}", minted.id);
            return text(500, "internal error: cannot write the audit log");
        }
        tracing::info!(
            tailjoin_client = %client,
            tailjoin_key_id = minted.id.as_str(),
            "issued key {} to {} ({client}, MACs {}){}{}",
            minted.id,
            ident.hostname_for_log(),
            ident.macs().join(","),
            line.boot_token.as_deref().map(|l| format!(", boot token {l}")).unwrap_or_default(),
            line.ek_fingerprint.as_deref().map(|e| format!(", sealed to the TPM with EK {e}")).unwrap_or_default()
        );
        reply(200, "application/json", body.expose_secret().to_owned())
    }

    /// The 200 answer: the key in clear, or sealed for the TPM that proved itself.
    fn answer_body(
        &self,
        minted: &MintedKey,
        sealing: Option<&Sealing>,
    ) -> Result<SecretString, String> {
        let text = match sealing {
            None => serde_json::to_string(&KeyAnswer {
                key: minted.key.expose_secret(),
                id: &minted.id,
                expires: minted.expires.as_deref(),
                ephemeral: self.settings.ephemeral,
                tags: &self.settings.tags,
            }),
            Some(s) => {
                let sealed = seal(
                    &s.credential,
                    &s.challenge_id,
                    minted.key.expose_secret().as_bytes(),
                )
                .map_err(|e| e.to_string())?;
                serde_json::to_string(&SealedKeyAnswer {
                    sealed_key: to_hex(&sealed),
                    challenge_id: s.challenge_id.clone(),
                    id: minted.id.clone(),
                    expires: minted.expires.clone(),
                    ephemeral: self.settings.ephemeral,
                    tags: self.settings.tags.clone(),
                })
            }
        };
        text.map(SecretString::from).map_err(|e| e.to_string())
    }
}
