//! TPM challenges: the provisioner's half of a TPM-proven key request, without I/O.
//!
//! 1. A machine presents its EK and AK public areas. [`Challenges::open`] checks them, makes a
//!    fresh 32-byte credential, wraps it to that EK and AK (MakeCredential) and remembers it for a
//!    short time under a random id.
//! 2. The machine's TPM unwraps it (ActivateCredential) and the machine sends back
//!    [`tailjoin_common::key_seal::proof`] of it for that id. [`Challenges::answer`] checks the
//!    proof; a challenge is answered once, right or wrong, and expires.
//! 3. Only then is a key minted, and it goes out sealed ([`tailjoin_common::key_seal::seal`]) under
//!    the same credential, so a copy of any request or answer is useless to anyone but that TPM.
//!
//! Nothing is minted before step 2 succeeds: a machine that cannot prove its TPM costs the
//! tailnet nothing.

use super::credential::{WrappedCredential, make_credential};
use super::public::{PublicError, TpmPublic};
use std::collections::HashMap;
use tailjoin_common::key_seal::{CREDENTIAL_BYTES, proof_matches};

/// How long a machine has to answer a challenge (its TPM takes well under a second).
pub const CHALLENGE_TTL_SECS: u64 = 120;
/// Most challenges outstanding at once; beyond, expired ones are dropped, then new ones refused.
pub const MAX_OPEN_CHALLENGES: usize = 4096;

/// Why a TPM-proven request is refused; `reason()` is the audit log's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmRefusal {
    /// The EK or AK public area could not be used.
    Malformed(String),
    /// The proof does not match: the requester's TPM did not unwrap the credential.
    ActivationFailed,
    /// No such challenge: never opened, answered already, or expired.
    ChallengeUnknown,
    /// Too many challenges outstanding.
    Busy,
}

impl TpmRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            TpmRefusal::Malformed(_) => "tpm-malformed",
            TpmRefusal::ActivationFailed => "activation-failed",
            TpmRefusal::ChallengeUnknown => "tpm-challenge-unknown",
            TpmRefusal::Busy => "tpm-busy",
        }
    }
}

impl From<PublicError> for TpmRefusal {
    fn from(e: PublicError) -> Self {
        TpmRefusal::Malformed(e.to_string())
    }
}

/// What a successful answer yields: who proved what, the credential to seal the key with, and
/// `grant`: what the caller decided when it opened the challenge (kept for it, not looked at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven<G> {
    pub mac: String,
    pub ek_fingerprint: String,
    pub credential: [u8; CREDENTIAL_BYTES],
    pub grant: G,
}

#[derive(Debug)]
struct Open<G> {
    proven: Proven<G>,
    expires_at: u64,
}

/// The challenges outstanding, by id.
#[derive(Debug)]
pub struct Challenges<G> {
    open: HashMap<String, Open<G>>,
}

impl<G> Default for Challenges<G> {
    fn default() -> Self {
        Challenges {
            open: HashMap::new(),
        }
    }
}

/// A challenge as it goes to the machine: its id and the wrapped credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: String,
    pub ek_fingerprint: String,
    pub wrapped: WrappedCredential,
}

impl<G> Challenges<G> {
    /// Opens a challenge for the machine with MAC `mac` presenting these EK and AK public areas
    /// (TPM2B_PUBLIC each). `rng` gives the credential, the id and MakeCredential's randomness.
    #[allow(clippy::too_many_arguments)]
    pub fn open<R: rand_core::CryptoRngCore>(
        &mut self,
        mac: &str,
        ek_public: &[u8],
        ak_public: &[u8],
        grant: G,
        now: u64,
        rng: &mut R,
    ) -> Result<Challenge, TpmRefusal> {
        let ek = TpmPublic::parse_tpm2b(ek_public, "EK public area")?;
        let ek_key = ek.rsa_storage_key()?;
        let ak = TpmPublic::parse_tpm2b(ak_public, "AK public area")?;
        ak.check_attestation_key()?;
        if self.open.len() >= MAX_OPEN_CHALLENGES {
            self.open.retain(|_, c| c.expires_at > now);
            if self.open.len() >= MAX_OPEN_CHALLENGES {
                return Err(TpmRefusal::Busy);
            }
        }
        let mut credential = [0u8; CREDENTIAL_BYTES];
        rng.fill_bytes(&mut credential);
        let wrapped = make_credential(&ek_key, &ak.name(), &credential, rng)
            .map_err(|e| TpmRefusal::Malformed(e.to_string()))?;
        let mut raw_id = [0u8; 16];
        rng.fill_bytes(&mut raw_id);
        let id = tailjoin_common::wire::to_hex(&raw_id);
        let ek_fingerprint = ek.fingerprint();
        self.open.insert(
            id.clone(),
            Open {
                proven: Proven {
                    mac: mac.to_owned(),
                    ek_fingerprint: ek_fingerprint.clone(),
                    credential,
                    grant,
                },
                expires_at: now + CHALLENGE_TTL_SECS,
            },
        );
        Ok(Challenge {
            id,
            ek_fingerprint,
            wrapped,
        })
    }

