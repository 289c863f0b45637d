//! Opening the files the agent and the provisioner read (keys, credentials, configs, the kernel
//! command line, status files) so that opening never blocks and only regular files are read.
//!
//! A plain `open()` of a FIFO with no writer blocks until one appears; on the async runtime's
//! thread that froze the whole agent, SIGTERM included. Here every open is `O_NONBLOCK` (which
//! changes nothing for a regular file), the opened descriptor is checked with `fstat`, and
//! anything that is not a regular file (a FIFO, a socket, a device, a directory) is refused with
//! what it is. `/proc` and `/sys` entries are regular files and read as usual.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("it does not exist")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("it is not a regular file but {0}")]
    NotRegular(&'static str),
    #[error("{0}")]
    Io(std::io::Error),
}

fn what(ft: std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Opens `path` for reading without blocking, and only if it is a regular file.
pub fn open_regular(path: &Path) -> Result<File, OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OpenError::NotFound,
            std::io::ErrorKind::PermissionDenied => OpenError::PermissionDenied,
            // A unix socket cannot be opened (ENXIO): say what it is.
            _ => match std::fs::metadata(path) {
                Ok(m) if !m.file_type().is_file() => OpenError::NotRegular(what(m.file_type())),
                _ => OpenError::Io(e),
            },
        })?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular(what(meta.file_type())));
    }
    Ok(file)
}

/// Reads at most `max` bytes of UTF-8 text from a regular file. `Err` is the problem in words.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    let file = open_regular(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("it is not UTF-8 text ({e})"))?;
    if text.len() as u64 > max {
        return Err(format!("it is larger than {max} bytes"));
    }
    Ok(text)
}

/// The largest configuration file read (they are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A configuration file's text, with the problem as an `io::Error` (its kind kept where there is
/// one) for the config loaders' error types.
pub fn read_config(path: &Path) -> Result<String, std::io::Error> {
    let file = open_regular(path).map_err(|e| match e {
        OpenError::NotFound => std::io::Error::from(std::io::ErrorKind::NotFound),
        OpenError::PermissionDenied => std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        OpenError::Io(e) => e,
        e @ OpenError::NotRegular(_) => std::io::Error::other(e.to_string()),
    })?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let t = Instant::now();
        let e = open_regular(&fifo).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn directories_devices_and_sockets_are_named() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            open_regular(d.path())
                .unwrap_err()
                .to_string()
                .contains("directory")
        );
        assert!(
            open_regular(Path::new("/dev/null"))
                .unwrap_err()
                .to_string()
                .contains("character device")
        );
        let sock = d.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(
            open_regular(&sock)
                .unwrap_err()
                .to_string()
                .contains("socket")
        );
        assert!(matches!(
            open_regular(&d.path().join("absent")),
            Err(OpenError::NotFound)
        ));
    }

    #[test]
    fn regular_and_proc_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "hello\n").unwrap();
        assert_eq!(read_text(&p, 100).unwrap(), "hello\n");
        assert!(read_text(&p, 3).unwrap_err().contains("larger than 3"));
        assert!(
            !read_text(Path::new("/proc/self/stat"), 4096)
                .unwrap()
                .is_empty()
        );
    }
}
