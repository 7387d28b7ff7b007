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
//! (`fors_controlport_orconn_events_dropped_total`).
//!
//! What is reported follows C tor 0.4.9 (`connection_or_event_status` callers): NEW when an
//! ORPort connection is accepted, LAUNCHED when we start an outbound one, CONNECTED when
//! the link handshake completes, FAILED when an outbound one dies before that, CLOSED when
//! an open one closes. An inbound connection that dies before its handshake completes gets
//! no event in C tor; it is reported here as [`OrConnStatus::Gone`] only so that the
//! ControlPort forgets it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::crypto::ids::RsaIdentity;
use crate::proto::channel::PeerIdentity;
use crate::shard::{CloseReason, ConnId, ShardId};

/// Events held between two polls of the ControlPort thread (50 ms).
pub const QUEUE_CAPACITY: usize = 8192;

static ENABLED: AtomicBool = AtomicBool::new(false);
static QUEUE: Mutex<VecDeque<OrConnEvent>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);

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
            OrConnStatus::Gone => return None,
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
    /// The peer's address (on NEW and LAUNCHED).
    pub addr: Option<SocketAddr>,
    /// Circuits waiting for this connection (C `NCIRCS`, shown on FAILED/CLOSED when > 0).
    pub ncircs: u32,
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
    }
}

/// An ORPort connection was accepted (C `connection_init_accepted_conn`: NEW).
pub fn accepted(shard: ShardId, conn: ConnId, peer: SocketAddr) {
    if enabled() {
        push(OrConnEvent {
            addr: Some(peer),
            ..event(shard, conn, OrConnStatus::New)
        });
    }
}

/// We started connecting to relay `rsa` at `addr` (C `connection_or_connect`: LAUNCHED).
pub fn launched(shard: ShardId, conn: ConnId, rsa: RsaIdentity, addr: SocketAddr) {
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
        assert_eq!(out[0].addr, Some(addr));
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
        set_enabled(false);
    }
}
