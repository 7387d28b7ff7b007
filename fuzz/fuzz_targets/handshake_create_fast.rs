//! CREATE_FAST relay side and the client's CREATED_FAST check on arbitrary bytes: errors,
//! never panics.
#![no_main]

use fors::crypto::handshake::fast::{self, CreateFastClient};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rng = rand::thread_rng();
    let _ = fast::server_handshake(&mut rng, data);
    let (client, _x) = CreateFastClient::start(&mut rng);
    let _ = client.finish(data);
});
