//! Testing-only fault injection, honoured only under `TestingTorNetwork 1` (docs/operating.md
//! "Testing hooks"). Tests need a way to make a shard thread fail in a running relay: to show
//! that the process then exits with an error instead of serving on with a dead shard, and that
//! a stuck shard stops the systemd watchdog pings (`notify.rs`).
//!
//! `FORS_TESTING_PANIC_SHARD=N` in the environment: once the relay is running, shard `N`
//! panics at its next tick (every 100 ms). `FORS_TESTING_STALL_SHARD=N`: shard `N` sleeps in
//! its next tick until the relay shuts down (it serves nothing meanwhile, as a shard stuck in
//! a loop would). Each is ignored, with a warning, without TestingTorNetwork.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::shard::ShardId;

/// The environment variable that asks a shard to panic.
pub const PANIC_SHARD_ENV: &str = "FORS_TESTING_PANIC_SHARD";
/// The environment variable that asks a shard to stall (sleep in its tick).
pub const STALL_SHARD_ENV: &str = "FORS_TESTING_STALL_SHARD";

const NONE: usize = usize::MAX;

/// The shard asked to panic, or `NONE`.
static PANIC_SHARD: AtomicUsize = AtomicUsize::new(NONE);
/// The shard asked to stall, or `NONE`.
static STALL_SHARD: AtomicUsize = AtomicUsize::new(NONE);
/// Set when the relay shuts down: a stalled shard wakes up, so the shutdown can stop it.
static STALL_RELEASED: AtomicBool = AtomicBool::new(false);

/// How often a stalled shard looks whether it was released.
const STALL_POLL: Duration = Duration::from_millis(20);

/// What to do about a fault variable's value, given the configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardRequest {
    /// Not set.
    None,
    /// Set, but this is not a test network (or the value is not a shard index): a warning.
    Ignored(String),
    /// Apply the fault to this shard.
    Shard(usize),
}

/// The request for `FORS_TESTING_PANIC_SHARD` (the name it had before the stall variant).
pub type PanicRequest = ShardRequest;

/// Decides what `FORS_TESTING_PANIC_SHARD`'s value means for this configuration.
pub fn panic_request(value: Option<&str>, config: &Config) -> ShardRequest {
    shard_request(PANIC_SHARD_ENV, value, config)
}

/// Decides what `FORS_TESTING_STALL_SHARD`'s value means for this configuration.
pub fn stall_request(value: Option<&str>, config: &Config) -> ShardRequest {
    shard_request(STALL_SHARD_ENV, value, config)
}

fn shard_request(var: &str, value: Option<&str>, config: &Config) -> ShardRequest {
    let Some(v) = value else {
        return ShardRequest::None;
    };
    if !config.testing_tor_network {
        return ShardRequest::Ignored(format!("{var} is set but TestingTorNetwork is 0: ignored."));
    }
    match v.trim().parse::<usize>() {
        Ok(n) if n != NONE => ShardRequest::Shard(n),
        _ => ShardRequest::Ignored(format!("{var}={v:?} is not a shard number: ignored.")),
    }
}

/// Arms the panic request (the main thread calls this once the relay is running).
pub fn arm(shard: usize) {
    PANIC_SHARD.store(shard, Ordering::Relaxed);
}

/// Arms the stall request (the main thread calls this once the relay is running).
pub fn arm_stall(shard: usize) {
    STALL_RELEASED.store(false, Ordering::Relaxed);
    STALL_SHARD.store(shard, Ordering::Relaxed);
}

/// Wakes a stalled shard for good (the relay is shutting down and must stop its shards).
pub fn release_stall() {
    STALL_RELEASED.store(true, Ordering::Relaxed);
}

/// Called by each shard at every tick: panics if this shard was asked to (once), or sleeps
/// until [`release_stall`] if it was asked to stall (once).
#[inline]
pub fn panic_if_asked(shard: ShardId) {
    if STALL_SHARD.load(Ordering::Relaxed) == shard.0 {
        stall(shard);
    }
    if PANIC_SHARD.load(Ordering::Relaxed) == shard.0
        && PANIC_SHARD
            .compare_exchange(shard.0, NONE, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        panic!(
            "{PANIC_SHARD_ENV} asked shard {} to panic (testing only)",
            shard.0
        );
    }
}

/// The stall itself: the shard thread sleeps, serving nothing, until released.
#[cold]
fn stall(shard: ShardId) {
    if STALL_SHARD
        .compare_exchange(shard.0, NONE, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    while !STALL_RELEASED.load(Ordering::Relaxed) {
        std::thread::sleep(STALL_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};

    fn config(extra: &str) -> Config {
        let text = format!("ORPort 9001\nContactInfo t@example.org\n{extra}");
        parse_str(&MemFs::default(), "torrc", &text).unwrap().0
    }

    #[test]
    fn honoured_only_on_a_test_network() {
        let testnet = config(
            "TestingTorNetwork 1\nDirAuthority 127.0.0.1:7000 \
             DEADBEEF00112233445566778899AABBCCDDEEFF\n",
        );
        assert_eq!(panic_request(None, &testnet), PanicRequest::None);
        assert_eq!(panic_request(Some("1"), &testnet), PanicRequest::Shard(1));
        assert!(matches!(
            panic_request(Some("x"), &testnet),
            PanicRequest::Ignored(_)
        ));
        assert!(matches!(
            panic_request(Some("0"), &config("")),
            PanicRequest::Ignored(_)
        ));
        assert_eq!(stall_request(Some("0"), &testnet), ShardRequest::Shard(0));
        match stall_request(Some("1"), &config("")) {
            ShardRequest::Ignored(w) => assert!(w.contains(STALL_SHARD_ENV), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stalled_shard_sleeps_until_released() {
        // Shard number far from any other test's, so parallel tests do not meet the stall.
        let shard = ShardId(4000);
        arm_stall(shard.0);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            panic_if_asked(shard);
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the shard did not stall"
        );
        release_stall();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the shard stayed stalled after release");
        t.join().unwrap();
        // Once: the next tick runs through.
        panic_if_asked(shard);
    }
}
