//! EK certificates: does the certificate a machine's TPM carries (NV index 0x01c00002 for the RSA
//! 2048 EK) chain to one of the fleet's TPM vendor CAs (`settings.netboot.tpm_ek_ca_files`), and
//! is it the certificate of the EK the machine presents?
//!
//! - [`EkCaSet::load`] reads the CA files (PEM, each with one or more certificates: the vendor's
//!   roots and intermediates); every certificate in them is trusted as configured.
//! - [`EkCaSet::verify`] checks one EK certificate against them: a chain from the certificate
//!   through CA certificates of the set (each signature checked, each issuer name the next
//!   subject, at most [`MAX_CHAIN_CAS`] CA certificates) up to a self-issued root of the set, or to
//!   a CA certificate of the set whose issuer the set does not hold (an intermediate configured on
//!   its own); every certificate of the chain within its validity (so an expired root above a
//!   valid intermediate refuses: configure the intermediate without the root to trust it alone);
//!   and the certificate's public key exactly the EK's (RSA modulus and exponent). That last check
//!   is what makes the certificate worth anything: without it a machine could present another
//!   machine's genuine certificate next to its own EK.
//! - [`issuer_of`] names an EK certificate's issuer for display (`tailjoin-provisioner pending`).
//!
//! Pure: no I/O but [`EkCaSet::load`]'s reading of the files it is given; the time is passed in.
//!
//! Why not a general (TLS) certificate verifier such as webpki: EK certificates are no TLS
//! certificates. Their subject is often empty, their subjectAltName is critical and holds only a
//! directoryName with TPM manufacturer, model and version attributes, they carry the TCG's own
//! extended key usage (2.23.133.8.1) and subject directory attributes, and some are RSA-OAEP keys;
//! webpki-style verifiers refuse such certificates (unknown critical extensions, no usable name,
//! wrong key usage). Nothing of the EK certificate's own extensions is checked here: only its
//! chain, validity and key. CA certificates must be CAs where they say (basicConstraints CA=true,
//! keyUsage keyCertSign, pathLenConstraint), as RFC 5280 asks.
//!
//! What a TPM's NV index gives is handled as it comes: some TPMs pad the certificate to the
//! index's size (ST33 parts pad with 0xff to 1600 bytes; anything after the certificate's DER is
//! ignored, the signature does not cover it), and some wrap it in the TCG PC Client header
//! (0x10 0x01 0x00, two bytes of length; PC Client Platform TPM Profile §7.3.2). swtpm's local CA
//! writes exactly the DER.
//!
//! Crates: `x509-cert` (RustCrypto) for the X.509 structures, on the `der`, `spki` and `const-oid`
//! crates the `rsa` crate already brings, so it adds only itself and `der`'s derive macro and flag
//! set; `der` decodes strictly and returns errors, never panics, on hostile bytes. The
//! certificate's outer layers are read with `der`'s reader so that the signed bytes are checked
//! exactly as they came (never re-encoded) and names are compared as their DER bytes (as most
//! verifiers do; RFC 5280's case-insensitive matching is not attempted). Signatures
//! are checked with `ring` (already the TLS stack's): RSA PKCS#1 v1.5 with SHA-256/384/512 (keys
//! of 2048 to 8192 bits) and ECDSA P-256/P-384 with SHA-256/384, what TPM vendors' EK CAs sign
//! with. SHA-1 and RSA-PSS signatures are refused (untrusted) with a message that says so.
//! (`x509-parser` with its `verify` feature would also fit, but brings some 25 more crates: nom,
//! asn1-rs and its derive macros, time, …; `x509-cert` 0.3 is out, on `der` 0.8, which the `rsa`
//! 0.9 in the tree does not use.)

use super::public::RsaStorageKey;
use base64::Engine as _;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use thiserror::Error;
use x509_cert::der::asn1::{BitStringRef, ObjectIdentifier};
use x509_cert::der::oid::db::rfc5912 as oids;
use x509_cert::der::{Decode, Reader, SliceReader, Tag, TagMode, TagNumber};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::name::Name;
use x509_cert::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;

