//! Building our own exit policy from torrc options, as C tor 0.4.9 does
//! (`policies_parse_exit_policy_from_options`, `policies_parse_exit_policy_internal`).
//!
//! Order of the result, per C:
//! 1. `reject *6:*` unless `IPv6Exit`;
//! 2. `reject private:*` if `ExitPolicyRejectPrivate`;
//! 3. `reject ADDR:*` for our own public addresses (published ones if
//!    `ExitPolicyRejectPrivate`; outbound-bind, port and interface addresses if
//!    `ExitPolicyRejectLocalInterfaces`), IPv6 ones only with `IPv6Exit`;
//! 4. the configured `ExitPolicy` items;
//! 5. the reduced or default tail (or `reject *:*` for a bridge);
//!
//! and then dead and redundant entries are removed (`exit_policy_remove_redundancies`),
//! which changes what the descriptor shows, so we do it exactly as C does.

use std::net::IpAddr;

use super::family::{is_public_for_reject, Entry, FamilyAddr, PRIVATE_NETS_V4, PRIVATE_NETS_V6};
use super::rule::{AddrPattern, PolicyAction, PolicyRule, PortRange};
use super::ExitPolicy;

/// torrc `ExitRelay 0|1|auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitRelay {
    /// Exit only if `ExitPolicy`, `ReducedExitPolicy` or `IPv6Exit` is set.
    #[default]
    Auto,
    /// Never exit: the policy is `reject *:*` whatever else is configured.
    Disabled,
    /// Exit with the configured, reduced or default policy.
    Enabled,
}

/// Ports the default policy rejects before `accept *:*` (C `DEFAULT_EXIT_POLICY`).
pub const DEFAULT_REJECTED_PORTS: [(u16, u16); 10] = [
    (25, 25),
    (119, 119),
    (135, 139),
    (445, 445),
    (563, 563),
    (1214, 1214),
    (4661, 4666),
    (6346, 6429),
    (6699, 6699),
    (6881, 6999),
];

/// Ports `ReducedExitPolicy` accepts before `reject *:*` (C `REDUCED_EXIT_POLICY`, as
/// shipped in tor 0.4.9.11: it includes the Monero ports 18080-18081 and 18089, which
/// older 0.4.9-dev sources lack).
pub const REDUCED_ACCEPTED_PORTS: &[(u16, u16)] = &[
    (20, 23),
    (43, 43),
    (53, 53),
    (79, 81),
    (88, 88),
    (110, 110),
    (143, 143),
    (194, 194),
    (220, 220),
    (389, 389),
    (443, 443),
    (464, 464),
    (465, 465),
    (531, 531),
    (543, 544),
    (554, 554),
    (563, 563),
    (587, 587),
    (636, 636),
    (706, 706),
    (749, 749),
    (873, 873),
    (902, 904),
    (981, 981),
    (989, 995),
    (1194, 1194),
    (1220, 1220),
    (1293, 1293),
    (1500, 1500),
    (1533, 1533),
    (1677, 1677),
    (1723, 1723),
    (1755, 1755),
    (1863, 1863),
    (2082, 2083),
    (2086, 2087),
    (2095, 2096),
    (2102, 2104),
    (3128, 3128),
    (3389, 3389),
    (3690, 3690),
    (4321, 4321),
    (4643, 4643),
    (5050, 5050),
    (5190, 5190),
    (5222, 5223),
    (5228, 5228),
    (5900, 5900),
    (6660, 6669),
    (6679, 6679),
    (6697, 6697),
    (8000, 8000),
    (8008, 8008),
    (8074, 8074),
    (8080, 8080),
    (8082, 8082),
    (8087, 8088),
    (8232, 8233),
    (8332, 8333),
    (8443, 8443),
    (8888, 8888),
    (9418, 9418),
    (9999, 9999),
    (10000, 10000),
    (11371, 11371),
    (18080, 18081),
    (18089, 18089),
    (19294, 19294),
    (19638, 19638),
    (50002, 50002),
    (64738, 64738),
];

