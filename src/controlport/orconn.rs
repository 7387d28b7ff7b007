//! ORCONN events (control-spec §4.1.3) and `GETINFO orconn-status` (§3.9), from the
//! channel facts the shards report ([`crate::relay::ctlevents`]). Sans-IO: events in,
//! `650` lines and the status list out.
//!
//! The target is named as C tor's `orconn_target_get_name` names it: `$fingerprint` when
//! the relay identity is known (expected for a connection we launched, proven for an
//! accepted one), else `address:port`. Fors keeps no consensus nicknames, so the
//! `~nickname` C tor appends for relays in its consensus is never shown. A peer without a
//! relay identity may be a client: C tor prints its `address:port` to controllers
//! whatever SafeLogging says; Fors does so only under `SafeLogging 0`, and otherwise
//! prints what C tor's logs print for a scrubbed `address:port`, `[scrubbed]` — the port
//! too, since a client's source port and the time identify it behind a NAT. The address
//! is not even kept then: the shards do not send it ([`crate::relay::ctlevents`]).
//!
//! The table corrects itself from the shards' resync listings: an entry its shard did
//! not list in a completed round is dropped (its CLOSED was lost to a full queue), and a
//! listed connection the table lacks (opened before the ControlPort started, or its NEW
//! lost) is added, without an event, as C tor lists it in `orconn-status`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::crypto::ids::RsaIdentity;
use crate::relay::ctlevents::{OrConnEvent, OrConnStatus};

/// Connections remembered at once; past it new ones get events but no entry (and are
/// counted in [`OrConnTable::untracked`]).
pub const MAX_TRACKED: usize = 1 << 16;

/// What C tor's logs print for a scrubbed address (`[scrubbed]`).
const SCRUBBED: &str = crate::relay::log::SCRUBBED;

#[derive(Clone, Debug)]
struct Entry {
    /// C tor's `global_identifier` (`ID=`): unique for the process's life.
    id: u64,
    peer: Option<RsaIdentity>,
    /// A peer without a relay identity, only while SafeLogging shows it.
    addr: Option<SocketAddr>,
    open: bool,
    /// Launched by us (C: `conn->nickname` set), shown as LAUNCHED until open.
    launched: bool,
    /// The last resync round of its shard that saw it live.
    seen: u32,
    /// The last resync round that listed it: what a round's count is checked against
    /// (`seen` is also set by its other facts during the round, which the shard does
    /// not count).
    listed_in: u32,
}

/// Key of a connection: shard, slot, generation.
type Key = (usize, u32, u32);

/// A shard's resync round in progress: its number and the connections listed so far.
#[derive(Clone, Copy, Debug)]
struct Round {
    round: u32,
    listed: u32,
}

/// The OR connections the ControlPort knows of.
#[derive(Debug)]
pub struct OrConnTable {
    next_id: u64,
    conns: HashMap<Key, Entry>,
    untracked: u64,
    /// Per shard, the resync round it is listing.
    rounds: HashMap<usize, Round>,
    /// Entries dropped by resyncs (their end was never reported).
    swept: u64,
}

impl Default for OrConnTable {
    fn default() -> Self {
        OrConnTable {
            next_id: 1,
            conns: HashMap::new(),
            untracked: 0,
            rounds: HashMap::new(),
            swept: 0,
        }
    }
}

fn key(ev: &OrConnEvent) -> Key {
    (ev.shard.0, ev.conn.slot, ev.conn.gen)
}

/// C tor's target name; `scrubbing`: SafeLogging scrubs client addresses now.
fn name(peer: Option<RsaIdentity>, addr: Option<SocketAddr>, scrubbing: bool) -> String {
    match (peer, addr) {
        (Some(rsa), _) => format!("${}", rsa.to_hex()),
        // C tor prints `conn->base_.address` (no brackets for IPv6) and the port.
        (None, Some(a)) if !scrubbing => format!("{}:{}", a.ip(), a.port()),
        (None, _) => SCRUBBED.into(),
    }
}

