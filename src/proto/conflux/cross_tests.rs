//! Legs of one set on two shards: [`ConfluxShard`]s joined by bounded FIFO queues that the
//! harness delivers (as the node's cross-shard queues would), with C tor 0.4.9.11's rules.
//! Cell-carrying messages that do not fit a queue come back through `send_failed`; control
//! messages fit (the node's overflow carries them) unless a test refuses one on purpose
//! (`Pair::refuse`), to check what a refusal leaves behind.

use std::collections::VecDeque;

use super::cells::{DesiredUx, Link, Nonce};
use super::cross::*;
use super::set::{LegFacts, LegSendState, Limits};
use super::{home_shard, HomeKey, SetKey};
use crate::cell::chan::DestroyReason;
use crate::cell::relay::RelayCmd;
use rand::{Rng, SeedableRng};

type Shard = ConfluxShard<u32, u64>;
type Act = Action<u32, u64>;
type Msg = CfxMsg<u32, u64>;

const OK: LegFacts = LegFacts {
    enabled: true,
    has_next_hop: false,
    has_streams: false,
    data_in_flight: false,
};

const READY: LegSendState = LegSendState {
    cwnd: 100,
    inflight: 0,
    blocked_on_chan: false,
};

fn test_seed(name: &str) -> u64 {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{name}: seed {seed} (rerun with FORS_TEST_SEED={seed})");
    seed
}

/// What happened on one shard's circuits.
#[derive(Default)]
struct Seen {
    linked: Vec<(u32, Link)>,
    closed: Vec<(u32, DestroyReason)>,
    delivered: Vec<(SetKey, RelayCmd, u64)>,
    originated: Vec<(u32, Option<u32>, RelayCmd, u64)>,
    gone: Vec<SetKey>,
    resumed: Vec<SetKey>,
}

const LINKED_AT: u64 = 1_000;

/// Which message a queue refuses (`Pair::refuse`).
type Refuse = fn(&Msg) -> bool;

struct Pair {
    shards: [Shard; 2],
    /// queues[from][to]
    queues: [[VecDeque<Msg>; 2]; 2],
    /// Cell-carrying messages a queue takes at once.
    cap: [[usize; 2]; 2],
    /// Messages from shard `.0` that its queue refuses, one each (any kind).
    refuse: Vec<(usize, Refuse)>,
    seen: [Seen; 2],
    now: u64,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(Limits::default(), 64)
    }

    fn with(sets: Limits, max_dir: usize) -> Pair {
        let l = CrossLimits {
            sets,
            max_local_legs: 64,
            max_dir,
        };
        Pair {
            shards: [
                ConfluxShard::new(0, 2, l, HomeKey::for_tests(0)),
                ConfluxShard::new(1, 2, l, HomeKey::for_tests(0)),
            ],
            queues: Default::default(),
            cap: [[usize::MAX; 2]; 2],
            refuse: Vec::new(),
            seen: Default::default(),
            now: LINKED_AT,
        }
    }

    fn apply(&mut self, s: usize, acts: Vec<Act>) {
        for a in acts {
            match a {
                Action::SendLinked { circ, link } => self.seen[s].linked.push((circ, link)),
                Action::Close { circ, reason } => {
                    self.seen[s].closed.push((circ, reason));
                    // The circuit's close hook runs as the core's would: a no-op here,
                    // since the shard already forgot it.
                    let mut out = Vec::new();
                    self.shards[s].leg_closed(circ, false, self.now, &mut out);
                    assert!(out.is_empty(), "a closed leg was still known");
                }
                Action::Deliver { set, cmd, msg } => self.seen[s].delivered.push((set, cmd, msg)),
                Action::Originate {
                    circ,
                    switch,
                    cmd,
                    msg,
                } => self.seen[s]
                    .originated
                    .push((circ, switch.map(|w| w.relative_seq), cmd, msg)),
                Action::ToShard { shard, msg } => {
                    let to = shard as usize;
                    assert_ne!(to, s, "a message to oneself is carried out at once");
                    let q = &mut self.queues[s][to];
                    let cells = q.iter().filter(|m| m.carries_cell()).count();
                    let refused = self.refuse.iter().position(|(f, r)| *f == s && r(&msg));
                    if let Some(i) = refused {
                        self.refuse.remove(i);
                    }
                    if refused.is_some() || (msg.carries_cell() && cells >= self.cap[s][to]) {
                        let mut out = Vec::new();
                        self.shards[s].send_failed(shard, msg, self.now, &mut out);
                        self.apply(s, out);
                    } else {
                        q.push_back(msg);
                    }
                }
                Action::SetGone { set } => self.seen[s].gone.push(set),
                Action::Resume { set } => self.seen[s].resumed.push(set),
            }
        }
    }

    /// Runs `f` on shard `s` and applies what it asks.
    fn on(&mut self, s: usize, f: impl FnOnce(&mut Shard, u64, &mut Vec<Act>)) {
        let mut out = Vec::new();
        f(&mut self.shards[s], self.now, &mut out);
        self.apply(s, out);
    }

    /// Delivers one message from `from` to the other shard; false if none.
    fn step(&mut self, from: usize) -> bool {
        let to = 1 - from;
        let Some(m) = self.queues[from][to].pop_front() else {
            return false;
        };
        self.on(to, |sh, now, out| sh.on_msg(from as ShardNo, m, now, out));
        true
    }

    /// Delivers everything in flight.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            if !self.step(0) && !self.step(1) {
                return;
            }
        }
        panic!("cross-shard messages did not settle");
    }

    fn link(&mut self, s: usize, circ: u32, nonce: Nonce, sent: u64, recv: u64) {
        let body = link_body(nonce, sent, recv);
        self.on(s, |sh, now, out| {
            sh.on_link(circ, OK, READY, &body, now, out)
        });
    }

    fn cell(&mut self, s: usize, circ: u32, cmd: RelayCmd, tag: u64) {
        let r = {
            let mut out = Vec::new();
            let r = self.shards[s].on_cell(circ, cmd, OK, tag, self.now, &mut out);
            self.apply(s, out);
            r
        };
        assert_eq!(r, None, "circuit {circ} on shard {s} is a leg");
    }

    fn switch(&mut self, s: usize, circ: u32, rel: u32) {
        let b = rel.to_be_bytes();
        self.on(s, |sh, now, out| sh.on_switch(circ, OK, &b, now, out));
    }

    /// LINKED_ACK `rtt` µs after the leg's LINKED (all LINKEDs went out at `LINKED_AT`).
    fn ack(&mut self, s: usize, circ: u32, rtt: u64) {
        self.now = LINKED_AT + rtt;
        self.on(s, |sh, now, out| sh.on_linked_ack(circ, OK, now, out));
    }

    fn delivered_tags(&self, s: usize) -> Vec<u64> {
        self.seen[s].delivered.iter().map(|d| d.2).collect()
    }
}