/// Most CA certificates in a chain above the EK certificate (vendors use one or two).
pub const MAX_CHAIN_CAS: usize = 4;
/// Largest EK certificate accepted, padding included (NV indices hold a few kilobytes).
pub const MAX_EK_CERT_BYTES: usize = 16 * 1024;
/// Largest CA file read.
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most signatures checked for one EK certificate (bounds the work a crafted set of same-named
/// CAs could cause).
const MAX_SIGNATURE_CHECKS: usize = 32;
/// Longest name shown; longer ones are cut.
const MAX_NAME_CHARS: usize = 256;

/// Why an EK certificate is refused; `reason()` is the audit log's word, the text says why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EkCertRefusal {
    /// Not an X.509 certificate that can be read.
    #[error("the EK certificate cannot be read: {0}")]
    Malformed(String),
    /// No chain to a configured EK CA: another vendor's certificate, a bad signature, a CA
    /// certificate that may not sign, a chain too long.
    #[error("the EK certificate does not chain to a configured EK CA: {0}")]
    Untrusted(String),
    /// The certificate, or a CA certificate of its chain, is outside its validity.
    #[error("the EK certificate cannot be used at this time: {0}")]
    Expired(String),
    /// The certificate is not the certificate of the EK presented.
    #[error("the EK certificate is not the presented EK's: {0}")]
    KeyMismatch(String),
}

impl EkCertRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            EkCertRefusal::Malformed(_) => "ek-cert-malformed",
            EkCertRefusal::Untrusted(_) => "ek-cert-untrusted",
            EkCertRefusal::Expired(_) => "ek-cert-expired",
            EkCertRefusal::KeyMismatch(_) => "ek-cert-key-mismatch",
        }
    }
}

/// A verified EK certificate: who issued it, and the top of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertOk {
    /// Subject of the CA certificate that signed the EK certificate (RFC 4514 text,
    /// `CN=...,O=...`).
    pub issuer: String,
    /// Subject of the top CA certificate of the chain: a root, or an intermediate configured
    /// without its root.
    pub root: String,
}

/// The EK CA certificates the provisioner trusts.
#[derive(Debug, Clone, Default)]
pub struct EkCaSet {
    certs: Vec<CaCert>,
}

/// A CA certificate's public key, as ring takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CaKey {
    /// RSAPublicKey (PKCS#1) DER.
    Rsa(Vec<u8>),
    /// Uncompressed points.
    P256(Vec<u8>),
    P384(Vec<u8>),
}

/// What checking a signature needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signed {
    tbs: Vec<u8>,
    signature_alg: ObjectIdentifier,
    signature: Vec<u8>,
    issuer: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CaCert {
    /// Where it came from: `FILE, certificate N`.
    source: String,
    der: Vec<u8>,
    signed: Signed,
    subject: Vec<u8>,
    subject_text: String,
    key: CaKey,
    not_before: u64,
    not_after: u64,
    path_len: Option<u8>,
}

impl CaCert {
    fn self_issued(&self) -> bool {
        self.subject == self.signed.issuer
    }
}

/// A certificate's fields, borrowed from its DER.
struct Parsed<'a> {
    der: &'a [u8],
    tbs: &'a [u8],
    signature_alg: ObjectIdentifier,
    signature: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: u64,
    not_after: u64,
    spki: SubjectPublicKeyInfoRef<'a>,
    extensions: Vec<Extension>,
}

impl Parsed<'_> {
    fn signed(&self) -> Signed {
        Signed {
            tbs: self.tbs.to_vec(),
            signature_alg: self.signature_alg,
            signature: self.signature.to_vec(),
            issuer: self.issuer.to_vec(),
        }
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.extn_id == oid)
    }
}

