//! TPM 2.0 credential protection in software (TPM 2.0 Part 1 §24, TPM2_MakeCredential of Part 3):
//! the provisioner wraps a fresh secret to a machine's endorsement key (EK) and attestation key
//! (AK) so that only the TPM holding that EK's private part, with that AK loaded, can unwrap it
//! (TPM2_ActivateCredential). The provisioner needs no TPM of its own.
//!
//! One concern per module, all pure (the randomness is passed in):
//! - [`public`]: reading a TPM2B_PUBLIC (what `tpm2_readpublic -o`/`tpm2_createek -u` write) and
//!   an object's Name;
//! - [`kdf`]: KDFa, the TPM's counter-mode key derivation (Part 1 §11.4.10.2);
//! - [`credential`]: MakeCredential itself, and the tpm2-tools file format of its output;
//! - [`ek_cert`]: EK certificates: the chain to the fleet's TPM vendor CAs
//!   (`netboot.tpm_ek_ca_files`; its loader is the one thing here that reads files), and that the
//!   certificate is the presented EK's;
//! - [`challenge`]: the provisioner's half of a TPM-proven request (open a challenge, check the
//!   proof once); the machine's half, and the sealing of the key, are
//!   [`tailjoin_common::key_seal`]'s.
//!
//! Wired into `/v1/key` by `server/tpm_steps.rs` (policy: `tpm_gate.rs`); [`ek_cert`] checks EK
//! certificates against `netboot.tpm_ek_ca_files`.
//!
//! Supported: RSA 2048 EKs with AES-128-CFB and SHA-256 (the TCG default EK template, what
//! swtpm, firmware TPMs and discrete TPMs ship); AKs of any type with a SHA-256 name. An ECC EK is
//! refused with a message that says so.

pub mod challenge;
pub mod credential;
pub mod ek_cert;
pub mod kdf;
pub mod public;
