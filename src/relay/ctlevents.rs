//! OR-connection facts from the shards to the ControlPort thread (control-spec §4.1.3
//! ORCONN, `GETINFO orconn-status`).
//!
//! The shards report a channel's life — accepted, launched, open, gone — as small
//! fixed-size [`OrConnEvent`]s into one bounded queue that the ControlPort thread drains at
//! each poll (the same shape as the log tap in [`super::log`]). This happens once per
//! connection state change, never per cell, and only while a ControlPort runs: without one
//! the shards read one atomic flag and do nothing. The flag is on for as long as the
//! ControlPort runs (not only while a controller subscribes) because `GETINFO
//! orconn-status` must list every connection, including those opened before the
//! controller came. A full queue drops the event and counts it
//! (`fors_controlport_orconn_lost_total{what="event"}`).
//!
//! Because a dropped CLOSED would leave a dead entry in `orconn-status` for good, and
//! connections opened before the ControlPort started had no NEW or LAUNCHED, the table
//! resynchronises from the shards' own connection lists, as C tor's `orconn-status` reads
//! its connection array: the ControlPort asks for a round ([`request_resync`]); each shard,
//! on its periodic tick (never per cell), lists every live channel of its own
//! ([`listed`], in chunks that fit the queue) and then ends the round ([`listed_end`]).
//! What a shard did not list in a round it completed is gone.
//!
//! No client address leaves a shard while `SafeLogging` scrubs it: NEW and listed facts
//! for a peer without a relay identity carry no address then (the ControlPort would only
//! print `[scrubbed]`), so the ControlPort never holds one it does not show.
//!
//! What is reported follows C tor 0.4.9 (`connection_or_event_status` callers): NEW when an
//! ORPort connection is accepted, LAUNCHED when we start an outbound one, CONNECTED when
//! the link handshake completes, FAILED when an outbound one dies before that, CLOSED when
//! an open one closes. An inbound connection that dies before its handshake completes gets
//! no event in C tor; it is reported here as [`OrConnStatus::Gone`] only so that the
//! ControlPort forgets it.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::crypto::ids::RsaIdentity;
use crate::proto::channel::PeerIdentity;
use crate::shard::{CloseReason, ConnId, ShardId};

/// Events held between two polls of the ControlPort thread (50 ms).
pub const QUEUE_CAPACITY: usize = 8192;

static ENABLED: AtomicBool = AtomicBool::new(false);
static QUEUE: Mutex<VecDeque<OrConnEvent>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The resync round the ControlPort asked for last (0: none yet).
static RESYNC_ROUND: AtomicU32 = AtomicU32::new(0);
/// Outbound OR connections started, IPv4 / IPv6 (C `rep_hist_note_conn_opened` for a
/// connection not from a listener), counted whether or not a ControlPort runs.
static INITIATED_V4: AtomicU64 = AtomicU64::new(0);
static INITIATED_V6: AtomicU64 = AtomicU64::new(0);

/// An OR connection's new state (C `or_conn_status_event_t`, plus `Gone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrConnStatus {
    New,
    Launched,
    Connected,
    Failed,
    Closed,
    /// An inbound connection closed before its handshake completed: no event (as C tor),
    /// only forgotten.
    Gone,
    /// A live connection in a shard's resync listing (no event): open, or launched by us.
    Listed {
        open: bool,
        launched: bool,
    },
    /// A shard listed every live connection it has for round `round` (no event).
    ListedEnd,
}

impl OrConnStatus {
    /// The control-spec keyword, `None` for [`OrConnStatus::Gone`].
    pub fn keyword(self) -> Option<&'static str> {
        Some(match self {
            OrConnStatus::New => "NEW",
            OrConnStatus::Launched => "LAUNCHED",
            OrConnStatus::Connected => "CONNECTED",
            OrConnStatus::Failed => "FAILED",
            OrConnStatus::Closed => "CLOSED",
            OrConnStatus::Gone | OrConnStatus::Listed { .. } | OrConnStatus::ListedEnd => {
                return None
            }
        })
    }
}

