//! ORCONN events (control-spec §4.1.3) and `GETINFO orconn-status` (§3.9), from the
//! channel facts the shards report ([`crate::relay::ctlevents`]). Sans-IO: events in,
//! `650` lines and the status list out.
//!
//! The target is named as C tor's `orconn_target_get_name` names it: `$fingerprint` when
//! the relay identity is known (expected for a connection we launched, proven for an
//! accepted one), else `address:port`. Fors keeps no consensus nicknames, so the
//! `~nickname` C tor appends for relays in its consensus is never shown. A peer without a
//! relay identity may be a client: its address goes through the caller's scrubber
//! (SafeLogging: `[scrubbed]:port` by default), which C tor does not do for controllers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::crypto::ids::RsaIdentity;
use crate::relay::ctlevents::{OrConnEvent, OrConnStatus};

/// Connections remembered at once; past it new ones get events but no entry (and are
/// counted in [`OrConnTable::untracked`]).
pub const MAX_TRACKED: usize = 1 << 16;

#[derive(Clone, Debug)]
struct Entry {
    /// C tor's `global_identifier` (`ID=`): unique for the process's life.
    id: u64,
    peer: Option<RsaIdentity>,
    addr: Option<SocketAddr>,
    open: bool,
    /// Launched by us (C: `conn->nickname` set), shown as LAUNCHED until open.
    launched: bool,
}

/// Key of a connection: shard, slot, generation.
type Key = (usize, u32, u32);

/// The OR connections the ControlPort knows of.
#[derive(Debug)]
pub struct OrConnTable {
    next_id: u64,
    conns: HashMap<Key, Entry>,
    untracked: u64,
}

impl Default for OrConnTable {
    fn default() -> Self {
        OrConnTable {
            next_id: 1,
            conns: HashMap::new(),
            untracked: 0,
        }
    }
}

fn key(ev: &OrConnEvent) -> Key {
    (ev.shard.0, ev.conn.slot, ev.conn.gen)
}

fn name(
    peer: Option<RsaIdentity>,
    addr: Option<SocketAddr>,
    scrub: &dyn Fn(IpAddr) -> String,
) -> String {
    match (peer, addr) {
        (Some(rsa), _) => format!("${}", rsa.to_hex()),
        // C tor prints `conn->base_.address` (no brackets for IPv6) and the port.
        (None, Some(a)) => format!("{}:{}", scrub(a.ip()), a.port()),
        (None, None) => "[unknown]:0".into(),
    }
}

