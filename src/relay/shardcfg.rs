//! From a hardware profile (relay vocabulary: channels, streams, cells) to the shard
//! runtime's [`ShardConfig`] (io_uring vocabulary: connections, buffers, queue slots).
//!
//! Keys the profile has and the runtime has not yet any use for (circuit queues, crypto
//! batch, handshakes per tick) are kept by the relay handler, not here.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cell::link::CELL_LEN;
use crate::config::HardwareProfile;
use crate::proto::channel::ChannelConfig;
use crate::proto::circuit::{CircuitConfig, MemBudget};
use crate::proto::conflux::HomeKey;
use crate::shard::{RuntimeConfig, ShardConfig};

/// Descriptors kept back from the connection tables for everything else the process opens
/// (log files, key files, eventfds, io_uring fds, the MetricsPort, directory fetches).
pub const FD_RESERVE: u64 = 128;

/// Ring slots one shard's outgoing cross-shard queues may hold in all. The mesh has one
/// ring per ordered pair of shards, N(N−1) rings, so a fixed per-pair size grows with N²:
/// the generic profile's 4,096 slots of `size_of::<RelayMsg>()` (616 bytes) are 2.5 GB of
/// rings at 32 shards once used (docs/scaling.md §5), none of it under `MaxMemInQueues`.
/// Each pair's traffic falls as 1/(N−1), so its ring can too: with this budget a shard's
/// rings stay at ≈ 10 MB whatever N is. What does not fit waits in the sender's overflow,
/// which is bounded and charged to the cell pool (`relay::cross`), or blocks the circuit.
pub const CROSS_SLOTS_PER_SHARD: u32 = 16_384;

/// One ring's slots for `shards` shards: the profile's `cross_shard_queue_cells`, lowered to
/// this shard's share of [`CROSS_SLOTS_PER_SHARD`] (a power of two), but never below four
/// hand-off batches (one hand-off must always fit, with room for the consumer to lag).
pub fn cross_queue_capacity(profile: &HardwareProfile, shards: u32) -> u32 {
    let wanted = profile.cross_shard_queue_cells;
    let peers = shards.saturating_sub(1).max(1);
    let share = CROSS_SLOTS_PER_SHARD / peers;
    // Largest power of two not above the share.
    let share = if share == 0 {
        1
    } else {
        1 << (31 - share.leading_zeros())
    };
    let floor = profile
        .cross_shard_batch
        .saturating_mul(4)
        .max(64)
        .next_power_of_two();
    wanted.min(share).max(floor.min(wanted))
}

pub use crate::config::hwprofile::RECV_BUF_SLACK;

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
        recv_buf_size: profile.recv_buffer_size + RECV_BUF_SLACK,
        recv_buf_count: profile.recv_buffers_per_shard,
        max_connections,
        // The relay tells the shard when a link handshake completes (issue #15).
        slot_classes: true,
        send_buf_size,
        send_buf_count: profile.send_buffers_per_shard,
        max_send_bufs_per_conn,
        // One CQ pass takes up to a quarter of the CQ, at least the runtime's default.
        cqe_batch: (profile.cq_entries / 4).max(base.cqe_batch),
        cross_batch: profile.cross_shard_batch,
        cross_queue_capacity: cross_queue_capacity(profile, shards),
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
/// `TestingTorNetwork` (C `ExtendAllowPrivateAddresses`). `max_mem_in_queues` (bytes, see
/// [`max_mem_in_queues`]) becomes one budget that every shard's clone of the config shares.
/// Conflux's home key is drawn here from the OS RNG, once per process: every shard's clone
/// carries the same one, and no client can predict which shard a nonce is homed on.
pub fn circuit_config(
    profile: &HardwareProfile,
    extend_allow_private: bool,
    max_mem_in_queues: u64,
) -> CircuitConfig {
    let base = CircuitConfig::new(HomeKey::new(rand::random(), rand::random()));
    CircuitConfig {
        mem_budget: Some(Arc::new(MemBudget::from_bytes(max_mem_in_queues))),
        max_circuits: profile.max_circuits_per_shard as usize,
        max_streams: profile.max_streams_per_shard as usize,
        onions_per_run: profile.onion_handshakes_per_tick as usize,
        onion_queue_len: onion_queue_len(profile),
        max_queue_per_circuit: profile.circuit_queue_cells as usize,
        extend_allow_private,
        ..base
    }
}

