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
mod tests {
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
        let rdn = |attr: &str, value: &str| {
            tlv(0x31, &seq(&[&oid_str(attr), &tlv(0x0c, value.as_bytes())]))
        };
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
}
