//! The real `tailjoin-provisioner` binary, end to end, for commands that need no peer.

use std::process::Command;

fn provisioner(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tailjoin-provisioner"))
        .args(args)
        .env_remove("TAILJOIN_PROVISION_CONFIG")
        .output()
        .expect("run tailjoin-provisioner")
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("provisioner.json");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_accepts_a_valid_config_and_refuses_a_bad_one_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let api_key = d.path().join("api-key");
    std::fs::write(&api_key, "fake-api-key\n").unwrap();
    let good = format!(
        r#"{{"listen": "127.0.0.1:8443", "allow_plain_http": true, "allow": {{"networks": ["127.0.0.0/8"]}},
            "mint": {{"headscale": {{"url": "http://127.0.0.1:8080", "allow_plain_http": true,
                                     "api_key": {{"file": "{}"}}}}}},
            "tags": ["tag:netboot"]}}"#,
        api_key.display()
    );
    let config = write_config(d.path(), &good);
    let out = provisioner(&["--config", &config, "--check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok; listens on 127.0.0.1:8443"));

    let config = write_config(d.path(), r#"{"listen": "127.0.0.1:99999"}"#);
    let out = provisioner(&["--config", &config, "--check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tailjoin-provisioner: ") && err.contains("listen"),
        "{err}"
    );
}

#[test]
fn check_cannot_be_combined_with_an_admin_subcommand() {
    let out = provisioner(&["--config", "/nonexistent.json", "--check", "pending"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--check cannot be combined"));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = provisioner(&["--config", "/nonexistent/provisioner.json", "pending"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/provisioner.json"));
}
