//! Exit policy with torrc semantics: ordered accept/reject rules, first match wins.
//!
//! - [`rule`]: parsing torrc items (`accept *:80`, `reject6 [fc00::]/7:*`, ...).
//! - [`build`]: our own policy from torrc options (`ExitRelay`, `ExitPolicyRejectPrivate`,
//!   `ReducedExitPolicy`, `IPv6Exit`, ...), as C tor 0.4.9 builds it.
//! - this module: [`ExitPolicy`] evaluation for BEGIN, the descriptor lines, summaries and
//!   Exit-flag eligibility (dir-spec "exit-policy", "ipv6-policy"; C `core/or/policies.c`).

pub mod build;
mod family;
pub mod rule;
pub mod summary;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::net::IpAddr;

pub use build::{ExitPolicyBuilder, ExitRelay, DEFAULT_REJECTED_PORTS, REDUCED_ACCEPTED_PORTS};
pub use family::{PRIVATE_NETS_V4, PRIVATE_NETS_V6};
pub use rule::{
    parse_policy_item, parse_policy_list, AddrPattern, ParsedPolicyList, PolicyAction,
    PolicyParseError, PolicyRule, PortRange,
};
pub use summary::PortSummary;

pub(crate) use family::is_internal;
use family::{Entry, FamilyAddr};

/// The verdict of a policy for a destination (C `addr_policy_result_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Definitely allowed.
    Accepted,
    /// Definitely refused.
    Rejected,
    /// Only for an unknown address: some addresses on this port are refused, but the
    /// policy ends up accepting it (or accepts by default).
    ProbablyAccepted,
    /// Only for an unknown address: refused in the end, but some addresses are accepted
    /// first.
    ProbablyRejected,
}

impl PolicyDecision {
    /// Whether the destination might be allowed (worth resolving / trying).
    pub fn may_accept(self) -> bool {
        matches!(
            self,
            PolicyDecision::Accepted | PolicyDecision::ProbablyAccepted
        )
    }
}

/// A compiled exit policy.
///
/// Rules are kept per address family in their original order; an address only ever
/// matches rules of its own family, so this is the same first-match order as C's single
/// list. Evaluation does not allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicy {
    v4: Vec<Entry<u32>>,
    v6: Vec<Entry<u128>>,
    /// Whether we publish an `ipv6-policy` summary (`IPv6Exit` on an exit).
    ipv6_exit: bool,
}

impl ExitPolicy {
    fn empty(ipv6_exit: bool) -> ExitPolicy {
        ExitPolicy {
            v4: Vec::new(),
            v6: Vec::new(),
            ipv6_exit,
        }
    }

    /// A policy of exactly these rules, in order, with no defaults added and nothing
    /// removed (as C reads a policy from a descriptor). Unmatched destinations are
    /// accepted, as in C. `ipv6_exit` decides whether an `ipv6-policy` line is written.
    pub fn from_rules(rules: &[PolicyRule], ipv6_exit: bool) -> ExitPolicy {
        let mut p = ExitPolicy::empty(ipv6_exit);
        for r in rules {
            p.push_rule(r);
        }
        p
    }

    /// `reject *:*`: a non-exit.
    pub fn reject_all() -> ExitPolicy {
        ExitPolicy::from_rules(
            &[PolicyRule::new(
                PolicyAction::Reject,
                AddrPattern::Any,
                PortRange::ALL,
            )],
            false,
        )
    }

    fn push_rule(&mut self, r: &PolicyRule) {
        self.push_pattern(r.action, r.pattern, r.ports);
    }

    fn push_pattern(&mut self, action: PolicyAction, pattern: AddrPattern, ports: PortRange) {
        build::expand(action, pattern, ports, &mut self.v4, &mut self.v6);
    }

    /// Whether IPv6 exit is enabled (we publish `ipv6-policy`).
    pub fn ipv6_exit(&self) -> bool {
        self.ipv6_exit
    }

    /// The verdict for a known address and port: first matching rule wins, and a
    /// destination no rule matches is accepted (C `compare_known_tor_addr_to_addr_policy`).
    /// Port 0 is never a valid destination and is always rejected.
    pub fn allows(&self, addr: IpAddr, port: u16) -> PolicyDecision {
        if port == 0 {
            return PolicyDecision::Rejected;
        }
        let action = match addr {
            IpAddr::V4(a) => first_match(&self.v4, u32::from(a), port),
            IpAddr::V6(a) => first_match(&self.v6, u128::from(a), port),
        };
        match action {
            Some(PolicyAction::Reject) => PolicyDecision::Rejected,
            Some(PolicyAction::Accept) | None => PolicyDecision::Accepted,
        }
    }

