//! `fors probe [--json] [--write FILE]`: reads the machine (CPU, crypto paths, cores, SMT,
//! NUMA, memory, kernel and io_uring, NICs with queues and IRQs, sysctls, limits), prints a
//! report, and writes a hardware profile for it with every value explained. See
//! docs/operating.md, "Probing and tuning a box".

use crate::config::HardwareProfile;
use crate::probe::parse::format_cpu_list;
use crate::probe::{read, recommend, Machine};
use std::fmt::Write as _;

const USAGE: &str = "usage: fors probe [--json] [--write FILE]";

/// Runs the subcommand; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let mut json = false;
    let mut write: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--write" => match it.next() {
                Some(f) => write = Some(f.clone()),
                None => {
                    eprintln!("fors probe: --write needs a file name\n{USAGE}");
                    return 2;
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => {
                eprintln!("fors probe: unknown argument {other:?}\n{USAGE}");
                return 2;
            }
        }
    }
    let m = read::machine();
    let rec = recommend::recommend(&m);
    let text = recommend::render(&rec, &m);
    // The file must be one the relay accepts; a failure here is a bug in probe, said plainly.
    if let Err(e) = HardwareProfile::from_toml(&text, "(generated profile)") {
        eprintln!("fors probe: the generated profile does not validate: {e}");
        return 1;
    }
    if json {
        let v = serde_json::json!({
            "machine": &m,
            "profile": profile_json(&rec.profile),
            "irq_cores": &rec.irq_cores,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", report(&m, &rec));
    }
    if let Some(path) = write {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("fors probe: cannot write {path}: {e}");
            return 1;
        }
        if !json {
            println!("\nWrote hardware profile {path} (use it with `HardwareProfile {path}`).");
        }
    }
    0
}

fn profile_json(p: &HardwareProfile) -> serde_json::Value {
    serde_json::json!({
        "description": p.description, "shards": p.shards, "cores": p.cores,
        "sq_entries": p.sq_entries, "cq_entries": p.cq_entries,
        "recv_buffer_size": p.recv_buffer_size,
        "recv_buffers_per_shard": p.recv_buffers_per_shard,
        "send_buffers_per_shard": p.send_buffers_per_shard,
        "zero_copy_send_min_bytes": p.zero_copy_send_min_bytes,
        "cells_per_crypto_batch": p.cells_per_crypto_batch,
        "cross_shard_batch": p.cross_shard_batch,
        "cross_shard_queue_cells": p.cross_shard_queue_cells,
        "circuit_queue_cells": p.circuit_queue_cells,
        "channel_outbuf_cells": p.channel_outbuf_cells,
        "stream_buffer_bytes": p.stream_buffer_bytes,
        "max_channels_per_shard": p.max_channels_per_shard,
        "max_circuits_per_shard": p.max_circuits_per_shard,
        "max_streams_per_shard": p.max_streams_per_shard,
        "onion_handshakes_per_tick": p.onion_handshakes_per_tick,
        "max_mem_in_queues_bytes": p.max_mem_in_queues_bytes,
    })
}

fn or_unknown<T: std::fmt::Display>(v: Option<T>, what: &str) -> String {
    v.map_or_else(|| format!("unknown ({what})"), |v| v.to_string())
}

