//! A key in an environment variable. Environment variables are readable only by the process's
//! own user (and root), unlike the command line, which every local user can read.

use crate::error::SecretError;
use std::ffi::OsString;

pub(crate) fn read(
    var: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<String, SecretError> {
    let source_name = format!("environment variable {var}");
    match lookup(var) {
        None => Err(SecretError::Unavailable {
            source_name,
            reason: "it is not set".into(),
            fix: format!("export {var}=… before starting tailjoin, or use another auth_key source"),
        }),
        Some(v) => v.into_string().map_err(|v| {
            drop(secrecy::SecretString::from(
                v.to_string_lossy().into_owned(),
            ));
            SecretError::Unavailable {
                source_name,
                reason: "it is not valid UTF-8".into(),
                fix: "set it to the key as text".into(),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_set_variable_and_explains_an_unset_one() {
        let v = read("K", |n| (n == "K").then(|| OsString::from("fake-key"))).unwrap();
        assert_eq!(v, "fake-key");
        let e = read("K", |_| None).unwrap_err().to_string();
        assert!(
            e.contains("environment variable K") && e.contains("not set"),
            "{e}"
        );
    }
}
