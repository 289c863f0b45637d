//! A key in a file that only its owner may read.

use crate::error::SecretError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn read(path: &Path) -> Result<String, SecretError> {
    let source_name = format!("file {}", path.display());
    let unavailable = |reason: String, fix: &str| SecretError::Unavailable {
        source_name: source_name.clone(),
        reason,
        fix: fix.to_owned(),
    };
    use crate::fs_read::OpenError;
    // Never blocks (a FIFO without a writer is refused at once) and only opens regular files.
    let file = crate::fs_read::open_regular(path).map_err(|e| match e {
        OpenError::NotFound => unavailable(
            "it does not exist".into(),
            "create it (mode 600) or point auth_key.file at the right path",
        ),
        OpenError::PermissionDenied => unavailable(
            "permission denied".into(),
            "make it readable by the user tailjoin runs as (and nobody else), or use a systemd credential",
        ),
        e @ OpenError::NotRegular(_) => unavailable(
            e.to_string(),
            "point auth_key.file at a regular file holding the key",
        ),
        OpenError::Io(e) => unavailable(e.to_string(), "check the path"),
    })?;
    // Check the mode of the file we opened, not of whatever the path points at later.
    let meta = file
        .metadata()
        .map_err(|e| unavailable(e.to_string(), "check the path"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    super::read_bounded(file)
        .map_err(|reason| unavailable(reason, "the file must hold just the key, as text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_an_owner_only_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "k", "fake-key\n", 0o600);
        assert_eq!(read(&p).unwrap(), "fake-key\n");
        let p = write(d.path(), "k2", "fake-key", 0o400);
        assert_eq!(read(&p).unwrap(), "fake-key");
    }

    #[test]
    fn refuses_group_or_world_readable_files() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            let p = write(d.path(), "k", "fake-key-secret-part", mode);
            let e = read(&p).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, SecretError::TooOpen { .. }), "{mode:o}: {msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(!msg.contains("secret-part"), "{msg}");
        }
    }

    #[test]
    fn missing_files_and_directories_are_explained() {
        let d = tempfile::tempdir().unwrap();
        let e = read(&d.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = read(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") || e.contains("group or others"),
            "{e}"
        );
    }

    #[test]
    fn oversized_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = "x".repeat(super::super::MAX_KEY_BYTES as usize + 10);
        let p = write(d.path(), "big", &big, 0o600);
        assert!(read(&p).unwrap_err().to_string().contains("larger than"));
    }
}