/// Reads an X.509 certificate that is exactly `der` (no trailing bytes).
fn parse_certificate(der: &[u8]) -> Result<Parsed<'_>, String> {
    let asn1 = |e: x509_cert::der::Error| format!("it is not DER X.509 ({e})");
    let mut reader = SliceReader::new(der).map_err(asn1)?;
    let (tbs, outer_alg, signature) = reader
        .sequence(|r| {
            let tbs = r.tlv_bytes()?;
            let alg = AlgorithmIdentifierRef::decode(r)?;
            let signature = BitStringRef::decode(r)?;
            Ok((tbs, alg.oid, signature))
        })
        .map_err(asn1)?;
    reader.finish(()).map_err(asn1)?;
    let signature = signature
        .as_bytes()
        .ok_or("its signature is not a whole number of bytes")?;

    let mut reader = SliceReader::new(tbs).map_err(asn1)?;
    let fields = reader
        .sequence(|r| {
            let _version = r.context_specific::<u8>(TagNumber::N0, TagMode::Explicit)?;
            r.peek_header()?.tag.assert_eq(Tag::Integer)?;
            let _serial = r.tlv_bytes()?;
            let inner_alg = AlgorithmIdentifierRef::decode(r)?;
            r.peek_header()?.tag.assert_eq(Tag::Sequence)?;
            let issuer = r.tlv_bytes()?;
            let validity = Validity::decode(r)?;
            r.peek_header()?.tag.assert_eq(Tag::Sequence)?;
            let subject = r.tlv_bytes()?;
            let spki = SubjectPublicKeyInfoRef::decode(r)?;
            let _issuer_uid =
                r.context_specific::<BitStringRef<'_>>(TagNumber::N1, TagMode::Implicit)?;
            let _subject_uid =
                r.context_specific::<BitStringRef<'_>>(TagNumber::N2, TagMode::Implicit)?;
            let extensions = r
                .context_specific::<Vec<Extension>>(TagNumber::N3, TagMode::Explicit)?
                .unwrap_or_default();
            Ok((inner_alg.oid, issuer, validity, subject, spki, extensions))
        })
        .map_err(asn1)?;
    reader.finish(()).map_err(asn1)?;
    let (inner_alg, issuer, validity, subject, spki, extensions) = fields;
    if inner_alg != outer_alg {
        return Err(format!(
            "it names two signature algorithms ({} signed, {} outside)",
            oid_name(&inner_alg),
            oid_name(&outer_alg)
        ));
    }
    Ok(Parsed {
        der,
        tbs,
        signature_alg: outer_alg,
        signature,
        issuer,
        subject,
        not_before: validity.not_before.to_unix_duration().as_secs(),
        not_after: validity.not_after.to_unix_duration().as_secs(),
        spki,
        extensions,
    })
}

/// The certificate's DER in what a TPM's NV index holds: without the TCG PC Client header if it
/// has one, and without whatever follows the certificate (padding).
fn certificate_in(nv: &[u8]) -> Result<&[u8], String> {
    if nv.is_empty() {
        return Err("it is empty".into());
    }
    if nv.len() > MAX_EK_CERT_BYTES {
        return Err(format!(
            "{} bytes is more than {MAX_EK_CERT_BYTES}",
            nv.len()
        ));
    }
    let mut data = nv;
    if data.len() > 5 && data.starts_with(&[0x10, 0x01, 0x00]) {
        let len = usize::from(u16::from_be_bytes([data[3], data[4]]));
        data = data.get(5..5 + len).ok_or_else(|| {
            format!(
                "its TCG header says {len} bytes of certificate but {} follow",
                data.len() - 5
            )
        })?;
    }
    let mut reader = SliceReader::new(data).map_err(|e| format!("it is not DER ({e})"))?;
    let header = reader
        .peek_header()
        .map_err(|e| format!("it is not DER ({e})"))?;
    if header.tag != Tag::Sequence {
        return Err(format!(
            "it starts with {:?}, not the SEQUENCE of a certificate",
            header.tag
        ));
    }
    reader
        .tlv_bytes()
        .map_err(|e| format!("it ends inside the certificate ({e})"))
}

/// The EK certificate's issuer, for display; None if it is no certificate.
pub fn issuer_of(ek_cert_der: &[u8]) -> Option<String> {
    let der = certificate_in(ek_cert_der).ok()?;
    let parsed = parse_certificate(der).ok()?;
    Some(name_text(parsed.issuer))
}