/// Where the relay-wide cap on queued cells comes from, and its value in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemCapSource {
    /// `TestingMaxMemInQueues` (only under `TestingTorNetwork`).
    Testing,
    /// `MaxMemInQueues` in the torrc.
    Torrc,
    /// The hardware profile's `max_mem_in_queues_bytes`.
    Profile,
    /// C tor's default from the machine's memory (`None`: not detected).
    Auto { total_ram: Option<u64> },
}

/// The cap on memory for queued cells: `TestingMaxMemInQueues` in a testing network, else
/// the torrc's `MaxMemInQueues`, else the profile's `max_mem_in_queues_bytes`
/// (`profile_bytes`), else C tor's
/// default ([`default_max_mem_in_queues`]). The config parsers already raised values under
/// 256 MB to 256 MB (C tor's warning threshold for relays).
pub fn max_mem_in_queues(
    config: &crate::config::Config,
    profile_bytes: u64,
    total_ram: Option<u64>,
) -> (u64, MemCapSource) {
    if config.testing_tor_network && config.testing_max_mem_in_queues != 0 {
        (config.testing_max_mem_in_queues, MemCapSource::Testing)
    } else if config.max_mem_in_queues != 0 {
        (config.max_mem_in_queues, MemCapSource::Torrc)
    } else if profile_bytes != 0 {
        (profile_bytes, MemCapSource::Profile)
    } else {
        (
            default_max_mem_in_queues(total_ram),
            MemCapSource::Auto { total_ram },
        )
    }
}

/// C tor's `MaxMemInQueues` when unset (`compute_real_max_mem_in_queues` in
/// `src/app/config/config.c`, 64-bit builds): 40 % of the machine's RAM if it has at least
/// 8 GiB, else 75 %; then at most 8 GiB and at least 256 MiB. Unknown RAM: 8 GiB.
pub fn default_max_mem_in_queues(total_ram: Option<u64>) -> u64 {
    const GIB: u64 = 1 << 30;
    const MAX_DEFAULT: u64 = 8 * GIB;
    let Some(ram) = total_ram else {
        return MAX_DEFAULT;
    };
    let avail = if ram >= 8 * GIB {
        ram / 5 * 2
    } else {
        ram / 4 * 3
    };
    avail.clamp(GIB / 4, MAX_DEFAULT)
}

