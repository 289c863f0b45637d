//! Tells the moment tailscaled's socket appears: an inotify watch on the socket's directory, so
//! that without systemd (no unit to follow over D-Bus) the agent reconnects as soon as tailscaled
//! creates its socket, not at the next step of its backoff. A signal from the kernel, no polling;
//! where the watch cannot be set up (no directory yet) the caller keeps its backoff alone.

use rustix::fs::inotify;
use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tokio::io::unix::AsyncFd;

pub struct SocketWatch {
    fd: AsyncFd<OwnedFd>,
    name: OsString,
}

impl SocketWatch {
    /// Watches the directory of `socket`. Set it up before trying to connect, so that a socket
    /// created in between is not missed. `None` when the directory does not exist (yet).
    pub fn new(socket: &Path) -> Option<Self> {
        let dir = socket.parent()?;
        let name = socket.file_name()?.to_owned();
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()?;
        inotify::add_watch(
            &fd,
            dir,
            // CREATE comes at bind(), before listen(): a connect then can still be refused.
            // tailscaled chmods its socket right after listen(), which is the ATTRIB event.
            inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::ATTRIB,
        )
        .ok()?;
        // SAFETY: an `OwnedFd` is open until dropped and always returns the same descriptor,
        // and the `AsyncFd` owns it for its whole life; we run inside the Tokio runtime.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(fd) }.ok()?;
        Some(SocketWatch { fd, name })
    }

    /// Returns once a file of the socket's name is created in (or moved into) the directory, or
    /// its attributes change.
    /// Never returns if the watch fails: the caller's backoff still runs beside it.
    pub async fn created(&self) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
            let mut events = inotify::Reader::new(self.fd.get_ref(), &mut buf);
            let mut seen = false;
            loop {
                match events.next() {
                    Ok(e) => {
                        seen |= e.file_name().map(|n| n.to_bytes()) == Some(self.name.as_bytes());
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(_) => return std::future::pending().await,
                }
            }
            if seen {
                return;
            }
        }
    }
}

/// [`SocketWatch::created`] for an optional watch: without one, never.
pub async fn created(watch: Option<&SocketWatch>) {
    match watch {
        Some(w) => w.created().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_when_the_socket_is_created_and_not_for_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tailscaled.sock");
        let watch = SocketWatch::new(&socket).unwrap();
        std::fs::write(dir.path().join("other"), b"").unwrap();
        let early = tokio::time::timeout(Duration::from_millis(200), watch.created()).await;
        assert!(early.is_err(), "woke for another file");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.created())
            .await
            .expect("no wake-up for the socket");
        // The chmod tailscaled does after listen() wakes it again.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.created())
            .await
            .expect("no wake-up for the chmod");
    }

    #[test]
    fn no_watch_without_the_directory() {
        assert!(SocketWatch::new(Path::new("/no/such/dir/tailscaled.sock")).is_none());
    }
}