/// A DER Name as RFC 4514 text, safe to print: control and direction-changing characters are
/// escaped, long names cut.
fn name_text(raw: &[u8]) -> String {
    let mut text = String::new();
    let readable = match Name::from_der(raw) {
        Ok(name) => write!(text, "{name}").is_ok(),
        Err(_) => false,
    };
    if !readable {
        return "(a name that cannot be read)".into();
    }
    if text.is_empty() {
        return "(empty name)".into();
    }
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_NAME_CHARS {
            out.push('…');
            break;
        }
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn oid_name(oid: &ObjectIdentifier) -> String {
    match x509_cert::der::oid::db::DB.by_oid(oid) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}

fn unix_text(secs: u64) -> String {
    match x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{secs} s after 1970"),
    }
}

/// The public key of a CA certificate, checked to be one ring can verify with.
fn ca_key(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<CaKey, String> {
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("its public key is not a whole number of bytes")?;
    let alg = spki.algorithm.oid;
    if alg == oids::RSA_ENCRYPTION {
        let key = rsa::pkcs1::RsaPublicKey::from_der(bits)
            .map_err(|e| format!("its RSA public key cannot be read ({e})"))?;
        let modulus = key.modulus.as_bytes();
        let size = match modulus.first() {
            Some(top) => modulus.len() * 8 - top.leading_zeros() as usize,
            None => 0,
        };
        if !(2048..=8192).contains(&size) {
            return Err(format!(
                "its RSA key has {size} bits; EK CA keys of 2048 to 8192 bits are accepted"
            ));
        }
        return Ok(CaKey::Rsa(bits.to_vec()));
    }
    if alg == oids::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|_| "its EC key names no curve".to_string())?;
        let (key, len) = if curve == oids::SECP_256_R_1 {
            (CaKey::P256(bits.to_vec()), 65)
        } else if curve == oids::SECP_384_R_1 {
            (CaKey::P384(bits.to_vec()), 97)
        } else {
            return Err(format!(
                "its EC key is on {}; P-256 and P-384 are supported",
                oid_name(&curve)
            ));
        };
        if bits.len() != len || bits.first() != Some(&4) {
            return Err("its EC public key is not an uncompressed point of its curve".into());
        }
        return Ok(key);
    }
    Err(format!(
        "its key is {}; RSA and ECDSA P-256/P-384 keys are supported",
        oid_name(&alg)
    ))
}

/// Checks that `issuer`'s key signed `cert`.
fn check_signature(issuer: &CaCert, cert: &Signed) -> Result<(), String> {
    use ring::signature as sig;
    let alg = cert.signature_alg;
    let (algorithm, key): (&'static dyn sig::VerificationAlgorithm, &[u8]) = match &issuer.key {
        CaKey::Rsa(key) if alg == oids::SHA_256_WITH_RSA_ENCRYPTION => {
            (&sig::RSA_PKCS1_2048_8192_SHA256, key)
        }
        CaKey::Rsa(key) if alg == oids::SHA_384_WITH_RSA_ENCRYPTION => {
            (&sig::RSA_PKCS1_2048_8192_SHA384, key)
        }
        CaKey::Rsa(key) if alg == oids::SHA_512_WITH_RSA_ENCRYPTION => {
            (&sig::RSA_PKCS1_2048_8192_SHA512, key)
        }
        CaKey::P256(key) if alg == oids::ECDSA_WITH_SHA_256 => (&sig::ECDSA_P256_SHA256_ASN1, key),
        CaKey::P256(key) if alg == oids::ECDSA_WITH_SHA_384 => (&sig::ECDSA_P256_SHA384_ASN1, key),
        CaKey::P384(key) if alg == oids::ECDSA_WITH_SHA_256 => (&sig::ECDSA_P384_SHA256_ASN1, key),
        CaKey::P384(key) if alg == oids::ECDSA_WITH_SHA_384 => (&sig::ECDSA_P384_SHA384_ASN1, key),
        key => {
            let kind = match key {
                CaKey::Rsa(_) => "an RSA",
                CaKey::P256(_) => "a P-256",
                CaKey::P384(_) => "a P-384",
            };
            return Err(format!(
                "it is signed with {}, which is not checked with {kind} key ({}): accepted are \
                 RSA PKCS#1 v1.5 with SHA-256/384/512 and ECDSA with SHA-256/384",
                oid_name(&alg),
                issuer.source
            ));
        }
    };
    sig::UnparsedPublicKey::new(algorithm, key)
        .verify(&cert.tbs, &cert.signature)
        .map_err(|_| {
            format!(
                "its signature does not verify with the key of {} ({})",
                issuer.subject_text, issuer.source
            )
        })
}

