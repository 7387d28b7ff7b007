//! Harness for the relay node without sockets: two nodes (shards 0 and 1 of one relay) on
//! in-memory fake shards whose cross-shard queues the harness delivers, a fake clock, and
//! peers played with the crate's own channel code (a relay-authenticated initiator as the
//! "client", a responder as an extend target). Randomness is seeded; the seed is printed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fors::accounting::Hibernation;
use fors::cell::chan::{Create2, Created2, HandshakeType};
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{NtorClient, NtorKeyMap, NtorKeyPair};
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};
use fors::dos::{ClientAddrTable, DosOptions};
use fors::exit::policy::{parse_policy_list, ExitPolicy};
use fors::metrics::ShardStats;
use fors::proto::channel::{Channel, ChannelConfig, ExpectedPeer};
use fors::proto::circuit::{CellBody, CircuitConfig};
use fors::relay::handler::{DosShared, RelayMsg, RelayNode};
use fors::relay::node::fake::FakeShard;
use fors::relay::snapshot::{KnownRelay, NetworkSnapshot, SnapshotCell};
use fors::shard::{CloseReason, ConnId, ShardId, ShardIo};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use fors::cell::relay::msg::{Extend2, Extended2, LinkSpec};
use fors::crypto::handshake::ntor::{server_handshake, NTOR_ONIONSKIN_LEN};
use fors::crypto::relay::Tor1RelayCrypto;
use fors::proto::circuit::HopCrypto;

use crate::channel_support::{Collect, TestIdentity};

pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A relay identity with its link context and onion key, made once per test binary.
pub struct Ident {
    pub id: TestIdentity,
    pub ctx: Arc<fors::proto::channel::LinkContext>,
    pub onion: Arc<NtorKeyMap>,
}

fn ident(cell: &'static OnceLock<Ident>, config: ChannelConfig) -> &'static Ident {
    cell.get_or_init(|| {
        let id = TestIdentity::generate();
        let ctx = id.context(config);
        let onion = Arc::new(NtorKeyMap::new(
            NtorKeyPair::generate(&mut rand::thread_rng()),
            None,
        ));
        Ident { id, ctx, onion }
    })
}

/// Cells a channel of the node may hold (queued plus TLS output): small, so that a test
/// reaches the channel's blocked mark (64 cells free) with little data.
pub const NODE_CHANNEL_CELLS: usize = 192;

/// The relay under test (both shards).
pub fn node_ident() -> &'static Ident {
    static I: OnceLock<Ident> = OnceLock::new();
    ident(
        &I,
        ChannelConfig {
            max_output_cells: NODE_CHANNEL_CELLS,
            ..ChannelConfig::default()
        },
    )
}
/// The peer that builds circuits through it (authenticates as a known relay, so it may
/// BEGIN at the node: C tor refuses exits on circuits from clients' first hops).
pub fn client_ident() -> &'static Ident {
    static I: OnceLock<Ident> = OnceLock::new();
    ident(&I, ChannelConfig::default())
}
/// The relay a circuit is extended to.
pub fn target_ident() -> &'static Ident {
    static I: OnceLock<Ident> = OnceLock::new();
    ident(&I, ChannelConfig::default())
}

/// `ident`'s identity with TLS configurations that offer only TLS 1.2.
fn tls12_ctx(ident: &Ident) -> Arc<fors::proto::channel::LinkContext> {
    let ctx = fors::proto::channel::LinkContext::new(
        ident.id.link_certs(),
        &[LOCAL],
        ChannelConfig::default(),
    )
    .unwrap();
    Arc::new(ctx.with_tls_versions(&[&rustls::version::TLS12]).unwrap())
}

/// [`client_ident`] speaking only TLS 1.2 (the node still offers 1.3 and 1.2).
pub fn client_ctx_tls12() -> Arc<fors::proto::channel::LinkContext> {
    static C: OnceLock<Arc<fors::proto::channel::LinkContext>> = OnceLock::new();
    C.get_or_init(|| tls12_ctx(client_ident())).clone()
}

/// [`target_ident`] speaking only TLS 1.2.
pub fn target_ctx_tls12() -> Arc<fors::proto::channel::LinkContext> {
    static C: OnceLock<Arc<fors::proto::channel::LinkContext>> = OnceLock::new();
    C.get_or_init(|| tls12_ctx(target_ident())).clone()
}

