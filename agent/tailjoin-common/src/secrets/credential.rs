//! A systemd credential: `LoadCredential=NAME:/path` (or `LoadCredentialEncrypted=`,
//! `SetCredential=`) makes systemd place the key at `$CREDENTIALS_DIRECTORY/NAME`, readable
//! only by the service, on a non-swappable file system.

use crate::error::SecretError;
use std::path::Path;

pub fn read(name: &str, credentials_dir: Option<&Path>) -> Result<String, SecretError> {
    let source_name = format!("systemd credential {name}");
    let unavailable = |reason: String, fix: String| SecretError::Unavailable {
        source_name: source_name.clone(),
        reason,
        fix,
    };
    let dir = credentials_dir.ok_or_else(|| {
        unavailable(
            "$CREDENTIALS_DIRECTORY is not set, so tailjoin is not running under a unit that passes credentials".into(),
            format!("add LoadCredential={name}:/path/to/key (or LoadCredentialEncrypted=) to the unit, or use auth_key.file outside systemd"),
        )
    })?;
    let path = dir.join(name);
    let file = crate::fs_read::open_regular(&path).map_err(|e| match e {
        crate::fs_read::OpenError::NotFound => unavailable(
            format!("{} does not exist", path.display()),
            format!("check that the unit has LoadCredential={name}:… and that its source exists"),
        ),
        e => unavailable(
            format!("{}: {e}", path.display()),
            "check the unit's credential settings".into(),
        ),
    })?;
    super::read_bounded(file).map_err(|reason| {
        unavailable(
            reason,
            "the credential must hold just the key, as text".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_the_credentials_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ts-key"), "fake-key\n").unwrap();
        assert_eq!(read("ts-key", Some(d.path())).unwrap(), "fake-key\n");
    }

    #[test]
    fn explains_a_missing_directory_or_credential() {
        let e = read("ts-key", None).unwrap_err().to_string();
        assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
        assert!(e.contains("LoadCredential=ts-key:"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = read("ts-key", Some(d.path())).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
