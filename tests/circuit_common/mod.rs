//! In-memory harness for the circuit core: relays built from `RelayCore`, a client that
//! drives the kit's client circuit (`fors_testkit::circuit`) straight into them, and helpers
//! to pick cells out of the actions. No sockets.
#![allow(dead_code)]

pub mod cgo_twins;
pub mod hs;
pub mod hs_cells;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fors::cell::chan::{Create2, Destroy, DestroyReason, HandshakeType};
use fors::cell::relay::msg::{BeginTarget, Extend2, LinkSpec, RelayMsg};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId};
use fors::crypto::handshake::{CircuitExtension, NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::relay::{Tor1ClientCircuit, Tor1RelayCrypto};
use fors::exit::policy::{parse_policy_list, ExitPolicy};
use fors::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, CircuitConfig, CoreIo, HopCrypto, NetworkView,
    PeerIdentity, RelayCore, RelayIdentity,
};
use fors::proto::stream::StreamHandle;
pub use fors_testkit::circuit::Handshake;
use fors_testkit::circuit::{msg, ClientCircuit, ClientLayers};
use fors_testkit::tor1_ref::RefClientLayers;
#[allow(unused_imports)] // Only the cross-check tests run a relay on the reference tor1.
pub use fors_testkit::tor1_ref::RefRelayCrypto;

/// A network view that knows a fixed set of relays and re-entry addresses.
#[derive(Default, Clone)]
pub struct TestNet {
    pub known: Vec<RsaIdentity>,
    pub reentry: Vec<std::net::SocketAddr>,
}

impl NetworkView for TestNet {
    fn is_known_relay(&self, rsa: &RsaIdentity) -> bool {
        self.known.contains(rsa)
    }
    fn is_reentry(&self, a: std::net::SocketAddr) -> bool {
        self.reentry.contains(&a)
    }
}

/// A relay under test with its identity and onion key; production crypto by default.
pub struct Relay<C: HopCrypto = Tor1RelayCrypto> {
    pub core: RelayCore<C, TestNet>,
    pub id: RelayIdentity,
    pub keys: Arc<NtorKeyMap>,
    pub now: Instant,
    pub rng: rand::rngs::ThreadRng,
}

pub fn policy(s: &str) -> Arc<ExitPolicy> {
    Arc::new(ExitPolicy::from_rules(
        &parse_policy_list(s).unwrap().rules,
        false,
    ))
}

impl Relay {
    pub fn new(tag: u8, cfg: CircuitConfig, exit_policy: &str, net: TestNet) -> Self {
        Relay::with_crypto(tag, cfg, exit_policy, net)
    }
}

impl<C: HopCrypto> Relay<C> {
    pub fn with_crypto(tag: u8, cfg: CircuitConfig, exit_policy: &str, net: TestNet) -> Self {
        let mut rng = rand::thread_rng();
        let keys = Arc::new(NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None));
        let id = RelayIdentity {
            rsa: RsaIdentity([tag; 20]),
            ed: Ed25519Identity([tag; 32]),
        };
        let core = RelayCore::new(cfg, id, keys.clone(), policy(exit_policy), net);
        Relay {
            core,
            id,
            keys,
            now: Instant::now(),
            rng,
        }
    }

    /// Runs `f` with a fresh `CoreIo` and returns the actions, after flushing staged exit
    /// DATA as the shard does at the end of every I/O batch.
    pub fn io<T>(
        &mut self,
        f: impl FnOnce(&mut RelayCore<C, TestNet>, &mut CoreIo<'_>) -> T,
    ) -> (T, Vec<Action>) {
        let mut out = Vec::new();
        let mut io = CoreIo::new(self.now, &mut self.rng, &mut out);
        let r = f(&mut self.core, &mut io);
        self.core.flush_originated(&mut io);
        (r, out)
    }

    /// [`Relay::io`] without the flush: staged exit DATA stays staged.
    pub fn io_unflushed<T>(
        &mut self,
        f: impl FnOnce(&mut RelayCore<C, TestNet>, &mut CoreIo<'_>) -> T,
    ) -> (T, Vec<Action>) {
        let mut out = Vec::new();
        let mut io = CoreIo::new(self.now, &mut self.rng, &mut out);
        let r = f(&mut self.core, &mut io);
        (r, out)
    }

    pub fn cell(
        &mut self,
        chan: &ChanInfo,
        circ_id: CircId,
        cmd: ChanCmd,
        mut body: CellBody,
    ) -> Vec<Action> {
        self.io(|c, io| c.handle_cell(chan, circ_id, cmd, &mut body, io))
            .1
    }

    pub fn onions(&mut self) -> Vec<Action> {
        self.io(|c, io| {
            c.process_onion_queue(io);
        })
        .1
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }
}

pub fn client_chan(n: u64) -> ChanInfo {
    ChanInfo {
        id: ChanId(n),
        peer: PeerIdentity::Client,
        we_initiated: false,
    }
}

pub fn relay_chan(n: u64, peer: &RelayIdentity, we_initiated: bool) -> ChanInfo {
    ChanInfo {
        id: ChanId(n),
        peer: PeerIdentity::Relay {
            rsa: peer.rsa,
            ed: peer.ed,
        },
        we_initiated,
    }
}

/// Cells in `actions`, as (chan, circ id, cmd, body).
pub fn cells(actions: &[Action]) -> Vec<(ChanId, CircId, ChanCmd, CellBody)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendCell {
                chan,
                circ_id,
                cmd,
                body,
                ..
            } => Some((*chan, *circ_id, *cmd, *body)),
            _ => None,
        })
        .collect()
}

