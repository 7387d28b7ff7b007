//! Shared by the responder-channel fuzz targets: a relay link context made once, a sink
//! that answers in place, and the loop that feeds a responder `Channel` the TLS bytes of a
//! client that wrote `prefix` then `rest`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use fors::cell::{ChanCmd, CircId};
use fors::proto::channel::tls::{self, rustls};
use fors::proto::channel::{
    CellQueue, Channel, ChannelConfig, ChannelEvent, ChannelSink, LinkContext,
};
use fors_testkit::identity::TestIdentity;

/// A relay link context made once: the test kit's in-memory relay identity (the one the
/// channel tests use), its signing certificate valid for a day.
pub fn context() -> Arc<LinkContext> {
    static CTX: OnceLock<Arc<LinkContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        TestIdentity::generate_with_signing_cert(SystemTime::now(), 86400)
            .context(ChannelConfig::default())
    })
    .clone()
}

pub struct Sink;

impl ChannelSink for Sink {
    fn cell(&mut self, circ_id: CircId, cmd: ChanCmd, body: &mut [u8; 509], out: &mut CellQueue) {
        // Exercise in-place replies from the callback.
        body[0] ^= 1;
        let _ = out.send_cell(circ_id, cmd, body);
    }
    fn event(&mut self, _: ChannelEvent) {}
}

/// Runs a responder channel against a TLS client that sends `prefix` then `rest` as
/// plaintext; must end closed after EOF, whatever the bytes were.
pub fn drive_responder(prefix: &[u8], rest: &[u8]) {
    let now = SystemTime::now();
    let mut rng = rand::thread_rng();
    let mut ch = Channel::new_responder(context(), IpAddr::V4(Ipv4Addr::LOCALHOST), now).unwrap();
    let cfg = tls::client_config(tls::provider()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
    let mut client = rustls::ClientConnection::new(cfg, name).unwrap();
    client.writer().write_all(prefix).unwrap();
    client.writer().write_all(rest).unwrap();
    let mut sink = Sink;
    for _ in 0..64 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if wire.is_empty() || ch.is_closed() {
            break;
        }
        let _ = ch.handle_input(&wire, now, &mut rng, &mut sink);
        let back = ch.pending_output().to_vec();
        ch.consume_output(back.len());
        let mut s = &back[..];
        while !s.is_empty() {
            match client.read_tls(&mut s) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if client.process_new_packets().is_err() {
                        break;
                    }
                }
            }
        }
        let mut sinkbuf = [0u8; 4096];
        while let Ok(n) = client.reader().read(&mut sinkbuf) {
            if n == 0 {
                break;
            }
        }
    }
    let _ = ch.handle_eof(&mut sink);
    assert!(ch.is_closed());
}
