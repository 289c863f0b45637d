//! The real binary, end to end, for commands that need no peer.

use std::process::Command;

fn tailjoin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tailjoin"))
        .args(args)
        .env_remove("TAILJOIN_CONFIG")
        .output()
        .expect("run tailjoin")
}

#[test]
fn status_without_agent_or_tailscaled_explains_both_and_exits_6() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let sock = d.path().join("tailscaled.sock");
    let out = tailjoin(&[
        "status",
        &format!("--state-dir={}", state.display()),
        &format!("--socket={}", sock.display()),
    ]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("has not run on this machine"), "{text}");
    assert!(
        text.contains("is not there; is tailscaled running?"),
        "{text}"
    );

    let out = tailjoin(&[
        "status",
        "--json",
        &format!("--state-dir={}", state.display()),
        &format!("--socket={}", sock.display()),
    ]);
    assert_eq!(out.status.code(), Some(6));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["running"], false);
    assert!(doc["agent"].is_null() && doc["tailscaled"].is_null());
}

#[test]
fn check_config_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"auth_key": {"http": {"url": "https://prov.lan/key"}}}"#,
    )
    .unwrap();
    let out = tailjoin(&["check-config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let bad = d.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"auth_key": {"http": {"url": "http://prov.lan/key"}}}"#,
    )
    .unwrap();
    let out = tailjoin(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth_key.http.url") && err.contains("clear text"),
        "{err}"
    );
}

#[test]
fn run_without_a_key_source_is_a_config_error_not_a_crash() {
    let out = tailjoin(&["run", "--socket=/nonexistent/sock"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_key"));
}

#[test]
fn the_old_provision_subcommand_points_at_the_provisioners_own_program() {
    for args in [
        &["provision", "--config", "/etc/p.json"][..],
        &[
            "provision",
            "--config",
            "/etc/p.json",
            "approve",
            "52:54:00:12:34:56",
        ][..],
    ] {
        let out = tailjoin(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run `tailjoin-provisioner`"), "{err}");
    }
    // It is not offered in the help: the agent has no provisioner.
    let out = tailjoin(&["--help"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("provision"));
}
