//! From a hardware profile (relay vocabulary: channels, streams, cells) to the shard
//! runtime's [`ShardConfig`] (io_uring vocabulary: connections, buffers, queue slots).
//!
//! Keys the profile has and the runtime has not yet any use for (circuit queues, crypto
//! batch, handshakes per tick) are kept by the relay handler, not here.

use std::net::SocketAddr;

use crate::cell::link::CELL_LEN;
use crate::config::HardwareProfile;
use crate::proto::channel::ChannelConfig;
use crate::proto::circuit::CircuitConfig;
use crate::shard::{RuntimeConfig, ShardConfig};

/// Descriptors kept back from the connection tables for everything else the process opens
/// (log files, key files, eventfds, io_uring fds, the MetricsPort, directory fetches).
pub const FD_RESERVE: u64 = 128;

/// Per-shard sizing from a profile. `fd_limit` is the process's open-files limit: the
/// connection tables of all shards together must fit under it (every live connection is a
/// socket), so each shard's table is capped at its share.
pub fn shard_config_from_profile(
    profile: &HardwareProfile,
    shards: u32,
    fd_limit: Option<u64>,
) -> ShardConfig {
    let base = ShardConfig::default();
    // A connection is a channel (TLS link) or an exit stream.
    let wanted =
        u64::from(profile.max_channels_per_shard) + u64::from(profile.max_streams_per_shard);
    let share = fd_limit
        .map(|l| l.saturating_sub(FD_RESERVE) / u64::from(shards.max(1)))
        .unwrap_or(u64::MAX);
    let max_connections = wanted.min(share).clamp(16, (1 << 24) - 1) as u32;
    // Send buffers are as large as receive buffers (one TLS record each); a channel's output
    // bound in cells becomes a bound in buffers.
    let send_buf_size = profile.recv_buffer_size;
    let outbuf_bytes = u64::from(profile.channel_outbuf_cells) * CELL_LEN as u64;
    let max_send_bufs_per_conn = outbuf_bytes
        .div_ceil(u64::from(send_buf_size))
        .clamp(2, u64::from(profile.send_buffers_per_shard))
        as u32;
    ShardConfig {
        sq_entries: profile.sq_entries,
        cq_entries: profile.cq_entries,
        recv_buf_size: profile.recv_buffer_size,
        recv_buf_count: profile.recv_buffers_per_shard,
        max_connections,
        send_buf_size,
        send_buf_count: profile.send_buffers_per_shard,
        max_send_bufs_per_conn,
        // One CQ pass takes up to a quarter of the CQ, at least the runtime's default.
        cqe_batch: (profile.cq_entries / 4).max(base.cqe_batch),
        cross_batch: profile.cross_shard_batch,
        cross_queue_capacity: profile.cross_shard_queue_cells,
        zero_copy_threshold: profile.zero_copy_send_min_bytes,
        // The runtime's defaults are deliberate (tick 100 ms: circuit timers are coarse;
        // connect timeout 10 s: C tor's is similar for extends); the profile does not set them.
        tick_ms: base.tick_ms,
        connect_timeout_ms: base.connect_timeout_ms,
        listen_backlog: base.listen_backlog,
        shutdown_grace_ms: base.shutdown_grace_ms,
    }
}

/// Per-channel bounds: a channel's output queue holds `channel_outbuf_cells` cells.
pub fn channel_config(profile: &HardwareProfile) -> ChannelConfig {
    ChannelConfig {
        max_output_cells: profile.channel_outbuf_cells as usize,
        ..ChannelConfig::default()
    }
}

/// One shard's circuit core bounds from the profile; `extend_allow_private` follows
/// `TestingTorNetwork` (C `ExtendAllowPrivateAddresses`).
pub fn circuit_config(profile: &HardwareProfile, extend_allow_private: bool) -> CircuitConfig {
    let base = CircuitConfig::default();
    CircuitConfig {
        max_circuits: profile.max_circuits_per_shard as usize,
        max_streams: profile.max_streams_per_shard as usize,
        onions_per_run: profile.onion_handshakes_per_tick as usize,
        onion_queue_len: onion_queue_len(profile),
        max_queue_per_circuit: profile.circuit_queue_cells as usize,
        extend_allow_private,
        ..base
    }
}