/// The one cell in `actions`.
pub fn one_cell(actions: &[Action]) -> (ChanId, CircId, ChanCmd, CellBody) {
    let c = cells(actions);
    assert_eq!(c.len(), 1, "expected exactly one cell in {actions:?}");
    c[0]
}

pub fn destroy_reason(body: &CellBody) -> DestroyReason {
    Destroy::parse(body).unwrap().reason
}

/// A client's circuit through one or more relays, its cells handed straight to the first
/// relay's core.
pub struct Client {
    pub chan: ChanInfo,
    pub circ_id: CircId,
    pub circ: ClientCircuit<Box<dyn ClientLayers>>,
    pub rng: rand::rngs::ThreadRng,
}

pub enum Hs {
    Ntor,
    NtorV3 { cc: bool },
    Fast,
}

impl Client {
    pub fn new(chan: ChanInfo, circ_id: u32) -> Self {
        Self::with_layers(chan, circ_id, Box::new(Tor1ClientCircuit::new()))
    }

    /// A client using the reference tor1 implementation instead of the production one.
    pub fn with_reference_crypto(chan: ChanInfo, circ_id: u32) -> Self {
        Self::with_layers(chan, circ_id, Box::new(RefClientLayers::default()))
    }

    fn with_layers(chan: ChanInfo, circ_id: u32, layers: Box<dyn ClientLayers>) -> Self {
        Client {
            chan,
            circ_id: CircId(circ_id),
            circ: ClientCircuit::with_layers(CircId(circ_id), layers),
            rng: rand::thread_rng(),
        }
    }

    /// Builds the first hop at `relay` with handshake `hs`; returns the reply extensions
    /// for ntor-v3.
    pub fn create<C: HopCrypto>(&mut self, relay: &mut Relay<C>, hs: Hs) -> Vec<CircuitExtension> {
        let onion = *relay.keys.current().public();
        let hs = match hs {
            Hs::Fast => Handshake::Fast,
            Hs::Ntor => Handshake::Ntor {
                rsa: relay.id.rsa,
                onion,
            },
            Hs::NtorV3 { cc } => Handshake::NtorV3 {
                ed: relay.id.ed,
                onion,
                exts: if cc {
                    vec![CircuitExtension::CcRequest]
                } else {
                    vec![]
                },
            },
        };
        let (cmd, body) = self.circ.create(&mut self.rng, &hs).unwrap();
        let mut acts = relay.cell(&self.chan, self.circ_id, cmd, body);
        let want = if cmd == ChanCmd::CREATE2 {
            // CREATE2 waits in the onion queue.
            assert!(acts.is_empty(), "{acts:?}");
            acts = relay.onions();
            ChanCmd::CREATED2
        } else {
            ChanCmd::CREATED_FAST
        };
        let (_, id, got, reply) = one_cell(&acts);
        assert_eq!((id, got), (self.circ_id, want));
        self.circ.created(got, &reply).unwrap()
    }