/// Where the target "listens" (only a name here: the fake shard connects nowhere).
pub fn target_addr() -> SocketAddr {
    "127.0.0.2:9001".parse().unwrap()
}

/// The seed for this test, from `FORS_TEST_SEED` or fresh; printed so a failure replays.
pub fn seed(test: &str) -> u64 {
    fors_testkit::test_seed(test)
}

pub fn circuit_config() -> CircuitConfig {
    CircuitConfig {
        max_circuits: 64,
        max_streams: 64,
        onion_queue_len: 16,
        onions_per_run: 4,
        pool_cells: 1024,
        max_queue_per_circuit: 512,
        extend_allow_private: true,
        ..CircuitConfig::for_tests()
    }
}

pub fn snapshot() -> NetworkSnapshot {
    let mut known = BTreeMap::new();
    for who in [client_ident(), target_ident()] {
        known.insert(
            who.id.rsa_id(),
            KnownRelay {
                rsa_identity: who.id.rsa_id(),
                ed25519_identity: Some(who.id.ed_id()),
                or_addresses: vec![],
            },
        );
    }
    let rules = parse_policy_list("accept *:*").unwrap().rules;
    NetworkSnapshot {
        consensus_params: BTreeMap::new(),
        known_relays: Arc::new(known),
        ntor_keys: node_ident().onion.clone(),
        exit_policy: Arc::new(ExitPolicy::from_rules(&rules, false)),
        link: node_ident().ctx.clone(),
        outbound: Default::default(),
        self_status: None,
        hibernation: Hibernation::Awake,
        extend_over_ipv6: false,
    }
}

/// Two shards of one relay, each a node on a fake shard.
pub struct Net {
    pub nodes: Vec<RelayNode>,
    pub shards: Vec<FakeShard<RelayMsg>>,
    /// Every cross-shard message delivered, as (from, to, kind), in order.
    pub cross_log: Vec<(usize, usize, &'static str)>,
    pub network: Arc<SnapshotCell<NetworkSnapshot>>,
    pub rng: StdRng,
    /// Each shard's published counters (what the MetricsPort renders), copied at ticks.
    pub stats: Vec<Arc<ShardStats>>,
}

pub fn msg_kind(m: &RelayMsg) -> &'static str {
    match m {
        RelayMsg::ExtendRequest { .. } => "ExtendRequest",
        RelayMsg::ExtendReply { .. } => "ExtendReply",
        RelayMsg::Forward { .. } => "Forward",
        RelayMsg::Backward { .. } => "Backward",
        RelayMsg::NextHopClosed { .. } => "NextHopClosed",
        RelayMsg::ChanBlocked { .. } => "ChanBlocked",
        RelayMsg::Hs(_) => "Hs",
        RelayMsg::Cfx(_) => "Cfx",
    }
}

impl Net {
    pub fn new(seed: u64) -> Net {
        Net::with_config(seed, circuit_config())
    }

    /// As `new`, with the circuit core's configuration `cfg` on both shards.
    pub fn with_config(seed: u64, cfg: CircuitConfig) -> Net {
        let network = SnapshotCell::new(snapshot());
        let dos = DosShared {
            // The DoS table counts from an epoch no later than the fake clocks made below.
            table: Arc::new(ClientAddrTable::new(
                1024,
                Default::default(),
                std::time::Instant::now(),
            )),
            options: SnapshotCell::new(DosOptions::default()),
        };
        let mut nodes = Vec::new();
        let mut shards = Vec::new();
        let mut stats = Vec::new();
        for s in 0..2 {
            stats.push(Arc::new(ShardStats::default()));
            let mut node = RelayNode::new(
                ShardId(s),
                stats[s].clone(),
                network.clone(),
                256,
                cfg.clone(),
                None,
                dos.clone(),
            )
            .seed_rngs(seed.wrapping_add(s as u64));
            let mut shard = FakeShard::new(s, 2);
            node.on_start(&mut shard);
            nodes.push(node);
            shards.push(shard);
        }
        Net {
            nodes,
            shards,
            cross_log: Vec::new(),
            network,
            rng: StdRng::seed_from_u64(seed),
            stats,
        }
    }

