//! What a TPM-proven key request uses on both sides, once the provisioner's credential (a
//! 32-byte secret wrapped by TPM2_MakeCredential to the machine's EK and AK) has been unwrapped by
//! the machine's TPM:
//! - the **proof** the machine sends back: HMAC-SHA-256 keyed by the credential over the
//!   challenge's id, so the credential itself never travels;
//! - the **sealed key** the provisioner answers with: the tailnet key under AES-256-GCM, keyed by
//!   another HMAC of the credential. A copy of the answer (or of both requests) is useless
//!   without the credential, which only that TPM could unwrap.
//!
//! Each derivation has its own label, so a proof can never serve as a sealing key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

/// Size of the credential the provisioner wraps: one SHA-256 block.
pub const CREDENTIAL_BYTES: usize = 32;

const PROOF_LABEL: &[u8] = b"tailjoin/v1 tpm proof";
const SEAL_LABEL: &[u8] = b"tailjoin/v1 tpm seal";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("the sealed key does not open with this TPM's credential (wrong TPM, or changed)")]
    DoesNotOpen,
    #[error("the system random number generator failed")]
    Random,
}

/// What each derivation's HMAC covers: its label, a NUL, the challenge id.
fn message(label: &[u8], challenge_id: &str) -> Vec<u8> {
    let mut msg = label.to_vec();
    msg.push(0);
    msg.extend_from_slice(challenge_id.as_bytes());
    msg
}

fn derive(credential: &[u8; CREDENTIAL_BYTES], label: &[u8], challenge_id: &str) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, credential);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key, &message(label, challenge_id)).as_ref());
    out
}

/// The proof that the machine's TPM unwrapped the credential of challenge `challenge_id`.
pub fn proof(credential: &[u8; CREDENTIAL_BYTES], challenge_id: &str) -> [u8; 32] {
    derive(credential, PROOF_LABEL, challenge_id)
}

/// Checks a proof in constant time.
pub fn proof_matches(credential: &[u8; CREDENTIAL_BYTES], challenge_id: &str, sent: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, credential);
    hmac::verify(&key, &message(PROOF_LABEL, challenge_id), sent).is_ok()
}

fn aead_key(credential: &[u8; CREDENTIAL_BYTES], challenge_id: &str) -> LessSafeKey {
    let raw = derive(credential, SEAL_LABEL, challenge_id);
    // A 32-byte key is what AES-256-GCM takes; UnboundKey::new fails only on another length.
    let unbound = UnboundKey::new(&AES_256_GCM, &raw).unwrap_or_else(|_| unreachable!());
    LessSafeKey::new(unbound)
}

/// Seals `plain` (the tailnet key) for the TPM that unwrapped `credential`: nonce, then the
/// ciphertext with its tag.
pub fn seal(
    credential: &[u8; CREDENTIAL_BYTES],
    challenge_id: &str,
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Random)?;
    let mut data = plain.to_vec();
    aead_key(credential, challenge_id)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(challenge_id.as_bytes()),
            &mut data,
        )
        .map_err(|_| SealError::Random)?;
    let mut out = nonce.to_vec();
    out.append(&mut data);
    Ok(out)
}

/// Opens what [`seal`] made; fails for any other credential, challenge or a changed byte.
pub fn open(
    credential: &[u8; CREDENTIAL_BYTES],
    challenge_id: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::DoesNotOpen);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::DoesNotOpen)?;
    let mut data = body.to_vec();
    let plain = aead_key(credential, challenge_id)
        .open_in_place(nonce, Aad::from(challenge_id.as_bytes()), &mut data)
        .map_err(|_| SealError::DoesNotOpen)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: [u8; 32] = [7; 32];

    #[test]
    fn a_sealed_key_opens_only_with_its_credential_and_challenge() {
        let sealed = seal(&C, "ch-1", b"fake-tailnet-key").unwrap();
        assert_eq!(open(&C, "ch-1", &sealed).unwrap(), b"fake-tailnet-key");
        assert_eq!(open(&[8; 32], "ch-1", &sealed), Err(SealError::DoesNotOpen));
        assert_eq!(open(&C, "ch-2", &sealed), Err(SealError::DoesNotOpen));
        for at in [0, 12, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert_eq!(
                open(&C, "ch-1", &changed),
                Err(SealError::DoesNotOpen),
                "byte {at}"
            );
        }
        assert_eq!(open(&C, "ch-1", &sealed[..5]), Err(SealError::DoesNotOpen));
        assert!(
            !sealed.windows(8).any(|w| w == b"fake-tai"),
            "the key is not in clear"
        );
    }

    #[test]
    fn a_proof_is_bound_to_its_credential_and_challenge_and_is_no_sealing_key() {
        let p = proof(&C, "ch-1");
        assert!(proof_matches(&C, "ch-1", &p));
        assert!(!proof_matches(&C, "ch-2", &p));
        assert!(!proof_matches(&[8; 32], "ch-1", &p));
        assert!(!proof_matches(&C, "ch-1", &p[..31]));
        assert_ne!(p, derive(&C, SEAL_LABEL, "ch-1"));
    }
}
