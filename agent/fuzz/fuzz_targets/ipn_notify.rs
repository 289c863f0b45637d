//! One line of tailscaled's IPN bus, as the agent decodes it, and what it derives from it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = serde_json::from_slice::<tailjoin::state::Notify>(data) {
        if let Some(h) = &n.health {
            let _ = h.control_problem();
        }
    }
});
