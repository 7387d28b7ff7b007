//! TTLs that an exit reports to clients in CONNECTED, RESOLVED and END cells.
//!
//! C tor never passes a resolver's TTL through: it reports one of two buckets, plus uniform
//! fuzz, so that clients cannot learn from the TTL when a name was last looked up at this exit
//! (the "DefectTor" traffic-confirmation attack). tor-spec §6.2 (CONNECTED), §6.4 (RESOLVED);
//! C: `clip_dns_ttl`, `clip_dns_fuzzy_ttl` in `connection_edge.c`.

use rand_core::RngCore;

/// The low bucket, in seconds (C `MIN_DNS_TTL`).
pub const MIN_DNS_TTL: u32 = 5 * 60;
/// The high bucket, in seconds (C `MAX_DNS_TTL`).
pub const MAX_DNS_TTL: u32 = 60 * 60;
/// Half-width of the uniform fuzz added to a bucketed TTL (C `FUZZY_DNS_TTL`).
pub const FUZZY_DNS_TTL: u32 = 4 * 60;
/// TTL reported for a literal IP address in BEGIN or RESOLVE (C `DEFAULT_DNS_TTL`).
pub const DEFAULT_DNS_TTL: u32 = 30 * 60;
/// The longest a cached answer may live, whatever its TTL (C `MAX_DNS_ENTRY_AGE`).
pub const MAX_DNS_ENTRY_AGE: u32 = 3 * 60 * 60;

// The fuzz may never push the low bucket to zero or below.
const _: () = assert!(FUZZY_DNS_TTL < MIN_DNS_TTL);

/// Buckets a TTL: anything below 300 s becomes 300 s, everything else 3600 s.
pub fn clip_dns_ttl(ttl: u32) -> u32 {
    if ttl < MIN_DNS_TTL {
        MIN_DNS_TTL
    } else {
        MAX_DNS_TTL
    }
}

/// Buckets a TTL and adds fuzz drawn uniformly from `[-240, +240]` seconds, as an exit does
/// before it puts a TTL in a cell.
pub fn clip_dns_fuzzy_ttl<R: RngCore + ?Sized>(ttl: u32, rng: &mut R) -> u32 {
    let span = 2 * FUZZY_DNS_TTL + 1;
    clip_dns_ttl(ttl) + uniform_below(rng, span) - FUZZY_DNS_TTL
}

/// A uniform integer in `0..bound` without modulo bias (rejection sampling).
fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, bound: u32) -> u32 {
    debug_assert!(bound > 0);
    // Largest multiple of `bound` that fits in u32; values at or above it are redrawn.
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let v = rng.next_u32();
        if v < zone {
            return v % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn buckets_match_c() {
        assert_eq!(clip_dns_ttl(0), 300);
        assert_eq!(clip_dns_ttl(299), 300);
        assert_eq!(clip_dns_ttl(300), 3600);
        assert_eq!(clip_dns_ttl(1800), 3600);
        assert_eq!(clip_dns_ttl(3601), 3600);
        assert_eq!(clip_dns_ttl(u32::MAX), 3600);
    }

    #[test]
    fn fuzz_stays_in_range_and_covers_both_ends() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut lo_min, mut lo_max) = (u32::MAX, 0);
        let (mut hi_min, mut hi_max) = (u32::MAX, 0);
        for _ in 0..20_000 {
            let lo = clip_dns_fuzzy_ttl(10, &mut rng);
            let hi = clip_dns_fuzzy_ttl(300, &mut rng);
            assert!((60..=540).contains(&lo), "{lo}");
            assert!((3360..=3840).contains(&hi), "{hi}");
            lo_min = lo_min.min(lo);
            lo_max = lo_max.max(lo);
            hi_min = hi_min.min(hi);
            hi_max = hi_max.max(hi);
        }
        // 481 values, 20k draws: both extremes appear with overwhelming probability.
        assert_eq!((lo_min, lo_max), (60, 540));
        assert_eq!((hi_min, hi_max), (3360, 3840));
    }
}