/// Why an OR connection ended (control-spec §4.1.3 `ORConnReason`, C
/// `orconn_end_reason_to_control_string`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrConnReason {
    Done,
    ConnectRefused,
    Identity,
    ConnectReset,
    Timeout,
    NoRoute,
    IoError,
    ResourceLimit,
    Misc,
}

impl OrConnReason {
    pub fn keyword(self) -> &'static str {
        match self {
            OrConnReason::Done => "DONE",
            OrConnReason::ConnectRefused => "CONNECTREFUSED",
            OrConnReason::Identity => "IDENTITY",
            OrConnReason::ConnectReset => "CONNECTRESET",
            OrConnReason::Timeout => "TIMEOUT",
            OrConnReason::NoRoute => "NOROUTE",
            OrConnReason::IoError => "IOERROR",
            OrConnReason::ResourceLimit => "RESOURCELIMIT",
            OrConnReason::Misc => "MISC",
        }
    }

    /// A failed connect's errno (C `errno_to_orconn_end_reason`).
    pub fn from_connect_errno(e: i32) -> OrConnReason {
        match e {
            libc::EPIPE => OrConnReason::Done,
            libc::ENOTCONN | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTUNREACH => {
                OrConnReason::NoRoute
            }
            libc::ECONNREFUSED => OrConnReason::ConnectRefused,
            libc::ECONNRESET => OrConnReason::ConnectReset,
            libc::ETIMEDOUT => OrConnReason::Timeout,
            libc::ENOBUFS
            | libc::ENOMEM
            | libc::ENFILE
            | libc::EMFILE
            | libc::EACCES
            | libc::EBADF
            | libc::EFAULT
            | libc::EINVAL => OrConnReason::ResourceLimit,
            _ => OrConnReason::Misc,
        }
    }

    /// How a connection past its TCP connect ended, as C tor's
    /// `tls_error_to_orconn_end_reason` classifies the TLS layer's last error: a clean or
    /// local close is DONE.
    pub fn from_close(r: CloseReason) -> OrConnReason {
        match r {
            CloseReason::Reset => OrConnReason::ConnectReset,
            CloseReason::Error(_) => OrConnReason::IoError,
            CloseReason::ConnectFailed(e) => OrConnReason::from_connect_errno(e),
            CloseReason::ConnectTimeout => OrConnReason::Timeout,
            CloseReason::PeerClosed
            | CloseReason::LocalClose
            | CloseReason::Shutdown
            | CloseReason::Evicted => OrConnReason::Done,
        }
    }
}

/// One fact about one OR connection: fixed size, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrConnEvent {
    pub shard: ShardId,
    pub conn: ConnId,
    pub status: OrConnStatus,
    pub reason: Option<OrConnReason>,
    /// The relay identity, when proven (inbound) or expected (outbound).
    pub peer: Option<RsaIdentity>,
    /// The peer's address: on LAUNCHED, and on NEW (and listings of a peer without a
    /// relay identity) only while `SafeLogging` shows client addresses.
    pub addr: Option<SocketAddr>,
    /// Circuits waiting for this connection (C `NCIRCS`, shown on FAILED/CLOSED when > 0);
    /// on [`OrConnStatus::ListedEnd`], how many connections the shard listed.
    pub ncircs: u32,
    /// The resync round of a [`OrConnStatus::Listed`] or [`OrConnStatus::ListedEnd`].
    pub round: u32,
}

/// A channel peer's proven relay identity (`None` for a client).
pub fn relay_of(peer: PeerIdentity) -> Option<RsaIdentity> {
    match peer {
        PeerIdentity::Relay { rsa, .. } => Some(rsa),
        PeerIdentity::Client => None,
    }
}

/// Whether the shards report (a ControlPort runs).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts or stops collecting. Stopping drops what is queued.
pub fn set_enabled(on: bool) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if on {
        // Room for a full queue now, so that a push never allocates.
        let room = QUEUE_CAPACITY.saturating_sub(q.len());
        q.reserve(room);
    } else {
        *q = VecDeque::new();
    }
    ENABLED.store(on, Ordering::Relaxed);
}

