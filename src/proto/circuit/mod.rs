//! The sans-IO circuit core of one shard (tor-spec §"Circuit management", §"Routing relay
//! cells", §"Tearing down circuits"; C tor `command.c`, `relay.c`, `circuitbuild_relay.c`).
//!
//! [`RelayCore`] owns the shard's circuits and exit streams. The shard feeds it cells, socket
//! events and DNS answers; it answers through an [`ActionSink`] with [`Action`]s: cells to
//! send, circuits to extend, sockets to open, bytes to write, lookups to make. It never does
//! I/O, never reads a clock (`now` is an argument) and takes its randomness as an argument.
//!
//! Layout:
//! * [`crypto`] — the [`HopCrypto`] seam to tor1 relay crypto;
//! * [`pool`] — the cell pool every queue lives in, drawn in chunks from the relay-wide
//!   [`MemBudget`] (`MaxMemInQueues`);
//! * `table` — circuit slots and the (channel, circuit ID) index;
//! * `core` — channel cells, handshakes, forwarding, extend, destroy;
//! * `exit` — BEGIN/RESOLVE/DATA/END/SENDME at the exit and the stream inputs;
//! * `cc` — congestion control (prop 324) on circuits that negotiated it: the congestion
//!   window, circuit SENDMEs every `sendme_inc` cells, stream XON/XOFF;
//! * [`metrics`] — counters.
//!
//! Batching: the shard stages the RELAY cells of one read with [`RelayCore::queue_relay_cell`]
//! and calls [`RelayCore::flush_relay_cells`] at its end (`relay_in`): the crypto runs over
//! the whole batch first (one AES keystream run per circuit's consecutive cells, and the
//! multi-buffer SHA-1 call across circuits that end here), each recognized cell keeping its
//! own SENDME tag, then the cells are handled in arrival order. Exit DATA of many circuits is
//! originated through the multi-circuit call too (`staged`).
//! [`RelayCore::handle_relay_batch`] takes a run of one circuit directly (cut where a
//! circuit SENDME could fall due, as its crypto reports only the run's last tag).
//!
//! Contract with the shard:
//! * CREATED2 answers to the CREATE2 of an `Action::Extend` are the shard's to route; it
//!   reports them (or the failure) with [`RelayCore::extend_result`]. A circuit that closed
//!   meanwhile (see `Action::CircuitClosed`) makes `extend_result` destroy the new hop.
//! * After [`RelayCore::channel_blocked`] the core emits no `SendCell` for that channel; it
//!   queues in its pool until [`RelayCore::channel_unblocked`].
//! * A next hop on another shard: that shard maps (channel, circuit ID) to this circuit and
//!   passes its cells here with [`RelayCore::handle_next_hop_cell`]; `SendCell` actions carry
//!   the shard index of their channel.
//! * `Action::StreamClose` means the core forgot the stream; events the shard reports itself
//!   (`stream_closed`, `stream_connect_failed`) end the stream without a `StreamClose`.
//! * Randomness: every cell we originate is padded with random bytes (prop 289), so the RNG
//!   passed in is on the exit's hot path; a fast CSPRNG (e.g. AES-CTR based, as C's
//!   `crypto_fast_rng`) is the right choice there.

mod cc;
mod conflux;
mod core;
pub mod crypto;
mod exit;
mod hs;
pub mod hs_cross;
pub mod metrics;
mod padding;
pub mod pool;
mod relay_in;
mod staged;
mod table;
mod violation;

use ::core::net::SocketAddr;

pub use self::core::{CoreIo, CoreRng, ExtendDone, RelayCore, MAX_RELAY_EARLY_CELLS_PER_CIRCUIT};
pub use conflux::{conflux_served, ConfluxMsg};
pub use crypto::{CellBody, CgoHop, HopCrypto, JobsDone, OriginateJobs, RelayCellFormat, RelayHop};
pub use hs::HS_TABLE_MAX;
pub use metrics::CircuitMetrics;
pub use pool::{CellPool, CellQueue, MemBudget, CELL_MEM_COST, CHUNK_CELLS};
pub use relay_in::MAX_RELAY_IN;
pub use table::CircHandle;
pub use violation::{ProtocolDrop, ProtocolDrops, ProtocolViolation};

