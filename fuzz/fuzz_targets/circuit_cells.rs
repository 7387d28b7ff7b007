//! Arbitrary cells and shard events against a circuit core with one established circuit:
//! the core must never panic, never exceed its bounds, and keep its tables consistent.
//!
//! The hop crypto here is the identity with a "recognized" rule the fuzzer can satisfy
//! (recognized == 0 and digest field == 0), so inputs reach every relay-message handler
//! instead of dying in the digest check.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fors::cell::chan::DestroyReason;
use fors::cell::relay::msg::EndReason;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::exit::dns::{Answer, Resolution};
use fors::exit::policy::{parse_policy_list, ExitPolicy};
use fors::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, CircuitConfig, ConnectError, CoreIo, ExtendDone, HopCrypto,
    NetworkView, NextHop, PeerIdentity, RelayCore, RelayIdentity, ShardIdx,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

struct Clear([u8; 20]);

impl HopCrypto for Clear {
    fn from_keys(_: &Tor1KeyMaterial) -> Self {
        Clear([0; 20])
    }
    fn recognize(&mut self, b: &mut CellBody) -> bool {
        b[1] == 0 && b[2] == 0 && b[5..9] == [0; 4]
    }
    fn sendme_tag(&self) -> &[u8; 20] {
        &self.0
    }
    fn backward_relay(&mut self, _: &mut CellBody) {}
    fn originate(&mut self, b: &mut CellBody) -> [u8; 20] {
        // The tag is a function of the cell, so a fuzzer can (rarely) match it.
        self.0.copy_from_slice(&b[..20]);
        self.0
    }
}

struct Net;
impl NetworkView for Net {
    fn is_known_relay(&self, r: &RsaIdentity) -> bool {
        r.0[0] & 1 == 1
    }
    fn is_reentry(&self, a: SocketAddr) -> bool {
        a.port() == 9001
    }
}

fn take<'a>(d: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(d.len());
    let (a, b) = d.split_at(n);
    *d = b;
    a
}

