//! `sd_notify(3)`: datagrams to `$NOTIFY_SOCKET` telling systemd `READY=1` and a `STATUS=` line.
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` once. A path, or `@name` for an abstract socket.
    pub fn from_env() -> io::Result<Self> {
        let Some(raw) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier { target: None });
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str());
        let target = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(raw)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is neither a path nor an abstract socket name",
                ));
            }
        };
        Ok(Notifier {
            target: Some(target),
        })
    }

    pub fn disabled() -> Self {
        Notifier { target: None }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `KEY=value` lines. Newlines inside a STATUS value would end it early, so callers
    /// pass one-line values; [`status_line`] makes them so.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(message.as_bytes(), target)?;
        Ok(())
    }
}

/// A `STATUS=` datagram for a one-line summary.
pub fn status_line(summary: &str) -> String {
    let one_line: String = summary
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={one_line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(SocketAddr::from_pathname(&path).unwrap()),
        };
        n.send("READY=1\nSTATUS=Running").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=Running");
    }

    #[test]
    fn status_lines_are_single_lines() {
        assert_eq!(status_line("a\nb\r\nc"), "STATUS=a b  c");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        assert!(Notifier::disabled().send("READY=1").is_ok());
    }
}
