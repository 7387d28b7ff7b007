//! Directory requests (DirPort and BEGIN_DIR): the parser and the router never panic, and
//! every answer starts with an `HTTP/1.0` status line and ends its head once.
#![no_main]

use std::sync::Arc;

use fors::dircache::request::{parse, Parsed};
use fors::dircache::serve::{answer, Context};
use fors::dircache::store::{DirStore, Document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Parsed::Request(req) = parse(data) else {
        return;
    };
    let mut store = DirStore::new();
    store.insert_microdesc(
        [0; 32],
        Document {
            body: Arc::from(&b"onion-key\n"[..]),
            published: 0,
        },
    );
    let page: Arc<[u8]> = Arc::from(&b"<html></html>"[..]);
    let ctx = Context {
        now: 1_796_565_600,
        store: &store,
        front_page: Some(&page),
        own_descriptor: None,
        peer_for_header: None,
        write_allowance: 1 << 20,
    };
    if let Some(a) = answer(&ctx, req) {
        assert!(a.head.starts_with(b"HTTP/1.0 "));
        assert!(a.head.ends_with(b"\r\n\r\n"));
    }
});
