//! The pure parts of a TPM-proven key request (the wire types are
//! [`tailjoin_common::wire`]'s): the bodies of its two POSTs, reading the provisioner's
//! challenge, and opening the sealed key it answers the proof with. No I/O: the requests are
//! [`super::http_tpm`]'s, the TPM is [`crate::tpm`]'s.

use super::http::{Attempt, parse_body, status_error};
use super::identity::MachineIdentity;
use crate::config::ResponseFormat;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use tailjoin_common::key_seal::{self, CREDENTIAL_BYTES};
use tailjoin_common::wire::{
    SealedKeyAnswer, TpmChallengeAnswer, TpmEvidence, TpmProof, from_hex, to_hex,
};

/// The credential a challenge wraps, once the TPM has unwrapped it.
pub(super) type Credential = SecretBox<[u8; CREDENTIAL_BYTES]>;

/// A challenge as the TPM takes it: the two TPM2B structures, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    pub id: String,
    pub id_object: Vec<u8>,
    pub encrypted_secret: Vec<u8>,
    pub ek_fingerprint: String,
}

/// What the provisioner answered to step 1.
#[derive(Debug)]
pub(super) enum Step1Answer {
    /// A challenge for this machine's TPM.
    Challenge(Challenge),
    /// The key itself: a provisioner that does not use TPMs answers as it always did.
    Key(String),
}

/// Step 1: who the machine is, and its TPM's EK and AK.
pub(super) fn step1_body(identity: &MachineIdentity, evidence: &TpmEvidence) -> MachineIdentity {
    MachineIdentity {
        tpm: Some(evidence.clone()),
        tpm_proof: None,
        ..identity.clone()
    }
}

/// Step 2: who the machine is, and the proof that its TPM unwrapped challenge `challenge_id`
/// (never the credential itself).
pub(super) fn step2_body(
    identity: &MachineIdentity,
    challenge_id: &str,
    credential: &Credential,
) -> MachineIdentity {
    MachineIdentity {
        tpm: None,
        tpm_proof: Some(TpmProof {
            challenge_id: challenge_id.to_owned(),
            proof: to_hex(&key_seal::proof(credential.expose_secret(), challenge_id)),
        }),
        ..identity.clone()
    }
}

fn refused(reason: String, fix: &str) -> Attempt {
    Attempt {
        failure: None,
        transient: false,
        reason,
        fix: fix.to_owned(),
    }
}

const PROVISIONER_FIX: &str = "the provisioner's answer does not follow the TPM-proven /v1/key exchange: check that agent \
     and provisioner are of the same tailjoin version";

/// Step 1's 200 answer: a JSON object with `tpm_challenge`, or else the key as a plain answer
/// (read with the source's `response` format).
pub(super) fn read_step1_answer(
    body: Vec<u8>,
    format: &ResponseFormat,
) -> Result<Step1Answer, Attempt> {
    let is_challenge = matches!(
        serde_json::from_slice::<serde_json::Value>(&body),
        Ok(serde_json::Value::Object(ref doc)) if doc.contains_key("tpm_challenge")
    );
    if !is_challenge {
        return parse_body(body, format).map(Step1Answer::Key);
    }
    let answer: TpmChallengeAnswer = serde_json::from_slice(&body).map_err(|e| {
        refused(
            format!(
                "the provisioner's TPM challenge is malformed (line {}, column {})",
                e.line(),
                e.column()
            ),
            PROVISIONER_FIX,
        )
    })?;
    let c = answer.tpm_challenge;
    let hex = |field: &str, text: &str| {
        from_hex(text).ok_or_else(|| {
            refused(
                format!("the provisioner's TPM challenge has a {field} that is not hex"),
                PROVISIONER_FIX,
            )
        })
    };
    let bounded = c.id.len() <= 128 && c.id.chars().all(|ch| ch.is_ascii_graphic());
    if c.id.is_empty() || !bounded {
        return Err(refused(
            "the provisioner's TPM challenge has an empty, overlong or unprintable id".into(),
            PROVISIONER_FIX,
        ));
    }
    Ok(Step1Answer::Challenge(Challenge {
        id_object: hex("id_object", &c.id_object)?,
        encrypted_secret: hex("encrypted_secret", &c.encrypted_secret)?,
        id: c.id,
        ek_fingerprint: c.ek_fingerprint,
    }))
}