    /// Runs both shards' loops until nothing moves: cross-shard batches delivered, end of
    /// batch work, `on_writable` for drained connections, `on_closed` for finished closes.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for from in 0..2 {
                let to = 1 - from;
                let items = self.shards[from].take_cross(to);
                if !items.is_empty() {
                    moved = true;
                    for m in &items {
                        self.cross_log.push((from, to, msg_kind(m)));
                    }
                    self.nodes[to].on_cross_shard(ShardId(from), items, &mut self.shards[to]);
                }
            }
            for s in 0..2 {
                if self.nodes[s].on_batch_end(&mut self.shards[s]) {
                    moved = true;
                }
                for c in self.shards[s].writable_due() {
                    moved = true;
                    self.nodes[s].on_writable(c, &mut self.shards[s]);
                }
                for c in self.shards[s].closes_due() {
                    moved = true;
                    self.nodes[s].on_closed(c, CloseReason::LocalClose, &mut self.shards[s]);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the two shards never settled");
    }

    /// Moves both fake clocks and runs a tick on each shard.
    pub fn tick(&mut self, d: Duration) {
        for s in 0..2 {
            self.shards[s].advance(d);
            let now = self.shards[s].now;
            self.nodes[s].on_tick(now, &mut self.shards[s]);
        }
        self.settle();
    }

    /// A peer connects to shard `shard` and the node accepts it.
    pub fn accept(&mut self, shard: usize, from: SocketAddr) -> ConnId {
        let conn = self.shards[shard].accept(from);
        self.nodes[shard].on_accept(conn, from, &mut self.shards[shard]);
        conn
    }

    /// Bytes from the peer of `conn` (the harness respects paused reads: see `Peer`).
    pub fn data(&mut self, shard: usize, conn: ConnId, bytes: &[u8]) {
        // The shard hands the node a receive buffer it may change.
        let mut buf = bytes.to_vec();
        self.nodes[shard].on_data(conn, &mut buf, &mut self.shards[shard]);
        self.settle();
    }

    /// The peer of `conn` went away.
    pub fn peer_closed(&mut self, shard: usize, conn: ConnId) {
        self.shards[shard].drop_conn(conn);
        self.nodes[shard].on_closed(conn, CloseReason::PeerClosed, &mut self.shards[shard]);
        self.settle();
    }

    pub fn is_open(&self, shard: usize, conn: ConnId) -> bool {
        self.shards[shard]
            .conns
            .get(&conn)
            .is_some_and(|c| !c.closing)
    }
}

/// A Tor channel at the other end of one of the node's connections.
pub struct Peer {
    pub shard: usize,
    pub conn: ConnId,
    pub chan: Channel,
    pub sink: Collect,
    /// Bytes for the node not yet delivered because it paused reading the connection.
    pub inbox: Vec<u8>,
    rng: StdRng,
}

impl Peer {
    /// The client side: connects to shard `shard` and runs the link handshake to the node
    /// (initiator, authenticating as `client_ident`).
    pub fn client(net: &mut Net, shard: usize, port: u16) -> Peer {
        Peer::client_from(net, shard, SocketAddr::new(LOCAL, port))
    }

    /// As `client`, connecting from `from`.
    pub fn client_from(net: &mut Net, shard: usize, from: SocketAddr) -> Peer {
        Peer::client_with(net, shard, from, client_ident().ctx.clone())
    }

    /// As `client_from`, with the link context `ctx` (`client_ident`'s identity).
    pub fn client_with(
        net: &mut Net,
        shard: usize,
        from: SocketAddr,
        ctx: Arc<fors::proto::channel::LinkContext>,
    ) -> Peer {
        let conn = net.accept(shard, from);
        let node = node_ident();
        let expected = ExpectedPeer {
            rsa: node.id.rsa_id(),
            ed: Some(node.id.ed_id()),
        };
        let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
        let chan =
            Channel::new_initiator(ctx, expected, LOCAL, net.shards[shard].wall, &mut rng).unwrap();
        let mut p = Peer {
            shard,
            conn,
            chan,
            sink: Collect::default(),
            inbox: Vec::new(),
            rng,
        };
        p.pump(net);
        assert!(
            p.sink.opened().is_some(),
            "link handshake: {:?}",
            p.sink.events
        );
        p
    }

    /// The target side of a connection the node opened: a responder for `target_ident`.
    pub fn target(net: &mut Net, shard: usize, conn: ConnId) -> Peer {
        Peer::target_with(net, shard, conn, target_ident().ctx.clone())
    }

