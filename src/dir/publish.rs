//! When to rebuild and upload our descriptor (C `router.c`
//! `mark_my_descriptor_dirty_if_too_old`, `check_descriptor_bandwidth_changed`,
//! `relay_periodic.c` `check_descriptor_callback`):
//!
//! - at least every 18 hours;
//! - at once when something in it changed (keys, address, ports, policy, family,
//!   hibernation);
//! - every 90 minutes while the consensus does not list us, or lists us as StaleDesc with a
//!   descriptor older than that consensus;
//! - when the bandwidth estimate moved by a factor of 2, during the first 24 h of uptime, at
//!   most every 3 hours (immediately on a test network, or when the old value was 0);
//! - the whole check runs every 60 seconds.
//!
//! Sans-IO: the caller passes `now` (seconds) and what it knows.

/// C `FORCE_REGENERATE_DESCRIPTOR_INTERVAL`.
pub const FORCE_REGENERATE_SECS: u64 = 18 * 3600;
/// C `FAST_RETRY_DESCRIPTOR_INTERVAL`.
pub const FAST_RETRY_SECS: u64 = 90 * 60;
/// C `CHECK_DESCRIPTOR_INTERVAL`.
pub const CHECK_INTERVAL_SECS: u64 = 60;
/// C `MAX_BANDWIDTH_CHANGE_FREQ`.
pub const MAX_BANDWIDTH_CHANGE_FREQ_SECS: u64 = 3 * 3600;
/// C `MAX_UPTIME_BANDWIDTH_CHANGE`.
pub const MAX_UPTIME_BANDWIDTH_CHANGE_SECS: u64 = 24 * 3600;
/// C `BANDWIDTH_CHANGE_FACTOR`.
pub const BANDWIDTH_CHANGE_FACTOR: u64 = 2;

/// What the latest live consensus says about us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// No live consensus yet: no reason to hurry.
    NoConsensus,
    NotListed,
    Listed {
        stale_desc: bool,
        /// The consensus's valid-after, seconds.
        consensus_valid_after: u64,
    },
}

/// The decision for this check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishDecision {
    /// Build a fresh descriptor and upload it; the reason goes in `X-Desc-Gen-Reason`.
    Publish { reason: String },
    /// Nothing to do; check again after this many seconds.
    Wait { check_again_in: u64 },
}

/// Republish bookkeeping for one relay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishState {
    /// When the current descriptor was built (C `desc_clean_since`); `None` = never.
    clean_since: Option<u64>,
    dirty_reason: Option<String>,
    /// Observed bandwidth in the current descriptor.
    published_bandwidth: u64,
    last_bandwidth_change: u64,
}

