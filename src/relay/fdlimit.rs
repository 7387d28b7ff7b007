//! The open-files check at start (issue #15): every live connection is a socket, so the
//! open-files limit (RLIMIT_NOFILE) bounds the shards' connection tables. Read it, raise the
//! soft limit to the hard one (as C tor's `set_max_file_descriptors`), and say plainly when
//! it is too low: refuse to start below [`FdNeeds::minimum`], warn below
//! [`FdNeeds::recommended`], with what to change.
//!
//! C tor refuses to start when the limit is under `ConnLimit` (1000 by default) and asks for
//! a higher `ulimit -n`; Fors accepts any `ConnLimit` and sizes from the limit instead
//! (docs/config.md), so its minimum is what its own tables need to work at all.

#![forbid(unsafe_code)]

use super::shardcfg::FD_RESERVE;

/// Fewest connections per shard a relay can work with: channels to a few relays and the
/// authorities, a few clients and exit streams; the slot classes (`shard::slots`) then give
/// 64 to outbound work and 32 to handshakes.
pub const MIN_CONNECTIONS_PER_SHARD: u64 = 256;

/// C tor's default `ConnLimit`: below it C tor does not start; Fors does not either.
pub const C_TOR_CONN_LIMIT: u64 = 1000;

/// What a public relay should have: room for a channel to every relay in the network
/// (about 8,000), its clients and exit streams. The packaged tor unit files ask for the same
/// (`LimitNOFILE=65536`).
pub const RECOMMENDED_LIMIT: u64 = 65_536;

/// The limit this process runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit (after raising it to the hard limit where allowed).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// What Fors needs for `shards` shards whose profile wants `per_shard` connections each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdNeeds {
    /// Below this Fors refuses to start.
    pub minimum: u64,
    /// Below this Fors warns (and runs with smaller tables).
    pub recommended: u64,
}

impl FdNeeds {
    pub fn new(shards: u32, per_shard: u64) -> FdNeeds {
        let shards = u64::from(shards.max(1));
        let minimum = (FD_RESERVE + shards * MIN_CONNECTIONS_PER_SHARD).max(C_TOR_CONN_LIMIT);
        let wanted = FD_RESERVE.saturating_add(shards.saturating_mul(per_shard));
        FdNeeds {
            minimum,
            recommended: wanted.min(RECOMMENDED_LIMIT).max(minimum),
        }
    }
}

/// The outcome of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdCheck {
    /// Enough for the profile's tables, or the recommended value.
    Ok,
    /// Runs, with smaller tables: the warning to log.
    Low(String),
}

/// The limit is below the hard minimum: the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "The open-files limit is {soft} (hard limit {hard}), but Fors needs at least {minimum} \
     open files for {shards} shard(s) (recommended: {recommended}). Raise it: in the systemd \
     unit, LimitNOFILE={recommended}; in a shell, `ulimit -n {recommended}` before starting \
     Fors (a hard limit above the current one needs root or /etc/security/limits.conf)."
)]
pub struct FdLimitTooLow {
    pub soft: u64,
    pub hard: u64,
    pub minimum: u64,
    pub recommended: u64,
    pub shards: u32,
}

/// Checks `limit` against what `shards` shards with `per_shard` wanted connections need.
pub fn check(limit: FdLimit, shards: u32, per_shard: u64) -> Result<FdCheck, FdLimitTooLow> {
    let needs = FdNeeds::new(shards, per_shard);
    if limit.soft < needs.minimum {
        return Err(FdLimitTooLow {
            soft: limit.soft,
            hard: limit.hard,
            minimum: needs.minimum,
            recommended: needs.recommended,
            shards,
        });
    }
    if limit.soft < needs.recommended {
        let per = limit.soft.saturating_sub(FD_RESERVE) / u64::from(shards.max(1));
        return Ok(FdCheck::Low(format!(
            "The open-files limit is {} (hard limit {}), below the recommended {} for {shards} \
             shard(s): each shard's connection table holds {} connections instead of {}. \
             Raise it for a busy relay: in the systemd unit, LimitNOFILE={}; in a shell, \
             `ulimit -n {}` before starting Fors.",
            limit.soft,
            limit.hard,
            needs.recommended,
            per.min(per_shard),
            per_shard,
            needs.recommended,
            needs.recommended
        )));
    }
    Ok(FdCheck::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(n: u64) -> FdLimit {
        FdLimit { soft: n, hard: n }
    }

    #[test]
    fn refuses_below_the_minimum_with_how_to_raise_it() {
        // 2 shards: 128 + 2 × 256 = 640, but never under C tor's 1000.
        assert_eq!(FdNeeds::new(2, 73_728).minimum, 1000);
        assert_eq!(FdNeeds::new(8, 73_728).minimum, 128 + 8 * 256);
        let e = check(lim(999), 2, 73_728).unwrap_err();
        let msg = e.to_string();
        for part in [
            "is 999",
            "at least 1000",
            "LimitNOFILE=65536",
            "ulimit -n 65536",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
        assert!(check(lim(1000), 2, 73_728).is_ok());
    }

    #[test]
    fn warns_below_the_recommended_value_only() {
        let Ok(FdCheck::Low(w)) = check(lim(20_000), 2, 73_728) else {
            panic!("no warning at 20000")
        };
        assert!(w.contains("holds 9936 connections instead of 73728"), "{w}");
        assert_eq!(check(lim(65_536), 2, 73_728), Ok(FdCheck::Ok));
        // A small profile is satisfied with less than the general recommendation.
        assert_eq!(FdNeeds::new(1, 2_000).recommended, 2_128);
        assert_eq!(check(lim(2_128), 1, 2_000), Ok(FdCheck::Ok));
        assert!(matches!(check(lim(2_127), 1, 2_000), Ok(FdCheck::Low(_))));
    }
}
