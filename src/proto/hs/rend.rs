//! The rendezvous point (rend-spec-v3 §"The rendezvous protocol"; C tor `rendmid.c`,
//! `hs_circuitmap.c`).
//!
//! One [`RendPoint`] per shard: a bounded table cookie → the client's rendezvous circuit.
//! ESTABLISH_RENDEZVOUS registers a cookie; the service's RENDEZVOUS1 names it, the relay
//! sends RENDEZVOUS2 to the client and splices the two circuits: from then on the node
//! passes each cell that is not for this hop from one circuit to the other, one layer of
//! relay crypto on each side (C tor `relay.c`, `rend_splice`).
//!
//! Timeouts: C tor 0.4.9 has none at the rendezvous point. A waiting circuit lives until its
//! client closes it (the client gives up on its own clock); `circuit_expire_old_circuits_
//! serverside` only closes idle one-hop circuits and exempts spliced ones. So this table
//! expires nothing either; its bound is its capacity.

use std::collections::HashMap;

use super::cells::{parse_establish_rendezvous, HsCellError, RendCookie, Rendezvous1};
use super::{CircFacts, HsCircState, HsRole};
use crate::cell::chan::DestroyReason;

#[derive(Clone, Copy, Debug)]
struct RendEntry<C> {
    circ: C,
    /// Spliced already. C tor keeps the client circuit's cookie in its map after the join
    /// (only the lookup checks the purpose), so a later ESTABLISH_RENDEZVOUS for the same
    /// cookie still replaces, and closes, that circuit.
    joined: bool,
}

/// Counters for the rendezvous point (C tor's `relay_increment_est_rend_action` and
/// `relay_increment_rend1_action` actions, plus this table's own bound).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct RendCounters {
    pub est_rend_success: u64,
    pub est_rend_unsuitable: u64,
    /// Silently dropped from a one-hop client (`DoSRefuseSingleHopClientRendezvous`).
    pub est_rend_single_hop: u64,
    pub est_rend_malformed: u64,
    pub est_rend_duplicate_cookie: u64,
    /// The table was full: refused (Fors's bound; C tor's map is unbounded).
    pub est_rend_table_full: u64,
    pub rend1_success: u64,
    pub rend1_unsuitable: u64,
    pub rend1_malformed: u64,
    pub rend1_unknown_cookie: u64,
    /// The RENDEZVOUS2 could not be sent to the client.
    pub rend1_circuit_dead: u64,
    /// Spliced circuits closed (both circuits of a pair count).
    pub splices_closed: u64,
}

/// The answer to an ESTABLISH_RENDEZVOUS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EstablishRendOutcome<C> {
    /// Send RENDEZVOUS_ESTABLISHED (empty body) on the circuit. Close `replaced` with
    /// [`DestroyReason::Finished`]: an already spliced client circuit that had the same
    /// cookie (C tor `hs_circuitmap_register_impl`).
    Established { replaced: Option<C> },
    /// Do nothing: the client must time out (C tor's answer to a one-hop client when
    /// `DoSRefuseSingleHopClientRendezvous` is on).
    Ignore,
    /// Close the circuit with this reason and send nothing.
    Close(DestroyReason),
}

/// The answer to a RENDEZVOUS1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rendezvous1Outcome<'a, C> {
    /// Send RENDEZVOUS2 with body `handshake_info` on `client`, then call
    /// [`RendPoint::joined`]; on success splice the two circuits.
    Join {
        client: C,
        cookie: RendCookie,
        handshake_info: &'a [u8],
    },
    /// Close the service's circuit with this reason.
    Close(DestroyReason),
}

/// One shard's rendezvous-point state.
pub struct RendPoint<C> {
    map: HashMap<RendCookie, RendEntry<C>>,
    capacity: usize,
    pub counters: RendCounters,
}