/// Onionskins a shard holds before refusing CREATE2 with RESOURCELIMIT: room for
/// `ONION_QUEUE_BATCHES` loop iterations' worth of handshakes (generic: 512, epyc-2core:
/// 1024), so a burst of a few hundred CREATE2s (a client building many circuits, or a
/// load generator with 256 in flight) waits instead of being refused, while a sustained
/// flood beyond what the CPU can answer within `onion_max_delay` is still cut off. At
/// ~150 µs per ntor handshake a full queue of 1024 drains in ~150 ms.
pub fn onion_queue_len(profile: &HardwareProfile) -> usize {
    const ONION_QUEUE_BATCHES: usize = 128;
    (profile.onion_handshakes_per_tick as usize * ONION_QUEUE_BATCHES)
        .max(CircuitConfig::default().onion_queue_len)
}

/// The whole runtime: shard count, pinning (the profile's `cores`, or one core each) and the
/// ORPort listener.
pub fn runtime_config(
    profile: &HardwareProfile,
    shards: u32,
    listen: &[SocketAddr],
    fd_limit: Option<u64>,
) -> RuntimeConfig {
    let cores: Vec<usize> = if profile.cores.len() >= shards as usize {
        profile
            .cores
            .iter()
            .take(shards as usize)
            .map(|&c| c as usize)
            .collect()
    } else {
        Vec::new()
    };
    RuntimeConfig {
        shard_count: shards as usize,
        pin_threads: true,
        cores,
        listen: listen.first().copied(),
        listen_also: listen.iter().skip(1).copied().collect(),
        shard: shard_config_from_profile(profile, shards, fd_limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<HardwareProfile> {
        let search = crate::config::ProfileSearchPath {
            dirs: vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles")],
        };
        vec![
            search.load(Some("generic")).unwrap(),
            search.load(Some("epyc-2core")).unwrap(),
        ]
    }

    #[test]
    fn shipped_profiles_make_valid_shard_configs() {
        for p in profiles() {
            for shards in [1, 2, 8] {
                for limit in [None, Some(1024), Some(1_048_576)] {
                    let c = shard_config_from_profile(&p, shards, limit);
                    c.validate().unwrap_or_else(|e| {
                        panic!("{}: {shards} shards, limit {limit:?}: {e}", p.description)
                    });
                    if let Some(l) = limit {
                        assert!(u64::from(c.max_connections) * u64::from(shards) <= l);
                    }
                }
            }
        }
    }

    #[test]
    fn keys_map_onto_fields() {
        let p = &profiles()[1];
        let c = shard_config_from_profile(p, 2, None);
        assert_eq!(c.sq_entries, p.sq_entries);
        assert_eq!(c.cq_entries, p.cq_entries);
        assert_eq!(c.recv_buf_count, p.recv_buffers_per_shard);
        assert_eq!(c.send_buf_count, p.send_buffers_per_shard);
        assert_eq!(c.cross_queue_capacity, p.cross_shard_queue_cells);
        assert_eq!(c.cross_batch, p.cross_shard_batch);
        assert_eq!(c.zero_copy_threshold, p.zero_copy_send_min_bytes);
        assert_eq!(
            c.max_connections,
            p.max_channels_per_shard + p.max_streams_per_shard
        );
        // 512 cells of 514 bytes in 16 KiB buffers: 17 buffers.
        assert_eq!(c.max_send_bufs_per_conn, 17);
        // The fd limit caps the table: (20000 - 128) / 2.
        assert_eq!(
            shard_config_from_profile(p, 2, Some(20_000)).max_connections,
            9936
        );
        let r = runtime_config(p, 2, &["127.0.0.1:9001".parse().unwrap()], None);
        assert_eq!(r.cores, vec![0, 1]);
        r.validate().unwrap();
        let r = runtime_config(p, 3, &["127.0.0.1:9001".parse().unwrap()], None);
        assert!(r.cores.is_empty());
    }

    #[test]
    fn onion_queue_fits_a_burst_of_a_few_hundred_creates() {
        for p in profiles() {
            let c = circuit_config(&p, false);
            assert_eq!(c.onions_per_run, p.onion_handshakes_per_tick as usize);
            // A load generator's 256 in flight plus clients building circuits...
            assert!(
                c.onion_queue_len >= 512,
                "{}: {}",
                p.description,
                c.onion_queue_len
            );
            // ...but bounded well below what `onion_max_delay` could ever drain.
            assert!(
                c.onion_queue_len <= 4096,
                "{}: {}",
                p.description,
                c.onion_queue_len
            );
        }
    }
}
