//! The minting APIs' sections (`headscale`, `tailscale_oauth`) and the secret references they
//! hold: as written (raw, unknown fields refused) and validated. The agent's `auth_key` and the
//! provisioner's `mint` section both use them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTokenSource {
    File(PathBuf),
    Credential(String),
}

/// `{"headscale": {…}}` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeadscaleMint {
    /// headscale's `server_url`; the API lives under `/api/v1`.
    pub url: String,
    /// The API key (`headscale apikeys create`), from a credential or a file.
    pub api_key: Option<RawTokenSource>,
    /// The user that owns the nodes, by name or numeric id (optional with tags).
    pub user: Option<String>,
    /// How long the minted key stays valid if unused.
    pub expiry_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
    pub allow_plain_http: Option<bool>,
    pub timeout_secs: Option<u64>,
}

/// `{"tailscale_oauth": {…}}` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTailscaleOAuth {
    /// The OAuth client's ID (not a secret).
    pub client_id: String,
    /// The OAuth client's secret, from a credential or a file.
    pub client_secret: Option<RawTokenSource>,
    /// Tailscale's API [default: https://api.tailscale.com].
    pub api_url: Option<String>,
    /// The tailnet [default: "-", the client's own].
    pub tailnet: Option<String>,
    pub expiry_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Credential(String),
}

/// Which API mints, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintApi {
    Headscale(HeadscaleApi),
    Tailscale(TailscaleApi),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadscaleApi {
    pub url: reqwest::Url,
    pub api_key: TokenSource,
    pub user: Option<UserRef>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(u64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleApi {
    pub api_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: TokenSource,
    pub tailnet: String,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl MintApi {
    pub fn describe(&self) -> String {
        match self {
            MintApi::Headscale(h) => format!("keys minted by headscale at {}", h.url),
            MintApi::Tailscale(t) => format!(
                "keys minted by Tailscale's API at {} (OAuth client {})",
                t.api_url, t.client_id
            ),
        }
    }
}