/// The best reason a chain was not found; a later, more specific one replaces an earlier.
#[derive(Debug)]
enum Miss {
    NoIssuer(String),
    Signature(String),
    Constraint(String),
    Expired(String),
}

impl Miss {
    fn rank(&self) -> u8 {
        match self {
            Miss::NoIssuer(_) => 0,
            Miss::Signature(_) => 1,
            Miss::Constraint(_) => 2,
            Miss::Expired(_) => 3,
        }
    }

    fn raise(&mut self, other: Miss) {
        if other.rank() > self.rank() {
            *self = other;
        }
    }
}

impl EkCaSet {
    /// Reads the EK CA files: PEM, each with one or more `CERTIFICATE` blocks (roots and
    /// intermediates). An unreadable file, a file without a certificate and a certificate that
    /// cannot be used are errors that name the file and say what to do.
    pub fn load(paths: &[PathBuf]) -> Result<EkCaSet, String> {
        let mut set = EkCaSet::default();
        for path in paths {
            let text = read_ca_file(path)?;
            set.add_pem(&text, &path.display().to_string())?;
        }
        Ok(set)
    }

    /// The certificates of one PEM text; `name` names it in errors.
    pub fn from_pem(text: &str, name: &str) -> Result<EkCaSet, String> {
        let mut set = EkCaSet::default();
        set.add_pem(text, name)?;
        Ok(set)
    }

    /// How many CA certificates the set holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The subjects of the CA certificates, for a log line at start.
    pub fn subjects(&self) -> Vec<String> {
        self.certs.iter().map(|c| c.subject_text.clone()).collect()
    }