fn push(ev: OrConnEvent) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if !enabled() {
        return;
    }
    if q.len() >= QUEUE_CAPACITY {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    q.push_back(ev);
}

/// Moves every queued event to `out`.
pub fn drain(out: &mut Vec<OrConnEvent>) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    out.extend(q.drain(..));
}

/// Events dropped because the queue was full, since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn event(shard: ShardId, conn: ConnId, status: OrConnStatus) -> OrConnEvent {
    OrConnEvent {
        shard,
        conn,
        status,
        reason: None,
        peer: None,
        addr: None,
        ncircs: 0,
        round: 0,
    }
}

/// Whether `SafeLogging` scrubs client addresses now (the logger's own decision, read
/// without allocating).
pub fn client_addresses_scrubbed() -> bool {
    struct Probe(bool);
    impl fmt::Write for Probe {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 |= s == crate::relay::log::SCRUBBED;
            Ok(())
        }
    }
    let mut p = Probe(false);
    let _ = write!(p, "{}", crate::relay::log::client_addr('-'));
    p.0
}

/// A client's address, only when it would be shown.
fn shown(peer: SocketAddr) -> Option<SocketAddr> {
    (!client_addresses_scrubbed()).then_some(peer)
}

/// An ORPort connection was accepted (C `connection_init_accepted_conn`: NEW). Its
/// peer may be a client: the address travels only when `SafeLogging 0` shows it.
pub fn accepted(shard: ShardId, conn: ConnId, peer: SocketAddr) {
    if enabled() {
        push(OrConnEvent {
            addr: shown(peer),
            ..event(shard, conn, OrConnStatus::New)
        });
    }
}

/// We started connecting to relay `rsa` at `addr` (C `connection_or_connect`: LAUNCHED).
/// Also counted for C tor's `tor_relay_connections_total{direction="initiated"}`.
pub fn launched(shard: ShardId, conn: ConnId, rsa: RsaIdentity, addr: SocketAddr) {
    count_initiated(addr);
    if enabled() {
        push(OrConnEvent {
            peer: Some(rsa),
            addr: Some(addr),
            ..event(shard, conn, OrConnStatus::Launched)
        });
    }
}

/// The link handshake completed; `relay` is the peer's proven identity, `None` for a
/// client (C `connection_or_set_state_open`: CONNECTED).
pub fn opened(shard: ShardId, conn: ConnId, relay: Option<RsaIdentity>) {
    if enabled() {
        push(OrConnEvent {
            peer: relay,
            ..event(shard, conn, OrConnStatus::Connected)
        });
    }
}

/// A channel's connection closed (C `connection_or_about_to_close` and
/// `connection_or_connect_failed`). `pending` is the number of circuits that waited for
/// it; C tor counts them only while the channel still exists, i.e. for a failed TCP
/// connect.
pub fn gone(
    shard: ShardId,
    conn: ConnId,
    was_open: bool,
    we_initiated: bool,
    relay: Option<RsaIdentity>,
    pending: usize,
    why: CloseReason,
) {
    if !enabled() {
        return;
    }
    let connect_failed = matches!(
        why,
        CloseReason::ConnectFailed(_) | CloseReason::ConnectTimeout
    );
    let (status, reason) = if was_open {
        // A client's connection has no identity: C reports DONE whatever the TLS error.
        let reason = if relay.is_some() {
            OrConnReason::from_close(why)
        } else {
            OrConnReason::Done
        };
        (OrConnStatus::Closed, Some(reason))
    } else if we_initiated {
        (OrConnStatus::Failed, Some(OrConnReason::from_close(why)))
    } else {
        (OrConnStatus::Gone, None)
    };
    push(OrConnEvent {
        reason,
        peer: relay,
        ncircs: if connect_failed {
            u32::try_from(pending).unwrap_or(u32::MAX)
        } else {
            0
        },
        ..event(shard, conn, status)
    });
}

