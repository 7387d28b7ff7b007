//! Parsers for the text the kernel exposes in /proc and /sys: functions from a file's contents
//! to values, so every rule is unit-tested on fixture text and the reader ([`super::read`])
//! only opens files.

/// What `/proc/cpuinfo` says about the first CPU, and how many logical CPUs it lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuInfo {
    /// `model name` (x86) or `Model`/`cpu model` (other architectures); "unknown" if absent.
    pub model: String,
    /// The `flags` (x86) or `Features` (arm64) of the first CPU.
    pub flags: Vec<String>,
    /// `processor` entries.
    pub logical_cpus: usize,
}

/// Parses `/proc/cpuinfo`.
pub fn cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo {
        model: String::new(),
        flags: Vec::new(),
        logical_cpus: 0,
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.logical_cpus += 1,
            "model name" | "Model" | "cpu model" if info.model.is_empty() => {
                info.model = value.to_string()
            }
            "flags" | "Features" if info.flags.is_empty() => {
                info.flags = value.split_whitespace().map(str::to_string).collect()
            }
            _ => {}
        }
    }
    if info.model.is_empty() {
        info.model = "unknown".into();
    }
    info
}

/// Parses a kernel CPU list such as `0-3,8,10-11` (`cpulist`, `thread_siblings_list`,
/// `smp_affinity_list`, `Cpus_allowed_list`). `None` on malformed text; at most 4096 CPUs.
pub fn cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(out);
    }
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let v = part.parse::<u32>().ok()?;
                (v, v)
            }
        };
        if lo > hi || hi >= 4096 {
            return None;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Formats CPUs as a kernel CPU list (`0-3,8`), the inverse of [`cpu_list`].
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Formats CPUs as the hexadecimal mask `rps_cpus`/`xps_cpus` take: 32-bit words, most
/// significant first, separated by commas (the kernel's bitmap format).
pub fn format_cpu_mask(cpus: &[u32]) -> String {
    let top = cpus.iter().copied().max().unwrap_or(0);
    let words = (top / 32 + 1) as usize;
    let mut w = vec![0u32; words];
    for &c in cpus {
        w[(c / 32) as usize] |= 1 << (c % 32);
    }
    let mut s: Vec<String> = w.iter().rev().map(|x| format!("{x:08x}")).collect();
    // Leading zeros of the first word dropped: the kernel accepts either form.
    let first = s[0].trim_start_matches('0');
    s[0] = if first.is_empty() {
        "0".into()
    } else {
        first.into()
    };
    s.join(",")
}

/// Parses a kernel hex CPU mask (`rps_cpus`, `xps_cpus`, `smp_affinity`): `00000000,0000000f`.
pub fn cpu_mask(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    let words: Vec<&str> = text.trim().split(',').collect();
    for (i, word) in words.iter().rev().enumerate() {
        let v = u32::from_str_radix(word, 16).ok()?;
        for bit in 0..32 {
            if v & (1 << bit) != 0 {
                cpus.push(i as u32 * 32 + bit);
            }
        }
    }
    Some(cpus)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// `Cpus_allowed_list` from `/proc/self/status`: the CPUs this process may run on.
pub fn cpus_allowed(status: &str) -> Option<Vec<u32>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    cpu_list(line)
}

/// A soft and hard resource limit (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The limit named `name` (e.g. "Max open files") in `/proc/self/limits`.
pub fn limit(text: &str, name: &str) -> Option<Limit> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut it = line[name.len()..].split_whitespace();
    let val = |s: Option<&str>| -> Option<Option<u64>> {
        match s? {
            "unlimited" => Some(None),
            v => v.parse().ok().map(Some),
        }
    };
    Some(Limit {
        soft: val(it.next())?,
        hard: val(it.next())?,
    })
}

/// One interrupt line of `/proc/interrupts` with a number (not NMI, LOC, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IrqLine {
    pub irq: u32,
    /// Interrupts taken on each CPU column, in column order.
    pub per_cpu: Vec<u64>,
    /// The last field: the action name (e.g. `virtio2-input.0`, `mlx5_comp3@pci:0000:3b:00.0`).
    pub name: String,
}