fn link_body(nonce: Nonce, sent: u64, recv: u64) -> [u8; 50] {
    let mut b = [0u8; 50];
    Link {
        nonce,
        last_seqno_sent: sent,
        last_seqno_recv: recv,
        desired_ux: DesiredUx::HighThroughput,
    }
    .encode(&mut b)
    .unwrap();
    b
}

/// A nonce whose home is shard `home` of two (and any home: `random_home`).
fn nonce_at(rng: &mut impl Rng, home: usize) -> Nonce {
    loop {
        let mut n = [0u8; 32];
        rng.fill(&mut n[..]);
        if home_shard(&n, 2, &HomeKey::for_tests(0)) == home {
            return n;
        }
    }
}

/// Links leg `a` (circuit 10) on shard `sa`, then leg `b` (circuit 20) on shard `sb`, for a
/// nonce homed on `home`; both LINKED_ACKed (a's RTT `rtt_a`, b's `rtt_b`). Returns the set.
fn linked_pair(p: &mut Pair, n: Nonce, sa: usize, sb: usize, rtt_a: u64, rtt_b: u64) -> SetKey {
    p.link(sa, 10, n, 0, 0);
    p.pump();
    p.link(sb, 20, n, 0, 0);
    p.pump();
    assert!(p.seen[sa].linked.iter().any(|l| l.0 == 10), "leg a linked");
    assert!(p.seen[sb].linked.iter().any(|l| l.0 == 20), "leg b linked");
    // Each leg's RTT is measured on its own shard, from its LINKED to its ACK.
    if rtt_a <= rtt_b {
        p.ack(sa, 10, rtt_a);
        p.ack(sb, 20, rtt_b);
    } else {
        p.ack(sb, 20, rtt_b);
        p.ack(sa, 10, rtt_a);
    }
    p.pump();
    p.shards[sa]
        .set_key(10)
        .expect("the first leg's shard owns the set")
}

#[test]
fn legs_on_two_shards_link_in_every_layout() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("link_layouts"));
    for home in 0..2 {
        for sa in 0..2 {
            for sb in 0..2 {
                let mut p = Pair::new();
                let n = nonce_at(&mut rng, home);
                let set = linked_pair(&mut p, n, sa, sb, 5_000, 7_000);
                // The set lives on the first leg's shard; the other shard has no set.
                assert_eq!(p.shards[sa].sets().stats().sets, 1);
                assert_eq!(p.shards[1 - sa].sets().stats().sets, 0);
                assert_eq!(p.shards[sa].sets().stats().legs, 2);
                assert_eq!(p.shards[sa].owner_of(10), Some(sa as ShardNo));
                assert_eq!(p.shards[sb].owner_of(20), Some(sa as ShardNo));
                let remote = u64::from(sa != sb);
                assert_eq!(p.shards[sa].stats().remote_legs_total, remote);
                assert_eq!(p.shards[sa].stats().remote_legs, remote as usize);
                // The directory on the home shard names the owner.
                assert_eq!(p.shards[home].stats().dir_entries, 1);
                assert_eq!(p.shards[1 - home].stats().dir_entries, 0);
                assert!(p.shards[sa].sets().is_live(set));
                // LINKED for the second leg carries the set's state (nothing sent yet).
                let l = p.seen[sb].linked.iter().find(|l| l.0 == 20).unwrap().1;
                assert_eq!((l.last_seqno_sent, l.last_seqno_recv), (0, 0));
                assert_eq!(l.nonce, n);
            }
        }
    }
}

