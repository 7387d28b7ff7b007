//! Hardware profiles: TOML files of sizing knobs for the thread-per-core data path (shard
//! count, io_uring ring sizes, buffer pools, batch sizes, queue and table bounds). They keep
//! machine tuning out of the torrc. Keys, units and reasons: hw-profiles/README.md.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One hardware profile. Missing keys take the `generic` profile's values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareProfile {
    /// Free text for humans.
    pub description: String,
    /// Number of shards (threads); 0 = one per core in `cores` (or per available core).
    pub shards: u32,
    /// CPU ids to pin shards to; empty = all CPUs the process may use.
    pub cores: Vec<u32>,
    /// io_uring submission-queue entries per shard (power of two).
    pub sq_entries: u32,
    /// io_uring completion-queue entries per shard (power of two, ≥ sq_entries).
    pub cq_entries: u32,
    /// Bytes per provided receive buffer (each gets [`RECV_BUF_SLACK`] more, so a full TLS
    /// record fits a 16 KiB one).
    pub recv_buffer_size: u32,
    /// Provided receive buffers per shard (power of two: io_uring buffer rings need it).
    pub recv_buffers_per_shard: u32,
    /// Registered send buffers per shard.
    pub send_buffers_per_shard: u32,
    /// Sends at least this large use zero-copy `SEND_ZC`; 0 disables zero-copy sends.
    pub zero_copy_send_min_bytes: u32,
    /// Relay cells gathered before one batched crypto pass.
    pub cells_per_crypto_batch: u32,
    /// Cells moved per cross-shard hand-off.
    pub cross_shard_batch: u32,
    /// Capacity of each shard-to-shard queue, in cells (power of two).
    pub cross_shard_queue_cells: u32,
    /// Cells queued on one circuit before it is considered over its limit.
    pub circuit_queue_cells: u32,
    /// Cells queued for one channel (TLS connection) before reading from its sources pauses.
    pub channel_outbuf_cells: u32,
    /// Bytes buffered per exit stream in each direction.
    pub stream_buffer_bytes: u32,
    pub max_channels_per_shard: u32,
    pub max_circuits_per_shard: u32,
    pub max_streams_per_shard: u32,
    /// CREATE2 handshakes a shard performs per event-loop iteration.
    pub onion_handshakes_per_tick: u32,
    /// Memory for queued cells across all shards; 0 = use the torrc's MaxMemInQueues / auto.
    pub max_mem_in_queues_bytes: u64,
}

/// Bytes each provided receive buffer holds beyond `recv_buffer_size`. TLS 1.3's largest
/// record is 2^14 + 22 bytes on the wire (RFC 8446 §5.2), 22 more than the shipped 16 KiB
/// buffers: every full record a peer sent was cut by a buffer's end and gathered whole before
/// it could be opened (`RecordInbuf` in `docs/architecture.md`'s copy map). With 64 more
/// bytes a full record and the next record's 5-byte header fit one buffer, so a read that
/// ends there (`Channel::read_hint`) carries the record whole; 64 keeps the buffers
/// cache-line aligned.
pub const RECV_BUF_SLACK: u32 = 64;

impl Default for HardwareProfile {
    /// The values of hw-profiles/generic.toml (a test checks they agree).
    fn default() -> Self {
        Self {
            description: "Generic: modest sizes that fit any machine".into(),
            shards: 0,
            cores: Vec::new(),
            sq_entries: 256,
            cq_entries: 1024,
            recv_buffer_size: 16384,
            recv_buffers_per_shard: 256,
            send_buffers_per_shard: 256,
            zero_copy_send_min_bytes: 0,
            cells_per_crypto_batch: 16,
            cross_shard_batch: 32,
            cross_shard_queue_cells: 4096,
            circuit_queue_cells: 2000,
            channel_outbuf_cells: 256,
            stream_buffer_bytes: 65536,
            max_channels_per_shard: 8192,
            max_circuits_per_shard: 65536,
            max_streams_per_shard: 65536,
            onion_handshakes_per_tick: 4,
            max_mem_in_queues_bytes: 0,
        }
    }
}

