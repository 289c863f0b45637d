//! Tests of [`super`]: certificates made at test time (ring ECDSA keys, a small DER writer).

use super::*;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
};
use std::time::Duration;
use x509_cert::der::Encode;
use x509_cert::der::asn1::{GeneralizedTime, UintRef, UtcTime};

/// 2027-01-15; the certificates below are valid around it.
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
/// 9999-12-31T23:59:59Z, the notAfter of many EK certificates (and of swtpm's).
const FOREVER: u64 = 253_402_300_799;

// --- a small DER writer: enough to make certificates of every shape the tests need ---

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(o: ObjectIdentifier) -> Vec<u8> {
    o.to_der().unwrap()
}

fn oid_str(s: &str) -> Vec<u8> {
    oid(ObjectIdentifier::new(s).unwrap())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[[0u8].as_slice(), bytes].concat())
}

fn time(secs: u64) -> Vec<u8> {
    let d = Duration::from_secs(secs);
    match UtcTime::from_unix_duration(d) {
        Ok(t) => t.to_der().unwrap(),
        Err(_) => GeneralizedTime::from_unix_duration(d)
            .unwrap()
            .to_der()
            .unwrap(),
    }
}

/// `O=Tailjoin Test, CN=cn` (shown `CN=cn,O=Tailjoin Test`).
fn name(cn: &str) -> Vec<u8> {
    let rdn =
        |attr: &str, value: &str| tlv(0x31, &seq(&[&oid_str(attr), &tlv(0x0c, value.as_bytes())]));
    seq(&[&rdn("2.5.4.10", "Tailjoin Test"), &rdn("2.5.4.3", cn)])
}

fn extension(id: &str, critical: bool, value: &[u8]) -> Vec<u8> {
    let crit = if critical { tlv(0x01, &[0xff]) } else { vec![] };
    seq(&[&oid_str(id), &crit, &tlv(0x04, value)])
}

fn basic_constraints(ca: bool, path_len: Option<u8>) -> Vec<u8> {
    let ca = if ca { tlv(0x01, &[0xff]) } else { vec![] };
    let len = path_len.map(|l| tlv(0x02, &[l])).unwrap_or_default();
    extension("2.5.29.19", true, &seq(&[&ca, &len]))
}

/// keyUsage keyCertSign + cRLSign (a CA's), or keyEncipherment (an EK's).
fn key_usage(ca: bool) -> Vec<u8> {
    let bits = if ca { [0x01, 0x06] } else { [0x05, 0x20] };
    extension("2.5.29.15", true, &tlv(0x03, &bits))
}

/// What TPM vendors put in EK certificates: a critical subjectAltName holding only a
/// directoryName of TPM attributes, the TCG's EKU, and (here) an unknown critical extension.
fn ek_extensions() -> Vec<Vec<u8>> {
    let attr = |id: &str, v: &str| tlv(0x31, &seq(&[&oid_str(id), &tlv(0x0c, v.as_bytes())]));
    let tpm_name = seq(&[
        &attr("2.23.133.2.1", "id:00001014"),
        &attr("2.23.133.2.2", "swtpm"),
        &attr("2.23.133.2.3", "id:20191023"),
    ]);
    vec![
        extension("2.5.29.17", true, &seq(&[&tlv(0xa4, &tpm_name)])),
        extension("2.5.29.37", false, &seq(&[&oid_str("2.23.133.8.1")])),
        extension("1.3.6.1.4.1.55555.1", true, &tlv(0x05, &[])),
        basic_constraints(false, None),
        key_usage(false),
    ]
}

