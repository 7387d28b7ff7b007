//! In-memory harness for the circuit core: a Tor client with the handshake client sides and
//! client-side tor1 crypto, relays built from `RelayCore`, and helpers to pick cells out of
//! the actions. No sockets.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes::cipher::{KeyIvInit, StreamCipher};
use fors::cell::chan::{
    Create2, CreateFast, Created2, CreatedFast, Destroy, DestroyReason, HandshakeType,
};
use fors::cell::relay::msg::{Begin, BeginFlags, BeginTarget, Extend2, LinkSpec, RelayMsg};
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{
    CircuitExtension, CreateFastClient, NtorClient, NtorKeyMap, NtorKeyPair, NtorV3Client,
};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer, Tor1RelayCrypto};
use fors::exit::policy::{parse_policy_list, ExitPolicy};
use fors::proto::circuit::{
    Action, CellBody, ChanId, ChanInfo, CircuitConfig, CoreIo, HopCrypto, NetworkView,
    PeerIdentity, RelayCore, RelayIdentity,
};
use fors::proto::stream::StreamHandle;
use sha1::{Digest, Sha1};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// One direction of tor1: AES-128-CTR from a zero IV and a running SHA-1 seeded with the
/// digest key (tor-spec §"Routing relay cells"). A plain reference implementation.
#[derive(Clone)]
pub struct Tor1Dir {
    cipher: Aes128Ctr,
    digest: Sha1,
}

impl Tor1Dir {
    pub fn new(key: &[u8; 16], seed: &[u8; 20]) -> Self {
        let mut digest = Sha1::new();
        digest.update(seed);
        Tor1Dir {
            cipher: Aes128Ctr::new(key.into(), &[0u8; 16].into()),
            digest,
        }
    }

    pub fn crypt(&mut self, body: &mut CellBody) {
        self.cipher.apply_keystream(body);
    }

    /// Sets the digest field of a cell we originate; returns the full digest (SENDME tag).
    pub fn set_digest(&mut self, body: &mut CellBody) -> [u8; 20] {
        body[5..9].fill(0);
        self.digest.update(&body[..]);
        let d: [u8; 20] = self.digest.clone().finalize().into();
        body[5..9].copy_from_slice(&d[..4]);
        d
    }

    /// On a decrypted cell: recognized == 0 and the digest matches → commit, return tag.
    pub fn check(&mut self, body: &mut CellBody) -> Option<[u8; 20]> {
        if body[1] != 0 || body[2] != 0 {
            return None;
        }
        let mut field = [0u8; 4];
        field.copy_from_slice(&body[5..9]);
        body[5..9].fill(0);
        let mut trial = self.digest.clone();
        trial.update(&body[..]);
        let d: [u8; 20] = trial.clone().finalize().into();
        body[5..9].copy_from_slice(&field);
        if d[..4] == field {
            self.digest = trial;
            Some(d)
        } else {
            None
        }
    }
}

/// Relay side of one hop.
pub struct RefRelayCrypto {
    fwd: Tor1Dir,
    back: Tor1Dir,
    tag: [u8; 20],
}

impl HopCrypto for RefRelayCrypto {
    fn from_keys(k: &Tor1KeyMaterial) -> Self {
        RefRelayCrypto {
            fwd: Tor1Dir::new(&k.kf, &k.df),
            back: Tor1Dir::new(&k.kb, &k.db),
            tag: [0; 20],
        }
    }
    fn recognize(&mut self, body: &mut CellBody) -> bool {
        self.fwd.crypt(body);
        match self.fwd.check(body) {
            Some(d) => {
                self.tag = d;
                true
            }
            None => false,
        }
    }
    fn sendme_tag(&self) -> &[u8; 20] {
        &self.tag
    }
    fn backward_relay(&mut self, body: &mut CellBody) {
        self.back.crypt(body);
    }
    fn originate(&mut self, body: &mut CellBody) -> [u8; 20] {
        let d = self.back.set_digest(body);
        self.back.crypt(body);
        self.tag = d;
        d
    }
}

