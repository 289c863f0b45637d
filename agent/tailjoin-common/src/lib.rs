//! What the tailjoin agent (`tailjoin`) and the provisioner (`tailjoin-provisioner`) share:
//! configuration primitives, reading secrets kept on the machine, minting keys through headscale's
//! or Tailscale's API, the HTTP client, logging, and the wire types of the provisioner's
//! `/v1/key`. Nothing here serves requests or talks to tailscaled.

pub mod config;
pub mod error;
pub mod fs_read;
pub mod fs_write;
pub mod http_client;
pub mod key_seal;
pub mod logging;
pub mod mint;
pub mod redact;
pub mod secrets;
pub mod time;
pub mod wire;