/// Parses `/proc/interrupts`: the header names the CPU columns; numbered lines follow.
pub fn interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let ncpu = header.split_whitespace().count();
    let mut out = Vec::new();
    for line in lines {
        let Some((num, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = num.trim().parse::<u32>() else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let counts: Vec<u64> = fields
            .iter()
            .take(ncpu)
            .map_while(|f| f.parse().ok())
            .collect();
        let name = fields
            .get(counts.len()..)
            .and_then(|tail| tail.last())
            .unwrap_or(&"")
            .to_string();
        out.push(IrqLine {
            irq,
            per_cpu: counts,
            name,
        });
    }
    out
}

/// Whether the interrupt called `irq_name` belongs to network interface `ifname`, whose
/// device directory is called `device` (e.g. `virtio2`, `0000:3b:00.0`; empty if none).
/// Drivers name queue IRQs after the interface (`eth0-TxRx-3`), the PCI address
/// (`mlx5_comp3@pci:0000:3b:00.0`) or the virtio device (`virtio2-input.0`).
pub fn irq_is_nic(irq_name: &str, ifname: &str, device: &str) -> bool {
    let token = |s: &str, word: &str| {
        !word.is_empty()
            && s.match_indices(word).any(|(i, _)| {
                let before = s[..i].chars().last();
                let after = s[i + word.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':')
            })
    };
    token(irq_name, ifname) || token(irq_name, device)
}

/// Receive and transmit queue counts from the names in `/sys/class/net/IF/queues`.
pub fn queue_counts<'a>(entries: impl IntoIterator<Item = &'a str>) -> (u32, u32) {
    let (mut rx, mut tx) = (0, 0);
    for e in entries {
        let is_q = |p: &str| {
            e.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        if is_q("rx-") {
            rx += 1;
        } else if is_q("tx-") {
            tx += 1;
        }
    }
    (rx, tx)
}

/// A NIC's ring sizes from `ethtool -g IF` output: current and maximum RX/TX descriptors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rings {
    pub rx: u32,
    pub rx_max: u32,
    pub tx: u32,
    pub tx_max: u32,
}

/// Parses `ethtool -g IF`: a "Pre-set maximums" block, then a "Current hardware settings"
/// block, each with `RX:` and `TX:` lines. `None` if either is missing.
pub fn ethtool_rings(text: &str) -> Option<Rings> {
    let mut r = Rings::default();
    let mut section = 0; // 1 = maximums, 2 = current
    let (mut seen_max, mut seen_cur) = (false, false);
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Pre-set maximums") {
            section = 1;
        } else if l.starts_with("Current hardware settings") {
            section = 2;
        } else if let Some((k, v)) = l.split_once(':') {
            let Ok(v) = v.trim().parse::<u32>() else {
                continue;
            };
            match (section, k.trim()) {
                (1, "RX") => (r.rx_max, seen_max) = (v, true),
                (1, "TX") => r.tx_max = v,
                (2, "RX") => (r.rx, seen_cur) = (v, true),
                (2, "TX") => r.tx = v,
                _ => {}
            }
        }
    }
    (seen_max && seen_cur).then_some(r)
}

