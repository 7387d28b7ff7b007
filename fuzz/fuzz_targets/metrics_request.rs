//! MetricsPort request heads (`GET /metrics HTTP/1.x` plus headers): the parser never panics
//! and only an exact GET of /metrics is served.
#![no_main]

use fors::metrics::http::{parse_request, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if parse_request(data) == Request::Metrics {
        assert!(data.starts_with(b"GET /metrics"), "served {data:?}");
    }
});
