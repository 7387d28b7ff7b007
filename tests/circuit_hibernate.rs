//! Accounting hibernation in the circuit core: while the network view says the relay is
//! hibernating, a BEGIN is answered RELAY_END reason HIBERNATING (9), as C tor's
//! `connection_exit_begin_conn` does, after the one-hop and unknown-relay checks; streams
//! opened before keep working. (CREATE cells are refused by the shard handler, before the
//! core; tests/daemon_accounting.rs shows that on a live relay.)

mod circuit_common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use circuit_common::*;
use fors::cell::relay::msg::{BeginTarget, End, EndReason, RelayMsg};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::relay::Tor1RelayCrypto;
use fors::proto::circuit::{Action, CoreIo, NetworkView, RelayCore, RelayIdentity};

/// A view that knows one middle relay and can be switched to hibernating.
struct HibNet {
    known: RsaIdentity,
    hibernating: bool,
}

impl NetworkView for HibNet {
    fn is_known_relay(&self, rsa: &RsaIdentity) -> bool {
        *rsa == self.known
    }
    fn is_reentry(&self, _: SocketAddr) -> bool {
        false
    }
    fn hibernating(&self) -> bool {
        self.hibernating
    }
}

type Core = RelayCore<Tor1RelayCrypto, HibNet>;

fn feed(core: &mut Core, cl: &Client, cmd: ChanCmd, mut body: [u8; CELL_BODY_LEN]) -> Vec<Action> {
    let mut rng = rand::thread_rng();
    let mut out = Vec::new();
    let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
    core.handle_cell(&cl.chan, cl.circ_id, cmd, &mut body, &mut io);
    core.flush_originated(&mut io);
    out
}

fn begin(core: &mut Core, cl: &mut Client, stream: u16) -> Vec<Action> {
    let (body, _) = cl.relay_cell(
        0,
        &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
        stream,
    );
    feed(core, cl, ChanCmd::RELAY, body)
}

#[test]
fn begin_while_hibernating_gets_end_hibernating() {
    let mid = RelayIdentity {
        rsa: RsaIdentity([0x33; 20]),
        ed: Ed25519Identity([0x33; 32]),
    };
    let mut rng = rand::thread_rng();
    let me = RelayIdentity {
        rsa: RsaIdentity([9; 20]),
        ed: Ed25519Identity([9; 32]),
    };
    let keys = Arc::new(NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None));
    // A directory cache too, so BEGIN_DIR reaches the hibernation check.
    let mut cfg = test_config();
    cfg.dir_server = Some("127.0.0.1:9".parse().unwrap());
    let mut core: Core = RelayCore::new(
        cfg,
        me,
        keys.clone(),
        policy("accept 127.0.0.1:*, reject *:*"),
        HibNet {
            known: mid.rsa,
            hibernating: false,
        },
    );
    // An ntor circuit from a known middle relay, so that BEGIN passes the earlier checks
    // (a CREATE_FAST circuit is a first hop, where BEGIN is refused).
    let mut cl = Client::new(relay_chan(1, &mid, false), 0x8000_0001);
    let hs = Handshake::Ntor {
        rsa: me.rsa,
        onion: *keys.current().public(),
    };
    let (cmd, body) = cl.circ.create(&mut rng, &hs).unwrap();
    assert_eq!(cmd, ChanCmd::CREATE2);
    assert!(feed(&mut core, &cl, ChanCmd::CREATE2, body).is_empty());
    let mut out = Vec::new();
    {
        let mut io = CoreIo::new(Instant::now(), &mut rng, &mut out);
        core.process_onion_queue(&mut io);
    }
    let (_, id, cmd, reply) = one_cell(&out);
    assert_eq!((id, cmd), (CircId(0x8000_0001), ChanCmd::CREATED2));
    cl.circ.created(cmd, &reply).unwrap();

    // Awake: the BEGIN is served (the exit connects).
    let acts = begin(&mut core, &mut cl, 1);
    assert!(
        acts.iter().any(|a| matches!(a, Action::Connect { .. })),
        "{acts:?}"
    );

    // Hibernating: END HIBERNATING, no connection, the circuit stays.
    core.network_view_mut().hibernating = true;
    let acts = begin(&mut core, &mut cl, 2);
    assert!(!acts.iter().any(|a| matches!(a, Action::Connect { .. })));
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 2));
    assert_eq!(
        End::parse(&got[0].3).unwrap().reason,
        EndReason::Hibernating
    );
    assert_eq!(core.circuit_count(), 1);
    // BEGIN_DIR too: END HIBERNATING (C `connection_exit_begin_conn`).
    let (body, _) = cl.relay_cell(0, &RelayMsg::BeginDir, 4);
    let acts = feed(&mut core, &cl, ChanCmd::RELAY, body);
    assert!(!acts.iter().any(|a| matches!(a, Action::Connect { .. })));
    let got = cl.open_all(&acts);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 4));
    assert_eq!(
        End::parse(&got[0].3).unwrap().reason,
        EndReason::Hibernating
    );

    // Awake again: served again.
    core.network_view_mut().hibernating = false;
    let acts = begin(&mut core, &mut cl, 3);
    assert!(acts.iter().any(|a| matches!(a, Action::Connect { .. })));
}
