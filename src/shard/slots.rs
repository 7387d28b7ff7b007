//! Connection slots by class (issue #15): which share of a shard's connection table each
//! kind of connection may hold, and the age order of unauthenticated inbound handshakes.
//!
//! Without classes, idle TCP connections from many source addresses filled the whole table
//! and every exit stream then failed with END RESOURCELIMIT. Three classes, each bounded:
//!
//! * **Outbound** (exit streams, channels we open): never fails because inbound filled the
//!   table, since inbound as a whole is held to `N - N/4`.
//! * **Authenticated** inbound (link handshake complete, `Outbox::set_authenticated`).
//! * **Handshake**: accepted, handshake not yet complete. A full class evicts its oldest
//!   member to admit a new one, so a flood of idle sockets only pushes other idle sockets
//!   out; under pressure (over half full) a handshake older than
//!   [`PRESSURE_HANDSHAKE_TIMEOUT`] is closed at the next tick.
//!
//! A slot counts against its class from install until it is free again (a closing
//! connection still holds its socket), so the bounds hold for the physical table. An
//! evicted handshake is closing for a loop iteration or two (a burst of accepts in one
//! completion batch evicts many before any comes back); evictees may use whatever the
//! inbound share has left.
//!
//! Sans-IO: slot numbers and time in, decisions out; the shard's `Core` acts on them.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Which share of the table a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClass {
    /// Opened by us: exit streams, channels to other relays.
    Outbound,
    /// Accepted, link handshake complete.
    Authenticated,
    /// Accepted, link handshake not yet complete.
    Handshake,
}

/// A handshake older than this is closed while the handshake class is over half full.
/// C tor closes a non-open OR connection after 60 s whatever the load (Fors's channel does
/// the same: `ChannelConfig::handshake_timeout`), and its out-of-sockets handler is off by
/// default (`DisableOOSCheck 1`). A real link handshake takes a few round trips, well under
/// a second on most links; 10 s leaves room for slow ones while an idle socket can hold its
/// slot only a sixth as long.
pub const PRESSURE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const NIL: u32 = u32::MAX;

/// The bounds of each class for a table of `table` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotBounds {
    pub table: u32,
    /// Slots inbound connections (both classes, closing ones included) may hold:
    /// `table - table/4`, so a quarter is always left for outbound.
    pub inbound: u32,
    /// Live handshakes before the oldest is evicted: `table/8` (at least 1).
    pub handshake: u32,
    /// Authenticated connections: the inbound share minus twice the handshake bound, so
    /// handshakes (and as many closing evictees) always fit in the inbound share.
    pub authenticated: u32,
    /// Outbound connections: all but twice the handshake bound, so a new peer can always
    /// get a handshake slot whatever we opened.
    pub outbound: u32,
}

impl SlotBounds {
    /// No classes: every kind may take the whole table (and nothing is evicted).
    pub fn unclassed(table: u32) -> SlotBounds {
        SlotBounds {
            table,
            inbound: table,
            handshake: table,
            authenticated: table,
            outbound: table,
        }
    }

    pub fn for_table(table: u32) -> SlotBounds {
        let reserve = (table / 4).max(1);
        let inbound = table.saturating_sub(reserve);
        let handshake = (table / 8).max(1);
        SlotBounds {
            table,
            inbound,
            handshake,
            authenticated: inbound.saturating_sub(2 * handshake),
            outbound: table.saturating_sub(2 * handshake),
        }
    }
}

/// What admitting an inbound connection needs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// There is room.
    Yes,
    /// Close this (oldest) handshake first; after that there may be room (`Slots::may_admit`).
    Evict(u32),
    /// No room and nothing to evict.
    No,
}