impl PublishState {
    /// Nothing published yet: the first check publishes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Something in the descriptor changed (C `mark_my_descriptor_dirty`). The first reason
    /// is kept.
    pub fn mark_dirty(&mut self, reason: &str) {
        if self.dirty_reason.is_none() {
            self.dirty_reason = Some(reason.to_owned());
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty_reason.is_some() || self.clean_since.is_none()
    }

    /// Records that a descriptor with `observed_bandwidth` was built at `now` and sent.
    pub fn published(&mut self, now: u64, observed_bandwidth: u64) {
        self.clean_since = Some(now);
        self.dirty_reason = None;
        self.published_bandwidth = observed_bandwidth;
    }

    /// C `check_descriptor_bandwidth_changed`: marks dirty on a ×2 change of the estimate.
    pub fn note_bandwidth(
        &mut self,
        now: u64,
        uptime_secs: u64,
        hibernating: bool,
        current: u64,
        testing_network: bool,
    ) {
        if uptime_secs > MAX_UPTIME_BANDWIDTH_CHANGE_SECS && !hibernating {
            return;
        }
        if self.clean_since.is_none() {
            return;
        }
        let prev = self.published_bandwidth;
        let cur = if hibernating { 0 } else { current };
        let changed = (prev != cur && (prev == 0 || cur == 0))
            || cur > prev.saturating_mul(BANDWIDTH_CHANGE_FACTOR)
            || cur < prev / BANDWIDTH_CHANGE_FACTOR;
        if !changed {
            return;
        }
        let long_enough = self.last_bandwidth_change + MAX_BANDWIDTH_CHANGE_FREQ_SECS < now;
        if long_enough || testing_network || prev == 0 {
            self.mark_dirty("bandwidth has changed");
            self.last_bandwidth_change = now;
        }
    }

    /// The periodic check.
    pub fn decide(&mut self, now: u64, listing: Listing) -> PublishDecision {
        let clean_since = match self.clean_since {
            None => {
                return PublishDecision::Publish {
                    reason: "no descriptor published yet".into(),
                }
            }
            Some(t) => t,
        };
        if let Some(r) = &self.dirty_reason {
            return PublishDecision::Publish { reason: r.clone() };
        }
        if clean_since + FORCE_REGENERATE_SECS < now {
            return PublishDecision::Publish {
                reason: "time for new descriptor".into(),
            };
        }
        let fast_reason = match listing {
            Listing::NoConsensus => None,
            Listing::NotListed => Some("not listed in consensus"),
            Listing::Listed {
                stale_desc,
                consensus_valid_after,
            } if stale_desc && consensus_valid_after > clean_since => {
                Some("listed as stale in consensus")
            }
            Listing::Listed { .. } => None,
        };
        if let Some(r) = fast_reason {
            if clean_since + FAST_RETRY_SECS < now {
                return PublishDecision::Publish { reason: r.into() };
            }
        }
        PublishDecision::Wait {
            check_again_in: CHECK_INTERVAL_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publishes(d: &PublishDecision) -> bool {
        matches!(d, PublishDecision::Publish { .. })
    }

    #[test]
    fn first_publish_then_every_18_hours() {
        let mut s = PublishState::new();
        assert!(publishes(&s.decide(1000, Listing::NoConsensus)));
        s.published(1000, 0);
        let listed = Listing::Listed {
            stale_desc: false,
            consensus_valid_after: 900,
        };
        assert_eq!(
            s.decide(1000 + FORCE_REGENERATE_SECS, listed),
            PublishDecision::Wait { check_again_in: 60 }
        );
        assert_eq!(
            s.decide(1001 + FORCE_REGENERATE_SECS, listed),
            PublishDecision::Publish {
                reason: "time for new descriptor".into()
            }
        );
    }

    #[test]
    fn changes_publish_immediately_and_keep_first_reason() {
        let mut s = PublishState::new();
        s.published(0, 100);
        s.mark_dirty("onion key rotated");
        s.mark_dirty("address changed");
        assert_eq!(
            s.decide(1, Listing::NoConsensus),
            PublishDecision::Publish {
                reason: "onion key rotated".into()
            }
        );
        s.published(1, 100);
        assert!(!s.is_dirty());
        assert!(!publishes(&s.decide(2, Listing::NoConsensus)));
    }

    #[test]
    fn fast_retry_while_unlisted_or_stale() {
        let mut s = PublishState::new();
        s.published(10_000, 0);
        assert!(!publishes(
            &s.decide(10_000 + FAST_RETRY_SECS, Listing::NotListed)
        ));
        assert!(publishes(
            &s.decide(10_001 + FAST_RETRY_SECS, Listing::NotListed)
        ));
        // Stale only counts if the consensus is newer than our descriptor.
        let stale_old = Listing::Listed {
            stale_desc: true,
            consensus_valid_after: 9_000,
        };
        assert!(!publishes(&s.decide(20_000, stale_old)));
        let stale_new = Listing::Listed {
            stale_desc: true,
            consensus_valid_after: 11_000,
        };
        assert!(publishes(&s.decide(20_000, stale_new)));
        assert!(!publishes(&s.decide(20_000, Listing::NoConsensus)));
    }

    #[test]
    fn bandwidth_changes() {
        let mut s = PublishState::new();
        s.published(0, 1000);
        // Within a factor of two: nothing.
        s.note_bandwidth(100, 100, false, 1900, false);
        assert!(!s.is_dirty());
        // Doubled, but first change is only allowed once 3h passed since the last one (0).
        s.note_bandwidth(100, 100, false, 2500, false);
        assert!(!s.is_dirty());
        s.note_bandwidth(MAX_BANDWIDTH_CHANGE_FREQ_SECS + 1, 100, false, 2500, false);
        assert!(s.is_dirty());
        s.published(MAX_BANDWIDTH_CHANGE_FREQ_SECS + 1, 2500);
        // Too soon after the last change, unless on a test network.
        s.note_bandwidth(MAX_BANDWIDTH_CHANGE_FREQ_SECS + 10, 100, false, 100, false);
        assert!(!s.is_dirty());
        s.note_bandwidth(MAX_BANDWIDTH_CHANGE_FREQ_SECS + 10, 100, false, 100, true);
        assert!(s.is_dirty());
        // After a day of uptime, bandwidth alone never triggers.
        let mut s = PublishState::new();
        s.published(0, 0);
        s.note_bandwidth(10, MAX_UPTIME_BANDWIDTH_CHANGE_SECS + 1, false, 5000, false);
        assert!(!s.is_dirty());
        // From zero: immediately.
        s.note_bandwidth(10, 10, false, 5000, false);
        assert!(s.is_dirty());
    }
}
