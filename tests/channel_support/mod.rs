//! Test fixtures for the channel tests: relay identities (the test kit's), a collecting
//! sink, a pump between two in-memory channels, and a hand-driven TLS initiator that builds
//! handshake cells itself (to send malformed or tampered ones).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fors::cell::{ChanCmd, CircId, Framer};
use fors::proto::channel::{
    CellQueue, Channel, ChannelConfig, ChannelEvent, ChannelSink, LinkContext,
};

pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub use fors_testkit::identity::TestIdentity;

/// A relay identity and a context for it, made once per test binary (RSA-2048 link-key
/// generation is the slow part).
pub struct Fixture {
    pub id: TestIdentity,
    pub ctx: Arc<LinkContext>,
}

fn fixture(cell: &'static OnceLock<Fixture>) -> &'static Fixture {
    cell.get_or_init(|| {
        let id = TestIdentity::generate();
        let ctx = id.context(ChannelConfig::default());
        Fixture { id, ctx }
    })
}

pub fn relay_a() -> &'static Fixture {
    static A: OnceLock<Fixture> = OnceLock::new();
    fixture(&A)
}

pub fn relay_b() -> &'static Fixture {
    static B: OnceLock<Fixture> = OnceLock::new();
    fixture(&B)
}

/// Collects everything a channel hands out; optionally echoes RELAY cells back with the
/// first body byte incremented (to exercise replies from inside the callback).
#[derive(Default)]
pub struct Collect {
    pub cells: Vec<(CircId, ChanCmd, Vec<u8>)>,
    pub events: Vec<ChannelEvent>,
    pub echo: bool,
}

impl ChannelSink for Collect {
    fn cell(&mut self, circ_id: CircId, cmd: ChanCmd, body: &mut [u8; 509], out: &mut CellQueue) {
        self.cells.push((circ_id, cmd, body.to_vec()));
        if self.echo && cmd == ChanCmd::RELAY {
            body[0] = body[0].wrapping_add(1);
            out.send_cell(circ_id, cmd, body).unwrap();
        }
    }
    fn event(&mut self, event: ChannelEvent) {
        self.events.push(event);
    }
}

impl Collect {
    pub fn closed(&self) -> Option<&fors::proto::channel::ChannelError> {
        self.events.iter().find_map(|e| match e {
            ChannelEvent::Closed(r) => Some(r),
            _ => None,
        })
    }
    pub fn opened(&self) -> Option<&fors::proto::channel::OpenInfo> {
        self.events.iter().find_map(|e| match e {
            ChannelEvent::Open(i) => Some(i),
            _ => None,
        })
    }
}

/// Moves bytes between two channels until neither has anything to send.
pub fn pump(a: &mut Channel, sa: &mut Collect, b: &mut Channel, sb: &mut Collect) {
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let mut moved = false;
        for dir in 0..2 {
            let (from, to, sink) = if dir == 0 {
                (&mut *a, &mut *b, &mut *sb)
            } else {
                (&mut *b, &mut *a, &mut *sa)
            };
            let out = from.pending_output().to_vec();
            if out.is_empty() {
                continue;
            }
            from.consume_output(out.len());
            moved = true;
            if !to.is_closed() {
                let _ = to.handle_input(&out, now(), &mut rng, sink);
            }
        }
        if !moved {
            return;
        }
    }
    panic!("pump did not settle");
}

/// Runs a full handshake between fresh initiator (A) and responder (B) channels.
pub fn open_pair(a: &Fixture, b: &Fixture) -> (Channel, Collect, Channel, Collect) {
    let mut rng = rand::thread_rng();
    let expected = fors::proto::channel::ExpectedPeer {
        rsa: b.id.rsa_id(),
        ed: Some(b.id.ed_id()),
    };
    let mut init = Channel::new_initiator(a.ctx.clone(), expected, LOCAL, now(), &mut rng).unwrap();
    let mut resp = Channel::new_responder(b.ctx.clone(), LOCAL, now()).unwrap();
    let (mut si, mut sr) = (Collect::default(), Collect::default());
    pump(&mut init, &mut si, &mut resp, &mut sr);
    (init, si, resp, sr)
}

/// A TLS client driven by hand: the test writes handshake cells itself.
pub struct RawInitiator {
    pub tls: rustls::ClientConnection,
    /// Decrypted bytes from the responder not yet framed.
    pub plain: Vec<u8>,
}

impl RawInitiator {
    pub fn new() -> Self {
        let cfg = fors::proto::channel::tls::client_config(fors::proto::channel::tls::provider())
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
        RawInitiator {
            tls: rustls::ClientConnection::new(cfg, name).unwrap(),
            plain: Vec::new(),
        }
    }

    pub fn send(&mut self, plaintext: &[u8]) {
        self.tls.writer().write_all(plaintext).unwrap();
    }

    /// Exchanges TLS bytes with `ch` until both are quiet.
    pub fn exchange(&mut self, ch: &mut Channel, sink: &mut Collect) {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let mut moved = false;
            let mut out = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() && !ch.is_closed() {
                moved = true;
                let _ = ch.handle_input(&out, now(), &mut rng, sink);
            }
            let back = ch.pending_output().to_vec();
            ch.consume_output(back.len());
            if !back.is_empty() {
                moved = true;
                let mut s = &back[..];
                while !s.is_empty() {
                    if self.tls.read_tls(&mut s).unwrap() == 0 {
                        break;
                    }
                    if self.tls.process_new_packets().is_err() {
                        break;
                    }
                }
                let mut buf = [0u8; 4096];
                loop {
                    match self.tls.reader().read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("exchange did not settle");
    }

    /// Takes the next complete cell's wire bytes from what the responder sent.
    pub fn next_cell(&mut self, framer: &Framer) -> Option<Vec<u8>> {
        let (_, used) = framer.next(&self.plain).unwrap()?;
        Some(self.plain.drain(..used).collect())
    }

    pub fn peer_cert_der(&self) -> Vec<u8> {
        self.tls.peer_certificates().unwrap()[0].to_vec()
    }
}

pub fn secs_ago(s: u64) -> SystemTime {
    now() - Duration::from_secs(s)
}