/// The human-readable report.
pub fn report(m: &Machine, rec: &recommend::Recommendation) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "CPU:        {}", m.cpu.model);
    let _ = writeln!(
        w,
        "Crypto:     AES {}, SHA-1 {}, SHA-1 across circuits {} (from {} circuits); features: {}",
        m.crypto.aes,
        m.crypto.sha1,
        m.crypto.sha1_multi,
        m.crypto.sha1_multi_min_circuits,
        if m.crypto.features.is_empty() {
            "none".into()
        } else {
            m.crypto.features.join(" ")
        }
    );
    let _ = writeln!(
        w,
        "CPUs:       {} usable ({}), {} physical core(s)",
        m.allowed_cpus.len(),
        format_cpu_list(&m.allowed_cpus),
        m.smt_groups.len()
    );
    let smt: Vec<String> = m
        .smt_groups
        .iter()
        .filter(|g| g.len() > 1)
        .map(|g| format_cpu_list(g))
        .collect();
    let _ = writeln!(
        w,
        "SMT:        {}",
        if smt.is_empty() {
            "no siblings (one thread per core, or topology not shown)".into()
        } else {
            format!("siblings {}", smt.join(" "))
        }
    );
    if m.numa_nodes.is_empty() {
        let _ = writeln!(w, "NUMA:       no nodes shown (/sys/devices/system/node)");
    } else {
        let nodes: Vec<String> = m
            .numa_nodes
            .iter()
            .map(|(n, c)| format!("node{n}: {}", format_cpu_list(c)))
            .collect();
        let _ = writeln!(w, "NUMA:       {}", nodes.join(", "));
    }
    let _ = writeln!(
        w,
        "Memory:     {}",
        or_unknown(
            m.mem_total_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)),
            "/proc/meminfo unreadable"
        )
    );
    let _ = writeln!(
        w,
        "Kernel:     {}",
        or_unknown(m.kernel_release.as_deref(), "no /proc/sys/kernel/osrelease")
    );
    let u = &m.io_uring;
    let _ = writeln!(
        w,
        "io_uring:   {}; DEFER_TASKRUN {}, EXT_ARG {}, SEND_ZC usage report {}",
        if u.usable {
            "usable by Fors".to_string()
        } else {
            format!(
                "NOT usable: {}",
                u.error.as_deref().unwrap_or("unknown reason")
            )
        },
        yn(u.defer_taskrun),
        yn(u.ext_arg),
        yn(u.zc_report_usage)
    );
    if !u.opcodes.is_empty() {
        let ops: Vec<String> = u
            .opcodes
            .iter()
            .map(|(k, v)| format!("{k}{}", if *v { "" } else { "(no)" }))
            .collect();
        let _ = writeln!(w, "            opcodes: {}", ops.join(" "));
    }
    if m.nics.is_empty() {
        let _ = writeln!(w, "NICs:       none besides lo");
    }
    for n in &m.nics {
        let _ = writeln!(
            w,
            "NIC {}:   device {}, {} RX / {} TX queue(s){}{}",
            n.name,
            if n.device.is_empty() {
                "none (virtual)"
            } else {
                &n.device
            },
            n.rx_queues,
            n.tx_queues,
            n.numa_node
                .map_or(String::new(), |x| format!(", NUMA node {x}")),
            match n.rings {
                Some(r) => format!(
                    ", rings rx {}/{} tx {}/{} (current/max)",
                    r.rx, r.rx_max, r.tx, r.tx_max
                ),
                None => ", rings unknown (ethtool missing or not supported)".into(),
            }
        );
        if n.irqs.is_empty() {
            let _ = writeln!(w, "            no IRQs of its own in /proc/interrupts");
        }
        for i in &n.irqs {
            let _ = writeln!(
                w,
                "            irq {} {}: affinity {}, {} interrupts",
                i.irq,
                i.name,
                i.affinity
                    .as_deref()
                    .map_or("unreadable".into(), format_cpu_list),
                i.count
            );
        }
        for (q, c) in &n.rps {
            if !c.is_empty() {
                let _ = writeln!(w, "            rx-{q} RPS on {}", format_cpu_list(c));
            }
        }
        for (q, c) in &n.xps {
            if !c.is_empty() {
                let _ = writeln!(w, "            tx-{q} XPS on {}", format_cpu_list(c));
            }
        }
    }
    let _ = writeln!(w, "Sysctls:");
    for (k, v) in &m.sysctls {
        let _ = writeln!(
            w,
            "            {k} = {}",
            v.as_deref().unwrap_or("(not present here)")
        );
    }
    let lim = |l: Option<crate::probe::Limit>| match l {
        None => "unknown".to_string(),
        Some(l) => {
            let f = |v: Option<u64>| v.map_or("unlimited".into(), |v| v.to_string());
            format!("soft {} hard {}", f(l.soft), f(l.hard))
        }
    };
    let _ = writeln!(w, "Limits:     RLIMIT_NOFILE {}", lim(m.nofile));
    let _ = writeln!(w, "            RLIMIT_MEMLOCK {}", lim(m.memlock));
    let p = &rec.profile;
    let _ = writeln!(
        w,
        "\nRecommended profile: {} shard(s) on CPUs {}{}; rings {}/{}, {} receive buffers, \
         {} channels + {} streams per shard (`fors probe --write FILE` saves it with reasons).",
        p.shards,
        format_cpu_list(&p.cores),
        if rec.irq_cores.is_empty() {
            String::new()
        } else {
            format!(", IRQs on {}", format_cpu_list(&rec.irq_cores))
        },
        p.sq_entries,
        p.cq_entries,
        p.recv_buffers_per_shard,
        p.max_channels_per_shard,
        p.max_streams_per_shard
    );
    s
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
