//! Health reporting on every transition: one journal entry with structured fields, systemd's
//! status line (and `READY=1` at the first Running), the status file, the metrics (listener and
//! textfile) and the push reporters' queues.

pub mod listener;
pub mod metrics;
pub mod push;
pub mod sd_notify;
pub mod status_file;
use crate::time;

use crate::decide::Phase;
use crate::state::{BackendState, NodeFacts};
use sd_notify::Notifier;
use status_file::{ErrorReport, StatusReport};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// One reportable change of what the agent is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub phase: Phase,
    /// One line for humans: systemd's status line, the journal MESSAGE, `tailjoin status`.
    pub summary: String,
    pub backend: Option<BackendState>,
    pub node: Option<NodeFacts>,
    pub error: Option<ErrorReport>,
    /// Joins so far (a submitted key that reached Running).
    pub joins: u32,
}

pub struct Reporter {
    notifier: Notifier,
    state_dir: PathBuf,
    /// The report and counters: what the health listener serves and the textfile holds. The
    /// push reporters add their counts here too.
    shared: listener::Shared,
    push: push::PushQueues,
    /// node_exporter textfile-collector file, rewritten on every transition.
    textfile: Option<PathBuf>,
    textfile_warned: bool,
    started: Instant,
    report: StatusReport,
    ready_sent: bool,
    status_file_warned: bool,
}

impl Reporter {
    pub fn new(
        notifier: Notifier,
        state_dir: PathBuf,
        login_server: Option<String>,
        key_source: String,
    ) -> Self {
        let now = SystemTime::now();
        let report = StatusReport {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at: time::rfc3339(now),
            state: Phase::Starting,
            previous_state: None,
            summary: "starting".into(),
            since: time::rfc3339(now),
            backend_state: None,
            login_server,
            key_source,
            node: None,
            time_to_join_ms: None,
            joins: 0,
            error: None,
        };
        let counters = metrics::Counters {
            last_transition_ms: time::unix_ms(now),
            ..Default::default()
        };
        Reporter {
            notifier,
            state_dir,
            shared: std::sync::Arc::new(std::sync::Mutex::new((report.clone(), counters))),
            push: push::PushQueues::default(),
            textfile: None,
            textfile_warned: false,
            started: Instant::now(),
            report,
            ready_sent: false,
            status_file_warned: false,
        }
    }

    /// Also writes the metrics to `path` (node_exporter's textfile collector) on every transition.
    pub fn with_textfile(mut self, path: Option<PathBuf>) -> Self {
        self.textfile = path;
        self
    }

    /// Hands every report to the push reporters from now on, starting with the current one.
    pub fn with_push(mut self, queues: push::PushQueues) -> Self {
        queues.offer(&self.report);
        self.push = queues;
        self
    }

