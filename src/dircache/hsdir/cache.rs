//! The HSDir descriptor cache (C tor `feature/hs/hs_cache.c`, the "directory" half): v3
//! descriptors by blinded key, with C tor's store, expiry and eviction rules.
//!
//! - Store (`cache_store_v3_as_dir`): the outer layer must decode and verify
//!   ([`decode_outer`]); a descriptor replaces the cached one only if its revision counter
//!   is strictly higher; the download count of the replaced entry carries over.
//! - Expiry (`cache_clean_v3_as_dir`): an entry lives `descriptor-lifetime` from when it was
//!   stored. C tor drops expired entries on a timer (every 30 minutes) and serves them until
//!   then (`cache_lookup_v3_as_dir` checks no lifetime); [`HsDirCache::clean`] is that step and
//!   [`HsDirCache::lookup`] likewise serves what is stored, so a client sees what it would see
//!   from a C tor HSDir.
//! - Bound (`MaxHSDirCacheBytes`, C tor 0.4.8.18 and 0.4.9.3-alpha, tor#41006): when a store finds the cache above the
//!   bound, it first prunes down to the bound minus room for 1000 maximum-size descriptors
//!   (or by half, if the bound is smaller than that room), least-downloaded entries first
//!   (`hs_cache_handle_oom`), then stores the new descriptor — so a fresh upload is never the
//!   one pruned. The relay's memory-pressure handler may call [`HsDirCache::handle_oom`] too.
//! - Size accounting (`cache_get_dir_entry_size`): the body, the decoded superencrypted blob
//!   and a fixed overhead standing for C tor's per-entry structs.
//!
//! Downloads are counted by [`HsDirCache::note_downloaded`]. C tor counts one when a directory
//! connection that was answered 200 closes, finished or not (`directory.c`, `hs_ident` is set
//! once the answer is queued); the directory server calls it at the same point.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;

use super::outer::{c_string, decode_outer, HsDescError, HS_DESC_MAX_LEN};
use crate::keys::time::unix_secs;

/// `HSCACHE_PRUNE_SPARE_ROOM`: room for 1000 descriptors of `HS_DESC_MAX_LEN` left free
/// when pruning at store time, to avoid pruning on every upload.
pub const PRUNE_SPARE_ROOM: u64 = 1000 * HS_DESC_MAX_LEN as u64;

/// Bytes counted per entry besides the body and the superencrypted blob: the sizes of C
/// tor's `hs_cache_dir_descriptor_t` (40), `hs_desc_plaintext_data_t` (104) and `tor_cert_t`
/// (96) on a 64-bit build, which C tor adds into the same total.
pub const ENTRY_OVERHEAD: u64 = 40 + 104 + 96;

/// Bounds of the consensus parameter `HSV3MaxDescriptorSize` (`hs_cache_get_max_descriptor_size`).
const MAX_DESC_SIZE_MIN: i64 = 1;
const MAX_DESC_SIZE_MAX: i64 = i32::MAX as i64;

/// The maximum descriptor size from the consensus parameter `HSV3MaxDescriptorSize`: absent
/// means 50000; out-of-range values are clamped to [1, INT32_MAX] as `networkstatus_get_param`
/// does.
pub fn max_descriptor_size_from_param(param: Option<i64>) -> u32 {
    match param {
        None => HS_DESC_MAX_LEN,
        Some(v) => v.clamp(MAX_DESC_SIZE_MIN, MAX_DESC_SIZE_MAX) as u32,
    }
}

