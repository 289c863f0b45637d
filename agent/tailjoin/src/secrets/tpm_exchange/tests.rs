use super::*;
use reqwest::StatusCode as S;
use tailjoin_common::wire::TpmChallenge;

fn identity() -> MachineIdentity {
    MachineIdentity {
        hostname: "node-1".into(),
        machine_id: "0123".into(),
        boot_id: "b-1".into(),
        mac_addresses: vec!["52:54:00:12:34:56".into()],
        tpm: None,
        tpm_proof: None,
    }
}

fn evidence() -> TpmEvidence {
    TpmEvidence {
        ek_public: "0001aa".into(),
        ek_certificate: None,
        ak_public: "0001bb".into(),
    }
}

const CRED: [u8; 32] = [0x42; 32];

fn credential() -> Credential {
    credential_of(&CRED).ok().unwrap()
}

fn json() -> ResponseFormat {
    ResponseFormat::Json {
        field: "key".into(),
    }
}

fn challenge_json(id: &str, id_object: &str, secret: &str) -> Vec<u8> {
    serde_json::to_vec(&TpmChallengeAnswer {
        tpm_challenge: TpmChallenge {
            id: id.into(),
            id_object: id_object.into(),
            encrypted_secret: secret.into(),
            ek_fingerprint: "sha256:ab".into(),
        },
    })
    .unwrap()
}

fn err<T: std::fmt::Debug>(r: Result<T, Attempt>) -> Attempt {
    match r {
        Ok(v) => panic!("expected a failed attempt, got {v:?}"),
        Err(a) => a,
    }
}

#[test]
fn step_one_shows_the_tpm_and_step_two_proves_the_credential_without_sending_it() {
    let one = step1_body(&identity(), &evidence());
    assert_eq!(one.tpm, Some(evidence()));
    assert_eq!(one.tpm_proof, None);
    assert_eq!(
        (one.hostname.as_str(), one.boot_id.as_str()),
        ("node-1", "b-1")
    );
    assert_eq!(one.mac_addresses, identity().mac_addresses);

    let two = step2_body(&identity(), "ch-1", &credential());
    assert_eq!(two.tpm, None);
    assert_eq!(two.hostname, "node-1");
    let proof = two.tpm_proof.clone().unwrap();
    assert_eq!(proof.challenge_id, "ch-1");
    let sent = from_hex(&proof.proof).unwrap();
    assert!(key_seal::proof_matches(&CRED, "ch-1", &sent));
    assert!(!key_seal::proof_matches(&CRED, "ch-2", &sent));
    let text = serde_json::to_string(&two).unwrap();
    assert!(
        !text.contains(&to_hex(&CRED)),
        "the credential itself is sent"
    );
}

#[test]
fn a_challenge_is_read_and_a_plain_answer_is_the_key_as_before() {
    let body = challenge_json("ch-1", "0003abcdef", "0002ffee");
    let Step1Answer::Challenge(c) = read_step1_answer(body, &json()).ok().unwrap() else {
        panic!("not a challenge")
    };
    assert_eq!(c.id, "ch-1");
    assert_eq!(c.id_object, [0, 3, 0xab, 0xcd, 0xef]);
    assert_eq!(c.encrypted_secret, [0, 2, 0xff, 0xee]);
    assert_eq!(c.ek_fingerprint, "sha256:ab");

    let plain = br#"{"key":"fake-key-1","id":"7"}"#.to_vec();
    let Step1Answer::Key(k) = read_step1_answer(plain, &json()).ok().unwrap() else {
        panic!("not a key")
    };
    assert_eq!(k, "fake-key-1");
    let Step1Answer::Key(k) = read_step1_answer(b"fake-raw-key".to_vec(), &ResponseFormat::Raw)
        .ok()
        .unwrap()
    else {
        panic!("not a key")
    };
    assert_eq!(k, "fake-raw-key");
    // A plain answer that lacks the key fails as it always did, without echoing the body.
    let a = err(read_step1_answer(
        br#"{"authkey":"fake-secret-9"}"#.to_vec(),
        &json(),
    ));
    assert!(a.reason.contains("no field") && !a.reason.contains("fake-secret-9"));
}

#[test]
fn a_malformed_challenge_is_refused_for_good_and_says_what_is_wrong() {
    let cases = [
        (challenge_json("ch-1", "0003zz", "00"), "id_object"),
        (challenge_json("ch-1", "00", "abc"), "encrypted_secret"),
        (challenge_json("", "00", "00"), "id"),
        (challenge_json("bad id\n", "00", "00"), "id"),
        (challenge_json(&"x".repeat(200), "00", "00"), "id"),
        (
            br#"{"tpm_challenge": {"id": "ch-1"}}"#.to_vec(),
            "malformed",
        ),
        (
            br#"{"tpm_challenge": "fake-secret-7"}"#.to_vec(),
            "malformed",
        ),
    ];
    for (body, what) in cases {
        let a = err(read_step1_answer(body, &json()));
        assert!(!a.transient, "{}", a.reason);
        assert!(a.reason.contains(what), "{what}: {}", a.reason);
        assert!(!a.reason.contains("fake-secret-7"), "{}", a.reason);
        assert!(a.fix.contains("same tailjoin version"), "{}", a.fix);
    }
}

