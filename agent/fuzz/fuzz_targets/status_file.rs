//! The agent's status file as `tailjoin status` reads it, and the text it renders from it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(report) = tailjoin::report::status_file::parse(text) {
            let c = tailjoin::status_cmd::Combined {
                agent: Some(report),
                agent_alive: Some(false),
                agent_error: None,
                tailscaled: None,
                tailscaled_error: None,
                running: false,
            };
            let _ = tailjoin::status_cmd::render_text(&c);
        }
    }
});