fn rsa_spki(oid_alg: ObjectIdentifier, modulus: &[u8], exponent: u32) -> Vec<u8> {
    let n = UintRef::new(modulus).unwrap().to_der().unwrap();
    let e = UintRef::new(&exponent.to_be_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let null = if oid_alg == oids::RSA_ENCRYPTION {
        tlv(0x05, &[])
    } else {
        vec![]
    };
    seq(&[&seq(&[&oid(oid_alg), &null]), &bit_string(&seq(&[&n, &e]))])
}

fn ek(seed: u8) -> RsaStorageKey {
    let mut modulus = vec![0u8; 256];
    SystemRandom::new().fill(&mut modulus).unwrap();
    modulus[0] |= 0x80;
    modulus[1] = seed;
    modulus[255] |= 1;
    RsaStorageKey {
        modulus,
        exponent: 65537,
        sym_bits: 128,
    }
}

fn ek_spki(ek: &RsaStorageKey) -> Vec<u8> {
    rsa_spki(oids::RSA_ENCRYPTION, &ek.modulus, ek.exponent)
}

/// A CA's ECDSA key and name.
struct Ca {
    key: EcdsaKeyPair,
    p384: bool,
    name: Vec<u8>,
}

impl Ca {
    fn new(cn: &str, p384: bool) -> Ca {
        let rng = SystemRandom::new();
        let alg = if p384 {
            &ECDSA_P384_SHA384_ASN1_SIGNING
        } else {
            &ECDSA_P256_SHA256_ASN1_SIGNING
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Ca {
            key,
            p384,
            name: name(cn),
        }
    }

    fn spki(&self) -> Vec<u8> {
        let curve = if self.p384 {
            oids::SECP_384_R_1
        } else {
            oids::SECP_256_R_1
        };
        seq(&[
            &seq(&[&oid(oids::ID_EC_PUBLIC_KEY), &oid(curve)]),
            &bit_string(self.key.public_key().as_ref()),
        ])
    }

    fn sig_alg(&self) -> ObjectIdentifier {
        if self.p384 {
            oids::ECDSA_WITH_SHA_384
        } else {
            oids::ECDSA_WITH_SHA_256
        }
    }

    /// Signs a certificate of `subject` for `spki`.
    fn issue(&self, cert: Cert) -> Vec<u8> {
        let alg = cert.sig_alg.unwrap_or(self.sig_alg());
        let outer_alg = cert.outer_sig_alg.unwrap_or(alg);
        let exts: Vec<u8> = cert.extensions.concat();
        let tbs = seq(&[
            &tlv(0xa0, &tlv(0x02, &[2])),
            &tlv(0x02, &[0x01, cert.serial]),
            &seq(&[&oid(alg)]),
            &self.name,
            &seq(&[&time(cert.not_before), &time(cert.not_after)]),
            &cert.subject,
            &cert.spki,
            &tlv(0xa3, &seq(&[&exts])),
        ]);
        let signature = self.key.sign(&SystemRandom::new(), &tbs).unwrap();
        seq(&[
            &tbs,
            &seq(&[&oid(outer_alg)]),
            &bit_string(signature.as_ref()),
        ])
    }

    /// This CA's certificate, issued by `by` (itself: self-signed).
    fn cert_by(&self, by: &Ca, path_len: Option<u8>, not_after: u64) -> Vec<u8> {
        by.issue(Cert {
            subject: self.name.clone(),
            spki: self.spki(),
            not_after,
            extensions: vec![basic_constraints(true, path_len), key_usage(true)],
            ..Cert::default()
        })
    }

    fn self_signed(&self) -> Vec<u8> {
        self.cert_by(self, None, FOREVER)
    }
}

struct Cert {
    serial: u8,
    subject: Vec<u8>,
    spki: Vec<u8>,
    not_before: u64,
    not_after: u64,
    extensions: Vec<Vec<u8>>,
    sig_alg: Option<ObjectIdentifier>,
    outer_sig_alg: Option<ObjectIdentifier>,
}

impl Default for Cert {
    fn default() -> Self {
        Cert {
            serial: 7,
            // EK certificates' subject is often empty.
            subject: seq(&[]),
            spki: vec![],
            not_before: NOW - 365 * DAY,
            not_after: FOREVER,
            extensions: ek_extensions(),
            sig_alg: None,
            outer_sig_alg: None,
        }
    }
}

fn pem(ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn set(ders: &[&[u8]]) -> EkCaSet {
    EkCaSet::from_pem(&pem(ders), "test.pem").unwrap()
}

/// A vendor: root (P-384) → intermediate (P-256, pathLen 0) → EK certificates.
struct Vendor {
    root: Ca,
    inter: Ca,
    root_cert: Vec<u8>,
    inter_cert: Vec<u8>,
}

impl Vendor {
    fn new() -> Vendor {
        let root = Ca::new("Test EK Root", true);
        let inter = Ca::new("Test EK Intermediate", false);
        let root_cert = root.self_signed();
        let inter_cert = inter.cert_by(&root, Some(0), FOREVER);
        Vendor {
            root,
            inter,
            root_cert,
            inter_cert,
        }
    }

    fn ek_cert(&self, ek: &RsaStorageKey) -> Vec<u8> {
        self.inter.issue(Cert {
            spki: ek_spki(ek),
            ..Cert::default()
        })
    }

    fn set(&self) -> EkCaSet {
        set(&[&self.root_cert, &self.inter_cert])
    }
}

const ROOT: &str = "CN=Test EK Root,O=Tailjoin Test";
const INTER: &str = "CN=Test EK Intermediate,O=Tailjoin Test";

fn flip(der: &[u8], at: usize) -> Vec<u8> {
    let mut der = der.to_vec();
    der[at] ^= 0x01;
    der
}

#[test]
fn ek_certificates_are_verified_as_the_table_says() {
    let v = Vendor::new();
    let k = ek(1);
    let cert = v.ek_cert(&k);
    let vendor = v.set();
    let leaf = |c: Cert| v.inter.issue(c);
    let leaf_for = |ek: &RsaStorageKey| Cert {
        spki: ek_spki(ek),
        ..Cert::default()
    };

    let padded = |fill: u8| {
        let mut c = cert.clone();
        c.resize(1600, fill);
        c
    };
    let mut tcg_wrapped = vec![0x10, 0x01, 0x00];
    tcg_wrapped.extend((cert.len() as u16).to_be_bytes());
    tcg_wrapped.extend(&cert);
    tcg_wrapped.extend([0xff; 40]);
    let oaep = leaf(Cert {
        spki: rsa_spki(oids::ID_RSAES_OAEP, &k.modulus, 65537),
        ..Cert::default()
    });
    let ecc_ek = leaf(Cert {
        spki: v.inter.spki(),
        ..Cert::default()
    });
    let from_root = v.root.issue(leaf_for(&k));
    let expired = leaf(Cert {
        not_after: NOW - DAY,
        ..leaf_for(&k)
    });
    let not_yet = leaf(Cert {
        not_before: NOW + DAY,
        ..leaf_for(&k)
    });
    let sha1 = leaf(Cert {
        sig_alg: Some(oids::SHA_1_WITH_RSA_ENCRYPTION),
        ..leaf_for(&k)
    });
    let two_algs = leaf(Cert {
        outer_sig_alg: Some(oids::ECDSA_WITH_SHA_384),
        ..leaf_for(&k)
    });
    let pem_text = pem(&[&cert]).into_bytes();
    // Not DER (a DEFAULT written out), as some encoders do: taken as it comes.
    let explicit_false = leaf(Cert {
        extensions: [
            ek_extensions(),
            vec![seq(&[
                &oid_str("1.2.3.4"),
                &tlv(0x01, &[0]),
                &tlv(0x04, &[]),
            ])],
        ]
        .concat(),
        ..leaf_for(&k)
    });
    let tcg_overlong = vec![0x10, 0x01, 0x00, 0x05, 0x00, 0x30];

    const OK: Want = Ok((INTER, ROOT));
    const MISMATCH: Want = Err("ek-cert-key-mismatch");
    const UNTRUSTED: Want = Err("ek-cert-untrusted");
    const EXPIRED: Want = Err("ek-cert-expired");
    const MALFORMED: Want = Err("ek-cert-malformed");
    type Want = Result<(&'static str, &'static str), &'static str>;
    /// What, against which CAs, which certificate, for which EK, when: and what then.
    type Row<'a> = (&'a str, &'a EkCaSet, &'a [u8], &'a RsaStorageKey, u64, Want);
    // Against the vendor's root and intermediate, for the EK `k`, now.
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("the EK's certificate", cert.clone(), OK),
        ("issued by the root itself", from_root, Ok((ROOT, ROOT))),
        ("padded with 0xff to 1600 bytes", padded(0xff), OK),
        ("padded with zeros", padded(0), OK),
        ("in the TCG NV header, padded", tcg_wrapped, OK),
        ("an RSAES-OAEP key", oaep, OK),
        ("critical FALSE written out", explicit_false, OK),
        ("an ECC EK's certificate", ecc_ek, MISMATCH),
        ("a signature byte changed", flip(&cert, cert.len() - 3), UNTRUSTED),
        ("a serial byte changed", flip(&cert, 15), UNTRUSTED),
        ("signed with SHA-1", sha1, UNTRUSTED),
        ("expired", expired, EXPIRED),
        ("not yet valid", not_yet, EXPIRED),
        ("two signature algorithms", two_algs, MALFORMED),
        ("empty", vec![], MALFORMED),
        ("garbage", b"not a certificate".to_vec(), MALFORMED),
        ("cut short", cert[..cert.len() - 1].to_vec(), MALFORMED),
        ("PEM instead of DER", pem_text, MALFORMED),
        ("a TCG header longer than the data", tcg_overlong, MALFORMED),
        ("too large", padded(0xff).repeat(11), MALFORMED),
    ];

    // Another vendor whose CAs have the very same names, and other keys.
    let impostor = Vendor::new().set();
    let other = set(&[&Ca::new("Other EK Intermediate", false).self_signed()]);
    let root_only = set(&[&v.root_cert]);
    let inter_only = set(&[&v.inter_cert]);
    let none = EkCaSet::default();
    // The intermediate expired: refused although the EK certificate itself is valid.
    let old_inter = set(&[&v.root_cert, &v.inter.cert_by(&v.root, Some(0), NOW - DAY)]);
    // Root → intermediate (pathLen 0) → a second intermediate → EK: one CA too many below.
    let second = Ca::new("Test EK Second Intermediate", false);
    let second_set = set(&[
        &v.root_cert,
        &v.inter_cert,
        &second.cert_by(&v.inter, None, FOREVER),
    ]);
    let below_second = second.issue(leaf_for(&k));
    // A chain of six CAs: longer than MAX_CHAIN_CAS.
    let cas: Vec<Ca> = (0..6)
        .map(|i| Ca::new(&format!("Long {i}"), false))
        .collect();
    let mut long = vec![cas[0].self_signed()];
    for i in 1..cas.len() {
        long.push(cas[i].cert_by(&cas[i - 1], None, FOREVER));
    }
    let long_set = set(&long.iter().map(|c| c.as_slice()).collect::<Vec<_>>());
    let below_long = cas[5].issue(leaf_for(&k));
    let k2 = ek(2);
    let k3 = RsaStorageKey {
        exponent: 3,
        ..k.clone()
    };

    #[rustfmt::skip]
    let others: Vec<Row<'_>> = vec![
        ("the intermediate alone", &inter_only, &cert, &k, NOW, Ok((INTER, INTER))),
        ("far in the future, before 9999", &vendor, &cert, &k, FOREVER - 1, OK),
        // The certificate is genuine, the EK is another TPM's.
        ("another EK", &vendor, &cert, &k2, NOW, MISMATCH),
        ("another exponent", &vendor, &cert, &k3, NOW, MISMATCH),
        ("the root alone", &root_only, &cert, &k, NOW, UNTRUSTED),
        ("CAs of the same names, other keys", &impostor, &cert, &k, NOW, UNTRUSTED),
        ("another CA", &other, &cert, &k, NOW, UNTRUSTED),
        ("no CA at all", &none, &cert, &k, NOW, UNTRUSTED),
        ("pathLen 0 exceeded", &second_set, &below_second, &k, NOW, UNTRUSTED),
        ("a chain of six CAs", &long_set, &below_long, &k, NOW, UNTRUSTED),
        ("its intermediate expired", &old_inter, &cert, &k, NOW, EXPIRED),
        ("before the CAs' validity", &vendor, &cert, &k, 1_000, EXPIRED),
    ];
    let all = cases
        .iter()
        .map(|(what, cert, want)| (*what, &vendor, cert.as_slice(), &k, NOW, *want))
        .chain(others);
    for (what, set, cert, ek, now, want) in all {
        let got = set.verify(cert, ek, now);
        match (&got, want) {
            (Ok(ok), Ok(names)) => {
                assert_eq!((ok.issuer.as_str(), ok.root.as_str()), names, "{what}")
            }
            (Err(refusal), Err(reason)) => {
                assert_eq!(refusal.reason(), reason, "{what}: {refusal}");
            }
            _ => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
    // Refused for the reason the row means, not another.
    let why = |set: &EkCaSet, cert: &[u8]| set.verify(cert, &k, NOW).unwrap_err().to_string();
    let text = why(&second_set, &below_second);
    assert!(text.contains("allows 0 CA certificates below it"), "{text}");
    let text = why(&long_set, &below_long);
    assert!(text.contains("longer than 4 CA certificates"), "{text}");
    let text = why(&old_inter, &cert);
    assert!(
        text.contains("the CA certificate CN=Test EK Intermediate"),
        "{text}"
    );
}

#[test]
fn refusals_say_why() {
    let v = Vendor::new();
    let k = ek(1);
    let cert = v.ek_cert(&k);
    let why = |set: &EkCaSet, cert: &[u8], ek: &RsaStorageKey, now| {
        set.verify(cert, ek, now).unwrap_err().to_string()
    };
    let text = why(&set(&[&v.root_cert]), &cert, &k, NOW);
    assert!(
        text.contains(INTER) && text.contains("tpm_ek_ca_files"),
        "{text}"
    );
    let text = why(&Vendor::new().set(), &cert, &k, NOW);
    assert!(text.contains("does not verify"), "{text}");
    let text = why(&v.set(), &cert, &ek(2), NOW);
    assert!(text.contains("another RSA key"), "{text}");
    let sha1 = v.inter.issue(Cert {
        spki: ek_spki(&k),
        sig_alg: Some(oids::SHA_1_WITH_RSA_ENCRYPTION),
        ..Cert::default()
    });
    let text = why(&v.set(), &sha1, &k, NOW);
    assert!(text.contains("sha1WithRSAEncryption"), "{text}");
    let old = v.inter.issue(Cert {
        spki: ek_spki(&k),
        not_after: NOW - DAY,
        ..Cert::default()
    });
    let text = why(&v.set(), &old, &k, NOW);
    assert!(text.contains("2027-01-14"), "{text}");
}

/// No byte of a certificate can be changed, and no prefix of it passes; nothing panics.
#[test]
fn every_changed_byte_and_every_cut_is_refused() {
    let v = Vendor::new();
    let k = ek(1);
    let cert = v.ek_cert(&k);
    let set = v.set();
    assert!(set.verify(&cert, &k, NOW).is_ok());
    for at in 0..cert.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = cert.clone();
            bad[at] ^= mask;
            assert!(
                set.verify(&bad, &k, NOW).is_err(),
                "byte {at} ^ {mask:#x} accepted"
            );
            let _ = issuer_of(&bad);
        }
    }
    for len in 0..cert.len() {
        assert!(
            set.verify(&cert[..len], &k, NOW).is_err(),
            "{len} bytes accepted"
        );
        let _ = issuer_of(&cert[..len]);
    }
}

#[test]
fn ca_files_are_read_with_errors_that_name_the_file() {
    let v = Vendor::new();
    // Text around the blocks (as `openssl x509 -text` writes), CRLF, 76-column lines.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&v.inter_cert);
    let wide: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let text = format!(
        "Certificate:\n    Subject: CN=Test EK Root\n{}\r\n-----BEGIN CERTIFICATE-----\r\n{}\r\n-----END CERTIFICATE-----\r\n",
        pem(&[&v.root_cert]),
        wide.join("\r\n")
    );
    let set = EkCaSet::from_pem(&text, "vendor.pem").unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.subjects(), vec![ROOT.to_string(), INTER.to_string()]);
    // The same certificate twice is kept once.
    assert_eq!(
        EkCaSet::from_pem(&pem(&[&v.root_cert, &v.root_cert]), "x")
            .unwrap()
            .len(),
        1
    );

    let ek_cert = v.ek_cert(&ek(1));
    let not_ca_by_ku = v.root.issue(Cert {
        subject: name("Signer"),
        spki: v.inter.spki(),
        extensions: vec![key_usage(false)],
        ..Cert::default()
    });
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "holds no certificate"),
        (
            "DER as text",
            "0\u{1}garbage".into(),
            "holds no certificate",
        ),
        (
            "only a key",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            "holds no certificate",
        ),
        (
            "a private key",
            format!(
                "{}-----BEGIN PRIVATE KEY-----\nfake-test-key-not-a-secret\n-----END PRIVATE KEY-----\n",
                pem(&[&v.root_cert])
            ),
            "private key",
        ),
        (
            "cut short",
            pem(&[&v.root_cert])[..200].to_string(),
            "has no \"-----END CERTIFICATE-----\"",
        ),
        (
            "not base64",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into(),
            "not base64",
        ),
        (
            "not a certificate",
            pem(&[b"\x30\x03\x02\x01\x01"]),
            "cannot be used as an EK CA",
        ),
        (
            "an EK certificate",
            pem(&[&v.root_cert, &ek_cert]),
            "is not a CA certificate",
        ),
        ("no keyCertSign", pem(&[&not_ca_by_ku]), "lacks keyCertSign"),
    ];
    for (what, text, want) in cases {
        let err = EkCaSet::from_pem(&text, "vendor.pem").unwrap_err();
        assert!(
            err.contains("vendor.pem") && err.contains(want),
            "{what}: {err}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("root.pem");
    let b = dir.path().join("inter.pem");
    std::fs::write(&a, pem(&[&v.root_cert])).unwrap();
    std::fs::write(&b, pem(&[&v.inter_cert])).unwrap();
    let set = EkCaSet::load(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.verify(&ek_cert, &ek(1), NOW).is_err(), "another EK");
    let missing = dir.path().join("missing.pem");
    let err = EkCaSet::load(&[a.clone(), missing]).unwrap_err();
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );
    let der = dir.path().join("root.der");
    std::fs::write(&der, &v.root_cert).unwrap();
    let err = EkCaSet::load(&[der]).unwrap_err();
    assert!(
        err.contains("root.der") && (err.contains("openssl x509 -inform der")),
        "{err}"
    );
    assert!(EkCaSet::load(&[]).unwrap().is_empty());
}