/// Per-slot class and the handshake age list (intrusive: `prev`/`next` per slot, so nothing
/// is allocated after start-up).
#[derive(Debug)]
pub struct Slots {
    bounds: SlotBounds,
    /// Classes on (`ShardConfig::slot_classes`): evict and expire handshakes.
    classed: bool,
    class: Vec<Option<SlotClass>>,
    /// Slots held per class (outbound, authenticated, handshake), closing ones included.
    held: [u32; 3],
    /// Handshakes in the age list (live, not closing).
    live_handshakes: u32,
    /// Slots held by handshakes evicted or expired to make room, until released; and which.
    evicting: u32,
    evicted: Vec<bool>,
    since: Vec<Instant>,
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
}

fn idx(c: SlotClass) -> usize {
    match c {
        SlotClass::Outbound => 0,
        SlotClass::Authenticated => 1,
        SlotClass::Handshake => 2,
    }
}

impl Slots {
    pub fn new(table: u32, classed: bool, now: Instant) -> Slots {
        let n = table as usize;
        Slots {
            bounds: if classed {
                SlotBounds::for_table(table)
            } else {
                SlotBounds::unclassed(table)
            },
            classed,
            class: vec![None; n],
            held: [0; 3],
            live_handshakes: 0,
            evicting: 0,
            evicted: vec![false; n],
            since: vec![now; n],
            prev: vec![NIL; n],
            next: vec![NIL; n],
            head: NIL,
            tail: NIL,
        }
    }

    pub fn bounds(&self) -> SlotBounds {
        self.bounds
    }

    /// Slots held by `class` (closing ones included).
    pub fn held(&self, class: SlotClass) -> u32 {
        self.held[idx(class)]
    }

    /// Handshakes not yet closing.
    pub fn live_handshakes(&self) -> u32 {
        self.live_handshakes
    }

    /// The handshake in `slot` was evicted (or expired) to make room and is closing: its
    /// slot counts as an evictee's until released.
    pub fn evicted(&mut self, slot: u32) {
        self.closing(slot);
        if let Some(e) = self.evicted.get_mut(slot as usize) {
            if !*e {
                *e = true;
                self.evicting += 1;
            }
        }
    }

    /// Whether an inbound connection refused now would have fitted once the evictees'
    /// slots came back: then the refusal is a burst outrunning the closes, not a full table
    /// (a closing handshake that failed on its own is not an evictee).
    pub fn refused_for_evictees(&self) -> bool {
        self.evicting > 0 && self.inbound_held() - self.evicting < self.bounds.inbound
    }

    fn inbound_held(&self) -> u32 {
        self.held[1] + self.held[2]
    }

    /// Whether a new connection of `class` fits in its bounds now.
    pub fn may_admit(&self, class: SlotClass) -> bool {
        let b = &self.bounds;
        match class {
            SlotClass::Outbound => self.held[0] < b.outbound,
            SlotClass::Authenticated => {
                self.held[1] < b.authenticated && self.inbound_held() < b.inbound
            }
            // Closing evictees may use what the inbound share has left: a burst of accepts
            // in one batch evicts faster than the evictees' slots come back.
            SlotClass::Handshake => {
                self.live_handshakes < b.handshake && self.inbound_held() < b.inbound
            }
        }
    }

    /// For a new inbound connection: room, the oldest handshake to evict first, or nothing.
    /// `table_full`: no free slot at all (then the oldest handshake goes too, so the next
    /// arrival finds its slot). Nothing is evicted while the inbound share is full (of
    /// authenticated connections and closing evictees): that eviction would make no room.
    pub fn admit_inbound(&self, table_full: bool) -> Admit {
        let b = &self.bounds;
        if !table_full && self.may_admit(SlotClass::Handshake) {
            Admit::Yes
        } else if self.classed && self.head != NIL && self.inbound_held() < b.inbound {
            Admit::Evict(self.head)
        } else {
            Admit::No
        }
    }

    /// `slot` now holds a connection of `class` (accepted or opened at `now`).
    pub fn occupy(&mut self, slot: u32, class: SlotClass, now: Instant) {
        let s = slot as usize;
        debug_assert!(self.class[s].is_none(), "slot {slot} occupied twice");
        self.class[s] = Some(class);
        self.held[idx(class)] += 1;
        self.since[s] = now;
        if class == SlotClass::Handshake {
            self.link_tail(slot);
        }
    }

