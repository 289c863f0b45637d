//! A kernel command line, as the kernel_cmdline key source reads /proc/cmdline.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tailjoin::secrets::cmdline::parse(text);
    }
});