/// The client's layers of a circuit: the production `Tor1ClientCircuit`, or the reference
/// implementation above (to cross-check the two against each other).
pub trait ClientLayers {
    fn push(&mut self, k: &Tor1KeyMaterial);
    /// Digest for hop `hop`, then that hop's and earlier hops' layers; returns the tag.
    fn originate(&mut self, hop: usize, body: &mut CellBody) -> [u8; 20];
    /// Strip layers until a hop recognizes the cell.
    fn recognize(&mut self, body: &mut CellBody) -> Option<usize>;
    /// SENDME tag of the last cell `hop` sent us.
    fn last_tag(&self, hop: usize) -> [u8; 20];
}

impl ClientLayers for Tor1ClientCircuit {
    fn push(&mut self, k: &Tor1KeyMaterial) {
        self.push_hop(Tor1ClientLayer::new(k));
    }
    fn originate(&mut self, hop: usize, body: &mut CellBody) -> [u8; 20] {
        Tor1ClientCircuit::originate(self, hop, body).expect("hop exists")
    }
    fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        Tor1ClientCircuit::recognize(self, body)
    }
    fn last_tag(&self, hop: usize) -> [u8; 20] {
        *self.hop(hop).expect("hop exists").sendme_tag()
    }
}

impl ClientLayers for ClientCrypto {
    fn push(&mut self, k: &Tor1KeyMaterial) {
        ClientCrypto::push(self, k)
    }
    fn originate(&mut self, hop: usize, body: &mut CellBody) -> [u8; 20] {
        ClientCrypto::originate(self, hop, body)
    }
    fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        ClientCrypto::recognize(self, body)
    }
    fn last_tag(&self, hop: usize) -> [u8; 20] {
        self.last_tag[hop]
    }
}

/// Reference client side of a multi-hop circuit.
#[derive(Default)]
pub struct ClientCrypto {
    hops: Vec<(Tor1Dir, Tor1Dir)>,
    /// SENDME tag of the last cell each hop sent us.
    pub last_tag: Vec<[u8; 20]>,
}

impl ClientCrypto {
    pub fn push(&mut self, k: &Tor1KeyMaterial) {
        self.hops
            .push((Tor1Dir::new(&k.kf, &k.df), Tor1Dir::new(&k.kb, &k.db)));
        self.last_tag.push([0; 20]);
    }
    pub fn originate(&mut self, hop: usize, body: &mut CellBody) -> [u8; 20] {
        let d = self.hops[hop].0.set_digest(body);
        for h in (0..=hop).rev() {
            self.hops[h].0.crypt(body);
        }
        d
    }
    pub fn recognize(&mut self, body: &mut CellBody) -> Option<usize> {
        for (i, (_, back)) in self.hops.iter_mut().enumerate() {
            back.crypt(body);
            if let Some(d) = back.check(body) {
                self.last_tag[i] = d;
                return Some(i);
            }
        }
        None
    }
}

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

/// A client's circuit through one or more relays.
pub struct Client {
    pub chan: ChanInfo,
    pub circ_id: CircId,
    pub crypto: Box<dyn ClientLayers>,
    pub rng: rand::rngs::ThreadRng,
}

pub enum Hs {
    Ntor,
    NtorV3 { cc: bool },
    Fast,
}

impl Client {
    pub fn new(chan: ChanInfo, circ_id: u32) -> Self {
        Client {
            chan,
            circ_id: CircId(circ_id),
            crypto: Box::new(Tor1ClientCircuit::new()),
            rng: rand::thread_rng(),
        }
    }

    /// A client using the reference tor1 implementation instead of the production one.
    pub fn with_reference_crypto(chan: ChanInfo, circ_id: u32) -> Self {
        Client {
            crypto: Box::new(ClientCrypto::default()),
            ..Client::new(chan, circ_id)
        }
    }

