//! Never stranded, the I/O half: draws the jitter, waits the planned delay and asks systemd to
//! reboot ([`crate::decide::stranded`] decides whether and when). The agent's Failed report
//! (journal, console, status file, push reporters) has said why before this runs.

use crate::decide::stranded::RebootPlan;
use crate::error::exit;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// How long to wait for systemd to stop the agent once the reboot was queued.
const STOP_WAIT: Duration = Duration::from_secs(300);

/// A number from 0 to 1 for the jitter, from the system's random source (0.5 if it fails:
/// the jitter only spreads a fleet's reboots, it guards nothing).
pub fn random_fraction() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// The one line that says what happens, for the journal (and the console, where the unit's
/// output goes there) and the Failed report's summary.
pub fn announcement(plan: &RebootPlan) -> String {
    format!(
        "stranded ({}): {}; rebooting in {}s (reboot_on_key_failure)",
        plan.cure.kind(),
        plan.cure.why(),
        plan.delay.as_secs()
    )
}

/// Waits until `started + plan.delay`, then asks systemd to reboot and waits (bounded) to be
/// stopped. Returns the exit status: 0 when stopped for the reboot; 4 when the reboot could
/// not be asked for (the D-Bus error is logged) or a signal came first.
pub async fn reboot_after(plan: &RebootPlan, started: Instant) -> u8 {
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot handle SIGTERM ({e}); not rebooting");
            return exit::KEY_UNAVAILABLE;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(started + plan.delay) => {}
        _ = sigterm.recv() => {
            tracing::warn!("stopped (SIGTERM) before the planned reboot; not rebooting");
            return exit::KEY_UNAVAILABLE;
        }
    }
    tracing::warn!(
        tailjoin_stranded = plan.cure.kind(),
        "rebooting now: asking systemd to start reboot.target over D-Bus"
    );
    match crate::systemd::request_reboot().await {
        Ok(job) => tracing::info!("reboot queued (systemd job {job}); waiting to be stopped"),
        Err(e) => {
            tracing::error!(
                tailjoin_stranded = plan.cure.kind(),
                "the reboot failed: systemd did not queue reboot.target over D-Bus: {e}; \
                 exiting with status 4 instead: power-cycle the machine to boot it again"
            );
            return exit::KEY_UNAVAILABLE;
        }
    }
    tokio::select! {
        _ = tokio::time::sleep(STOP_WAIT) => {
            tracing::error!(
                "no reboot within {}s of queueing it; exiting with status 4",
                STOP_WAIT.as_secs()
            );
            exit::KEY_UNAVAILABLE
        }
        _ = sigterm.recv() => {
            tracing::info!("stopping on SIGTERM for the reboot");
            exit::OK
        }
    }
}
