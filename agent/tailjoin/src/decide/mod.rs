//! The agent's decisions, free of I/O: given what tailscaled reported and what happened before,
//! what to do next. [`Machine::on`] is the whole policy; the agent loop only performs the
//! returned [`Action`] and feeds the outcome back as the next [`Event`].

use crate::config::OnStopped;
use crate::state::BackendState;
use serde::{Deserialize, Serialize};
use std::fmt;

mod key_rejection;
pub mod stranded;
pub use key_rejection::is_key_rejection;

/// What the agent is doing: reported in `STATUS=`, journald's `TAILJOIN_STATE` and the status
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    WaitingForTailscaled,
    WaitingForBackend,
    Joining,
    AwaitingApproval,
    Resuming,
    Stopped,
    Running,
    /// Running, but tailscaled cannot reach the control server.
    Degraded,
    Retrying,
    Failed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForTailscaled => "waiting-for-tailscaled",
            Phase::WaitingForBackend => "waiting-for-backend",
            Phase::Joining => "joining",
            Phase::AwaitingApproval => "awaiting-approval",
            Phase::Resuming => "resuming",
            Phase::Stopped => "stopped",
            Phase::Running => "running",
            Phase::Degraded => "degraded",
            Phase::Retrying => "retrying",
            Phase::Failed => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happened, as the agent loop observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// tailscaled's backend state, first on connecting to the bus, then on every change.
    Backend(BackendState),
    /// tailscaled put an error message on the bus (`ErrMessage`).
    BackendError(String),
    /// Submitting the key failed at the LocalAPI itself (not at the control server).
    JoinRequestFailed { message: String, transient: bool },
    /// A join attempt did not reach `Running` within the join timeout.
    JoinTimedOut,
    /// The delay scheduled by [`Action::RetryLater`] has passed.
    RetryDue,
    /// The bus connection to tailscaled was lost (tailscaled stopped or restarted).
    TailscaledLost,
    /// tailscaled's health changed: `Some(text)` while it cannot reach the control server.
    ControlHealth(Option<String>),
    /// The control server asked for an interactive login (`BrowseToURL` on the bus): it no
    /// longer accepts this node's key, e.g. the node was deleted there.
    LoginRequested,
}

/// Why a join attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The control server refused the key: invalid, expired or already used.
    KeyRejected,
    /// No `Running` within the join timeout (control server unreachable, DERP down, …).
    JoinTimeout,
    /// tailscaled refused or failed the request to start.
    JoinRequest,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::KeyRejected => "key-rejected",
            FailureKind::JoinTimeout => "join-timeout",
            FailureKind::JoinRequest => "join-request",
        }
    }
}

/// What the agent loop must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do; keep watching the bus. The phase to report.
    Watch(Phase),
    /// Read the key from its source and submit it with the configured preferences.
    Join,
    /// Bring a stopped tailscaled back up; no key needed.
    Resume,
    /// The node is Running.
    Ready,
    /// Wait `delay_attempt`'s backoff delay, then deliver [`Event::RetryDue`].
    RetryLater {
        kind: FailureKind,
        reason: String,
        /// 1 for the first retry in a row, 2 for the second, …
        delay_attempt: u32,
    },
    /// The join timeout passed, but the key submitted earlier still stands with tailscaled,
    /// which keeps trying the control server with it by itself. Submitting it again could only
    /// race tailscaled's own registration (a single-use key would then be "already used"), so
    /// report the failure and wait another join timeout.
    KeepWaiting {
        reason: String,
        /// Failed join attempts in a row so far, this one included (at most `max_attempts`).
        attempts: u32,
    },
    /// Stop trying.
    GiveUp {
        kind: FailureKind,
        reason: String,
        attempts: u32,
    },
}

/// Bounds and choices from the configuration that the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub on_stopped: OnStopped,
    /// Rejected-key attempts before giving up.
    pub key_attempts: u32,
    /// Other failed join attempts in a row before giving up.
    pub max_attempts: u32,
}

/// The agent's memory between events.
#[derive(Debug, Clone)]
pub struct Machine {
    policy: Policy,
    phase: Phase,
    backend: Option<BackendState>,
    join_in_flight: bool,
    key_rejections: u32,
    join_failures: u32,
    /// The last error tailscaled reported during the current join attempt.
    last_join_error: Option<String>,
    /// Why the previous join attempt failed, until a join succeeds.
    last_failure: Option<(FailureKind, String)>,
    /// tailscaled's warning that it cannot reach the control server, while raised.
    control_problem: Option<String>,
    /// Joins that reached Running: a key was submitted and the node came up.
    joins: u32,
    /// The last join reached Running and no key rejection came after it: the next need to log
    /// in starts with a full budget of attempts.
    settled: bool,
    /// The last Running was counted in `joins` (a submitted key, not a reconnect).
    counted_join: bool,
    /// The control server refused the login while tailscaled still said Running (its cached
    /// netmap): that Running proves nothing until a key is submitted again.
    refused_while_running: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Self {
        Machine {
            policy,
            phase: Phase::Starting,
            backend: None,
            join_in_flight: false,
            key_rejections: 0,
            join_failures: 0,
            last_join_error: None,
            last_failure: None,
            control_problem: None,
            joins: 0,
            settled: false,
            counted_join: false,
            refused_while_running: false,
        }
    }

