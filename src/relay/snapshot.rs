//! Read-only snapshots from the control plane to the shards.
//!
//! The control plane publishes a new `Arc<T>` now and then (new consensus, rotated onion
//! key); each shard keeps its own `Arc<T>` clone and, once per tick, compares one atomic
//! generation counter with the one it last saw. Only when it changed does the shard take the
//! mutex, for the length of an `Arc` clone. The per-cell path only ever reads the shard's own
//! `Arc`: no lock, no atomic read-modify-write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::accounting::Hibernation;
use crate::config::OutboundBind;
use crate::crypto::handshake::keymap::NtorKeyMap;
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::exit::policy::ExitPolicy;
use crate::proto::channel::LinkContext;

/// The publishing side, shared by the control plane and every [`SnapshotReader`].
pub struct SnapshotCell<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> SnapshotCell<T> {
    pub fn new(initial: T) -> Arc<SnapshotCell<T>> {
        Arc::new(SnapshotCell {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(initial)),
        })
    }

    /// Replaces the snapshot; readers pick it up at their next [`SnapshotReader::refresh`].
    pub fn publish(&self, value: T) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(value);
        // Release after the store: a reader that sees the new generation finds the new value.
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current value (control-plane side; takes the lock).
    pub fn load(&self) -> Arc<T> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One shard's view: a local `Arc` refreshed once per tick.
pub struct SnapshotReader<T> {
    cell: Arc<SnapshotCell<T>>,
    seen: u64,
    local: Arc<T>,
}

impl<T> SnapshotReader<T> {
    pub fn new(cell: Arc<SnapshotCell<T>>) -> SnapshotReader<T> {
        let seen = cell.generation();
        let local = cell.load();
        SnapshotReader { cell, seen, local }
    }

    /// Picks up a newer snapshot if one was published; returns whether it did.
    pub fn refresh(&mut self) -> bool {
        let g = self.cell.generation();
        if g == self.seen {
            return false;
        }
        self.local = self.cell.load();
        self.seen = g;
        true
    }

    /// The snapshot this shard works with (no synchronisation).
    pub fn get(&self) -> &Arc<T> {
        &self.local
    }

    pub fn generation(&self) -> u64 {
        self.seen
    }
}

/// A relay the shards may extend to, as the consensus lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownRelay {
    pub rsa_identity: RsaIdentity,
    pub ed25519_identity: Option<Ed25519Identity>,
    pub or_addresses: Vec<std::net::SocketAddr>,
}

/// What the shards need from the control plane.
#[derive(Clone, Debug)]
pub struct NetworkSnapshot {
    /// `params` of the current consensus (dir-spec §3.4.1); empty until one is fetched.
    pub consensus_params: BTreeMap<String, i32>,
    /// Relays of the current consensus by fingerprint; empty until one is fetched.
    pub known_relays: Arc<BTreeMap<RsaIdentity, KnownRelay>>,
    /// Our ntor onion keys: current and, in its grace period, previous.
    pub ntor_keys: Arc<NtorKeyMap>,
    /// Our exit policy, checked on every BEGIN (replaced on SIGHUP).
    pub exit_policy: Arc<ExitPolicy>,
    /// TLS configuration and CERTS-cell certificates for the link handshake, shared by every
    /// channel; rebuilt from fresh link certificates before they expire and when the signing
    /// key is renewed. A channel keeps the context it started with.
    pub link: Arc<LinkContext>,
    /// Source addresses for outgoing channels and exit connections (`OutboundBindAddress*`,
    /// replaced on SIGHUP).
    pub outbound: OutboundBind,
    /// Our own consensus entry in `ns` form (for the ControlPort's `GETINFO ns/id/…`), when
    /// the current consensus lists us and we know the digest of the descriptor we published.
    pub self_status: Option<Arc<str>>,
    /// Accounting's hibernation state (C `we_are_hibernating`): soft and hard refuse new
    /// connections, circuits and streams; hard also closes every channel.
    pub hibernation: Hibernation,
    /// Whether extends may open channels over IPv6 ([`super::setup::can_extend_over_ipv6`];
    /// ORPorts do not change on SIGHUP).
    pub extend_over_ipv6: bool,
}

impl NetworkSnapshot {
    /// A consensus parameter with its dir-spec default and bounds.
    pub fn param(&self, name: &str, default: i32, min: i32, max: i32) -> i32 {
        self.consensus_params
            .get(name)
            .copied()
            .filter(|v| (min..=max).contains(v))
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_new_generations_once() {
        let cell = SnapshotCell::new(1u32);
        let mut a = SnapshotReader::new(cell.clone());
        let mut b = SnapshotReader::new(cell.clone());
        assert!(!a.refresh());
        assert_eq!(**a.get(), 1);
        cell.publish(2);
        cell.publish(3);
        assert!(a.refresh());
        assert_eq!(**a.get(), 3);
        assert!(!a.refresh());
        assert!(b.refresh());
        assert_eq!(**b.get(), 3);
        assert_eq!(a.generation(), cell.generation());
    }

    #[test]
    fn concurrent_publish_and_refresh() {
        let cell = SnapshotCell::new(0u64);
        let reader_cell = cell.clone();
        let t = std::thread::spawn(move || {
            let mut r = SnapshotReader::new(reader_cell);
            let mut last = 0;
            while last < 1000 {
                r.refresh();
                let v = **r.get();
                assert!(v >= last, "went backwards");
                last = v;
            }
        });
        for i in 1..=1000 {
            cell.publish(i);
        }
        t.join().unwrap();
    }
}
