//! Start-up sizing of a shard: every table, queue and buffer pool is sized here once.
//!
//! Later filled from the hardware-profile TOML (hence `Deserialize`); every field has a default.

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::ShardError;

/// Per-shard resource bounds. Nothing on the hot path grows past these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Submission queue entries of the shard's io_uring.
    pub sq_entries: u32,
    /// Completion queue entries (≥ sq_entries; multishot ops post many CQEs per SQE).
    pub cq_entries: u32,
    /// Size of each provided receive buffer.
    pub recv_buf_size: u32,
    /// Number of provided receive buffers (power of two, ≤ 32768).
    pub recv_buf_count: u32,
    /// Connection table size (accepted + outbound).
    pub max_connections: u32,
    /// Bound the table by class (`shard::slots`): outbound, authenticated inbound and
    /// inbound handshakes each get a share, and a full handshake class evicts its oldest.
    /// Needs a handler that calls `Outbox::set_authenticated` (the relay does); off, the
    /// table is one pool taken first come, first served.
    pub slot_classes: bool,
    /// Size of each pre-allocated send buffer.
    pub send_buf_size: u32,
    /// Number of send buffers in the shard's pool.
    pub send_buf_count: u32,
    /// Pending-output bound per connection, in send buffers.
    pub max_send_bufs_per_conn: u32,
    /// Completions copied out of the CQ per batch.
    pub cqe_batch: u32,
    /// Cross-shard items popped per handler call.
    pub cross_batch: u32,
    /// Capacity of each cross-shard SPSC queue (power of two).
    pub cross_queue_capacity: u32,
    /// Sends of at least this many contiguous bytes use IORING_OP_SEND_ZC; 0 disables zero-copy.
    pub zero_copy_threshold: u32,
    /// Period of `ConnHandler::on_tick`.
    pub tick_ms: u32,
    /// Outbound connect timeout (linked timeout).
    pub connect_timeout_ms: u32,
    /// listen(2) backlog.
    pub listen_backlog: i32,
    /// How long a stopping shard waits for in-flight operations before giving up.
    pub shutdown_grace_ms: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            sq_entries: 256,
            cq_entries: 1024,
            recv_buf_size: 16 * 1024,
            recv_buf_count: 256,
            max_connections: 1024,
            slot_classes: false,
            send_buf_size: 16 * 1024,
            send_buf_count: 1024,
            max_send_bufs_per_conn: 16,
            cqe_batch: 64,
            cross_batch: 64,
            cross_queue_capacity: 4096,
            zero_copy_threshold: 0,
            tick_ms: 100,
            connect_timeout_ms: 10_000,
            listen_backlog: 1024,
            shutdown_grace_ms: 2000,
        }
    }
}

impl ShardConfig {
    /// Checks every bound; the runtime relies on these (e.g. masks need powers of two).
    pub fn validate(&self) -> Result<(), ShardError> {
        let bad = |m: String| Err(ShardError::Config(m));
        if self.sq_entries == 0 || self.sq_entries > 32768 {
            return bad(format!("sq_entries {} not in 1..=32768", self.sq_entries));
        }
        if self.cq_entries < self.sq_entries {
            return bad(format!("cq_entries {} < sq_entries", self.cq_entries));
        }
        if !self.recv_buf_count.is_power_of_two() || self.recv_buf_count > 32768 {
            return bad(format!(
                "recv_buf_count {} must be a power of two <= 32768",
                self.recv_buf_count
            ));
        }
        if self.recv_buf_size == 0 || self.send_buf_size == 0 {
            return bad("buffer sizes must be non-zero".into());
        }
        if self.max_connections == 0 || self.max_connections >= (1 << 24) {
            return bad(format!(
                "max_connections {} not in 1..2^24",
                self.max_connections
            ));
        }
        if self.send_buf_count == 0 || self.max_send_bufs_per_conn == 0 {
            return bad("send_buf_count and max_send_bufs_per_conn must be non-zero".into());
        }
        let pool = u64::from(self.send_buf_count) * u64::from(self.send_buf_size);
        if pool > (1 << 30) {
            return bad(format!("send pool of {pool} bytes exceeds 1 GiB"));
        }
        if u64::from(self.recv_buf_count) * u64::from(self.recv_buf_size) > (1 << 30) {
            return bad("receive pool exceeds 1 GiB".into());
        }
        if !self.cross_queue_capacity.is_power_of_two() {
            return bad(format!(
                "cross_queue_capacity {} must be a power of two",
                self.cross_queue_capacity
            ));
        }
        if self.cqe_batch == 0 || self.cross_batch == 0 || self.tick_ms == 0 {
            return bad("cqe_batch, cross_batch and tick_ms must be non-zero".into());
        }
        Ok(())
    }
}

/// The whole runtime: how many shards, where they run and listen.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of shards (threads).
    pub shard_count: usize,
    /// Pin shard threads to cores.
    pub pin_threads: bool,
    /// Core id for each shard; empty means shard i takes the i-th available core (mod count).
    pub cores: Vec<usize>,
    /// Address every shard listens on with its own SO_REUSEPORT socket; `None` = no listener.
    pub listen: Option<SocketAddr>,
    /// Further addresses every shard listens on the same way (more ORPorts: IPv4 and IPv6).
    pub listen_also: Vec<SocketAddr>,
    /// Per-shard bounds.
    pub shard: ShardConfig,
}

impl RuntimeConfig {
    /// Checks shard count, core list and the per-shard config.
    pub fn validate(&self) -> Result<(), ShardError> {
        if self.shard_count == 0 || self.shard_count > 256 {
            return Err(ShardError::Config(format!(
                "shard_count {} not in 1..=256",
                self.shard_count
            )));
        }
        if !self.cores.is_empty() && self.cores.len() != self.shard_count {
            return Err(ShardError::Config(format!(
                "{} cores given for {} shards",
                self.cores.len(),
                self.shard_count
            )));
        }
        self.shard.validate()
    }
}
