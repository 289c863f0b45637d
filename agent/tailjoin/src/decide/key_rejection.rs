//! Which of tailscaled's error messages mean the control server refused the key (the texts
//! are in tests/real_peers/FINDINGS.md and docs/VERSION-MATRIX.md).

/// Is this `ErrMessage` the control server refusing the key? Anything else is treated as
/// transient (tailscaled keeps retrying the control server by itself).
pub fn is_key_rejection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    const KEY_WORDS: [&str; 6] = [
        "authkey",
        "auth key",
        "auth-key",
        "preauthkey",
        "pre-auth key",
        "invalid key",
    ];
    const REFUSALS: [&str; 11] = [
        "failed to parse",
        "too short",
        "invalid",
        "expired",
        "already used",
        "used already",
        "not found",
        "does not exist",
        "not valid",
        "unauthorized",
        "rejected",
    ];
    KEY_WORDS.iter().any(|w| m.contains(w)) && REFUSALS.iter().any(|r| m.contains(r))
}
