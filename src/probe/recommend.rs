//! From a [`Machine`] to the hardware profile Fors recommends for it, every value with the
//! reason it was chosen, rendered as a commented TOML file `config::HardwareProfile` parses.

use super::parse::format_cpu_list;
use super::Machine;
use crate::config::HardwareProfile;
use crate::relay::shardcfg::{default_max_mem_in_queues, FD_RESERVE};

const GIB: u64 = 1 << 30;
/// RAM assumed when /proc/meminfo cannot be read: small enough to be safe anywhere.
const FALLBACK_RAM: u64 = 2 * GIB;
/// RAM budgeted per connection when sizing tables: a channel's output queue
/// (`channel_outbuf_cells` × 514 bytes, 128 KiB at 256 cells) is the largest per-connection
/// cost, but few channels hold a full queue at once; 64 KiB is the average allowed.
const RAM_PER_CONNECTION: u64 = 64 << 10;
/// Largest per-shard table the profile parser accepts for channels.
const MAX_CHANNELS: u64 = 1_000_000;

/// A recommended profile and why each value was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub profile: HardwareProfile,
    /// Key → reason, for every key of the profile.
    pub why: Vec<(&'static str, String)>,
    /// CPUs left to NIC interrupts and housekeeping (the allowed CPUs not in `cores`).
    pub irq_cores: Vec<u32>,
}

/// What a profile needs from the system: open files and locked memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    pub shards: u32,
    /// Every table full: all channels and streams of all shards, plus the reserve.
    pub nofile: u64,
    /// Registered (pinned) send buffers of all shards, plus 1 MiB for the rings.
    pub memlock: u64,
}

/// The limits `profile` needs on a machine whose process may use `allowed_cpus` CPUs.
pub fn needs(profile: &HardwareProfile, allowed_cpus: usize) -> Needs {
    let shards = profile.shard_count(allowed_cpus as u32);
    let per_shard =
        u64::from(profile.max_channels_per_shard) + u64::from(profile.max_streams_per_shard);
    let send_pool = u64::from(profile.send_buffers_per_shard) * u64::from(profile.recv_buffer_size);
    Needs {
        shards,
        nofile: u64::from(shards) * per_shard + FD_RESERVE,
        memlock: u64::from(shards) * send_pool + (1 << 20),
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / GIB as f64)
}

