//! TPM2_MakeCredential in software (TPM 2.0 Part 1 §24, Part 3 §12.6): wraps a short secret (the
//! "credential") to an EK and the Name of an AK. The TPM that holds the EK's private part, with an
//! object of that Name loaded, gets the secret back with TPM2_ActivateCredential; nobody else can.
//!
//! 1. A random seed (32 bytes, the size of the EK's name hash) is encrypted to the EK with
//!    RSA-OAEP (SHA-256, label "IDENTITY\0"): the TPM2B_ENCRYPTED_SECRET.
//! 2. From the seed, KDFa derives the symmetric key ("STORAGE", context: the AK's Name) and the
//!    HMAC key ("INTEGRITY").
//! 3. The credential, as a TPM2B_DIGEST, is encrypted with AES-CFB (IV zero), and an HMAC over
//!    the ciphertext and the AK's Name protects it: the TPM2B_ID_OBJECT.
//!
//! Step 1 is the only randomised one and takes its randomness from the caller; steps 2-3 are a
//! pure function of the seed ([`protect`]), so they can be checked against fixed values.
//!
//! The RSA here is public-key encryption only (the `rsa` crate's OAEP encrypt): the timing
//! side channel of RUSTSEC-2023-0071 concerns private-key operations, which the provisioner never
//! performs. The real TPM checks all of this in tests/tpm_swtpm.rs.

use super::kdf::kdfa_sha256;
use super::public::RsaStorageKey;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use ring::hmac;
use thiserror::Error;

/// Size of the seed and of the integrity HMAC: SHA-256's digest.
pub const SEED_BYTES: usize = 32;
/// Largest credential: a SHA-256 digest's size (every TPM 2.0 accepts it).
pub const MAX_CREDENTIAL_BYTES: usize = 32;
/// The first word of a tpm2-tools credential file (`tpm2_makecredential -o`).
pub const TPM2_TOOLS_MAGIC: u32 = 0xBADC_C0DE;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error("the credential must be 1 to {MAX_CREDENTIAL_BYTES} bytes, not {0}")]
    CredentialSize(usize),
    #[error("the EK's symmetric key must be AES-128 or AES-256, not {0} bits")]
    SymBits(u16),
    #[error("the AK's Name must be 34 bytes (SHA-256), not {0}")]
    NameSize(usize),
    #[error("cannot encrypt the seed to the EK: {0}")]
    Seed(String),
}

/// MakeCredential's two outputs, each as the TPM marshals it (a TPM2B: size, then the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedCredential {
    /// TPM2B_ID_OBJECT: the integrity HMAC and the encrypted credential.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET: the seed, encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

impl WrappedCredential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads: magic,
    /// version 1, the ID object, the encrypted secret.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = TPM2_TOOLS_MAGIC.to_be_bytes().to_vec();
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&self.id_object);
        out.extend_from_slice(&self.encrypted_secret);
        out
    }
}

/// MakeCredential: wraps `credential` to `ek` and the AK named `ak_name`. `rng` gives the seed
/// and OAEP's padding.
pub fn make_credential<R: rand_core::CryptoRngCore>(
    ek: &RsaStorageKey,
    ak_name: &[u8],
    credential: &[u8],
    rng: &mut R,
) -> Result<WrappedCredential, CredentialError> {
    let mut seed = [0u8; SEED_BYTES];
    rng.fill_bytes(&mut seed);
    let id_object = protect(&seed, ek.sym_bits, ak_name, credential)?;
    let encrypted_secret = encrypt_seed(ek, &seed, rng)?;
    seed.fill(0);
    Ok(WrappedCredential {
        id_object,
        encrypted_secret,
    })
}

/// Steps 2-3: the TPM2B_ID_OBJECT for a given seed. Pure.
pub fn protect(
    seed: &[u8; SEED_BYTES],
    sym_bits: u16,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::CredentialSize(credential.len()));
    }
    if ak_name.len() != 2 + SEED_BYTES {
        return Err(CredentialError::NameSize(ak_name.len()));
    }
    if !matches!(sym_bits, 128 | 256) {
        return Err(CredentialError::SymBits(sym_bits));
    }
    let mut plain = (credential.len() as u16).to_be_bytes().to_vec();
    plain.extend_from_slice(credential);
    let sym_key = kdfa_sha256(seed, "STORAGE", ak_name, &[], u32::from(sym_bits));
    let enc_identity = aes_cfb_encrypt(&sym_key, &plain);
    let hmac_key = kdfa_sha256(seed, "INTEGRITY", &[], &[], (SEED_BYTES * 8) as u32);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer = ctx.sign();
    let mut out = Vec::with_capacity(4 + SEED_BYTES + enc_identity.len());
    out.extend_from_slice(&((2 + SEED_BYTES + enc_identity.len()) as u16).to_be_bytes());
    out.extend_from_slice(&(SEED_BYTES as u16).to_be_bytes());
    out.extend_from_slice(outer.as_ref());
    out.extend_from_slice(&enc_identity);
    Ok(out)
}