use crate::cell::chan::DestroyReason;
use crate::cell::relay::msg::EndReason;
use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::exit::dns::HostRequest;
use crate::proto::stream::StreamHandle;

/// A channel, as the shard names it. Opaque to the core, except that the top byte is the
/// channel's shard: names stay unique across shards (circuits may name channels of other
/// shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChanId(pub u64);

impl ChanId {
    /// Shards a `ChanId` can tell apart (its top byte).
    pub const MAX_SHARDS: usize = 256;
    /// The bits left for the shard's own name of the channel.
    const LOCAL_MASK: u64 = (1 << 56) - 1;

    /// Channel `local` (below 2^56) of shard `shard`.
    pub fn on_shard(shard: u8, local: u64) -> ChanId {
        debug_assert_eq!(
            local & !Self::LOCAL_MASK,
            0,
            "a channel name overflowed 56 bits"
        );
        ChanId((u64::from(shard) << 56) | (local & Self::LOCAL_MASK))
    }

    /// The shard the channel lives on.
    pub fn shard(self) -> u8 {
        (self.0 >> 56) as u8
    }
}

/// Index of a shard (core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShardIdx(pub u16);

/// Who is at the other end of a channel, as its link handshake established (the channel
/// layer's [`PeerIdentity`]: `Client`, or `Relay { rsa, ed }`).
pub use crate::proto::channel::PeerIdentity;

/// What the core needs to know about the channel a cell arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChanInfo {
    pub id: ChanId,
    pub peer: PeerIdentity,
    /// We opened the TLS connection. The opener allocates circuit IDs with the high bit set
    /// (tor-spec §"Choosing circuit IDs"), so CREATEs from the peer must have it clear.
    pub we_initiated: bool,
}

/// The next hop of a circuit once its channel exists. The channel may live on another shard;
/// moving cells there is the caller's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub chan: ChanId,
    pub shard: ShardIdx,
    pub circ_id: CircId,
}

/// Where an EXTEND2 asks us to go (link specifiers, tor-spec §"EXTEND and EXTENDED").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendTarget {
    pub ipv4: Option<::core::net::SocketAddrV4>,
    pub ipv6: Option<::core::net::SocketAddrV6>,
    pub rsa: RsaIdentity,
    pub ed: Option<Ed25519Identity>,
}

