//! The onion-service relay roles across shards: the messages one shard's core sends another
//! (through the node's bounded cross-shard queues, as [`super::Action::Hs`]) so that a
//! relay with several shards behaves as one C tor relay.
//!
//! A circuit lives on the shard of its previous-hop channel, so a service's intro circuit
//! and a client's INTRODUCE1, or a client's rendezvous circuit and the service's
//! RENDEZVOUS1, may be on different shards. Each auth key and each cookie has one *home*
//! shard ([`crate::proto::hs::home_shard`]) whose table is the only one that holds it, so
//! C tor's relay-wide rules (the newest intro circuit for a key wins; a waiting cookie is
//! refused to a second circuit) hold across shards. Entries name circuits as [`CircRef`].
//!
//! * ESTABLISH_INTRO is checked on the circuit's shard (it holds the KH), then
//!   [`HsMsg::IntroRegister`] → home → [`HsMsg::IntroRegistered`] → INTRO_ESTABLISHED (or
//!   the close) on the circuit's shard.
//! * INTRODUCE1: [`HsMsg::Introduce1`] → home (the INTRODUCE2 bucket) →
//!   [`HsMsg::Introduce2`] → the intro circuit's shard (INTRODUCE2, the same bytes) →
//!   [`HsMsg::IntroduceAck`] → the client's shard (INTRODUCE_ACK).
//! * ESTABLISH_RENDEZVOUS: [`HsMsg::RendRegister`] → home → [`HsMsg::RendRegistered`].
//! * RENDEZVOUS1: [`HsMsg::Rendezvous1`] → home (cookie taken) → [`HsMsg::Rendezvous2`] →
//!   the client's shard (RENDEZVOUS2, the client's side joined) → [`HsMsg::RendJoined`] →
//!   the service's shard (its side joined).
//! * Spliced cells to a partner on another shard go as [`HsMsg::Spliced`] and get the
//!   partner's backward layer there; closes as [`HsMsg::Close`].
//!
//! When home is the sending shard the message is carried out at once, without a queue.
//! Order per direction is the queue's FIFO order; a handle that went stale while a message
//! was in flight (its circuit closed) is answered as C tor answers a vanished circuit.
//!
//! Where the round trips differ from C tor's atomic steps:
//! * between RENDEZVOUS1 and [`HsMsg::RendJoined`] the service's circuit is `RendJoining`:
//!   its unrecognized cells, which C tor would splice at once, are held (at most
//!   [`REND_JOINING_HOLD_MAX`], in the cell pool) and spliced in order at the join; if it
//!   closes meanwhile, the client's side closes with its reason when the answer comes;
//! * a message with a body ([`HsMsg::has_body`]) refused by the node's bounded overflow
//!   comes back to its core (`RelayCore::hs_cross_refused`), which answers as C tor does
//!   when it cannot relay it.

use super::table::CircHandle;
use super::{CellBody, ShardIdx};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::v0;
use crate::proto::hs::cells::{AckStatus, AuthKey, DosExtension, RendCookie};

/// A circuit of this relay, on any shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircRef {
    pub shard: ShardIdx,
    pub circ: CircHandle,
}

/// Most cells a service's circuit may send between RENDEZVOUS1 and the join across shards
/// (`RendJoining`, one round trip between shards). C tor joins at once, so it splices such
/// a cell at once and bounds it only by the partner's cell queue
/// (`circ_max_cell_queue_size`, past which it closes with RESOURCELIMIT); a C tor service
/// sends nothing there (it waits for the client's BEGIN), so a few cells suffice. Past the
/// bound the circuit closes with RESOURCELIMIT, as C tor's queue limit does.
pub const REND_JOINING_HOLD_MAX: usize = 32;

/// An INTRODUCE1 body or a RENDEZVOUS1 HANDSHAKE_INFO, by value (no allocation per
/// message), with its length.
pub type HsBody = [u8; v0::MAX_DATA_LEN];

/// The outcome of a RENDEZVOUS1 as the client's shard reports it to the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinResult {
    /// RENDEZVOUS2 went out; the client's circuit is spliced to the service's.
    Joined(CircRef),
    /// RENDEZVOUS2 could not be sent (the client's circuit closed doing so): C tor leaves
    /// the service's circuit as it was.
    SendFailed,
    /// The cookie names no waiting circuit (unknown, or its circuit vanished): C tor closes
    /// the service's circuit (TORPROTOCOL).
    NoClient,
}