    /// How many times a submitted key brought the node to Running. Reconnecting to a
    /// tailscaled that is already Running is not a join.
    pub fn joins(&self) -> u32 {
        self.joins
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn backend(&self) -> Option<BackendState> {
        self.backend
    }

    pub fn join_in_flight(&self) -> bool {
        self.join_in_flight
    }

    /// The error tailscaled reported during the join in flight, if any (e.g. control server
    /// unreachable), for status lines.
    pub fn last_join_error(&self) -> Option<&str> {
        self.last_join_error.as_deref()
    }

    /// tailscaled's warning that it cannot reach the control server, while raised.
    pub fn control_problem(&self) -> Option<&str> {
        self.control_problem.as_deref()
    }

    /// Why the previous join attempt failed, while the agent is still trying.
    pub fn last_failure(&self) -> Option<(FailureKind, &str)> {
        self.last_failure.as_ref().map(|(k, r)| (*k, r.as_str()))
    }

    /// The number of the join attempt in flight or next (1 for the first).
    pub fn attempt(&self) -> u32 {
        if self.settled {
            1
        } else {
            self.key_rejections + self.join_failures + 1
        }
    }

    /// Decides what to do about `event`, and remembers what was decided.
    pub fn on(&mut self, event: Event) -> Action {
        let action = self.decide(event);
        match &action {
            Action::RetryLater { kind, reason, .. } | Action::GiveUp { kind, reason, .. } => {
                self.last_failure = Some((*kind, reason.clone()));
            }
            Action::KeepWaiting { reason, .. } => {
                self.last_failure = Some((FailureKind::JoinTimeout, reason.clone()));
            }
            Action::Ready => self.last_failure = None,
            _ => {}
        }
        self.phase = match &action {
            Action::Watch(p) => *p,
            Action::Join | Action::KeepWaiting { .. } => Phase::Joining,
            Action::Resume => Phase::Resuming,
            Action::Ready => Phase::Running,
            Action::RetryLater { .. } => Phase::Retrying,
            Action::GiveUp { .. } => Phase::Failed,
        };
        action
    }

    fn decide(&mut self, event: Event) -> Action {
        if self.phase == Phase::Failed {
            return Action::Watch(Phase::Failed);
        }
        match event {
            Event::Backend(state) => {
                self.backend = Some(state);
                self.on_backend(state)
            }
            Event::BackendError(message) => {
                if !self.join_in_flight {
                    if is_key_rejection(&message)
                        && matches!(self.phase, Phase::Running | Phase::Degraded)
                    {
                        // tailscaled still says Running (from its cached netmap), but the
                        // control server refuses this node's login, and tailscaled retries the
                        // refused key by itself: the node is not joined.
                        return self.key_rejected(message);
                    }
                    // Not about a login (e.g. a map poll hiccup), or tailscaled's own retry of
                    // a rejection already counted (phase Retrying): nothing to decide.
                    return Action::Watch(self.phase);
                }
                if is_key_rejection(&message) {
                    self.key_rejected(message)
                } else {
                    // tailscaled retries the control server itself; the join timeout bounds it.
                    self.last_join_error = Some(message);
                    Action::Watch(Phase::Joining)
                }
            }
            Event::JoinRequestFailed { message, transient } => {
                self.join_in_flight = false;
                self.last_join_error = None;
                if transient {
                    self.transient_failure(FailureKind::JoinRequest, message)
                } else {
                    Action::GiveUp {
                        kind: FailureKind::JoinRequest,
                        reason: message,
                        attempts: self.join_failures + 1,
                    }
                }
            }
            Event::JoinTimedOut => {
                if !self.join_in_flight {
                    return Action::Watch(self.phase);
                }
                let reason = match self.last_join_error.take() {
                    Some(e) => format!("not Running within the join timeout; tailscaled said: {e}"),
                    None => "not Running within the join timeout".to_owned(),
                };
                self.settled = false;
                self.join_failures += 1;
                if self.join_failures >= self.policy.max_attempts {
                    self.join_in_flight = false;
                    return Action::GiveUp {
                        kind: FailureKind::JoinTimeout,
                        reason,
                        attempts: self.join_failures,
                    };
                }
                // The submitted key stays in flight: tailscaled still holds it and retries.
                Action::KeepWaiting {
                    reason,
                    attempts: self.join_failures,
                }
            }
            Event::RetryDue => {
                if self.phase != Phase::Retrying {
                    return Action::Watch(self.phase);
                }
                self.phase = Phase::Starting;
                match self.backend {
                    Some(state) => self.on_backend(state),
                    None => Action::Watch(Phase::WaitingForTailscaled),
                }
            }
            Event::ControlHealth(problem) => {
                self.control_problem = problem;
                match (self.phase, &self.control_problem) {
                    (Phase::Running, Some(_)) => Action::Watch(Phase::Degraded),
                    (Phase::Degraded, None) => Action::Ready,
                    (phase, _) => Action::Watch(phase),
                }
            }
            Event::LoginRequested => {
                if self.join_in_flight {
                    Action::Watch(Phase::Joining)
                } else if matches!(self.phase, Phase::Retrying | Phase::AwaitingApproval) {
                    Action::Watch(self.phase)
                } else {
                    self.start_join()
                }
            }
            Event::TailscaledLost => {
                // Whatever we submitted died with tailscaled; start over when it is back.
                self.join_in_flight = false;
                self.last_join_error = None;
                self.control_problem = None;
                self.backend = None;
                if self.phase == Phase::Retrying {
                    Action::Watch(Phase::Retrying)
                } else {
                    Action::Watch(Phase::WaitingForTailscaled)
                }
            }
        }
    }

    fn on_backend(&mut self, state: BackendState) -> Action {
        match state {
            BackendState::Running if self.phase == Phase::Degraded => {
                // Still Running; only the control server's reachability decides.
                Action::Watch(Phase::Degraded)
            }
            BackendState::Running if self.refused_while_running => {
                // The control server refused this node while tailscaled said Running; a new
                // Running (its cached netmap again) proves nothing until a key is submitted.
                if self.phase == Phase::Retrying {
                    Action::Watch(Phase::Retrying)
                } else {
                    self.start_join()
                }
            }
            BackendState::Running => {
                self.counted_join = self.join_in_flight;
                if self.join_in_flight {
                    self.joins += 1;
                }
                self.join_in_flight = false;
                self.last_join_error = None;
                // The counters are reset when the next login is needed, not here: a Running
                // from tailscaled's cached netmap can still be followed by a key rejection.
                self.settled = true;
                Action::Ready
            }
            BackendState::NeedsMachineAuth => {
                // The key was accepted; an administrator must approve the device. Spending
                // another key would not help.
                self.join_in_flight = false;
                self.last_join_error = None;
                Action::Watch(Phase::AwaitingApproval)
            }
            BackendState::NeedsLogin => {
                if self.join_in_flight {
                    // tailscaled passes through NeedsLogin while it logs in.
                    Action::Watch(Phase::Joining)
                } else if self.phase == Phase::Retrying {
                    Action::Watch(Phase::Retrying)
                } else {
                    self.start_join()
                }
            }
            BackendState::Stopped => {
                self.join_in_flight = false;
                match self.policy.on_stopped {
                    OnStopped::Resume if self.phase == Phase::Resuming => {
                        Action::Watch(Phase::Resuming)
                    }
                    OnStopped::Resume => Action::Resume,
                    OnStopped::Respect => Action::Watch(Phase::Stopped),
                }
            }
            BackendState::NoState
            | BackendState::Starting
            | BackendState::InUseOtherUser
            | BackendState::Unknown => {
                if self.join_in_flight {
                    Action::Watch(Phase::Joining)
                } else if self.phase == Phase::Retrying {
                    Action::Watch(Phase::Retrying)
                } else {
                    Action::Watch(Phase::WaitingForBackend)
                }
            }
        }
    }

    /// A key is to be read and submitted. After a join that settled, this is a new need to log
    /// in (logged out, expired, deleted): it gets a full budget of attempts.
    fn start_join(&mut self) -> Action {
        if self.settled {
            self.key_rejections = 0;
            self.join_failures = 0;
            self.settled = false;
        }
        self.join_in_flight = true;
        self.last_join_error = None;
        self.refused_while_running = false;
        Action::Join
    }

    /// The control server refused the key: retry with a fresh read of the key source (it may
    /// hold a new key by then), or give up once the budget is spent.
    fn key_rejected(&mut self, message: String) -> Action {
        if self.backend == Some(BackendState::Running) || self.phase == Phase::Running {
            self.refused_while_running = true;
            if self.counted_join {
                // That Running came from the cached netmap, not from this key.
                self.joins = self.joins.saturating_sub(1);
            }
        }
        self.counted_join = false;
        self.settled = false;
        self.join_in_flight = false;
        self.last_join_error = None;
        self.key_rejections += 1;
        if self.key_rejections >= self.policy.key_attempts {
            Action::GiveUp {
                kind: FailureKind::KeyRejected,
                reason: message,
                attempts: self.key_rejections,
            }
        } else {
            Action::RetryLater {
                kind: FailureKind::KeyRejected,
                reason: message,
                delay_attempt: self.key_rejections,
            }
        }
    }

    fn transient_failure(&mut self, kind: FailureKind, reason: String) -> Action {
        self.settled = false;
        self.join_failures += 1;
        if self.join_failures >= self.policy.max_attempts {
            Action::GiveUp {
                kind,
                reason,
                attempts: self.join_failures,
            }
        } else {
            Action::RetryLater {
                kind,
                reason,
                delay_attempt: self.join_failures,
            }
        }
    }
}

#[cfg(test)]
mod tests;
