//! What the workspace's tests share, and no program links: a real TPM 2.0 for the tests, swtpm
//! (Debian) in a directory of its own on two free loopback ports, killed when dropped (also when
//! a test fails), driven by tpm2-tools. A dev-dependency only: the agent's and the provisioner's
//! binaries carry none of it.
//!
//! A test that needs a program that is not installed fails, naming it and the package to install.
// Test support: a failed step is the test's failure, with the reason.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where `program` is on PATH; fails the test, saying what to install, when it is not.
pub fn need(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{program} is not installed: these tests need a real TPM 2.0 (swtpm), its local CA \
             (swtpm_setup, swtpm_localca) and tpm2-tools; apt-get install swtpm swtpm-tools \
             tpm2-tools (tests/lib/ensure-deps.sh does)"
        )
    })
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

/// One running swtpm, its working directory (`state/` holds the TPM's state; tools run here) and
/// its TCTI (`swtpm:host=127.0.0.1,port=P`, for tpm2-tools and tss-esapi).
pub struct Swtpm {
    pub dir: tempfile::TempDir,
    pub tcti: String,
    child: Child,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    /// A fresh TPM (no EK certificate; `tpm2_createek` makes the EK from its seed).
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("state")).expect("the swtpm state directory");
        Swtpm::start_in(dir)
    }

    /// A TPM whose state `dir/state` was prepared already (e.g. by `swtpm_setup`).
    pub fn start_in(dir: tempfile::TempDir) -> Swtpm {
        need("swtpm");
        need("tpm2_flushcontext");
        let state = dir.path().join("state");
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            // Absolute: swtpm changes to / before it writes its state (FINDINGS.md).
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
        let mut tpm = Swtpm {
            dir,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = tpm.child.try_wait() {
                panic!("swtpm exited ({status}) before it listened on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tpm
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        let path: &Path = &self.path(name);
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// A command (a tpm2-tools program, or `sh -c`) on this TPM (`TPM2TOOLS_TCTI`), in its
    /// directory. Afterwards the transient objects and sessions it left are flushed: without a
    /// resource manager the TPM keeps them, and its few slots fill up.
    pub fn run(&self, args: &[&str]) -> Output {
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
        out
    }

    /// [`Swtpm::run`], failing the test unless the command succeeds.
    pub fn tool(&self, args: &[&str]) -> Output {
        need(args[0]);
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The EK (`ek.ctx`, `ek.pub`: TPM2B_PUBLIC) and an AK under it (`ak.ctx`, `ak.pub`,
    /// `ak.name`, `ak.priv`), made by tpm2-tools.
    pub fn make_ek_and_ak(&self) {
        self.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        self.tool(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-s",
            "rsassa",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
            "-r",
            "ak.priv",
        ]);
    }

    /// TPM2_ActivateCredential of a tpm2-tools credential file with this TPM's EK (a policy
    /// session with PolicySecret on the endorsement hierarchy, as the EK's policy asks) and AK
    /// ([`Swtpm::make_ek_and_ak`]): the secret, or the TPM's refusal.
    pub fn activate(&self, blob: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("blob"), blob).expect("write the credential blob");
        let _ = std::fs::remove_file(self.path("out"));
        let script = "set -e; tpm2_startauthsession --policy-session -S s.ctx; \
             tpm2_policysecret -S s.ctx -c e >/dev/null; \
             tpm2_activatecredential -c ak.ctx -C ek.ctx -i blob -o out -P session:s.ctx >/dev/null; \
             tpm2_flushcontext s.ctx";
        let out = self.run(&["sh", "-c", script]);
        if out.status.success() {
            Ok(self.read("out"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
