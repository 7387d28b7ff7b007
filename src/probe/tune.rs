//! From a [`Machine`] and a hardware profile to the system changes `fors tune` recommends:
//! each with its current and wanted value, the reason, the shell command that makes it, and
//! the file a direct write goes to. Only values that differ from the current ones appear.

use super::parse::{cpu_list, format_cpu_list, format_cpu_mask, sysctl_path};
use super::recommend::needs;
use super::Machine;
use crate::config::HardwareProfile;

/// What kind of change, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Category {
    /// A sysctl the kernel keeps per network namespace (net.ipv4.tcp_*, somaxconn, ...).
    NetnsSysctl,
    /// A machine-wide sysctl (fs.*, and net.core ones that are global).
    GlobalSysctl,
    /// A NIC interrupt's CPU affinity.
    Irq,
    /// Receive packet steering masks.
    Rps,
    /// Transmit packet steering masks.
    Xps,
    /// NIC ring sizes (`ethtool -G`).
    Ring,
    /// Open-file and locked-memory limits for the service.
    Limits,
}

impl Category {
    /// The `--only` name that selects this category (global sysctls: `sysctl`).
    pub fn name(self) -> &'static str {
        match self {
            Category::NetnsSysctl => "netns",
            Category::GlobalSysctl => "sysctl",
            Category::Irq => "irq",
            Category::Rps => "rps",
            Category::Xps => "xps",
            Category::Ring => "ring",
            Category::Limits => "limits",
        }
    }

    /// The names `--only` accepts, and which categories each selects.
    pub fn from_only(name: &str) -> Option<&'static [Category]> {
        Some(match name {
            "netns" => &[Category::NetnsSysctl],
            "sysctl" => &[Category::NetnsSysctl, Category::GlobalSysctl],
            "irq" => &[Category::Irq],
            "rps" => &[Category::Rps],
            "xps" => &[Category::Xps],
            "ring" => &[Category::Ring],
            "limits" => &[Category::Limits],
            _ => return None,
        })
    }
}

/// How `fors tune --apply` makes a change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Action {
    /// Write `value` to the file `path` (a /proc/sys, /proc/irq or /sys file); reading the
    /// file back must give `value` again ([`took_effect`]: CPU sets for masks and lists).
    WriteFile { path: String, value: String },
    /// Create `path` (and its directory) with `contents`.
    CreateFile { path: String, contents: String },
    /// Run a program (no file does it: ring sizes go through the ethtool netlink API).
    Run { argv: Vec<String> },
}

/// One recommended change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub category: Category,
    /// What changes: a sysctl name, `irq 38 (virtio2-input.0)`, `eth0 rx-0 rps_cpus`, ...
    pub item: String,
    pub current: String,
    pub wanted: String,
    pub why: String,
    /// The shell command(s) an operator would type.
    pub command: String,
    pub action: Action,
}

/// Sysctls the kernel keeps per network namespace (the rest of [`super::SYSCTLS`] are global,
/// or read-only from a child namespace).
pub const NETNS_SYSCTLS: &[&str] = &[
    "net.core.somaxconn",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_syn_backlog",
];

/// Socket buffer ceiling: 16 MiB lets one TCP connection fill a long fat link (a relay's
/// channels to far-away relays) without raising the defaults every socket starts with.
const BUF_MAX: u64 = 16 << 20;
/// Where the limits drop-in goes (read by `fors.service`; `fors@.service` instances have
/// their own directory, named in the output).
pub const DROPIN_PATH: &str = "/etc/systemd/system/fors.service.d/90-fors-tune.conf";

fn nums(v: &str) -> Option<Vec<u64>> {
    v.split_whitespace().map(|x| x.parse().ok()).collect()
}