fuzz_target!(|data: &[u8]| {
    let mut d = data;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let keys = Arc::new(NtorKeyMap::new(
        NtorKeyPair::from_secret_bytes([9; 32]),
        None,
    ));
    let policy = Arc::new(ExitPolicy::from_rules(
        &parse_policy_list("accept 127.0.0.1:*, accept *:80, reject *:*")
            .unwrap()
            .rules,
        false,
    ));
    let cfg = CircuitConfig {
        max_circuits: 8,
        max_streams: 8,
        onion_queue_len: 2,
        onions_per_run: 1,
        pool_cells: 24,
        max_queue_per_circuit: 12,
        max_optimistic_cells: 3,
        extend_allow_private: true,
        ..CircuitConfig::for_tests()
    };
    let me = RelayIdentity {
        rsa: RsaIdentity([2; 20]),
        ed: Ed25519Identity([2; 32]),
    };
    let mut core: RelayCore<Clear, Net> = RelayCore::new(cfg, me, keys, policy, Net);
    let prev = ChanInfo {
        id: ChanId(1),
        peer: PeerIdentity::Relay {
            rsa: RsaIdentity([1; 20]),
            ed: Ed25519Identity([1; 32]),
        },
        we_initiated: false,
    };
    let mut now = Instant::now();
    let mut out: Vec<Action> = Vec::with_capacity(64);
    // One established circuit (CREATE_FAST completes inline).
    {
        let mut io = CoreIo::new(now, &mut rng, &mut out);
        core.handle_cell(
            &prev,
            CircId(0x8000_0001),
            ChanCmd::CREATE_FAST,
            &mut [0; CELL_BODY_LEN],
            &mut io,
        );
    }
    let mut streams = vec![];
    let mut extends = vec![];
    while let [op, ..] = *d {
        d = &d[1..];
        out.clear();
        let mut io = CoreIo::new(now, &mut rng, &mut out);
        match op % 12 {
            0..=3 => {
                // A relay cell on the established circuit (forward), or from its next hop.
                let mut body = [0u8; CELL_BODY_LEN];
                let src = take(&mut d, CELL_BODY_LEN);
                body[..src.len()].copy_from_slice(src);
                let cmd = if op & 0x10 != 0 {
                    ChanCmd::RELAY_EARLY
                } else {
                    ChanCmd::RELAY
                };
                if op & 0x20 != 0 {
                    let nc = ChanInfo {
                        id: ChanId(5),
                        peer: prev.peer,
                        we_initiated: true,
                    };
                    core.handle_cell(&nc, CircId(0x8000_0005), cmd, &mut body, &mut io);
                } else {
                    core.handle_cell(&prev, CircId(0x8000_0001), cmd, &mut body, &mut io);
                }
            }
            4 => {
                // Any channel cell on any circuit of two channels.
                let h = take(&mut d, 6);
                let mut body = [0u8; CELL_BODY_LEN];
                let src = take(&mut d, 120);
                body[..src.len()].copy_from_slice(src);
                let (ch, id, cmd) = match h {
                    [a, b, c, e, f, g] => (
                        if *a & 1 == 0 {
                            prev
                        } else {
                            ChanInfo {
                                id: ChanId(2),
                                peer: PeerIdentity::Client,
                                we_initiated: true,
                            }
                        },
                        CircId(u32::from_be_bytes([*b, *c, *e, *f])),
                        ChanCmd(*g),
                    ),
                    _ => break,
                };
                core.handle_cell(&ch, id, cmd, &mut body, &mut io);
            }
            5 => {
                if let Some(&s) = streams.last() {
                    let n = take(&mut d, 1).first().copied().unwrap_or(0) as usize * 8;
                    let _ = core.stream_data(s, &vec![0x55; n], &mut io);
                }
            }
            6 => {
                if let Some(&s) = streams.last() {
                    let _ = match take(&mut d, 1).first().copied().unwrap_or(0) % 5 {
                        0 => core.stream_connected(
                            s,
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80),
                            &mut io,
                        ),
                        1 => core.stream_connect_failed(s, ConnectError::Errno(111), &mut io),
                        2 => core.stream_closed(s, EndReason::Done, &mut io),
                        3 => core.stream_write_blocked(s, op & 0x80 != 0, &mut io),
                        _ => core.dns_result(
                            s,
                            &Resolution {
                                ipv4: Answer::Found {
                                    value: Ipv4Addr::new(127, 0, 0, 1),
                                    ttl: 5,
                                },
                                ..Resolution::NONE
                            },
                            &mut io,
                        ),
                    };
                }
            }
            7 => {
                core.process_onion_queue(&mut io);
            }
            8 => {
                now += Duration::from_millis(700);
            }
            9 => {
                if op & 0x80 != 0 {
                    core.channel_blocked(ChanId(1));
                } else {
                    core.channel_unblocked(ChanId(1), &mut io);
                }
            }
            10 => {
                if let Some(c) = extends.pop() {
                    let mut created = [0u8; CELL_BODY_LEN];
                    created[1] = 64;
                    let next = NextHop {
                        chan: ChanId(5),
                        shard: ShardIdx(0),
                        circ_id: CircId(0x8000_0005),
                    };
                    let r = if op & 0x80 != 0 {
                        Err(DestroyReason::ConnectFailed)
                    } else {
                        Ok(ExtendDone {
                            next,
                            created2: &created,
                        })
                    };
                    let _ = core.extend_result(c, r, &mut io);
                }
            }
            _ => core.channel_closed(ChanId(if op & 0x80 != 0 { 1 } else { 5 }), &mut io),
        }
        for a in &out {
            match a {
                Action::Connect { stream, .. } | Action::Resolve { stream, .. } => {
                    streams.push(*stream)
                }
                Action::Extend { circ, .. } => extends.push(*circ),
                _ => {}
            }
        }
        let m = core.metrics();
        assert!(m.queued_cells <= 24);
        assert!(m.onion_queue_len <= 2);
        assert!(core.circuit_count() <= 8);
        assert!(m.streams <= 8);
    }
});
