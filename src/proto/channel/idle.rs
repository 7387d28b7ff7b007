//! When an open channel that carries no circuit is closed (C `channelpadding.c`,
//! `channelpadding_get_channel_idle_timeout`, applied by `run_connection_housekeeping`:
//! "Expiring non-used OR connection").
//!
//! A link with no circuit costs a connection slot and buffers; a peer that finishes the
//! handshake and then sends nothing (or half a cell) must not hold them for ever. C tor's
//! classes, which Fors follows so peers see the same lifetimes:
//! * client (or non-canonical) links: 180 s plus a random part of up to 90 s;
//! * relay-to-relay links: the consensus `nf_conntimeout_relays` (default 3600 s), ±25 %.

use std::time::{Duration, Instant};

use rand_core::RngCore;

/// C `CONNTIMEOUT_CLIENTS_BASE`.
pub const CLIENT_IDLE_BASE_SECS: u32 = 180;
/// C `DFLT_NF_CONNTIMEOUT_RELAYS`; the consensus may change it (`nf_conntimeout_relays`).
pub const RELAY_IDLE_DEFAULT_SECS: u32 = 3600;

/// Idle timeout of a client link: 180 s + [0, 90) s.
pub fn client_idle_timeout(rng: &mut impl RngCore) -> Duration {
    let base = CLIENT_IDLE_BASE_SECS;
    Duration::from_secs(u64::from(base + rng.next_u32() % (base / 2)))
}

/// Idle timeout of a relay link: 3/4 of `base_secs` + [0, base/2) s.
pub fn relay_idle_timeout(base_secs: u32, rng: &mut impl RngCore) -> Duration {
    let base = base_secs.max(2);
    Duration::from_secs(u64::from(3 * (base / 4) + rng.next_u32() % (base / 2)))
}

/// Tracks how long a channel has had no circuit.
#[derive(Debug, Clone, Copy)]
pub struct ChannelIdleTimer {
    timeout: Duration,
    idle_since: Option<Instant>,
}

impl ChannelIdleTimer {
    /// A timer for a channel that opened at `now` (and has no circuit yet).
    pub fn new(timeout: Duration, now: Instant) -> Self {
        ChannelIdleTimer {
            timeout,
            idle_since: Some(now),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records whether the channel carries a circuit at `now`; true once it has carried none
    /// for the whole timeout, i.e. it should be closed.
    pub fn update(&mut self, now: Instant, has_circuits: bool) -> bool {
        if has_circuits {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn timeouts_stay_in_c_tors_ranges() {
        let mut rng = StdRng::seed_from_u64(5);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..2000 {
            let t = client_idle_timeout(&mut rng).as_secs();
            assert!((180..270).contains(&t), "{t}");
            lo = lo.min(t);
            hi = hi.max(t);
            let r = relay_idle_timeout(RELAY_IDLE_DEFAULT_SECS, &mut rng).as_secs();
            assert!((2700..4500).contains(&r), "{r}");
        }
        // The random part is really used, not a constant.
        assert!(lo < 190 && hi > 260, "{lo}..{hi}");
        assert!(relay_idle_timeout(0, &mut rng).as_secs() <= 2);
    }

    #[test]
    fn closes_only_after_a_whole_timeout_without_circuits() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut t = ChannelIdleTimer::new(Duration::from_secs(100), t0);
        assert!(!t.update(s(99), false));
        // A circuit resets the clock; idleness counts from the next check without one.
        assert!(!t.update(s(100), true));
        assert!(!t.update(s(150), false));
        assert!(!t.update(s(249), false));
        assert!(t.update(s(250), false));
        // Never idle: never expires.
        let mut busy = ChannelIdleTimer::new(Duration::from_secs(1), t0);
        assert!(!busy.update(s(1000), true));
    }
}
