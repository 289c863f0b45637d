//! The agent's TPM half against a real TPM: swtpm (Debian), checked with tpm2-tools. The known
//! answers are the tools': the EK the agent shows is byte for byte what `tpm2_createek` makes on
//! the same TPM, and a credential `tpm2_makecredential` wraps in software to the agent's EK and
//! AK Name is unwrapped by the agent's TPM2_ActivateCredential; another TPM, or a changed byte,
//! gets an error.
//!
//! Needs `swtpm` and `tpm2-tools` (tests/lib/ensure-deps.sh installs them); without them every
//! test here fails and names what is missing.

mod swtpm;

use swtpm::{SwTpm, free_port_pair, make_credential, need};
use tailjoin::tpm::TpmKeys;
use tailjoin::tpm::marshal::{fingerprint, name_sha256, tpm2b_body};
use tailjoin_common::wire::{from_hex, to_hex};

#[test]
fn the_agents_ek_is_the_one_tpm2_createek_makes_and_the_evidence_is_well_formed() {
    let tpm = SwTpm::start();
    let keys = tpm.keys();
    let evidence = keys.evidence();
    let ek_public = keys.ek_public().to_vec();
    let ak_public = keys.ak_public().to_vec();
    let ak_name = keys.ak_name().to_vec();
    let ek_fp = keys.ek_fingerprint().to_owned();
    assert_eq!(from_hex(&evidence.ek_public), Some(ek_public.clone()));
    assert_eq!(from_hex(&evidence.ak_public), Some(ak_public.clone()));
    // A fresh swtpm has no EK certificate in NV (swtpm_setup would make one): none is sent.
    assert_eq!(evidence.ek_certificate, None);
    assert!(keys.certificate_problem().is_none());
    drop(keys);

    // The same EK at every opening: the provisioner approves a machine by it.
    let again = tpm.keys();
    assert_eq!(
        again.ek_public(),
        ek_public,
        "the EK changed between two openings"
    );
    assert_ne!(
        again.ak_public(),
        ak_public,
        "each opening makes a fresh AK"
    );
    drop(again);

    // Byte for byte what tpm2-tools make and report on the same TPM.
    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    assert_eq!(
        tpm.read("ek.pub"),
        ek_public,
        "EK TPM2B_PUBLIC differs from tpm2_createek -u"
    );
    tpm.tool(&["tpm2_readpublic", "-c", "ek.ctx", "-n", "ek.name"]);
    let tools_name = tpm.read("ek.name");
    let tpmt = tpm2b_body(&ek_public, "EK").expect("the EK is one whole TPM2B");
    assert_eq!(
        name_sha256(tpmt),
        tools_name,
        "EK Name differs from tpm2_readpublic -n"
    );
    assert_eq!(ek_fp, format!("sha256:{}", to_hex(&tools_name[2..])));
    assert_eq!(fingerprint(tpmt), ek_fp);

    // The AK is what the provisioner checks for: tpm2_print reads it as an RSA restricted
    // signing key with RSASSA/SHA-256, and its Name is the SHA-256 Name of its public area.
    std::fs::write(tpm.path("ak.pub"), &ak_public).expect("write the AK");
    let printed = tpm.tool(&["tpm2_print", "-t", "TPM2B_PUBLIC", "ak.pub"]);
    let printed = String::from_utf8_lossy(&printed.stdout).to_lowercase();
    for expected in ["rsa", "rsassa", "sha256", "restricted", "sign", "fixedtpm"] {
        assert!(printed.contains(expected), "AK lacks {expected}: {printed}");
    }
    let ak_tpmt = tpm2b_body(&ak_public, "AK").expect("the AK is one whole TPM2B");
    assert_eq!(name_sha256(ak_tpmt), ak_name);
}

#[test]
fn the_agents_tpm_activates_what_tpm2_makecredential_wrapped_and_another_tpm_cannot() {
    let a = SwTpm::start();
    let b = SwTpm::start();
    let mut a_keys = a.keys();
    let mut b_keys = b.keys();
    assert_ne!(a_keys.ek_fingerprint(), b_keys.ek_fingerprint());

    let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let (id_object, encrypted) =
        make_credential(a.dir.path(), a_keys.ek_public(), a_keys.ak_name(), &secret);
    let got = a_keys
        .activate(&id_object, &encrypted)
        .unwrap_or_else(|e| panic!("A activates its own credential: {e}"));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&got),
        secret.as_slice()
    );
    // Again: the keys stay loaded for the next challenge of the same request.
    let second: Vec<u8> = vec![0xc3; 32];
    let (id2, enc2) = make_credential(a.dir.path(), a_keys.ek_public(), a_keys.ak_name(), &second);
    let got = a_keys.activate(&id2, &enc2).expect("a second activation");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&got),
        second.as_slice()
    );

    // Another TPM given A's challenge: its EK cannot decrypt the seed. An error, no panic.
    let e = b_keys
        .activate(&id_object, &encrypted)
        .expect_err("B activated a credential made for A's EK");
    assert!(e.to_string().contains("refused to activate"), "{e}");

    // Made for A's EK but B's AK Name: A refuses.
    let (id_other, enc_other) =
        make_credential(a.dir.path(), a_keys.ek_public(), b_keys.ak_name(), &secret);
    a_keys
        .activate(&id_other, &enc_other)
        .expect_err("A activated a credential made for another AK");

    // A changed byte of the ID object or of the encrypted seed: refused.
    for at in [5usize, id_object.len() - 1] {
        let mut changed = id_object.clone();
        changed[at] ^= 1;
        a_keys
            .activate(&changed, &encrypted)
            .expect_err(&format!("A activated an ID object changed at byte {at}"));
    }
    let mut changed = encrypted.clone();
    changed[100] ^= 1;
    a_keys
        .activate(&id_object, &changed)
        .expect_err("A activated a changed encrypted secret");

    // Malformed framing is refused before the TPM sees it.
    for (id, enc) in [
        (&id_object[..1], &encrypted[..]),
        (&id_object[..id_object.len() - 1], &encrypted[..]),
        (&id_object[..], &[0u8, 9, 1][..]),
        (&[][..], &[][..]),
    ] {
        let e = a_keys
            .activate(id, enc)
            .expect_err("malformed input accepted");
        assert!(e.to_string().contains("malformed"), "{e}");
    }

    // After all these errors the TPM still works: nothing was left loaded that blocks it.
    let got = a_keys
        .activate(&id_object, &encrypted)
        .expect("A still activates");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&got),
        secret.as_slice()
    );
}

#[test]
fn a_tcti_where_no_tpm_listens_is_a_clear_error() {
    need("swtpm");
    let port = free_port_pair();
    let e = TpmKeys::open(&format!("swtpm:host=127.0.0.1,port={port}"))
        .expect_err("opened a TPM where none listens");
    assert!(e.to_string().contains("cannot open the TPM"), "{e}");
}