    /// The class of the connection in `slot`, if any.
    pub fn class(&self, slot: u32) -> Option<SlotClass> {
        self.class.get(slot as usize).copied().flatten()
    }

    /// The handshake in `slot` completed. `false` if the authenticated class is full (the
    /// connection stays a handshake). Other classes: nothing changes.
    pub fn authenticate(&mut self, slot: u32) -> bool {
        if self.class(slot) != Some(SlotClass::Handshake) {
            return true;
        }
        if self.held[1] >= self.bounds.authenticated {
            return false;
        }
        // Moving within the inbound share: the inbound total does not change.
        self.unlink(slot);
        self.held[2] -= 1;
        self.held[1] += 1;
        self.class[slot as usize] = Some(SlotClass::Authenticated);
        true
    }

    /// The connection in `slot` started closing: it is no longer a candidate for eviction
    /// (its slot still counts until [`Slots::release`]).
    pub fn closing(&mut self, slot: u32) {
        self.unlink(slot);
    }

    /// `slot` is free again.
    pub fn release(&mut self, slot: u32) {
        self.unlink(slot);
        if let Some(e) = self.evicted.get_mut(slot as usize) {
            if *e {
                *e = false;
                self.evicting -= 1;
            }
        }
        if let Some(c) = self.class[slot as usize].take() {
            self.held[idx(c)] -= 1;
        }
    }

    /// The oldest handshake, if it is older than [`PRESSURE_HANDSHAKE_TIMEOUT`] at `now`
    /// while the class is over half full.
    pub fn expired_handshake(&self, now: Instant) -> Option<u32> {
        if !self.classed || self.head == NIL || 2 * self.live_handshakes <= self.bounds.handshake {
            return None;
        }
        let age = now.saturating_duration_since(self.since[self.head as usize]);
        (age >= PRESSURE_HANDSHAKE_TIMEOUT).then_some(self.head)
    }

    fn link_tail(&mut self, slot: u32) {
        let s = slot as usize;
        self.prev[s] = self.tail;
        self.next[s] = NIL;
        if self.tail == NIL {
            self.head = slot;
        } else {
            self.next[self.tail as usize] = slot;
        }
        self.tail = slot;
        self.live_handshakes += 1;
    }

