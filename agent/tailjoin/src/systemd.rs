//! Waiting for systemd units over D-Bus: signals, not sleeps.
//!
//! Before the agent talks to tailscaled it waits until `tailscaled.service` is active by
//! subscribing to systemd's signals and following the unit's `ActiveState` property changes.
//! Other configured units (by default `network-online.target`) are waited for only while a
//! start job for them is queued, so a system without them is not held up.
//!
//! Only the few members used are declared, in private proxies behind [`SystemdWaiter`].

use crate::unit_wait::{UnitObservation, UnitVerdict, describe, judge_unit};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::time::Instant;
use zbus::zvariant::OwnedObjectPath;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    /// Asks systemd to emit unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;
    /// The unit's object, loading its definition if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a start job for the unit (`mode`: how it treats jobs already queued).
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
}

/// Asks systemd to reboot the machine: a start job for `reboot.target` in mode
/// `replace-irreversibly`, as `systemctl reboot` queues it, so later jobs cannot cancel it.
/// systemd's manager rather than logind's `Reboot`: the agent already talks to it, it is
/// there on every systemd machine (logind need not run on a minimal image), and logind would
/// also weigh inhibitors and other users' sessions, which an unattended netboot machine must
/// not wait on. Returns the job's object path; `Err` names what D-Bus said.
pub async fn request_reboot() -> Result<String, zbus::Error> {
    let conn = zbus::Connection::system().await?;
    let manager = ManagerProxy::new(&conn).await?;
    let job = manager
        .start_unit("reboot.target", "replace-irreversibly")
        .await?;
    Ok(job.to_string())
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

/// Why waiting for a unit ended without it becoming active.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{unit} did not become active within {secs} s (last state: {last})")]
    Timeout {
        unit: String,
        secs: u64,
        last: String,
    },
    #[error("{unit} does not exist (LoadState={load_state}); check the unit name")]
    NoSuchUnit { unit: String, load_state: String },
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// A connection to systemd on the system bus.
pub struct SystemdWaiter {
    manager: ManagerProxy<'static>,
    conn: zbus::Connection,
}

impl SystemdWaiter {
    /// Connects to the system bus and subscribes to systemd's signals. `Err` when there is no
    /// system bus (a container, a test): the caller falls back to watching the socket.
    pub async fn connect() -> Result<Self, zbus::Error> {
        let conn = zbus::Connection::system().await?;
        let manager = ManagerProxy::new(&conn).await?;
        manager.subscribe().await?;
        Ok(SystemdWaiter { manager, conn })
    }

    async fn observe(unit: &UnitProxy<'_>) -> Result<UnitObservation, zbus::Error> {
        let (job_id, _) = unit.job().await.unwrap_or((0, OwnedObjectPath::default()));
        Ok(UnitObservation {
            load_state: unit.load_state().await?,
            active_state: unit.active_state().await?,
            sub_state: unit.sub_state().await.unwrap_or_default(),
            job_queued: job_id != 0,
        })
    }

    /// Waits until `name` is active. With `required` false, a unit that is neither active nor
    /// queued to start is not waited for. `on_change` is told every state seen, so the caller
    /// can report "tailscaled failed; waiting" as it happens.
    pub async fn wait_active(
        &self,
        name: &str,
        required: bool,
        timeout: Duration,
        mut on_change: impl FnMut(&str, &UnitObservation),
    ) -> Result<(), WaitError> {
        let path = self.manager.load_unit(name).await?;
        let unit = UnitProxy::builder(&self.conn).path(path)?.build().await?;
        // Subscribe to changes before reading the state, so no change falls in between.
        let mut changes = unit.receive_active_state_changed().await;
        let deadline = Instant::now() + timeout;
        loop {
            let seen = Self::observe(&unit).await?;
            let last = describe(&seen);
            match judge_unit(&seen, required) {
                UnitVerdict::Ready | UnitVerdict::NotNeeded => return Ok(()),
                UnitVerdict::Missing => {
                    return Err(WaitError::NoSuchUnit {
                        unit: name.to_owned(),
                        load_state: seen.load_state,
                    });
                }
                UnitVerdict::Wait => on_change(name, &seen),
            }
            tokio::select! {
                change = changes.next() => {
                    if change.is_none() {
                        return Err(WaitError::Bus(zbus::Error::Failure(
                            "systemd's signal stream ended".into(),
                        )));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(WaitError::Timeout {
                        unit: name.to_owned(),
                        secs: timeout.as_secs(),
                        last,
                    });
                }
            }
        }
    }
}
