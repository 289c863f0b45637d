//! `tailjoin-nix-fmt [--check] FILE...`: formats Nix files with the alejandra library.
//! With `--check` nothing is written; the exit status is 1 if any file would change.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--check" {
            check = true;
        } else {
            files.push(arg);
        }
    }
    if files.is_empty() {
        eprintln!("usage: tailjoin-nix-fmt [--check] FILE...");
        return ExitCode::from(2);
    }
    let mut bad = 0;
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: {e}");
                bad += 1;
                continue;
            }
        };
        let (status, formatted) = alejandra::format::in_memory(file.clone(), text.clone());
        match status {
            alejandra::format::Status::Error(e) => {
                eprintln!("{file}: cannot format: {e}");
                bad += 1;
            }
            alejandra::format::Status::Changed(_) if formatted != text => {
                if check {
                    eprintln!("{file}: not formatted (run tests/nix/check.sh --fix)");
                    bad += 1;
                } else if let Err(e) = std::fs::write(file, formatted) {
                    eprintln!("{file}: {e}");
                    bad += 1;
                } else {
                    eprintln!("{file}: formatted");
                }
            }
            alejandra::format::Status::Changed(_) => {}
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
