//! A TPM object's public area (TPM2B_PUBLIC, TPM 2.0 Part 2 §12.2.5), as a machine sends it, and
//! its Name: the name algorithm's id followed by the hash of the TPMT_PUBLIC (Part 1 §16).

use thiserror::Error;

pub const ALG_RSA: u16 = 0x0001;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_CFB: u16 = 0x0043;
pub const ALG_NULL: u16 = 0x0010;
pub const ALG_ECC: u16 = 0x0023;

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// Largest public area accepted; an RSA 4096 key's is ~600 bytes.
pub const MAX_PUBLIC_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublicError {
    #[error("the {what} is not a TPM2B_PUBLIC: {problem}")]
    Malformed { what: &'static str, problem: String },
    #[error("the {what} is not supported: {problem}")]
    Unsupported { what: &'static str, problem: String },
}

/// A parsed TPMT_PUBLIC, kept as its bytes (the Name is their hash) with the fields every check
/// needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    tpmt: Vec<u8>,
    pub object_type: u16,
    pub name_alg: u16,
    pub attributes: u32,
}

/// An RSA storage key's public part: what MakeCredential needs of an EK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaStorageKey {
    /// The modulus, big-endian.
    pub modulus: Vec<u8>,
    pub exponent: u32,
    /// The inner symmetric cipher: AES-`sym_bits`-CFB.
    pub sym_bits: u16,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], PublicError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return Err(PublicError::Malformed {
                what: self.what,
                problem: format!("it ends inside {field}"),
            });
        };
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self, field: &str) -> Result<u16, PublicError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &str) -> Result<u32, PublicError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn sized(&mut self, field: &str) -> Result<&'a [u8], PublicError> {
        let n = self.u16(field)? as usize;
        self.take(n, field)
    }
}

impl TpmPublic {
    /// Reads a TPM2B_PUBLIC (two bytes of size, then the TPMT_PUBLIC); `what` names it in errors
    /// ("EK public area").
    pub fn parse_tpm2b(data: &[u8], what: &'static str) -> Result<Self, PublicError> {
        if data.len() > MAX_PUBLIC_BYTES {
            return Err(PublicError::Malformed {
                what,
                problem: format!("{} bytes is more than {MAX_PUBLIC_BYTES}", data.len()),
            });
        }
        let mut r = Reader { data, at: 0, what };
        let size = r.u16("its size")? as usize;
        if size != data.len() - 2 {
            return Err(PublicError::Malformed {
                what,
                problem: format!("it says {size} bytes but {} follow", data.len() - 2),
            });
        }
        let tpmt = data[2..].to_vec();
        let object_type = r.u16("type")?;
        let name_alg = r.u16("nameAlg")?;
        let attributes = r.u32("objectAttributes")?;
        r.sized("authPolicy")?;
        if name_alg != ALG_SHA256 {
            return Err(PublicError::Unsupported {
                what,
                problem: format!(
                    "its name algorithm is 0x{name_alg:04x}; only SHA-256 (0x000b) is"
                ),
            });
        }
        Ok(TpmPublic {
            tpmt,
            object_type,
            name_alg,
            attributes,
        })
    }

    /// The TPMT_PUBLIC as the TPM marshals it.
    pub fn tpmt_bytes(&self) -> &[u8] {
        &self.tpmt
    }

    /// The object's Name: nameAlg (SHA-256) then SHA-256 of the TPMT_PUBLIC; 34 bytes.
    pub fn name(&self) -> Vec<u8> {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.tpmt);
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(digest.as_ref());
        name
    }

    /// The EK's fingerprint as a person compares it: `sha256:` and the hex of the Name's digest
    /// (`tpm2_readpublic` prints the same Name, with its 000b prefix).
    pub fn fingerprint(&self) -> String {
        format!(
            "sha256:{}",
            tailjoin_common::wire::to_hex(&self.name()[2..])
        )
    }

    /// The public part of an RSA restricted decryption key with AES-CFB inside: what an EK is in
    /// the TCG default template. Anything else is refused with the reason.
    pub fn rsa_storage_key(&self) -> Result<RsaStorageKey, PublicError> {
        let what = "EK public area";
        let unsupported = |problem: String| PublicError::Unsupported { what, problem };
        if self.object_type == ALG_ECC {
            return Err(unsupported(
                "it is an ECC key; tailjoin releases keys to RSA 2048 EKs (the TCG default \
                 template, which every TPM 2.0 has besides its ECC EK)"
                    .into(),
            ));
        }
        if self.object_type != ALG_RSA {
            return Err(unsupported(format!(
                "its type is 0x{:04x}, not RSA",
                self.object_type
            )));
        }
        let need = attr::RESTRICTED | attr::DECRYPT | attr::FIXED_TPM | attr::FIXED_PARENT;
        if self.attributes & need != need || self.attributes & attr::SIGN != 0 {
            return Err(unsupported(format!(
                "its attributes 0x{:08x} are not those of a restricted decryption key that stays \
                 in its TPM (fixedTPM, fixedParent, restricted, decrypt, not sign)",
                self.attributes
            )));
        }
        let mut r = Reader {
            data: &self.tpmt,
            at: 0,
            what,
        };
        r.take(8, "the header")?;
        r.sized("authPolicy")?;
        let sym = r.u16("symmetric.algorithm")?;
        if sym != ALG_AES {
            return Err(unsupported(format!(
                "its symmetric cipher is 0x{sym:04x}, not AES"
            )));
        }
        let sym_bits = r.u16("symmetric.keyBits")?;
        let mode = r.u16("symmetric.mode")?;
        if mode != ALG_CFB || !matches!(sym_bits, 128 | 256) {
            return Err(unsupported(format!(
                "its symmetric cipher is AES-{sym_bits} in mode 0x{mode:04x}, not AES-128/256-CFB"
            )));
        }
        let scheme = r.u16("scheme")?;
        if scheme != ALG_NULL {
            return Err(unsupported(format!(
                "its scheme is 0x{scheme:04x}; a storage key has none"
            )));
        }
        let key_bits = r.u16("keyBits")?;
        let exponent = match r.u32("exponent")? {
            0 => 65537,
            e => e,
        };
        let modulus = r.sized("unique (the modulus)")?.to_vec();
        if !(2048..=4096).contains(&key_bits) || modulus.len() * 8 != key_bits as usize {
            return Err(unsupported(format!(
                "a {key_bits}-bit key with a {}-byte modulus; 2048 to 4096 bits are",
                modulus.len()
            )));
        }
        if r.at != self.tpmt.len() {
            return Err(PublicError::Malformed {
                what,
                problem: format!("{} bytes follow the modulus", self.tpmt.len() - r.at),
            });
        }
        Ok(RsaStorageKey {
            modulus,
            exponent,
            sym_bits,
        })
    }

    /// Checks that an AK is a restricted signing key that never leaves its TPM, as
    /// `tpm2_createak` makes it.
    pub fn check_attestation_key(&self) -> Result<(), PublicError> {
        let need = attr::RESTRICTED
            | attr::SIGN
            | attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN;
        if self.attributes & need != need || self.attributes & attr::DECRYPT != 0 {
            return Err(PublicError::Unsupported {
                what: "AK public area",
                problem: format!(
                    "its attributes 0x{:08x} are not those of an attestation key (fixedTPM, \
                     fixedParent, sensitiveDataOrigin, restricted, sign, not decrypt)",
                    self.attributes
                ),
            });
        }
        Ok(())
    }
}
