//! What a booting machine shows of its TPM, as the provisioner reads it: an EK or AK public area
//! (TPM2B_PUBLIC) and an EK certificate (DER, checked against a set of CAs). The first byte picks
//! the parser; nothing here may panic or loop on hostile bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tailjoin_provisioner::tpm::ek_cert::{EkCaSet, issuer_of};
use tailjoin_provisioner::tpm::public::{RsaStorageKey, TpmPublic};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(p) = TpmPublic::parse_tpm2b(rest, "fuzz") {
            let _ = p.name();
            let _ = p.fingerprint();
            let _ = p.rsa_storage_key();
            let _ = p.check_attestation_key();
        }
    } else {
        let _ = issuer_of(rest);
        let ek = RsaStorageKey {
            modulus: vec![0xc5; 256],
            exponent: 65537,
            sym_bits: 128,
        };
        let _ = EkCaSet::default().verify(rest, &ek, 1_800_000_000);
    }
});
