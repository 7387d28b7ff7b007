//! Authority key certificate parser (`/tor/keys/all` bodies): no panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for cert in fors::dir::authcert::parse_certs(text).into_iter().flatten() {
            let _ = cert.check_time(std::time::SystemTime::UNIX_EPOCH);
        }
    }
});
