//! Testing-only fault injection, honoured only under `TestingTorNetwork 1` (docs/operating.md
//! "Testing hooks"). A test needs a way to make a shard thread panic in a running relay to show
//! that the process then exits with an error instead of serving on with a dead shard.
//!
//! `FORS_TESTING_PANIC_SHARD=N` in the environment: once the relay is running, shard `N`
//! panics at its next tick (every 100 ms). Ignored, with a warning, without TestingTorNetwork.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::shard::ShardId;

/// The environment variable that asks a shard to panic.
pub const PANIC_SHARD_ENV: &str = "FORS_TESTING_PANIC_SHARD";

const NONE: usize = usize::MAX;

/// The shard asked to panic, or `NONE`.
static PANIC_SHARD: AtomicUsize = AtomicUsize::new(NONE);

/// What to do about `FORS_TESTING_PANIC_SHARD`'s value `value`, given the configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum PanicRequest {
    /// Not set.
    None,
    /// Set, but this is not a test network (or the value is not a shard index): a warning.
    Ignored(String),
    /// Panic this shard.
    Shard(usize),
}

/// Decides what the variable's value means for this configuration.
pub fn panic_request(value: Option<&str>, config: &Config) -> PanicRequest {
    let Some(v) = value else {
        return PanicRequest::None;
    };
    if !config.testing_tor_network {
        return PanicRequest::Ignored(format!(
            "{PANIC_SHARD_ENV} is set but TestingTorNetwork is 0: ignored."
        ));
    }
    match v.trim().parse::<usize>() {
        Ok(n) if n != NONE => PanicRequest::Shard(n),
        _ => PanicRequest::Ignored(format!(
            "{PANIC_SHARD_ENV}={v:?} is not a shard number: ignored."
        )),
    }
}

/// Arms the request (the main thread calls this once the relay is running).
pub fn arm(shard: usize) {
    PANIC_SHARD.store(shard, Ordering::Relaxed);
}

/// Called by each shard at every tick: panics if this shard was asked to (once).
#[inline]
pub fn panic_if_asked(shard: ShardId) {
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
    }
}