/// The value a sysctl should have, given its current one (`None`: leave it).
fn sysctl_target(name: &str, current: &str, nofile: u64) -> Option<(String, &'static str)> {
    let cur = nums(current)?;
    let at_least = |min: u64, why| (cur.len() == 1 && cur[0] < min).then(|| (min.to_string(), why));
    match name {
        "net.core.somaxconn" => at_least(
            4096,
            "accept queue bound for the ORPort listeners (the shard asks for 1024 each)",
        ),
        "net.ipv4.tcp_max_syn_backlog" => at_least(
            4096,
            "half-open connections kept during a connection burst from clients and relays",
        ),
        "net.core.netdev_max_backlog" => at_least(
            16384,
            "packets queued per CPU between the NIC and the stack before drops",
        ),
        "net.core.rmem_max" | "net.core.wmem_max" => at_least(
            BUF_MAX,
            "ceiling for socket buffers: lets TCP autotuning fill long links",
        ),
        "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" => {
            (cur.len() == 3 && cur[2] < BUF_MAX).then(|| {
                (
                    format!("{} {} {BUF_MAX}", cur[0], cur[1]),
                    "autotuning ceiling per TCP socket (min and default kept)",
                )
            })
        }
        "net.ipv4.ip_local_port_range" => {
            let (lo, hi) = (10240u64, 65535u64);
            (cur.len() == 2 && (cur[0] > lo || cur[1] < hi)).then(|| {
                (
                    format!("{} {}", cur[0].min(lo), cur[1].max(hi)),
                    "an exit opens one outbound connection per stream: more local ports per \
                     destination (10240 up keeps clear of common listening ports)",
                )
            })
        }
        "net.ipv4.tcp_tw_reuse" => (cur.len() == 1 && cur[0] != 1).then(|| {
            (
                "1".to_string(),
                "reuse TIME-WAIT ports for new outbound connections (exit streams), not only \
                 on loopback",
            )
        }),
        "fs.nr_open" => at_least(nofile, "the largest LimitNOFILE the kernel allows"),
        "fs.file-max" => at_least(
            nofile + 65536,
            "system-wide open files: the relay's plus room",
        ),
        _ => None,
    }
}

/// Where the current open-file and locked-memory limits come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Hard limits: `None` inside means unlimited (`infinity`).
    pub nofile: Option<Option<u64>>,
    pub memlock: Option<Option<u64>>,
    /// Said next to the current values: "fors.service" or "this shell's hard limits".
    pub source: String,
}

impl ServiceLimits {
    /// The limits of fors.service from its unit and drop-ins (`texts`, in systemd's order,
    /// later ones winning), where they set them; the rest from the probing process.
    pub fn from_units(texts: &[String], m: &Machine) -> Self {
        let pick = |key: &str| {
            texts
                .iter()
                .filter_map(|t| super::parse::systemd_limit(t, key))
                .next_back()
        };
        let (nofile, memlock) = (pick("LimitNOFILE"), pick("LimitMEMLOCK"));
        let source = if nofile.is_some() || memlock.is_some() {
            "fors.service's unit files".to_string()
        } else {
            "this shell's hard limits; no fors.service unit found".to_string()
        };
        ServiceLimits {
            nofile: nofile.or(m.nofile.map(|l| l.hard)),
            memlock: memlock.or(m.memlock.map(|l| l.hard)),
            source,
        }
    }
}

