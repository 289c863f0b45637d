//! One-time boot tokens. The file (a credential) holds `TOKEN [LABEL]` lines; the provisioner
//! keeps only SHA-256 hashes in memory, and appends the hash of every token it has honoured to
//! `used-boot-tokens` in its state directory, so a token works once across restarts too.
//!
//! A token is reserved while its key is minted and committed only when the key is handed out:
//! a failed mint does not burn it.

use super::policy::Refusal;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

type Hash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Unused,
    Reserved,
    Used,
}

#[derive(Debug)]
struct Entry {
    label: String,
    state: Use,
}

#[derive(Debug)]
pub struct BootTokens {
    entries: HashMap<Hash, Entry>,
    used_file: PathBuf,
}

/// A token held for one request.
#[derive(Debug)]
pub struct Reservation {
    hash: Hash,
    pub label: String,
}

fn sha256(s: &str) -> Hash {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

use tailjoin_common::wire::to_hex as hex;

fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The shortest token accepted: a guessable token would be the weakest link.
pub const MIN_TOKEN_LEN: usize = 16;

impl BootTokens {
    /// Parses the tokens file. Errors name the line, never the token.
    pub fn parse(text: &SecretString, used_file: PathBuf) -> Result<Self, String> {
        let mut entries = HashMap::new();
        for (n, line) in text.expose_secret().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(2, char::is_whitespace);
            let token = parts.next().unwrap_or_default();
            let label = parts.next().map(str::trim).unwrap_or_default();
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: the token is shorter than {MIN_TOKEN_LEN} characters; generate tokens with e.g. `openssl rand -hex 16`",
                    n + 1
                ));
            }
            let label = if label.is_empty() {
                format!("token on line {}", n + 1)
            } else {
                label
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .take(64)
                    .collect()
            };
            if entries
                .insert(
                    sha256(token),
                    Entry {
                        label,
                        state: Use::Unused,
                    },
                )
                .is_some()
            {
                return Err(format!("line {}: the same token is listed twice", n + 1));
            }
        }
        if entries.is_empty() {
            return Err("it lists no token".into());
        }
        Ok(BootTokens { entries, used_file })
    }

    /// Marks the tokens recorded as used in `used_file` (absent file: none used yet).
    pub fn load_used(&mut self) -> Result<usize, String> {
        let text = match std::fs::read_to_string(&self.used_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot read {}: {e}", self.used_file.display())),
        };
        let mut n = 0;
        for line in text.lines() {
            if let Some(e) = unhex(line.trim()).and_then(|h| self.entries.get_mut(&h)) {
                e.state = Use::Used;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn unused(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.state == Use::Unused)
            .count()
    }

    /// Holds the token for one request, or says why it cannot be used.
    pub fn reserve(&mut self, token: &SecretString) -> Result<Reservation, Refusal> {
        let hash = sha256(token.expose_secret());
        let entry = self.entries.get_mut(&hash).ok_or(Refusal::TokenUnknown)?;
        match entry.state {
            Use::Used => Err(Refusal::TokenUsed {
                label: entry.label.clone(),
            }),
            Use::Reserved => Err(Refusal::TokenInFlight {
                label: entry.label.clone(),
            }),
            Use::Unused => {
                entry.state = Use::Reserved;
                Ok(Reservation {
                    hash,
                    label: entry.label.clone(),
                })
            }
        }
    }

    /// The key was handed out: the token is spent, durably.
    pub fn commit(&mut self, r: Reservation) -> Result<(), String> {
        if let Some(e) = self.entries.get_mut(&r.hash) {
            e.state = Use::Used;
        }
        append_line(&self.used_file, &hex(&r.hash)).map_err(|e| {
            format!(
                "cannot record the used token in {}: {e}",
                self.used_file.display()
            )
        })
    }

    /// Minting failed: the token may be tried again.
    pub fn release(&mut self, r: Reservation) {
        if let Some(e) = self.entries.get_mut(&r.hash) {
            if e.state == Use::Reserved {
                e.state = Use::Unused;
            }
        }
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path) -> BootTokens {
        let text = SecretString::from(
            "# fleet tokens\nfake-token-aaaaaaaaaaaa rack1-node1\n\nfake-token-bbbbbbbbbbbb\n"
                .to_owned(),
        );
        BootTokens::parse(&text, dir.join("used-boot-tokens")).unwrap()
    }

    fn s(t: &str) -> SecretString {
        SecretString::from(t.to_owned())
    }

    #[test]
    fn a_token_works_once_even_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tokens(d.path());
        assert_eq!(t.unused(), 2);
        let r = t.reserve(&s("fake-token-aaaaaaaaaaaa")).unwrap();
        assert_eq!(r.label, "rack1-node1");
        assert!(matches!(
            t.reserve(&s("fake-token-aaaaaaaaaaaa")),
            Err(Refusal::TokenInFlight { .. })
        ));
        t.commit(r).unwrap();
        assert!(matches!(
            t.reserve(&s("fake-token-aaaaaaaaaaaa")),
            Err(Refusal::TokenUsed { .. })
        ));
        let used = std::fs::read_to_string(d.path().join("used-boot-tokens")).unwrap();
        assert!(!used.contains("fake-token"), "only hashes are stored");

        let mut again = tokens(d.path());
        assert_eq!(again.load_used().unwrap(), 1);
        assert!(matches!(
            again.reserve(&s("fake-token-aaaaaaaaaaaa")),
            Err(Refusal::TokenUsed { .. })
        ));
        let r = again.reserve(&s("fake-token-bbbbbbbbbbbb")).unwrap();
        assert_eq!(r.label, "token on line 4");
    }

    #[test]
    fn a_failed_mint_releases_the_token() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tokens(d.path());
        let r = t.reserve(&s("fake-token-bbbbbbbbbbbb")).unwrap();
        t.release(r);
        assert!(t.reserve(&s("fake-token-bbbbbbbbbbbb")).is_ok());
        assert_eq!(
            t.reserve(&s("fake-token-cccccccccccc")).unwrap_err(),
            Refusal::TokenUnknown
        );
    }

    #[test]
    fn weak_or_duplicate_tokens_are_refused_by_line_without_echo() {
        let d = tempfile::tempdir().unwrap();
        let e = BootTokens::parse(
            &s("fake-token-aaaaaaaaaaaa\nshortfake\n"),
            d.path().join("u"),
        )
        .unwrap_err();
        assert!(e.contains("line 2") && !e.contains("shortfake"), "{e}");
        let e = BootTokens::parse(
            &s("fake-token-aaaaaaaaaaaa a\nfake-token-aaaaaaaaaaaa b\n"),
            d.path().join("u"),
        )
        .unwrap_err();
        assert!(e.contains("twice"));
        assert!(BootTokens::parse(&s("# none\n"), d.path().join("u")).is_err());
    }
}