/// The client spreads cells over both legs with SWITCHes; each leg's cells arrive in leg
/// order but the legs interleave at random, and the queue between shards is pumped at
/// random points. The owner delivers 1..=N in order, holding early ones.
#[test]
fn data_in_order_across_shards_with_switch_and_held_cells() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("data_in_order"));
    for round in 0..200 {
        let mut p = Pair::new();
        let home = rng.gen_range(0..2);
        let (sa, sb) = (rng.gen_range(0..2), rng.gen_range(0..2));
        let n = nonce_at(&mut rng, home);
        let set = linked_pair(&mut p, n, sa, sb, 5_000, 7_000);
        // The client's plan: per leg, the list of (switch before?, tag).
        let total = rng.gen_range(1..120u64);
        let mut plan: [Vec<(u32, u64)>; 2] = Default::default();
        let mut last_on = [0u64; 2];
        let mut cur = 0usize;
        for seq in 1..=total {
            if rng.gen_bool(0.2) {
                cur = 1 - cur;
            }
            // SWITCH relative number: the jump from this leg's last number.
            let rel = (seq - 1 - last_on[cur]) as u32;
            plan[cur].push((rel, seq));
            last_on[cur] = seq;
        }
        let legs = [(sa, 10u32), (sb, 20u32)];
        let mut at = [0usize; 2];
        while at[0] < plan[0].len() || at[1] < plan[1].len() {
            let l = if at[0] == plan[0].len() {
                1
            } else if at[1] == plan[1].len() {
                0
            } else {
                rng.gen_range(0..2)
            };
            let (rel, tag) = plan[l][at[l]];
            at[l] += 1;
            let (s, c) = legs[l];
            if rel > 0 {
                p.switch(s, c, rel);
            }
            p.cell(s, c, RelayCmd::DATA, tag);
            if rng.gen_bool(0.3) {
                p.step(rng.gen_range(0..2));
            }
        }
        p.pump();
        let want: Vec<u64> = (1..=total).collect();
        assert_eq!(p.delivered_tags(sa), want, "round {round}");
        assert!(p.seen[sa].delivered.iter().all(|d| d.0 == set));
        assert!(p.seen[1 - sa].delivered.is_empty());
        assert_eq!(p.shards[sa].sets().stats().held_cells, 0);
    }
}

#[test]
fn owner_sends_on_the_remote_leg_with_switch_and_snapshot() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("owner_sends"));
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 1);
    // a on shard 0 (owner) with RTT 9 ms, b on shard 1 with RTT 3 ms.
    let set = linked_pair(&mut p, n, 0, 1, 9_000, 3_000);
    // Each leg's RTT comes from its own shard (LINKED → ACK there).
    let local = |_c: u32| (READY, 0u64);
    // First choice: the lowest RTT leg, b, remote. Its first cell needs no SWITCH.
    let r = {
        let mut out = Vec::new();
        let r = p.shards[0].send(set, RelayCmd::DATA, 1, local, &mut out);
        p.apply(0, out);
        r
    };
    assert_eq!(r, Sent::Placed);
    p.pump();
    assert_eq!(p.seen[1].originated, vec![(20, None, RelayCmd::DATA, 1)]);
    // Fill b's window as the owner sees it: its snapshot counts what it sent.
    p.on(1, |sh, now, out| {
        sh.leg_state(
            20,
            LegSendState {
                cwnd: 3,
                inflight: 1,
                blocked_on_chan: false,
            },
            3_000,
            now,
            out,
        )
    });
    p.pump();
    for tag in 2..=3 {
        let mut out = Vec::new();
        assert_eq!(
            p.shards[0].send(set, RelayCmd::DATA, tag, local, &mut out),
            Sent::Placed
        );
        p.apply(0, out);
    }
    // The Sends are still in the queue: the owner's estimate is 1 reported + 2 issued = 3
    // = cwnd, so LowRTT moves to a (SWITCH by the 3 cells b carried).
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 4, local, &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    assert_eq!(p.seen[0].originated, vec![(10, Some(3), RelayCmd::DATA, 4)]);
    p.pump();
    assert_eq!(p.seen[1].originated.len(), 3);
    // a blocked too (local), b full: Blocked; b's SENDME report reopens it → Resume.
    let full = |_c: u32| {
        (
            LegSendState {
                cwnd: 1,
                inflight: 1,
                blocked_on_chan: false,
            },
            0,
        )
    };
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 5, full, &mut out),
        Sent::Blocked
    );
    assert!(out.is_empty());
    p.on(1, |sh, now, out| {
        sh.leg_state(
            20,
            LegSendState {
                cwnd: 3,
                inflight: 0,
                blocked_on_chan: false,
            },
            3_000,
            now,
            out,
        )
    });
    p.pump();
    assert_eq!(p.seen[0].resumed.last(), Some(&set));
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 5, full, &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    p.pump();
    // Back on b: SWITCH by 1 (a carried seq 4; b had 3).
    assert_eq!(
        p.seen[1].originated.last(),
        Some(&(20, Some(1), RelayCmd::DATA, 5))
    );
    // A blocked channel on b is seen at the owner after the report.
    p.on(1, |sh, now, out| {
        sh.leg_state(
            20,
            LegSendState {
                cwnd: 100,
                inflight: 0,
                blocked_on_chan: true,
            },
            3_000,
            now,
            out,
        )
    });
    p.pump();
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 6, local, &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    assert_eq!(
        p.seen[0].originated.last(),
        Some(&(10, Some(1), RelayCmd::DATA, 6))
    );
}