impl ExtendTarget {
    /// The address to open a new channel to (C `circuit_choose_ip_ap_for_extend`): IPv6
    /// only if `can_ipv6` (we have an advertised IPv6 ORPort); given both, IPv6 one time in
    /// two (C `IPV6_CONNECTION_ONE_IN_N`). `None`: an IPv6-only extend we cannot make.
    pub fn choose_addr(&self, can_ipv6: bool, rng: &mut impl rand::Rng) -> Option<SocketAddr> {
        let v4 = self.ipv4.map(SocketAddr::V4);
        let v6 = self.ipv6.filter(|_| can_ipv6).map(SocketAddr::V6);
        match (v4, v6) {
            (Some(a), Some(b)) => Some(if rng.gen_ratio(1, 2) { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod extend_target_tests {
    use super::*;
    use rand::SeedableRng;

    fn target(v4: bool, v6: bool) -> ExtendTarget {
        ExtendTarget {
            ipv4: v4.then(|| "127.0.0.1:9001".parse().unwrap()),
            ipv6: v6.then(|| "[::1]:9002".parse().unwrap()),
            rsa: RsaIdentity([1; 20]),
            ed: None,
        }
    }

    #[test]
    fn ipv6_only_with_an_ipv6_orport_and_then_half_the_time() {
        let seed = 0x1f6e_7e4d;
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v4: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let v6: SocketAddr = "[::1]:9002".parse().unwrap();
        // Without an IPv6 ORPort: IPv4 only; an IPv6-only extend has no address.
        assert_eq!(target(true, true).choose_addr(false, &mut rng), Some(v4));
        assert_eq!(target(false, true).choose_addr(false, &mut rng), None);
        assert_eq!(target(true, false).choose_addr(true, &mut rng), Some(v4));
        assert_eq!(target(false, true).choose_addr(true, &mut rng), Some(v6));
        // With both: each family about half the time (1000 draws; 400..600 is > 6 sigma).
        let n6 = (0..1000)
            .filter(|_| target(true, true).choose_addr(true, &mut rng) == Some(v6))
            .count();
        assert!((400..=600).contains(&n6), "{n6} of 1000 over IPv6");
    }
}

/// Up to one relay cell of stream data, inline.
#[derive(Clone, Copy)]
pub struct StreamBytes {
    len: u16,
    buf: [u8; crate::cell::relay::v0::MAX_DATA_LEN],
}

impl StreamBytes {
    pub(crate) fn new(data: &[u8]) -> Self {
        let mut buf = [0u8; crate::cell::relay::v0::MAX_DATA_LEN];
        let len = data.len().min(buf.len());
        crate::util::copies::note(crate::util::copies::CopySite::StreamBytes, len);
        buf[..len].copy_from_slice(&data[..len]);
        StreamBytes {
            len: len as u16,
            buf,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl ::core::fmt::Debug for StreamBytes {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        write!(f, "StreamBytes({} bytes)", self.len)
    }
}

/// Something the shard must do. Cell bodies are carried inline so emitting an action never
/// allocates; the sink decides where they go.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send a cell on a channel (on `shard`, which may be another shard).
    SendCell {
        chan: ChanId,
        shard: ShardIdx,
        circ_id: CircId,
        cmd: ChanCmd,
        body: CellBody,
    },
    /// Open or reuse a channel to `target`, send CREATE2 with `create2` as body, and report
    /// the CREATED2 body (or failure) with [`RelayCore::extend_result`].
    Extend {
        circ: CircHandle,
        target: ExtendTarget,
        create2: CellBody,
    },
    /// Open a TCP connection for an exit stream; report with `stream_connected` /
    /// `stream_connect_failed`.
    Connect {
        stream: StreamHandle,
        addr: SocketAddr,
    },
    /// Write bytes to the stream's socket.
    StreamWrite {
        stream: StreamHandle,
        data: StreamBytes,
    },
    /// Close the stream's socket; the handle is dead.
    StreamClose {
        stream: StreamHandle,
    },
    /// Stop / resume reading the stream's socket (package windows, blocked channel).
    PauseStreamRead {
        stream: StreamHandle,
    },
    ResumeStreamRead {
        stream: StreamHandle,
    },
    /// Never emitted by the core: the shard's node queues it for a stream's next backlog
    /// turn (`relay::node::exit`), to tell it apart from the core's `ResumeStreamRead`.
    StreamTurn {
        stream: StreamHandle,
    },
    /// Look up `request` (`HostRequest::Forward` or `HostRequest::Reverse`, already
    /// validated with `exit::dns::classify_host`); answer with `dns_result`. `want_ipv6`:
    /// also ask for AAAA (IPv6 exit and the client accepts IPv6).
    Resolve {
        stream: StreamHandle,
        request: HostRequest,
        want_ipv6: bool,
    },
    /// A circuit closed (for the shard's bookkeeping, e.g. a pending extend to abandon).
    CircuitClosed {
        circ: CircHandle,
        reason: DestroyReason,
    },
    /// Give `msg` to shard `to`'s core ([`RelayCore::handle_hs_msg`]): the onion-service
    /// roles across shards (`hs_cross.rs`). Only a relay with several shards emits it.
    Hs {
        to: ShardIdx,
        msg: hs_cross::HsMsg,
    },
    /// Give `msg` to shard `to`'s core ([`RelayCore::handle_cfx_msg`]): conflux legs and
    /// sets across shards (`conflux.rs`); if the queue cannot take it, hand it back to
    /// [`RelayCore::cfx_cross_refused`]. Only a relay with several shards emits it.
    Cfx {
        to: ShardIdx,
        msg: ConfluxMsg,
    },
}

/// Where the core puts its actions.
pub trait ActionSink {
    fn push(&mut self, action: Action);

    /// Writes a cell straight into the queue of channel `chan` (on `shard`), if the sink
    /// can do so without reordering anything: that saves copying the body into an
    /// [`Action::SendCell`] and out again (the copy map, `docs/architecture.md`). False:
    /// nothing was written; the caller pushes the action instead.
    fn send_cell_direct(
        &mut self,
        chan: ChanId,
        shard: ShardIdx,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &CellBody,
    ) -> bool {
        let _ = (chan, shard, circ_id, cmd, body);
        false
    }

    /// Writes a DATA cell's bytes straight to the exit stream's socket, if the sink can do
    /// so exactly as running [`Action::StreamWrite`] later would have (all of them taken at
    /// once, nothing overtaken): that saves copying them into the action and out again.
    /// False: nothing was written; the caller pushes the action instead.
    fn stream_write_direct(&mut self, stream: StreamHandle, data: &[u8]) -> bool {
        let _ = (stream, data);
        false
    }
}

impl ActionSink for Vec<Action> {
    fn push(&mut self, action: Action) {
        Vec::push(self, action)
    }
}

/// Facts the core asks of the shard's view of the network (consensus and descriptors).
pub trait NetworkView {
    /// Whether `rsa` is a relay we know of (C `connection_or_digest_is_known_relay`); used
    /// to refuse exiting for unknown previous hops when `refuse_unknown_exits` is on.
    fn is_known_relay(&self, rsa: &RsaIdentity) -> bool;
    /// Whether `addr` is a known relay's ORPort or DirPort (C `nodelist_reentry_contains`):
    /// exits refuse to connect back into the network.
    fn is_reentry(&self, addr: SocketAddr) -> bool;
    /// Whether accounting hibernation refuses new streams (C `we_are_hibernating` in
    /// `connection_exit_begin_conn`).
    fn hibernating(&self) -> bool {
        false
    }
}

/// A view that knows nothing: every relay unknown, no re-entry addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNetworkView;

impl NetworkView for NoNetworkView {
    fn is_known_relay(&self, _: &RsaIdentity) -> bool {
        false
    }
    fn is_reentry(&self, _: SocketAddr) -> bool {
        false
    }
}

/// Our relay identity, as handshakes and EXTEND2 checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayIdentity {
    pub rsa: RsaIdentity,
    pub ed: Ed25519Identity,
}

/// Bounds and switches of one shard's circuit core.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    pub shard: ShardIdx,
    /// Circuits (including those waiting for their handshake).
    pub max_circuits: usize,
    /// Exit streams (including pending lookups).
    pub max_streams: usize,
    /// Onionskins waiting for the handshake budget; more → DESTROY RESOURCELIMIT.
    pub onion_queue_len: usize,
    /// Handshakes per [`RelayCore::process_onion_queue`] call (the shard makes one per
    /// I/O batch while onionskins wait, so this bounds handshake work between batches).
    pub onions_per_run: usize,
    /// Onionskins older than this are dropped (C `OnionQueueMaxDelay`-like bound).
    pub onion_max_delay: std::time::Duration,
    /// The relay-wide memory cap for queued cells (`MaxMemInQueues`), shared by every
    /// shard's core (clones of this config share it). `None`: a budget of `pool_cells`
    /// buffers for this core alone (tests, tools).
    pub mem_budget: Option<std::sync::Arc<MemBudget>>,
    /// Cell buffers of the private budget when `mem_budget` is `None`.
    pub pool_cells: usize,
    /// Cells one circuit may queue in one direction before it is closed (C
    /// `max_circuit_cell_queue_size`).
    pub max_queue_per_circuit: usize,
    /// Optimistic DATA cells held per stream before CONNECTED.
    pub max_optimistic_cells: usize,
    /// Local switch for congestion control (prop 324). CC is negotiated when this is on,
    /// the consensus enables it (`cc.enabled()`, i.e. `cc_alg` ≠ 0) and the client sends
    /// CC_REQUEST in ntor-v3; otherwise circuits use fixed SENDME windows.
    pub cc_enabled: bool,
    /// Congestion-control consensus parameters (`cc_sendme_inc` is echoed in CC_RESPONSE);
    /// C's defaults until a consensus is known. Update with `RelayCore::set_cc_params`.
    pub cc: crate::proto::flow::CcParams,
    /// `ExtendAllowPrivateAddresses`: allow EXTEND2 to private addresses (test networks).
    pub extend_allow_private: bool,
    /// Consensus `AllowNonearlyExtend`.
    pub allow_nonearly_extend: bool,
    /// `RefuseUnknownExits`: refuse BEGIN unless the previous hop is a known relay.
    pub refuse_unknown_exits: bool,
    /// Consensus `allow-network-reentry`.
    pub allow_network_reentry: bool,
    /// `ServerDNSAllowNonRFC953Hostnames`: resolve names outside `[A-Za-z0-9-._]`.
    pub allow_non_rfc953_hostnames: bool,
    /// The directory server's internal loopback listener: BEGIN_DIR streams connect there
    /// (docs/architecture.md "Directory cache: serving"). `None`: not a directory cache,
    /// BEGIN_DIR gets END NOTDIRECTORY.
    pub dir_server: Option<std::net::SocketAddr>,
    /// Its listener for BEGIN_DIR streams on circuits whose previous hop is a relay: C tor's
    /// `connection_dir_is_anonymous`, which onion-service descriptor requests need.
    pub dir_server_anonymous: Option<std::net::SocketAddr>,
    /// The key of the home shards (conflux's `proto::conflux::home_shard` for a set's nonce,
    /// `proto::hs::home_shard` for an introduction auth key or a rendezvous cookie): every
    /// shard's clone of this config must carry the same one. The relay draws it at start-up
    /// (`relay::shardcfg::circuit_config`); [`CircuitConfig::for_tests`] carries
    /// `HomeKey::for_tests(0)`, which is not secret.
    pub home_key: crate::proto::conflux::HomeKey,
}

/// The circuit queue's default length before the profile sizes it
/// (`relay::shardcfg::onion_queue_len` never goes below it).
pub const DEFAULT_ONION_QUEUE_LEN: usize = 256;

impl CircuitConfig {
    /// The default bounds with the home key `home_key`. There is no `Default`: a default
    /// would have to carry a key anyone can read, and a relay built with it would let
    /// clients aim conflux LINKs and onion-service keys at one shard (review findings L8,
    /// L2). The relay passes the key it draws at start-up
    /// (`relay::shardcfg::circuit_config`).
    pub fn new(home_key: crate::proto::conflux::HomeKey) -> Self {
        CircuitConfig {
            shard: ShardIdx(0),
            max_circuits: 8192,
            max_streams: 8192,
            onion_queue_len: DEFAULT_ONION_QUEUE_LEN,
            onions_per_run: 16,
            onion_max_delay: std::time::Duration::from_millis(1750),
            mem_budget: None,
            pool_cells: 32 * 1024,
            max_queue_per_circuit: 2500,
            max_optimistic_cells: 32,
            cc_enabled: true,
            cc: crate::proto::flow::CcParams::default(),
            extend_allow_private: false,
            allow_nonearly_extend: false,
            refuse_unknown_exits: true,
            allow_network_reentry: false,
            allow_non_rfc953_hostnames: false,
            dir_server: None,
            dir_server_anonymous: None,
            home_key,
        }
    }

    /// The default bounds with the fixed, public key `HomeKey::for_tests(0)`: for tests,
    /// benches and fuzz targets, which need the same homes on every run. Never for a relay
    /// (`relay::shardcfg::circuit_config` draws its key; its test checks it is not this).
    pub fn for_tests() -> Self {
        Self::new(crate::proto::conflux::HomeKey::for_tests(0))
    }
}

/// Why a stream or circuit input was ignored (stale handle etc.). Not a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("no such circuit (closed or never existed)")]
    NoSuchCircuit,
    #[error("no such stream (closed or never existed)")]
    NoSuchStream,
    #[error("the stream is not in a state that accepts this event")]
    WrongStreamState,
}

/// A connect failure reason, re-exported for callers.
pub use crate::proto::stream::ConnectError;

/// Builds a DESTROY body.
pub(crate) fn destroy_body(reason: DestroyReason) -> CellBody {
    let mut b = [0u8; CELL_BODY_LEN];
    crate::cell::chan::Destroy { reason }.encode(&mut b);
    b
}

/// END reason re-export for signatures.
pub type StreamEndReason = EndReason;
