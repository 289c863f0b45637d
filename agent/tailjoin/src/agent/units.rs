//! Waiting for systemd units over D-Bus before talking to tailscaled: tailscaled's own unit, and
//! at the first start the configured units that are queued to start (e.g. the one decrypting
//! the key). What systemd says about them is reported as the agent's status.

use super::Agent;
use crate::decide::Phase;
use crate::error::AgentError;
use crate::report::status_file::ErrorReport;
use crate::systemd::WaitError;
use crate::unit_wait::{UnitObservation, describe};
use tokio::time::Instant;

impl Agent {
    /// Waits over D-Bus until tailscaled's unit is active (and, the first time, the configured
    /// units that are queued to start). Without systemd this returns at once.
    pub(super) async fn wait_for_units(&mut self, first: bool) -> Result<(), AgentError> {
        let Some(waiter) = self.systemd.take() else {
            return Ok(());
        };
        let mut units = vec![(self.settings.tailscaled_unit.clone(), true)];
        if first {
            units.extend(
                self.settings
                    .wait_for_units
                    .iter()
                    .map(|u| (u.clone(), false)),
            );
        }
        let deadline = Instant::now() + self.settings.units_timeout;
        let mut result = Ok(());
        for (unit, required) in units {
            let left = deadline.saturating_duration_since(Instant::now());
            let waited = waiter
                .wait_active(&unit, required, left, |name, seen| {
                    self.report_unit(name, seen)
                })
                .await;
            match waited {
                Ok(()) => {}
                Err(WaitError::Bus(e)) => {
                    tracing::warn!(
                        "lost systemd's D-Bus signals ({e}); waiting for tailscaled's socket instead"
                    );
                    self.unit_wait = None;
                    return Ok(());
                }
                Err(e @ WaitError::Timeout { .. }) => {
                    result = Err(AgentError::UnitTimeout(format!(
                        "{e}; raise units_timeout_secs, or check `systemctl status {unit}`"
                    )));
                    break;
                }
                Err(e @ WaitError::NoSuchUnit { .. }) => {
                    result = Err(AgentError::UnitMissing(e.to_string()));
                    break;
                }
            }
        }
        self.unit_wait = None;
        self.systemd = Some(waiter);
        result
    }

    fn report_unit(&mut self, unit: &str, seen: &UnitObservation) {
        let state = describe(seen);
        let error = (seen.active_state == "failed").then(|| ErrorReport {
            kind: "unit-failed".to_owned(),
            message: format!("{unit} is {state}"),
        });
        self.unit_wait = Some((format!("waiting for {unit}: it is {state}"), error));
        self.report_phase(Phase::WaitingForTailscaled);
    }
}