/// Counts an outbound OR connection started to `addr`.
pub fn count_initiated(addr: SocketAddr) {
    let n = if addr.is_ipv6() {
        &INITIATED_V6
    } else {
        &INITIATED_V4
    };
    n.fetch_add(1, Ordering::Relaxed);
}

/// Outbound OR connections started since start, `(ipv4, ipv6)`.
pub fn initiated() -> (u64, u64) {
    (
        INITIATED_V4.load(Ordering::Relaxed),
        INITIATED_V6.load(Ordering::Relaxed),
    )
}

/// Asks every shard to list its live connections (ControlPort thread): the new round.
pub fn request_resync() -> u32 {
    let mut r = RESYNC_ROUND.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if r == 0 {
        // 0 means "none asked": skip it on wrap.
        r = RESYNC_ROUND.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    }
    r
}

/// The round the shards should list for (0: none asked). A shard that has not finished
/// this round lists (again) on its next tick, from where its last chunk stopped.
#[inline]
pub fn resync_round() -> u32 {
    RESYNC_ROUND.load(Ordering::Relaxed)
}

/// Whether the queue has room for `n` more facts (a shard sizes its listing chunk by it).
pub fn room() -> usize {
    let q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    QUEUE_CAPACITY.saturating_sub(q.len())
}

fn try_push(ev: OrConnEvent) -> bool {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if !enabled() || q.len() >= QUEUE_CAPACITY {
        // Not counted as dropped: the shard sees it and lists it again next tick.
        return false;
    }
    q.push_back(ev);
    true
}

/// One live channel of `shard` in resync round `round`: `open` once its link handshake
/// completed, `launched` when we started it, `relay` its (proven or expected) identity,
/// `peer` its address if the shard knows it (only used for a peer without a relay
/// identity, and only while SafeLogging shows client addresses). Closing channels are
/// listed too: their CLOSED is still to come. False when the queue is full: the shard
/// stops this chunk and resumes from this connection on a later tick.
#[allow(clippy::too_many_arguments)]
pub fn listed(
    shard: ShardId,
    round: u32,
    conn: ConnId,
    open: bool,
    launched: bool,
    relay: Option<RsaIdentity>,
    peer: Option<SocketAddr>,
) -> bool {
    try_push(OrConnEvent {
        peer: relay,
        addr: if relay.is_some() {
            None
        } else {
            peer.and_then(shown)
        },
        round,
        ..event(shard, conn, OrConnStatus::Listed { open, launched })
    })
}