    /// The state the health listener serves.
    pub fn shared(&self) -> listener::Shared {
        self.shared.clone()
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn current(&self) -> &StatusReport {
        &self.report
    }

    /// Reports `t` unless it says exactly what was last reported.
    pub fn transition(&mut self, t: Transition) {
        let same = t.phase == self.report.state
            && t.summary == self.report.summary
            && t.node == self.report.node
            && t.error == self.report.error
            && t.joins == self.report.joins;
        if same {
            return;
        }
        let prev = self.report.state;
        let elapsed_ms = self.elapsed_ms();
        if t.phase == Phase::Running && self.report.time_to_join_ms.is_none() {
            self.report.time_to_join_ms = Some(elapsed_ms);
        }
        self.report.joins = t.joins;
        if t.phase != prev {
            self.report.previous_state = Some(prev);
        }
        self.report.state = t.phase;
        self.report.summary = t.summary.clone();
        self.report.since = time::rfc3339(SystemTime::now());
        self.report.backend_state = t.backend.map(|b| b.name().to_owned());
        // A failure counts once, when it is first reported.
        let new_failure = t
            .error
            .as_ref()
            .filter(|err| self.report.error.as_ref() != Some(*err))
            .map(|err| err.kind.clone());
        self.report.node = t.node.clone();
        self.report.error = t.error.clone();
        let metrics_text = match self.shared.lock() {
            Ok(mut shared) => {
                let (report, counters) = &mut *shared;
                if let Some(kind) = new_failure {
                    *counters.failures.entry(kind).or_default() += 1;
                }
                counters.last_transition_ms = time::unix_ms(SystemTime::now());
                *report = self.report.clone();
                self.textfile
                    .is_some()
                    .then(|| metrics::render(report, counters))
            }
            Err(_) => None,
        };
        if let Some(text) = metrics_text {
            self.write_textfile(&text);
        }
        self.push.offer(&self.report);

        self.log(&t, prev, elapsed_ms);
        self.notify(&t);
        if let Err(e) = status_file::write(&self.state_dir, &self.report) {
            if !self.status_file_warned {
                self.status_file_warned = true;
                tracing::warn!(
                    "cannot write the status file in {}: {e}; `tailjoin status` will not see this agent",
                    self.state_dir.display()
                );
            }
        }
    }

    fn write_textfile(&mut self, text: &str) {
        let Some(path) = &self.textfile else { return };
        if let Err(e) = crate::fs_write::write_atomic(path, text.as_bytes(), 0o644) {
            if !self.textfile_warned {
                self.textfile_warned = true;
                tracing::warn!("cannot write the metrics textfile {}: {e}", path.display());
            }
        }
    }

    fn log(&self, t: &Transition, prev: Phase, elapsed_ms: u64) {
        let backend = t.backend.map(|b| b.name()).unwrap_or("unknown");
        match (&t.node, &t.error) {
            (Some(node), _) if t.phase == Phase::Running => tracing::info!(
                tailjoin_state = t.phase.name(),
                tailjoin_prev_state = prev.name(),
                tailjoin_backend_state = backend,
                tailscale_ips = node.tailscale_ips.join(" "),
                tailnet = node.tailnet.as_str(),
                tailjoin_dns_name = node.dns_name.as_str(),
                tailjoin_elapsed_ms = elapsed_ms,
                tailjoin_time_to_join_ms = self.report.time_to_join_ms.unwrap_or(elapsed_ms),
                "{}",
                t.summary
            ),
            (_, Some(err)) if t.phase == Phase::Failed => tracing::error!(
                tailjoin_state = t.phase.name(),
                tailjoin_prev_state = prev.name(),
                tailjoin_backend_state = backend,
                tailjoin_error_kind = err.kind.as_str(),
                tailjoin_elapsed_ms = elapsed_ms,
                "{}",
                t.summary
            ),
            (_, Some(err)) => tracing::warn!(
                tailjoin_state = t.phase.name(),
                tailjoin_prev_state = prev.name(),
                tailjoin_backend_state = backend,
                tailjoin_error_kind = err.kind.as_str(),
                tailjoin_elapsed_ms = elapsed_ms,
                "{}",
                t.summary
            ),
            _ => tracing::info!(
                tailjoin_state = t.phase.name(),
                tailjoin_prev_state = prev.name(),
                tailjoin_backend_state = backend,
                tailjoin_elapsed_ms = elapsed_ms,
                "{}",
                t.summary
            ),
        }
    }

    fn notify(&mut self, t: &Transition) {
        let mut msg = sd_notify::status_line(&t.summary);
        if t.phase == Phase::Running && !self.ready_sent {
            msg = format!("READY=1\n{msg}");
            self.ready_sent = true;
        }
        if let Err(e) = self.notifier.send(&msg) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(dir: &std::path::Path) -> Reporter {
        Reporter::new(
            Notifier::disabled(),
            dir.to_owned(),
            Some("http://127.0.0.1:1".into()),
            "file /k".into(),
        )
    }

    #[test]
    fn transitions_update_the_status_file_and_count_joins() {
        let d = tempfile::tempdir().unwrap();
        let mut r = reporter(d.path());
        r.transition(Transition {
            phase: Phase::Joining,
            summary: "joining".into(),
            backend: Some(BackendState::NeedsLogin),
            node: None,
            error: None,
            joins: 0,
        });
        let node = NodeFacts {
            tailscale_ips: vec!["100.64.0.1".into()],
            ..Default::default()
        };
        let running = Transition {
            phase: Phase::Running,
            summary: "Running".into(),
            backend: Some(BackendState::Running),
            node: Some(node.clone()),
            error: None,
            joins: 1,
        };
        r.transition(running.clone());
        r.transition(running);
        let on_disk = status_file::read(d.path()).unwrap();
        assert_eq!(on_disk.state, Phase::Running);
        assert_eq!(on_disk.previous_state, Some(Phase::Joining));
        assert_eq!(on_disk.joins, 1);
        assert!(on_disk.time_to_join_ms.is_some());
        assert_eq!(on_disk.node, Some(node));
        assert_eq!(on_disk.backend_state.as_deref(), Some("Running"));
    }

    #[test]
    fn an_unwritable_state_dir_does_not_stop_reporting() {
        let mut r = reporter(std::path::Path::new("/proc/no-such-dir"));
        r.transition(Transition {
            phase: Phase::Failed,
            summary: "failed".into(),
            backend: None,
            node: None,
            error: Some(ErrorReport {
                kind: "key-rejected".into(),
                message: "m".into(),
            }),
            joins: 0,
        });
        assert_eq!(r.current().state, Phase::Failed);
    }
}