/// The machine's physical memory (C `get_total_system_memory`: pages × page size).
pub fn total_system_memory() -> Option<u64> {
    use nix::unistd::{sysconf, SysconfVar};
    let known = |v| sysconf(v).ok().flatten().filter(|&n| n > 0);
    let pages = known(SysconfVar::_PHYS_PAGES)?;
    let page = known(SysconfVar::PAGE_SIZE)?;
    Some(pages as u64 * page as u64)
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
        .max(crate::proto::circuit::DEFAULT_ONION_QUEUE_LEN)
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

    /// The rings of one shard stay within the budget as N grows (docs/scaling.md §5), down
    /// to four hand-off batches; never above the profile's own size.
    #[test]
    fn cross_rings_per_shard_stay_bounded_as_shards_grow() {
        for p in profiles() {
            let floor = (p.cross_shard_batch * 4).max(64).next_power_of_two();
            let mut last = u32::MAX;
            for shards in [1u32, 2, 3, 4, 8, 16, 32, 64, 128, 255] {
                let c = shard_config_from_profile(&p, shards, None);
                c.validate().unwrap();
                let cap = c.cross_queue_capacity;
                assert!(cap.is_power_of_two());
                assert!(cap <= p.cross_shard_queue_cells, "{shards}: {cap}");
                assert!(
                    cap >= floor.min(p.cross_shard_queue_cells),
                    "{shards}: {cap}"
                );
                assert!(cap >= c.cross_batch, "{shards}: {cap} < batch");
                assert!(cap <= last, "{shards}: rings grew with N");
                last = cap;
                let all = u64::from(cap) * u64::from(shards.saturating_sub(1));
                assert!(
                    all <= u64::from(CROSS_SLOTS_PER_SHARD) || cap == floor,
                    "{shards} shards: {all} slots per shard"
                );
            }
            // The generic profile (4,096 cells, batch 32): 4,096 up to 5 shards, 512 at 32,
            // 256 at 64 and the floor (four batches: 128) from 128 on.
            if p.cross_shard_queue_cells == 4096 && p.cross_shard_batch == 32 {
                let at = |n| shard_config_from_profile(&p, n, None).cross_queue_capacity;
                assert_eq!(
                    (at(2), at(5), at(8), at(32), at(64), at(128)),
                    (4096, 4096, 2048, 512, 256, 128)
                );
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
        // Two shards: one peer, the whole share.
        assert_eq!(
            c.cross_queue_capacity,
            p.cross_shard_queue_cells.min(CROSS_SLOTS_PER_SHARD)
        );
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
    fn default_max_mem_in_queues_follows_c_tor() {
        const GIB: u64 = 1 << 30;
        assert_eq!(default_max_mem_in_queues(None), 8 * GIB);
        // Under 8 GiB: 75 %, at least 256 MiB.
        assert_eq!(default_max_mem_in_queues(Some(4 * GIB)), 3 * GIB);
        assert_eq!(default_max_mem_in_queues(Some(GIB / 4)), GIB / 4);
        assert_eq!(default_max_mem_in_queues(Some(7 * GIB)), 7 * GIB / 4 * 3);
        // From 8 GiB: 40 %, at most 8 GiB.
        assert_eq!(default_max_mem_in_queues(Some(8 * GIB)), 8 * GIB / 5 * 2);
        assert_eq!(default_max_mem_in_queues(Some(16 * GIB)), 16 * GIB / 5 * 2);
        assert_eq!(default_max_mem_in_queues(Some(64 * GIB)), 8 * GIB);
    }

    #[test]
    fn the_cap_comes_from_torrc_then_profile_then_ram() {
        let parse = |text: &str| {
            crate::config::parse_str(&crate::config::MemFs::default(), "torrc", text)
                .unwrap()
                .0
        };
        let base = "ORPort 127.0.0.1:9001\nDataDirectory /tmp/x\nNickname a\n";
        let mut p = profiles()[0].clone();
        let ram = Some(4u64 << 30);
        let c = parse(base);
        assert_eq!(
            max_mem_in_queues(&c, p.max_mem_in_queues_bytes, ram),
            (3 << 30, MemCapSource::Auto { total_ram: ram })
        );
        p.max_mem_in_queues_bytes = 1 << 30;
        assert_eq!(
            max_mem_in_queues(&c, p.max_mem_in_queues_bytes, ram),
            (1 << 30, MemCapSource::Profile)
        );
        let c = parse(&format!("{base}MaxMemInQueues 512 MB\n"));
        assert_eq!(
            max_mem_in_queues(&c, p.max_mem_in_queues_bytes, ram),
            (512 << 20, MemCapSource::Torrc)
        );
        // The testing knob needs a testing network (parse_str refuses it otherwise).
        let c = parse(&format!(
            "{base}TestingTorNetwork 1\nTestingMaxMemInQueues 4 MB\n\
             DirAuthority a orport=1 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 \
             127.0.0.1:1 89ABCDEF0123456789ABCDEF0123456789ABCDEF\n"
        ));
        assert_eq!(
            max_mem_in_queues(&c, p.max_mem_in_queues_bytes, ram),
            (4 << 20, MemCapSource::Testing)
        );
        assert!(crate::config::parse_str(
            &crate::config::MemFs::default(),
            "torrc",
            &format!("{base}TestingMaxMemInQueues 4 MB\n")
        )
        .is_err());
        // Every shard's config shares one budget.
        let cfg = circuit_config(&p, false, 512 << 20);
        let other = cfg.clone();
        assert!(Arc::ptr_eq(
            cfg.mem_budget.as_ref().unwrap(),
            other.mem_budget.as_ref().unwrap()
        ));
        // ...and one conflux home key (review finding L8): every shard computes the same
        // home. Each start draws a new, random one (equal by chance with odds 2^-128).
        assert_eq!(cfg.home_key, other.home_key);
        assert_ne!(cfg.home_key, circuit_config(&p, false, 512 << 20).home_key);
        assert_ne!(cfg.home_key, CircuitConfig::for_tests().home_key);
        assert_eq!(
            cfg.mem_budget.unwrap().cap_cells(),
            (512 << 20) / crate::proto::circuit::CELL_MEM_COST
        );
    }

    #[test]
    fn onion_queue_fits_a_burst_of_a_few_hundred_creates() {
        for p in profiles() {
            let c = circuit_config(&p, false, 256 << 20);
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
