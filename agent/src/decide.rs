//! The agent's decisions, free of I/O: given what tailscaled reported and what happened before,
//! what to do next. [`Machine::on`] is the whole policy; the agent loop only performs the
//! returned [`Action`] and feeds the outcome back as the next [`Event`].

use crate::config::OnStopped;
use crate::state::BackendState;
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// Is this `ErrMessage` the control server refusing the key? Anything else is treated as
/// transient (tailscaled keeps retrying the control server by itself).
pub fn is_key_rejection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    const KEY_WORDS: [&str; 6] = [
        "authkey",
        "auth key",
        "auth-key",
        "preauthkey",
        "pre-auth key",
        "invalid key",
    ];
    const REFUSALS: [&str; 11] = [
        "failed to parse",
        "too short",
        "invalid",
        "expired",
        "already used",
        "used already",
        "not found",
        "does not exist",
        "not valid",
        "unauthorized",
        "rejected",
    ];
    KEY_WORDS.iter().any(|w| m.contains(w)) && REFUSALS.iter().any(|r| m.contains(r))
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
            Action::Ready => self.last_failure = None,
            _ => {}
        }
        self.phase = match &action {
            Action::Watch(p) => *p,
            Action::Join => Phase::Joining,
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
                self.join_in_flight = false;
                let reason = match self.last_join_error.take() {
                    Some(e) => format!("not Running within the join timeout; tailscaled said: {e}"),
                    None => "not Running within the join timeout".to_owned(),
                };
                self.transient_failure(FailureKind::JoinTimeout, reason)
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
mod tests {
    use super::*;
    use BackendState::*;

    fn policy() -> Policy {
        Policy {
            on_stopped: OnStopped::Resume,
            key_attempts: 2,
            max_attempts: 3,
        }
    }

    fn machine() -> Machine {
        Machine::new(policy())
    }

    #[test]
    fn each_initial_backend_state_maps_to_one_action() {
        let table = [
            (NoState, Action::Watch(Phase::WaitingForBackend)),
            (Starting, Action::Watch(Phase::WaitingForBackend)),
            (Unknown, Action::Watch(Phase::WaitingForBackend)),
            (NeedsLogin, Action::Join),
            (NeedsMachineAuth, Action::Watch(Phase::AwaitingApproval)),
            (Stopped, Action::Resume),
            (Running, Action::Ready),
        ];
        for (state, want) in table {
            assert_eq!(machine().on(Event::Backend(state)), want, "{state}");
        }
    }

    #[test]
    fn stopped_is_left_alone_when_the_operator_is_respected() {
        let mut m = Machine::new(Policy {
            on_stopped: OnStopped::Respect,
            ..policy()
        });
        assert_eq!(m.on(Event::Backend(Stopped)), Action::Watch(Phase::Stopped));
        assert_eq!(m.phase(), Phase::Stopped);
    }

    #[test]
    fn resume_is_sent_once_while_stopped_repeats() {
        let mut m = machine();
        assert_eq!(m.on(Event::Backend(Stopped)), Action::Resume);
        assert_eq!(
            m.on(Event::Backend(Stopped)),
            Action::Watch(Phase::Resuming)
        );
        assert_eq!(
            m.on(Event::Backend(Starting)),
            Action::Watch(Phase::WaitingForBackend)
        );
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
    }

    #[test]
    fn a_normal_join_reads_the_key_once() {
        let mut m = machine();
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
        // tailscaled re-announces NeedsLogin and Starting while logging in: no second join.
        assert_eq!(
            m.on(Event::Backend(NeedsLogin)),
            Action::Watch(Phase::Joining)
        );
        assert_eq!(
            m.on(Event::Backend(Starting)),
            Action::Watch(Phase::Joining)
        );
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
        assert_eq!(m.phase(), Phase::Running);
        assert_eq!(m.joins(), 1);
        // Reconnecting to a tailscaled that is still Running is not another join.
        m.on(Event::TailscaledLost);
        m.on(Event::Backend(Running));
        assert_eq!(m.joins(), 1);
    }

    #[test]
    fn an_already_running_node_never_joins() {
        let mut m = machine();
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
        assert_eq!(m.on(Event::JoinTimedOut), Action::Watch(Phase::Running));
    }

    #[test]
    fn approval_pending_spends_no_key() {
        let mut m = machine();
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
        assert_eq!(
            m.on(Event::Backend(NeedsMachineAuth)),
            Action::Watch(Phase::AwaitingApproval)
        );
        assert!(!m.join_in_flight());
        // The join timeout no longer applies, and the approval itself brings Running.
        assert_eq!(
            m.on(Event::JoinTimedOut),
            Action::Watch(Phase::AwaitingApproval)
        );
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
    }

    #[test]
    fn a_rejected_key_is_retried_a_bounded_number_of_times() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        let msg = "invalid key: authkey not found".to_string();
        assert_eq!(
            m.on(Event::BackendError(msg.clone())),
            Action::RetryLater {
                kind: FailureKind::KeyRejected,
                reason: msg.clone(),
                delay_attempt: 1
            }
        );
        // While the retry waits, tailscaled's NeedsLogin must not trigger a join.
        assert_eq!(
            m.on(Event::Backend(NeedsLogin)),
            Action::Watch(Phase::Retrying)
        );
        assert_eq!(m.on(Event::RetryDue), Action::Join);
        assert_eq!(
            m.on(Event::BackendError(msg.clone())),
            Action::GiveUp {
                kind: FailureKind::KeyRejected,
                reason: msg,
                attempts: 2
            }
        );
        assert_eq!(m.phase(), Phase::Failed);
        // Failed is final.
        assert_eq!(
            m.on(Event::Backend(NeedsLogin)),
            Action::Watch(Phase::Failed)
        );
    }

    #[test]
    fn transient_control_errors_wait_for_the_join_timeout() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        let msg = "register request: connection refused".to_string();
        assert_eq!(
            m.on(Event::BackendError(msg)),
            Action::Watch(Phase::Joining)
        );
        assert_eq!(
            m.last_join_error(),
            Some("register request: connection refused")
        );
        match m.on(Event::JoinTimedOut) {
            Action::RetryLater {
                kind: FailureKind::JoinTimeout,
                reason,
                delay_attempt: 1,
            } => assert!(reason.contains("connection refused"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn join_timeouts_give_up_after_max_attempts() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        for attempt in 1..3 {
            assert!(matches!(
                m.on(Event::JoinTimedOut),
                Action::RetryLater { delay_attempt, .. } if delay_attempt == attempt
            ));
            assert_eq!(m.on(Event::RetryDue), Action::Join);
        }
        assert!(matches!(
            m.on(Event::JoinTimedOut),
            Action::GiveUp {
                kind: FailureKind::JoinTimeout,
                attempts: 3,
                ..
            }
        ));
    }

    #[test]
    fn the_last_failure_is_remembered_until_a_join_succeeds() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        assert_eq!(m.attempt(), 1);
        assert_eq!(m.last_failure(), None);
        m.on(Event::JoinTimedOut);
        m.on(Event::RetryDue);
        assert_eq!(m.attempt(), 2);
        assert_eq!(
            m.last_failure(),
            Some((
                FailureKind::JoinTimeout,
                "not Running within the join timeout"
            ))
        );
        m.on(Event::Backend(Running));
        assert_eq!(m.last_failure(), None);
        assert_eq!(m.attempt(), 1);
    }

    #[test]
    fn tailscaled_succeeding_on_its_own_cancels_a_pending_retry() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        m.on(Event::JoinTimedOut);
        assert_eq!(m.phase(), Phase::Retrying);
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
        assert_eq!(m.on(Event::RetryDue), Action::Watch(Phase::Running));
    }

    #[test]
    fn success_resets_the_failure_counters() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        m.on(Event::BackendError("invalid key".into()));
        m.on(Event::RetryDue);
        m.on(Event::Backend(Running));
        // Logged out later: a full budget again.
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
        assert!(matches!(
            m.on(Event::BackendError("invalid key".into())),
            Action::RetryLater {
                delay_attempt: 1,
                ..
            }
        ));
    }

    #[test]
    fn logout_or_expiry_after_running_joins_again() {
        let mut m = machine();
        m.on(Event::Backend(Running));
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
    }

    #[test]
    fn losing_tailscaled_forgets_the_join_and_rejoins_on_empty_state() {
        let mut m = machine();
        m.on(Event::Backend(Running));
        assert_eq!(
            m.on(Event::TailscaledLost),
            Action::Watch(Phase::WaitingForTailscaled)
        );
        assert_eq!(m.backend(), None);
        assert_eq!(
            m.on(Event::Backend(NoState)),
            Action::Watch(Phase::WaitingForBackend)
        );
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
        // tailscaled dies mid-join: the join is forgotten, not counted.
        assert_eq!(
            m.on(Event::TailscaledLost),
            Action::Watch(Phase::WaitingForTailscaled)
        );
        assert_eq!(
            m.on(Event::JoinTimedOut),
            Action::Watch(Phase::WaitingForTailscaled)
        );
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
    }

    #[test]
    fn losing_the_control_server_while_running_is_degraded_until_it_returns() {
        let mut m = machine();
        let problem = Some("Unable to connect to the coordination server".to_string());
        // Before joining, a health warning changes nothing.
        assert_eq!(
            m.on(Event::ControlHealth(problem.clone())),
            Action::Watch(Phase::Starting)
        );
        m.on(Event::ControlHealth(None));
        m.on(Event::Backend(Running));
        assert_eq!(
            m.on(Event::ControlHealth(problem.clone())),
            Action::Watch(Phase::Degraded)
        );
        assert_eq!(m.control_problem(), problem.as_deref());
        assert_eq!(
            m.on(Event::Backend(Running)),
            Action::Watch(Phase::Degraded)
        );
        assert_eq!(m.on(Event::ControlHealth(None)), Action::Ready);
        // Logged out while degraded: join again.
        m.on(Event::ControlHealth(problem));
        assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
    }

    #[test]
    fn a_login_request_from_control_joins_again_unless_already_joining() {
        let mut m = machine();
        m.on(Event::Backend(Running));
        assert_eq!(m.on(Event::LoginRequested), Action::Join);
        assert_eq!(m.on(Event::LoginRequested), Action::Watch(Phase::Joining));
        assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
        let mut waiting = machine();
        waiting.on(Event::Backend(NeedsLogin));
        waiting.on(Event::Backend(NeedsMachineAuth));
        assert_eq!(
            waiting.on(Event::LoginRequested),
            Action::Watch(Phase::AwaitingApproval)
        );
    }

    #[test]
    fn errors_outside_a_join_change_nothing() {
        let mut m = machine();
        m.on(Event::Backend(Running));
        assert_eq!(
            m.on(Event::BackendError(
                "fetch control key: unexpected EOF".into()
            )),
            Action::Watch(Phase::Running)
        );
        let mut waiting = machine();
        waiting.on(Event::Backend(NeedsLogin));
        waiting.on(Event::Backend(NeedsMachineAuth));
        assert_eq!(
            waiting.on(Event::BackendError("authkey already used".into())),
            Action::Watch(Phase::AwaitingApproval)
        );
    }

    /// One step of a table: the event, the action wanted, and the phase and joins after it.
    type Step = (Event, Action, Phase, u32);

    fn run_table(name: &str, steps: Vec<Step>) {
        let mut m = machine();
        for (i, (event, want, phase, joins)) in steps.into_iter().enumerate() {
            let got = m.on(event.clone());
            assert_eq!(got, want, "{name}, step {i}: {event:?}");
            assert_eq!(m.phase(), phase, "{name}, step {i}: phase after {event:?}");
            assert_eq!(m.joins(), joins, "{name}, step {i}: joins after {event:?}");
        }
    }

    fn rejected(reason: &str, delay_attempt: u32) -> Action {
        Action::RetryLater {
            kind: FailureKind::KeyRejected,
            reason: reason.into(),
            delay_attempt,
        }
    }

    fn gave_up(reason: &str, attempts: u32) -> Action {
        Action::GiveUp {
            kind: FailureKind::KeyRejected,
            reason: reason.into(),
            attempts,
        }
    }

    /// The sequences seen with a real tailscaled whose node was deleted (or expired) on the
    /// control server and which was then restarted: after `Start`, tailscaled says Running from
    /// its cached netmap at once, and only then does the control server's refusal arrive, as an
    /// ErrMessage repeated on every one of tailscaled's own retries (tests/real_peers/FINDINGS.md,
    /// "Rejected after Running").
    #[test]
    fn a_key_rejected_while_tailscaled_says_running_is_not_running() {
        let used = "authkey already used";
        let err = || Event::BackendError(used.into());
        let tables: Vec<(&str, Vec<Step>)> = vec![
            (
                "single-use key: deleted node, tailscaled restarted, the same key read again",
                vec![
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 0),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                    (
                        Event::TailscaledLost,
                        Action::Watch(Phase::WaitingForTailscaled),
                        Phase::WaitingForTailscaled,
                        1,
                    ),
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 1),
                    (
                        Event::Backend(Starting),
                        Action::Watch(Phase::Joining),
                        Phase::Joining,
                        1,
                    ),
                    // Running from the cached netmap: counted for now ...
                    (Event::Backend(Running), Action::Ready, Phase::Running, 2),
                    // ... until the control server refuses the key: not running, not a join.
                    (err(), rejected(used, 1), Phase::Retrying, 1),
                    // tailscaled's own retries of the same refusal are not counted again.
                    (err(), Action::Watch(Phase::Retrying), Phase::Retrying, 1),
                    (
                        Event::Backend(Running),
                        Action::Watch(Phase::Retrying),
                        Phase::Retrying,
                        1,
                    ),
                    // The retry reads the key again although tailscaled still says Running.
                    (Event::RetryDue, Action::Join, Phase::Joining, 1),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 2),
                    // The same single-use key, refused again: a failure.
                    (err(), gave_up(used, 2), Phase::Failed, 1),
                    (err(), Action::Watch(Phase::Failed), Phase::Failed, 1),
                    (
                        Event::Backend(Running),
                        Action::Watch(Phase::Failed),
                        Phase::Failed,
                        1,
                    ),
                ],
            ),
            (
                "refusal while degraded (the map poll fails too)",
                vec![
                    (Event::Backend(Running), Action::Ready, Phase::Running, 0),
                    (
                        Event::ControlHealth(Some("not-in-map-poll".into())),
                        Action::Watch(Phase::Degraded),
                        Phase::Degraded,
                        0,
                    ),
                    (err(), rejected(used, 1), Phase::Retrying, 0),
                    (Event::RetryDue, Action::Join, Phase::Joining, 0),
                ],
            ),
            (
                "a new key after the refusal (reusable or minted, or a changed file): joined",
                vec![
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 0),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                    (err(), rejected(used, 1), Phase::Retrying, 0),
                    (Event::RetryDue, Action::Join, Phase::Joining, 0),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                    // No refusal follows; later the node is deleted again: a full budget.
                    (Event::LoginRequested, Action::Join, Phase::Joining, 1),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 2),
                    (err(), rejected(used, 1), Phase::Retrying, 1),
                ],
            ),
            (
                "reusable key: node deleted, tailscaled restarted, re-joined",
                vec![
                    (Event::Backend(Running), Action::Ready, Phase::Running, 0),
                    (
                        Event::TailscaledLost,
                        Action::Watch(Phase::WaitingForTailscaled),
                        Phase::WaitingForTailscaled,
                        0,
                    ),
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 0),
                    (
                        Event::LoginRequested,
                        Action::Watch(Phase::Joining),
                        Phase::Joining,
                        0,
                    ),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                ],
            ),
            (
                "reusable key: node expired, re-joined",
                vec![
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 0),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 1),
                    (
                        Event::Backend(Starting),
                        Action::Watch(Phase::Joining),
                        Phase::Joining,
                        1,
                    ),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 2),
                ],
            ),
            (
                "single-use key: node expired, the used key refused twice",
                vec![
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 0),
                    (Event::Backend(Running), Action::Ready, Phase::Running, 1),
                    (Event::Backend(NeedsLogin), Action::Join, Phase::Joining, 1),
                    (err(), rejected(used, 1), Phase::Retrying, 1),
                    (
                        Event::Backend(NeedsLogin),
                        Action::Watch(Phase::Retrying),
                        Phase::Retrying,
                        1,
                    ),
                    (Event::RetryDue, Action::Join, Phase::Joining, 1),
                    (err(), gave_up(used, 2), Phase::Failed, 1),
                ],
            ),
        ];
        for (name, steps) in tables {
            run_table(name, steps);
        }
    }

    #[test]
    fn local_api_refusals_are_final_and_5xx_are_retried() {
        let mut m = machine();
        m.on(Event::Backend(NeedsLogin));
        assert!(matches!(
            m.on(Event::JoinRequestFailed {
                message: "HTTP 500".into(),
                transient: true
            }),
            Action::RetryLater {
                kind: FailureKind::JoinRequest,
                ..
            }
        ));
        m.on(Event::RetryDue);
        assert!(matches!(
            m.on(Event::JoinRequestFailed {
                message: "HTTP 400 bad prefs".into(),
                transient: false
            }),
            Action::GiveUp {
                kind: FailureKind::JoinRequest,
                ..
            }
        ));
    }

    #[test]
    fn key_rejection_messages_are_recognised() {
        let rejected = [
            // headscale 0.29 as seen by tailscale 1.100 (tests/real_peers/FINDINGS.md):
            "invalid pre auth key",
            "authkey already used",
            "authkey expired",
            "handling register with auth key: invalid auth key: crypto/bcrypt: hashedPassword is not the hash of the given password",
            // a malformed hskey-auth-… key (seen in tests/real_peers/test_health_pull.py):
            "handling register with auth key: failed to parse auth-key: key too short, expected at least 77 chars after prefix, got 53",
            // Tailscale's control server:
            "invalid key: authkey not found",
            "invalid key: unable to validate API key",
            "AuthKey expired",
            "authkey already used",
            "invalid key: pre-auth key does not exist",
        ];
        for m in rejected {
            assert!(is_key_rejection(m), "{m}");
        }
        let transient = [
            "register request: Post \"http://127.0.0.1:1/machine/register\": dial tcp: connection refused",
            "fetch control key: unexpected EOF",
            "",
        ];
        for m in transient {
            assert!(!is_key_rejection(m), "{m}");
        }
    }
}