    /// As `target`, with the link context `ctx` (`target_ident`'s identity).
    pub fn target_with(
        net: &mut Net,
        shard: usize,
        conn: ConnId,
        ctx: Arc<fors::proto::channel::LinkContext>,
    ) -> Peer {
        let chan = Channel::new_responder(ctx, LOCAL, net.shards[shard].wall).unwrap();
        let rng = StdRng::seed_from_u64(net.rng.next_u64());
        Peer {
            shard,
            conn,
            chan,
            sink: Collect::default(),
            inbox: Vec::new(),
            rng,
        }
    }

    /// Exchanges bytes with the node until both sides are quiet. Bytes toward a connection
    /// the node paused wait in `inbox`.
    pub fn pump(&mut self, net: &mut Net) {
        for _ in 0..10_000 {
            let mut moved = false;
            let from_node = net.shards[self.shard].take_output(self.conn);
            if !from_node.is_empty() {
                moved = true;
                let wall = net.shards[self.shard].wall;
                if !self.chan.is_closed() {
                    let _ = self
                        .chan
                        .handle_input(&from_node, wall, &mut self.rng, &mut self.sink);
                }
            }
            let to_node = self.chan.pending_output().to_vec();
            self.chan.consume_output(to_node.len());
            self.inbox.extend_from_slice(&to_node);
            let paused = net.shards[self.shard]
                .conns
                .get(&self.conn)
                .is_none_or(|c| c.read_paused);
            if !self.inbox.is_empty() && !paused {
                moved = true;
                let mut bytes = std::mem::take(&mut self.inbox);
                net.nodes[self.shard].on_data(self.conn, &mut bytes, &mut net.shards[self.shard]);
            }
            net.settle();
            if !moved {
                return;
            }
        }
        panic!("peer and node never settled");
    }

    /// Writes what the peer has toward the node (respecting paused reads) without reading
    /// what the node sent: a peer that stopped reading.
    pub fn push(&mut self, net: &mut Net) {
        let to_node = self.chan.pending_output().to_vec();
        self.chan.consume_output(to_node.len());
        self.inbox.extend_from_slice(&to_node);
        let paused = net.shards[self.shard]
            .conns
            .get(&self.conn)
            .is_none_or(|c| c.read_paused);
        if !self.inbox.is_empty() && !paused {
            let mut bytes = std::mem::take(&mut self.inbox);
            net.nodes[self.shard].on_data(self.conn, &mut bytes, &mut net.shards[self.shard]);
        }
        net.settle();
    }

    /// Sends one cell and exchanges bytes until quiet.
    pub fn send(&mut self, net: &mut Net, circ_id: CircId, cmd: ChanCmd, body: &CellBody) {
        self.chan.send_cell(circ_id, cmd, body).unwrap();
        self.pump(net);
    }

    /// Cells received so far (and forgets them).
    pub fn cells(&mut self) -> Vec<(CircId, ChanCmd, Vec<u8>)> {
        std::mem::take(&mut self.sink.cells)
    }
}

/// A circuit as its client sees it: production tor1 client layers.
pub struct ClientCirc {
    pub circ_id: CircId,
    pub layers: Tor1ClientCircuit,
    pub rng: StdRng,
    /// The first hop's KH (keys an ESTABLISH_INTRO's MAC).
    pub kh: [u8; 20],
}

impl ClientCirc {
    /// Builds the first hop at the node with CREATE2 (ntor).
    pub fn create(net: &mut Net, peer: &mut Peer, circ_id: u32) -> ClientCirc {
        let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
        let node = node_ident();
        let (st, skin) =
            NtorClient::start(&mut rng, &node.id.rsa_id(), node.onion.current().public());
        let mut body = [0u8; CELL_BODY_LEN];
        Create2 {
            htype: HandshakeType::NTOR,
            hdata: &skin,
        }
        .encode(&mut body)
        .unwrap();
        let circ_id = CircId(circ_id);
        peer.send(net, circ_id, ChanCmd::CREATE2, &body);
        let cells = peer.cells();
        assert_eq!(cells.len(), 1, "one CREATED2: {cells:?}");
        let (id, cmd, reply) = &cells[0];
        assert_eq!((*id, *cmd), (circ_id, ChanCmd::CREATED2));
        let keys = st
            .finish(Created2::parse(reply).unwrap().hdata)
            .expect("the node's CREATED2 completes our ntor handshake");
        let mut layers = Tor1ClientCircuit::new();
        layers.push_hop(Tor1ClientLayer::new(&keys));
        ClientCirc {
            circ_id,
            layers,
            rng,
            kh: keys.kh,
        }
    }

