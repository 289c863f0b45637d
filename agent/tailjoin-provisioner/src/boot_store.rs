//! The netboot token store on disk: [`super::boot_issue`]'s state kept in
//! `netboot-tokens.json` in the state directory, rewritten atomically (temporary file, fsync,
//! rename, fsync of the directory) on every issue, spend and revocation. Only hashes are stored.

use super::boot_issue::{IssuedReservation, IssuedToken, IssuedTokens, hex, sha256};
use super::policy::Refusal;
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const FILE_NAME: &str = "netboot-tokens.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    tokens: Vec<IssuedToken>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads a file that may not exist yet (`Ok(None)`).
pub fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[derive(Debug)]
pub struct BootStore {
    tokens: IssuedTokens,
    path: PathBuf,
}

impl BootStore {
    /// Loads the store from `state_dir` (absent file: no token issued yet).
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join(FILE_NAME);
        let list = match read_optional(&path)? {
            None => Vec::new(),
            Some(text) => {
                let d: OnDisk = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{} is not a netboot token store ({e}); move it away to start afresh (every issued token is then refused)",
                        path.display()
                    )
                })?;
                d.tokens
            }
        };
        Ok(BootStore {
            tokens: IssuedTokens::from_entries(list, now_unix()),
            path,
        })
    }

    fn save(&self) -> Result<(), String> {
        let doc = OnDisk {
            version: 1,
            tokens: self.tokens.entries(),
        };
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
        tailjoin_common::fs_write::write_atomic(&self.path, &text, 0o600)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Issues a fresh token for `mac` and records it durably before it is returned. Also
    /// returns how many earlier tokens of the MAC were revoked.
    pub fn issue(
        &mut self,
        mac: &str,
        ttl: Duration,
        one_per_mac: bool,
    ) -> Result<(SecretString, usize), String> {
        let mut raw = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| "the system random generator failed".to_owned())?;
        let token = SecretString::from(hex(&raw));
        let revoked = self.tokens.issue(
            sha256(token.expose_secret()),
            mac,
            now_unix(),
            ttl.as_secs(),
            one_per_mac,
        );
        self.save()?;
        Ok((token, revoked))
    }

    /// Whether `token` is one this store issued (and still remembers).
    pub fn knows(&self, token: &SecretString) -> bool {
        self.tokens.contains(&sha256(token.expose_secret()))
    }

    pub fn reserve(
        &mut self,
        token: &SecretString,
        macs: &[String],
    ) -> Result<IssuedReservation, Refusal> {
        self.tokens
            .reserve(&sha256(token.expose_secret()), macs, now_unix())
    }

    /// Spends the token durably; on a write failure it is released again and the key must not
    /// be handed out.
    pub fn commit(&mut self, r: &IssuedReservation) -> Result<(), String> {
        self.tokens.commit(r);
        self.save().inspect_err(|_| {
            // The spend is not on disk: undo it so memory and disk agree.
            self.tokens.release_spent(r);
        })
    }

    pub fn release(&mut self, r: &IssuedReservation) {
        self.tokens.release(r);
    }

    /// Revokes the MAC's unspent tokens (approval withdrawn).
    pub fn revoke_mac(&mut self, mac: &str) -> Result<usize, String> {
        let n = self.tokens.revoke_mac(mac);
        if n > 0 {
            self.save()?;
        }
        Ok(n)
    }

    pub fn outstanding(&self) -> usize {
        self.tokens.outstanding(now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_hashes_and_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let mac = "52:54:00:12:34:56".to_owned();
        let mut s = BootStore::open(d.path()).unwrap();
        let (spent, _) = s.issue(&mac, Duration::from_secs(300), false).unwrap();
        let (live, _) = s.issue(&mac, Duration::from_secs(300), false).unwrap();
        assert_eq!(spent.expose_secret().len(), 64);
        assert_ne!(spent.expose_secret(), live.expose_secret());
        let r = s.reserve(&spent, std::slice::from_ref(&mac)).unwrap();
        s.commit(&r).unwrap();
        let text = std::fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains(spent.expose_secret()) && !text.contains(live.expose_secret()));

        let mut again = BootStore::open(d.path()).unwrap();
        assert!(matches!(
            again.reserve(&spent, std::slice::from_ref(&mac)),
            Err(Refusal::TokenUsed { .. })
        ));
        assert!(again.reserve(&live, std::slice::from_ref(&mac)).is_ok());
        std::fs::write(d.path().join(FILE_NAME), "{").unwrap();
        assert!(
            BootStore::open(d.path())
                .unwrap_err()
                .contains("move it away")
        );
    }
}