/// Inputs to our exit policy. Addresses are passed in (sans-IO): the caller enumerates
/// interfaces and knows its published and bind addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicyBuilder {
    /// `ExitRelay` (default `auto`).
    pub exit_relay: ExitRelay,
    /// `ExitPolicy` items in order; `None` when the option is not set at all (this
    /// matters for `ExitRelay auto`).
    pub exit_policy: Option<Vec<PolicyRule>>,
    /// `ExitPolicyRejectPrivate` (default 1).
    pub reject_private: bool,
    /// `ExitPolicyRejectLocalInterfaces` (default 0).
    pub reject_local_interfaces: bool,
    /// `ReducedExitPolicy` (default 0).
    pub reduced_exit_policy: bool,
    /// `IPv6Exit` (default 0).
    pub ipv6_exit: bool,
    /// `BridgeRelay`: a bridge gets no default tail.
    pub bridge_relay: bool,
    /// Our published IPv4/IPv6 addresses; rejected when `reject_private`.
    pub published_addresses: Vec<IpAddr>,
    /// `OutboundBindAddress*`; rejected when `reject_local_interfaces`.
    pub outbound_bind_addresses: Vec<IpAddr>,
    /// Bind addresses of our configured ports (ORPort, DNSPort, ...); rejected when
    /// `reject_local_interfaces`.
    pub port_addresses: Vec<IpAddr>,
    /// Addresses of this machine's interfaces; rejected when `reject_local_interfaces`.
    pub interface_addresses: Vec<IpAddr>,
}

impl Default for ExitPolicyBuilder {
    /// C's defaults, which make a non-exit.
    fn default() -> Self {
        ExitPolicyBuilder {
            exit_relay: ExitRelay::Auto,
            exit_policy: None,
            reject_private: true,
            reject_local_interfaces: false,
            reduced_exit_policy: false,
            ipv6_exit: false,
            bridge_relay: false,
            published_addresses: Vec::new(),
            outbound_bind_addresses: Vec::new(),
            port_addresses: Vec::new(),
            interface_addresses: Vec::new(),
        }
    }
}

impl ExitPolicyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether these options make us an exit at all (C: not `ExitRelay 0`, and not
    /// `policy_using_default_exit_options`).
    pub fn is_exit(&self) -> bool {
        match self.exit_relay {
            ExitRelay::Disabled => false,
            ExitRelay::Enabled => true,
            ExitRelay::Auto => {
                self.exit_policy.is_some() || self.reduced_exit_policy || self.ipv6_exit
            }
        }
    }

    /// Build the policy. Infallible: the rules were parsed already.
    pub fn build(&self) -> ExitPolicy {
        let mut p = ExitPolicy::empty(self.ipv6_exit && self.is_exit());
        if !self.is_exit() {
            p.push_pattern(PolicyAction::Reject, AddrPattern::Any, PortRange::ALL);
            return p;
        }

        if !self.ipv6_exit {
            p.push_pattern(PolicyAction::Reject, AddrPattern::Any6, PortRange::ALL);
        }
        if self.reject_private {
            p.push_pattern(PolicyAction::Reject, AddrPattern::Private, PortRange::ALL);
        }

        // Our own addresses (C `policies_parse_exit_policy_reject_private`). C treats a
        // v4-mapped IPv6 address as IPv4 when filtering by family.
        let ipv6_exit = self.ipv6_exit;
        let wanted = |a: &IpAddr, v4: bool, v6: bool| {
            let is_v4 = match a {
                IpAddr::V4(_) => true,
                IpAddr::V6(x) => x.to_ipv4_mapped().is_some(),
            };
            is_public_for_reject(*a) && if is_v4 { v4 } else { v6 }
        };
        let mut own: Vec<IpAddr> = Vec::new();
        if self.reject_private {
            own.extend(
                self.published_addresses
                    .iter()
                    .filter(|a| wanted(a, true, ipv6_exit)),
            );
        }
        if self.reject_local_interfaces {
            own.extend(
                self.outbound_bind_addresses
                    .iter()
                    .filter(|a| wanted(a, true, ipv6_exit)),
            );
            own.extend(
                self.port_addresses
                    .iter()
                    .filter(|a| wanted(a, true, ipv6_exit)),
            );
            own.extend(
                self.interface_addresses
                    .iter()
                    .filter(|a| wanted(a, true, false)),
            );
            if ipv6_exit {
                own.extend(
                    self.interface_addresses
                        .iter()
                        .filter(|a| wanted(a, false, true)),
                );
            }
        }
        for a in own {
            let pattern = match a {
                IpAddr::V4(addr) => AddrPattern::V4 { addr, bits: 32 },
                IpAddr::V6(addr) => AddrPattern::V6 { addr, bits: 128 },
            };
            p.push_pattern(PolicyAction::Reject, pattern, PortRange::ALL);
        }
        // C tidies this prefix once on its own (duplicate own addresses) before adding the
        // configured items; mirror that so the result is C's in every case.
        remove_redundancies(&mut p.v4);
        remove_redundancies(&mut p.v6);

        for rule in self.exit_policy.iter().flatten() {
            p.push_rule(rule);
        }

        if self.bridge_relay {
            p.push_pattern(PolicyAction::Reject, AddrPattern::Any, PortRange::ALL);
        } else if self.reduced_exit_policy {
            for &(lo, hi) in REDUCED_ACCEPTED_PORTS {
                p.push_pattern(PolicyAction::Accept, AddrPattern::Any, range(lo, hi));
            }
            p.push_pattern(PolicyAction::Reject, AddrPattern::Any, PortRange::ALL);
        } else {
            for &(lo, hi) in &DEFAULT_REJECTED_PORTS {
                p.push_pattern(PolicyAction::Reject, AddrPattern::Any, range(lo, hi));
            }
            p.push_pattern(PolicyAction::Accept, AddrPattern::Any, PortRange::ALL);
        }

        remove_redundancies(&mut p.v4);
        remove_redundancies(&mut p.v6);
        p
    }
}

