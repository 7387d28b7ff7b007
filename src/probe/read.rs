//! The thin reader: opens the /proc and /sys files [`super::parse`] understands, runs
//! `ethtool -g` where installed, and sets up a real io_uring as the shard does. A file that is
//! missing (a container, no NUMA, no NIC) leaves its field empty.

use super::{parse, CryptoPaths, IoUringReport, Machine, Nic, NicIrq, SYSCTLS};
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn dir_names(path: impl AsRef<Path>) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads the whole machine.
pub fn machine() -> Machine {
    let cpu = parse::cpuinfo(&read("/proc/cpuinfo").unwrap_or_default());
    let online = read("/sys/devices/system/cpu/online").and_then(|t| parse::cpu_list(&t));
    let allowed_cpus = read("/proc/self/status")
        .and_then(|t| parse::cpus_allowed(&t))
        .or(online)
        .unwrap_or_else(|| (0..cpu.logical_cpus as u32).collect());
    let mut smt_groups: Vec<Vec<u32>> = Vec::new();
    for &c in &allowed_cpus {
        let sib = read(format!(
            "/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
        ))
        .and_then(|t| parse::cpu_list(&t))
        .unwrap_or_else(|| vec![c]);
        let sib: Vec<u32> = sib
            .into_iter()
            .filter(|s| allowed_cpus.contains(s))
            .collect();
        if !smt_groups.contains(&sib) {
            smt_groups.push(sib);
        }
    }
    let mut numa_nodes = BTreeMap::new();
    for name in dir_names("/sys/devices/system/node") {
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(cpus) = read(format!("/sys/devices/system/node/{name}/cpulist"))
            .and_then(|t| parse::cpu_list(&t))
        {
            numa_nodes.insert(id, cpus);
        }
    }
    let limits = read("/proc/self/limits").unwrap_or_default();
    let sysctls = SYSCTLS
        .iter()
        .map(|n| {
            let v = read(parse::sysctl_path(n)).map(|t| parse::sysctl_value(&t));
            (n.to_string(), v)
        })
        .collect();
    Machine {
        crypto: crypto_paths(),
        allowed_cpus,
        smt_groups,
        numa_nodes,
        mem_total_bytes: read("/proc/meminfo").and_then(|t| parse::mem_total(&t)),
        kernel_release: read("/proc/sys/kernel/osrelease").map(|t| t.trim().to_string()),
        io_uring: io_uring_report(),
        nics: nics(),
        sysctls,
        nofile: parse::limit(&limits, "Max open files"),
        memlock: parse::limit(&limits, "Max locked memory"),
        cpu,
    }
}

/// The process's relay-crypto choice: the same `Tor1Engine` the relay's shards use.
pub fn crypto_paths() -> CryptoPaths {
    let e = crate::crypto::relay::cpu::Tor1Engine::get();
    let f = e.features;
    let features = [
        ("aes_ni", f.aes_ni),
        ("vaes256", f.vaes256),
        ("vaes512", f.vaes512),
        ("sha_ni", f.sha_ni),
        ("avx2", f.avx2),
        ("avx512", f.avx512),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n.to_string())
    .collect();
    CryptoPaths {
        aes: e.aes.name().to_string(),
        sha1: format!("{:?}", e.sha1),
        sha1_multi: format!("{:?}", e.sha1_multi),
        sha1_multi_min_circuits: e.multi_min_lanes,
        features,
    }
}

/// Runs the shard's own start-up probe, then lists the opcodes the shard loop uses.
pub fn io_uring_report() -> IoUringReport {
    use io_uring::{opcode, register::Probe, IoUring};
    let mut r = IoUringReport::default();
    match crate::shard::probe_kernel() {
        Ok(k) => {
            r.usable = true;
            r.defer_taskrun = k.defer_taskrun;
            r.ext_arg = k.ext_arg;
            r.zc_report_usage = k.zc_report_usage;
        }
        Err(e) => r.error = Some(e.to_string()),
    }
    let ops: [(&str, u8); 12] = [
        ("ACCEPT", opcode::Accept::CODE),
        ("CONNECT", opcode::Connect::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SEND", opcode::Send::CODE),
        ("SEND_ZC", opcode::SendZc::CODE),
        ("READ", opcode::Read::CODE),
        ("WRITE", opcode::Write::CODE),
        ("TIMEOUT", opcode::Timeout::CODE),
        ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("SOCKET", opcode::Socket::CODE),
        ("CLOSE", opcode::Close::CODE),
    ];
    if let Ok(ring) = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::new(8) {
        let mut probe = Probe::new();
        if ring.submitter().register_probe(&mut probe).is_ok() {
            for (name, code) in ops {
                r.opcodes.insert(name.to_string(), probe.is_supported(code));
            }
        }
    } else if r.error.is_none() {
        r.error = Some("io_uring_setup failed".into());
    }
    r
}

fn nics() -> Vec<Nic> {
    let irq_lines = parse::interrupts(&read("/proc/interrupts").unwrap_or_default());
    let mut out = Vec::new();
    for name in dir_names("/sys/class/net") {
        if name == "lo" {
            continue;
        }
        let base = format!("/sys/class/net/{name}");
        let device = std::fs::read_link(format!("{base}/device"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let queues = dir_names(format!("{base}/queues"));
        let (rx_queues, tx_queues) = parse::queue_counts(queues.iter().map(String::as_str));
        // PCI functions list their MSI vectors; virtio NICs' IRQs are on the parent device.
        let msi_dir = if device.starts_with("virtio") {
            format!("{base}/device/../msi_irqs")
        } else {
            format!("{base}/device/msi_irqs")
        };
        let msi: Vec<u32> = dir_names(msi_dir)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let irqs = irq_lines
            .iter()
            .filter(|l| msi.contains(&l.irq) || parse::irq_is_nic(&l.name, &name, &device))
            .map(|l| NicIrq {
                irq: l.irq,
                name: l.name.clone(),
                affinity: read(format!("/proc/irq/{}/smp_affinity_list", l.irq))
                    .and_then(|t| parse::cpu_list(&t)),
                count: l.per_cpu.iter().sum(),
            })
            .collect();
        let mask_of = |q: &str, file: &str| {
            read(format!("{base}/queues/{q}/{file}")).and_then(|t| parse::cpu_mask(&t))
        };
        let rps = (0..rx_queues)
            .filter_map(|i| Some((i, mask_of(&format!("rx-{i}"), "rps_cpus")?)))
            .collect();
        let xps = (0..tx_queues)
            .filter_map(|i| Some((i, mask_of(&format!("tx-{i}"), "xps_cpus")?)))
            .collect();
        let numa_node = read(format!("{base}/device/numa_node"))
            .and_then(|t| t.trim().parse::<i64>().ok())
            .and_then(|n| u32::try_from(n).ok());
        out.push(Nic {
            rings: ethtool_rings(&name),
            name,
            device,
            rx_queues,
            tx_queues,
            numa_node,
            irqs,
            rps,
            xps,
        });
    }
    out
}

/// `ethtool -g IF`, if ethtool is installed and the driver answers.
fn ethtool_rings(ifname: &str) -> Option<parse::Rings> {
    let out = std::process::Command::new("ethtool")
        .args(["-g", ifname])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse::ethtool_rings(&String::from_utf8_lossy(&out.stdout))
}
