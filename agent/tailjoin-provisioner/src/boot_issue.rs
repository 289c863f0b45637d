//! Boot tokens the provisioner issues itself (netboot): the pure state machine. Each token is
//! known only by its SHA-256, bound to one normalised MAC, and expires `token_ttl` after issue.
//!
//! issued → reserved (a key is being minted) → spent (the key was handed out);
//! reserved → issued (minting failed); issued → revoked (a newer boot of the same MAC);
//! issued → expired (time, computed, never stored). Reserved is never persisted: after a restart
//! a token that was being minted for is issued again (no key was handed out for it).
//! [`super::boot_store`] persists this state; times are Unix seconds passed in by the caller.

use super::policy::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub type Hash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Issued,
    Reserved,
    Spent,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub mac: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub state: TokenState,
}

impl IssuedToken {
    /// How the token is named in messages and the audit log (never the token itself).
    pub fn label(&self) -> String {
        format!("netboot token for {} #{}", self.mac, short(&self.sha256))
    }
}

fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

/// Every token is remembered this long after it expired (issued ones too, and across restarts:
/// the store keeps them), so a late or replayed request is told truthfully "expired", "used" or
/// "revoked" rather than "unknown"; either way it is refused.
pub const RETENTION_SECS: u64 = 24 * 3600;

#[derive(Debug, Default)]
pub struct IssuedTokens {
    entries: HashMap<Hash, IssuedToken>,
}

/// A token held for one key request.
#[derive(Debug)]
pub struct IssuedReservation {
    hash: Hash,
    pub label: String,
    pub mac: String,
}

pub fn hex(h: &Hash) -> String {
    tailjoin_common::wire::to_hex(h)
}