/// The changes `profile` asks for on `m`. `existing_dropin`: the current contents of
/// [`DROPIN_PATH`], if it exists; `limits`: the service's current limits.
pub fn plan(
    m: &Machine,
    profile: &HardwareProfile,
    existing_dropin: Option<&str>,
    limits: &ServiceLimits,
) -> Vec<Change> {
    let need = needs(profile, m.allowed_cpus.len());
    let mut out = Vec::new();
    for (name, value) in &m.sysctls {
        let Some(current) = value else { continue };
        let Some((wanted, why)) = sysctl_target(name, current, need.nofile) else {
            continue;
        };
        let category = if NETNS_SYSCTLS.contains(&name.as_str()) {
            Category::NetnsSysctl
        } else {
            Category::GlobalSysctl
        };
        out.push(Change {
            category,
            item: name.clone(),
            current: current.clone(),
            wanted: wanted.clone(),
            why: why.to_string(),
            command: format!("sysctl -w {name}='{wanted}'"),
            action: Action::WriteFile {
                path: sysctl_path(name),
                value: wanted,
            },
        });
    }

    // NIC interrupts and steering: away from the shard cores, onto the cores left for them.
    let shard_cores = &profile.cores;
    let irq_cores: Vec<u32> = m
        .allowed_cpus
        .iter()
        .copied()
        .filter(|c| !shard_cores.contains(c))
        .collect();
    for nic in &m.nics {
        if !irq_cores.is_empty() && !shard_cores.is_empty() {
            for irq in &nic.irqs {
                let Some(aff) = &irq.affinity else { continue };
                if aff.iter().any(|c| shard_cores.contains(c)) {
                    let list = format_cpu_list(&irq_cores);
                    let path = format!("/proc/irq/{}/smp_affinity_list", irq.irq);
                    out.push(Change {
                        category: Category::Irq,
                        item: format!("{} irq {} ({})", nic.name, irq.irq, irq.name),
                        current: format_cpu_list(aff),
                        wanted: list.clone(),
                        why: "keep interrupt work off the shard cores (the CPUs the profile \
                              does not list)"
                            .into(),
                        command: format!("echo {list} > {path}"),
                        action: Action::WriteFile { path, value: list },
                    });
                }
            }
            for (&q, cpus) in &nic.rps {
                let steer_here = nic.rx_queues == 1 && irq_cores.len() >= 2;
                let on_shards = cpus.iter().any(|c| shard_cores.contains(c));
                if (steer_here || on_shards) && cpus != &irq_cores {
                    let mask = format_cpu_mask(&irq_cores);
                    let path = format!("/sys/class/net/{}/queues/rx-{q}/rps_cpus", nic.name);
                    out.push(Change {
                        category: Category::Rps,
                        item: format!("{} rx-{q} rps_cpus", nic.name),
                        current: format_cpu_list(cpus),
                        wanted: format_cpu_list(&irq_cores),
                        why: if steer_here {
                            "one receive queue: spread its protocol work over the interrupt cores"
                        } else {
                            "receive steering onto shard cores would undo the IRQ move"
                        }
                        .into(),
                        command: format!("echo {mask} > {path}"),
                        action: Action::WriteFile { path, value: mask },
                    });
                }
            }
        }
        // XPS: shard core j sends on queue j mod tx_queues, so shards do not share a queue lock.
        if nic.tx_queues >= 2 && !shard_cores.is_empty() {
            for (&q, cpus) in &nic.xps {
                let wanted: Vec<u32> = shard_cores
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j as u32 % nic.tx_queues == q)
                    .map(|(_, &c)| c)
                    .collect();
                let mut cur = cpus.clone();
                cur.sort_unstable();
                let mut w = wanted.clone();
                w.sort_unstable();
                if wanted.is_empty() || cur == w {
                    continue;
                }
                let mask = format_cpu_mask(&wanted);
                let path = format!("/sys/class/net/{}/queues/tx-{q}/xps_cpus", nic.name);
                out.push(Change {
                    category: Category::Xps,
                    item: format!("{} tx-{q} xps_cpus", nic.name),
                    current: format_cpu_list(cpus),
                    wanted: format_cpu_list(&wanted),
                    why: "each shard core transmits on its own queue (no shared queue lock)".into(),
                    command: format!("echo {mask} > {path}"),
                    action: Action::WriteFile { path, value: mask },
                });
            }
        }
        if let Some(r) = nic.rings {
            let (rx, tx) = (r.rx_max.min(4096), r.tx_max.min(4096));
            if r.rx < rx || r.tx < tx {
                let argv: Vec<String> = ["ethtool", "-G", &nic.name, "rx"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([rx.to_string(), "tx".into(), tx.to_string()])
                    .collect();
                out.push(Change {
                    category: Category::Ring,
                    item: format!("{} rings", nic.name),
                    current: format!("rx {} tx {}", r.rx, r.tx),
                    wanted: format!("rx {rx} tx {tx}"),
                    why: "larger rings absorb bursts while a shard is busy with crypto (capped \
                          at 4096 to bound queueing delay)"
                        .into(),
                    command: argv.join(" "),
                    action: Action::Run { argv },
                });
            }
        }
    }

    // Limits: systemd's, since the relay runs under it; a limits.conf line for other setups.
    let nofile_low = limits
        .nofile
        .is_some_and(|l| l.is_some_and(|h| h < need.nofile));
    let memlock_low = limits
        .memlock
        .is_some_and(|l| l.is_some_and(|h| h < need.memlock));
    if nofile_low || memlock_low {
        let contents = format!(
            "# Written by fors tune: limits for the hardware profile in use.\n[Service]\n\
             LimitNOFILE={}\nLimitMEMLOCK={}\n",
            need.nofile, need.memlock
        );
        if existing_dropin != Some(contents.as_str()) {
            let show = |l: Option<Option<u64>>| match l {
                None => "unknown".to_string(),
                Some(None) => "unlimited".to_string(),
                Some(Some(h)) => h.to_string(),
            };
            out.push(Change {
                category: Category::Limits,
                item: "LimitNOFILE / LimitMEMLOCK".into(),
                current: format!(
                    "nofile {} memlock {} ({})",
                    show(limits.nofile),
                    show(limits.memlock),
                    limits.source
                ),
                wanted: format!("nofile {} memlock {}", need.nofile, need.memlock),
                why: format!(
                    "{} shards with every table full need {} open files; their registered \
                     send buffers pin {} bytes",
                    need.shards, need.nofile, need.memlock
                ),
                command: format!(
                    "mkdir -p /etc/systemd/system/fors.service.d && printf '[Service]\\n\
                     LimitNOFILE={n}\\nLimitMEMLOCK={l}\\n' > {DROPIN_PATH} && systemctl \
                     daemon-reload\n# (for fors@NAME: /etc/systemd/system/fors@.service.d/; \
                     without systemd, in /etc/security/limits.conf:\n#   _fors - nofile {n}\n\
                     #   _fors - memlock {lk})",
                    n = need.nofile,
                    l = need.memlock,
                    lk = need.memlock.div_ceil(1024),
                ),
                action: Action::CreateFile {
                    path: DROPIN_PATH.into(),
                    contents,
                },
            });
        }
    }
    out
}