#[test]
fn remote_leg_close_follows_c_tor_rules() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("remote_close"));
    // Idle remote leg (not current, nothing in flight, not the newest): the set stays.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.cell(0, 10, RelayCmd::DATA, 1);
    p.on(1, |sh, now, out| sh.leg_closed(20, false, now, out));
    p.pump();
    assert!(p.shards[0].sets().is_live(set));
    assert_eq!(p.shards[0].sets().stats().legs, 1);
    assert_eq!(p.shards[0].stats().remote_legs, 0);
    assert!(p.seen[0].closed.is_empty() && p.seen[0].gone.is_empty());
    p.cell(0, 10, RelayCmd::DATA, 2);
    assert_eq!(p.delivered_tags(0), vec![1, 2]);

    // A remote leg with data in flight: the set is torn down (FINISHED), its streams end,
    // and the home shard forgets the nonce.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.on(1, |sh, now, out| sh.leg_closed(20, true, now, out));
    p.pump();
    assert!(!p.shards[0].sets().is_live(set));
    assert_eq!(p.seen[0].closed, vec![(10, DestroyReason::Finished)]);
    assert_eq!(p.seen[0].gone, vec![set]);
    assert_eq!(p.shards[home].stats().dir_entries, 0);
    assert!(!p.shards[0].is_leg(10) && !p.shards[1].is_leg(20));

    // A remote leg that carried the newest received cell: torn down too.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.switch(1, 20, 0);
    p.cell(1, 20, RelayCmd::DATA, 1);
    p.pump();
    p.on(1, |sh, now, out| sh.leg_closed(20, false, now, out));
    p.pump();
    assert!(!p.shards[0].sets().is_live(set));
    assert_eq!(p.seen[0].gone, vec![set]);
}

#[test]
fn owner_leg_closes_and_the_streams_stay_with_the_set() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("owner_close"));
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    // b (remote) has the lower RTT; a idle.
    let set = linked_pair(&mut p, n, 0, 1, 9_000, 3_000);
    p.switch(1, 20, 0);
    p.cell(1, 20, RelayCmd::BEGIN, 1);
    p.pump();
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::CONNECTED, 100, |_| (READY, 0), &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    p.pump();
    assert_eq!(
        p.seen[1].originated,
        vec![(20, None, RelayCmd::CONNECTED, 100)]
    );
    // The owner shard's own leg closes (the client's middle went away).
    p.on(0, |sh, now, out| sh.leg_closed(10, false, now, out));
    assert!(
        p.shards[0].sets().is_live(set),
        "the set survives on its shard"
    );
    assert!(p.seen[0].gone.is_empty());
    // Cells keep coming on b and reach the same streams; replies go out on b.
    p.cell(1, 20, RelayCmd::DATA, 2);
    p.pump();
    assert_eq!(p.delivered_tags(0), vec![1, 2]);
    assert!(p.seen[0].delivered.iter().all(|d| d.0 == set));
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 101, |_| (READY, 0), &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    p.pump();
    assert_eq!(
        p.seen[1].originated.last(),
        Some(&(20, None, RelayCmd::DATA, 101))
    );
    // The last leg closes: the set is gone, its streams end.
    p.on(1, |sh, now, out| sh.leg_closed(20, false, now, out));
    p.pump();
    assert_eq!(p.seen[0].gone, vec![set]);
    assert_eq!(p.shards[0].sets().stats().sets, 0);
    assert_eq!(
        p.shards[0].stats().dir_entries + p.shards[1].stats().dir_entries,
        0
    );
}

#[test]
fn a_full_queue_tears_the_set_down_with_resourcelimit() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("queue_full"));
    // Leg → owner: a cell that cannot cross leaves a gap; the leg closes and the set goes.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.cap[1][0] = 0;
    p.switch(1, 20, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    assert!(!p.shards[0].sets().is_live(set));
    assert_eq!(p.seen[0].closed, vec![(10, DestroyReason::Finished)]);
    assert_eq!(p.seen[0].gone, vec![set]);
    assert_eq!(p.shards[1].stats().cross_full_teardowns_total, 1);
    // A second cell of the same leg refused in the same batch closes nothing twice.
    let again = CfxMsg::Cell {
        leg: LegRef { shard: 1, circ: 20 },
        cmd: RelayCmd::DATA,
        facts: OK,
        msg: 7,
    };
    p.on(1, |sh, now, out| sh.send_failed(0, again, now, out));
    assert_eq!(p.seen[1].closed.len(), 1);
    assert!(p.queues[1][0].is_empty());

    // Owner → leg: a Send that cannot cross: RESOURCELIMIT on every leg.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 9_000, 3_000);
    p.cap[0][1] = 0;
    let mut out = Vec::new();
    assert_eq!(
        p.shards[0].send(set, RelayCmd::DATA, 1, |_| (READY, 0), &mut out),
        Sent::Placed
    );
    p.apply(0, out);
    p.pump();
    assert!(!p.shards[0].sets().is_live(set));
    assert_eq!(p.seen[0].closed, vec![(10, DestroyReason::ResourceLimit)]);
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    assert_eq!(p.shards[0].stats().cross_full_teardowns_total, 1);
    assert_eq!(p.seen[0].gone, vec![set]);
}

