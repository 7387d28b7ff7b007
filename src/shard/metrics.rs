//! Per-shard counters. Plain u64s owned by the shard thread (no atomics on the hot path);
//! the final values come back from `Runtime::stop`, a control plane can export them later.

/// Counters of one shard; every bounded queue/table has a counter for hitting its bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMetrics {
    /// Connections accepted on this shard's listener.
    pub accepted: u64,
    /// Accepted sockets closed at once because the connection table (or, with slot
    /// classes, the inbound share with nothing left to evict) was full.
    pub accept_rejected_table_full: u64,
    /// Accepts refused while the inbound share was held by handshakes already evicted and
    /// still closing (a burst faster than closes complete), not by a full table.
    pub accept_rejected_evicting: u64,
    /// Accept completions that failed (EMFILE, ...).
    pub accept_errors: u64,
    /// Outbound connects that completed.
    pub connected: u64,
    /// Outbound connects that failed or timed out.
    pub connect_failed: u64,
    /// Connections closed (any reason).
    pub closed: u64,
    /// Connections open now.
    pub conns_open: u64,
    /// Highest `conns_open` seen.
    pub conns_peak: u64,
    /// Connection-table slots allocated now, live or free (they grow in chunks with load
    /// and go back after a peak: `shard::conn::ConnTable`).
    pub conn_slots_allocated: u64,
    /// Connection-table chunks given back after a peak.
    pub conn_chunks_released: u64,
    /// Receive completions carrying data.
    pub recv_completions: u64,
    /// Bytes received.
    pub recv_bytes: u64,
    /// Multishot recv stopped because the provided buffer ring ran dry (ENOBUFS).
    pub recv_no_buffers: u64,
    /// Multishot recv re-armed after it ended.
    pub recv_rearms: u64,
    /// Receives armed with a length cap the handler asked for (`Outbox::set_read_cap`:
    /// reads that end on a TLS record boundary).
    pub recv_capped: u64,
    /// Send operations submitted (copying).
    pub send_ops: u64,
    /// Zero-copy send operations submitted.
    pub send_zc_ops: u64,
    /// Zero-copy notifications that said the kernel copied anyway (e.g. loopback).
    pub send_zc_copied: u64,
    /// Bytes the kernel accepted from our send buffers.
    pub send_bytes: u64,
    /// Sends refused because a connection hit its pending-output bound.
    pub send_backpressure: u64,
    /// Sends refused because the shard's send buffer pool was empty.
    pub send_pool_exhausted: u64,
    /// Highest number of send buffers queued on one connection.
    pub send_queue_peak_bufs: u64,
    /// Highest number of send buffers in use in the pool.
    pub send_pool_peak_bufs: u64,
    /// `on_writable` notifications given.
    pub writable_events: u64,
    /// pause_read requests that stopped an armed recv.
    pub read_pauses: u64,
    /// resume_read requests.
    pub read_resumes: u64,
    /// Items pushed to other shards.
    pub cross_pushed: u64,
    /// Pushes refused because the destination queue was full.
    pub cross_push_full: u64,
    /// Items received from other shards.
    pub cross_popped: u64,
    /// Wake-ups (eventfd writes) sent to other shards: one per batch.
    pub cross_wakeups_sent: u64,
    /// Wake-ups received on this shard's eventfd.
    pub wakeups_received: u64,
    /// Timer ticks delivered.
    pub ticks: u64,
    /// Connection-table slots held per class (closing connections included; see
    /// `shard::slots`): outbound, authenticated inbound, inbound handshakes.
    pub slots_outbound_in_use: u64,
    pub slots_authenticated_in_use: u64,
    pub slots_handshake_in_use: u64,
    /// Connections refused for their class's bound: outbound connects (`TableFull`),
    /// handshakes that could not be promoted (closed), accepts with nothing to evict.
    pub slots_outbound_refused: u64,
    pub slots_authenticated_refused: u64,
    pub slots_handshake_refused: u64,
    /// Oldest unauthenticated handshakes closed to admit a new connection.
    pub slots_handshake_evicted: u64,
    /// Handshakes closed for outliving the shortened timeout under pressure
    /// (`slots::PRESSURE_HANDSHAKE_TIMEOUT`).
    pub slots_handshake_expired: u64,
    /// Times the submission queue was full and had to be flushed early.
    pub sq_full_flushes: u64,
    /// Completions handled.
    pub completions: u64,
    /// Event-loop iterations.
    pub loop_iterations: u64,
    /// Operations still in flight when shutdown gave up waiting (their memory was leaked).
    pub shutdown_leaked_ops: u64,
    /// Connections closed without their last output: the peer had not read it within
    /// `HOLD_OPEN_LIMIT` of the close (C tor's `connection_expire_held_open`).
    pub held_open_expired: u64,
    /// Times the global read bucket (BandwidthRate) ran dry on this shard.
    pub bw_global_read_empty: u64,
    /// Times the global write bucket ran dry on this shard.
    pub bw_global_write_empty: u64,
    /// Times the relayed read bucket (RelayBandwidthRate) ran dry on this shard.
    pub bw_relayed_read_empty: u64,
    /// Times the relayed write bucket ran dry on this shard.
    pub bw_relayed_write_empty: u64,
    /// Receives cancelled because a read bucket was empty (resumed at the next refill).
    pub bw_read_pauses: u64,
    /// Sends held back because a write bucket was empty (started at the next refill).
    pub bw_write_waits: u64,
    /// Tokens in this shard's local buckets (global read, global write, relayed read,
    /// relayed write), 0 when in debt; as of the last tick.
    pub bw_global_read_tokens: u64,
    pub bw_global_write_tokens: u64,
    pub bw_relayed_read_tokens: u64,
    pub bw_relayed_write_tokens: u64,
}