    /// Builds the first hop at `relay` with handshake `hs`; returns the reply extensions
    /// for ntor-v3.
    pub fn create<C: HopCrypto>(&mut self, relay: &mut Relay<C>, hs: Hs) -> Vec<CircuitExtension> {
        let mut body = [0u8; CELL_BODY_LEN];
        match hs {
            Hs::Fast => {
                let (st, x) = CreateFastClient::start(&mut self.rng);
                CreateFast { x: &x }.encode(&mut body);
                let acts = relay.cell(&self.chan, self.circ_id, ChanCmd::CREATE_FAST, body);
                let (_, id, cmd, reply) = one_cell(&acts);
                assert_eq!((id, cmd), (self.circ_id, ChanCmd::CREATED_FAST));
                let cf = CreatedFast::parse(&reply).unwrap();
                let mut r = [0u8; 40];
                r[..20].copy_from_slice(cf.y);
                r[20..].copy_from_slice(cf.kh);
                self.crypto.push(&st.finish(&r).unwrap());
                vec![]
            }
            Hs::Ntor => {
                let (st, skin) =
                    NtorClient::start(&mut self.rng, &relay.id.rsa, relay.keys.current().public());
                Create2 {
                    htype: HandshakeType::NTOR,
                    hdata: &skin,
                }
                .encode(&mut body)
                .unwrap();
                assert!(relay
                    .cell(&self.chan, self.circ_id, ChanCmd::CREATE2, body)
                    .is_empty());
                let acts = relay.onions();
                let (_, id, cmd, reply) = one_cell(&acts);
                assert_eq!((id, cmd), (self.circ_id, ChanCmd::CREATED2));
                self.crypto
                    .push(&st.finish(Created2::parse(&reply).unwrap().hdata).unwrap());
                vec![]
            }
            Hs::NtorV3 { cc } => {
                let exts = if cc {
                    vec![CircuitExtension::CcRequest]
                } else {
                    vec![]
                };
                let (st, skin) = NtorV3Client::start(
                    &mut self.rng,
                    &relay.id.ed,
                    relay.keys.current().public(),
                    &exts,
                )
                .unwrap();
                Create2 {
                    htype: HandshakeType::NTOR_V3,
                    hdata: &skin,
                }
                .encode(&mut body)
                .unwrap();
                assert!(relay
                    .cell(&self.chan, self.circ_id, ChanCmd::CREATE2, body)
                    .is_empty());
                let acts = relay.onions();
                let (_, id, cmd, reply) = one_cell(&acts);
                assert_eq!((id, cmd), (self.circ_id, ChanCmd::CREATED2));
                let (keys, reply_exts) = st.finish(Created2::parse(&reply).unwrap().hdata).unwrap();
                self.crypto.push(&keys);
                reply_exts
            }
        }
    }

    /// Encodes and encrypts a relay message to hop `hop`; returns the body and its tag.
    pub fn relay_cell(
        &mut self,
        hop: usize,
        msg: &RelayMsg<'_>,
        stream_id: u16,
    ) -> (CellBody, [u8; 20]) {
        let mut body = [0u8; CELL_BODY_LEN];
        v0::encode_with(&mut body, msg.cmd(), stream_id, &mut self.rng, |o| {
            msg.encode(o)
        })
        .unwrap();
        let tag = self.crypto.originate(hop, &mut body);
        (body, tag)
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
        let hop = self
            .crypto
            .recognize(&mut body)
            .expect("client recognizes the cell");
        let m = v0::parse(&body).unwrap();
        (hop, m.cmd, m.stream_id, m.data.to_vec())
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

pub fn begin_msg<'a>(target: BeginTarget<'a>, port: u16) -> RelayMsg<'a> {
    RelayMsg::Begin(Begin {
        target,
        port,
        flags: BeginFlags(0),
    })
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
        ..CircuitConfig::default()
    }
}