/// The challenge must be for this machine's EK (`ours`, `sha256:<hex>`), when it says.
pub(super) fn check_fingerprint(challenge: &Challenge, ours: &str) -> Result<(), Attempt> {
    let theirs = challenge.ek_fingerprint.trim();
    if theirs.is_empty() || theirs.eq_ignore_ascii_case(ours) {
        return Ok(());
    }
    Err(refused(
        format!(
            "the provisioner's TPM challenge is for the EK {:?}, but this machine's TPM has the EK {ours}",
            theirs.chars().take(80).collect::<String>()
        ),
        "the provisioner wrapped the challenge for another TPM: check which EK it holds for this machine \
         (tailjoin-provisioner pending)",
    ))
}

/// The TPM's credential as the key seal takes it: exactly 32 bytes.
pub(super) fn credential_of(unwrapped: &[u8]) -> Result<Credential, Attempt> {
    let bytes: [u8; CREDENTIAL_BYTES] = unwrapped.try_into().map_err(|_| {
        refused(
            format!(
                "the TPM unwrapped a credential of {} bytes, not {CREDENTIAL_BYTES}",
                unwrapped.len()
            ),
            PROVISIONER_FIX,
        )
    })?;
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Step 2's non-2xx answer. A challenge the provisioner no longer knows (expired, answered
/// already: 404, 409, 410) is worth a new one from step 1; the rest reads as any refusal.
pub(super) fn proof_status_error(
    status: reqwest::StatusCode,
    said: &str,
    has_token: bool,
    challenge_id: &str,
) -> Attempt {
    let code = status.as_u16();
    if matches!(code, 404 | 409 | 410) {
        return Attempt { failure: None,
            transient: true,
            reason: format!(
                "the provisioner no longer knows TPM challenge {challenge_id} (HTTP {status}{said}): it expired or was answered already"
            ),
            fix: "tailjoin asks for a new challenge; if this repeats, check that the provisioner answers within its challenge lifetime".into(),
        };
    }
    let mut a = status_error(status, said, has_token);
    a.reason = format!(
        "the proof for TPM challenge {challenge_id} was refused: {}",
        a.reason
    );
    if code == 403 {
        a.fix = "the provisioner did not accept this machine's TPM proof, or does not hand this \
                 machine (its EK) a key: see tailjoin-provisioner pending on the provisioner"
            .into();
    }
    a
}

/// Step 2's 200 answer: the key sealed under the credential, opened. UTF-8 text, then
/// normalised by the caller like any fetched key.
pub(super) fn open_sealed_answer(
    body: Vec<u8>,
    credential: &Credential,
    challenge_id: &str,
) -> Result<String, Attempt> {
    let answer: SealedKeyAnswer = serde_json::from_slice(&body).map_err(|e| {
        let plain = matches!(
            serde_json::from_slice::<serde_json::Value>(&body),
            Ok(serde_json::Value::Object(ref doc)) if doc.contains_key(tailjoin_common::wire::KEY_FIELD)
        );
        drop(SecretString::from(String::from_utf8_lossy(&body).into_owned()));
        refused(
            if plain {
                "the provisioner answered the TPM proof with an unsealed key, which this exchange does not accept".into()
            } else {
                format!(
                    "the answer to the TPM proof is not a sealed key (line {}, column {})",
                    e.line(),
                    e.column()
                )
            },
            PROVISIONER_FIX,
        )
    })?;
    if answer.challenge_id != challenge_id {
        return Err(refused(
            "the provisioner's sealed key is for another TPM challenge".into(),
            PROVISIONER_FIX,
        ));
    }
    let sealed = from_hex(&answer.sealed_key).ok_or_else(|| {
        refused(
            "the provisioner's sealed key is not hex".into(),
            PROVISIONER_FIX,
        )
    })?;
    let plain = key_seal::open(credential.expose_secret(), challenge_id, &sealed).map_err(|e| {
        refused(
            format!("{e}"),
            "the provisioner sealed the key for another credential: a bug or a tampered answer; \
             this is not retried",
        )
    })?;
    let plain = SecretBox::new(Box::new(plain));
    let key = std::str::from_utf8(plain.expose_secret()).map_err(|_| {
        refused(
            "the sealed key opens, but is not UTF-8 text".into(),
            PROVISIONER_FIX,
        )
    })?;
    tracing::info!(
        "the provisioner handed a TPM-sealed key (id {}, expires {}{})",
        printable(&answer.id),
        answer
            .expires
            .as_deref()
            .map(printable)
            .unwrap_or_else(|| "per the server".into()),
        if answer.ephemeral { ", ephemeral" } else { "" }
    );
    Ok(key.to_owned())
}

fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests;