/// What one shard's core asks another's for the onion-service roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsMsg {
    /// Circuit shard → home: `circ` passed ESTABLISH_INTRO's checks for `key`.
    IntroRegister {
        circ: CircRef,
        key: AuthKey,
        dos: DosExtension,
    },
    /// Home → circuit shard: registered (send INTRO_ESTABLISHED) or the reason to close.
    IntroRegistered {
        circ: CircHandle,
        result: Result<(), DestroyReason>,
    },
    /// Circuit shard → home: `circ` closed.
    IntroUnregister { circ: CircRef, key: AuthKey },
    /// Client's shard → home: an INTRODUCE1 (checked there) for `key`.
    Introduce1 {
        client: CircRef,
        key: AuthKey,
        len: u16,
        body: HsBody,
    },
    /// Home → intro circuit's shard: send these bytes as INTRODUCE2 on `service`.
    Introduce2 {
        client: CircRef,
        service: CircHandle,
        len: u16,
        body: HsBody,
    },
    /// → client's shard: answer the INTRODUCE1 with this status.
    IntroduceAck {
        client: CircHandle,
        status: AckStatus,
    },
    /// Circuit shard → home: `circ` passed ESTABLISH_RENDEZVOUS's checks for `cookie`.
    RendRegister { circ: CircRef, cookie: RendCookie },
    /// Home → circuit shard: waiting (send RENDEZVOUS_ESTABLISHED) or the reason to close.
    RendRegistered {
        circ: CircHandle,
        result: Result<(), DestroyReason>,
    },
    /// Circuit shard → home: `circ` closed.
    RendUnregister { circ: CircRef, cookie: RendCookie },
    /// Service's shard → home: RENDEZVOUS1 with `cookie` and this HANDSHAKE_INFO.
    Rendezvous1 {
        service: CircRef,
        cookie: RendCookie,
        len: u16,
        body: HsBody,
    },
    /// Home → client's shard: send RENDEZVOUS2 with this body on `client` and join it.
    Rendezvous2 {
        client: CircHandle,
        service: CircRef,
        cookie: RendCookie,
        len: u16,
        body: HsBody,
    },
    /// Client's shard → service's shard: how the join went.
    RendJoined {
        service: CircHandle,
        result: JoinResult,
    },
    /// A relay cell of spliced circuit `from` (its forward layer removed) for its partner
    /// `to`, which adds its backward layer and sends it toward its client side.
    Spliced {
        from: CircHandle,
        to: CircHandle,
        body: CellBody,
    },
    /// Close `circ` with `reason` (a replaced intro or rendezvous circuit, or the other
    /// side of a splice: `splice_gone` says its partner is closed already).
    Close {
        circ: CircHandle,
        reason: DestroyReason,
        splice_gone: bool,
    },
}

impl HsMsg {
    /// Whether this message carries a relay cell (the cross-shard cell bound counts it).
    pub fn is_relay_cell(&self) -> bool {
        matches!(self, HsMsg::Spliced { .. })
    }

    /// Whether this message carries a cell-sized body (INTRODUCE1/2, RENDEZVOUS1/2): the
    /// cross-shard overflow bounds these too, and charges each held one to the cell pool.
    /// The others are small answers, at most one per such message or per circuit.
    pub fn has_body(&self) -> bool {
        matches!(
            self,
            HsMsg::Introduce1 { .. }
                | HsMsg::Introduce2 { .. }
                | HsMsg::Rendezvous1 { .. }
                | HsMsg::Rendezvous2 { .. }
        )
    }
}

/// One shard's counters of the onion-service waits and bounds across shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HsCrossCounters {
    /// Unrecognized cells a service's circuit sent between RENDEZVOUS1 and the join
    /// (`RendJoining`), held in the cell pool.
    pub joining_held: u64,
    /// Held cells passed through the splice when the join completed.
    pub joining_spliced: u64,
    /// Held cells dropped: the join failed or the circuit closed first.
    pub joining_dropped: u64,
    /// Joining circuits closed (RESOURCELIMIT) past the hold bound or with no pool buffer.
    pub joining_overflow: u64,
    /// INTRODUCE1/INTRODUCE2 messages refused at the cross-shard overflow bound (the
    /// client got INTRODUCE_ACK UNKNOWN_ID, C tor's answer when it cannot relay).
    pub overflow_introduce: u64,
    /// RENDEZVOUS1/RENDEZVOUS2 messages refused at the bound (circuits closed with
    /// RESOURCELIMIT).
    pub overflow_rendezvous: u64,
}

/// `data` (at most [`v0::MAX_DATA_LEN`] bytes, as any relay message body) by value.
pub(super) fn hs_body(data: &[u8]) -> (u16, HsBody) {
    let mut body = [0u8; v0::MAX_DATA_LEN];
    let n = data.len().min(body.len());
    body[..n].copy_from_slice(&data[..n]);
    (n as u16, body)
}