    /// A relay cell to hop `hop`, encoded and layered.
    pub fn cell(&mut self, hop: usize, cmd: RelayCmd, stream_id: u16, data: &[u8]) -> CellBody {
        let mut body = [0u8; CELL_BODY_LEN];
        v0::encode_with(&mut body, cmd, stream_id, &mut self.rng, |o| {
            o[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .unwrap();
        self.layers.originate(hop, &mut body).unwrap();
        body
    }

    /// Opens a relay cell that reached us: (hop, cmd, stream id, data).
    pub fn open(&mut self, body: &[u8]) -> (usize, RelayCmd, u16, Vec<u8>) {
        let mut b: CellBody = body.try_into().unwrap();
        let hop = self
            .layers
            .recognize(&mut b)
            .expect("a hop of ours recognizes the cell");
        let m = v0::parse(&b).unwrap();
        (hop, m.cmd, m.stream_id, m.data.to_vec())
    }

    /// Opens every RELAY cell of this circuit in `cells`.
    pub fn open_all(
        &mut self,
        cells: &[(CircId, ChanCmd, Vec<u8>)],
    ) -> Vec<(usize, RelayCmd, u16, Vec<u8>)> {
        let me = self.circ_id;
        cells
            .iter()
            .filter(|(id, cmd, _)| *id == me && *cmd == ChanCmd::RELAY)
            .map(|(_, _, b)| self.open(b))
            .collect()
    }
}

/// A BEGIN body for `addr:port` (tor-spec §"Opening streams").
pub fn begin_data(target: &str) -> Vec<u8> {
    let mut v = target.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

/// The fake shard's Connect ops (conn, addr) recorded since the last clear.
pub fn connects(shard: &FakeShard<RelayMsg>) -> Vec<(ConnId, SocketAddr)> {
    shard
        .ops
        .iter()
        .filter_map(|o| match o {
            fors::relay::node::fake::Op::Connect { conn, addr, .. } => Some((*conn, *addr)),
            _ => None,
        })
        .collect()
}

/// Whether `shard` is the owner shard of `ident` among two (`relay::cross::owner_shard`).
pub fn owner_of(ident: &Ident) -> usize {
    fors::relay::handler::cross::owner_shard(&ident.id.rsa_id(), 2)
}

/// The node's stream connection's peer address (for `on_connected`).
pub fn conn_peer(shard: &FakeShard<RelayMsg>, conn: ConnId) -> SocketAddr {
    shard.peer(conn).unwrap()
}

/// A circuit through the node that exits there: BEGIN, the fake shard's connect,
/// CONNECTED. Returns the exit connection.
pub fn open_stream(net: &mut Net, p: &mut Peer, c: &mut ClientCirc, stream_id: u16) -> ConnId {
    net.shards[p.shard].ops.clear();
    let begin = c.cell(0, RelayCmd::BEGIN, stream_id, &begin_data("127.0.0.1:8080"));
    p.send(net, c.circ_id, ChanCmd::RELAY, &begin);
    let cs = connects(&net.shards[p.shard]);
    assert_eq!(
        cs.len(),
        1,
        "one exit connect: {:?}",
        net.shards[p.shard].ops
    );
    assert_eq!(cs[0].1, "127.0.0.1:8080".parse().unwrap());
    let stream = cs[0].0;
    net.nodes[p.shard].on_connected(stream, cs[0].1, &mut net.shards[p.shard]);
    net.settle();
    p.pump(net);
    let got = c.open_all(&p.cells());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].1, got[0].2),
        (0, RelayCmd::CONNECTED, stream_id)
    );
    stream
}

/// Concatenates the DATA of `stream_id` from hop `hop`, checking nothing else came.
pub fn data_of(got: &[(usize, RelayCmd, u16, Vec<u8>)], hop: usize, stream_id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    for (h, cmd, sid, data) in got {
        assert_eq!(
            (*h, *cmd, *sid),
            (hop, RelayCmd::DATA, stream_id),
            "{got:?}"
        );
        v.extend_from_slice(data);
    }
    v
}

/// A circuit whose first hop is the node's shard `origin` and whose next hop, the target
/// relay, is owned by the other shard: the extend crosses shards.
pub struct CrossCircuit {
    pub p: Peer,
    pub c: ClientCirc,
    pub t: Peer,
    /// The circuit ID on the node → target channel.
    pub tcid: CircId,
    /// The target's relay crypto for the circuit.
    pub hop: Tor1RelayCrypto,
    pub origin: usize,
    pub owner: usize,
}

/// An EXTEND2 cell (ntor) on `c`'s first hop toward the target relay, the client's
/// handshake state for the EXTENDED2 that answers it, and the onion skin it carries.
pub fn extend2_to_target(
    c: &mut ClientCirc,
    rng: &mut StdRng,
) -> (NtorClient, [u8; NTOR_ONIONSKIN_LEN], CellBody) {
    let target = target_ident();
    let (st, skin) = NtorClient::start(rng, &target.id.rsa_id(), target.onion.current().public());
    let std::net::SocketAddr::V4(ta4) = target_addr() else {
        unreachable!()
    };
    let mut ext = [0u8; 498];
    let n = Extend2::encode(
        &[
            LinkSpec::Ipv4(ta4),
            LinkSpec::RsaId(target.id.rsa_id()),
            LinkSpec::Ed25519Id(target.id.ed_id()),
        ],
        &Create2 {
            htype: HandshakeType::NTOR,
            hdata: &skin,
        },
        &mut ext,
    )
    .unwrap();
    (st, skin, c.cell(0, RelayCmd::EXTEND2, 0, &ext[..n]))
}

pub fn cross_circuit(net: &mut Net, port: u16) -> CrossCircuit {
    let target = target_ident();
    let owner = owner_of(target);
    let origin = 1 - owner;
    let mut p = Peer::client(net, origin, port);
    let mut c = ClientCirc::create(net, &mut p, 0x8000_0010);

    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    let (st, skin, body) = extend2_to_target(&mut c, &mut rng);
    let ta = target_addr();
    net.cross_log.clear();
    for s in &mut net.shards {
        s.ops.clear();
    }
    p.send(net, c.circ_id, ChanCmd::RELAY_EARLY, &body);

    // The origin asks the owner shard, which opens the channel; the origin opens nothing.
    assert_eq!(net.cross_log, vec![(origin, owner, "ExtendRequest")]);
    assert!(connects(&net.shards[origin]).is_empty());
    let cs = connects(&net.shards[owner]);
    assert_eq!(cs.len(), 1, "{:?}", net.shards[owner].ops);
    assert_eq!(cs[0].1, ta);
    let tconn = cs[0].0;
    net.nodes[owner].on_connected(tconn, ta, &mut net.shards[owner]);
    net.settle();
    let mut t = Peer::target(net, owner, tconn);
    t.pump(net);
    assert!(t.sink.opened().is_some(), "{:?}", t.sink.events);

    // The CREATE2 the client made reaches the target unchanged.
    let cells = t.cells();
    assert_eq!(cells.len(), 1, "{cells:?}");
    let (tcid, cmd, create2) = cells[0].clone();
    assert_eq!(cmd, ChanCmd::CREATE2);
    let cb: CellBody = create2.as_slice().try_into().unwrap();
    let parsed = Create2::parse(&cb).unwrap();
    assert_eq!(parsed.hdata, &skin[..]);
    let (reply, keys) =
        server_handshake(&mut rng, &target.onion, &target.id.rsa_id(), parsed.hdata).unwrap();
    let mut created = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &reply }.encode(&mut created).unwrap();
    net.cross_log.clear();
    t.send(net, tcid, ChanCmd::CREATED2, &created);
    p.pump(net);
    assert_eq!(net.cross_log, vec![(owner, origin, "ExtendReply")]);

    let got = c.open_all(&p.cells());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (0, RelayCmd::EXTENDED2));
    let hk = st
        .finish(Extended2::parse(&got[0].3).unwrap().hdata)
        .expect("EXTENDED2 carries the target's reply");
    c.layers.push_hop(Tor1ClientLayer::new(&hk));
    CrossCircuit {
        p,
        c,
        t,
        tcid,
        hop: Tor1RelayCrypto::from_keys(&keys),
        origin,
        owner,
    }
}
