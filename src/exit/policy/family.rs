//! Per-address-family policy entries and address classification.
//!
//! A compiled policy keeps one ordered list per family: a rule of one family never matches
//! an address of the other (C compares with `CMP_EXACT`), so first-match order only
//! matters within a family, and every C algorithm we mirror (redundancy removal,
//! summaries, reject-star, general-exit) looks at one family at a time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::rule::{PolicyAction, PortRange};

/// An address of one family as a big-endian integer.
pub(crate) trait FamilyAddr: Copy + Eq + std::fmt::Debug {
    /// Address length in bits.
    const BITS: u8;
    /// Do `a` and `b` agree on their first `bits` bits?
    fn prefix_eq(a: Self, b: Self, bits: u8) -> bool;
    /// Whether `addr/bits` is written exactly as one of C's `private_nets` (the summary
    /// ignores rejects of those).
    fn is_listed_private_net(addr: Self, bits: u8) -> bool;
}

impl FamilyAddr for u32 {
    const BITS: u8 = 32;

    fn prefix_eq(a: u32, b: u32, bits: u8) -> bool {
        if bits == 0 {
            return true;
        }
        let shift = 32 - u32::from(bits.min(32));
        (a ^ b).checked_shr(shift).unwrap_or(0) == 0
    }

    fn is_listed_private_net(addr: u32, bits: u8) -> bool {
        PRIVATE_NETS_V4
            .iter()
            .any(|&(a, b)| u32::from(a) == addr && b == bits)
    }
}

impl FamilyAddr for u128 {
    const BITS: u8 = 128;

    fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
        if bits == 0 {
            return true;
        }
        let shift = 128 - u32::from(bits.min(128));
        (a ^ b).checked_shr(shift).unwrap_or(0) == 0
    }

    fn is_listed_private_net(addr: u128, bits: u8) -> bool {
        PRIVATE_NETS_V6
            .iter()
            .any(|&(a, b)| u128::from(a) == addr && b == bits)
    }
}

/// One compiled rule of a single family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry<A> {
    pub action: PolicyAction,
    /// The address as written (C does not mask it off).
    pub addr: A,
    pub bits: u8,
    pub ports: PortRange,
}

impl<A: FamilyAddr> Entry<A> {
    pub fn matches_addr(&self, addr: A) -> bool {
        A::prefix_eq(addr, self.addr, self.bits)
    }

    /// `*:*` of this family: every later entry is dead.
    pub fn is_catch_all(&self) -> bool {
        self.bits == 0 && self.ports.is_all()
    }

    /// C `addr_policy_covers`: everything `other` matches, `self` matches too.
    pub fn covers(&self, other: &Entry<A>) -> bool {
        self.bits <= other.bits
            && A::prefix_eq(self.addr, other.addr, self.bits)
            && self.ports.min() <= other.ports.min()
            && self.ports.max() >= other.ports.max()
    }

    /// C `addr_policy_intersects`: some address:port matches both.
    pub fn intersects(&self, other: &Entry<A>) -> bool {
        A::prefix_eq(self.addr, other.addr, self.bits.min(other.bits))
            && self.ports.max() >= other.ports.min()
            && other.ports.max() >= self.ports.min()
    }
}

/// IPv4 networks that `private` expands to, in C's order (`policies.c` `private_nets`).
/// Authorities rely on this exact list when summarizing, so it must not change.
pub const PRIVATE_NETS_V4: [(Ipv4Addr, u8); 6] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
];

/// IPv6 networks that `private` expands to, in C's order (`policies.c` `private_nets`).
pub const PRIVATE_NETS_V6: [(Ipv6Addr, u8); 6] = [
    (Ipv6Addr::UNSPECIFIED, 8),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
    (Ipv6Addr::UNSPECIFIED, 127),
];

/// C `tor_addr_is_internal(addr, 0)` (lib/net/address.c). Not the same list as
/// `private`: it adds 100.64/10 and omits multicast.
pub fn is_internal(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_internal_v4(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(u32::from(v4)),
            None => {
                let w = u128::from(a);
                let top = (w >> 96) as u32;
                (top & 0xfe00_0000) == 0xfc00_0000 // fc00::/7
                    || (top & 0xffc0_0000) == 0xfe80_0000 // fe80::/10
                    || (top & 0xffc0_0000) == 0xfec0_0000 // fec0::/10
                    || (w >> 1) == 0 // ::/127
            }
        },
    }
}

fn is_internal_v4(a: u32) -> bool {
    (a & 0xff00_0000) == 0x0a00_0000 // 10/8
        || (a & 0xff00_0000) == 0 // 0/8
        || (a & 0xff00_0000) == 0x7f00_0000 // 127/8
        || (a & 0xffc0_0000) == 0x6440_0000 // 100.64/10
        || (a & 0xffff_0000) == 0xa9fe_0000 // 169.254/16
        || (a & 0xfff0_0000) == 0xac10_0000 // 172.16/12
        || (a & 0xffff_0000) == 0xc0a8_0000 // 192.168/16
}

/// C `tor_addr_is_multicast`. Note C only treats 224/8 as IPv4 multicast.
fn is_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[0] == 0xe0,
        IpAddr::V6(a) => a.octets()[0] == 0xff,
    }
}

/// C `tor_addr_is_public_for_reject`: only such addresses get their own reject rule.
pub(crate) fn is_public_for_reject(addr: IpAddr) -> bool {
    !addr.is_unspecified() && !is_internal(addr) && !is_multicast(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_comparison() {
        let a = u32::from(Ipv4Addr::new(10, 1, 2, 3));
        let b = u32::from(Ipv4Addr::new(10, 200, 0, 0));
        assert!(u32::prefix_eq(a, b, 0));
        assert!(u32::prefix_eq(a, b, 8));
        assert!(!u32::prefix_eq(a, b, 9));
        assert!(u32::prefix_eq(a, a, 32));
        assert!(!u32::prefix_eq(a, a + 1, 32));
        let x = u128::from(ip_v6("fc00::1"));
        let y = u128::from(ip_v6("fdff::"));
        assert!(u128::prefix_eq(x, y, 7));
        assert!(!u128::prefix_eq(x, y, 8));
        assert!(u128::prefix_eq(x, x, 128));
        assert!(!u128::prefix_eq(x, x ^ 1, 128));
    }

    fn ip_v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_as_c() {
        for s in [
            "10.0.0.1",
            "0.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "fec0::1",
            "::",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip(s)), "{s}");
            assert!(!is_public_for_reject(ip(s)), "{s}");
        }
        for s in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "::2",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(s)), "{s}");
            assert!(is_public_for_reject(ip(s)), "{s}");
        }
        // Multicast is public but never gets its own reject rule.
        assert!(!is_public_for_reject(ip("224.0.0.1")));
        assert!(!is_public_for_reject(ip("ff02::1")));
        // C only knows 224/8 as IPv4 multicast.
        assert!(is_public_for_reject(ip("239.1.1.1")));
    }
}
