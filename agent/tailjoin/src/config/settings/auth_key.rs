//! Where the key comes from, validated: a stored key (file, credential, environment), a
//! provisioning server, the kernel command line, or a minting API.

use crate::config::raw::{HttpMethod, TpmMode};
use std::path::PathBuf;
use std::time::Duration;
pub use tailjoin_common::config::{HeadscaleApi, MintApi, TailscaleApi, TokenSource, UserRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Credential(String),
    Env(String),
    Http(HttpKeySource),
    KernelCmdline(CmdlineSource),
    Mint(MintSource),
}

/// Kernel parameters that lead to the key. `http` holds everything but the URL, which comes from
/// `tailjoin.key_url=` at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineSource {
    pub path: PathBuf,
    pub allow_key: bool,
    pub allow_plain_http: bool,
    pub http: HttpKeySource,
}

/// A key minted at join time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintSource {
    pub api: MintApi,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub expiry: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpKeySource {
    pub url: reqwest::Url,
    pub method: HttpMethod,
    pub bearer_token: Option<TokenSource>,
    pub ca_file: Option<PathBuf>,
    pub response: ResponseFormat,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Whether a POST proves the machine's TPM.
    pub tpm: TpmPolicy,
}

/// Whether a POST proves the machine's TPM, and the setting that said so (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPolicy {
    pub mode: TpmMode,
    /// `auth_key.http.tpm`, `auth_key.kernel_cmdline.tpm` or the kernel parameter.
    pub set_by: String,
}

impl HttpKeySource {
    /// Names the server without the query string, which may carry a one-time token.
    pub fn describe(&self) -> String {
        let mut shown = self.url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        format!("HTTP source {shown}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFormat {
    Raw,
    Json { field: String },
}

impl KeySource {
    /// A description that names the source, never its content.
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("file {}", p.display()),
            KeySource::Credential(n) => format!("systemd credential {n}"),
            KeySource::Env(v) => format!("environment variable {v}"),
            KeySource::Http(h) => h.describe(),
            KeySource::KernelCmdline(c) => format!("kernel command line {}", c.path.display()),
            KeySource::Mint(m) => m.api.describe(),
        }
    }
}