/// Why a profile could not be used. Messages name the file and, for values, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardwareProfileError {
    #[error("hardware profile {path}: cannot read: {reason}")]
    Io { path: String, reason: String },
    #[error("hardware profile {path}: {message}")]
    Toml { path: String, message: String },
    #[error("hardware profile {path}: key `{key}` = {value}: {reason}")]
    Range {
        path: String,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("hardware profile {name:?} not found (looked for {name}.toml in: {searched})")]
    NotFound { name: String, searched: String },
    #[error(
        "hardware profile name {0:?} is invalid (use letters, digits, '-' and '_', or a path)"
    )]
    BadName(String),
}

fn pow2(v: u64) -> bool {
    v.is_power_of_two()
}

impl HardwareProfile {
    /// Parses and validates a profile's TOML text; `path` is used in messages.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, HardwareProfileError> {
        let p: Self = toml::from_str(text).map_err(|e| HardwareProfileError::Toml {
            path: path.to_string(),
            message: e.message().to_string(),
        })?;
        p.validate(path)?;
        Ok(p)
    }

    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, HardwareProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| HardwareProfileError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks every key's range; the first violation is reported.
    pub fn validate(&self, path: &str) -> Result<(), HardwareProfileError> {
        let err = |key: &'static str, value: u64, reason: &str| HardwareProfileError::Range {
            path: path.to_string(),
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let check = |key: &'static str, v: u64, lo: u64, hi: u64, need_pow2: bool| {
            if v < lo || v > hi {
                Err(err(key, v, &format!("must be between {lo} and {hi}")))
            } else if need_pow2 && !pow2(v) {
                Err(err(key, v, "must be a power of two"))
            } else {
                Ok(())
            }
        };
        let u = u64::from;
        check("shards", u(self.shards), 0, 256, false)?;
        let mut seen = std::collections::HashSet::new();
        for &c in &self.cores {
            if c >= 4096 {
                return Err(err("cores", u(c), "CPU ids must be below 4096"));
            }
            if !seen.insert(c) {
                return Err(err("cores", u(c), "listed twice"));
            }
        }
        if !self.cores.is_empty() && self.shards as usize > self.cores.len() {
            return Err(err(
                "shards",
                u(self.shards),
                "more shards than listed cores (one shard per core)",
            ));
        }
        // Kernel limits: IORING_MAX_ENTRIES 32768, IORING_MAX_CQ_ENTRIES twice that.
        check("sq_entries", u(self.sq_entries), 8, 32768, true)?;
        check("cq_entries", u(self.cq_entries), 8, 65536, true)?;
        if self.cq_entries < self.sq_entries {
            return Err(err(
                "cq_entries",
                u(self.cq_entries),
                "must be at least sq_entries",
            ));
        }
        // At least two full cells; at most 1 MiB.
        check(
            "recv_buffer_size",
            u(self.recv_buffer_size),
            1028,
            1 << 20,
            false,
        )?;
        check(
            "recv_buffers_per_shard",
            u(self.recv_buffers_per_shard),
            1,
            32768,
            true,
        )?;
        // The shard refuses a receive pool over 1 GiB (`ShardConfig::validate`); say so
        // here, naming the profile's keys, with the slack each buffer gets.
        let pool = u64::from(self.recv_buffers_per_shard)
            * (u64::from(self.recv_buffer_size) + u64::from(RECV_BUF_SLACK));
        if pool > 1 << 30 {
            return Err(err(
                "recv_buffers_per_shard",
                u(self.recv_buffers_per_shard),
                &format!(
                    "recv_buffers_per_shard x (recv_buffer_size + {RECV_BUF_SLACK}) is {pool} bytes, over 1 GiB"
                ),
            ));
        }
        check(
            "send_buffers_per_shard",
            u(self.send_buffers_per_shard),
            1,
            65536,
            false,
        )?;
        check(
            "zero_copy_send_min_bytes",
            u(self.zero_copy_send_min_bytes),
            0,
            1 << 20,
            false,
        )?;
        check(
            "cells_per_crypto_batch",
            u(self.cells_per_crypto_batch),
            1,
            1024,
            false,
        )?;
        check(
            "cross_shard_queue_cells",
            u(self.cross_shard_queue_cells),
            64,
            1 << 20,
            true,
        )?;
        check(
            "cross_shard_batch",
            u(self.cross_shard_batch),
            1,
            4096,
            false,
        )?;
        if self.cross_shard_batch > self.cross_shard_queue_cells {
            return Err(err(
                "cross_shard_batch",
                u(self.cross_shard_batch),
                "must not exceed cross_shard_queue_cells",
            ));
        }
        check(
            "circuit_queue_cells",
            u(self.circuit_queue_cells),
            128,
            1_000_000,
            false,
        )?;
        check(
            "channel_outbuf_cells",
            u(self.channel_outbuf_cells),
            16,
            1_000_000,
            false,
        )?;
        // At least one RELAY_DATA payload (498 bytes).
        check(
            "stream_buffer_bytes",
            u(self.stream_buffer_bytes),
            498,
            16 << 20,
            false,
        )?;
        check(
            "max_channels_per_shard",
            u(self.max_channels_per_shard),
            1,
            1_000_000,
            false,
        )?;
        check(
            "max_circuits_per_shard",
            u(self.max_circuits_per_shard),
            1,
            10_000_000,
            false,
        )?;
        check(
            "max_streams_per_shard",
            u(self.max_streams_per_shard),
            1,
            10_000_000,
            false,
        )?;
        check(
            "onion_handshakes_per_tick",
            u(self.onion_handshakes_per_tick),
            1,
            100_000,
            false,
        )?;
        if self.max_mem_in_queues_bytes != 0
            && self.max_mem_in_queues_bytes < super::relay::MIN_MAX_MEM_IN_QUEUES
        {
            return Err(err(
                "max_mem_in_queues_bytes",
                self.max_mem_in_queues_bytes,
                "must be 0 (auto) or at least 268435456 (256 MiB)",
            ));
        }
        Ok(())
    }

    /// Shards to run given how many CPUs are available.
    pub fn shard_count(&self, available_cpus: u32) -> u32 {
        match (self.shards, self.cores.len()) {
            (0, 0) => available_cpus.max(1),
            (0, n) => n as u32,
            (s, _) => s,
        }
    }
}

