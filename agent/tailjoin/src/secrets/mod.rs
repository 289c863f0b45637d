//! Reading the auth key from where it is kept: a file, a credential, the environment, a
//! provisioning server or the kernel command line (the sources that do not mint;
//! [`crate::auth_key`] picks the configured one, or mints). The readers shared with the
//! provisioner (credential, file, the one-token checks) are [`tailjoin_common::secrets`]'s.

pub mod cmdline;
pub(crate) mod env;
pub(crate) mod http;
mod http_tpm;
mod tpm_exchange;
pub use http::parse_key_response;
pub use tailjoin_common::secrets::{
    KeyContext, MAX_KEY_BYTES, credential, file, identity, normalize, one_token, read_bounded,
    read_secret_text, read_token,
};

use crate::config::RetryPolicy;
use crate::error::{KeyServerFailure, SecretError};

/// The reason of the last failed attempt of a network source, for the message when its overall
/// deadline passes during a later attempt or delay.
#[derive(Default)]
pub(crate) struct LastFailure(std::sync::Mutex<Option<String>>);

impl LastFailure {
    pub(crate) fn set(&self, reason: &str) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(reason.to_owned());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|last| last.clone())
    }
}

/// The error when fetching or minting the key took longer than `retry.key_fetch_deadline`,
/// retries included.
pub(crate) fn deadline_passed(
    source_name: &str,
    retry: &RetryPolicy,
    last: &LastFailure,
) -> SecretError {
    let secs = retry.key_fetch_deadline.as_secs();
    SecretError::KeyServer {
        failure: KeyServerFailure::Unavailable,
        source_name: source_name.to_owned(),
        reason: match last.get() {
            Some(r) => format!(
                "no key within the overall deadline of {secs}s (retry.key_fetch_deadline_secs), \
                 retries included; the last failed attempt: {r}"
            ),
            None => format!(
                "no key within the overall deadline of {secs}s (retry.key_fetch_deadline_secs); \
                 the attempt under way had not finished"
            ),
        },
        fix: "check that the server is up and answers promptly, or raise \
              retry.key_fetch_deadline_secs"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_names_the_source_the_setting_and_the_last_failure() {
        let retry = RetryPolicy {
            initial_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
            max_attempts: 3,
            key_attempts: 1,
            key_fetch_deadline: std::time::Duration::from_secs(7),
        };
        let last = LastFailure::default();
        let e = deadline_passed("HTTP source https://p/k", &retry, &last).to_string();
        assert!(
            e.contains("HTTP source https://p/k") && e.contains("overall deadline of 7s"),
            "{e}"
        );
        assert!(e.contains("retry.key_fetch_deadline_secs") && e.contains("had not finished"));
        last.set("HTTP 503 Service Unavailable");
        let e = deadline_passed("HTTP source https://p/k", &retry, &last).to_string();
        assert!(e.contains("the last failed attempt: HTTP 503"), "{e}");
    }
}