#[test]
fn issuer_of_names_the_issuer_printably() {
    let v = Vendor::new();
    let cert = v.ek_cert(&ek(1));
    assert_eq!(issuer_of(&cert).as_deref(), Some(INTER));
    let mut padded = cert.clone();
    padded.resize(1600, 0xff);
    assert_eq!(issuer_of(&padded).as_deref(), Some(INTER));
    assert_eq!(issuer_of(b"junk"), None);
    assert_eq!(issuer_of(&[]), None);

    let sly = Ca::new("Evil\u{1b}[2J\u{202e}CA", false);
    let cert = sly.issue(Cert {
        spki: ek_spki(&ek(1)),
        ..Cert::default()
    });
    let shown = issuer_of(&cert).unwrap();
    assert!(
        !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{shown}"
    );
    // x509-cert escapes C0 controls its own way (\\1b); the others are escaped here.
    assert!(
        shown.contains("\\1b") && shown.contains("\\u{202e}"),
        "{shown}"
    );

    let long = Ca::new(&"x".repeat(1000), false);
    let cert = long.issue(Cert {
        spki: ek_spki(&ek(1)),
        ..Cert::default()
    });
    assert!(issuer_of(&cert).unwrap().chars().count() <= MAX_NAME_CHARS + 1);
}