/// `shard` listed all `count` of its live channels for `round` (after its last
/// [`listed`]). False when the queue is full: the shard ends the round on a later tick.
pub fn listed_end(shard: ShardId, round: u32, count: u32) -> bool {
    try_push(OrConnEvent {
        ncircs: count,
        round,
        ..event(shard, ConnId::from_parts(0, 0), OrConnStatus::ListedEnd)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_c_tor() {
        assert_eq!(
            OrConnReason::from_connect_errno(libc::ECONNREFUSED).keyword(),
            "CONNECTREFUSED"
        );
        assert_eq!(
            OrConnReason::from_connect_errno(libc::EHOSTUNREACH),
            OrConnReason::NoRoute
        );
        assert_eq!(
            OrConnReason::from_connect_errno(libc::EMFILE),
            OrConnReason::ResourceLimit
        );
        assert_eq!(
            OrConnReason::from_connect_errno(libc::EDOM),
            OrConnReason::Misc
        );
        assert_eq!(
            OrConnReason::from_close(CloseReason::PeerClosed),
            OrConnReason::Done
        );
        assert_eq!(
            OrConnReason::from_close(CloseReason::Reset),
            OrConnReason::ConnectReset
        );
        assert_eq!(
            OrConnReason::from_close(CloseReason::ConnectTimeout),
            OrConnReason::Timeout
        );
        assert_eq!(OrConnStatus::Gone.keyword(), None);
    }

    // The only test that touches the process-wide queue.
    #[test]
    fn queue_is_off_by_default_bounded_and_counts_drops() {
        let shard = ShardId(0);
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        set_enabled(false);
        accepted(shard, ConnId::from_parts(1, 1), addr);
        let mut out = Vec::new();
        drain(&mut out);
        assert!(out.is_empty(), "nothing is queued while off");

        set_enabled(true);
        let before = dropped();
        for i in 0..QUEUE_CAPACITY as u32 + 5 {
            accepted(shard, ConnId::from_parts(i, 1), addr);
        }
        gone(
            shard,
            ConnId::from_parts(7, 1),
            false,
            true,
            Some(RsaIdentity([1; 20])),
            2,
            CloseReason::ConnectFailed(libc::ECONNREFUSED),
        );
        assert_eq!(dropped() - before, 6);
        drain(&mut out);
        assert_eq!(out.len(), QUEUE_CAPACITY);
        assert_eq!(out[0].status, OrConnStatus::New);
        // A client's address travels only when SafeLogging shows it.
        assert_eq!(out[0].addr.is_none(), client_addresses_scrubbed());
        out.clear();
        gone(
            shard,
            ConnId::from_parts(7, 1),
            false,
            true,
            Some(RsaIdentity([1; 20])),
            2,
            CloseReason::ConnectFailed(libc::ECONNREFUSED),
        );
        gone(
            shard,
            ConnId::from_parts(8, 1),
            true,
            false,
            None,
            0,
            CloseReason::Reset,
        );
        drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].status, OrConnStatus::Failed);
        assert_eq!(out[0].reason, Some(OrConnReason::ConnectRefused));
        assert_eq!(out[0].ncircs, 2);
        // A client's connection closes with DONE whatever the socket said.
        assert_eq!(out[1].status, OrConnStatus::Closed);
        assert_eq!(out[1].reason, Some(OrConnReason::Done));

        // A launch is counted for the MetricsPort (`direction="initiated"`).
        let (v4, v6) = initiated();
        launched(shard, ConnId::from_parts(9, 1), RsaIdentity([2; 20]), addr);
        launched(
            shard,
            ConnId::from_parts(10, 1),
            RsaIdentity([2; 20]),
            "[::1]:9001".parse().unwrap(),
        );
        assert!(initiated().0 > v4 && initiated().1 > v6);

        // Resync listings: a full queue refuses them without counting a drop (the shard
        // sees the refusal and lists again), and each carries its round.
        out.clear();
        drain(&mut out);
        out.clear();
        let round = request_resync();
        assert_ne!(round, 0);
        assert_eq!(resync_round(), round);
        let before = dropped();
        let mut pushed = 0u32;
        while room() > 0 {
            assert!(listed(
                shard,
                round,
                ConnId::from_parts(pushed, 1),
                true,
                false,
                None,
                Some(addr)
            ));
            pushed += 1;
        }
        assert!(!listed(
            shard,
            round,
            ConnId::from_parts(pushed, 1),
            true,
            false,
            None,
            Some(addr)
        ));
        assert!(!listed_end(shard, round, pushed));
        assert_eq!(dropped(), before);
        drain(&mut out);
        assert_eq!(out.len(), QUEUE_CAPACITY);
        assert!(listed_end(shard, round, pushed));
        out.clear();
        drain(&mut out);
        assert_eq!(out[0].status, OrConnStatus::ListedEnd);
        assert_eq!((out[0].round, out[0].ncircs), (round, pushed));
        // A listed relay never carries an address; a listed client only when shown.
        assert!(listed(
            shard,
            round,
            ConnId::from_parts(1, 2),
            true,
            false,
            Some(RsaIdentity([4; 20])),
            Some(addr)
        ));
        out.clear();
        drain(&mut out);
        assert_eq!(out[0].addr, None);
        set_enabled(false);
        assert!(!listed_end(shard, round, 0), "nothing is queued while off");
    }
}
