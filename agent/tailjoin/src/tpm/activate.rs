//! TPM2_ActivateCredential: the TPM decrypts the credential's seed with the EK's private part,
//! checks that the credential was made for the AK's Name, and gives back the credential.
//!
//! The EK (TCG default template) has no password use: its policy is PolicySecret on the
//! endorsement hierarchy, so the EK's session is a policy session that has run PolicySecret
//! (the hierarchy's auth is empty). The AK uses its empty password. The policy session is
//! salted with the EK and encrypts the response, so the credential does not cross the bus to
//! the TPM in clear.

use super::TpmError;
use super::marshal::tpm2b_body;
use secrecy::SecretSlice;
use tss_esapi::Context;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};

/// The credential in `id_object` (a TPM2B_ID_OBJECT) and `encrypted_secret` (a
/// TPM2B_ENCRYPTED_SECRET), as MakeCredential made them for this EK and AK.
pub(super) fn activate(
    ctx: &mut Context,
    ak: KeyHandle,
    ek: KeyHandle,
    id_object: &[u8],
    encrypted_secret: &[u8],
) -> Result<SecretSlice<u8>, TpmError> {
    let what = "credential blob (TPM2B_ID_OBJECT)";
    let blob = IdObject::try_from(tpm2b_body(id_object, what)?.to_vec())
        .map_err(|e| TpmError::new(format!("the {what} is too large for this TPM ({e})")))?;
    let what = "encrypted secret (TPM2B_ENCRYPTED_SECRET)";
    let secret = EncryptedSecret::try_from(tpm2b_body(encrypted_secret, what)?.to_vec())
        .map_err(|e| TpmError::new(format!("the {what} is too large for this TPM ({e})")))?;

    let session = ctx
        .start_auth_session(
            Some(ek),
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(|e| TpmError::tss("starting the EK's policy session", e))?
        .ok_or_else(|| TpmError::new("the TPM started no policy session".into()))?;
    let result = run(ctx, session, ak, ek, blob, secret);
    // Flushed whatever happened (the TPM may have closed it already: then this fails, harmlessly).
    let _ = ctx.flush_context(SessionHandle::from(session).into());
    result
}

fn run(
    ctx: &mut Context,
    session: AuthSession,
    ak: KeyHandle,
    ek: KeyHandle,
    blob: IdObject,
    secret: EncryptedSecret,
) -> Result<SecretSlice<u8>, TpmError> {
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_encrypt(true)
        .build();
    ctx.tr_sess_set_attributes(session, attributes, mask)
        .map_err(|e| TpmError::tss("setting the policy session's attributes", e))?;
    let policy = PolicySession::try_from(session)
        .map_err(|e| TpmError::tss("using the policy session", e))?;
    ctx.execute_with_session(Some(AuthSession::Password), |c| {
        c.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })
    .map_err(|e| {
        TpmError::tss(
            "PolicySecret on the endorsement hierarchy (the EK's policy)",
            e,
        )
    })?;
    let credential = ctx
        .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
            c.activate_credential(ak, ek, blob, secret)
        })
        .map_err(|e| {
            TpmError::new(format!(
                "the TPM refused to activate the credential ({e}): it was made for another \
                 TPM's EK or another AK, or it was changed on the way"
            ))
        })?;
    Ok(SecretSlice::from(credential.value().to_vec()))
}
