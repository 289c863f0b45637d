//! An HTTP key server's answer: the first byte picks raw or JSON (field "key"), the rest is the
//! body, checked as a fetched key is.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tailjoin::config::ResponseFormat;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let format = if mode & 1 == 0 {
        ResponseFormat::Raw
    } else {
        ResponseFormat::Json { field: "key".into() }
    };
    let _ = tailjoin::secrets::parse_key_response(body, &format);
});
