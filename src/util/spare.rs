//! Giving back a buffer's spare capacity after a peak (issue #13: "RSS rose after 100k
//! circuits closed at once": a `Vec` keeps the capacity its largest batch needed).
//!
//! A buffer whose capacity has stayed above [`RATIO`] times its use (or its floor, the
//! capacity it was built with) for [`AFTER`] is shrunk to twice its use (at least the
//! floor). The check is called from the shard's once-a-second housekeeping, one O(1) look
//! per buffer; a shrink reallocates once. Scratch buffers that are empty between batches
//! are thus brought back to their floor 10 s after their last peak at the earliest, so a
//! busy relay reallocates one of them at most once per 10 s, never per cell.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

/// Capacity over use (or floor) above which a buffer counts as oversized.
pub const RATIO: usize = 4;
/// How long a buffer must stay oversized before it is shrunk.
pub const AFTER: Duration = Duration::from_secs(10);

/// A buffer whose capacity can be given back.
pub trait Shrink {
    fn used(&self) -> usize;
    fn cap(&self) -> usize;
    /// Shrinks to at least `max(used, to)` entries.
    fn shrink(&mut self, to: usize);
}

impl<T> Shrink for Vec<T> {
    fn used(&self) -> usize {
        self.len()
    }
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to);
    }
}

impl<T> Shrink for VecDeque<T> {
    fn used(&self) -> usize {
        self.len()
    }
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to);
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> Shrink for HashMap<K, V, S> {
    fn used(&self) -> usize {
        self.len()
    }
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to);
    }
}

impl<K: Eq + Hash, S: BuildHasher> Shrink for HashSet<K, S> {
    fn used(&self) -> usize {
        self.len()
    }
    fn cap(&self) -> usize {
        self.capacity()
    }
    fn shrink(&mut self, to: usize) {
        self.shrink_to(to);
    }
}

/// Since when one buffer has been oversized.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpareWatch {
    since: Option<Instant>,
}

impl SpareWatch {
    /// Looks at `buf` (built with capacity `floor`) at `now`; shrinks it if it has been
    /// oversized for [`AFTER`]. True if it was shrunk.
    pub fn check(&mut self, buf: &mut impl Shrink, floor: usize, now: Instant) -> bool {
        let used = buf.used();
        if buf.cap() <= RATIO * used.max(floor).max(1) {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) < AFTER {
            return false;
        }
        buf.shrink((2 * used).max(floor));
        self.since = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_oversized_for_ten_seconds_is_shrunk_to_twice_its_use() {
        let t0 = Instant::now();
        let mut w = SpareWatch::default();
        let mut v: Vec<u64> = Vec::with_capacity(16);
        v.extend(0..100_000);
        v.truncate(10);
        assert!(!w.check(&mut v, 16, t0), "first sight starts the clock");
        assert!(!w.check(&mut v, 16, t0 + Duration::from_secs(9)));
        assert!(v.capacity() >= 100_000);
        assert!(w.check(&mut v, 16, t0 + AFTER));
        assert!(v.capacity() >= 20 && v.capacity() < 100);
        assert_eq!(v.len(), 10);
        // At its floor it stays.
        v.clear();
        v.shrink_to(16);
        for s in 0..30 {
            assert!(!w.check(&mut v, 16, t0 + Duration::from_secs(20 + s)));
        }
    }

    #[test]
    fn a_peak_in_between_restarts_the_clock() {
        let t0 = Instant::now();
        let mut w = SpareWatch::default();
        let mut m: HashMap<u32, u32> = HashMap::new();
        m.extend((0..10_000).map(|i| (i, i)));
        m.retain(|&k, _| k < 5);
        assert!(!w.check(&mut m, 0, t0));
        // Use comes back near the capacity: no longer oversized.
        m.extend((0..9_000).map(|i| (i, i)));
        assert!(!w.check(&mut m, 0, t0 + Duration::from_secs(5)));
        m.retain(|&k, _| k < 5);
        assert!(!w.check(&mut m, 0, t0 + Duration::from_secs(12)));
        assert!(m.capacity() >= 9_000);
        assert!(w.check(&mut m, 0, t0 + Duration::from_secs(22)));
        assert!(m.capacity() < 100);
        assert_eq!(m.len(), 5);
    }
}