#[test]
fn link_replays_and_hostile_legs_are_refused_as_c_tor() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("link_replay"));
    // A second LINK on the remote leg: TORPROTOCOL, and the owner forgets the leg.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.link(1, 20, n, 0, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::TorProtocol)]);
    assert_eq!(p.shards[0].sets().stats().legs, 1);
    assert!(p.shards[0].sets().is_live(set));

    // The LINK replayed on a fresh circuit of the other shard after data was delivered,
    // claiming more sent than the set delivered: the set is torn down (C tor
    // `validate_unlinked_legs` → data loss; the new leg INTERNAL, the others TORPROTOCOL).
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.cell(0, 10, RelayCmd::DATA, 1);
    p.link(1, 30, n, 5, 0);
    p.pump();
    assert!(p.seen[1].closed.contains(&(30, DestroyReason::Internal)));
    assert!(p.seen[1].closed.contains(&(20, DestroyReason::TorProtocol)));
    assert!(p.seen[0].closed.contains(&(10, DestroyReason::TorProtocol)));
    assert_eq!(p.seen[0].gone, vec![set]);

    // A LINK for a new set claiming data already sent: refused, and no directory entry or
    // set is left behind.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    p.link(1, 40, n, 3, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(40, DestroyReason::Internal)]);
    assert_eq!(p.shards[home].stats().dir_entries, 0);
    assert_eq!(p.shards[1].sets().stats().sets, 0);

    // Cells on a leg before its LINKED (the join still crossing shards): TORPROTOCOL; the
    // LINKED that comes later is answered with LegClosed, so the owner forgets it.
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    p.link(1, 50, n, 0, 0);
    p.cell(1, 50, RelayCmd::BEGIN, 1);
    assert_eq!(p.seen[1].closed, vec![(50, DestroyReason::TorProtocol)]);
    assert_eq!(p.shards[1].stats().pending_refused_total, 1);
    p.pump();
    assert!(p.seen[1].linked.is_empty());
    assert_eq!(p.shards[1].sets().stats().sets, 0);
    assert_eq!(p.shards[0].stats().dir_entries, 0);

    // Not a last hop / conflux off: TORPROTOCOL before anything crosses.
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    let body = link_body(n, 0, 0);
    let hop = LegFacts {
        has_next_hop: true,
        ..OK
    };
    p.on(1, |sh, now, out| {
        sh.on_link(60, hop, READY, &body, now, out)
    });
    assert_eq!(p.seen[1].closed, vec![(60, DestroyReason::TorProtocol)]);
    assert!(p.queues[1][0].is_empty());
}

#[test]
fn tables_are_bounded() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("bounded"));
    // A home shard with a directory of one: a second nonce homed there is refused.
    let mut p = Pair::with(Limits::default(), 1);
    let n1 = nonce_at(&mut rng, 0);
    let n2 = nonce_at(&mut rng, 0);
    p.link(1, 10, n1, 0, 0);
    p.link(1, 20, n2, 0, 0);
    p.pump();
    assert_eq!(p.seen[1].linked.len(), 1);
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    assert_eq!(p.shards[0].stats().table_full_total, 1);
    // Sets per owner: over it, RESOURCELIMIT, and the directory entry is freed again.
    let mut p = Pair::with(
        Limits {
            max_sets: 1,
            ..Limits::default()
        },
        8,
    );
    p.link(1, 10, n1, 0, 0);
    p.link(1, 20, n2, 0, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    assert_eq!(p.shards[0].stats().dir_entries, 1);
}

fn is_join(m: &Msg) -> bool {
    matches!(m, CfxMsg::Join { .. })
}

fn is_forget(m: &Msg) -> bool {
    matches!(m, CfxMsg::Forget { .. })
}