impl<C: Copy + Eq> RendPoint<C> {
    /// A table for at most `capacity` cookies, waiting or spliced; its memory is reserved
    /// here, so registering never allocates.
    pub fn new(capacity: usize) -> Self {
        RendPoint {
            map: HashMap::with_capacity(capacity),
            capacity,
            counters: RendCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The circuit waiting with `cookie` (C tor looks up only `REND_POINT_WAITING`).
    pub fn lookup_waiting(&self, cookie: &RendCookie) -> Option<C> {
        self.map.get(cookie).filter(|e| !e.joined).map(|e| e.circ)
    }

    /// ESTABLISH_RENDEZVOUS on `circ` (C tor `rend_mid_establish_rendezvous`, checks in its
    /// order) when the cookie's table is this one: [`RendPoint::check_establish_rendezvous`]
    /// then [`RendPoint::register`]. `refuse_single_hop` is
    /// `DoSRefuseSingleHopClientRendezvous` in effect. On success `state` becomes
    /// [`HsRole::RendWaiting`].
    pub fn on_establish_rendezvous(
        &mut self,
        circ: C,
        state: &mut HsCircState,
        facts: CircFacts,
        refuse_single_hop: bool,
        body: &[u8],
    ) -> EstablishRendOutcome<C> {
        let cookie = match self.check_establish_rendezvous(state, facts, refuse_single_hop, body) {
            Ok(c) => c,
            Err(o) => return o,
        };
        let o = self.register(circ, cookie);
        if matches!(o, EstablishRendOutcome::Established { .. }) {
            state.role = HsRole::RendWaiting(cookie);
        }
        o
    }

    /// The circuit half of ESTABLISH_RENDEZVOUS, run on the circuit's own shard: may this
    /// circuit wait for a rendezvous, and is the cookie well formed? `Err` is the outcome to
    /// carry out (counted); it is never [`EstablishRendOutcome::Established`].
    pub fn check_establish_rendezvous(
        &mut self,
        state: &HsCircState,
        facts: CircFacts,
        refuse_single_hop: bool,
        body: &[u8],
    ) -> Result<RendCookie, EstablishRendOutcome<C>> {
        let c = &mut self.counters;
        let close = EstablishRendOutcome::Close(DestroyReason::TorProtocol);
        if state.role != HsRole::Plain {
            c.est_rend_unsuitable += 1;
            return Err(close);
        }
        if facts.from_client_channel && refuse_single_hop {
            c.est_rend_single_hop += 1;
            return Err(EstablishRendOutcome::Ignore);
        }
        if !facts.is_last_hop {
            c.est_rend_unsuitable += 1;
            return Err(close);
        }
        match parse_establish_rendezvous(body) {
            Ok(cookie) => Ok(*cookie),
            Err(_) => {
                c.est_rend_malformed += 1;
                Err(close)
            }
        }
    }

    /// The table half of ESTABLISH_RENDEZVOUS, run on the cookie's home shard: a cookie
    /// another circuit waits with is refused (TORPROTOCOL), a full table refuses with
    /// RESOURCELIMIT (both counted); otherwise `circ` waits with it, replacing an already
    /// spliced circuit that had it.
    pub fn register(&mut self, circ: C, cookie: RendCookie) -> EstablishRendOutcome<C> {
        let c = &mut self.counters;
        let old = self.map.get(&cookie).copied();
        if old.is_some_and(|e| !e.joined) {
            c.est_rend_duplicate_cookie += 1;
            return EstablishRendOutcome::Close(DestroyReason::TorProtocol);
        }
        if old.is_none() && self.map.len() >= self.capacity {
            c.est_rend_table_full += 1;
            return EstablishRendOutcome::Close(DestroyReason::ResourceLimit);
        }
        self.map.insert(
            cookie,
            RendEntry {
                circ,
                joined: false,
            },
        );
        c.est_rend_success += 1;
        EstablishRendOutcome::Established {
            replaced: old.map(|e| e.circ),
        }
    }

    /// RENDEZVOUS1 names `cookie`, on the cookie's home shard: the circuit waiting with it,
    /// now taken (a second RENDEZVOUS1 finds nothing), or `None` (counted as an unknown
    /// cookie).
    pub fn take_waiting(&mut self, cookie: &RendCookie) -> Option<C> {
        match self.map.get_mut(cookie) {
            Some(e) if !e.joined => {
                e.joined = true;
                Some(e.circ)
            }
            _ => {
                self.counters.rend1_unknown_cookie += 1;
                None
            }
        }
    }

    /// `circ` no longer holds `cookie` (it closed): forget the cookie if `circ` is still
    /// its circuit.
    pub fn unregister(&mut self, cookie: &RendCookie, circ: C) {
        if self.map.get(cookie).is_some_and(|e| e.circ == circ) {
            self.map.remove(cookie);
        }
    }

    /// The service-circuit half of RENDEZVOUS1: may this circuit complete a rendezvous, and
    /// is the body long enough? `Err` is the reason to close it with.
    pub fn check_rendezvous1<'a>(
        &mut self,
        state: &HsCircState,
        facts: CircFacts,
        body: &'a [u8],
    ) -> Result<Rendezvous1<'a>, DestroyReason> {
        if state.role != HsRole::Plain || !facts.is_last_hop {
            self.counters.rend1_unsuitable += 1;
            return Err(DestroyReason::TorProtocol);
        }
        Rendezvous1::parse(body).map_err(|_: HsCellError| {
            self.counters.rend1_malformed += 1;
            DestroyReason::TorProtocol
        })
    }