impl OrConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events of connections not remembered because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Applies one fact; the `650 ORCONN` line it makes (C `control_event_or_conn_status`:
    /// `650 ORCONN target STATUS [REASON=r] [NCIRCS=n] ID=id`), if any.
    pub fn apply(&mut self, ev: &OrConnEvent, scrub: &dyn Fn(IpAddr) -> String) -> Option<String> {
        let k = key(ev);
        let ending = matches!(
            ev.status,
            OrConnStatus::Failed | OrConnStatus::Closed | OrConnStatus::Gone
        );
        let mut e = self.conns.remove(&k).unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id += 1;
            Entry {
                id,
                peer: None,
                addr: None,
                open: false,
                launched: false,
            }
        });
        e.peer = ev.peer.or(e.peer);
        e.addr = ev.addr.or(e.addr);
        match ev.status {
            OrConnStatus::Launched => e.launched = true,
            OrConnStatus::Connected => e.open = true,
            _ => {}
        }
        if !ending {
            if self.conns.len() < MAX_TRACKED {
                self.conns.insert(k, e.clone());
            } else {
                self.untracked += 1;
            }
        }
        let status = ev.status.keyword()?;
        let mut line = format!("650 ORCONN {} {status}", name(e.peer, e.addr, scrub));
        if let Some(r) = ev.reason {
            let _ = write!(line, " REASON={}", r.keyword());
        }
        if ev.ncircs > 0 && matches!(ev.status, OrConnStatus::Failed | OrConnStatus::Closed) {
            let _ = write!(line, " NCIRCS={}", ev.ncircs);
        }
        let _ = write!(line, " ID={}\r\n", e.id);
        Some(line)
    }

    /// `GETINFO orconn-status` (C `getinfo_helper_events`): `target STATE` per connection,
    /// STATE being CONNECTED when open, LAUNCHED when we started it, else NEW; oldest first.
    pub fn status(&self, scrub: &dyn Fn(IpAddr) -> String) -> String {
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
                format!("{} {state}", name(e.peer, e.addr, scrub))
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

    fn scrub(_: IpAddr) -> String {
        "[scrubbed]".into()
    }

    fn show(ip: IpAddr) -> String {
        ip.to_string()
    }

    fn ev(slot: u32, status: OrConnStatus) -> OrConnEvent {
        OrConnEvent {
            shard: ShardId(1),
            conn: ConnId::from_parts(slot, 3),
            status,
            reason: None,
            peer: None,
            addr: None,
            ncircs: 0,
        }
    }

    const FP: &str = "AABBCCDDEEFF00112233445566778899AABBCCDD";

    #[test]
    fn inbound_client_is_scrubbed_and_relay_named() {
        let mut t = OrConnTable::new();
        let client: SocketAddr = "192.0.2.7:41000".parse().unwrap();
        let new = OrConnEvent {
            addr: Some(client),
            ..ev(4, OrConnStatus::New)
        };
        assert_eq!(
            t.apply(&new, &scrub).unwrap(),
            "650 ORCONN [scrubbed]:41000 NEW ID=1\r\n"
        );
        assert_eq!(t.status(&scrub), "[scrubbed]:41000 NEW");
        // SafeLogging 0 shows it, as C tor always does.
        assert_eq!(t.status(&show), "192.0.2.7:41000 NEW");
        assert_eq!(
            t.apply(&ev(4, OrConnStatus::Connected), &scrub).unwrap(),
            "650 ORCONN [scrubbed]:41000 CONNECTED ID=1\r\n"
        );
        let closed = OrConnEvent {
            reason: Some(OrConnReason::Done),
            ..ev(4, OrConnStatus::Closed)
        };
        assert_eq!(
            t.apply(&closed, &scrub).unwrap(),
            "650 ORCONN [scrubbed]:41000 CLOSED REASON=DONE ID=1\r\n"
        );
        assert!(t.is_empty());

        // An inbound relay: NEW by address, then named by its proven identity.
        let rsa = RsaIdentity::from_hex(FP).unwrap();
        let new = OrConnEvent {
            addr: Some("198.51.100.2:9001".parse().unwrap()),
            ..ev(5, OrConnStatus::New)
        };
        assert_eq!(
            t.apply(&new, &scrub).unwrap(),
            "650 ORCONN [scrubbed]:9001 NEW ID=2\r\n"
        );
        let open = OrConnEvent {
            peer: Some(rsa),
            ..ev(5, OrConnStatus::Connected)
        };
        assert_eq!(
            t.apply(&open, &scrub).unwrap(),
            format!("650 ORCONN ${FP} CONNECTED ID=2\r\n")
        );
        assert_eq!(t.status(&scrub), format!("${FP} CONNECTED"));
        // An inbound handshake that never completes: forgotten without an event (as C).
        let newer = OrConnEvent {
            addr: Some(client),
            ..ev(6, OrConnStatus::New)
        };
        t.apply(&newer, &scrub).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.status(&scrub),
            format!("${FP} CONNECTED\n[scrubbed]:41000 NEW")
        );
        assert_eq!(t.apply(&ev(6, OrConnStatus::Gone), &scrub), None);
        assert_eq!(t.len(), 1);
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
            t.apply(&launch, &scrub).unwrap(),
            format!("650 ORCONN ${FP} LAUNCHED ID=1\r\n")
        );
        assert_eq!(t.status(&scrub), format!("${FP} LAUNCHED"));
        // The failure event names the target from the launch, with C's NCIRCS.
        let failed = OrConnEvent {
            reason: Some(OrConnReason::ConnectRefused),
            ncircs: 2,
            ..ev(9, OrConnStatus::Failed)
        };
        assert_eq!(
            t.apply(&failed, &scrub).unwrap(),
            format!("650 ORCONN ${FP} FAILED REASON=CONNECTREFUSED NCIRCS=2 ID=1\r\n")
        );
        assert_eq!(t.status(&scrub), "");

        t.apply(
            &OrConnEvent {
                peer: Some(rsa),
                ..ev(10, OrConnStatus::Launched)
            },
            &scrub,
        );
        t.apply(&ev(10, OrConnStatus::Connected), &scrub);
        let closed = OrConnEvent {
            reason: Some(OrConnReason::ConnectReset),
            ..ev(10, OrConnStatus::Closed)
        };
        assert_eq!(
            t.apply(&closed, &scrub).unwrap(),
            format!("650 ORCONN ${FP} CLOSED REASON=CONNECTRESET ID=2\r\n")
        );
        // The same slot reused by a new connection (new generation) is a new ID.
        let again = OrConnEvent {
            conn: ConnId::from_parts(10, 4),
            addr: Some("192.0.2.9:1234".parse().unwrap()),
            ..ev(10, OrConnStatus::New)
        };
        assert!(t.apply(&again, &scrub).unwrap().ends_with(" NEW ID=3\r\n"));
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
            assert!(t.apply(&e, &scrub).is_some());
        }
        assert_eq!(t.len(), MAX_TRACKED);
        assert_eq!(t.untracked(), 3);
    }
}