/// Review finding L7: a Join or Forget the queue refuses must leave the home's directory as
/// if the LINK had never been routed (entry removed or never added), and no entry may stay
/// once the sets are gone.
#[test]
fn a_refused_join_or_forget_leaves_no_directory_entry_behind() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("refused_control"));

    // A Lookup refused (leg's shard → home): the home never heard of it.
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    p.refuse.push((1, |m| matches!(m, CfxMsg::Lookup { .. })));
    p.link(1, 10, n, 0, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(10, DestroyReason::ResourceLimit)]);
    assert_eq!(p.shards[0].stats().dir_entries, 0);
    assert!(!p.shards[1].is_leg(10));

    // A Join refused (home → owner) for a new nonce: the entry that join made goes.
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    p.refuse.push((0, is_join));
    p.link(1, 10, n, 0, 0);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(10, DestroyReason::ResourceLimit)]);
    assert_eq!(
        p.shards[0].stats().dir_entries,
        0,
        "the refused join's entry stayed"
    );
    assert_eq!(p.shards[1].sets().stats().sets, 0);
    assert!(!p.shards[1].is_leg(10));
    // The nonce links normally afterwards, and nothing stays once its legs close.
    let set = linked_pair(&mut p, n, 1, 1, 3_000, 9_000);
    assert!(p.shards[1].sets().is_live(set));
    assert_eq!(p.shards[0].stats().dir_entries, 1);
    for c in [10, 20] {
        p.on(1, |sh, now, out| sh.leg_closed(c, false, now, out));
    }
    p.pump();
    assert_eq!(p.seen[1].gone, vec![set]);
    assert_eq!(p.shards[0].stats().dir_entries, 0);

    // A Join refused for a nonce whose set lives (a third leg): the set keeps its entry,
    // and the entry still goes with the set (the owner's Forget names the last route it
    // saw, which the refused join must not have moved past).
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    let set = linked_pair(&mut p, n, 1, 1, 3_000, 9_000);
    p.refuse.push((0, is_join));
    p.link(1, 30, n, 0, 0);
    p.pump();
    assert!(p.seen[1]
        .closed
        .contains(&(30, DestroyReason::ResourceLimit)));
    assert!(p.shards[1].sets().is_live(set));
    assert_eq!(p.shards[0].stats().dir_entries, 1);
    for c in [10, 20] {
        p.on(1, |sh, now, out| sh.leg_closed(c, false, now, out));
    }
    p.pump();
    assert_eq!(p.seen[1].gone, vec![set]);
    assert_eq!(
        p.shards[0].stats().dir_entries,
        0,
        "the set's entry outlived it after a refused join"
    );

    // A Forget refused (owner → home), twice: it is owed, not lost, and the next message
    // or LINK the owner handles sends it again; then the entry goes.
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, 0);
    let set = linked_pair(&mut p, n, 1, 1, 3_000, 9_000);
    p.refuse.push((1, is_forget));
    p.refuse.push((1, is_forget));
    for c in [10, 20] {
        p.on(1, |sh, now, out| sh.leg_closed(c, false, now, out));
    }
    p.pump();
    assert_eq!(p.seen[1].gone, vec![set]);
    assert_eq!(p.shards[0].stats().dir_entries, 1);
    assert_eq!(p.shards[1].stats().forgets_owed, 1);
    // A LINK on the owner (another nonce, homed there: nothing crosses for it) resends it,
    // and the queue refuses it again.
    let other = nonce_at(&mut rng, 1);
    p.link(1, 40, other, 0, 0);
    p.pump();
    assert_eq!(p.shards[1].stats().forgets_owed, 1);
    assert_eq!(p.shards[0].stats().dir_entries, 1);
    // A message from the home (a LINK there whose set lives on shard 1's directory).
    let far = nonce_at(&mut rng, 1);
    p.link(0, 50, far, 0, 0);
    p.pump();
    assert_eq!(p.shards[1].stats().forgets_owed, 0);
    assert_eq!(
        p.shards[0].stats().dir_entries,
        0,
        "the refused Forget's entry stayed"
    );
    assert!(p.refuse.is_empty());
}

/// Review finding L8: every shard of a relay, given the relay's one key, sends a nonce's
/// LINK to the same home (the one `home_shard` names); another key homes the same nonces
/// elsewhere for some of them.
#[test]
fn every_shard_instance_agrees_on_the_keyed_home() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("same_home"));
    const SHARDS: usize = 4;
    let l = CrossLimits {
        sets: Limits::default(),
        max_local_legs: 64,
        max_dir: 64,
    };
    let key = HomeKey::new(rng.gen(), rng.gen());
    let other = HomeKey::new(rng.gen(), rng.gen());
    let mut shards: Vec<Shard> = (0..SHARDS)
        .map(|me| ConfluxShard::new(me as ShardNo, SHARDS, l, key))
        .collect();
    let mut moved = 0;
    for i in 0..32u32 {
        let mut n = [0u8; 32];
        rng.fill(&mut n[..]);
        let home = home_shard(&n, SHARDS, &key);
        for (me, sh) in shards.iter_mut().enumerate() {
            let mut out = Vec::new();
            sh.on_link(i, OK, READY, &link_body(n, 0, 0), 0, &mut out);
            // The LINK goes to the home as a Lookup, or (home here) joins at once.
            let went = out.iter().find_map(|a| match a {
                Action::ToShard {
                    shard,
                    msg: CfxMsg::Lookup { .. },
                } => Some(*shard as usize),
                Action::SendLinked { .. } => Some(me),
                _ => None,
            });
            assert_eq!(went, Some(home), "shard {me}, nonce {i}: {out:?}");
        }
        moved += usize::from(home_shard(&n, SHARDS, &other) != home);
    }
    // 32 nonces, each kept by the other key with probability 1/4: all kept ~ 4^-32.
    assert!(moved > 0, "another key homed every nonce alike");
}

