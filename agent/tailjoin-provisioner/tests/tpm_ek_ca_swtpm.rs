//! EK certificates as a TPM vendor issues them, here swtpm's own local CA: `swtpm_setup
//! --create-ek-cert` "manufactures" a TPM whose NV index 0x01c00002 holds an EK certificate signed
//! by swtpm-localca (an intermediate, `issuercert.pem`, under a root,
//! `swtpm-localca-rootca-cert.pem`, both made on first use in the local CA's state directory).
//! Each test makes its own local CAs with its own configuration files in temporary directories:
//! nothing of /etc or /var/lib is read for them or changed.
//!
//! The certificate and the EK are read from the running TPM with tpm2-tools, as a machine would
//! (`tpm2_nvread 0x01c00002`, `tpm2_createek`). The NV index holds exactly the certificate's DER
//! (swtpm 0.7: no padding, no TCG header); the verifier would take either.
//!
//! Needs `swtpm`, `swtpm_setup` (swtpm-tools) and `tpm2-tools` (tests/lib/ensure-deps.sh
//! installs them); without them every test here fails and says which is missing.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use tailjoin_provisioner::tpm::ek_cert::{EkCaSet, issuer_of};
use tailjoin_provisioner::tpm::public::{RsaStorageKey, TpmPublic};
use tailjoin_testkit::{Swtpm, need};

fn need_all() {
    for tool in [
        "swtpm",
        "swtpm_setup",
        "swtpm_localca",
        "certtool",
        "tpm2_createek",
        "tpm2_nvread",
        "tpm2_flushcontext",
    ] {
        need(tool);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A swtpm local CA of its own: swtpm_setup.conf, swtpm-localca.conf and .options in a temporary
/// directory, its state (keys, certificates, serial) in `state/` there.
struct LocalCa {
    dir: tempfile::TempDir,
}

impl LocalCa {
    fn new() -> LocalCa {
        need_all();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let state = d.join("state");
        std::fs::create_dir(&state).expect("CA state dir");
        let s = state.display();
        std::fs::write(
            d.join("swtpm-localca.conf"),
            format!(
                "statedir = {s}\nsigningkey = {s}/signkey.pem\nissuercert = {s}/issuercert.pem\n\
                 certserial = {s}/certserial\n"
            ),
        )
        .expect("write swtpm-localca.conf");
        std::fs::write(
            d.join("swtpm-localca.options"),
            "--platform-manufacturer tailjoin-test\n--platform-version 2.1\n\
             --platform-model swtpm\n",
        )
        .expect("write swtpm-localca.options");
        std::fs::write(
            d.join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                need("swtpm_localca").display(),
                d.join("swtpm-localca.conf").display(),
                d.join("swtpm-localca.options").display()
            ),
        )
        .expect("write swtpm_setup.conf");
        LocalCa { dir }
    }

    fn setup_conf(&self) -> PathBuf {
        self.dir.path().join("swtpm_setup.conf")
    }

    /// The CA's certificates as swtpm-localca leaves them: the root it made, and the intermediate
    /// that signs the EK certificates (the `issuercert` of its configuration).
    fn root(&self) -> PathBuf {
        self.dir.path().join("state/swtpm-localca-rootca-cert.pem")
    }

    fn intermediate(&self) -> PathBuf {
        self.dir.path().join("state/issuercert.pem")
    }

    fn set(&self) -> EkCaSet {
        EkCaSet::load(&[self.root(), self.intermediate()]).expect("the local CA's files load")
    }
}

/// One TPM manufactured by a local CA and running, with its EK certificate and EK read through
/// tpm2-tools. The swtpm process is killed when this is dropped, also when a test fails.
struct Tpm(Swtpm);

impl Tpm {
    fn manufactured_by(ca: &LocalCa) -> Tpm {
        need_all();
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("TPM state dir");
        let log = dir.path().join("swtpm_setup.log");
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(ca.setup_conf())
            .arg("--logfile")
            .arg(&log)
            .output()
            .expect("run swtpm_setup");
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            ca.root().is_file() && ca.intermediate().is_file(),
            "swtpm-localca left no root and issuer certificate in its statedir"
        );

        let tpm = Swtpm::start_in(dir);
        tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        tpm.tool(&["tpm2_nvread", "0x01c00002", "-C", "o", "-o", "ek.der"]);
        Tpm(tpm)
    }

    /// The EK certificate as the TPM's NV index gives it.
    fn ek_cert(&self) -> Vec<u8> {
        self.0.read("ek.der")
    }

    /// The EK as tpm2_createek gives it (TPM2B_PUBLIC).
    fn ek(&self) -> RsaStorageKey {
        TpmPublic::parse_tpm2b(&self.0.read("ek.pub"), "EK public area")
            .expect("EK parses")
            .rsa_storage_key()
            .expect("an RSA EK")
    }
}

