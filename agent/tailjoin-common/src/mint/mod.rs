//! Minting auth keys: a fresh single-use, pre-authorized, tagged (and usually ephemeral) key
//! created per machine through the control server's API — headscale's REST API with an API key,
//! or Tailscale's API with an OAuth client. Used by the agent (`auth_key: {"headscale": …}` or
//! `{"tailscale_oauth": …}`) and by the provisioner, which mints on behalf of booting machines.
//! Their settings, raw and validated, are [`crate::config`]'s ([`MintApi`]).

mod headscale;
mod tailscale;
mod transport;

use crate::config::{MintApi, TokenSource};
use secrecy::SecretString;
use std::path::Path;
use std::time::Duration;

use transport::{client, send};

/// What the key must allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub expiry: Duration,
    /// Shown next to the key in the admin console (sanitised for Tailscale's rules).
    pub description: String,
}

/// A freshly minted key.
#[derive(Debug)]
pub struct MintedKey {
    pub key: SecretString,
    /// The server's id for the key (not secret): what audit lines name.
    pub id: String,
    /// When the key expires, as the server says (RFC 3339), if it says.
    pub expires: Option<String>,
}

/// A failed attempt to mint, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintFailure {
    pub transient: bool,
    pub reason: String,
    pub fix: String,
}

/// Mints one key. `credentials_dir` is `$CREDENTIALS_DIRECTORY` for credential-held API secrets.
pub async fn mint(
    api: &MintApi,
    req: &MintRequest,
    credentials_dir: Option<&Path>,
) -> Result<MintedKey, MintFailure> {
    match api {
        MintApi::Headscale(h) => headscale::mint(h, req, credentials_dir).await,
        MintApi::Tailscale(t) => tailscale::mint(t, req, credentials_dir).await,
    }
}

/// Reads the API secret; a failure to read it is not transient.
fn read_api_secret(
    t: &TokenSource,
    credentials_dir: Option<&Path>,
    what: &str,
) -> Result<SecretString, MintFailure> {
    crate::secrets::read_token(t, credentials_dir, what).map_err(|e| MintFailure {
        transient: false,
        reason: e.to_string(),
        fix: format!("deliver the {what} as a systemd credential or a root-only file"),
    })
}

/// Joins `path` (no leading slash) to a base URL that may itself have a path.
fn endpoint(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut u = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path);
    u.set_path(&joined);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path() {
        let b = reqwest::Url::parse("https://hs.example/").unwrap();
        assert_eq!(
            endpoint(&b, "api/v1/preauthkey").as_str(),
            "https://hs.example/api/v1/preauthkey"
        );
        let b = reqwest::Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            endpoint(&b, "api/v2/oauth/token").as_str(),
            "http://127.0.0.1:9/prefix/api/v2/oauth/token"
        );
    }
}