    /// The SENDME tag of the last cell exchanged with hop `hop`.
    pub fn last_tag(&self, hop: usize) -> [u8; 20] {
        self.circ.last_tag(hop).expect("hop exists")
    }

    /// Encodes and encrypts a relay message to hop `hop`; returns the body and its tag.
    pub fn relay_cell(
        &mut self,
        hop: usize,
        msg: &RelayMsg<'_>,
        stream_id: u16,
    ) -> (CellBody, [u8; 20]) {
        self.circ
            .relay_cell(&mut self.rng, hop, msg, stream_id)
            .unwrap()
    }

    /// Sends a relay message to hop `hop` through `relay` (the first hop).
    pub fn send<C: HopCrypto>(
        &mut self,
        relay: &mut Relay<C>,
        hop: usize,
        cmd: ChanCmd,
        msg: &RelayMsg<'_>,
        stream_id: u16,
    ) -> Vec<Action> {
        let (body, _) = self.relay_cell(hop, msg, stream_id);
        relay.cell(&self.chan, self.circ_id, cmd, body)
    }

    /// Decrypts a cell that reached the client: (hop, cmd, stream id, data).
    pub fn open(&mut self, mut body: CellBody) -> (usize, RelayCmd, u16, Vec<u8>) {
        let r = self
            .circ
            .open(&mut body)
            .expect("client recognizes the cell");
        (r.hop, r.cmd, r.stream_id, r.data.to_vec())
    }

    /// BEGIN to 127.0.0.1:80 as stream `stream_id`; the exit's connect succeeds and we read
    /// its CONNECTED. Returns the exit's handle for the stream.
    pub fn open_stream<C: HopCrypto>(
        &mut self,
        exit: &mut Relay<C>,
        stream_id: u16,
    ) -> StreamHandle {
        let acts = self.send(
            exit,
            0,
            ChanCmd::RELAY,
            &begin_msg(BeginTarget::Ipv4(Ipv4Addr::LOCALHOST), 80),
            stream_id,
        );
        let Some(Action::Connect { stream, addr }) = acts.first().cloned() else {
            panic!("{acts:?}")
        };
        let (_, acts) = exit.io(|c, io| c.stream_connected(stream, addr, io).unwrap());
        assert_eq!(self.open_all(&acts)[0].1, RelayCmd::CONNECTED);
        stream
    }

    /// Decrypts every relay cell for our channel in `actions`.
    pub fn open_all(&mut self, actions: &[Action]) -> Vec<(usize, RelayCmd, u16, Vec<u8>)> {
        let (me, my_id) = (self.chan.id, self.circ_id);
        cells(actions)
            .into_iter()
            .filter(|(ch, id, cmd, _)| *ch == me && *id == my_id && *cmd == ChanCmd::RELAY)
            .map(|(_, _, _, b)| self.open(b))
            .collect()
    }
}

pub fn begin_msg(target: BeginTarget<'_>, port: u16) -> RelayMsg<'_> {
    msg::begin(target, port)
}

/// An EXTEND2 body to `to`, with `hdata` as its CREATE2 (ntor).
pub fn extend2_body(to: &Relay, addr: &str, hdata: &[u8], out: &mut [u8; 498]) -> usize {
    Extend2::encode(
        &[
            LinkSpec::Ipv4(addr.parse().unwrap()),
            LinkSpec::RsaId(to.id.rsa),
            LinkSpec::Ed25519Id(to.id.ed),
        ],
        &Create2 {
            htype: HandshakeType::NTOR,
            hdata,
        },
        out,
    )
    .unwrap()
}

/// A config with small bounds and private extends allowed (test network).
pub fn test_config() -> CircuitConfig {
    CircuitConfig {
        max_circuits: 64,
        max_streams: 64,
        onion_queue_len: 8,
        onions_per_run: 4,
        pool_cells: 256,
        max_queue_per_circuit: 128,
        extend_allow_private: true,
        ..CircuitConfig::for_tests()
    }
}
