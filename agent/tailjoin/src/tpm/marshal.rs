//! The byte forms a TPM-proven request uses, without a TPM: a TPM2B (two-byte big-endian size,
//! then the structure), an object's Name and the EK fingerprint the provisioner shows.

use super::TpmError;

/// TPM_ALG_SHA256, the name algorithm of the TCG default RSA 2048 EK and of the agent's AK.
pub const ALG_SHA256: u16 = 0x000b;

/// `body` as a TPM2B: its size (two bytes, big-endian), then `body`. `None` when it is longer
/// than a TPM2B can say (64 KiB).
pub fn tpm2b(body: &[u8]) -> Option<Vec<u8>> {
    let size = u16::try_from(body.len()).ok()?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// The structure inside a TPM2B, which must be all of `bytes`: the size must say exactly how
/// many bytes follow. `what` names it in the error.
pub fn tpm2b_body<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], TpmError> {
    let bad = |problem: String| TpmError::new(format!("the {what} is malformed: {problem}"));
    let Some((size, body)) = bytes.split_first_chunk::<2>() else {
        return Err(bad(format!(
            "{} bytes, shorter than its 2-byte size",
            bytes.len()
        )));
    };
    let size = usize::from(u16::from_be_bytes(*size));
    if size != body.len() {
        return Err(bad(format!(
            "its size says {size} bytes but {} follow",
            body.len()
        )));
    }
    Ok(body)
}

/// An object's Name for a SHA-256 name algorithm: the algorithm's id, then SHA-256 of its
/// TPMT_PUBLIC (34 bytes). The TPM computes the same; MakeCredential binds the AK's.
pub fn name_sha256(tpmt_public: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, tpmt_public);
    let mut name = ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(digest.as_ref());
    name
}

/// The EK's fingerprint as `tailjoin-provisioner pending` shows it: `sha256:` and the hex of
/// the digest in its Name (`tpm2_readpublic` prints the Name, with its `000b` in front).
pub fn fingerprint(tpmt_public: &[u8]) -> String {
    let name = name_sha256(tpmt_public);
    format!(
        "sha256:{}",
        tailjoin_common::wire::to_hex(name.get(2..).unwrap_or_default())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tpm2b_is_its_size_then_its_body_and_only_an_exact_size_is_read_back() {
        assert_eq!(tpm2b(b"abc").unwrap(), b"\x00\x03abc");
        assert_eq!(tpm2b(b"").unwrap(), b"\x00\x00");
        assert_eq!(tpm2b(&vec![7u8; 300]).unwrap()[..2], [1, 44]);
        assert!(tpm2b(&vec![0u8; 65536]).is_none());
        assert_eq!(tpm2b_body(b"\x00\x03abc", "ID object").unwrap(), b"abc");
        assert_eq!(tpm2b_body(b"\x00\x00", "ID object").unwrap(), b"");
        for bad in [&b""[..], b"\x00", b"\x00\x04abc", b"\x00\x02abc"] {
            let e = tpm2b_body(bad, "ID object").unwrap_err().to_string();
            assert!(e.contains("ID object is malformed"), "{e}");
        }
    }

    #[test]
    fn the_name_is_the_sha256_algorithm_id_then_the_digest_and_the_fingerprint_its_hex() {
        // SHA-256 of "abc" (FIPS 180-2's example).
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let name = name_sha256(b"abc");
        assert_eq!(name.len(), 34);
        assert_eq!(
            tailjoin_common::wire::to_hex(&name),
            format!("000b{digest}")
        );
        assert_eq!(fingerprint(b"abc"), format!("sha256:{digest}"));
    }
}