    /// RENDEZVOUS1 on the service's circuit when the client's circuit, if any, is on this
    /// shard (C tor `rend_mid_rendezvous`). Every refusal closes with TORPROTOCOL; an unknown
    /// cookie is normal (the client gave up) and is only counted.
    pub fn on_rendezvous1<'a>(
        &mut self,
        state: &HsCircState,
        facts: CircFacts,
        body: &'a [u8],
    ) -> Rendezvous1Outcome<'a, C> {
        let cell = match self.check_rendezvous1(state, facts, body) {
            Ok(c) => c,
            Err(r) => return Rendezvous1Outcome::Close(r),
        };
        match self.lookup_waiting(cell.cookie) {
            Some(client) => Rendezvous1Outcome::Join {
                client,
                cookie: *cell.cookie,
                handshake_info: cell.handshake_info,
            },
            None => {
                self.counters.rend1_unknown_cookie += 1;
                Rendezvous1Outcome::Close(DestroyReason::TorProtocol)
            }
        }
    }

    /// After [`Rendezvous1Outcome::Join`]: whether RENDEZVOUS2 went out. On success both
    /// circuits become [`HsRole::RendJoined`] (`client_state` is the waiting circuit's
    /// state, `service_state` the RENDEZVOUS1 circuit's) and the node splices them. On
    /// failure C tor has already closed the client's circuit (its close then calls
    /// [`RendPoint::on_circuit_closed`]) and the service's circuit stays as it was.
    pub fn joined(
        &mut self,
        cookie: &RendCookie,
        client_state: &mut HsCircState,
        service_state: &mut HsCircState,
        sent: bool,
    ) {
        if !sent {
            self.counters.rend1_circuit_dead += 1;
            return;
        }
        if let Some(e) = self.map.get_mut(cookie) {
            e.joined = true;
        }
        self.counters.rend1_success += 1;
        client_state.role = HsRole::RendJoined {
            cookie: Some(*cookie),
        };
        service_state.role = HsRole::RendJoined { cookie: None };
    }

    /// `circ` is closing with `reason`: forget its cookie. If it was spliced, the node must
    /// close the other circuit of the pair with the returned reason (C tor
    /// `circuit_mark_for_close_`), then call this again for that one.
    pub fn on_circuit_closed(
        &mut self,
        circ: C,
        state: &HsCircState,
        reason: DestroyReason,
    ) -> Option<DestroyReason> {
        let cookie = match state.role {
            HsRole::RendWaiting(c) | HsRole::RendJoined { cookie: Some(c) } => Some(c),
            _ => None,
        };
        if let Some(c) = cookie {
            self.unregister(&c, circ);
        }
        match state.role {
            HsRole::RendJoined { .. } => {
                self.counters.splices_closed += 1;
                Some(super::splice_close_reason(reason))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hs::verify::tests::seeded;
    use rand::Rng;

    const EDGE: CircFacts = CircFacts {
        is_last_hop: true,
        from_client_channel: false,
    };
    const CLOSE: EstablishRendOutcome<u32> =
        EstablishRendOutcome::Close(DestroyReason::TorProtocol);

    fn rend1(cookie: &RendCookie, info: &[u8]) -> Vec<u8> {
        let mut b = [0u8; 498];
        let n = Rendezvous1::encode(cookie, info, &mut b).unwrap();
        b[..n].to_vec()
    }

    #[test]
    fn establish_join_and_vanish() {
        let mut rng = seeded("establish_join_and_vanish");
        let cookie: RendCookie = rng.gen();
        let info: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
        let mut rp = RendPoint::new(4);
        let mut client = HsCircState::default();
        let o = rp.on_establish_rendezvous(1, &mut client, EDGE, true, &cookie);
        assert_eq!(o, EstablishRendOutcome::Established { replaced: None });
        assert_eq!(client.role, HsRole::RendWaiting(cookie));

        let mut service = HsCircState::default();
        let body = rend1(&cookie, &info);
        let o = rp.on_rendezvous1(&service, EDGE, &body);
        let Rendezvous1Outcome::Join {
            client: c,
            cookie: k,
            handshake_info,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!((c, k, handshake_info), (1, cookie, &info[..]));
        rp.joined(&cookie, &mut client, &mut service, true);
        assert_eq!(service.role, HsRole::RendJoined { cookie: None });
        assert_eq!(rp.counters.rend1_success, 1);
        // The cookie is used: a second RENDEZVOUS1 finds nothing and closes its circuit.
        let mut late = HsCircState::default();
        assert_eq!(
            rp.on_rendezvous1(&late, EDGE, &body),
            Rendezvous1Outcome::Close(DestroyReason::TorProtocol)
        );
        assert_eq!(rp.counters.rend1_unknown_cookie, 1);
        // A spliced circuit cannot be used again for a rendezvous.
        assert_eq!(
            rp.on_rendezvous1(&service, EDGE, &body),
            Rendezvous1Outcome::Close(DestroyReason::TorProtocol)
        );
        assert_eq!(
            rp.on_establish_rendezvous(2, &mut service, EDGE, false, &cookie),
            CLOSE
        );

        // The service side vanishes: the client side closes with the same reason.
        assert_eq!(
            rp.on_circuit_closed(2, &service, DestroyReason::Destroyed),
            Some(DestroyReason::Destroyed)
        );
        assert_eq!(
            rp.on_circuit_closed(1, &client, DestroyReason::Destroyed),
            Some(DestroyReason::Destroyed)
        );
        assert!(rp.is_empty());
        assert_eq!(rp.counters.splices_closed, 2);
        // And the cookie is free again.
        let o = rp.on_establish_rendezvous(3, &mut late, EDGE, false, &cookie);
        assert_eq!(o, EstablishRendOutcome::Established { replaced: None });
    }

    #[test]
    fn duplicate_cookie_closes_the_newcomer() {
        let mut rng = seeded("duplicate_cookie_closes_the_newcomer");
        let cookie: RendCookie = rng.gen();
        let mut rp = RendPoint::new(4);
        let mut a = HsCircState::default();
        rp.on_establish_rendezvous(1, &mut a, EDGE, false, &cookie);
        let mut b = HsCircState::default();
        assert_eq!(
            rp.on_establish_rendezvous(2, &mut b, EDGE, false, &cookie),
            CLOSE
        );
        assert_eq!(b.role, HsRole::Plain);
        assert_eq!(rp.counters.est_rend_duplicate_cookie, 1);
        // The first keeps the cookie; the newcomer's close does not remove it.
        assert_eq!(
            rp.on_circuit_closed(2, &b, DestroyReason::TorProtocol),
            None
        );
        assert_eq!(rp.lookup_waiting(&cookie), Some(1));
    }

    #[test]
    fn cookie_reused_after_join_replaces_the_spliced_circuit() {
        let mut rng = seeded("cookie_reused_after_join_replaces_the_spliced_circuit");
        let cookie: RendCookie = rng.gen();
        let mut rp = RendPoint::new(4);
        let (mut c, mut s) = (HsCircState::default(), HsCircState::default());
        rp.on_establish_rendezvous(1, &mut c, EDGE, false, &cookie);
        rp.joined(&cookie, &mut c, &mut s, true);
        let mut n = HsCircState::default();
        let o = rp.on_establish_rendezvous(3, &mut n, EDGE, false, &cookie);
        assert_eq!(o, EstablishRendOutcome::Established { replaced: Some(1) });
        // The replaced circuit's close must not remove the new registration.
        assert_eq!(
            rp.on_circuit_closed(1, &c, DestroyReason::Finished),
            Some(DestroyReason::Finished)
        );
        assert_eq!(rp.lookup_waiting(&cookie), Some(3));
    }

    #[test]
    fn refusals() {
        let mut rng = seeded("refusals");
        let cookie: RendCookie = rng.gen();
        let mut rp = RendPoint::<u32>::new(4);
        let mut st = HsCircState::default();
        let one_hop = CircFacts {
            from_client_channel: true,
            ..EDGE
        };
        let mid = CircFacts {
            is_last_hop: false,
            ..EDGE
        };
        assert_eq!(
            rp.on_establish_rendezvous(1, &mut st, one_hop, true, &cookie),
            EstablishRendOutcome::Ignore
        );
        assert_eq!(rp.counters.est_rend_single_hop, 1);
        // Allowed when the defense is off.
        let o = rp.on_establish_rendezvous(1, &mut st, one_hop, false, &cookie);
        assert_eq!(o, EstablishRendOutcome::Established { replaced: None });
        let mut st = HsCircState::default();
        assert_eq!(
            rp.on_establish_rendezvous(2, &mut st, mid, false, &[5; 20]),
            CLOSE
        );
        for bad in [&[5u8; 19][..], &[5; 21], &[]] {
            assert_eq!(
                rp.on_establish_rendezvous(2, &mut st, EDGE, false, bad),
                CLOSE
            );
        }
        assert_eq!(rp.counters.est_rend_malformed, 3);
        let intro = HsCircState {
            role: HsRole::IntroPoint([0; 32]),
            introduce1_seen: false,
        };
        let mut i2 = intro;
        assert_eq!(
            rp.on_establish_rendezvous(2, &mut i2, EDGE, false, &[5; 20]),
            CLOSE
        );
        // RENDEZVOUS1: short, mid-circuit, on an intro circuit.
        let close1 = Rendezvous1Outcome::Close(DestroyReason::TorProtocol);
        assert_eq!(rp.on_rendezvous1(&st, EDGE, &cookie[..19]), close1);
        assert_eq!(rp.on_rendezvous1(&st, mid, &rend1(&cookie, b"")), close1);
        assert_eq!(
            rp.on_rendezvous1(&intro, EDGE, &rend1(&cookie, b"")),
            close1
        );
        assert_eq!(rp.counters.rend1_malformed, 1);
        assert_eq!(rp.counters.rend1_unsuitable, 2);
        // Any HANDSHAKE_INFO length is passed on, even none (C tor does not check it).
        assert!(matches!(
            rp.on_rendezvous1(&st, EDGE, &rend1(&cookie, b"")),
            Rendezvous1Outcome::Join {
                client: 1,
                handshake_info: b"",
                ..
            }
        ));
    }

    #[test]
    fn waiting_client_vanishes_and_failed_send() {
        let mut rng = seeded("waiting_client_vanishes_and_failed_send");
        let cookie: RendCookie = rng.gen();
        let mut rp = RendPoint::new(4);
        let mut c = HsCircState::default();
        rp.on_establish_rendezvous(1, &mut c, EDGE, false, &cookie);
        // The client gives up before RENDEZVOUS1: nothing to splice, cookie gone.
        assert_eq!(rp.on_circuit_closed(1, &c, DestroyReason::Destroyed), None);
        let s = HsCircState::default();
        assert_eq!(
            rp.on_rendezvous1(&s, EDGE, &rend1(&cookie, &[0; 64])),
            Rendezvous1Outcome::Close(DestroyReason::TorProtocol)
        );
        // RENDEZVOUS2 could not be sent: no join, the service circuit stays plain.
        let mut c = HsCircState::default();
        rp.on_establish_rendezvous(2, &mut c, EDGE, false, &cookie);
        let mut s = HsCircState::default();
        rp.joined(&cookie, &mut c, &mut s, false);
        assert_eq!(s.role, HsRole::Plain);
        assert_eq!(rp.counters.rend1_circuit_dead, 1);
    }

    #[test]
    fn table_full() {
        let mut rp = RendPoint::new(2);
        let mut sts = [HsCircState::default(); 3];
        for (i, st) in sts.iter_mut().enumerate() {
            let o = rp.on_establish_rendezvous(i as u32, st, EDGE, false, &[i as u8; 20]);
            if i < 2 {
                assert_eq!(o, EstablishRendOutcome::Established { replaced: None });
            } else {
                assert_eq!(o, EstablishRendOutcome::Close(DestroyReason::ResourceLimit));
            }
        }
        assert_eq!(rp.counters.est_rend_table_full, 1);
        rp.on_circuit_closed(0, &sts[0], DestroyReason::Finished);
        let mut st = HsCircState::default();
        let o = rp.on_establish_rendezvous(2, &mut st, EDGE, false, &[2; 20]);
        assert_eq!(o, EstablishRendOutcome::Established { replaced: None });
        assert_eq!(rp.len(), 2);
    }
}
