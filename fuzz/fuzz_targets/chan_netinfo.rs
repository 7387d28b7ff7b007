#![no_main]
use fors::cell::chan::{Netinfo, NetinfoAddr};
use fors::cell::CELL_BODY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Netinfo::parse(data) {
        let mine: Vec<NetinfoAddr> = n.my_addrs().collect();
        let mut out = [0u8; CELL_BODY_LEN];
        if Netinfo::encode(n.timestamp, &n.other_addr, &mine, &mut out).is_ok() {
            let again = Netinfo::parse(&out).unwrap();
            assert_eq!(again.timestamp, n.timestamp);
            assert_eq!(again.other_addr, n.other_addr);
            assert_eq!(again.my_addrs().collect::<Vec<_>>(), mine);
        }
    }
});
