use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(tailjoin::main_with(tailjoin::cli::Cli::parse()))
}
