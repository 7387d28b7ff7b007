//! Giving memory back after a peak (issues #13 and #15), once a second from the idle check
//! (`timers.rs`): the circuit core trims its tables and cell pool
//! (`RelayCore::trim_memory`), and the node's own buffers that kept the capacity of a
//! burst (100k circuits closing at once leave `actions` holding 100k actions' room) are
//! shrunk once they have stayed 4× over their use for 10 s (`util::spare`). Each channel
//! gives back the buffer room of a burst that has passed (`Channel::trim_buffers`): its
//! receive, cell and TLS output buffers grow with use and are not sized at their bounds.

use std::time::Instant;

use super::{log_debug, Kind, RelayNode, ACTION_BUF_CAPACITY};
use crate::util::spare::SpareWatch;

/// One watch per buffer [`RelayNode::housekeep_memory`] looks at.
#[derive(Debug, Default)]
pub(super) struct NodeSpare {
    w: [SpareWatch; 16],
    /// Buffers shrunk so far (logged at debug level when it changes).
    pub shrunk: u64,
    /// Bytes of channel buffer capacity given back so far.
    pub chan_bytes_trimmed: u64,
}

impl RelayNode {
    /// The node's once-a-second memory housekeeping.
    pub(super) fn housekeep_memory(&mut self, now: Instant) {
        self.core.trim_memory();
        // One pass over the table (as the tick's handshake-timeout pass); a channel whose
        // buffers stay busy is left as it is, so this reallocates only after a burst.
        let mut trimmed = 0;
        for c in self.conns.iter_mut().flatten() {
            if let Kind::Channel(ch) = &mut c.kind {
                trimmed += ch.channel.trim_buffers() as u64;
            }
        }
        if trimmed > 0 {
            self.spare.chan_bytes_trimmed += trimmed;
            log_debug!(
                "shard {}: channels gave back {trimmed} bytes of buffer room ({} so far)",
                self.shard.0,
                self.spare.chan_bytes_trimmed
            );
        }
        let w = &mut self.spare.w;
        // Floors: the capacities `RelayNode::new` gives them.
        let shrunk = [
            w[0].check(&mut self.actions, ACTION_BUF_CAPACITY, now),
            w[1].check(&mut self.spare_actions, ACTION_BUF_CAPACITY, now),
            w[2].check(&mut self.events, 8, now),
            w[3].check(&mut self.answers, 8, now),
            w[4].check(&mut self.cross_in, 64, now),
            w[5].check(&mut self.dirty, 64, now),
            w[6].check(&mut self.dns_done, 64, now),
            w[7].check(&mut self.scratch_unblock, 0, now),
            w[8].check(&mut self.scratch_resume, 0, now),
            w[9].check(&mut self.pending_extends, 0, now),
            w[10].check(&mut self.remote_next, 0, now),
            w[11].check(&mut self.remote_next_by_circ, 0, now),
            w[12].check(&mut self.streams, 0, now),
            w[13].check(&mut self.draining, 0, now),
            w[14].check(&mut self.chans_in_use, 0, now),
            w[15].check(&mut self.proxy_attached, 0, now),
        ]
        .iter()
        .filter(|&&s| s)
        .count() as u64;
        // The cross-shard overflows, one per other shard, after a burst toward one.
        let shrunk = shrunk
            + self
                .links
                .iter_mut()
                .map(|l| l.trim_spare(now))
                .filter(|&s| s)
                .count() as u64;
        if shrunk > 0 {
            self.spare.shrunk += shrunk;
            log_debug!(
                "shard {}: gave back the spare capacity of {shrunk} buffer(s) ({} so far)",
                self.shard.0,
                self.spare.shrunk
            );
        }
    }
}
