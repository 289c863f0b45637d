//! A TPM-proven key request (TPM 2.0 credential activation), the machine's half:
//! 1. POST the identity with the TPM's EK and a fresh AK; the provisioner answers with a
//!    challenge: a credential wrapped to that EK and AK (TPM2_MakeCredential);
//! 2. the TPM unwraps it (TPM2_ActivateCredential), which only the TPM holding that EK can;
//! 3. POST the identity with a proof of the credential; the answer is the key sealed under it.
//!
//! A provisioner that does not use TPMs answers step 1 with the key itself, which is taken as
//! before. The credential, the proof and the key are never logged. Whether to use the TPM is the
//! source's `tpm` setting ([`crate::config::TpmMode`]); the pure parts are
//! [`super::tpm_exchange`]'s.

use super::http::{Attempt, request, status_error};
use super::identity::MachineIdentity;
use super::tpm_exchange::{self as exchange_of, Step1Answer};
use crate::config::{HttpKeySource, HttpMethod, TpmMode};
use crate::tpm::TpmKeys;
use crate::tpm::tcti::{self, DEFAULT_DEVICE, TCTI_ENV};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tailjoin_common::wire::TpmEvidence;

/// How long opening the TPM and making the EK and the AK may take (a slow TPM makes an RSA
/// 2048 primary key in seconds).
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// The machine's TPM for the requests of one key fetch: its keys stay loaded between attempts.
pub(super) struct TpmSession {
    keys: Arc<Mutex<TpmKeys>>,
    evidence: TpmEvidence,
    ek_fingerprint: String,
    tcti: String,
}

fn refused(reason: String, fix: String) -> Attempt {
    Attempt {
        failure: None,
        transient: false,
        reason,
        fix,
    }
}

/// The TPM to prove, per the source's `tpm` setting: `None` for a plain request.
pub(super) async fn prepare(src: &HttpKeySource) -> Result<Option<TpmSession>, Attempt> {
    let policy = &src.tpm;
    let required = match policy.mode {
        TpmMode::Off => return Ok(None),
        TpmMode::Auto => false,
        TpmMode::Required => true,
    };
    let set_by = &policy.set_by;
    let else_fix = format!("or set {set_by} to \"auto\" or \"off\"");
    if src.method == HttpMethod::Get {
        return match required {
            true => Err(refused(
                format!("{set_by} is \"required\", but the request is a GET"),
                format!("a TPM-proven request is a POST: set method to \"post\", {else_fix}"),
            )),
            false => Ok(None),
        };
    }
    let Some(tcti) = tcti::find() else {
        if required {
            return Err(refused(
                format!(
                    "{set_by} is \"required\", but this machine has no TPM: {TCTI_ENV} is not set \
                     and {DEFAULT_DEVICE} does not exist"
                ),
                format!(
                    "give the machine a TPM 2.0 (a VM: a vTPM such as swtpm) and let the agent \
                     see {DEFAULT_DEVICE} (its unit's DeviceAllow=), set {TCTI_ENV}, {else_fix}"
                ),
            ));
        }
        tracing::debug!("no TPM ({TCTI_ENV} unset, no {DEFAULT_DEVICE}): a plain key request");
        return Ok(None);
    };
    match open(&tcti).await {
        Ok(keys) => {
            let ek_fingerprint = keys.ek_fingerprint().to_owned();
            tracing::info!(
                "proving this machine's TPM ({tcti}) to the provisioner: EK {ek_fingerprint}{}",
                if keys.ek_certificate().is_some() {
                    ", with its EK certificate"
                } else {
                    ""
                }
            );
            if let Some(e) = keys.certificate_problem() {
                tracing::warn!("the TPM's EK certificate is not sent: {e}");
            }
            Ok(Some(TpmSession {
                evidence: keys.evidence(),
                keys: Arc::new(Mutex::new(keys)),
                ek_fingerprint,
                tcti,
            }))
        }
        Err(reason) if required => Err(refused(
            format!("{set_by} is \"required\", but the TPM at {tcti} cannot be used: {reason}"),
            format!(
                "check the TPM (tpm2_getcap properties-fixed, with TPM2TOOLS_TCTI={tcti}), {else_fix}"
            ),
        )),
        Err(reason) => {
            tracing::warn!(
                "cannot use the TPM at {tcti} ({reason}); asking for the key without TPM proof \
                 ({set_by} is \"auto\"; \"required\" would stop here, \"off\" would not try)"
            );
            Ok(None)
        }
    }
}