    /// The exit's check for a resolved BEGIN destination (C `my_exit_policy_rejects` via
    /// `router_compare_to_my_exit_policy`): the unspecified address is refused, IPv6 is
    /// refused without `IPv6Exit`, otherwise the policy decides.
    pub fn permits_exit_to(&self, addr: IpAddr, port: u16) -> bool {
        if addr.is_unspecified() || (addr.is_ipv6() && !self.ipv6_exit) {
            return false;
        }
        self.allows(addr, port) == PolicyDecision::Accepted
    }

    /// The verdict for a port when the address is not known yet, e.g. a hostname BEGIN
    /// before resolution (C `compare_unknown_tor_addr_to_addr_policy`, applied to each
    /// family we could connect over: IPv4, plus IPv6 if `IPv6Exit`).
    ///
    /// A rule for all addresses gives a definite answer, unless an earlier narrower rule
    /// for this port says otherwise, which makes it "probably". Port 0 is rejected.
    pub fn allows_port_for_unknown_address(&self, port: u16) -> PolicyDecision {
        if port == 0 {
            return PolicyDecision::Rejected;
        }
        let d4 = unknown_addr_decision(&self.v4, port);
        if !self.ipv6_exit {
            return d4;
        }
        let d6 = unknown_addr_decision(&self.v6, port);
        use PolicyDecision::*;
        match (d4, d6) {
            (a, b) if a == b => a,
            (a, b) if a.may_accept() || b.may_accept() => ProbablyAccepted,
            _ => ProbablyRejected,
        }
    }

    /// Whether the policy certainly rejects everything for IPv4 (C
    /// `policy_is_reject_star(policy, AF_INET, 1)`): no IPv4 accept comes before a
    /// `reject *4:*`. A policy with no IPv4 rules counts as rejecting, as in C.
    pub fn is_reject_star_v4(&self) -> bool {
        is_reject_star(&self.v4)
    }

    /// As [`ExitPolicy::is_reject_star_v4`], for IPv6.
    pub fn is_reject_star_v6(&self) -> bool {
        is_reject_star(&self.v6)
    }

    /// A non-exit: rejects everything in both families (C `policy_is_reject_star` for
    /// both, as `router_rebuild_descriptor` computes it). Such a relay does not resolve
    /// hostnames for BEGIN at all.
    pub fn is_reject_star(&self) -> bool {
        self.is_reject_star_v4() && self.is_reject_star_v6()
    }

    /// The exit-policy lines for our server descriptor, each ending in `\n`, followed by
    /// `ipv6-policy ...\n` if we exit to IPv6 (dir-spec server-descriptor-format; C
    /// `router_dump_router_to_string`).
    ///
    /// Only IPv4 rules are written (`accept6`/`reject6` would get the descriptor
    /// refused); a non-exit writes `reject *:*`.
    pub fn write_descriptor_lines(&self, out: &mut String) {
        self.write_ipv4_policy_lines(out);
        if let Some(line) = self.ipv6_policy_line() {
            out.push_str(&line);
            out.push('\n');
        }
    }

    /// The `accept`/`reject` lines alone, as C's `policy_write_item(.., format_for_desc)`
    /// writes them: `*` for a /0, `/bits` masks only when narrower than the family,
    /// ports `*`, `N` or `N-M`.
    pub fn write_ipv4_policy_lines(&self, out: &mut String) {
        if self.is_reject_star() {
            out.push_str("reject *:*\n");
            return;
        }
        if self.v4.is_empty() {
            // Nothing to write would leave an empty line; say what evaluation does.
            out.push_str("accept *:*\n");
            return;
        }
        for e in &self.v4 {
            let verb = match e.action {
                PolicyAction::Accept => "accept",
                PolicyAction::Reject => "reject",
            };
            let addr = std::net::Ipv4Addr::from(e.addr);
            // Writing to a String cannot fail.
            let _ = match e.bits {
                0 => writeln!(out, "{verb} *:{}", e.ports),
                32.. => writeln!(out, "{verb} {addr}:{}", e.ports),
                bits => writeln!(out, "{verb} {addr}/{bits}:{}", e.ports),
            };
        }
    }

    /// `ipv6-policy accept|reject PORTS` (without newline), present only if `IPv6Exit`
    /// and the IPv6 summary is not `reject 1-65535`.
    pub fn ipv6_policy_line(&self) -> Option<String> {
        if !self.ipv6_exit {
            return None;
        }
        let s = self.summary_v6();
        if s.is_reject_all() {
            None
        } else {
            Some(format!("ipv6-policy {s}"))
        }
    }

    /// The IPv4 port summary an authority computes for the microdescriptor `p` line and
    /// the consensus (C `policy_summarize(policy, AF_INET)`).
    pub fn summary_v4(&self) -> PortSummary {
        summary::summarize(&self.v4)
    }

    /// The IPv6 port summary (`ipv6-policy`, microdescriptor `p6`).
    pub fn summary_v6(&self) -> PortSummary {
        summary::summarize(&self.v6)
    }