pub fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn sha256(s: &str) -> Hash {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl IssuedTokens {
    /// Rebuilds the state from its persisted entries: reserved counts as issued, entries past
    /// retention are dropped, malformed hashes are skipped.
    pub fn from_entries(list: Vec<IssuedToken>, now: u64) -> Self {
        let mut t = IssuedTokens::default();
        for mut e in list {
            if e.state == TokenState::Reserved {
                e.state = TokenState::Issued;
            }
            if let Some(h) = unhex(&e.sha256) {
                t.entries.insert(h, e);
            }
        }
        t.prune(now);
        t
    }

    /// What is persisted: every entry, reserved written as issued, in a stable order.
    pub fn entries(&self) -> Vec<IssuedToken> {
        let mut v: Vec<IssuedToken> = self
            .entries
            .values()
            .cloned()
            .map(|mut e| {
                if e.state == TokenState::Reserved {
                    e.state = TokenState::Issued;
                }
                e
            })
            .collect();
        v.sort_by(|a, b| (a.issued_at, &a.sha256).cmp(&(b.issued_at, &b.sha256)));
        v
    }

    /// Records a fresh token for `mac`. With `one_per_mac`, that MAC's earlier unspent (issued,
    /// not in-flight) tokens are revoked; returns how many.
    pub fn issue(&mut self, hash: Hash, mac: &str, now: u64, ttl: u64, one_per_mac: bool) -> usize {
        let mut revoked = 0;
        if one_per_mac {
            for e in self.entries.values_mut() {
                if e.mac == mac && e.state == TokenState::Issued && e.expires_at > now {
                    e.state = TokenState::Revoked;
                    revoked += 1;
                }
            }
        }
        self.prune(now);
        self.entries.insert(
            hash,
            IssuedToken {
                sha256: hex(&hash),
                mac: mac.to_owned(),
                issued_at: now,
                expires_at: now.saturating_add(ttl),
                state: TokenState::Issued,
            },
        );
        revoked
    }

    /// Revokes every unspent token of `mac` (its approval was withdrawn).
    pub fn revoke_mac(&mut self, mac: &str) -> usize {
        let mut n = 0;
        for e in self.entries.values_mut() {
            if e.mac == mac && e.state == TokenState::Issued {
                e.state = TokenState::Revoked;
                n += 1;
            }
        }
        n
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.entries.contains_key(hash)
    }

    /// Holds the token for one key request from a machine reporting `macs` (normalised).
    pub fn reserve(
        &mut self,
        hash: &Hash,
        macs: &[String],
        now: u64,
    ) -> Result<IssuedReservation, Refusal> {
        let e = self.entries.get_mut(hash).ok_or(Refusal::TokenUnknown)?;
        let label = e.label();
        match e.state {
            TokenState::Spent => return Err(Refusal::TokenUsed { label }),
            TokenState::Reserved => return Err(Refusal::TokenInFlight { label }),
            TokenState::Revoked => return Err(Refusal::TokenRevoked { label }),
            TokenState::Issued => {}
        }
        if now >= e.expires_at {
            return Err(Refusal::TokenExpired { label });
        }
        if !macs.contains(&e.mac) {
            return Err(Refusal::TokenOtherMac { label });
        }
        e.state = TokenState::Reserved;
        Ok(IssuedReservation {
            hash: *hash,
            label,
            mac: e.mac.clone(),
        })
    }

    /// The key was handed out: the token is spent.
    pub fn commit(&mut self, r: &IssuedReservation) {
        if let Some(e) = self.entries.get_mut(&r.hash) {
            e.state = TokenState::Spent;
        }
    }

    /// Minting failed (or the spend could not be recorded): the token may be tried again.
    pub fn release(&mut self, r: &IssuedReservation) {
        if let Some(e) = self.entries.get_mut(&r.hash) {
            if e.state == TokenState::Reserved {
                e.state = TokenState::Issued;
            }
        }
    }

    /// Undoes a [`Self::commit`] whose spend could not be recorded.
    pub fn release_spent(&mut self, r: &IssuedReservation) {
        if let Some(e) = self.entries.get_mut(&r.hash) {
            if e.state == TokenState::Spent {
                e.state = TokenState::Issued;
            }
        }
    }

    /// Forgets entries [`RETENTION_SECS`] past their expiry; a reserved one is in use.
    pub fn prune(&mut self, now: u64) {
        self.entries.retain(|_, e| match e.state {
            TokenState::Reserved => true,
            TokenState::Issued | TokenState::Spent | TokenState::Revoked => {
                e.expires_at.saturating_add(RETENTION_SECS) > now
            }
        });
    }

    /// Unexpired tokens not yet spent, per MAC (for the log).
    pub fn outstanding(&self, now: u64) -> usize {
        self.entries
            .values()
            .filter(|e| e.state == TokenState::Issued && e.expires_at > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "52:54:00:12:34:56";
    const OTHER: &str = "52:54:00:65:43:21";

    fn macs(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn issued_reserved_spent_and_replayed() {
        let mut t = IssuedTokens::default();
        let h = sha256("fake-token-1");
        t.issue(h, MAC, 1000, 300, true);
        let r = t.reserve(&h, &macs(&[OTHER, MAC]), 1001).unwrap();
        assert_eq!(r.mac, MAC);
        assert!(matches!(
            t.reserve(&h, &macs(&[MAC]), 1001),
            Err(Refusal::TokenInFlight { .. })
        ));
        t.commit(&r);
        let e = t.reserve(&h, &macs(&[MAC]), 1002).unwrap_err();
        assert!(matches!(e, Refusal::TokenUsed { .. }));
        assert!(e.message().contains(MAC) && !e.message().contains("fake-token"));
    }

    #[test]
    fn a_failed_mint_releases_and_a_wrong_mac_is_refused_without_spending() {
        let mut t = IssuedTokens::default();
        let h = sha256("fake-token-2");
        t.issue(h, MAC, 1000, 300, true);
        assert!(matches!(
            t.reserve(&h, &macs(&[OTHER]), 1001),
            Err(Refusal::TokenOtherMac { .. })
        ));
        let r = t.reserve(&h, &macs(&[MAC]), 1001).unwrap();
        t.release(&r);
        assert!(t.reserve(&h, &macs(&[MAC]), 1002).is_ok());
        assert_eq!(
            t.reserve(&sha256("never-issued"), &macs(&[MAC]), 1002)
                .unwrap_err(),
            Refusal::TokenUnknown
        );
    }

    #[test]
    fn tokens_expire_and_are_pruned() {
        let mut t = IssuedTokens::default();
        let h = sha256("fake-token-3");
        t.issue(h, MAC, 1000, 30, true);
        assert!(matches!(
            t.reserve(&h, &macs(&[MAC]), 1030),
            Err(Refusal::TokenExpired { .. })
        ));
        assert_eq!(t.outstanding(1029), 1);
        assert_eq!(t.outstanding(1030), 0);
        // Still known as expired (not "unknown") for the retention time, then forgotten.
        t.prune(1030 + RETENTION_SECS - 1);
        assert!(matches!(
            t.reserve(&h, &macs(&[MAC]), 1030 + RETENTION_SECS - 1),
            Err(Refusal::TokenExpired { .. })
        ));
        t.prune(1030 + RETENTION_SECS);
        assert!(!t.contains(&h), "a token long expired is forgotten");
        assert_eq!(
            t.reserve(&h, &macs(&[MAC]), 1031 + RETENTION_SECS)
                .unwrap_err(),
            Refusal::TokenUnknown
        );
    }

    #[test]
    fn one_boot_per_mac_revokes_the_older_token_only_for_that_mac() {
        let mut t = IssuedTokens::default();
        let (a, b, c) = (sha256("a"), sha256("b"), sha256("c"));
        t.issue(a, MAC, 1000, 300, true);
        t.issue(c, OTHER, 1000, 300, true);
        assert_eq!(t.issue(b, MAC, 1010, 300, true), 1);
        assert!(matches!(
            t.reserve(&a, &macs(&[MAC]), 1011),
            Err(Refusal::TokenRevoked { .. })
        ));
        assert!(t.reserve(&b, &macs(&[MAC]), 1011).is_ok());
        assert!(t.reserve(&c, &macs(&[OTHER]), 1011).is_ok());
        let mut many = IssuedTokens::default();
        many.issue(a, MAC, 1000, 300, false);
        assert_eq!(many.issue(b, MAC, 1010, 300, false), 0);
        assert!(many.reserve(&a, &macs(&[MAC]), 1011).is_ok());
        assert_eq!(many.revoke_mac(MAC), 1, "b is still issued, a is reserved");
    }

    #[test]
    fn a_reload_keeps_spent_spent_issued_valid_and_never_revives_expired() {
        let mut t = IssuedTokens::default();
        let (spent, live, old, busy) = (sha256("s"), sha256("l"), sha256("o"), sha256("r"));
        t.issue(spent, MAC, 1000, 300, false);
        t.issue(live, MAC, 1000, 300, false);
        t.issue(old, OTHER, 900, 30, false);
        t.issue(busy, OTHER, 1000, 300, false);
        let r = t.reserve(&spent, &macs(&[MAC]), 1001).unwrap();
        t.commit(&r);
        let _in_flight = t.reserve(&busy, &macs(&[OTHER]), 1001).unwrap();
        let saved = serde_json::to_string(&t.entries()).unwrap();
        assert!(!saved.contains("reserved"));
        let mut again = IssuedTokens::from_entries(serde_json::from_str(&saved).unwrap(), 1002);
        assert!(matches!(
            again.reserve(&spent, &macs(&[MAC]), 1002),
            Err(Refusal::TokenUsed { .. })
        ));
        assert!(again.reserve(&live, &macs(&[MAC]), 1002).is_ok());
        assert!(again.reserve(&busy, &macs(&[OTHER]), 1002).is_ok());
        // Expired before the restart, and said so after it.
        assert!(matches!(
            again.reserve(&old, &macs(&[OTHER]), 1002),
            Err(Refusal::TokenExpired { .. })
        ));
        let later = IssuedTokens::from_entries(again.entries(), 1000 + 300 + RETENTION_SECS);
        assert_eq!(later.entries().len(), 0);
    }
}
