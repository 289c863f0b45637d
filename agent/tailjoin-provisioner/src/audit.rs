//! The audit log: one JSON line per decided key request (issued or refused), appended and synced.
//! It names the machine, the checks that matched and the key's id at the control server; never
//! the key or the boot token.

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    pub time: String,
    pub event: &'a str,
    pub client: String,
    pub hostname: String,
    pub machine_id: String,
    pub macs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_token: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The EK of the TPM the request showed (`sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ek_fingerprint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        AuditLog { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and syncs it. `Err` in words.
    pub fn write(&self, line: &AuditLine<'_>) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_json::to_string(line).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(|e| format!("cannot open the audit log {}: {e}", self.path.display()))?;
        f.write_all(format!("{text}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write the audit log {}: {e}", self.path.display()))
    }
}