    fn unlink(&mut self, slot: u32) {
        let s = slot as usize;
        let linked = self.head == slot || self.prev[s] != NIL;
        if !linked {
            return;
        }
        let (p, n) = (self.prev[s], self.next[s]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[s] = NIL;
        self.next[s] = NIL;
        self.live_handshakes -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_leave_outbound_a_quarter_and_handshakes_their_room() {
        for n in [16u32, 100, 1024, 9936, 65_536] {
            let b = SlotBounds::for_table(n);
            // Whatever inbound holds, a quarter of the table is left for outbound.
            assert!(n - b.inbound >= n / 4, "{b:?}");
            // Handshakes with their closing evictees fit beside a full authenticated class.
            assert!(b.authenticated + 2 * b.handshake <= b.inbound, "{b:?}");
            // And beside a full outbound class.
            assert!(b.outbound + 2 * b.handshake <= n, "{b:?}");
            assert!(b.handshake >= 1 && b.authenticated >= 1, "{b:?}");
        }
        let b = SlotBounds::for_table(1024);
        assert_eq!(
            (b.inbound, b.handshake, b.authenticated, b.outbound),
            (768, 128, 512, 768)
        );
    }

    #[test]
    fn a_full_handshake_class_evicts_its_oldest_in_age_order() {
        let t0 = Instant::now();
        let mut s = Slots::new(64, true, t0);
        let h = s.bounds().handshake; // 8
        assert_eq!(h, 8);
        for slot in 0..h {
            assert_eq!(s.admit_inbound(false), Admit::Yes);
            s.occupy(
                slot,
                SlotClass::Handshake,
                t0 + Duration::from_millis(slot.into()),
            );
        }
        // Slot 3 authenticates: it leaves the age list, so it is never evicted.
        assert!(s.authenticate(3));
        assert_eq!(s.class(3), Some(SlotClass::Authenticated));
        s.occupy(h, SlotClass::Handshake, t0);
        // Full: the oldest goes first, in accept order, skipping the authenticated one.
        let mut evicted = Vec::new();
        for new in h + 1..h + 6 {
            let Admit::Evict(v) = s.admit_inbound(false) else {
                panic!("no eviction at {new}")
            };
            evicted.push(v);
            s.closing(v);
            assert!(s.may_admit(SlotClass::Handshake));
            s.occupy(new, SlotClass::Handshake, t0);
        }
        assert_eq!(evicted, vec![0, 1, 2, 4, 5]);
        // Evictees still hold their slots until released: at most one live bound more.
        assert_eq!(s.held(SlotClass::Handshake), h + 5);
        assert_eq!(s.live_handshakes(), h);
        for v in evicted {
            s.release(v);
        }
        assert_eq!(s.held(SlotClass::Handshake), h);
        assert_eq!(s.held(SlotClass::Authenticated), 1);
    }

    #[test]
    fn closing_evictees_are_bounded_by_the_inbound_share() {
        let t0 = Instant::now();
        let mut s = Slots::new(64, true, t0);
        let b = s.bounds();
        let h = b.handshake;
        let mut next = 0;
        for _ in 0..h {
            s.occupy(next, SlotClass::Handshake, t0);
            next += 1;
        }
        // A burst: evict without ever releasing. Evictees fill what inbound has left
        // (48 - 8 live = 40 evictions), then nothing more is evicted (it would only close a
        // live handshake for nothing) and new connections are refused.
        let (mut admitted, mut evicted, mut refused) = (0, 0, 0);
        for _ in 0..100 {
            match s.admit_inbound(false) {
                Admit::Evict(v) => {
                    s.closing(v);
                    evicted += 1;
                }
                Admit::Yes => {}
                Admit::No => {
                    refused += 1;
                    continue;
                }
            }
            assert!(s.may_admit(SlotClass::Handshake));
            s.occupy(next, SlotClass::Handshake, t0);
            next += 1;
            admitted += 1;
        }
        let room = b.inbound - h;
        assert_eq!((admitted, evicted, refused), (room, room, 100 - room));
        assert_eq!(s.held(SlotClass::Handshake), b.inbound);
        assert_eq!(s.live_handshakes(), h);
        // Outbound keeps its quarter meanwhile.
        assert!(s.may_admit(SlotClass::Outbound));
        // With authenticated connections, evictees have less room.
        let mut t = Slots::new(64, true, t0);
        for slot in 0..b.authenticated {
            t.occupy(slot, SlotClass::Handshake, t0);
            assert!(t.authenticate(slot));
        }
        let mut next = b.authenticated;
        let mut admitted = 0;
        for _ in 0..100 {
            if let Admit::Evict(v) = t.admit_inbound(false) {
                t.closing(v);
            }
            if t.may_admit(SlotClass::Handshake) {
                t.occupy(next, SlotClass::Handshake, t0);
                next += 1;
                admitted += 1;
            }
        }
        assert_eq!(admitted, b.inbound - b.authenticated);
    }

    #[test]
    fn inbound_never_takes_the_outbound_reserve() {
        let t0 = Instant::now();
        let mut s = Slots::new(64, true, t0);
        let b = s.bounds();
        let mut slot = 0;
        // Authenticate as many as the class takes.
        while s.held(SlotClass::Authenticated) < b.authenticated {
            assert!(s.may_admit(SlotClass::Handshake));
            s.occupy(slot, SlotClass::Handshake, t0);
            assert!(s.authenticate(slot));
            slot += 1;
        }
        assert_eq!(s.held(SlotClass::Authenticated), b.authenticated);
        // A further handshake cannot authenticate; it stays a handshake.
        s.occupy(slot, SlotClass::Handshake, t0);
        assert!(!s.authenticate(slot));
        assert_eq!(s.class(slot), Some(SlotClass::Handshake));
        slot += 1;
        while s.may_admit(SlotClass::Handshake) {
            s.occupy(slot, SlotClass::Handshake, t0);
            slot += 1;
        }
        assert!(s.held(SlotClass::Authenticated) + s.held(SlotClass::Handshake) <= b.inbound);
        // Outbound still has its quarter.
        let mut out = 0;
        while s.may_admit(SlotClass::Outbound) && slot < b.table {
            s.occupy(slot, SlotClass::Outbound, t0);
            slot += 1;
            out += 1;
        }
        assert!(out >= b.table / 4, "{out} outbound slots");
        // Outbound is bounded too.
        let mut t = Slots::new(64, true, t0);
        for i in 0..b.outbound {
            assert!(t.may_admit(SlotClass::Outbound));
            t.occupy(i, SlotClass::Outbound, t0);
        }
        assert!(!t.may_admit(SlotClass::Outbound));
        assert!(t.may_admit(SlotClass::Handshake));
    }

    #[test]
    fn a_full_table_evicts_and_an_empty_list_refuses() {
        let t0 = Instant::now();
        let mut s = Slots::new(16, true, t0);
        assert_eq!(s.admit_inbound(true), Admit::No);
        s.occupy(0, SlotClass::Handshake, t0);
        assert_eq!(s.admit_inbound(true), Admit::Evict(0));
        s.closing(0);
        assert_eq!(s.admit_inbound(true), Admit::No);
    }

    #[test]
    fn unclassed_tables_are_first_come_first_served() {
        let t0 = Instant::now();
        let mut s = Slots::new(16, false, t0);
        for slot in 0..15 {
            assert_eq!(s.admit_inbound(false), Admit::Yes);
            s.occupy(slot, SlotClass::Handshake, t0);
        }
        assert!(s.may_admit(SlotClass::Outbound));
        s.occupy(15, SlotClass::Handshake, t0);
        // Full: refused, nothing evicted or expired.
        assert_eq!(s.admit_inbound(true), Admit::No);
        assert_eq!(s.expired_handshake(t0 + Duration::from_secs(3600)), None);
    }

    #[test]
    fn handshakes_expire_early_only_under_pressure() {
        let t0 = Instant::now();
        let mut s = Slots::new(64, true, t0); // handshake bound 8
        let late = t0 + PRESSURE_HANDSHAKE_TIMEOUT;
        for slot in 0..4 {
            s.occupy(slot, SlotClass::Handshake, t0);
        }
        // Half full: no pressure, the channel's own 60 s timeout applies.
        assert_eq!(s.expired_handshake(late), None);
        s.occupy(4, SlotClass::Handshake, t0 + Duration::from_secs(5));
        assert_eq!(s.expired_handshake(late - Duration::from_millis(1)), None);
        assert_eq!(s.expired_handshake(late), Some(0));
        s.closing(0);
        s.release(0);
        // Back to half full.
        assert_eq!(s.expired_handshake(late), None);
    }

    #[test]
    fn only_evictees_make_a_refusal_a_burst() {
        let now = Instant::now();
        let mut s = Slots::new(64, true, now);
        let b = s.bounds();
        // Fill the inbound share with handshakes.
        for slot in 0..b.inbound {
            s.occupy(slot, SlotClass::Handshake, now);
        }
        assert!(!s.refused_for_evictees(), "nothing evicted yet");
        // A handshake that fails on its own and closes is not an evictee.
        s.closing(0);
        assert!(!s.refused_for_evictees());
        // An evicted one is, until its slot is released.
        s.evicted(1);
        assert!(s.refused_for_evictees());
        s.release(1);
        assert!(!s.refused_for_evictees());
    }
}
