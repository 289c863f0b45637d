//! KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC, as the TPM uses it to
//! derive the symmetric and integrity keys of a credential from its seed.

use ring::hmac;

/// KDFa with HMAC-SHA-256: `bits` bits (a multiple of 8) from `key`, `label` (a NUL is appended,
/// as the TPM does), `context_u` and `context_v`.
pub fn kdfa_sha256(
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = (bits / 8) as usize;
    let mut out = Vec::with_capacity(want + 32);
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same derivation written out by hand for one block: HMAC(key, 1 || label || 0 || u || v
    /// || bits), so a change in the field order or the NUL is caught.
    #[test]
    fn one_block_is_the_hmac_of_the_counter_label_contexts_and_length() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"seed");
        let mut msg = vec![0, 0, 0, 1];
        msg.extend_from_slice(b"STORAGE\0");
        msg.extend_from_slice(b"name");
        msg.extend_from_slice(&128u32.to_be_bytes());
        let expect = hmac::sign(&key, &msg);
        assert_eq!(
            kdfa_sha256(b"seed", "STORAGE", b"name", b"", 128),
            expect.as_ref()[..16].to_vec()
        );
    }

    #[test]
    fn longer_outputs_chain_counter_blocks_and_bind_the_length() {
        let long = kdfa_sha256(b"seed", "INTEGRITY", b"", b"", 512);
        assert_eq!(long.len(), 64);
        // The length is an input: the first 32 bytes of a 512-bit output differ from a 256-bit one.
        assert_ne!(
            &long[..32],
            kdfa_sha256(b"seed", "INTEGRITY", b"", b"", 256).as_slice()
        );
        assert_ne!(&long[..32], &long[32..]);
    }
}