/// Random sets over two shards: cells both ways, SWITCHes, leg closes, squeezed queues and
/// random delivery points. Each set's cells are delivered as an unbroken prefix 1, 2, 3…
/// (never early, never twice), and once every circuit is closed both shards hold nothing:
/// no set, leg, snapshot, directory entry or held cell.
#[test]
fn model_random_sets_over_two_shards_leave_nothing_behind() {
    let seed = test_seed("model_two_shards");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    struct ClientSet {
        legs: Vec<(usize, u32)>,
        last_on: Vec<u64>,
        next: u64,
    }
    // (delivered, remote legs, sets torn down, full-queue teardowns, sends to other shards)
    let mut seen = [0u64; 5];
    for round in 0..40 {
        let mut p = Pair::new();
        let mut sets: Vec<ClientSet> = Vec::new();
        let mut next_circ = 100u32;
        let ops = rng.gen_range(50..400);
        for _ in 0..ops {
            match rng.gen_range(0..100) {
                0..=9 if sets.len() < 16 => {
                    let home = rng.gen_range(0..2);
                    let n = nonce_at(&mut rng, home);
                    let mut legs = Vec::new();
                    for _ in 0..rng.gen_range(1..=3) {
                        let s = rng.gen_range(0..2);
                        next_circ += 1;
                        p.link(s, next_circ, n, 0, 0);
                        if rng.gen_bool(0.5) {
                            p.pump();
                        }
                        legs.push((s, next_circ));
                    }
                    p.pump();
                    let k = legs.len();
                    for &(s, c) in &legs {
                        p.ack(s, c, rng.gen_range(1_000..20_000));
                    }
                    sets.push(ClientSet {
                        legs,
                        last_on: vec![0; k],
                        next: 1,
                    });
                }
                10..=69 if !sets.is_empty() => {
                    // The client sends the set's next cell on a live leg of its choice.
                    let i = rng.gen_range(0..sets.len());
                    let cs = &mut sets[i];
                    let l = rng.gen_range(0..cs.legs.len());
                    let (s, c) = cs.legs[l];
                    if !p.shards[s].is_leg(c) {
                        continue;
                    }
                    let rel = (cs.next - 1 - cs.last_on[l]) as u32;
                    if rel > 0 {
                        p.switch(s, c, rel);
                    }
                    cs.last_on[l] = cs.next;
                    let tag = ((i as u64) << 32) | cs.next;
                    cs.next += 1;
                    if p.shards[s].is_leg(c) {
                        p.cell(s, c, RelayCmd::DATA, tag);
                    }
                }
                70..=79 => {
                    // The exit's streams send on some live set.
                    for s in 0..2 {
                        let Some(c) = sets
                            .iter()
                            .flat_map(|cs| cs.legs.iter())
                            .find(|&&(ls, c)| ls == s && p.shards[s].set_key(c).is_some())
                            .map(|l| l.1)
                        else {
                            continue;
                        };
                        let set = p.shards[s].set_key(c).unwrap();
                        let st = LegSendState {
                            cwnd: rng.gen_range(1..10),
                            inflight: rng.gen_range(0..10),
                            blocked_on_chan: rng.gen_bool(0.2),
                        };
                        let mut out = Vec::new();
                        p.shards[s].send(set, RelayCmd::DATA, 0, |_| (st, 0), &mut out);
                        p.apply(s, out);
                    }
                }
                80..=84 if !sets.is_empty() => {
                    let i = rng.gen_range(0..sets.len());
                    let l = rng.gen_range(0..sets[i].legs.len());
                    let (s, c) = sets[i].legs[l];
                    let dif = rng.gen_bool(0.3);
                    p.on(s, |sh, now, out| sh.leg_closed(c, dif, now, out));
                }
                85..=89 => {
                    let (a, b) = (rng.gen_range(0..2), rng.gen_range(0..2));
                    if a != b {
                        p.cap[a][b] = [0, 1, 4, usize::MAX][rng.gen_range(0..4)];
                    }
                }
                _ => {
                    for _ in 0..rng.gen_range(0..8) {
                        p.step(rng.gen_range(0..2));
                    }
                }
            }
        }
        p.pump();
        for s in 0..2 {
            let st = p.shards[s].stats();
            seen[0] += p.seen[s].delivered.len() as u64;
            seen[1] += st.remote_legs_total;
            seen[2] += p.seen[s].gone.len() as u64;
            seen[3] += st.cross_full_teardowns_total;
            seen[4] += p.seen[s].originated.len() as u64;
        }
        // Order: per client set, the delivered tags are 1, 2, 3… with no gap or repeat.
        for s in 0..2 {
            let mut next = vec![1u64; sets.len()];
            for &(_, _, tag) in &p.seen[s].delivered {
                let i = (tag >> 32) as usize;
                assert_eq!(
                    tag & 0xffff_ffff,
                    next[i],
                    "round {round} set {i} (seed {seed})"
                );
                next[i] += 1;
            }
        }
        // Everything closes: nothing stays behind.
        for cs in &sets {
            for &(s, c) in &cs.legs {
                p.on(s, |sh, now, out| sh.leg_closed(c, false, now, out));
            }
        }
        p.pump();
        for s in 0..2 {
            let st = p.shards[s].stats();
            let ss = p.shards[s].sets().stats();
            assert_eq!(
                (
                    ss.sets,
                    ss.legs,
                    ss.held_cells,
                    st.remote_legs,
                    st.dir_entries
                ),
                (0, 0, 0, 0, 0),
                "round {round} shard {s} (seed {seed})"
            );
            for cs in &sets {
                for &(ls, c) in &cs.legs {
                    assert!(ls != s || !p.shards[s].is_leg(c));
                }
            }
        }
    }
    println!("delivered, remote legs, gone, full teardowns, originated: {seen:?}");
    assert!(
        seen.iter().all(|&x| x > 0),
        "the model must reach every path: {seen:?}"
    );
}