/// Opens the TPM and makes the keys on tokio's blocking pool, bounded by [`OPEN_TIMEOUT`].
async fn open(tcti: &str) -> Result<TpmKeys, String> {
    let at = tcti.to_owned();
    let opening = tokio::task::spawn_blocking(move || TpmKeys::open(&at));
    match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(Ok(keys))) => Ok(keys),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("the TPM task failed: {e}")),
        Err(_) => Err(format!(
            "it did not make its keys within {}s",
            OPEN_TIMEOUT.as_secs()
        )),
    }
}

impl TpmSession {
    /// Flushes the keys from the TPM, on the blocking pool (or where the last activation that
    /// still holds them ends).
    pub(super) async fn close(self) {
        let keys = self.keys;
        let _ = tokio::task::spawn_blocking(move || drop(keys)).await;
    }

    async fn activate(
        &self,
        challenge: &exchange_of::Challenge,
    ) -> Result<SecretSlice<u8>, Attempt> {
        let keys = Arc::clone(&self.keys);
        let (id_object, secret) = (
            challenge.id_object.clone(),
            challenge.encrypted_secret.clone(),
        );
        let joined = tokio::task::spawn_blocking(move || match keys.lock() {
            Ok(mut keys) => keys
                .activate(&id_object, &secret)
                .map_err(|e| e.to_string()),
            Err(_) => Err("an earlier activation failed midway".to_owned()),
        })
        .await;
        let failed = |reason: String| {
            refused(
                format!(
                    "this machine's TPM ({}) could not unwrap the provisioner's challenge {}: {reason}",
                    self.tcti, challenge.id
                ),
                "the provisioner wrapped the challenge for another TPM (EK) or AK: check the EK \
                 fingerprint it holds for this machine against the one logged above"
                    .into(),
            )
        };
        match joined {
            Ok(Ok(credential)) => Ok(credential),
            Ok(Err(reason)) => Err(failed(reason)),
            Err(e) => Err(failed(format!("the TPM task failed: {e}"))),
        }
    }
}

/// One attempt of the exchange: step 1, the activation, step 2. Any failure ends the attempt;
/// a new attempt starts again from step 1 with a new challenge.
pub(super) async fn exchange(
    client: &reqwest::Client,
    src: &HttpKeySource,
    token: Option<&SecretString>,
    identity: &MachineIdentity,
    tpm: &TpmSession,
) -> Result<String, Attempt> {
    let step1 = exchange_of::step1_body(identity, &tpm.evidence);
    let body = request(client, src, token, Some(&step1), status_error).await?;
    let challenge = match exchange_of::read_step1_answer(body, &src.response)? {
        Step1Answer::Key(key) => {
            tracing::info!(
                "the provisioner answered with the key and no TPM challenge: it does not use TPM proof"
            );
            return Ok(key);
        }
        Step1Answer::Challenge(c) => c,
    };
    tracing::debug!("the provisioner sent TPM challenge {}", challenge.id);
    exchange_of::check_fingerprint(&challenge, &tpm.ek_fingerprint)?;
    let unwrapped = tpm.activate(&challenge).await?;
    let credential = exchange_of::credential_of(unwrapped.expose_secret())?;
    drop(unwrapped);
    let step2 = exchange_of::step2_body(identity, &challenge.id, &credential);
    let body = request(
        client,
        src,
        token,
        Some(&step2),
        |status, said, has_token| {
            exchange_of::proof_status_error(status, said, has_token, &challenge.id)
        },
    )
    .await?;
    exchange_of::open_sealed_answer(body, &credential, &challenge.id)
}
