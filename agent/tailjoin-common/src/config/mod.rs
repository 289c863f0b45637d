//! Configuration pieces the agent and the provisioner share: the minting APIs' sections and
//! the secret references in them (raw and validated), `log_level`, and the checks of single
//! fields. Each error names the field by its path and says what to do.

pub mod fields;
mod log_level;
mod mint;
pub mod validate_mint;

pub use fields::{invalid, parse_log_level, validate_credential_or_file, validate_tag};
pub use log_level::LogLevel;
pub use mint::{
    HeadscaleApi, MintApi, RawHeadscaleMint, RawTailscaleOAuth, RawTokenSource, TailscaleApi,
    TokenSource, UserRef,
};
pub use validate_mint::{validate_expiry, validate_headscale, validate_tailscale};