/// Hostile sequences on a remote leg are judged by the owner's table and the closes cross
/// back: a jump past the OOO window (RESOURCELIMIT), a number already delivered (INTERNAL,
/// as C tor), a SWITCH flood that cannot hold more than the window.
#[test]
fn hostile_sequences_on_a_remote_leg() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("hostile_remote"));
    let window = Limits::default().ooo_window;
    // A jump past the window.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    let set = linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.switch(1, 20, window + 1);
    p.cell(1, 20, RelayCmd::DATA, 1);
    p.pump();
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    // It carried the newest number: the set goes (C tor `cfx_del_leg`).
    assert_eq!(p.seen[0].closed, vec![(10, DestroyReason::Finished)]);
    assert_eq!(p.seen[0].gone, vec![set]);
    assert_eq!(p.shards[0].sets().stats().ooo_overflow_total, 1);

    // A number already delivered: leg a's counter falls behind what b delivered.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    p.switch(1, 20, 1);
    p.cell(1, 20, RelayCmd::DATA, 2); // seq 2, held
    p.pump();
    p.switch(1, 20, 0);
    p.cell(0, 10, RelayCmd::DATA, 10); // seq 1 on a
                                       // b sends seq 3; a's next cell is seq 2, already delivered from b: INTERNAL.
    p.cell(1, 20, RelayCmd::DATA, 3);
    p.pump();
    assert_eq!(p.delivered_tags(0), vec![10, 2, 3]);
    p.cell(0, 10, RelayCmd::DATA, 11);
    assert_eq!(
        p.seen[0].closed.first(),
        Some(&(10, DestroyReason::Internal))
    );

    // A SWITCH flood: many SWITCHes by 1, each followed by a cell that must be held; only
    // the window's worth is held before the leg is closed.
    let mut p = Pair::new();
    let home = rng.gen_range(0..2);
    let n = nonce_at(&mut rng, home);
    linked_pair(&mut p, n, 0, 1, 3_000, 9_000);
    for i in 0..(window as u64 + 10) {
        if !p.shards[1].is_leg(20) {
            break;
        }
        p.switch(1, 20, 1);
        p.cell(1, 20, RelayCmd::DATA, i);
        p.pump();
    }
    assert!(!p.shards[1].is_leg(20), "the flood ended with the leg");
    assert_eq!(p.seen[1].closed, vec![(20, DestroyReason::ResourceLimit)]);
    assert_eq!(
        p.shards[0].sets().stats().held_cells,
        0,
        "held cells freed with the set"
    );
    assert!(p.delivered_tags(0).is_empty());
}

#[test]
fn pick_names_the_leg_and_abandon_ends_a_set_on_both_shards() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed("pick_abandon"));
    let home = rng.gen_range(0..2);
    let mut p = Pair::new();
    let n = nonce_at(&mut rng, home);
    // Owner on shard 0 (leg 10, RTT 9 ms), remote leg 20 on shard 1 (RTT 2 ms): the
    // lower-RTT remote leg is picked for DATA, with the SWITCH that moves to it.
    let set = linked_pair(&mut p, n, 0, 1, 9_000, 2_000);
    let mut out = Vec::new();
    let local = |_c: u32| (READY, 9_000);
    let pick = p.shards[0].pick(set, RelayCmd::DATA, local, &mut out);
    assert!(out.is_empty(), "a pick sends nothing: {out:?}");
    let Pick::Remote { leg, switch } = pick else {
        panic!("expected the remote leg, got {pick:?}");
    };
    assert_eq!((leg.shard, leg.circ), (1, 20));
    // Nothing was sent on the set yet: the SWITCH, if any, moves by 0.
    assert!(switch.is_none_or(|s| s.relative_seq == 0), "{switch:?}");
    p.shards[0].send_remote(leg, switch, RelayCmd::DATA, 77, &mut out);
    p.apply(0, out);
    p.pump();
    assert_eq!(p.seen[1].originated.len(), 1);
    assert_eq!(p.seen[1].originated[0].2, RelayCmd::DATA);
    assert_eq!(p.seen[1].originated[0].3, 77);
    // The owner abandons the set (its streams cannot stay): every leg closes, the set is
    // gone, and the home forgets the nonce.
    let mut out = Vec::new();
    p.shards[0].abandon(set, DestroyReason::Finished, &mut out);
    p.apply(0, out);
    p.pump();
    assert!(p.seen[0].closed.contains(&(10, DestroyReason::Finished)));
    assert!(p.seen[1].closed.contains(&(20, DestroyReason::Finished)));
    assert_eq!(p.seen[0].gone, vec![set]);
    assert!(!p.shards[0].sets().is_live(set));
    assert!(!p.shards[0].is_leg(10) && !p.shards[1].is_leg(20));
    assert_eq!(p.shards[home].stats().dir_entries, 0);
    assert_eq!(p.shards[0].stats().remote_legs, 0);
    // Abandoning a gone set does nothing.
    let mut out = Vec::new();
    p.shards[0].abandon(set, DestroyReason::Finished, &mut out);
    assert!(out.is_empty());
}
