//! A real TPM for the tests: swtpm (Debian) in its own directory on two free ports, killed when
//! dropped, and tpm2-tools' software MakeCredential. Shared by tpm_swtpm.rs and
//! tpm_exchange_swtpm.rs (each uses part of it).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use tailjoin::tpm::TpmKeys;
use tailjoin::tpm::marshal::tpm2b_body;
use tailjoin_common::wire::to_hex;
pub use tailjoin_testkit::{free_port_pair, need};

/// One swtpm (tailjoin-testkit's), with what the agent's tests add: the agent's own keys on it.
pub struct SwTpm(tailjoin_testkit::Swtpm);

impl std::ops::Deref for SwTpm {
    type Target = tailjoin_testkit::Swtpm;
    fn deref(&self) -> &tailjoin_testkit::Swtpm {
        &self.0
    }
}

impl SwTpm {
    pub fn start() -> SwTpm {
        for program in [
            "tpm2_createek",
            "tpm2_readpublic",
            "tpm2_makecredential",
            "tpm2_print",
        ] {
            need(program);
        }
        SwTpm(tailjoin_testkit::Swtpm::start())
    }

    /// The agent's keys on this TPM. The swtpm serves one connection at a time: drop them
    /// before running a tool on the same TPM.
    pub fn keys(&self) -> TpmKeys {
        TpmKeys::open(&self.tcti).unwrap_or_else(|e| panic!("the agent's TPM keys: {e}"))
    }
}

/// `tpm2_makecredential -T none` (software only) of `secret` for the EK in `ek_public`
/// (TPM2B_PUBLIC) and the object Name `name`: the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET
/// out of the tools' file (magic 0xBADCC0DE, version 1, then the two TPM2Bs).
pub fn make_credential(
    dir: &Path,
    ek_public: &[u8],
    name: &[u8],
    secret: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("mc-ek.pub"), ek_public).expect("write the EK");
    std::fs::write(dir.join("mc-secret.bin"), secret).expect("write the secret");
    let _ = std::fs::remove_file(dir.join("mc-blob"));
    let out = Command::new("tpm2_makecredential")
        .args([
            "-T",
            "none",
            "-e",
            "mc-ek.pub",
            "-s",
            "mc-secret.bin",
            "-o",
            "mc-blob",
        ])
        .arg("-n")
        .arg(to_hex(name))
        .current_dir(dir)
        .output()
        .expect("run tpm2_makecredential");
    assert!(
        out.status.success(),
        "tpm2_makecredential failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    split_tools_blob(&std::fs::read(dir.join("mc-blob")).expect("read the blob"))
}

pub fn split_tools_blob(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(
        file.get(..8),
        Some(&[0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1][..]),
        "tools header"
    );
    let rest = &file[8..];
    let id_len = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let (id_object, secret) = rest.split_at(id_len);
    tpm2b_body(secret, "encrypted secret").expect("the secret is one whole TPM2B");
    (id_object.to_vec(), secret.to_vec())
}
