//! [`TpmKeys`]: the EK and the AK of one TPM-proven request, loaded in the TPM for as long as
//! the request takes, and flushed when it is dropped (a resource manager would flush them when
//! the agent exits; a raw TPM or a simulator would keep them).

use super::marshal::{fingerprint, name_sha256, tpm2b};
use super::{TpmError, activate, ek_cert, tcti};
use secrecy::SecretSlice;
use tailjoin_common::wire::{TpmEvidence, to_hex};
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::traits::Marshall;

const RSA_2048: AsymmetricAlgorithmSelection =
    AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);

/// An open TPM with the machine's EK (the TCG default RSA 2048 EK, the same key at every boot)
/// and a fresh AK under it (RSA 2048, RSASSA with SHA-256, restricted signing, empty password).
pub struct TpmKeys {
    // Declared first, dropped last: `Drop` flushes the handles through it.
    ctx: Context,
    ek: Option<KeyHandle>,
    ak: Option<KeyHandle>,
    ek_public: Vec<u8>,
    ak_public: Vec<u8>,
    ak_name: Vec<u8>,
    ek_fingerprint: String,
    ek_certificate: Option<Vec<u8>>,
    certificate_problem: Option<TpmError>,
}

impl std::fmt::Debug for TpmKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmKeys")
            .field("ek_fingerprint", &self.ek_fingerprint)
            .finish_non_exhaustive()
    }
}

impl TpmKeys {
    /// Opens the TPM at `tcti` and makes the EK and the AK. Blocks on the TPM (creating an RSA
    /// primary key takes a real TPM up to seconds).
    pub fn open(tcti: &str) -> Result<TpmKeys, TpmError> {
        let mut keys = TpmKeys {
            ctx: tcti::open(tcti)?,
            ek: None,
            ak: None,
            ek_public: Vec::new(),
            ak_public: Vec::new(),
            ak_name: Vec::new(),
            ek_fingerprint: String::new(),
            ek_certificate: None,
            certificate_problem: None,
        };
        // On an error, `keys` is dropped here and flushes what was made.
        keys.make()?;
        Ok(keys)
    }

    fn make(&mut self) -> Result<(), TpmError> {
        let ek = ek::create_ek_object_2(&mut self.ctx, RSA_2048, None)
            .map_err(|e| TpmError::tss("creating the EK (TCG default RSA 2048 template)", e))?;
        self.ek = Some(ek);
        let (ek_tpmt, _) = self.public_of(ek, "EK")?;
        self.ek_fingerprint = fingerprint(&ek_tpmt);
        self.ek_public = framed(&ek_tpmt, "EK")?;
        match ek_cert::read(&mut self.ctx) {
            Ok(cert) => self.ek_certificate = cert,
            Err(e) => self.certificate_problem = Some(e),
        }

        let created = ak::create_ak_2(
            &mut self.ctx,
            ek,
            HashingAlgorithm::Sha256,
            RSA_2048,
            SignatureSchemeAlgorithm::RsaSsa,
            None,
            None,
        )
        .map_err(|e| TpmError::tss("creating the AK under the EK", e))?;
        let ak = ak::load_ak(
            &mut self.ctx,
            ek,
            None,
            created.out_private,
            created.out_public,
        )
        .map_err(|e| TpmError::tss("loading the AK", e))?;
        self.ak = Some(ak);
        let (ak_tpmt, ak_name) = self.public_of(ak, "AK")?;
        self.ak_public = framed(&ak_tpmt, "AK")?;
        self.ak_name = ak_name;
        Ok(())
    }

    /// The object's TPMT_PUBLIC as the TPM holds it, and its Name. Checked against the TPM's
    /// Name, so that what the provisioner is sent is byte for byte what the TPM hashes.
    fn public_of(&mut self, key: KeyHandle, what: &str) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let (public, name, _) = self
            .ctx
            .read_public(key)
            .map_err(|e| TpmError::tss(&format!("reading the {what}'s public area"), e))?;
        let tpmt = public
            .marshall()
            .map_err(|e| TpmError::tss(&format!("marshalling the {what}'s public area"), e))?;
        if name_sha256(&tpmt) != name.value() {
            return Err(TpmError::new(format!(
                "the {what}'s public area, marshalled here, does not hash to the Name the TPM \
                 reports: the agent cannot show this TPM's {what} faithfully"
            )));
        }
        Ok((tpmt, name.value().to_vec()))
    }

    /// What the machine shows of its TPM in step 1 of a TPM-proven request.
    pub fn evidence(&self) -> TpmEvidence {
        TpmEvidence {
            ek_public: to_hex(&self.ek_public),
            ek_certificate: self.ek_certificate.as_deref().map(to_hex),
            ak_public: to_hex(&self.ak_public),
        }
    }

    /// The EK's TPM2B_PUBLIC (what `tpm2_createek -u` writes).
    pub fn ek_public(&self) -> &[u8] {
        &self.ek_public
    }

    /// The AK's TPM2B_PUBLIC.
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// The AK's Name (what MakeCredential binds the credential to).
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }

    /// `sha256:<hex>`: what `tailjoin-provisioner pending` shows for this machine's EK.
    pub fn ek_fingerprint(&self) -> &str {
        &self.ek_fingerprint
    }

    /// The EK certificate (DER), when the TPM holds one.
    pub fn ek_certificate(&self) -> Option<&[u8]> {
        self.ek_certificate.as_deref()
    }

    /// Why the EK certificate could not be read, when its index exists but reading it failed
    /// (the request then goes without it).
    pub fn certificate_problem(&self) -> Option<&TpmError> {
        self.certificate_problem.as_ref()
    }

    /// TPM2_ActivateCredential of a challenge: `id_object` is the TPM2B_ID_OBJECT and
    /// `encrypted_secret` the TPM2B_ENCRYPTED_SECRET that MakeCredential made for this EK and
    /// AK. Blocks on the TPM.
    pub fn activate(
        &mut self,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<SecretSlice<u8>, TpmError> {
        let (Some(ak), Some(ek)) = (self.ak, self.ek) else {
            return Err(TpmError::new("the TPM's keys are not loaded".into()));
        };
        activate::activate(&mut self.ctx, ak, ek, id_object, encrypted_secret)
    }
}

/// The TPM2B_PUBLIC of a TPMT_PUBLIC.
fn framed(tpmt: &[u8], what: &str) -> Result<Vec<u8>, TpmError> {
    tpm2b(tpmt).ok_or_else(|| TpmError::new(format!("the {what}'s public area is too large")))
}

impl Drop for TpmKeys {
    fn drop(&mut self) {
        for handle in [self.ak.take(), self.ek.take()].into_iter().flatten() {
            if let Err(e) = self.ctx.flush_context(handle.into()) {
                tracing::debug!("flushing a TPM object failed: {e}");
            }
        }
    }
}

// The keys move between tokio's blocking threads.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<TpmKeys>();
};
