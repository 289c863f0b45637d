//! The agent loop: connects to tailscaled's IPN bus, turns what it hears into [`Event`]s, asks
//! [`Machine`] what to do, does it, and reports every transition. All decisions live in
//! `decide`; this module only performs I/O.

use crate::auth_key;
use crate::config::Settings;
use crate::decide::{Action, Event, FailureKind, Machine, Phase, Policy};
use crate::error::{AgentError, LocalApiError};
use crate::localapi::{Bus, LocalApi, WATCH_MASK};
use crate::prefs;
use crate::redact::redact;
use crate::report::status_file::ErrorReport;
use crate::report::{Reporter, Transition};
use crate::secrets::KeyContext;
use crate::state::{BackendState, NodeFacts};
use crate::systemd::SystemdWaiter;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

mod summary;
mod units;

pub struct Agent {
    settings: Settings,
    api: LocalApi,
    keys: KeyContext,
    machine: Machine,
    reporter: Reporter,
    /// When the join in flight times out.
    join_deadline: Option<Instant>,
    /// When a scheduled retry is due.
    retry_at: Option<Instant>,
    /// The last transient error talking to tailscaled, for the status line.
    last_connect_error: Option<LocalApiError>,
    /// systemd on the system bus; `None` without a bus (then the socket is watched instead).
    systemd: Option<SystemdWaiter>,
    /// What systemd last said about a unit being waited for, for the status line.
    unit_wait: Option<(String, Option<ErrorReport>)>,
    /// The jitter's draw for `reboot_on_key_failure` (the run path plans with the same).
    reboot_fraction: f64,
}

/// How the loop ended without an error.
enum Exit {
    Signal(&'static str),
}

impl Agent {
    pub fn new(
        settings: Settings,
        keys: KeyContext,
        reporter: Reporter,
    ) -> Result<Self, AgentError> {
        let api = LocalApi::new(&settings.socket).map_err(AgentError::LocalApi)?;
        let machine = Machine::new(Policy {
            on_stopped: settings.on_stopped,
            key_attempts: settings.retry.key_attempts,
            max_attempts: settings.retry.max_attempts,
        });
        Ok(Agent {
            settings,
            api,
            keys,
            machine,
            reporter,
            join_deadline: None,
            retry_at: None,
            last_connect_error: None,
            systemd: None,
            unit_wait: None,
            reboot_fraction: 0.0,
        })
    }

    /// The jitter's draw for a reboot on a key failure, so that the Failed report announces
    /// the delay the run path then waits.
    pub fn with_reboot_fraction(mut self, fraction: f64) -> Self {
        self.reboot_fraction = fraction;
        self
    }