#[test]
fn the_ek_certificate_a_tpm_holds_chains_to_its_local_ca_and_is_its_eks() {
    let ca = LocalCa::new();
    let tpm = Tpm::manufactured_by(&ca);
    let cert = tpm.ek_cert();

    let ok = ca
        .set()
        .verify(&cert, &tpm.ek(), now())
        .expect("the TPM's EK certificate verifies against its local CA");
    assert_eq!(ok.issuer, "CN=swtpm-localca");
    assert_eq!(ok.root, "CN=swtpm-localca-rootca");
    assert_eq!(issuer_of(&cert).as_deref(), Some("CN=swtpm-localca"));

    // The intermediate alone is a CA of its own; the root alone lacks the intermediate.
    let inter = EkCaSet::load(&[ca.intermediate()]).expect("intermediate loads");
    let ok = inter.verify(&cert, &tpm.ek(), now()).expect("intermediate");
    assert_eq!(ok.root, "CN=swtpm-localca");
    let root = EkCaSet::load(&[ca.root()]).expect("root loads");
    let refusal = root.verify(&cert, &tpm.ek(), now()).unwrap_err();
    assert_eq!(refusal.reason(), "ek-cert-untrusted", "{refusal}");

    // Both in one file, as a vendor's bundle comes.
    let bundle = ca.dir.path().join("bundle.pem");
    let text = [
        std::fs::read_to_string(ca.root()).expect("root"),
        std::fs::read_to_string(ca.intermediate()).expect("intermediate"),
    ]
    .concat();
    std::fs::write(&bundle, text).expect("write bundle");
    let set = EkCaSet::load(&[bundle]).expect("bundle loads");
    assert_eq!(set.len(), 2);
    assert!(set.verify(&cert, &tpm.ek(), now()).is_ok());
}

#[test]
fn another_ca_another_tpms_ek_or_a_changed_byte_is_refused() {
    let ca = LocalCa::new();
    let a = Tpm::manufactured_by(&ca);
    let b = Tpm::manufactured_by(&ca);
    let other_ca = LocalCa::new();
    let c = Tpm::manufactured_by(&other_ca);
    let set = ca.set();
    let cert = a.ek_cert();
    assert!(set.verify(&cert, &a.ek(), now()).is_ok(), "control");

    // Another local CA: the same names (CN=swtpm-localca under CN=swtpm-localca-rootca), other
    // keys. Its TPM's genuine certificate does not chain to ours, and does to its own.
    let refusal = set.verify(&c.ek_cert(), &c.ek(), now()).unwrap_err();
    assert_eq!(refusal.reason(), "ek-cert-untrusted", "{refusal}");
    assert!(other_ca.set().verify(&c.ek_cert(), &c.ek(), now()).is_ok());

    // A genuine certificate of our CA, but of another TPM, next to A's EK (and the other way).
    assert_ne!(a.ek(), b.ek());
    for (cert, ek) in [(b.ek_cert(), a.ek()), (a.ek_cert(), b.ek())] {
        let refusal = set.verify(&cert, &ek, now()).unwrap_err();
        assert_eq!(refusal.reason(), "ek-cert-key-mismatch", "{refusal}");
    }

    // A changed byte: in the subject, in the key, in the signature, and in the lengths.
    for at in [4, 40, cert.len() / 2, cert.len() - 20, cert.len() - 1] {
        let mut bad = cert.clone();
        bad[at] ^= 0x01;
        let refusal = set
            .verify(&bad, &a.ek(), now())
            .expect_err(&format!("a certificate changed at byte {at} verified"));
        assert!(
            [
                "ek-cert-untrusted",
                "ek-cert-malformed",
                "ek-cert-key-mismatch"
            ]
            .contains(&refusal.reason()),
            "{refusal}"
        );
    }

    // Past its CAs' validity (9999-12-31), and before the certificate was made.
    let refusal = set.verify(&cert, &a.ek(), 253_402_300_800).unwrap_err();
    assert_eq!(refusal.reason(), "ek-cert-expired", "{refusal}");
    let refusal = set.verify(&cert, &a.ek(), now() - 86_400).unwrap_err();
    assert_eq!(refusal.reason(), "ek-cert-expired", "{refusal}");
}