#[test]
fn a_challenge_for_another_ek_is_refused_naming_both() {
    let mut c = exchange_challenge("sha256:AB12");
    assert!(check_fingerprint(&c, "sha256:ab12").is_ok());
    c.ek_fingerprint = String::new();
    assert!(check_fingerprint(&c, "sha256:ab12").is_ok());
    c.ek_fingerprint = "sha256:ffff".into();
    let a = err(check_fingerprint(&c, "sha256:ab12"));
    assert!(!a.transient);
    assert!(
        a.reason.contains("sha256:ffff") && a.reason.contains("sha256:ab12"),
        "{}",
        a.reason
    );
    assert!(a.fix.contains("pending"));
}

fn exchange_challenge(fingerprint: &str) -> Challenge {
    Challenge {
        id: "ch-1".into(),
        id_object: vec![0, 0],
        encrypted_secret: vec![0, 0],
        ek_fingerprint: fingerprint.into(),
    }
}

#[test]
fn the_credential_is_exactly_32_bytes() {
    assert_eq!(credential().expose_secret(), &CRED);
    for len in [0, 16, 31, 33, 64] {
        let a = err(credential_of(&vec![1; len]));
        assert!(a.reason.contains(&format!("{len} bytes")) && !a.transient);
    }
}

#[test]
fn a_refused_proof_says_so_and_only_an_unknown_challenge_is_worth_a_new_one() {
    for status in [S::NOT_FOUND, S::GONE, S::CONFLICT] {
        let a = proof_status_error(status, "", true, "ch-9");
        assert!(a.transient, "{status}");
        assert!(a.reason.contains("ch-9") && a.reason.contains("no longer knows"));
        assert!(a.reason.contains(&status.as_u16().to_string()));
    }
    let a = proof_status_error(S::FORBIDDEN, ": activation failed", true, "ch-9");
    assert!(!a.transient);
    assert!(
        a.reason
            .contains("proof for TPM challenge ch-9 was refused")
    );
    assert!(a.reason.contains("activation failed") && a.fix.contains("pending"));
    let a = proof_status_error(S::UNAUTHORIZED, "", true, "ch-9");
    assert!(!a.transient && a.fix.contains("bearer_token"));
    // Busy, or waiting for an admin: retried like any 5xx.
    let a = proof_status_error(S::SERVICE_UNAVAILABLE, "", false, "ch-9");
    assert!(a.transient && a.reason.contains("503"));
}

fn sealed_answer(sealed: &str, challenge_id: &str) -> Vec<u8> {
    serde_json::to_vec(&SealedKeyAnswer {
        sealed_key: sealed.into(),
        challenge_id: challenge_id.into(),
        id: "key-7".into(),
        expires: Some("2026-12-07T20:00:00Z".into()),
        ephemeral: true,
        tags: vec!["tag:netboot".into()],
    })
    .unwrap()
}

#[test]
fn the_sealed_key_opens_with_the_tpms_credential_only() {
    let sealed = to_hex(&key_seal::seal(&CRED, "ch-1", b"fake-sealed-key-1").unwrap());
    let key = open_sealed_answer(sealed_answer(&sealed, "ch-1"), &credential(), "ch-1");
    assert_eq!(key.ok().unwrap(), "fake-sealed-key-1");

    // Another credential (another TPM): it does not open, and that is not retried.
    let other = credential_of(&[7; 32]).ok().unwrap();
    let a = err(open_sealed_answer(
        sealed_answer(&sealed, "ch-1"),
        &other,
        "ch-1",
    ));
    assert!(
        !a.transient && a.reason.contains("does not open"),
        "{}",
        a.reason
    );
    assert!(!a.reason.contains("fake-sealed") && !a.fix.contains("fake-sealed"));

    // An answer for another challenge, a sealed key that is not hex, a changed byte.
    let a = err(open_sealed_answer(
        sealed_answer(&sealed, "ch-2"),
        &credential(),
        "ch-1",
    ));
    assert!(!a.transient && a.reason.contains("another TPM challenge"));
    let a = err(open_sealed_answer(
        sealed_answer("xyz", "ch-1"),
        &credential(),
        "ch-1",
    ));
    assert!(a.reason.contains("not hex"));
    let mut changed = from_hex(&sealed).unwrap();
    changed[20] ^= 1;
    let a = err(open_sealed_answer(
        sealed_answer(&to_hex(&changed), "ch-1"),
        &credential(),
        "ch-1",
    ));
    assert!(a.reason.contains("does not open"));

    // Opens, but is not text.
    let binary = to_hex(&key_seal::seal(&CRED, "ch-1", &[0xff, 0xfe]).unwrap());
    let a = err(open_sealed_answer(
        sealed_answer(&binary, "ch-1"),
        &credential(),
        "ch-1",
    ));
    assert!(a.reason.contains("not UTF-8"));
}

#[test]
fn an_unsealed_or_malformed_answer_to_the_proof_is_refused_without_echoing_it() {
    let a = err(open_sealed_answer(
        br#"{"key":"fake-plain-key-3","id":"7"}"#.to_vec(),
        &credential(),
        "ch-1",
    ));
    assert!(
        !a.transient && a.reason.contains("unsealed key"),
        "{}",
        a.reason
    );
    assert!(!a.reason.contains("fake-plain-key-3"));
    for body in [&b"fake-plain-key-3"[..], b"{}", b"[1,2]", b""] {
        let a = err(open_sealed_answer(body.to_vec(), &credential(), "ch-1"));
        assert!(a.reason.contains("not a sealed key"), "{}", a.reason);
        assert!(!a.reason.contains("fake-plain-key-3"));
    }
}