/// The value of a sysctl file with whitespace runs collapsed to one space (multi-value
/// sysctls such as `tcp_rmem` are tab-separated in /proc/sys).
pub fn sysctl_value(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The /proc/sys path of a dotted sysctl name.
pub fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// The last `KEY=` line (e.g. `LimitNOFILE`) of a systemd unit or drop-in: `Some(None)` for
/// `infinity`, `Some(Some(hard))` for a number with an optional K/M/G/T suffix (1024-based, as
/// systemd reads them) or a `soft:hard` pair; `None` if the key is absent or unreadable.
pub fn systemd_limit(text: &str, key: &str) -> Option<Option<u64>> {
    let value = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('='))
        .next_back()?
        .trim();
    let hard = value.rsplit(':').next()?.trim();
    if hard == "infinity" {
        return Some(None);
    }
    let (num, mult) = match hard.char_indices().last()? {
        (i, 'K') => (&hard[..i], 1u64 << 10),
        (i, 'M') => (&hard[..i], 1 << 20),
        (i, 'G') => (&hard[..i], 1 << 30),
        (i, 'T') => (&hard[..i], 1 << 40),
        _ => (hard, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str =
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n\
flags\t\t: fpu sse aes avx2 avx512f vaes sha_ni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n\
flags\t\t: fpu\n";

    #[test]
    fn cpuinfo_model_flags_and_count() {
        let c = cpuinfo(CPUINFO);
        assert_eq!(c.model, "AMD EPYC 9B14");
        assert_eq!(c.logical_cpus, 2);
        assert!(c.flags.contains(&"vaes".to_string()));
        assert_eq!(c.flags.len(), 7, "flags come from the first CPU");
        let arm = cpuinfo("processor : 0\nFeatures : fp asimd aes sha1\n");
        assert_eq!(arm.model, "unknown");
        assert_eq!(arm.flags, ["fp", "asimd", "aes", "sha1"]);
        assert_eq!(cpuinfo("").logical_cpus, 0);
    }

    #[test]
    fn cpu_lists_and_masks_round_trip() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list(""), Some(vec![]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
        assert_eq!(cpu_list("0-99999"), None);
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_mask(&[0, 1]), "3");
        assert_eq!(format_cpu_mask(&[1, 33]), "2,00000002");
        assert_eq!(cpu_mask("00000002,00000002"), Some(vec![1, 33]));
        assert_eq!(cpu_mask("0"), Some(vec![]));
        assert_eq!(cpu_mask("zz"), None);
    }

    #[test]
    fn meminfo_status_and_limits() {
        assert_eq!(
            mem_total("MemTotal:       24567892 kB\nMemFree: 1 kB\n"),
            Some(24567892 * 1024)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(
            cpus_allowed("Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"),
            Some(vec![0, 1])
        );
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max open files            20000                524288               files     \n\
Max locked memory         8388608              unlimited            bytes     \n";
        assert_eq!(
            limit(limits, "Max open files"),
            Some(Limit {
                soft: Some(20000),
                hard: Some(524288)
            })
        );
        assert_eq!(
            limit(limits, "Max locked memory"),
            Some(Limit {
                soft: Some(8388608),
                hard: None
            })
        );
        assert_eq!(limit(limits, "Max processes"), None);
    }

    const INTERRUPTS: &str = "           CPU0       CPU1       \n\
 26:          0          1  IO-APIC   4-edge      ttyS0\n\
 38:          0       6862 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
 39:       4883          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
 40:          0          0 PCI-MSIX-0000:00:04.0   0-edge      virtio21-config\n\
 77:         10         20  IR-PCI-MSI 1572866-edge      eth1-TxRx-0\n\
 90:          5          5  IR-PCI-MSI 1-edge      mlx5_comp3@pci:0000:3b:00.0\n\
NMI:          0          0   Non-maskable interrupts\n\
ERR:          0\n";

    #[test]
    fn interrupts_and_nic_matching() {
        let v = interrupts(INTERRUPTS);
        assert_eq!(v.len(), 6);
        assert_eq!(v[1].irq, 38);
        assert_eq!(v[1].per_cpu, [0, 6862]);
        assert_eq!(v[1].name, "virtio2-input.0");
        assert!(irq_is_nic(&v[1].name, "eth0", "virtio2"));
        assert!(irq_is_nic(&v[2].name, "eth0", "virtio2"));
        assert!(
            !irq_is_nic(&v[3].name, "eth0", "virtio2"),
            "virtio21 is not virtio2"
        );
        assert!(!irq_is_nic(&v[0].name, "eth0", "virtio2"));
        assert!(irq_is_nic(&v[4].name, "eth1", ""));
        assert!(!irq_is_nic(&v[4].name, "eth", ""));
        assert!(irq_is_nic(&v[5].name, "ens1f0", "0000:3b:00.0"));
        assert!(interrupts("").is_empty());
    }

    #[test]
    fn systemd_limits() {
        let unit = "[Service]\nLimitNOFILE=1048576\nLimitMEMLOCK=512M\nLimitCORE=infinity\n";
        assert_eq!(systemd_limit(unit, "LimitNOFILE"), Some(Some(1048576)));
        assert_eq!(systemd_limit(unit, "LimitMEMLOCK"), Some(Some(512 << 20)));
        assert_eq!(systemd_limit(unit, "LimitCORE"), Some(None));
        assert_eq!(
            systemd_limit("LimitNOFILE=1024:4096\n", "LimitNOFILE"),
            Some(Some(4096))
        );
        assert_eq!(
            systemd_limit("LimitNOFILE=1\nLimitNOFILE=2\n", "LimitNOFILE"),
            Some(Some(2))
        );
        assert_eq!(systemd_limit("LimitNOFILE=lots\n", "LimitNOFILE"), None);
        assert_eq!(systemd_limit(unit, "LimitNPROC"), None);
    }

    #[test]
    fn queues_rings_and_sysctls() {
        assert_eq!(
            queue_counts(["rx-0", "rx-1", "tx-0", "tx-1", "tx-2", "rx-x", "foo"]),
            (2, 3)
        );
        assert_eq!(queue_counts([]), (0, 0));
        let g = "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t4096\nRX Mini:\tn/a\n\
RX Jumbo:\tn/a\nTX:\t\t4096\nCurrent hardware settings:\nRX:\t\t512\nRX Mini:\tn/a\n\
RX Jumbo:\tn/a\nTX:\t\t1024\n";
        assert_eq!(
            ethtool_rings(g),
            Some(Rings {
                rx: 512,
                rx_max: 4096,
                tx: 1024,
                tx_max: 4096
            })
        );
        assert_eq!(
            ethtool_rings("netlink error: Operation not supported\n"),
            None
        );
        assert_eq!(
            sysctl_value("4096\t131072\t6291456\n"),
            "4096 131072 6291456"
        );
        assert_eq!(
            sysctl_path("net.ipv4.tcp_rmem"),
            "/proc/sys/net/ipv4/tcp_rmem"
        );
    }
}