fn range(lo: u16, hi: u16) -> PortRange {
    PortRange::new(lo, hi).unwrap_or(PortRange::ALL)
}

/// Expand a pattern into per-family entries, as C's `policy_expand_private` and
/// `policy_expand_unspec` do.
pub(crate) fn expand(
    action: PolicyAction,
    pattern: AddrPattern,
    ports: PortRange,
    v4: &mut Vec<Entry<u32>>,
    v6: &mut Vec<Entry<u128>>,
) {
    let e4 = |addr: u32, bits: u8| Entry {
        action,
        addr,
        bits,
        ports,
    };
    let e6 = |addr: u128, bits: u8| Entry {
        action,
        addr,
        bits,
        ports,
    };
    match pattern {
        AddrPattern::Any => {
            v4.push(e4(0, 0));
            v6.push(e6(0, 0));
        }
        AddrPattern::Any4 => v4.push(e4(0, 0)),
        AddrPattern::Any6 => v6.push(e6(0, 0)),
        AddrPattern::Private => {
            v4.extend(PRIVATE_NETS_V4.iter().map(|&(a, b)| e4(u32::from(a), b)));
            v6.extend(PRIVATE_NETS_V6.iter().map(|&(a, b)| e6(u128::from(a), b)));
        }
        AddrPattern::V4 { addr, bits } => v4.push(e4(u32::from(addr), bits)),
        AddrPattern::V6 { addr, bits } => v6.push(e6(u128::from(addr), bits)),
    }
}

/// C `exit_policy_remove_redundancies`, for one family's list.
pub(crate) fn remove_redundancies<A: FamilyAddr>(list: &mut Vec<Entry<A>>) {
    // 1. Everything after a catch-all is dead.
    if let Some(i) = list.iter().position(Entry::is_catch_all) {
        list.truncate(i + 1);
    }

    // 2. Drop any entry an earlier entry covers (whatever the actions: the earlier one
    //    decides first).
    let mut i = 0;
    while i + 1 < list.len() {
        let a = list[i];
        let mut j = i + 1;
        while j < list.len() {
            if a.covers(&list[j]) {
                list.remove(j);
            } else {
                j += 1;
            }
        }
        i += 1;
    }

    // 3. Drop entry A if a later entry B with the same action covers it and no entry of
    //    the other action between them intersects A.
    let mut i = 0;
    while i + 1 < list.len() {
        let a = list[i];
        let mut removed = false;
        for b in &list[i + 1..] {
            if b.action != a.action {
                if a.intersects(b) {
                    break;
                }
            } else if b.covers(&a) {
                removed = true;
                break;
            }
        }
        if removed {
            list.remove(i);
        } else {
            i += 1;
        }
    }
}
