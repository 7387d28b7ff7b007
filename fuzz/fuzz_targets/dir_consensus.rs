//! Consensus parser and signature check: no panics; lookups agree with the relay table.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = fors::dir::Consensus::parse(text) {
        for r in &c.relays {
            assert!(c.is_listed(&r.rsa_identity).is_some());
            assert!(c.is_relay_addr_port(std::net::IpAddr::V4(r.address), r.or_port));
        }
        let ids: Vec<_> = c.signatures.iter().map(|s| s.identity).collect();
        let _ = c.verify_signatures(&[], &ids, None);
        let _ = c.check_reasonably_live(std::time::SystemTime::UNIX_EPOCH);
    }
});