    /// Whether authorities would give us the Exit flag on policy grounds: ports 80 and
    /// 443 are both allowed to at least one whole public IPv4 /8 (C
    /// `exit_policy_is_general_exit`, with `DirAllowPrivateAddresses 0`).
    pub fn is_exit_flag_eligible(&self) -> bool {
        self.is_general_exit(false)
    }

    /// [`ExitPolicy::is_exit_flag_eligible`] with the authority's
    /// `DirAllowPrivateAddresses` setting (set in test networks), under which internal
    /// /8s count too.
    pub fn is_general_exit(&self, dir_allow_private_addresses: bool) -> bool {
        if self.is_reject_star() {
            // The descriptor says `reject *:*`; that is what authorities judge.
            return false;
        }
        general_exit_for_port(&self.v4, 80, dir_allow_private_addresses)
            && general_exit_for_port(&self.v4, 443, dir_allow_private_addresses)
    }

    /// The IPv4 rules in order, in torrc form (for logs and control-port style output).
    pub fn ipv4_rules(&self) -> impl Iterator<Item = PolicyRule> + '_ {
        self.v4.iter().map(|e| {
            let pattern = if e.bits == 0 {
                AddrPattern::Any4
            } else {
                AddrPattern::V4 {
                    addr: e.addr.into(),
                    bits: e.bits,
                }
            };
            PolicyRule::new(e.action, pattern, e.ports)
        })
    }

    /// The IPv6 rules in order, in torrc form.
    pub fn ipv6_rules(&self) -> impl Iterator<Item = PolicyRule> + '_ {
        self.v6.iter().map(|e| {
            let pattern = if e.bits == 0 {
                AddrPattern::Any6
            } else {
                AddrPattern::V6 {
                    addr: e.addr.into(),
                    bits: e.bits,
                }
            };
            PolicyRule::new(e.action, pattern, e.ports)
        })
    }
}

impl Default for ExitPolicy {
    /// A non-exit.
    fn default() -> Self {
        ExitPolicy::reject_all()
    }
}

fn first_match<A: FamilyAddr>(list: &[Entry<A>], addr: A, port: u16) -> Option<PolicyAction> {
    list.iter()
        .find(|e| e.ports.contains(port) && e.matches_addr(addr))
        .map(|e| e.action)
}

/// C `compare_unknown_tor_addr_to_addr_policy` over one family.
fn unknown_addr_decision<A: FamilyAddr>(list: &[Entry<A>], port: u16) -> PolicyDecision {
    let (mut maybe_accept, mut maybe_reject) = (false, false);
    for e in list.iter().filter(|e| e.ports.contains(port)) {
        if e.bits == 0 {
            return match e.action {
                PolicyAction::Accept if maybe_reject => PolicyDecision::ProbablyAccepted,
                PolicyAction::Accept => PolicyDecision::Accepted,
                PolicyAction::Reject if maybe_accept => PolicyDecision::ProbablyRejected,
                PolicyAction::Reject => PolicyDecision::Rejected,
            };
        }
        match e.action {
            PolicyAction::Accept => maybe_accept = true,
            PolicyAction::Reject => maybe_reject = true,
        }
    }
    if maybe_reject {
        PolicyDecision::ProbablyAccepted
    } else {
        PolicyDecision::Accepted
    }
}

/// C `policy_is_reject_star` over one family, with `default_reject` = 1.
fn is_reject_star<A: FamilyAddr>(list: &[Entry<A>]) -> bool {
    for e in list {
        match e.action {
            PolicyAction::Accept => return false,
            PolicyAction::Reject if e.is_catch_all() => return true,
            PolicyAction::Reject => {}
        }
    }
    true
}

/// C `exit_policy_is_general_exit_helper`: walking the rules in order, is some /8 (not
/// internal, unless allowed) fully accepted for `port` before any rule rejects part of it?
fn general_exit_for_port(list: &[Entry<u32>], port: u16, allow_private: bool) -> bool {
    // Whether some earlier rule already rejected part of each /8.
    let mut rejected = [false; 256];
    for e in list.iter().filter(|e| e.ports.contains(port)) {
        let mask = if e.bits == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(e.bits.min(32)))
        };
        let net = e.addr & mask;
        let first = (net >> 24) as usize;
        let last = ((net | !mask) >> 24) as usize;
        for (slash8, done) in rejected.iter_mut().enumerate().take(last + 1).skip(first) {
            if *done {
                continue;
            }
            let base = IpAddr::V4(std::net::Ipv4Addr::from((slash8 as u32) << 24));
            if is_internal(base) && !allow_private {
                continue;
            }
            match e.action {
                // Narrower than a /8 says nothing about a whole /8.
                PolicyAction::Accept if e.bits > 8 => continue,
                PolicyAction::Accept => return true,
                PolicyAction::Reject => *done = true,
            }
        }
    }
    false
}