    fn add_pem(&mut self, text: &str, name: &str) -> Result<(), String> {
        const BEGIN: &str = "-----BEGIN ";
        let mut rest = text;
        let mut found = 0usize;
        while let Some(at) = rest.find(BEGIN) {
            let block = &rest[at + BEGIN.len()..];
            let Some(label_end) = block.find("-----") else {
                return Err(format!("{name}: a PEM BEGIN line is not closed by -----"));
            };
            let label = &block[..label_end];
            let end_line = format!("-----END {label}-----");
            let Some(end) = block.find(&end_line) else {
                return Err(format!(
                    "{name}: \"-----BEGIN {label}-----\" has no \"{end_line}\"; the file is cut \
                     short: copy it again"
                ));
            };
            let body = &block[label_end + 5..end];
            rest = &block[end + end_line.len()..];
            if label.contains("PRIVATE KEY") {
                return Err(format!(
                    "{name} holds a private key ({label}); the provisioner needs only the CA \
                     certificates: remove the key from the file (and keep CA keys off this host)"
                ));
            }
            if label != "CERTIFICATE" {
                continue;
            }
            found += 1;
            let source = format!("{name}, certificate {found}");
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| {
                    format!(
                        "{source}: its PEM text is not base64 ({e}); the file is damaged: copy \
                         the CA certificate again from your TPM vendor"
                    )
                })?;
            let cert = ca_cert(&der, &source)?;
            if !self.certs.iter().any(|c| c.der == cert.der) {
                self.certs.push(cert);
            }
        }
        if found == 0 {
            return Err(format!(
                "{name} holds no certificate: an EK CA file is PEM text with one or more \
                 \"-----BEGIN CERTIFICATE-----\" blocks (your TPM vendor's root and intermediate \
                 EK CA certificates; convert a DER file with `openssl x509 -inform der -in FILE \
                 -out FILE.pem`)"
            ));
        }
        Ok(())
    }

    /// Checks an EK certificate (DER, as read from the TPM's NV index: padding and the TCG header
    /// are allowed) against the set, for the EK `ek`, at `now_unix`.
    pub fn verify(
        &self,
        ek_cert_der: &[u8],
        ek: &RsaStorageKey,
        now_unix: u64,
    ) -> Result<EkCertOk, EkCertRefusal> {
        let der = certificate_in(ek_cert_der).map_err(EkCertRefusal::Malformed)?;
        let leaf = parse_certificate(der).map_err(EkCertRefusal::Malformed)?;
        check_key(&leaf.spki, ek).map_err(EkCertRefusal::KeyMismatch)?;

        let mut path = Vec::new();
        let mut budget = MAX_SIGNATURE_CHECKS;
        let mut miss = Miss::NoIssuer(format!(
            "no configured EK CA certificate has its issuer's name, {}: if that is your TPM \
             vendor's CA, add its certificate to tpm_ek_ca_files",
            name_text(leaf.issuer)
        ));
        if !self.extend(&leaf.signed(), &mut path, now_unix, &mut budget, &mut miss) {
            return Err(match miss {
                Miss::Expired(m) => EkCertRefusal::Expired(m),
                Miss::NoIssuer(m) | Miss::Signature(m) | Miss::Constraint(m) => {
                    EkCertRefusal::Untrusted(m)
                }
            });
        }
        if !(leaf.not_before..=leaf.not_after).contains(&now_unix) {
            return Err(EkCertRefusal::Expired(format!(
                "the EK certificate is valid from {} to {}, and it is {} now",
                unix_text(leaf.not_before),
                unix_text(leaf.not_after),
                unix_text(now_unix)
            )));
        }
        let (Some(first), Some(last)) = (path.first(), path.last()) else {
            return Err(EkCertRefusal::Untrusted("no chain".into()));
        };
        let (Some(issuer), Some(root)) = (self.certs.get(*first), self.certs.get(*last)) else {
            return Err(EkCertRefusal::Untrusted("no chain".into()));
        };
        Ok(EkCertOk {
            issuer: issuer.subject_text.clone(),
            root: root.subject_text.clone(),
        })
    }

    /// Extends `path` (indices into the set, the issuer of `cert` next) by a CA certificate
    /// that signed `cert`, and on until the chain ends in the set; false, with `miss` saying why,
    /// if no chain is found.
    fn extend(
        &self,
        cert: &Signed,
        path: &mut Vec<usize>,
        now: u64,
        budget: &mut usize,
        miss: &mut Miss,
    ) -> bool {
        for (i, ca) in self.certs.iter().enumerate() {
            if ca.subject != cert.issuer || path.contains(&i) {
                continue;
            }
            if *budget == 0 {
                miss.raise(Miss::Constraint(
                    "too many CA certificates of the same name to try".into(),
                ));
                return false;
            }
            *budget -= 1;
            if let Err(m) = check_signature(ca, cert) {
                miss.raise(Miss::Signature(m));
                continue;
            }
            if let Some(limit) = ca.path_len.filter(|l| path.len() > usize::from(*l)) {
                miss.raise(Miss::Constraint(format!(
                    "{} ({}) allows {limit} CA certificates below it and the chain has {}",
                    ca.subject_text,
                    ca.source,
                    path.len()
                )));
                continue;
            }
            if !(ca.not_before..=ca.not_after).contains(&now) {
                miss.raise(Miss::Expired(format!(
                    "the CA certificate {} ({}) is valid from {} to {}, and it is {} now",
                    ca.subject_text,
                    ca.source,
                    unix_text(ca.not_before),
                    unix_text(ca.not_after),
                    unix_text(now)
                )));
                continue;
            }
            path.push(i);
            let issuer_configured = self
                .certs
                .iter()
                .enumerate()
                .any(|(j, c)| c.subject == ca.signed.issuer && !path.contains(&j));
            if ca.self_issued() || !issuer_configured {
                return true;
            }
            if path.len() >= MAX_CHAIN_CAS {
                miss.raise(Miss::Constraint(format!(
                    "the chain is longer than {MAX_CHAIN_CAS} CA certificates"
                )));
            } else if self.extend(&ca.signed, path, now, budget, miss) {
                return true;
            }
            path.pop();
        }
        false
    }
}

