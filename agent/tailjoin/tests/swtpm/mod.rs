//! A real TPM for the tests: swtpm (Debian) in its own directory on two free ports, killed when
//! dropped, and tpm2-tools' software MakeCredential. Shared by tpm_swtpm.rs and
//! tpm_exchange_swtpm.rs (each uses part of it).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tailjoin::tpm::TpmKeys;
use tailjoin::tpm::marshal::tpm2b_body;
use tailjoin_common::wire::to_hex;

/// Fails the test, naming the program, when it is not on PATH.
pub fn need(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: these tests need a real TPM 2.0 (swtpm) and tpm2-tools; \
         apt-get install swtpm tpm2-tools (tests/lib/ensure-deps.sh does)"
    );
}

/// Two free TCP ports in a row on 127.0.0.1 (swtpm's server and control ports).
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = l.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free TCP ports in a row on 127.0.0.1");
}

/// One swtpm in its own directory; killed when dropped, also when a test fails.
pub struct SwTpm {
    pub dir: tempfile::TempDir,
    pub tcti: String,
    child: Child,
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SwTpm {
    pub fn start() -> SwTpm {
        for program in [
            "swtpm",
            "tpm2_createek",
            "tpm2_readpublic",
            "tpm2_makecredential",
            "tpm2_flushcontext",
            "tpm2_print",
        ] {
            need(program);
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("the swtpm state directory");
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        let mut tpm = SwTpm {
            dir,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = tpm.child.try_wait() {
                panic!("swtpm exited ({status}) before it listened on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen on 127.0.0.1:{port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tpm
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// A tpm2-tools command on this TPM (`TPM2TOOLS_TCTI`), in its directory; then the
    /// transient objects and sessions it left are flushed (no resource manager here).
    pub fn tool(&self, args: &[&str]) -> Output {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
        for kind in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(kind)
                .env("TPM2TOOLS_TCTI", &self.tcti)
                .output();
        }
        assert!(
            out.status.success(),
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
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
