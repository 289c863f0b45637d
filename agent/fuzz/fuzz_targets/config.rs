//! The agent's JSON configuration: parse, then validate (what `tailjoin check-config` does).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(raw) = tailjoin::config::parse(text) {
            let _ = raw.validate();
        }
    }
});