/// Reads one CA file, bounded, as text.
fn read_ca_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot read the EK CA file {shown}: {e}; give the path of a readable PEM file of your \
             TPM vendor's EK CA certificates"
        )
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the EK CA file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "the EK CA file {shown} is larger than {MAX_CA_FILE_BYTES} bytes: it is no file of CA \
             certificates"
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "the EK CA file {shown} is not PEM text (a DER certificate? convert it with `openssl \
             x509 -inform der -in {shown} -out {shown}.pem` and give that)"
        )
    })
}

/// Reads one CA certificate and checks that it may sign certificates.
fn ca_cert(der: &[u8], source: &str) -> Result<CaCert, String> {
    let unusable = |problem: String| {
        format!(
            "{source} cannot be used as an EK CA: {problem}; replace it with the CA certificate \
             as your TPM vendor publishes it"
        )
    };
    let parsed = parse_certificate(der).map_err(&unusable)?;
    let subject_text = name_text(parsed.subject);
    let key = ca_key(&parsed.spki).map_err(|p| unusable(format!("{subject_text}: {p}")))?;
    let not_ca = |why: &str| {
        format!(
            "{source} ({subject_text}) is not a CA certificate ({why}): is it an EK certificate? \
             An EK CA file lists only the vendor's root and intermediate CA certificates"
        )
    };
    let mut path_len = None;
    if let Some(ext) = parsed.extension(oids::ID_CE_BASIC_CONSTRAINTS) {
        let bc = BasicConstraints::from_der(ext.extn_value.as_bytes())
            .map_err(|e| unusable(format!("its basicConstraints cannot be read ({e})")))?;
        if !bc.ca {
            return Err(not_ca("basicConstraints CA:FALSE"));
        }
        path_len = bc.path_len_constraint;
    }
    if let Some(ext) = parsed.extension(oids::ID_CE_KEY_USAGE) {
        let ku = KeyUsage::from_der(ext.extn_value.as_bytes())
            .map_err(|e| unusable(format!("its keyUsage cannot be read ({e})")))?;
        if !ku.key_cert_sign() {
            return Err(not_ca("its keyUsage lacks keyCertSign"));
        }
    }
    Ok(CaCert {
        source: source.to_string(),
        der: parsed.der.to_vec(),
        signed: parsed.signed(),
        subject: parsed.subject.to_vec(),
        subject_text,
        key,
        not_before: parsed.not_before,
        not_after: parsed.not_after,
        path_len,
    })
}

/// Checks that the certificate's key is the EK: RSA (rsaEncryption, or RSAES-OAEP as older EK
/// certificates have it) with the same modulus and exponent.
fn check_key(spki: &SubjectPublicKeyInfoRef<'_>, ek: &RsaStorageKey) -> Result<(), String> {
    let alg = spki.algorithm.oid;
    if alg != oids::RSA_ENCRYPTION && alg != oids::ID_RSAES_OAEP {
        return Err(format!(
            "the certificate is for a {} key and the EK presented is RSA",
            oid_name(&alg)
        ));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the certificate's public key is not a whole number of bytes")?;
    let key = rsa::pkcs1::RsaPublicKey::from_der(bits)
        .map_err(|e| format!("the certificate's RSA key cannot be read ({e})"))?;
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let modulus = strip(&ek.modulus);
    if key.modulus.as_bytes() != modulus.as_slice() {
        return Err(format!(
            "the certificate is for another RSA key (a {}-byte modulus that differs from the \
             EK's)",
            key.modulus.as_bytes().len()
        ));
    }
    if key.public_exponent.as_bytes() != strip(&ek.exponent.to_be_bytes()).as_slice() {
        return Err(format!(
            "the certificate's RSA exponent differs from the EK's ({})",
            ek.exponent
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
