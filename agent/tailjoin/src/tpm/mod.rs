//! The machine's TPM 2.0, for a TPM-proven key request (see [`tailjoin_common::wire`]): the
//! endorsement key (EK) it shows, an attestation key (AK) made under it, and
//! TPM2_ActivateCredential, which unwraps the credential a provisioner wrapped to both.
//!
//! One concern per module; only [`marshal`] and [`tcti`]'s choice are pure:
//! - [`tcti`]: where the TPM is (`TAILJOIN_TPM_TCTI`, else /dev/tpmrm0) and opening it;
//! - [`marshal`]: TPM2B framing, Names and the EK fingerprint;
//! - `keys`: [`TpmKeys`], which makes the EK and the AK, owns their handles and flushes them;
//! - `ek_cert`: the EK certificate from its NV index, when the TPM holds one;
//! - `activate`: TPM2_ActivateCredential with the EK's policy session.
//!
//! tss-esapi's [`tss_esapi::Context`] blocks on the TPM: call all of this from
//! `tokio::task::spawn_blocking`.

mod activate;
mod ek_cert;
mod keys;
pub mod marshal;
pub mod tcti;

pub use keys::TpmKeys;

/// Why the TPM could not be used: what was being done and what the TPM (or tss-esapi) said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TpmError(String);

impl TpmError {
    pub fn new(message: String) -> Self {
        TpmError(message)
    }

    /// `doing` failed with tss-esapi's error `e` (the TPM's response code, in words).
    pub(crate) fn tss(doing: &str, e: tss_esapi::Error) -> Self {
        TpmError(format!("{doing} failed: {e}"))
    }
}
