//! `fors probe` and `fors tune`: what this machine is ([`Machine`]), the hardware profile Fors
//! recommends for it ([`recommend`]), and the system changes that profile asks for ([`tune`]).
//!
//! Everything but [`read`] is sans-IO: [`parse`] turns /proc and /sys text into values,
//! [`recommend`] and [`tune`] turn a [`Machine`] into a profile and a list of changes. Only
//! [`read`] opens files, runs `ethtool -g` and sets up a probe io_uring; only
//! `cli::tune` writes.

#![forbid(unsafe_code)]

pub mod parse;
pub mod read;
pub mod recommend;
pub mod tune;

use serde::Serialize;
use std::collections::BTreeMap;

pub use parse::{CpuInfo, Limit, Rings};

/// Everything `fors probe` learnt about the machine. A field that could not be read is `None`
/// or empty; the report says so instead of guessing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub cpu: CpuInfo,
    /// The relay-crypto paths this process chose (the same choice the relay makes at start).
    pub crypto: CryptoPaths,
    /// CPUs this process may run on (its affinity mask), or all online CPUs.
    pub allowed_cpus: Vec<u32>,
    /// Groups of SMT siblings (one group per physical core), among the allowed CPUs.
    pub smt_groups: Vec<Vec<u32>>,
    /// NUMA node id → its CPUs; empty if the kernel shows no nodes (no NUMA support).
    pub numa_nodes: BTreeMap<u32, Vec<u32>>,
    pub mem_total_bytes: Option<u64>,
    pub kernel_release: Option<String>,
    pub io_uring: IoUringReport,
    pub nics: Vec<Nic>,
    /// Sysctl name → value (whitespace collapsed); `None`: not present here (e.g. a global
    /// net.core sysctl seen from a network namespace) or unreadable.
    pub sysctls: BTreeMap<String, Option<String>>,
    pub nofile: Option<Limit>,
    pub memlock: Option<Limit>,
}

/// The AES and SHA-1 implementations relay crypto uses on this CPU
/// (`crypto::relay::cpu::Tor1Engine`, as `fors bench-crypto` reports them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CryptoPaths {
    pub aes: String,
    pub sha1: String,
    pub sha1_multi: String,
    pub sha1_multi_min_circuits: usize,
    /// Detected features that matter to relay crypto (aes_ni, vaes256, vaes512, sha_ni, avx2,
    /// avx512), those present.
    pub features: Vec<String>,
}

/// What a real io_uring setup on this kernel showed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoUringReport {
    /// The shard's own start-up probe passed: Fors can run here.
    pub usable: bool,
    /// Why not, if not (the missing feature and the kernel that has it).
    pub error: Option<String>,
    /// SINGLE_ISSUER + DEFER_TASKRUN rings (6.1).
    pub defer_taskrun: bool,
    /// Waits with a timeout argument (IORING_FEAT_EXT_ARG).
    pub ext_arg: bool,
    /// SEND_ZC reports whether the kernel copied (6.2).
    pub zc_report_usage: bool,
    /// Opcodes the shard loop uses and whether the kernel supports each.
    pub opcodes: BTreeMap<String, bool>,
}

/// One network interface (not `lo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Nic {
    pub name: String,
    /// Basename of /sys/class/net/IF/device (e.g. `virtio2`, `0000:3b:00.0`); empty for a
    /// virtual interface.
    pub device: String,
    pub rx_queues: u32,
    pub tx_queues: u32,
    /// NUMA node of the device, if the kernel says.
    pub numa_node: Option<u32>,
    pub irqs: Vec<NicIrq>,
    /// rx-N → CPUs in its `rps_cpus` mask (absent if unreadable).
    pub rps: BTreeMap<u32, Vec<u32>>,
    /// tx-N → CPUs in its `xps_cpus` mask (absent if unreadable or not supported).
    pub xps: BTreeMap<u32, Vec<u32>>,
    /// Ring sizes from `ethtool -g`, if ethtool is installed and the driver reports them.
    pub rings: Option<Rings>,
}

/// One interrupt of a NIC and where it may be delivered now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NicIrq {
    pub irq: u32,
    pub name: String,
    /// `/proc/irq/N/smp_affinity_list` (`None` if unreadable).
    pub affinity: Option<Vec<u32>>,
    /// Interrupts taken so far, all CPUs together.
    pub count: u64,
}

/// The sysctls `fors probe` reads and `fors tune` may change.
pub const SYSCTLS: &[&str] = &[
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_syn_backlog",
    "fs.file-max",
    "fs.nr_open",
    // Reported only: 1 or 2 (Linux 6.6+) restricts or disables io_uring, which Fors needs.
    "kernel.io_uring_disabled",
];
