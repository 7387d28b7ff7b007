//! Bounded answer cache with CLOCK eviction.
//!
//! Sized at construction; once full, inserting a new name evicts an expired entry or one not
//! used since the clock hand last passed. Lookups never allocate; inserts allocate nothing once
//! the table has reached its capacity.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::answer::{Answer, Family, Value};
use super::name::DnsName;

#[derive(Clone, Copy)]
struct Slot {
    answer: Answer<Value>,
    expires: Instant,
}

struct Entry {
    name: DnsName,
    slots: [Option<Slot>; 3],
    referenced: bool,
}

/// Cache statistics the resolver folds into its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub evictions: u64,
    pub expired_evictions: u64,
}

pub struct Cache {
    entries: Vec<Entry>,
    index: HashMap<DnsName, u32>,
    capacity: usize,
    hand: usize,
    pub stats: CacheStats,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            capacity,
            hand: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// A fresh answer for `family`, its TTL reduced to what is left of it.
    pub(crate) fn get(
        &mut self,
        name: &DnsName,
        family: Family,
        now: Instant,
    ) -> Option<Answer<Value>> {
        let &i = self.index.get(name)?;
        let entry = &mut self.entries[i as usize];
        let slot = entry.slots[family as usize]?;
        if slot.expires <= now {
            return None;
        }
        entry.referenced = true;
        Some(match slot.answer {
            Answer::Found { value, .. } => {
                let left = slot.expires.saturating_duration_since(now).as_secs();
                Answer::Found {
                    value,
                    ttl: u32::try_from(left).unwrap_or(u32::MAX),
                }
            }
            other => other,
        })
    }

    /// Remembers `answer` for `lifetime`. A zero lifetime stores nothing.
    pub(crate) fn put(
        &mut self,
        name: &DnsName,
        family: Family,
        answer: Answer<Value>,
        lifetime: Duration,
        now: Instant,
    ) {
        if self.capacity == 0 || lifetime.is_zero() {
            return;
        }
        let slot = Slot {
            answer,
            expires: now + lifetime,
        };
        if let Some(&i) = self.index.get(name) {
            self.entries[i as usize].slots[family as usize] = Some(slot);
            return;
        }
        let mut slots = [None; 3];
        slots[family as usize] = Some(slot);
        // New entries start unreferenced: a name must be asked for again to earn a second pass.
        let entry = Entry {
            name: *name,
            slots,
            referenced: false,
        };
        let i = if self.entries.len() < self.capacity {
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let victim = self.pick_victim(now);
            let old = std::mem::replace(&mut self.entries[victim], entry);
            self.index.remove(&old.name);
            victim
        };
        self.index.insert(*name, i as u32);
    }

    /// CLOCK: the first expired or unreferenced entry from the hand; at most two sweeps.
    fn pick_victim(&mut self, now: Instant) -> usize {
        let n = self.entries.len();
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let e = &mut self.entries[i];
            let expired = e.slots.iter().flatten().all(|s| s.expires <= now);
            if expired {
                self.stats.expired_evictions += 1;
                return i;
            }
            if !e.referenced {
                self.stats.evictions += 1;
                return i;
            }
            e.referenced = false;
        }
        // Unreachable in practice: the first sweep clears every reference bit.
        self.stats.evictions += 1;
        self.hand
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn name(s: &str) -> DnsName {
        DnsName::from_bytes(s.as_bytes()).unwrap()
    }
    fn addr(last: u8) -> Answer<Value> {
        Answer::Found {
            value: Value::Addr(IpAddr::from([192, 0, 2, last])),
            ttl: 999,
        }
    }
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn hit_reports_remaining_ttl_and_expires() {
        let t0 = Instant::now();
        let mut c = Cache::new(4);
        c.put(&name("a"), Family::V4, addr(1), MIN, t0);
        let got = c.get(&name("a"), Family::V4, t0 + Duration::from_secs(15));
        assert_eq!(
            got,
            Some(Answer::Found {
                value: Value::Addr(IpAddr::from([192, 0, 2, 1])),
                ttl: 45
            })
        );
        assert_eq!(c.get(&name("a"), Family::V6, t0), None);
        assert_eq!(c.get(&name("a"), Family::V4, t0 + MIN), None);
        c.put(&name("b"), Family::V4, addr(2), Duration::ZERO, t0);
        assert_eq!(c.get(&name("b"), Family::V4, t0), None);
    }

    #[test]
    fn families_share_an_entry() {
        let t0 = Instant::now();
        let mut c = Cache::new(1);
        c.put(&name("a"), Family::V4, addr(1), MIN, t0);
        c.put(&name("a"), Family::V6, addr(2), MIN, t0);
        assert_eq!(c.len(), 1);
        assert!(c.get(&name("a"), Family::V4, t0).is_some());
        assert!(c.get(&name("a"), Family::V6, t0).is_some());
    }

    #[test]
    fn clock_keeps_recently_used_names() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            c.put(&name(n), Family::V4, addr(i as u8), MIN, t0);
        }
        // Use a and c; b is the one to go.
        assert!(c.get(&name("a"), Family::V4, t0).is_some());
        assert!(c.get(&name("c"), Family::V4, t0).is_some());
        c.put(&name("d"), Family::V4, addr(4), MIN, t0);
        assert_eq!(c.len(), 3);
        assert!(c.get(&name("b"), Family::V4, t0).is_none());
        for n in ["a", "c", "d"] {
            assert!(c.get(&name(n), Family::V4, t0).is_some(), "{n}");
        }
        assert_eq!(c.stats.evictions, 1);
    }

    #[test]
    fn expired_entries_go_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.put(
            &name("short"),
            Family::V4,
            addr(1),
            Duration::from_secs(1),
            t0,
        );
        c.put(&name("long"), Family::V4, addr(2), MIN, t0);
        let t1 = t0 + Duration::from_secs(2);
        c.put(&name("new"), Family::V4, addr(3), MIN, t1);
        assert!(c.get(&name("long"), Family::V4, t1).is_some());
        assert!(c.get(&name("new"), Family::V4, t1).is_some());
        assert_eq!(c.stats.expired_evictions, 1);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let t0 = Instant::now();
        let mut c = Cache::new(0);
        c.put(&name("a"), Family::V4, addr(1), MIN, t0);
        assert!(c.is_empty());
    }
}
