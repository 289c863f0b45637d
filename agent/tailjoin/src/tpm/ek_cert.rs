//! The EK certificate (DER) a TPM's maker may have stored in NV index 0x01c00002 (the TCG EK
//! Credential Profile's index for the RSA 2048 EK). Most firmware and discrete TPMs hold one;
//! swtpm holds one only when swtpm_setup made it. An index that is not defined is no error.

use super::TpmError;
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek::retrieve_ek_pubcert};
use tss_esapi::constants::CapabilityType;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::CapabilityData;

/// The TCG's NV index of the RSA 2048 EK certificate.
pub const RSA_2048_EK_CERT_INDEX: u32 = 0x01c0_0002;

/// The certificate, or `None` when the TPM has no such index.
pub(super) fn read(ctx: &mut Context) -> Result<Option<Vec<u8>>, TpmError> {
    // Asking for the index by handle first keeps tss2's own error log quiet when it is absent
    // (reading an undefined index logs an ERROR line on stderr).
    let (data, _) = ctx
        .execute_without_session(|c| {
            c.get_capability(CapabilityType::Handles, RSA_2048_EK_CERT_INDEX, 1)
        })
        .map_err(|e| TpmError::tss("listing the TPM's NV indexes", e))?;
    let defined = match data {
        CapabilityData::Handles(list) => {
            list.iter().any(|h| u32::from(*h) == RSA_2048_EK_CERT_INDEX)
        }
        _ => false,
    };
    if !defined {
        return Ok(None);
    }
    let stored =
        retrieve_ek_pubcert(ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048))
            .map_err(|e| TpmError::tss("reading the EK certificate (NV index 0x01c00002)", e))?;
    Ok(Some(der_only(stored)))
}

/// The DER certificate without what follows it: an NV index is often larger than the
/// certificate and padded (with zeros or 0xff). Left as it is when it does not start with a
/// DER SEQUENCE whose length fits.
pub fn der_only(mut stored: Vec<u8>) -> Vec<u8> {
    if let Some(len) = der_sequence_len(&stored) {
        stored.truncate(len);
    }
    stored
}

/// The whole length (header included) of the DER SEQUENCE at the start of `b`, if it fits.
fn der_sequence_len(b: &[u8]) -> Option<usize> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (header, body) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let digits = rest.get(..n)?;
        let body = digits
            .iter()
            .fold(0usize, |acc, d| (acc << 8) | usize::from(*d));
        (2 + n, body)
    };
    let total = header.checked_add(body)?;
    (total <= b.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_after_the_certificate_is_cut_and_anything_else_left_alone() {
        // A SEQUENCE of 3 bytes (short form), then padding.
        assert_eq!(
            der_only(vec![0x30, 3, 1, 2, 3, 0, 0, 0xff]),
            [0x30, 3, 1, 2, 3]
        );
        // Long form: 0x82 0x01 0x00 = 256 bytes of body.
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(9u8, 256));
        let exact = long.clone();
        long.extend([0u8; 40]);
        assert_eq!(der_only(long), exact);
        // Not DER, or a length longer than what is there: unchanged.
        for odd in [
            vec![],
            vec![0x30],
            vec![0x04, 1, 1],
            vec![0x30, 9, 1],
            vec![0x30, 0x80, 0, 0],
            vec![0x30, 0x85, 1, 1, 1, 1, 1],
        ] {
            assert_eq!(der_only(odd.clone()), odd);
        }
    }
}