/// Where profile names are looked up, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSearchPath {
    pub dirs: Vec<PathBuf>,
}

impl Default for ProfileSearchPath {
    /// `/etc/fors/hw-profiles`, `/usr/share/fors/hw-profiles`, `hw-profiles` next to the
    /// binary, and the source tree's `hw-profiles` (for running from a checkout).
    fn default() -> Self {
        let mut dirs = vec![
            PathBuf::from("/etc/fors/hw-profiles"),
            PathBuf::from("/usr/share/fors/hw-profiles"),
        ];
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            dirs.push(exe_dir.join("hw-profiles"));
        }
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles"));
        Self { dirs }
    }
}

impl ProfileSearchPath {
    /// Resolves a `HardwareProfile` value: anything with a `/` or ending in `.toml` is a path;
    /// otherwise it is a name looked up as `<dir>/<name>.toml`.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, HardwareProfileError> {
        if spec.contains('/') || spec.ends_with(".toml") {
            return Ok(PathBuf::from(spec));
        }
        if spec.is_empty()
            || !spec
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HardwareProfileError::BadName(spec.to_string()));
        }
        self.dirs
            .iter()
            .map(|d| d.join(format!("{spec}.toml")))
            .find(|p| p.is_file())
            .ok_or_else(|| HardwareProfileError::NotFound {
                name: spec.to_string(),
                searched: self
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Loads the profile a torrc names, or the built-in generic profile if it names none.
    pub fn load(&self, spec: Option<&str>) -> Result<HardwareProfile, HardwareProfileError> {
        match spec {
            None => Ok(HardwareProfile::default()),
            Some(s) => HardwareProfile::load(&self.resolve(s)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> ProfileSearchPath {
        ProfileSearchPath {
            dirs: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles")],
        }
    }

    /// The receive pool with each buffer's slack must stay within the shard's 1 GiB: a
    /// profile at exactly 1 GiB without it is refused here, naming the key, not at start.
    #[test]
    fn receive_pool_counts_the_slack() {
        let mut p = HardwareProfile {
            recv_buffers_per_shard: 1024,
            recv_buffer_size: 1 << 20,
            ..HardwareProfile::default()
        };
        let e = p.validate("test.toml").unwrap_err().to_string();
        assert!(e.contains("recv_buffers_per_shard"), "{e}");
        p.recv_buffers_per_shard = 512;
        p.validate("test.toml").unwrap();
    }

    #[test]
    fn shipped_profiles_load() {
        let generic = repo().load(Some("generic")).unwrap();
        let expect = HardwareProfile {
            description: generic.description.clone(),
            ..HardwareProfile::default()
        };
        assert_eq!(
            generic, expect,
            "generic.toml and HardwareProfile::default() disagree"
        );
        let epyc = repo().load(Some("epyc-2core")).unwrap();
        assert_eq!(epyc.shard_count(64), 2);
        assert!(epyc.zero_copy_send_min_bytes > 0);
        // Every shipped file names every key, so the README's table is the whole story.
        for name in ["generic", "epyc-2core"] {
            let text = std::fs::read_to_string(repo().resolve(name).unwrap()).unwrap();
            let table: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(table.len(), 20, "{name}.toml does not set every key");
        }
    }

    #[test]
    fn lookup_by_name_and_path() {
        let s = repo();
        let p = s.resolve("generic").unwrap();
        assert!(p.ends_with("hw-profiles/generic.toml"));
        assert_eq!(s.resolve("./x.toml").unwrap(), PathBuf::from("./x.toml"));
        assert!(matches!(
            s.resolve("nope"),
            Err(HardwareProfileError::NotFound { .. })
        ));
        assert!(matches!(
            s.resolve("a b"),
            Err(HardwareProfileError::BadName(_))
        ));
        assert!(s
            .load(Some("/nonexistent/p.toml"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        assert_eq!(s.load(None).unwrap(), HardwareProfile::default());
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let e = HardwareProfile::from_toml("sq_entries = 100\n", "p.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "hardware profile p.toml: key `sq_entries` = 100: must be a power of two"
        );
        let e = HardwareProfile::from_toml("sq_entries = 4096\ncq_entries = 1024\n", "p.toml")
            .unwrap_err();
        assert!(e.to_string().contains("key `cq_entries`"), "{e}");
        let e = HardwareProfile::from_toml("shards = 3\ncores = [0, 1]\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("key `shards` = 3"), "{e}");
        let e = HardwareProfile::from_toml("cores = [1, 1]\n", "p.toml").unwrap_err();
        assert!(
            e.to_string().contains("key `cores` = 1: listed twice"),
            "{e}"
        );
        let e =
            HardwareProfile::from_toml("onion_handshakes_per_tick = 0\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("onion_handshakes_per_tick"), "{e}");
        let e =
            HardwareProfile::from_toml("max_mem_in_queues_bytes = 1000\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("max_mem_in_queues_bytes"), "{e}");
        let e = HardwareProfile::from_toml("sq_entrys = 128\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `sq_entrys`"), "{e}");
        let e = HardwareProfile::from_toml("shards = \"two\"\n", "p.toml").unwrap_err();
        assert!(e.to_string().starts_with("hardware profile p.toml:"), "{e}");
        let e = HardwareProfile::from_toml("shards = -1\n", "p.toml").unwrap_err();
        assert!(e.to_string().starts_with("hardware profile p.toml:"), "{e}");
    }

    #[test]
    fn shard_count_rules() {
        let mut p = HardwareProfile::default();
        assert_eq!(p.shard_count(6), 6);
        p.cores = vec![2, 3, 5];
        assert_eq!(p.shard_count(6), 3);
        p.shards = 2;
        assert_eq!(p.shard_count(6), 2);
    }
}