    /// Runs until a signal asks it to stop (Ok) or it gives up (Err).
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| AgentError::Internal(format!("cannot handle SIGTERM: {e}")))?;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| AgentError::Internal(format!("cannot handle SIGINT: {e}")))?;
        self.report_phase(Phase::Starting);
        match SystemdWaiter::connect().await {
            Ok(waiter) => self.systemd = Some(waiter),
            Err(e) => tracing::info!(
                "no systemd on the system bus ({e}); waiting for tailscaled's socket instead of its unit"
            ),
        }
        let outcome = tokio::select! {
            r = self.watch_forever() => r,
            _ = sigterm.recv() => Ok(Exit::Signal("SIGTERM")),
            _ = sigint.recv() => Ok(Exit::Signal("SIGINT")),
        };
        match outcome {
            Ok(Exit::Signal(name)) => {
                tracing::info!(
                    tailjoin_state = self.machine.phase().name(),
                    "stopping on {name}"
                );
                Ok(())
            }
            Err(e) => {
                let plan = crate::decide::stranded::plan(
                    self.settings.reboot_on_key_failure.as_ref(),
                    &self.settings.auth_key,
                    &e,
                    self.reboot_fraction,
                );
                let summary = match &plan {
                    Some(plan) => format!("{}; {e}", crate::reboot::announcement(plan)),
                    None => format!("failed: {e}"),
                };
                self.reporter.transition(Transition {
                    phase: Phase::Failed,
                    summary,
                    backend: self.machine.backend(),
                    node: None,
                    error: Some(ErrorReport {
                        kind: e.kind().to_owned(),
                        message: e.to_string(),
                    }),
                    joins: self.machine.joins(),
                });
                Err(e)
            }
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry.initial_delay)
            .with_max_delay(self.settings.retry.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.settings.retry.max_attempts as usize)
    }

    /// The delay before the `attempt`-th retry in a row (1-based), with jitter.
    fn delay_for(&self, attempt: u32) -> Duration {
        self.backoff()
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.settings.retry.max_delay)
    }

    async fn watch_forever(&mut self) -> Result<Exit, AgentError> {
        let mut first = true;
        loop {
            self.wait_for_units(first).await?;
            first = false;
            let mut bus = self.connect().await?;
            self.last_connect_error = None;
            let lost = self.follow(&mut bus).await?;
            tracing::info!("lost the IPN bus ({lost}); tailscaled stopped or restarted");
            self.handle(Event::TailscaledLost).await?;
        }
    }

    /// Opens the IPN bus, retrying transient failures with exponential backoff and jitter.
    async fn connect(&mut self) -> Result<Bus, AgentError> {
        let mut delays = self.backoff().build();
        let mut attempts = 0u32;
        // Set up before the first try, so a socket created in between wakes the wait below.
        let appeared = crate::socket_watch::SocketWatch::new(&self.settings.socket);
        loop {
            match self.api.watch(WATCH_MASK).await {
                Ok(bus) => return Ok(bus),
                Err(e) if e.is_transient() => {
                    attempts += 1;
                    let Some(delay) = delays.next() else {
                        return Err(AgentError::GaveUp {
                            attempts,
                            last: e.to_string(),
                        });
                    };
                    self.last_connect_error = Some(e);
                    self.report_phase(Phase::WaitingForTailscaled);
                    tracing::debug!(
                        "next attempt to reach tailscaled in {delay:?}, or when its socket appears"
                    );
                    self.wait_keeping_timers(delay, appeared.as_ref()).await?;
                }
                Err(e) => return Err(AgentError::LocalApi(e)),
            }
        }
    }

    /// Sleeps for `delay` or until tailscaled's socket appears, still delivering a due retry or
    /// join timeout.
    async fn wait_keeping_timers(
        &mut self,
        delay: Duration,
        socket: Option<&crate::socket_watch::SocketWatch>,
    ) -> Result<(), AgentError> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Ok(()),
                _ = crate::socket_watch::created(socket) => {
                    tracing::debug!("tailscaled's socket appeared");
                    return Ok(());
                }
                _ = sleep_until(self.retry_at.unwrap_or(until)), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    self.handle(Event::RetryDue).await?;
                }
            }
        }
    }

    /// Follows the bus until it closes. Returns why it closed.
    async fn follow(&mut self, bus: &mut Bus) -> Result<LocalApiError, AgentError> {
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                n = bus.next() => match n {
                    Ok(notify) => {
                        if let Some(msg) = notify.err_message {
                            self.handle(Event::BackendError(redact(&msg))).await?;
                        }
                        if let Some(health) = &notify.health {
                            let problem = health.control_problem();
                            if problem.as_deref() != self.machine.control_problem() {
                                self.handle(Event::ControlHealth(problem)).await?;
                            }
                        }
                        if let Some(state) = notify.state {
                            self.handle(Event::Backend(state)).await?;
                        }
                        if notify.self_change.is_some() && self.machine.phase() == Phase::Running {
                            // Addresses, name or key expiry changed: report the new facts.
                            if let Some(event) = self.ready().await {
                                self.handle(event).await?;
                            }
                        }
                        if notify.browse_to_url.as_deref().is_some_and(|u| !u.is_empty()) {
                            self.handle(Event::LoginRequested).await?;
                        }
                    }
                    Err(e) => return Ok(e),
                },
                _ = sleep_until(self.join_deadline.unwrap_or(far)), if self.join_deadline.is_some() => {
                    self.join_deadline = None;
                    self.handle(Event::JoinTimedOut).await?;
                }
                _ = sleep_until(self.retry_at.unwrap_or(far)), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    self.handle(Event::RetryDue).await?;
                }
            }
        }
    }

    /// Decides about `event` and performs the action, and any action its outcome calls for.
    async fn handle(&mut self, event: Event) -> Result<(), AgentError> {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            tracing::debug!(?event, "event");
            let action = self.machine.on(event);
            tracing::debug!(?action, "action");
            match &action {
                Action::Watch(Phase::Joining) | Action::Watch(Phase::Retrying) => {}
                Action::Join | Action::KeepWaiting { .. } => {}
                _ => self.join_deadline = None,
            }
            if !matches!(
                action,
                Action::Watch(Phase::Retrying) | Action::RetryLater { .. }
            ) {
                self.retry_at = None;
            }
            next = match action {
                Action::Watch(phase) => {
                    self.report_phase(phase);
                    None
                }
                Action::Join => self.join().await?,
                Action::Resume => {
                    self.report_phase(Phase::Resuming);
                    if let Err(e) = self.api.edit_prefs(&prefs::resume_prefs()).await {
                        tracing::warn!("cannot bring tailscaled back up: {e}");
                    }
                    None
                }
                Action::Ready => self.ready().await,
                Action::RetryLater {
                    kind,
                    reason,
                    delay_attempt,
                } => {
                    let delay = self.delay_for(delay_attempt);
                    self.retry_at = Some(Instant::now() + delay);
                    self.reporter.transition(Transition {
                        phase: Phase::Retrying,
                        summary: format!(
                            "retrying in {:.1}s after {}: {reason}",
                            delay.as_secs_f64(),
                            kind.name()
                        ),
                        backend: self.machine.backend(),
                        node: None,
                        error: Some(ErrorReport {
                            kind: kind.name().to_owned(),
                            message: reason,
                        }),
                        joins: self.machine.joins(),
                    });
                    None
                }
                Action::KeepWaiting { reason, attempts } => {
                    self.keep_waiting(reason, attempts);
                    None
                }
                Action::GiveUp {
                    kind,
                    reason,
                    attempts,
                } => {
                    if kind == FailureKind::KeyRejected {
                        // tailscaled would keep presenting the rejected key to the control
                        // server on its own; stop it so a dead key does not hammer the server.
                        match self.api.edit_prefs(&prefs::stop_prefs()).await {
                            Ok(()) => tracing::info!(
                                "told tailscaled to stop retrying the rejected key (WantRunning=false); \
                                 `tailscale up` or restarting tailjoin with a new key resumes"
                            ),
                            Err(e) => {
                                tracing::warn!("cannot stop tailscaled's own login retries: {e}")
                            }
                        }
                    }
                    return Err(match kind {
                        FailureKind::KeyRejected => AgentError::KeyRejected { attempts, reason },
                        FailureKind::JoinTimeout | FailureKind::JoinRequest => AgentError::GaveUp {
                            attempts,
                            last: reason,
                        },
                    });
                }
            };
        }
        Ok(())
    }

    /// Reads the key and submits it. Returns the event its outcome produces, if any.
    async fn join(&mut self) -> Result<Option<Event>, AgentError> {
        self.report_phase(Phase::Joining);
        let key =
            auth_key::read_key(&self.settings.auth_key, &self.keys, &self.settings.retry).await?;
        let outcome = async {
            let current = self.api.prefs().await?;
            let status = self.api.status().await?;
            // A node key means this node has logged in before: keep the prefs its user set.
            let login = if status.have_node_key {
                prefs::Login::Again
            } else {
                prefs::Login::First
            };
            let update = prefs::join_prefs(&current, &self.settings, login);
            self.api.start(&key, &update).await?;
            if !status.have_node_key {
                self.api.login_interactive().await?;
            }
            Ok::<(), LocalApiError>(())
        }
        .await;
        drop(key);
        match outcome {
            Ok(()) => {
                tracing::info!(
                    "submitted the key to tailscaled (attempt {}); waiting up to {}s for Running",
                    self.machine.attempt(),
                    self.settings.join_timeout.as_secs()
                );
                self.join_deadline = Some(Instant::now() + self.settings.join_timeout);
                Ok(None)
            }
            Err(e) => Ok(Some(Event::JoinRequestFailed {
                message: redact(&e.to_string()),
                transient: e.is_transient(),
            })),
        }
    }

    /// The join timeout passed while tailscaled still holds the submitted key and keeps trying:
    /// say so and wait another join timeout, without submitting the key again.
    fn keep_waiting(&mut self, reason: String, attempts: u32) {
        let timeout = self.settings.join_timeout;
        self.join_deadline = Some(Instant::now() + timeout);
        let summary = summary::keep_waiting(
            &reason,
            attempts,
            self.settings.retry.max_attempts,
            self.server(),
            timeout,
        );
        self.reporter.transition(Transition {
            phase: Phase::Joining,
            summary,
            backend: self.machine.backend(),
            node: None,
            error: Some(ErrorReport {
                kind: FailureKind::JoinTimeout.name().to_owned(),
                message: reason,
            }),
            joins: self.machine.joins(),
        });
    }

    /// Reports Running, unless tailscaled's status shows the control server wants a new login
    /// (an `AuthURL` while Running: the node was deleted or its key refused there).
    async fn ready(&mut self) -> Option<Event> {
        let node = match self.api.status().await {
            Ok(status) if !status.auth_url.is_empty() => {
                tracing::warn!(
                    "tailscaled says Running but the control server asks this node to log in again"
                );
                return Some(Event::LoginRequested);
            }
            Ok(status) => Some(NodeFacts::from(&status)),
            Err(e) => {
                tracing::warn!("joined, but cannot read tailscaled's status: {e}");
                None
            }
        };
        let current = self.reporter.current();
        if current.state == Phase::Running
            && current.joins == self.machine.joins()
            && (node.is_none() || node == current.node)
        {
            // Nothing new to say (e.g. a SelfChange that changed nothing reported).
            return None;
        }
        let joined_in = current
            .time_to_join_ms
            .is_none()
            .then(|| self.reporter.elapsed_ms());
        let summary = summary::running(node.as_ref(), joined_in);
        self.reporter.transition(Transition {
            phase: Phase::Running,
            summary,
            backend: Some(BackendState::Running),
            node,
            error: None,
            joins: self.machine.joins(),
        });
        None
    }

    /// Reports a phase whose summary follows from the agent's own state.
    fn report_phase(&mut self, phase: Phase) {
        let connect_error = self
            .last_connect_error
            .as_ref()
            .map(|e| (e.kind().to_owned(), e.to_string()));
        let facts = summary::Facts {
            server: self.server(),
            machine: &self.machine,
            connect_error,
            unit_wait: self.unit_wait.clone(),
            socket: self.api.socket(),
            key_source: self.settings.auth_key.describe(),
        };
        let Some((summary, error)) = summary::phase(phase, &facts) else {
            return;
        };
        self.reporter.transition(Transition {
            phase,
            summary,
            backend: self.machine.backend(),
            node: None,
            error,
            joins: self.machine.joins(),
        });
    }

    /// The control server, as the summaries name it.
    fn server(&self) -> &str {
        self.settings
            .login_server
            .as_deref()
            .unwrap_or("the Tailscale control server")
    }
}
