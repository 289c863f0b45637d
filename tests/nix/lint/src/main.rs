//! `tailjoin-nix-lint FILE...`: reports the anti-patterns of `tailjoin_nix_lint::lint` as
//! `FILE:LINE:COL: [lint] message`. Exit 0 when there are none, 1 when there are, 2 when a
//! file cannot be read or parsed.

use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f.starts_with('-')) {
        eprintln!("usage: tailjoin-nix-lint FILE...");
        let names: Vec<&str> = tailjoin_nix_lint::LINTS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        eprintln!("lints: {}", names.join(", "));
        return ExitCode::from(2);
    }
    let (mut findings, mut broken) = (0usize, 0usize);
    for file in &files {
        let source = match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                broken += 1;
                continue;
            }
        };
        match tailjoin_nix_lint::lint(&source) {
            Ok(found) => {
                for f in &found {
                    let (line, col) = tailjoin_nix_lint::line_col(&source, f.offset);
                    println!("{file}:{line}:{col}: [{}] {}", f.lint, f.message);
                }
                findings += found.len();
            }
            Err(e) => {
                eprintln!("{file}: cannot parse: {e}");
                broken += 1;
            }
        }
    }
    if broken > 0 {
        ExitCode::from(2)
    } else if findings > 0 {
        eprintln!("{findings} finding(s) in {} file(s) checked", files.len());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
