//! CREATE2, CREATED2, CREATE_FAST, CREATED_FAST, DESTROY and PADDING_NEGOTIATE bodies.
#![no_main]
use fors::cell::chan::*;
use fors::cell::CELL_BODY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; CELL_BODY_LEN];
    if let Ok(c) = Create2::parse(data) {
        c.encode(&mut out).unwrap();
        assert_eq!(Create2::parse(&out).unwrap(), c);
    }
    if let Ok(c) = Created2::parse(data) {
        c.encode(&mut out).unwrap();
        assert_eq!(Created2::parse(&out).unwrap(), c);
    }
    if let Ok(c) = CreateFast::parse(data) {
        c.encode(&mut out);
        assert_eq!(CreateFast::parse(&out).unwrap(), c);
    }
    if let Ok(c) = CreatedFast::parse(data) {
        c.encode(&mut out);
        assert_eq!(CreatedFast::parse(&out).unwrap(), c);
    }
    if let Ok(d) = Destroy::parse(data) {
        d.encode(&mut out);
        assert_eq!(Destroy::parse(&out).unwrap(), d);
    }
    if let Ok(p) = PaddingNegotiate::parse(data) {
        p.encode(&mut out);
        assert_eq!(PaddingNegotiate::parse(&out).unwrap(), p);
    }
});
