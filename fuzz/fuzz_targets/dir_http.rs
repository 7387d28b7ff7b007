//! HTTP/1.0 response parser and upload-outcome classification: no panics, limits hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = fors::dir::http::parse_response(data, 1024) {
        assert!(r.body.len() <= 1024);
        let _ = r.identity_body();
        let _ = fors::dir::UploadOutcome::from_response(&r).to_string();
    }
});