    /// Checks the machine's proof for challenge `id`. The challenge is spent by this call
    /// whatever its outcome, so a wrong guess cannot be followed by another.
    pub fn answer(&mut self, id: &str, proof: &[u8], now: u64) -> Result<Proven<G>, TpmRefusal> {
        let open = self.open.remove(id).ok_or(TpmRefusal::ChallengeUnknown)?;
        if open.expires_at <= now {
            return Err(TpmRefusal::ChallengeUnknown);
        }
        if proof_matches(&open.proven.credential, id, proof) {
            Ok(open.proven)
        } else {
            Err(TpmRefusal::ActivationFailed)
        }
    }

    /// The EK fingerprint challenge `id` was opened for (to name it when its answer fails).
    pub fn ek_of(&self, id: &str) -> Option<String> {
        self.open.get(id).map(|o| o.proven.ek_fingerprint.clone())
    }

    pub fn outstanding(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailjoin_common::key_seal::proof;

    /// An EK and an AK made by swtpm (tpm2_createek -G rsa, tpm2_createak), and the AK's Name as
    /// tpm2_createak wrote it.
    const EK: &[u8] = include_bytes!("testdata/swtpm-ek.pub");
    const AK: &[u8] = include_bytes!("testdata/swtpm-ak.pub");
    const AK_NAME: &[u8] = include_bytes!("testdata/swtpm-ak.name");
    const MAC: &str = "52:54:00:12:34:56";

    fn credential_of(c: &Challenges<()>, id: &str) -> [u8; CREDENTIAL_BYTES] {
        c.open[id].proven.credential
    }

    #[test]
    fn the_right_proof_is_accepted_once() {
        let mut c = Challenges::<()>::default();
        let ch = c
            .open(MAC, EK, AK, (), 1000, &mut rand_core::OsRng)
            .unwrap();
        assert_eq!(ch.id.len(), 32);
        assert!(ch.ek_fingerprint.starts_with("sha256:"));
        let p = proof(&credential_of(&c, &ch.id), &ch.id);
        let proven = c.answer(&ch.id, &p, 1001).unwrap();
        assert_eq!(proven.mac, MAC);
        assert_eq!(proven.ek_fingerprint, ch.ek_fingerprint);
        assert_eq!(
            c.answer(&ch.id, &p, 1002),
            Err(TpmRefusal::ChallengeUnknown)
        );
    }

    #[test]
    fn a_wrong_proof_fails_activation_and_spends_the_challenge() {
        let mut c = Challenges::<()>::default();
        let ch = c
            .open(MAC, EK, AK, (), 1000, &mut rand_core::OsRng)
            .unwrap();
        let right = proof(&credential_of(&c, &ch.id), &ch.id);
        let wrong = proof(&[0u8; 32], &ch.id);
        assert_eq!(
            c.answer(&ch.id, &wrong, 1001),
            Err(TpmRefusal::ActivationFailed)
        );
        assert_eq!(
            c.answer(&ch.id, &right, 1001),
            Err(TpmRefusal::ChallengeUnknown)
        );
        assert_eq!(TpmRefusal::ActivationFailed.reason(), "activation-failed");
    }

    #[test]
    fn challenges_expire_and_are_bounded() {
        let mut c = Challenges::<()>::default();
        let ch = c
            .open(MAC, EK, AK, (), 1000, &mut rand_core::OsRng)
            .unwrap();
        let p = proof(&credential_of(&c, &ch.id), &ch.id);
        assert_eq!(
            c.answer(&ch.id, &p, 1000 + CHALLENGE_TTL_SECS),
            Err(TpmRefusal::ChallengeUnknown)
        );
        for i in 0..MAX_OPEN_CHALLENGES {
            c.open.insert(
                format!("old-{i}"),
                Open {
                    proven: Proven {
                        mac: MAC.into(),
                        ek_fingerprint: String::new(),
                        credential: [0; 32],
                        grant: (),
                    },
                    expires_at: 2000,
                },
            );
        }
        assert!(matches!(
            c.open(MAC, EK, AK, (), 1999, &mut rand_core::OsRng),
            Err(TpmRefusal::Busy)
        ));
        // Once they have expired they make room.
        assert!(c.open(MAC, EK, AK, (), 2000, &mut rand_core::OsRng).is_ok());
        assert_eq!(c.outstanding(), 1);
    }

    #[test]
    fn the_ek_and_ak_are_checked_and_their_names_are_the_tpms() {
        let mut c = Challenges::<()>::default();
        let swapped = c
            .open(MAC, AK, EK, (), 1000, &mut rand_core::OsRng)
            .unwrap_err();
        assert_eq!(swapped.reason(), "tpm-malformed");
        let cut = c
            .open(MAC, &EK[..100], AK, (), 1000, &mut rand_core::OsRng)
            .unwrap_err();
        assert!(matches!(cut, TpmRefusal::Malformed(m) if m.contains("EK public area")));
        let ak = TpmPublic::parse_tpm2b(AK, "AK").unwrap();
        assert_eq!(ak.name(), AK_NAME);
    }
}