/// Step 1: RSA-OAEP (SHA-256, label "IDENTITY\0") of the seed to the EK, as a TPM2B.
fn encrypt_seed<R: rand_core::CryptoRngCore>(
    ek: &RsaStorageKey,
    seed: &[u8; SEED_BYTES],
    rng: &mut R,
) -> Result<Vec<u8>, CredentialError> {
    use rsa::{BigUint, Oaep, RsaPublicKey};
    let key = RsaPublicKey::new(
        BigUint::from_bytes_be(&ek.modulus),
        BigUint::from(ek.exponent),
    )
    .map_err(|e| CredentialError::Seed(e.to_string()))?;
    let padding = Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0");
    let secret = key
        .encrypt(rng, padding, seed)
        .map_err(|e| CredentialError::Seed(e.to_string()))?;
    let mut out = (secret.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&secret);
    Ok(out)
}

/// AES-CFB (128-bit feedback) with a zero IV, as the TPM encrypts a credential. The key is 16 or
/// 32 bytes.
fn aes_cfb_encrypt(key: &[u8], plain: &[u8]) -> Vec<u8> {
    aes_cfb_encrypt_iv(key, [0u8; 16], plain)
}

/// The block cipher of a CFB stream: AES with a 16- or 32-byte key.
enum BlockCipher {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
}

impl BlockCipher {
    fn new(key: &[u8]) -> Self {
        match aes::Aes256::new_from_slice(key) {
            Ok(c) => BlockCipher::Aes256(Box::new(c)),
            // protect() admits 128- and 256-bit keys only; any other length uses its first 16
            // bytes (padded with zeros if shorter), never panics.
            Err(_) => {
                let mut k = [0u8; 16];
                let n = key.len().min(16);
                k[..n].copy_from_slice(&key[..n]);
                BlockCipher::Aes128(Box::new(aes::Aes128::new(GenericArray::from_slice(&k))))
            }
        }
    }

    fn encrypt(&self, block: &mut [u8; 16]) {
        let b = GenericArray::from_mut_slice(block);
        match self {
            BlockCipher::Aes128(c) => c.encrypt_block(b),
            BlockCipher::Aes256(c) => c.encrypt_block(b),
        }
    }
}

fn aes_cfb_encrypt_iv(key: &[u8], iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
    let cipher = BlockCipher::new(key);
    let mut feedback = iv;
    let mut out = Vec::with_capacity(plain.len());
    for chunk in plain.chunks(16) {
        cipher.encrypt(&mut feedback);
        let start = out.len();
        out.extend(chunk.iter().zip(feedback.iter()).map(|(p, k)| p ^ k));
        feedback[..chunk.len()].copy_from_slice(&out[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST SP 800-38A, F.3.13 (CFB128-AES128.Encrypt), blocks 1 and 2, and a partial block.
    #[test]
    fn aes_cfb_matches_the_nist_sp800_38a_vector() {
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&hex("000102030405060708090a0b0c0d0e0f"));
        let plain = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let cipher = hex("3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b");
        assert_eq!(aes_cfb_encrypt_iv(&key, iv, &plain), cipher);
        assert_eq!(
            aes_cfb_encrypt_iv(&key, iv, &plain[..20]),
            cipher[..20].to_vec()
        );
    }

    #[test]
    fn the_id_object_is_a_sized_hmac_then_the_encrypted_credential() {
        let seed = [7u8; SEED_BYTES];
        let name = [[0x00, 0x0b].as_slice(), &[9u8; 32]].concat();
        let id = protect(&seed, 128, &name, b"0123456789abcdef0123456789abcdef").unwrap();
        // As tpm2_makecredential writes it for a 32-byte credential: 0x0044, 0x0020, …
        assert_eq!(&id[..4], &[0x00, 0x44, 0x00, 0x20]);
        assert_eq!(id.len(), 2 + 0x44);
        // A different AK name changes both the ciphertext and the HMAC.
        let other = [[0x00, 0x0b].as_slice(), &[8u8; 32]].concat();
        let id2 = protect(&seed, 128, &other, b"0123456789abcdef0123456789abcdef").unwrap();
        assert_ne!(&id[4..36], &id2[4..36]);
        assert_ne!(&id[36..], &id2[36..]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let seed = [1u8; SEED_BYTES];
        let name = [0u8; 34];
        assert_eq!(
            protect(&seed, 128, &name, b""),
            Err(CredentialError::CredentialSize(0))
        );
        assert_eq!(
            protect(&seed, 128, &name, &[0u8; 33]),
            Err(CredentialError::CredentialSize(33))
        );
        assert_eq!(
            protect(&seed, 128, &name[..20], b"x"),
            Err(CredentialError::NameSize(20))
        );
        assert_eq!(
            protect(&seed, 192, &name, b"x"),
            Err(CredentialError::SymBits(192))
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
