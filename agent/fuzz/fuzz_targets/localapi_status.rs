//! tailscaled's `GET /localapi/v0/status` answer, and the node facts the agent reports from it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<tailjoin::state::Status>(data) {
        let _ = tailjoin::state::NodeFacts::from(&s);
        let _ = s.backend_state.name();
    }
});