/// The cache bound C tor uses (`hs_cache_get_max_bytes`): `MaxHSDirCacheBytes`, or, when that
/// is 0 (its default), a fifth of `MaxMemInQueues`.
pub fn max_cache_bytes(max_hsdir_cache_bytes: u64, max_mem_in_queues: u64) -> u64 {
    if max_hsdir_cache_bytes != 0 {
        max_hsdir_cache_bytes
    } else {
        max_mem_in_queues / 5
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HsDirError {
    #[error(transparent)]
    Descriptor(#[from] HsDescError),
    #[error("cached descriptor has revision {cached}, offered one has {offered}: not newer")]
    NotNewer { cached: u64, offered: u64 },
}

impl HsDirError {
    /// Short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HsDirError::Descriptor(e) => e.reason(),
            HsDirError::NotNewer { .. } => "old_revision",
        }
    }
}

/// Metric labels of refused publishes, in [`HsDirCounters::rejected`] order.
pub const REJECT_REASONS: [&str; 6] = [
    "too_big",
    "malformed",
    "bad_cert",
    "cert_expired",
    "bad_signature",
    "old_revision",
];

/// Counters of every outcome (monotonic), read with [`HsDirCache::counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HsDirCounters {
    /// Descriptors stored (new or replacing an older revision).
    pub stored: u64,
    /// Refused publishes by [`REJECT_REASONS`].
    pub rejected: [u64; 6],
    /// Publishes and fetches refused because the connection was not anonymous.
    pub single_hop_rejected: u64,
    pub fetch_hit: u64,
    /// Fetches for a key we do not hold, or an undecodable key.
    pub fetch_miss: u64,
    pub expired_entries: u64,
    /// Entries evicted under the byte bound or memory pressure, and their bytes.
    pub evicted_entries: u64,
    pub evicted_bytes: u64,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    rejected: [AtomicU64; 6],
    single_hop_rejected: AtomicU64,
    fetch_hit: AtomicU64,
    fetch_miss: AtomicU64,
    expired_entries: AtomicU64,
    evicted_entries: AtomicU64,
    evicted_bytes: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Entry {
    body: Arc<[u8]>,
    revision_counter: u64,
    lifetime_secs: u32,
    /// Unix seconds when stored (C tor's `created_ts`).
    created: u64,
    n_downloaded: u64,
    size: u64,
}

impl Entry {
    /// `cache_clean_v3_as_dir`: expired once `created <= now - lifetime`.
    fn expired(&self, now: u64) -> bool {
        self.created.saturating_add(u64::from(self.lifetime_secs)) <= now
    }
}

/// The HSDir v3 descriptor cache. Sans-IO: the caller passes `now` and the bounds.
pub struct HsDirCache {
    entries: HashMap<[u8; 32], Entry>,
    total_bytes: u64,
    max_cache_bytes: u64,
    max_descriptor_size: u32,
    counters: Counters,
}

impl HsDirCache {
    /// `max_cache_bytes` as from [`max_cache_bytes`]; `max_descriptor_size` as from
    /// [`max_descriptor_size_from_param`].
    pub fn new(max_cache_bytes: u64, max_descriptor_size: u32) -> HsDirCache {
        HsDirCache {
            entries: HashMap::new(),
            total_bytes: 0,
            max_cache_bytes,
            max_descriptor_size,
            counters: Counters::default(),
        }
    }

    /// A new consensus may change `HSV3MaxDescriptorSize`; a new config `MaxHSDirCacheBytes`.
    pub fn set_limits(&mut self, max_cache_bytes: u64, max_descriptor_size: u32) {
        self.max_cache_bytes = max_cache_bytes;
        self.max_descriptor_size = max_descriptor_size;
    }

    /// Verifies and stores a posted descriptor (`hs_cache_store_as_dir`).
    pub fn publish(&mut self, body: &[u8], now: SystemTime) -> Result<(), HsDirError> {
        let r = self.publish_inner(body, now);
        match &r {
            Ok(()) => bump(&self.counters.stored, 1),
            Err(e) => {
                let i = REJECT_REASONS
                    .iter()
                    .position(|r| *r == e.reason())
                    .expect("every reason is listed");
                bump(&self.counters.rejected[i], 1);
            }
        }
        r
    }

    fn publish_inner(&mut self, body: &[u8], now: SystemTime) -> Result<(), HsDirError> {
        let outer = decode_outer(body, self.max_descriptor_size, now)?;
        let body = c_string(body);

        // C tor prunes before looking at the revision counter, and before inserting.
        if self.max_cache_bytes > 0 && self.total_bytes > self.max_cache_bytes {
            let to_remove = if PRUNE_SPARE_ROOM < self.max_cache_bytes {
                self.total_bytes - (self.max_cache_bytes - PRUNE_SPARE_ROOM)
            } else {
                self.total_bytes / 2
            };
            self.handle_oom(to_remove);
        }

        let mut n_downloaded = 0;
        if let Some(old) = self.entries.get(&outer.blinded_key) {
            if old.revision_counter >= outer.revision_counter {
                return Err(HsDirError::NotNewer {
                    cached: old.revision_counter,
                    offered: outer.revision_counter,
                });
            }
            n_downloaded = old.n_downloaded;
            let size = old.size;
            self.entries.remove(&outer.blinded_key);
            self.total_bytes -= size;
        }
        let size = ENTRY_OVERHEAD + outer.superencrypted_len as u64 + body.len() as u64;
        self.entries.insert(
            outer.blinded_key,
            Entry {
                body: Arc::from(body),
                revision_counter: outer.revision_counter,
                lifetime_secs: outer.lifetime_secs,
                created: unix_secs(now),
                n_downloaded,
                size,
            },
        );
        self.total_bytes += size;
        Ok(())
    }

    /// The descriptor stored under `blinded_key`. An entry past its lifetime is still served
    /// until [`HsDirCache::clean`] drops it, as C tor's `cache_lookup_v3_as_dir` does.
    pub fn lookup(&self, blinded_key: &[u8; 32]) -> Option<Arc<[u8]>> {
        let found = self.entries.get(blinded_key).map(|e| e.body.clone());
        match found {
            Some(_) => bump(&self.counters.fetch_hit, 1),
            None => bump(&self.counters.fetch_miss, 1),
        }
        found
    }

    /// Counts one answered download of `blinded_key`'s descriptor
    /// (`hs_cache_mark_dowloaded_as_dir`): eviction keeps popular descriptors longest.
    pub fn note_downloaded(&mut self, blinded_key: &[u8; 32]) {
        if let Some(e) = self.entries.get_mut(blinded_key) {
            e.n_downloaded = e.n_downloaded.saturating_add(1);
        }
    }

    /// Drops every entry past its lifetime (`hs_cache_clean_as_dir`; C tor runs it every 30
    /// minutes). Returns the bytes freed.
    pub fn clean(&mut self, now: SystemTime) -> u64 {
        let now = unix_secs(now);
        let mut freed = 0;
        let mut n = 0;
        self.entries.retain(|_, e| {
            if e.expired(now) {
                freed += e.size;
                n += 1;
                false
            } else {
                true
            }
        });
        self.total_bytes -= freed;
        bump(&self.counters.expired_entries, n);
        freed
    }

    /// Frees at least `min_remove_bytes` if the cache holds that much, least-downloaded
    /// entries first (`hs_cache_handle_oom`; among equal counts C tor takes hash order, we
    /// take the oldest). Returns the bytes freed.
    pub fn handle_oom(&mut self, min_remove_bytes: u64) -> u64 {
        if min_remove_bytes == 0 {
            return 0;
        }
        let mut order: Vec<([u8; 32], u64, u64)> = self
            .entries
            .iter()
            .map(|(k, e)| (*k, e.n_downloaded, e.created))
            .collect();
        order.sort_unstable_by_key(|&(key, n_downloaded, created)| (n_downloaded, created, key));
        let mut removed = 0;
        let mut n = 0;
        for (key, _, _) in order {
            if removed >= min_remove_bytes {
                break;
            }
            if let Some(e) = self.entries.remove(&key) {
                removed += e.size;
                n += 1;
            }
        }
        self.total_bytes -= removed;
        bump(&self.counters.evicted_entries, n);
        bump(&self.counters.evicted_bytes, removed);
        removed
    }

    /// Counts a publish or fetch refused for not coming over an anonymous circuit.
    pub(crate) fn note_single_hop(&self) {
        bump(&self.counters.single_hop_rejected, 1);
    }

    /// Counts a fetch whose key did not decode (answered 404, as a miss).
    pub(crate) fn note_bad_key(&self) {
        bump(&self.counters.fetch_miss, 1);
    }

    /// Bytes accounted to the cache (the quantity bounded by `MaxHSDirCacheBytes`).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of descriptors held (including expired ones not yet cleaned).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn counters(&self) -> HsDirCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HsDirCounters {
            stored: get(&c.stored),
            rejected: std::array::from_fn(|i| get(&c.rejected[i])),
            single_hop_rejected: get(&c.single_hop_rejected),
            fetch_hit: get(&c.fetch_hit),
            fetch_miss: get(&c.fetch_miss),
            expired_entries: get(&c.expired_entries),
            evicted_entries: get(&c.evicted_entries),
            evicted_bytes: get(&c.evicted_bytes),
        }
    }
}
