//! Table tests of the agent's decisions.

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
        Action::KeepWaiting {
            reason,
            attempts: 1,
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
            Action::KeepWaiting { attempts, .. } if attempts == attempt
        ));
        assert!(m.join_in_flight());
    }
    assert!(matches!(
        m.on(Event::JoinTimedOut),
        Action::GiveUp {
            kind: FailureKind::JoinTimeout,
            attempts: 3,
            ..
        }
    ));
    assert!(!m.join_in_flight());
}

/// The race seen under load (tests/real_peers test_4): the control server is down when the key
/// is submitted, the join timeout passes, the server comes back, and tailscaled's own pending
/// registration spends the single-use key. A second submission of that key would be refused as
/// "already used", so no event of that sequence may lead to `Join`.
#[test]
fn a_key_submitted_while_the_control_server_is_down_is_never_submitted_again() {
    let down = "register request: dial tcp 127.0.0.1:1: connect: connection refused";
    let steps: Vec<Event> = vec![
        Event::Backend(NeedsLogin),
        Event::BackendError(down.into()),
        Event::ControlHealth(Some("not connected to the control server".into())),
        Event::JoinTimedOut,
        Event::Backend(NeedsLogin),
        Event::Backend(Starting),
        Event::BackendError(down.into()),
        Event::RetryDue,
        Event::LoginRequested,
        Event::JoinTimedOut,
        Event::Backend(NeedsLogin),
        Event::ControlHealth(None),
    ];
    let mut m = machine();
    let mut joins = 0;
    for (i, event) in steps.into_iter().enumerate() {
        let action = m.on(event.clone());
        if action == Action::Join {
            joins += 1;
        }
        assert!(joins <= 1, "step {i}: {event:?} submitted the key again");
        assert_eq!(m.phase(), Phase::Joining, "step {i}: {event:?}");
    }
    assert_eq!(joins, 1);
    // tailscaled's own registration succeeds: the one submitted key joined.
    assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
    assert_eq!(m.joins(), 1);
    assert_eq!(m.last_failure(), None);
}

#[test]
fn a_key_rejection_after_a_join_timeout_reads_the_key_again() {
    let mut m = machine();
    m.on(Event::Backend(NeedsLogin));
    assert!(matches!(
        m.on(Event::JoinTimedOut),
        Action::KeepWaiting { .. }
    ));
    let refused = "authkey already used".to_string();
    assert_eq!(
        m.on(Event::BackendError(refused.clone())),
        rejected(&refused, 1)
    );
    assert_eq!(m.on(Event::RetryDue), Action::Join);
}

#[test]
fn a_restarted_tailscaled_after_a_join_timeout_gets_the_key_again() {
    // The key died with tailscaled's state: submitting it again is the only way in.
    let mut m = machine();
    m.on(Event::Backend(NeedsLogin));
    m.on(Event::JoinTimedOut);
    m.on(Event::TailscaledLost);
    assert_eq!(
        m.on(Event::JoinTimedOut),
        Action::Watch(Phase::WaitingForTailscaled)
    );
    assert_eq!(m.on(Event::Backend(NeedsLogin)), Action::Join);
}

#[test]
fn the_last_failure_is_remembered_until_a_join_succeeds() {
    let mut m = machine();
    m.on(Event::Backend(NeedsLogin));
    assert_eq!(m.attempt(), 1);
    assert_eq!(m.last_failure(), None);
    m.on(Event::JoinTimedOut);
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
    m.on(Event::BackendError("connection refused".into()));
    m.on(Event::JoinRequestFailed {
        message: "LocalAPI 503".into(),
        transient: true,
    });
    assert_eq!(m.phase(), Phase::Retrying);
    assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
    assert_eq!(m.on(Event::RetryDue), Action::Watch(Phase::Running));
}

#[test]
fn tailscaled_succeeding_after_a_join_timeout_counts_the_join() {
    let mut m = machine();
    m.on(Event::Backend(NeedsLogin));
    m.on(Event::JoinTimedOut);
    assert_eq!(m.phase(), Phase::Joining);
    assert_eq!(m.on(Event::Backend(Running)), Action::Ready);
    assert_eq!(m.joins(), 1);
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