/// The profile for `m`.
pub fn recommend(m: &Machine) -> Recommendation {
    let mut p = HardwareProfile::default();
    let mut why: Vec<(&'static str, String)> = Vec::new();
    let ram = m.mem_total_bytes.unwrap_or(FALLBACK_RAM);
    let ram_note = match m.mem_total_bytes {
        Some(r) => gib(r),
        None => format!(
            "unknown (/proc/meminfo unreadable; assuming {})",
            gib(FALLBACK_RAM)
        ),
    };

    // Cores: one shard per allowed CPU, minus one physical core for NIC interrupts on a box
    // big enough to spare it, kept on the NIC's NUMA node when there are several.
    let mut cores: Vec<u32> = m.allowed_cpus.clone();
    let mut core_why = format!(
        "This process may use CPUs {} ({} physical core(s)).",
        format_cpu_list(&m.allowed_cpus),
        m.smt_groups.len()
    );
    let nic_node = m.nics.iter().find_map(|n| n.numa_node);
    if m.numa_nodes.len() > 1 {
        if let Some(node_cpus) = nic_node.and_then(|n| m.numa_nodes.get(&n)) {
            let on_node: Vec<u32> = cores
                .iter()
                .copied()
                .filter(|c| node_cpus.contains(c))
                .collect();
            if on_node.len() >= 2 {
                core_why += &format!(
                    " {} NUMA nodes: shards stay on node {} with the NIC, so cells do not cross \
                     the interconnect.",
                    m.numa_nodes.len(),
                    nic_node.unwrap_or(0)
                );
                cores = on_node;
            }
        }
    } else {
        core_why += if m.numa_nodes.is_empty() {
            " No NUMA nodes shown by the kernel."
        } else {
            " One NUMA node."
        };
    }
    let nic_irqs = m.nics.iter().any(|n| !n.irqs.is_empty());
    let physical: Vec<&Vec<u32>> = m
        .smt_groups
        .iter()
        .filter(|g| g.iter().any(|c| cores.contains(c)))
        .collect();
    if physical.len() >= 4 && nic_irqs {
        let spare = physical[0].clone();
        cores.retain(|c| !spare.contains(c));
        core_why += &format!(
            " CPU(s) {} (one physical core) are left out for NIC interrupts and housekeeping; \
             `fors tune` moves NIC IRQs there.",
            format_cpu_list(&spare)
        );
    } else if !nic_irqs {
        core_why += " No NIC interrupts found, so no core is kept back for them.";
    } else {
        core_why += &format!(
            " Only {} physical core(s): too few to give one to interrupts alone, so every CPU \
             runs a shard.",
            physical.len()
        );
    }
    if m.smt_groups.iter().any(|g| g.len() > 1) {
        core_why += " SMT siblings are listed too (each runs its own shard); drop the second \
                     sibling of each core to give every shard a whole core.";
    }
    if cores.is_empty() {
        cores = m.allowed_cpus.clone();
    }
    cores.truncate(256);
    let shards = cores.len().max(1) as u32;
    let irq_cores: Vec<u32> = m
        .allowed_cpus
        .iter()
        .copied()
        .filter(|c| !cores.contains(c))
        .collect();
    p.cores = cores;
    p.shards = if p.cores.is_empty() { 0 } else { shards };
    why.push((
        "shards",
        format!("One shard per listed core ({shards}): Fors pins one shard thread on each."),
    ));
    why.push(("cores", core_why));

    // Rings and pools by RAM per shard.
    let per_shard = ram / u64::from(shards);
    let (tier, sq, cq, bufs) = if per_shard >= 4 * GIB {
        ("large", 1024, 4096, 2048)
    } else if per_shard >= GIB {
        ("medium", 512, 2048, 1024)
    } else {
        ("small", 256, 1024, 256)
    };
    p.sq_entries = sq;
    p.cq_entries = cq;
    p.recv_buffers_per_shard = bufs;
    p.send_buffers_per_shard = bufs;
    let ring_why = format!(
        "RAM {ram_note}, {} per shard: the {tier} tier (>= 4 GiB: 1024/4096 and 2048 buffers; \
         >= 1 GiB: 512/2048 and 1024; else the generic 256/1024 and 256).",
        gib(per_shard)
    );
    why.push(("sq_entries", ring_why.clone()));
    why.push((
        "cq_entries",
        "Four times the SQ: multishot receives and zero-copy notifications post several \
         completions per submission."
            .into(),
    ));
    why.push((
        "recv_buffer_size",
        "16 KiB: a whole TLS record's plaintext, many cells per completion.".into(),
    ));
    why.push((
        "recv_buffers_per_shard",
        format!(
            "{ring_why} {} MiB of receive buffers per shard.",
            u64::from(bufs) * 16 / 1024
        ),
    ));
    why.push((
        "send_buffers_per_shard",
        format!(
            "As many as receive buffers. They are registered with io_uring, so pinned: \
             {} MiB locked per shard (`fors tune` checks LimitMEMLOCK).",
            u64::from(bufs) * 16 / 1024
        ),
    ));
    p.zero_copy_send_min_bytes = 0;
    why.push((
        "zero_copy_send_min_bytes",
        "Off: measured never to win to local sockets (hw-profiles/README.md); turn it on only \
         after measuring on this NIC."
            .into(),
    ));
    let wide_aes = m.crypto.aes.starts_with("vaes");
    p.cells_per_crypto_batch = if wide_aes { 32 } else { 16 };
    why.push((
        "cells_per_crypto_batch",
        format!(
            "AES path {} (the one the relay uses here): {}",
            m.crypto.aes,
            if wide_aes {
                "32 cells fill the wide VAES pipeline."
            } else {
                "16, the generic batch; no wide AES to fill."
            }
        ),
    ));
    let big = tier == "large";
    p.cross_shard_batch = if big { 64 } else { 32 };
    p.cross_shard_queue_cells = if big { 16384 } else { 4096 };
    why.push((
        "cross_shard_batch",
        format!(
            "{} tier: larger hand-offs amortise cross-core cache traffic.",
            tier
        ),
    ));
    why.push((
        "cross_shard_queue_cells",
        format!(
            "{} tier: {} cells (x 514 bytes) per shard-to-shard ring.",
            tier, p.cross_shard_queue_cells
        ),
    ));
    why.push((
        "onion_handshakes_per_tick",
        "Generic value; `fors bench-crypto` (ntor_server_us) shows the handshake cost here.".into(),
    ));
    for k in [
        "circuit_queue_cells",
        "channel_outbuf_cells",
        "stream_buffer_bytes",
    ] {
        why.push((
            k,
            "Generic value: a protocol bound, not a machine one.".into(),
        ));
    }

    // Tables: connections the RAM can carry, capped by the largest fd limit the kernel allows.
    let by_ram = ram / 2 / RAM_PER_CONNECTION;
    let nr_open = m
        .sysctls
        .get("fs.nr_open")
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse::<u64>().ok());
    let total = match nr_open {
        Some(n) => by_ram.min(n.saturating_sub(FD_RESERVE)),
        None => by_ram,
    };
    let per_shard_conns = total / u64::from(shards);
    let half = (per_shard_conns / 2).clamp(1024, MAX_CHANNELS);
    p.max_channels_per_shard = half as u32;
    p.max_streams_per_shard = half as u32;
    p.max_circuits_per_shard = (half * 8).min(10_000_000) as u32;
    let need = needs(&p, m.allowed_cpus.len());
    why.push((
        "max_channels_per_shard",
        format!(
            "Half of RAM at 64 KiB per connection is {by_ram} connections{}; {per_shard_conns} per \
             shard, half channels and half streams. All tables full need {} open files \
             (LimitNOFILE; now {}): `fors tune` prints the drop-in. Until the limit is \
             raised the relay caps each table at its share of the limit.",
            match nr_open {
                Some(n) => format!(" (fs.nr_open {n})"),
                None => String::new(),
            },
            need.nofile,
            m.nofile
                .and_then(|l| l.hard)
                .map_or("unlimited or unknown".to_string(), |h| format!(
                    "hard limit {h}"
                )),
        ),
    ));
    why.push((
        "max_circuits_per_shard",
        "Eight circuits per channel (the generic ratio).".into(),
    ));
    why.push((
        "max_streams_per_shard",
        "As many as channels (see max_channels_per_shard).".into(),
    ));
    p.max_mem_in_queues_bytes = 0;
    why.push((
        "max_mem_in_queues_bytes",
        format!(
            "0: the torrc's MaxMemInQueues, else C tor's automatic rule, here {}.",
            gib(default_max_mem_in_queues(m.mem_total_bytes))
        ),
    ));
    p.description = format!(
        "Written by fors probe: {}, {} CPUs, {}",
        m.cpu.model,
        m.allowed_cpus.len(),
        ram_note
    );
    Recommendation {
        profile: p,
        why,
        irq_cores,
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Wraps `text` into `# ` comment lines of at most 96 columns.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for w in text.split_whitespace() {
        if line.len() + 1 + w.len() > 96 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(w);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The profile as TOML with each key's reason above it (every key set, so the file says it all).
pub fn render(r: &Recommendation, m: &Machine) -> String {
    let p = &r.profile;
    let mut out = String::new();
    out += &comment(&format!(
        "Hardware profile written by `fors probe --write` on {} (kernel {}, AES path {}, SHA-1 \
         {}). Keys: hw-profiles/README.md. Use it with `HardwareProfile /path/to/this.toml` in \
         the torrc; `fors tune --profile /path/to/this.toml` prints the system changes it asks \
         for.",
        m.cpu.model,
        m.kernel_release.as_deref().unwrap_or("unknown"),
        m.crypto.aes,
        m.crypto.sha1,
    ));
    if !r.irq_cores.is_empty() {
        out += &comment(&format!(
            "CPUs left for NIC interrupts: {}.",
            format_cpu_list(&r.irq_cores)
        ));
    }
    out += &format!("description = {}\n", toml_str(&p.description));
    let cores = p
        .cores
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let values: Vec<(&str, String)> = vec![
        ("shards", p.shards.to_string()),
        ("cores", format!("[{cores}]")),
        ("sq_entries", p.sq_entries.to_string()),
        ("cq_entries", p.cq_entries.to_string()),
        ("recv_buffer_size", p.recv_buffer_size.to_string()),
        (
            "recv_buffers_per_shard",
            p.recv_buffers_per_shard.to_string(),
        ),
        (
            "send_buffers_per_shard",
            p.send_buffers_per_shard.to_string(),
        ),
        (
            "zero_copy_send_min_bytes",
            p.zero_copy_send_min_bytes.to_string(),
        ),
        (
            "cells_per_crypto_batch",
            p.cells_per_crypto_batch.to_string(),
        ),
        ("cross_shard_batch", p.cross_shard_batch.to_string()),
        (
            "onion_handshakes_per_tick",
            p.onion_handshakes_per_tick.to_string(),
        ),
        (
            "cross_shard_queue_cells",
            p.cross_shard_queue_cells.to_string(),
        ),
        ("circuit_queue_cells", p.circuit_queue_cells.to_string()),
        ("channel_outbuf_cells", p.channel_outbuf_cells.to_string()),
        ("stream_buffer_bytes", p.stream_buffer_bytes.to_string()),
        (
            "max_channels_per_shard",
            p.max_channels_per_shard.to_string(),
        ),
        (
            "max_circuits_per_shard",
            p.max_circuits_per_shard.to_string(),
        ),
        ("max_streams_per_shard", p.max_streams_per_shard.to_string()),
        (
            "max_mem_in_queues_bytes",
            p.max_mem_in_queues_bytes.to_string(),
        ),
    ];
    for (k, v) in values {
        out.push('\n');
        if let Some((_, w)) = r.why.iter().find(|(key, _)| *key == k) {
            out += &comment(w);
        }
        out += &format!("{k} = {v}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Nic, NicIrq};
    use super::*;

    fn machine(cpus: u32, smt: bool, ram_gib: u64, nic: bool) -> Machine {
        let allowed: Vec<u32> = (0..cpus).collect();
        let smt_groups = if smt {
            (0..cpus / 2).map(|c| vec![c, c + cpus / 2]).collect()
        } else {
            allowed.iter().map(|&c| vec![c]).collect()
        };
        let mut m = Machine {
            allowed_cpus: allowed,
            smt_groups,
            mem_total_bytes: Some(ram_gib * GIB),
            ..Machine::default()
        };
        m.cpu.model = "Test CPU".into();
        m.crypto.aes = "vaes512".into();
        m.sysctls
            .insert("fs.nr_open".into(), Some("1048576".into()));
        if nic {
            m.nics.push(Nic {
                name: "eth0".into(),
                irqs: vec![NicIrq {
                    irq: 38,
                    name: "virtio2-input.0".into(),
                    affinity: Some(vec![1]),
                    count: 5,
                }],
                ..Nic::default()
            });
        }
        m
    }

    #[test]
    fn small_box_uses_every_cpu_and_parses() {
        let m = machine(2, false, 23, true);
        let r = recommend(&m);
        assert_eq!(r.profile.cores, [0, 1]);
        assert_eq!(r.profile.shards, 2);
        assert!(r.irq_cores.is_empty());
        assert_eq!(r.profile.cells_per_crypto_batch, 32);
        assert_eq!(
            r.profile.sq_entries, 1024,
            "11.5 GiB per shard is the large tier"
        );
        let text = render(&r, &m);
        let parsed = HardwareProfile::from_toml(&text, "t.toml").unwrap();
        assert_eq!(parsed, r.profile);
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.len(), 20, "every key is written");
        assert!(text.contains("# One shard per listed core (2)"));
    }

    #[test]
    fn big_box_keeps_a_core_for_irqs() {
        let m = machine(16, true, 64, true);
        let r = recommend(&m);
        assert_eq!(
            r.irq_cores,
            [0, 8],
            "the first physical core and its sibling"
        );
        assert_eq!(r.profile.shards, 14);
        assert!(!r.profile.cores.contains(&0) && !r.profile.cores.contains(&8));
        let n = needs(&r.profile, 16);
        assert_eq!(n.shards, 14);
        let per = u64::from(r.profile.max_channels_per_shard)
            + u64::from(r.profile.max_streams_per_shard);
        assert_eq!(n.nofile, 14 * per + FD_RESERVE);
        // Tables fit under fs.nr_open.
        assert!(n.nofile <= 1_048_576 + FD_RESERVE);
        HardwareProfile::from_toml(&render(&r, &m), "t.toml").unwrap();
    }

    #[test]
    fn unknown_memory_and_no_nic_still_give_a_valid_profile() {
        let mut m = machine(4, false, 1, false);
        m.mem_total_bytes = None;
        m.sysctls.clear();
        let r = recommend(&m);
        assert_eq!(r.profile.shards, 4, "no NIC IRQs: no core kept back");
        assert_eq!(r.profile.sq_entries, 256, "2 GiB assumed: small tier");
        let text = render(&r, &m);
        assert!(text.contains("unknown (/proc/meminfo unreadable"));
        HardwareProfile::from_toml(&text, "t.toml").unwrap();
        // An empty machine (nothing readable) does not panic either.
        let e = Machine::default();
        HardwareProfile::from_toml(&render(&recommend(&e), &e), "t.toml").unwrap();
    }
}