/// Whether the text read back from a file after writing `value` shows the change took:
/// equal after whitespace collapsing, or as CPU sets for masks and lists.
pub fn took_effect(path: &str, value: &str, read_back: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(read_back) == norm(value) {
        return true;
    }
    if path.ends_with("_cpus") {
        return super::parse::cpu_mask(read_back) == super::parse::cpu_mask(value);
    }
    if path.ends_with("smp_affinity_list") {
        return cpu_list(read_back) == cpu_list(value);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::{Limit, Nic, NicIrq, Rings};
    use super::*;

    fn machine() -> Machine {
        let mut m = Machine {
            allowed_cpus: (0..8).collect(),
            smt_groups: (0..8).map(|c| vec![c]).collect(),
            nofile: Some(Limit {
                soft: Some(1024),
                hard: Some(4096),
            }),
            memlock: Some(Limit {
                soft: Some(8 << 20),
                hard: Some(8 << 20),
            }),
            ..Machine::default()
        };
        for (k, v) in [
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
            ("net.ipv4.tcp_wmem", "4096 16384 16777216"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
            ("net.ipv4.tcp_tw_reuse", "2"),
            ("net.core.netdev_max_backlog", "1000"),
            ("fs.nr_open", "1048576"),
        ] {
            m.sysctls.insert(k.into(), Some(v.into()));
        }
        m.sysctls.insert("net.core.rmem_max".into(), None);
        m.nics.push(Nic {
            name: "eth0".into(),
            rx_queues: 1,
            tx_queues: 4,
            irqs: vec![
                NicIrq {
                    irq: 38,
                    name: "virtio2-input.0".into(),
                    affinity: Some(vec![3]),
                    count: 1,
                },
                NicIrq {
                    irq: 39,
                    name: "virtio2-output.0".into(),
                    affinity: Some(vec![0]),
                    count: 1,
                },
            ],
            rps: [(0, vec![])].into(),
            xps: [(0, vec![0]), (1, vec![1]), (2, vec![]), (3, vec![])].into(),
            rings: Some(Rings {
                rx: 256,
                rx_max: 8192,
                tx: 4096,
                tx_max: 4096,
            }),
            ..Nic::default()
        });
        m
    }

    fn profile() -> HardwareProfile {
        HardwareProfile {
            shards: 6,
            cores: vec![2, 3, 4, 5, 6, 7],
            ..HardwareProfile::default()
        }
    }

    #[test]
    fn only_differing_values_are_changed() {
        let m = machine();
        let shell = ServiceLimits::from_units(&[], &m);
        let plan = plan(&m, &profile(), None, &shell);
        let items: Vec<&str> = plan.iter().map(|c| c.item.as_str()).collect();
        assert!(!items.contains(&"net.core.somaxconn"), "already 4096");
        assert!(!items.contains(&"net.ipv4.tcp_wmem"), "already 16 MiB");
        assert!(!items.contains(&"net.core.rmem_max"), "not readable here");
        let rmem = plan.iter().find(|c| c.item == "net.ipv4.tcp_rmem").unwrap();
        assert_eq!(rmem.wanted, "4096 131072 16777216");
        assert_eq!(rmem.category, Category::NetnsSysctl);
        assert_eq!(
            rmem.command,
            "sysctl -w net.ipv4.tcp_rmem='4096 131072 16777216'"
        );
        let ports = plan
            .iter()
            .find(|c| c.item == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(ports.wanted, "10240 65535");
        let backlog = plan
            .iter()
            .find(|c| c.item == "net.core.netdev_max_backlog")
            .unwrap();
        assert_eq!(backlog.category, Category::GlobalSysctl);
        // IRQ 38 is on shard core 3 and moves; IRQ 39 is already on core 0 (not a shard core).
        let irq: Vec<&Change> = plan
            .iter()
            .filter(|c| c.category == Category::Irq)
            .collect();
        assert_eq!(irq.len(), 1);
        assert_eq!(irq[0].wanted, "0-1");
        assert_eq!(irq[0].command, "echo 0-1 > /proc/irq/38/smp_affinity_list");
        // One RX queue, two IRQ cores: RPS spreads over them.
        let rps = plan.iter().find(|c| c.category == Category::Rps).unwrap();
        assert_eq!(
            rps.action,
            Action::WriteFile {
                path: "/sys/class/net/eth0/queues/rx-0/rps_cpus".into(),
                value: "3".into()
            }
        );
        // XPS: cores 2..7 over 4 queues: tx-0 gets cores 2 and 6.
        let xps0 = plan
            .iter()
            .find(|c| c.item == "eth0 tx-0 xps_cpus")
            .unwrap();
        assert_eq!(xps0.wanted, "2,6");
        let ring = plan.iter().find(|c| c.category == Category::Ring).unwrap();
        assert_eq!(ring.command, "ethtool -G eth0 rx 4096 tx 4096");
        let lim = plan
            .iter()
            .find(|c| c.category == Category::Limits)
            .unwrap();
        let n = needs(&profile(), 8);
        assert!(lim.wanted.contains(&n.nofile.to_string()));
        // The same drop-in already in place: no limits change.
        let Action::CreateFile { contents, .. } = &lim.action else {
            panic!("limits write a drop-in")
        };
        let again = super::plan(&m, &profile(), Some(contents), &shell);
        assert!(again.iter().all(|c| c.category != Category::Limits));
        // The packaged unit's limits are enough: no limits change, whatever the shell has.
        let unit = ServiceLimits::from_units(
            &["[Service]\nLimitNOFILE=1048576\nLimitMEMLOCK=512M\n".to_string()],
            &m,
        );
        assert_eq!(unit.nofile, Some(Some(1048576)));
        let with_unit = super::plan(&m, &profile(), None, &unit);
        assert!(
            with_unit.iter().all(|c| c.category != Category::Limits),
            "{with_unit:?}"
        );
        // A drop-in lowering it brings the change back.
        let low = ServiceLimits::from_units(
            &[
                "LimitNOFILE=1048576\n".to_string(),
                "LimitNOFILE=1000\n".to_string(),
            ],
            &m,
        );
        assert!(super::plan(&m, &profile(), None, &low)
            .iter()
            .any(|c| c.category == Category::Limits && c.current.contains("nofile 1000 ")));
    }

    #[test]
    fn no_spare_core_means_no_irq_moves() {
        let m = machine();
        let p = HardwareProfile {
            cores: (0..8).collect(),
            shards: 8,
            ..HardwareProfile::default()
        };
        let lim = ServiceLimits::from_units(&[], &m);
        let plan = plan(&m, &p, None, &lim);
        assert!(plan
            .iter()
            .all(|c| c.category != Category::Irq && c.category != Category::Rps));
        // An empty profile (all cores, no list) cannot say which cores are shards'.
        let plan = super::plan(&m, &HardwareProfile::default(), None, &lim);
        assert!(plan
            .iter()
            .all(|c| !matches!(c.category, Category::Irq | Category::Rps | Category::Xps)));
    }

    #[test]
    fn read_back_comparison() {
        assert!(took_effect(
            "/proc/sys/net/ipv4/tcp_rmem",
            "4096 131072 16777216",
            "4096\t131072\t16777216\n"
        ));
        assert!(!took_effect(
            "/proc/sys/net/core/somaxconn",
            "8192",
            "4096\n"
        ));
        assert!(took_effect("/sys/x/rps_cpus", "3", "00000003\n"));
        assert!(took_effect("/proc/irq/3/smp_affinity_list", "0,1", "0-1\n"));
        assert_eq!(
            Category::from_only("netns"),
            Some(&[Category::NetnsSysctl][..])
        );
        assert_eq!(Category::from_only("bogus"), None);
        for c in [
            Category::NetnsSysctl,
            Category::GlobalSysctl,
            Category::Irq,
            Category::Rps,
            Category::Xps,
            Category::Ring,
            Category::Limits,
        ] {
            assert!(Category::from_only(c.name()).unwrap().contains(&c), "{c:?}");
        }
    }
}
