//! The wire types of the provisioner's `POST /v1/key`, written by the agent and read by the
//! provisioner: one definition, so the two programs cannot drift apart.
//!
//! The request is who the machine says it is. Nothing in it is secret, nor proven: a machine can
//! claim any MAC, which is why MACs alone are a weak check (secrets/README.md). The answer holds
//! the key; it is built from borrowed parts so that the key is never copied into a plain
//! `String` that outlives the reply.

use crate::secrets::identity::hardware_macs;
use serde::{Deserialize, Serialize};

/// The JSON field of [`KeyAnswer`] that holds the key: the agent's default `json_field`.
pub const KEY_FIELD: &str = "key";

/// The response header on every refusal of `/v1/key`: the refusal's kind, machine-readable
/// (the body says it for humans). The agent reads it to tell a refusal a new boot cures (an
/// expired, spent, revoked or unknown boot token) from one it does not.
pub const REFUSAL_HEADER: &str = "Tailjoin-Refusal";

/// The refusal kinds of boot tokens ([`REFUSAL_HEADER`]'s values, the audit log's `reason`),
/// named once for both programs.
pub mod refusal_kind {
    pub const BOOT_TOKEN_EXPIRED: &str = "boot_token_expired";
    pub const BOOT_TOKEN_USED: &str = "boot_token_used";
    pub const BOOT_TOKEN_UNKNOWN: &str = "boot_token_unknown";
    pub const BOOT_TOKEN_REVOKED: &str = "boot_token_revoked";
}

/// Most MACs a request's list is read for; the rest are ignored.
pub const MAX_REQUEST_MACS: usize = 64;

/// `POST /v1/key`'s body: hostname, machine id, boot id and MAC addresses. Every field may be
/// missing (an empty body or a GET is an empty request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub machine_id: String,
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub mac_addresses: Vec<String>,
    /// Step 1 of a TPM-proven request: the machine's EK and AK (see [`TpmEvidence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEvidence>,
    /// Step 2: the proof that its TPM unwrapped the credential of a challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_proof: Option<TpmProof>,
}

/// What a machine shows of its TPM (step 1 of a TPM-proven request). Each field is the hex of
/// the structure as the TPM marshals it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmEvidence {
    /// The endorsement key's TPM2B_PUBLIC (the TCG default RSA 2048 EK).
    pub ek_public: String,
    /// The EK certificate (DER) from the TPM's NV index, where it holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_certificate: Option<String>,
    /// The attestation key's TPM2B_PUBLIC: a restricted signing key made under the EK.
    pub ak_public: String,
}

/// Step 2 of a TPM-proven request: `proof` is the hex of
/// [`crate::key_seal::proof`] of the unwrapped credential for challenge `challenge_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmProof {
    pub challenge_id: String,
    pub proof: String,
}

/// The provisioner's answer to step 1 (200, JSON): a credential wrapped to the machine's EK and
/// AK by TPM2_MakeCredential, for its TPM to unwrap (TPM2_ActivateCredential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmChallengeAnswer {
    pub tpm_challenge: TpmChallenge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmChallenge {
    pub id: String,
    /// Hex of the TPM2B_ID_OBJECT (MakeCredential's credentialBlob).
    pub id_object: String,
    /// Hex of the TPM2B_ENCRYPTED_SECRET (MakeCredential's secret).
    pub encrypted_secret: String,
    /// The fingerprint of the EK it is wrapped to, as `tailjoin-provisioner pending` shows it.
    pub ek_fingerprint: String,
}

/// The provisioner's answer to step 2 (200, JSON): the key sealed under the credential
/// ([`crate::key_seal::seal`], hex), and what the plain answer says about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SealedKeyAnswer {
    pub sealed_key: String,
    pub challenge_id: String,
    pub id: String,
    pub expires: Option<String>,
    pub ephemeral: bool,
    pub tags: Vec<String>,
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes of a hex string (either case); `None` for an odd length or a non-hex character.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if t.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

impl KeyRequest {
    /// The hostname as it may appear in logs: printable, bounded.
    pub fn hostname_for_log(&self) -> String {
        printable(&self.hostname, 64)
    }

    pub fn machine_id_for_log(&self) -> String {
        printable(&self.machine_id, 64)
    }

    /// The request's MACs that are well-formed, normalised (lower case, colons).
    pub fn macs(&self) -> Vec<String> {
        self.mac_addresses
            .iter()
            .take(MAX_REQUEST_MACS)
            .filter_map(|m| normalize_mac(m))
            .collect()
    }
}

/// A MAC as the provisioner keeps it: lower case with colons (`52-54-00-…` is accepted), or
/// `None` when it is not six hex pairs or is all zeros.
pub fn normalize_mac(m: &str) -> Option<String> {
    let lower = m.trim().to_ascii_lowercase().replace('-', ":");
    hardware_macs(vec![lower]).pop()
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// `POST /v1/key`'s 200 answer.
#[derive(Debug, Serialize)]
pub struct KeyAnswer<'a> {
    /// The single-use auth key ([`KEY_FIELD`]).
    pub key: &'a str,
    /// The key's id at the minting API (not secret), for the audit trail.
    pub id: &'a str,
    /// When the key stops working if unused (RFC 3339), when the minting API said.
    pub expires: Option<&'a str>,
    pub ephemeral: bool,
    pub tags: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_the_agent_writes_is_the_request_the_provisioner_reads() {
        let sent = KeyRequest {
            hostname: "node-1".into(),
            machine_id: "0123".into(),
            boot_id: "b-1".into(),
            mac_addresses: vec!["52:54:00:12:34:56".into()],
            tpm: Some(TpmEvidence {
                ek_public: "0001".into(),
                ek_certificate: None,
                ak_public: "0002".into(),
            }),
            tpm_proof: None,
        };
        let text = serde_json::to_string(&sent).unwrap();
        let read: KeyRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(read, sent);
        let empty: KeyRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, KeyRequest::default());
        // A request without TPM parts is written as before the TPM existed.
        let plain = serde_json::to_value(KeyRequest::default()).unwrap();
        assert!(plain.get("tpm").is_none() && plain.get("tpm_proof").is_none());
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0xab, 0xff, 0x10];
        assert_eq!(to_hex(&bytes), "0001abff10");
        assert_eq!(from_hex("0001ABff10").unwrap(), bytes);
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("+1"), None);
    }

    #[test]
    fn macs_are_normalised_bounded_and_malformed_ones_dropped() {
        let mut req = KeyRequest {
            mac_addresses: vec![
                "52-54-00-AB-CD-EF".into(),
                "00:00:00:00:00:00".into(),
                "not-a-mac".into(),
            ],
            ..KeyRequest::default()
        };
        assert_eq!(req.macs(), vec!["52:54:00:ab:cd:ef".to_owned()]);
        req.mac_addresses = vec!["52:54:00:00:00:01".into(); MAX_REQUEST_MACS + 10];
        assert_eq!(req.macs().len(), MAX_REQUEST_MACS);
        req.hostname = "bad\nhost\u{7}name".into();
        assert_eq!(req.hostname_for_log(), "badhostname");
    }

    #[test]
    fn the_answer_names_the_key_in_the_agents_default_field() {
        let tags = vec!["tag:netboot".to_owned()];
        let answer = KeyAnswer {
            key: "fake-key",
            id: "7",
            expires: Some("2026-12-07T20:00:00Z"),
            ephemeral: true,
            tags: &tags,
        };
        let v: serde_json::Value = serde_json::to_value(&answer).unwrap();
        assert_eq!(v[KEY_FIELD], "fake-key");
        assert_eq!(v["tags"][0], "tag:netboot");
    }
}