impl OrConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections not remembered because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Entries a resync found gone (their CLOSED or FAILED was lost).
    pub fn swept(&self) -> u64 {
        self.swept
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Forgets every client address kept (SafeLogging now scrubs them).
    pub fn forget_client_addresses(&mut self) {
        for e in self.conns.values_mut() {
            e.addr = None;
        }
    }

    /// Applies one fact; the `650 ORCONN` line it makes (C `control_event_or_conn_status`:
    /// `650 ORCONN target STATUS [REASON=r] [NCIRCS=n] ID=id`), if any. `scrubbing`:
    /// SafeLogging scrubs client addresses now.
    pub fn apply(&mut self, ev: &OrConnEvent, scrubbing: bool) -> Option<String> {
        if ev.status == OrConnStatus::ListedEnd {
            self.end_round(ev);
            return None;
        }
        let k = key(ev);
        let ending = matches!(
            ev.status,
            OrConnStatus::Failed | OrConnStatus::Closed | OrConnStatus::Gone
        );
        let known = self.conns.remove(&k);
        if let OrConnStatus::Listed { .. } = ev.status {
            let r = self.rounds.entry(ev.shard.0).or_insert(Round {
                round: ev.round,
                listed: 0,
            });
            if r.round != ev.round {
                // A newer round restarts the count (the older one is never ended).
                *r = Round {
                    round: ev.round,
                    listed: 0,
                };
            }
            if known.as_ref().is_none_or(|e| e.listed_in != ev.round) {
                r.listed += 1;
            }
        }
        let is_new = known.is_none();
        let mut e = known.unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id += 1;
            Entry {
                id,
                peer: None,
                addr: None,
                open: false,
                launched: false,
                seen: 0,
                listed_in: 0,
            }
        });
        // Any fact during a round in progress proves the connection live in it.
        if let Some(r) = self.rounds.get(&ev.shard.0) {
            e.seen = r.round;
        }
        e.peer = ev.peer.or(e.peer);
        // A client's address only while shown; a relay is named by its identity.
        e.addr = if e.peer.is_some() || scrubbing {
            None
        } else {
            ev.addr.or(e.addr)
        };
        match ev.status {
            OrConnStatus::Launched => e.launched = true,
            OrConnStatus::Connected => e.open = true,
            OrConnStatus::Listed { open, launched } => {
                e.open |= open;
                e.launched |= launched;
                e.listed_in = ev.round;
            }
            _ => {}
        }
        if !ending {
            if self.conns.len() < MAX_TRACKED {
                self.conns.insert(k, e.clone());
            } else if is_new && !matches!(ev.status, OrConnStatus::Listed { .. }) {
                // Counted once, at its first event (not again at every resync).
                self.untracked += 1;
            }
        }
        let status = ev.status.keyword()?;
        let mut line = format!("650 ORCONN {} {status}", name(e.peer, e.addr, scrubbing));
        if let Some(r) = ev.reason {
            let _ = write!(line, " REASON={}", r.keyword());
        }
        if ev.ncircs > 0 && matches!(ev.status, OrConnStatus::Failed | OrConnStatus::Closed) {
            let _ = write!(line, " NCIRCS={}", ev.ncircs);
        }
        let _ = write!(line, " ID={}\r\n", e.id);
        Some(line)
    }

    /// A shard listed every live connection of its round: what it did not list is gone.
    /// Only when the count matches what arrived (a lost listing must not drop live ones).
    fn end_round(&mut self, ev: &OrConnEvent) {
        let shard = ev.shard.0;
        let listed = match self.rounds.get(&shard) {
            Some(r) if r.round == ev.round => r.listed,
            _ => 0,
        };
        if listed != ev.ncircs {
            return;
        }
        self.rounds.remove(&shard);
        self.sweep(shard, ev.round);
    }

    fn sweep(&mut self, shard: usize, round: u32) {
        let before = self.conns.len();
        self.conns.retain(|k, e| k.0 != shard || e.seen == round);
        self.swept += (before - self.conns.len()) as u64;
    }

    /// `GETINFO orconn-status` (C `getinfo_helper_events`): `target STATE` per connection,
    /// STATE being CONNECTED when open, LAUNCHED when we started it, else NEW; oldest first.
    pub fn status(&self, scrubbing: bool) -> String {
        let mut v: Vec<&Entry> = self.conns.values().collect();
        v.sort_by_key(|e| e.id);
        v.iter()
            .map(|e| {
                let state = if e.open {
                    "CONNECTED"
                } else if e.launched {
                    "LAUNCHED"
                } else {
                    "NEW"
                };
                format!("{} {state}", name(e.peer, e.addr, scrubbing))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::ctlevents::OrConnReason;
    use crate::shard::{ConnId, ShardId};

    /// SafeLogging scrubs client addresses (the default) / shows them (`SafeLogging 0`).
    const SCRUB: bool = true;
    const SHOW: bool = false;

    fn ev(slot: u32, status: OrConnStatus) -> OrConnEvent {
        OrConnEvent {
            shard: ShardId(1),
            conn: ConnId::from_parts(slot, 3),
            status,
            reason: None,
            peer: None,
            addr: None,
            ncircs: 0,
            round: 0,
        }
    }

    const FP: &str = "AABBCCDDEEFF00112233445566778899AABBCCDD";

    #[test]
    fn inbound_client_is_scrubbed_whole_and_relay_named() {
        let mut t = OrConnTable::new();
        let client: SocketAddr = "192.0.2.7:41000".parse().unwrap();
        // Under SafeLogging the shard sends no address; even if one came, neither the
        // address nor the port is printed or kept.
        let new = OrConnEvent {
            addr: Some(client),
            ..ev(4, OrConnStatus::New)
        };
        assert_eq!(
            t.apply(&new, SCRUB).unwrap(),
            "650 ORCONN [scrubbed] NEW ID=1\r\n"
        );
        assert_eq!(t.status(SCRUB), "[scrubbed] NEW");
        // Not kept: SafeLogging 0 later cannot show what was never stored.
        assert_eq!(t.status(SHOW), "[scrubbed] NEW");
        assert_eq!(
            t.apply(&ev(4, OrConnStatus::Connected), SCRUB).unwrap(),
            "650 ORCONN [scrubbed] CONNECTED ID=1\r\n"
        );
        let closed = OrConnEvent {
            reason: Some(OrConnReason::Done),
            ..ev(4, OrConnStatus::Closed)
        };
        assert_eq!(
            t.apply(&closed, SCRUB).unwrap(),
            "650 ORCONN [scrubbed] CLOSED REASON=DONE ID=1\r\n"
        );
        assert!(t.is_empty());

        // SafeLogging 0: exactly C tor's `address:port` (no brackets for IPv6).
        let v6 = OrConnEvent {
            addr: Some("[2001:db8::7]:41001".parse().unwrap()),
            ..ev(7, OrConnStatus::New)
        };
        assert_eq!(
            t.apply(&v6, SHOW).unwrap(),
            "650 ORCONN 2001:db8::7:41001 NEW ID=2\r\n"
        );
        assert_eq!(t.status(SHOW), "2001:db8::7:41001 NEW");
        // Scrubbing turned on again (a reload): shown no more, and forgotten.
        assert_eq!(t.status(SCRUB), "[scrubbed] NEW");
        t.forget_client_addresses();
        assert_eq!(t.status(SHOW), "[scrubbed] NEW");
        t.apply(&ev(7, OrConnStatus::Gone), SCRUB);

        // An inbound relay: NEW unnamed, then named by its proven identity.
        let rsa = RsaIdentity::from_hex(FP).unwrap();
        assert_eq!(
            t.apply(&ev(5, OrConnStatus::New), SCRUB).unwrap(),
            "650 ORCONN [scrubbed] NEW ID=3\r\n"
        );
        let open = OrConnEvent {
            peer: Some(rsa),
            ..ev(5, OrConnStatus::Connected)
        };
        assert_eq!(
            t.apply(&open, SCRUB).unwrap(),
            format!("650 ORCONN ${FP} CONNECTED ID=3\r\n")
        );
        assert_eq!(t.status(SCRUB), format!("${FP} CONNECTED"));
        // An inbound handshake that never completes: forgotten without an event (as C).
        t.apply(&ev(6, OrConnStatus::New), SCRUB).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.status(SCRUB), format!("${FP} CONNECTED\n[scrubbed] NEW"));
        assert_eq!(t.apply(&ev(6, OrConnStatus::Gone), SCRUB), None);
        assert_eq!(t.len(), 1);
    }

    fn listed(slot: u32, round: u32, open: bool, peer: Option<RsaIdentity>) -> OrConnEvent {
        OrConnEvent {
            peer,
            round,
            ..ev(
                slot,
                OrConnStatus::Listed {
                    open,
                    launched: false,
                },
            )
        }
    }

    fn end(round: u32, count: u32) -> OrConnEvent {
        OrConnEvent {
            round,
            ncircs: count,
            ..ev(0, OrConnStatus::ListedEnd)
        }
    }

    #[test]
    fn resync_drops_entries_whose_close_was_lost() {
        let mut t = OrConnTable::new();
        let rsa = RsaIdentity::from_hex(FP).unwrap();
        for slot in [1, 2, 3] {
            t.apply(&ev(slot, OrConnStatus::New), SCRUB);
        }
        // Slot 2's CLOSED was lost to a full queue: the shard lists 1 and 3 only.
        assert_eq!(t.apply(&listed(1, 7, false, None), SCRUB), None);
        // A connection opened while the shard is listing is live, listed or not.
        t.apply(&ev(9, OrConnStatus::New), SCRUB);
        t.apply(&listed(3, 7, true, Some(rsa)), SCRUB);
        assert_eq!(t.len(), 4);
        assert_eq!(t.apply(&end(7, 2), SCRUB), None);
        assert_eq!(t.len(), 3, "{}", t.status(SCRUB));
        assert_eq!(t.swept(), 1);
        assert_eq!(
            t.status(SCRUB),
            format!("[scrubbed] NEW\n${FP} CONNECTED\n[scrubbed] NEW")
        );
        // Other shards' entries are not touched by this shard's round.
        let other = OrConnEvent {
            shard: ShardId(2),
            ..ev(1, OrConnStatus::New)
        };
        t.apply(&other, SCRUB);
        t.apply(&end(8, 0), SCRUB);
        assert_eq!(
            t.len(),
            1,
            "shard 1 listed nothing in round 8: all of it gone"
        );
        assert_eq!(t.status(SCRUB), "[scrubbed] NEW");
    }

    #[test]
    fn resync_lists_connections_opened_before_the_control_port() {
        let mut t = OrConnTable::new();
        let rsa = RsaIdentity::from_hex(FP).unwrap();
        // No event was ever seen: the shard's listing alone fills orconn-status, with C
        // tor's states, and makes no event.
        assert_eq!(t.apply(&listed(4, 1, true, Some(rsa)), SCRUB), None);
        let launched = OrConnEvent {
            peer: Some(rsa),
            round: 1,
            ..ev(
                5,
                OrConnStatus::Listed {
                    open: false,
                    launched: true,
                },
            )
        };
        assert_eq!(t.apply(&launched, SCRUB), None);
        assert_eq!(t.apply(&listed(6, 1, false, None), SCRUB), None);
        t.apply(&end(1, 3), SCRUB);
        assert_eq!(
            t.status(SCRUB),
            format!("${FP} CONNECTED\n${FP} LAUNCHED\n[scrubbed] NEW")
        );
        // Their later events use the IDs the listing gave them.
        let closed = OrConnEvent {
            reason: Some(OrConnReason::Done),
            ..ev(4, OrConnStatus::Closed)
        };
        assert_eq!(
            t.apply(&closed, SCRUB).unwrap(),
            format!("650 ORCONN ${FP} CLOSED REASON=DONE ID=1\r\n")
        );
    }

    #[test]
    fn incomplete_resync_drops_nothing() {
        let mut t = OrConnTable::new();
        for slot in [1, 2] {
            t.apply(&ev(slot, OrConnStatus::New), SCRUB);
        }
        // The end says 2 were listed but one listing never arrived: no sweep.
        t.apply(&listed(1, 3, false, None), SCRUB);
        t.apply(&end(3, 2), SCRUB);
        assert_eq!(t.len(), 2);
        // A newer round supersedes an unfinished one; listing the same connection twice
        // in a round counts once.
        t.apply(&listed(1, 4, false, None), SCRUB);
        t.apply(&listed(1, 4, false, None), SCRUB);
        t.apply(&end(3, 1), SCRUB);
        assert_eq!(t.len(), 2, "an old round's end is ignored");
        t.apply(&end(4, 1), SCRUB);
        assert_eq!(t.len(), 1);
        assert_eq!(t.swept(), 1);
    }

    #[test]
    fn outbound_launch_fail_and_close() {
        let mut t = OrConnTable::new();
        let rsa = RsaIdentity::from_hex(FP).unwrap();
        let launch = OrConnEvent {
            peer: Some(rsa),
            addr: Some("[2001:db8::1]:443".parse().unwrap()),
            ..ev(9, OrConnStatus::Launched)
        };
        assert_eq!(
            t.apply(&launch, SCRUB).unwrap(),
            format!("650 ORCONN ${FP} LAUNCHED ID=1\r\n")
        );
        assert_eq!(t.status(SCRUB), format!("${FP} LAUNCHED"));
        // The failure event names the target from the launch, with C's NCIRCS.
        let failed = OrConnEvent {
            reason: Some(OrConnReason::ConnectRefused),
            ncircs: 2,
            ..ev(9, OrConnStatus::Failed)
        };
        assert_eq!(
            t.apply(&failed, SCRUB).unwrap(),
            format!("650 ORCONN ${FP} FAILED REASON=CONNECTREFUSED NCIRCS=2 ID=1\r\n")
        );
        assert_eq!(t.status(SCRUB), "");

        t.apply(
            &OrConnEvent {
                peer: Some(rsa),
                ..ev(10, OrConnStatus::Launched)
            },
            SCRUB,
        );
        t.apply(&ev(10, OrConnStatus::Connected), SCRUB);
        let closed = OrConnEvent {
            reason: Some(OrConnReason::ConnectReset),
            ..ev(10, OrConnStatus::Closed)
        };
        assert_eq!(
            t.apply(&closed, SCRUB).unwrap(),
            format!("650 ORCONN ${FP} CLOSED REASON=CONNECTRESET ID=2\r\n")
        );
        // The same slot reused by a new connection (new generation) is a new ID.
        let again = OrConnEvent {
            conn: ConnId::from_parts(10, 4),
            ..ev(10, OrConnStatus::New)
        };
        assert!(t.apply(&again, SCRUB).unwrap().ends_with(" NEW ID=3\r\n"));
    }

    #[test]
    fn table_is_bounded() {
        let mut t = OrConnTable::new();
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        for i in 0..MAX_TRACKED as u32 + 3 {
            let e = OrConnEvent {
                addr: Some(a),
                ..ev(i, OrConnStatus::New)
            };
            // Every connection still gets its event.
            assert!(t.apply(&e, SCRUB).is_some());
        }
        assert_eq!(t.len(), MAX_TRACKED);
        assert_eq!(t.untracked(), 3);
    }
}
