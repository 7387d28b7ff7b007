//! One exit-policy item as written in a torrc `ExitPolicy` value: `accept|reject[6] PATTERN`.
//!
//! Grammar (dir-spec "exit-policy"; torrc extensions from tor(1) `ExitPolicy`):
//!
//! ```text
//! Item     ::= ("accept" | "reject" | "accept6" | "reject6") SP Pattern
//! Pattern  ::= "private" ":" Ports
//!            | Address [ "/" Mask ] [ ":" Ports ]
//! Address  ::= "*" | "*4" | "*6" | IPv4 | "[" IPv6 "]"
//! Mask     ::= Bits | dotted IPv4 prefix mask
//! Ports    ::= "*" | N | N "-" M          (absent ⇒ all ports)
//! ```
//!
//! Parsing follows C tor (`router_parse_addr_policy_item_from_string`,
//! `tor_addr_parse_mask_ports`, `parse_port_range`) where a torrc accepted by C must stay
//! accepted, and is stricter only where C would build a rule that cannot be published
//! (port 0) or silently drops text.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What a rule does to a matching destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    Accept,
    Reject,
}

impl PolicyAction {
    fn keyword(self) -> &'static str {
        match self {
            PolicyAction::Accept => "accept",
            PolicyAction::Reject => "reject",
        }
    }
}

/// An inclusive, non-empty port range within 1..=65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// `*`: every port.
    pub const ALL: PortRange = PortRange { min: 1, max: 65535 };

    /// A range `min..=max`; `None` if it is empty or includes port 0.
    pub const fn new(min: u16, max: u16) -> Option<PortRange> {
        if min == 0 || min > max {
            None
        } else {
            Some(PortRange { min, max })
        }
    }

    /// Just `port`; `None` for port 0.
    pub const fn single(port: u16) -> Option<PortRange> {
        PortRange::new(port, port)
    }

    pub const fn min(self) -> u16 {
        self.min
    }

    pub const fn max(self) -> u16 {
        self.max
    }

    pub const fn contains(self, port: u16) -> bool {
        self.min <= port && port <= self.max
    }

    /// Whether this is `*` (C treats `prt_min <= 1 && prt_max == 65535` as "all ports").
    pub const fn is_all(self) -> bool {
        self.min <= 1 && self.max == 65535
    }
}

impl fmt::Display for PortRange {
    /// `*`, `N` or `N-M`, as C's `policy_write_item` writes ports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            f.write_str("*")
        } else if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// The address part of a rule.
///
/// Addresses are kept as written (not masked), as C does: `1.2.3.4/8` is published as
/// `1.2.3.4/8`, and only the first `bits` bits take part in matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrPattern {
    /// `*` with `accept`/`reject`: every IPv4 and every IPv6 address.
    Any,
    /// `*4`: every IPv4 address.
    Any4,
    /// `*6`, or `*` after `accept6`/`reject6`: every IPv6 address.
    Any6,
    /// `private`: the private networks of both families (see [`PRIVATE_NETS_V4`] and
    /// [`PRIVATE_NETS_V6`]).
    ///
    /// [`PRIVATE_NETS_V4`]: super::PRIVATE_NETS_V4
    /// [`PRIVATE_NETS_V6`]: super::PRIVATE_NETS_V6
    Private,
    /// An IPv4 network `addr/bits` (`bits` ≤ 32; 32 when no mask was written).
    V4 { addr: Ipv4Addr, bits: u8 },
    /// An IPv6 network `[addr]/bits` (`bits` ≤ 128; 128 when no mask was written).
    V6 { addr: Ipv6Addr, bits: u8 },
}

impl fmt::Display for AddrPattern {
    /// torrc form; it parses back to the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrPattern::Any => f.write_str("*"),
            AddrPattern::Any4 => f.write_str("*4"),
            AddrPattern::Any6 => f.write_str("*6"),
            AddrPattern::Private => f.write_str("private"),
            AddrPattern::V4 { addr, bits } if bits >= 32 => write!(f, "{addr}"),
            AddrPattern::V4 { addr, bits } => write!(f, "{addr}/{bits}"),
            AddrPattern::V6 { addr, bits } if bits >= 128 => write!(f, "[{addr}]"),
            AddrPattern::V6 { addr, bits } => write!(f, "[{addr}]/{bits}"),
        }
    }
}

/// One parsed policy item: `accept|reject PATTERN:PORTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub action: PolicyAction,
    pub pattern: AddrPattern,
    pub ports: PortRange,
}

impl PolicyRule {
    pub const fn new(action: PolicyAction, pattern: AddrPattern, ports: PortRange) -> PolicyRule {
        PolicyRule {
            action,
            pattern,
            ports,
        }
    }
}

impl fmt::Display for PolicyRule {
    /// torrc form, e.g. `reject private:*`, `accept *4:80-81`, `accept [::1]:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{}",
            self.action.keyword(),
            self.pattern,
            self.ports
        )
    }
}

impl std::str::FromStr for PolicyRule {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<PolicyRule, PolicyParseError> {
        parse_policy_item(s)
    }
}

/// Why a policy item could not be parsed. The caller adds the file and line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyParseError {
    #[error("empty exit policy item")]
    Empty,
    #[error("exit policy item is too long ({0} bytes)")]
    TooLong(usize),
    #[error("expected 'accept', 'reject', 'accept6' or 'reject6', found {0:?}")]
    UnknownAction(String),
    #[error("'{0}' needs an address pattern such as '*:80'")]
    MissingPattern(&'static str),
    #[error("unexpected text {0:?} after the address pattern (no spaces allowed inside it)")]
    TrailingText(String),
    #[error("'private' must be followed by ':PORTS' (e.g. 'private:*'), found {0:?}")]
    PrivateWithoutPorts(String),
    #[error("no closing ']' in IPv6 address pattern {0:?}")]
    UnclosedBracket(String),
    #[error("unexpected {0:?} after ']' (expected '/MASK' or ':PORTS')")]
    JunkAfterBracket(String),
    #[error("malformed IPv4 address {0:?} (write IPv6 addresses in brackets: [::1])")]
    MalformedIpv4(String),
    #[error("malformed IPv6 address {0:?}")]
    MalformedIpv6(String),
    #[error("a mask cannot follow a wildcard address ({0:?})")]
    MaskOnWildcard(String),
    #[error("bad number of mask bits {bits} (at most {max} for this address family)")]
    MaskBitsOutOfRange { bits: u32, max: u8 },
    #[error("IPv4-style mask {0:?} is not a prefix mask")]
    MaskNotPrefix(String),
    #[error("malformed mask {0:?} (expected a bit count or a dotted IPv4 mask)")]
    MalformedMask(String),
    #[error("mask /{0} makes no sense for an IPv4-mapped IPv6 address (use 0-32 or 96-128)")]
    BadV4MappedMask(u32),
    #[error("malformed port {0:?} (expected '*', 'N' or 'N-M' with ports 1-65535)")]
    MalformedPort(String),
    #[error("port range {min}-{max} ends before it starts")]
    InvertedPortRange { min: u16, max: u16 },
    /// Port 0 alone: C would build a rule that matches nothing and publish `1-0`, which
    /// authorities refuse, so we refuse it here.
    #[error("port 0 is not a valid destination port")]
    PortZero,
    /// C logs this and drops just this item; see [`PolicyParseError::is_fatal`].
    #[error("IPv4 pattern {0:?} with accept6/reject6 is ignored (use accept/reject for IPv4)")]
    Ipv4WithAccept6(String),
}

impl PolicyParseError {
    /// Whether C tor discards the whole policy for this error (`malformed_list`), rather
    /// than ignoring only the offending item.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, PolicyParseError::Ipv4WithAccept6(_))
    }
}

/// A parsed torrc `ExitPolicy` value: the usable rules, in order, plus items C would skip
/// with a warning (the caller should log them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPolicyList {
    pub rules: Vec<PolicyRule>,
    pub ignored: Vec<PolicyParseError>,
}

/// Longest item we look at. C caps the pattern at roughly 80 bytes; allow generous
/// whitespace around it but never unbounded work.
const MAX_ITEM_LEN: usize = 256;

/// Longest address pattern (C's `MAX_ADDRESS_LENGTH`: bracketed IPv6, dotted mask, ports).
const MAX_PATTERN_LEN: usize = 48 + 2 + 17 + 12 + 1;

/// Parse one item such as `accept *:80` or `reject6 [fc00::]/7:*`.
///
/// `accept6`/`reject6` take IPv6 patterns (or `*`, meaning `*6`, or `private`); an IPv4
/// pattern with them yields the non-fatal [`PolicyParseError::Ipv4WithAccept6`].
pub fn parse_policy_item(item: &str) -> Result<PolicyRule, PolicyParseError> {
    if item.len() > MAX_ITEM_LEN {
        return Err(PolicyParseError::TooLong(item.len()));
    }
    let item = item.trim_matches(is_space);
    if item.is_empty() {
        return Err(PolicyParseError::Empty);
    }
    let (keyword, rest) = item.split_once(is_space).unwrap_or((item, ""));
    let (action, is6) = match keyword {
        "accept" => (PolicyAction::Accept, false),
        "reject" => (PolicyAction::Reject, false),
        "accept6" => (PolicyAction::Accept, true),
        "reject6" => (PolicyAction::Reject, true),
        other => return Err(PolicyParseError::UnknownAction(other.to_owned())),
    };
    let rest = rest.trim_start_matches(is_space);
    if rest.is_empty() {
        return Err(PolicyParseError::MissingPattern(keyword_str(action, is6)));
    }
    // The tokenizer takes exactly one argument (C: `tok->n_args != 1`).
    if let Some((_, extra)) = rest.split_once(is_space) {
        return Err(PolicyParseError::TrailingText(
            extra.trim_start_matches(is_space).to_owned(),
        ));
    }
    let (pattern, ports) = parse_pattern(rest, is6)?;
    let is_v4 = matches!(pattern, AddrPattern::Any4 | AddrPattern::V4 { .. });
    if is6 && is_v4 {
        return Err(PolicyParseError::Ipv4WithAccept6(rest.to_owned()));
    }
    Ok(PolicyRule {
        action,
        pattern,
        ports,
    })
}

/// Parse a torrc `ExitPolicy` value: comma-separated items, blanks skipped (C:
/// `smartlist_split_string(.., ",", SPLIT_SKIP_SPACE|SPLIT_IGNORE_BLANK)`).
///
/// A fatal error in any item fails the whole value, as C discards the whole list.
pub fn parse_policy_list(value: &str) -> Result<ParsedPolicyList, PolicyParseError> {
    let mut out = ParsedPolicyList::default();
    for item in value.split(',') {
        if item.trim_matches(is_space).is_empty() {
            continue;
        }
        match parse_policy_item(item) {
            Ok(rule) => out.rules.push(rule),
            Err(e) if !e.is_fatal() => out.ignored.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn keyword_str(action: PolicyAction, is6: bool) -> &'static str {
    match (action, is6) {
        (PolicyAction::Accept, false) => "accept",
        (PolicyAction::Reject, false) => "reject",
        (PolicyAction::Accept, true) => "accept6",
        (PolicyAction::Reject, true) => "reject6",
    }
}

/// Whitespace as C's `eat_whitespace`/tokenizer sees it.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parse `ADDRESS[/MASK][:PORTS]` or `private:PORTS`.
fn parse_pattern(arg: &str, is6: bool) -> Result<(AddrPattern, PortRange), PolicyParseError> {
    // C checks for the "private" prefix before anything else.
    if let Some(after) = arg.strip_prefix("private") {
        let Some(ports) = after.strip_prefix(':') else {
            return Err(PolicyParseError::PrivateWithoutPorts(arg.to_owned()));
        };
        return Ok((AddrPattern::Private, parse_ports(ports)?));
    }
    if arg.len() > MAX_PATTERN_LEN {
        return Err(PolicyParseError::TooLong(arg.len()));
    }

    // Split into address, optional mask, optional ports.
    let (address, bracketed, rest) = if let Some(inner) = arg.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err(PolicyParseError::UnclosedBracket(arg.to_owned()));
        };
        let rest = &inner[close + 1..];
        if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with(':')) {
            return Err(PolicyParseError::JunkAfterBracket(rest.to_owned()));
        }
        (&inner[..close], true, rest)
    } else {
        let end = arg.find(['/', ':']).unwrap_or(arg.len());
        (&arg[..end], false, &arg[end..])
    };
    let (mask, ports) = match rest.strip_prefix('/') {
        Some(m) => match m.split_once(':') {
            Some((mask, ports)) => (Some(mask), Some(ports)),
            None => (Some(m), None),
        },
        None => (None, rest.strip_prefix(':')),
    };

    let wildcard = if bracketed {
        None
    } else {
        match address {
            "*" if is6 => Some(AddrPattern::Any6),
            "*" => Some(AddrPattern::Any),
            "*4" => Some(AddrPattern::Any4),
            "*6" => Some(AddrPattern::Any6),
            _ => None,
        }
    };

    let pattern = if let Some(w) = wildcard {
        if mask.is_some() {
            return Err(PolicyParseError::MaskOnWildcard(arg.to_owned()));
        }
        w
    } else if bracketed {
        let addr: Ipv6Addr = address
            .parse()
            .map_err(|_| PolicyParseError::MalformedIpv6(address.to_owned()))?;
        let bits = match mask {
            None => 128,
            Some(m) => {
                let bits = parse_mask(m, 128)?;
                if addr.to_ipv4_mapped().is_some() {
                    // C maps masks on v4-mapped addresses onto 96..=128 bits.
                    if bits > 32 && bits < 96 {
                        return Err(PolicyParseError::BadV4MappedMask(bits));
                    }
                    96 + bits % 32
                } else {
                    bits
                }
            }
        };
        AddrPattern::V6 {
            addr,
            bits: bits as u8,
        }
    } else {
        let addr: Ipv4Addr = address
            .parse()
            .map_err(|_| PolicyParseError::MalformedIpv4(address.to_owned()))?;
        let bits = match mask {
            None => 32,
            Some(m) => parse_mask(m, 32)?,
        };
        AddrPattern::V4 {
            addr,
            bits: bits as u8,
        }
    };

    let ports = match ports {
        None => PortRange::ALL,
        Some(p) => parse_ports(p)?,
    };
    Ok((pattern, ports))
}

/// A mask: decimal bit count (≤ `max_bits`) or a dotted IPv4 prefix mask.
fn parse_mask(mask: &str, max_bits: u8) -> Result<u32, PolicyParseError> {
    if !mask.is_empty() && mask.bytes().all(|b| b.is_ascii_digit()) {
        let bits: u32 = mask
            .parse()
            .map_err(|_| PolicyParseError::MalformedMask(mask.to_owned()))?;
        if bits > u32::from(max_bits) {
            return Err(PolicyParseError::MaskBitsOutOfRange {
                bits,
                max: max_bits,
            });
        }
        return Ok(bits);
    }
    let Ok(dotted) = mask.parse::<Ipv4Addr>() else {
        return Err(PolicyParseError::MalformedMask(mask.to_owned()));
    };
    let m = u32::from(dotted);
    // A prefix mask is some ones followed only by zeros.
    if m.leading_ones() + m.trailing_zeros() != 32 {
        return Err(PolicyParseError::MaskNotPrefix(mask.to_owned()));
    }
    Ok(m.leading_ones())
}

/// Ports: empty or `*` (all), `N`, or `N-M`. A range may start at 0, which means 1 (C
/// clamps it); a lone 0 is refused.
fn parse_ports(p: &str) -> Result<PortRange, PolicyParseError> {
    if p.is_empty() || p == "*" {
        return Ok(PortRange::ALL);
    }
    let malformed = || PolicyParseError::MalformedPort(p.to_owned());
    let number = |s: &str| -> Result<u16, PolicyParseError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse::<u16>().map_err(|_| malformed())
    };
    match p.split_once('-') {
        None => {
            let port = number(p)?;
            PortRange::single(port).ok_or(PolicyParseError::PortZero)
        }
        Some((lo, hi)) => {
            let min = number(lo)?;
            let max = number(hi)?;
            if max == 0 {
                return Err(malformed());
            }
            if min > max {
                return Err(PolicyParseError::InvertedPortRange { min, max });
            }
            Ok(PortRange {
                min: min.max(1),
                max,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> PolicyRule {
        parse_policy_item(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn v4(a: [u8; 4], bits: u8) -> AddrPattern {
        AddrPattern::V4 {
            addr: Ipv4Addr::from(a),
            bits,
        }
    }

    fn v6(a: &str, bits: u8) -> AddrPattern {
        AddrPattern::V6 {
            addr: a.parse().unwrap(),
            bits,
        }
    }

    fn ports(min: u16, max: u16) -> PortRange {
        PortRange::new(min, max).unwrap()
    }

    #[test]
    fn parses_all_address_forms() {
        use AddrPattern::*;
        use PolicyAction::*;
        let cases: &[(&str, PolicyAction, AddrPattern, PortRange)] = &[
            ("accept *:80", Accept, Any, ports(80, 80)),
            ("reject *:*", Reject, Any, PortRange::ALL),
            ("reject *", Reject, Any, PortRange::ALL),
            ("accept *4:443", Accept, Any4, ports(443, 443)),
            ("accept *6:443", Accept, Any6, ports(443, 443)),
            ("accept6 *:443", Accept, Any6, ports(443, 443)),
            ("reject6 *6:*", Reject, Any6, PortRange::ALL),
            ("reject private:*", Reject, Private, PortRange::ALL),
            ("accept6 private:22-23", Accept, Private, ports(22, 23)),
            (
                "accept 127.0.0.1:*",
                Accept,
                v4([127, 0, 0, 1], 32),
                PortRange::ALL,
            ),
            (
                "accept 1.2.3.4",
                Accept,
                v4([1, 2, 3, 4], 32),
                PortRange::ALL,
            ),
            (
                "accept 1.2.3.4:",
                Accept,
                v4([1, 2, 3, 4], 32),
                PortRange::ALL,
            ),
            (
                "reject 10.0.0.0/8:*",
                Reject,
                v4([10, 0, 0, 0], 8),
                PortRange::ALL,
            ),
            (
                "reject 10.1.2.3/8:1-1024",
                Reject,
                v4([10, 1, 2, 3], 8),
                ports(1, 1024),
            ),
            (
                "reject 192.168.0.0/255.255.0.0:*",
                Reject,
                v4([192, 168, 0, 0], 16),
                PortRange::ALL,
            ),
            (
                "reject 1.2.3.4/0.0.0.0:*",
                Reject,
                v4([1, 2, 3, 4], 0),
                PortRange::ALL,
            ),
            (
                "reject 1.2.3.4/255.255.255.255:25",
                Reject,
                v4([1, 2, 3, 4], 32),
                ports(25, 25),
            ),
            (
                "reject6 [fc00::]/7:*",
                Reject,
                v6("fc00::", 7),
                PortRange::ALL,
            ),
            (
                "accept [2001:db8::1]:443",
                Accept,
                v6("2001:db8::1", 128),
                ports(443, 443),
            ),
            ("accept6 [::1]", Accept, v6("::1", 128), PortRange::ALL),
            ("accept [::]/0:80", Accept, v6("::", 0), ports(80, 80)),
            (
                "accept 0.0.0.0/0:0-80",
                Accept,
                v4([0, 0, 0, 0], 0),
                ports(1, 80),
            ),
            ("  accept \t *:6660-6669  ", Accept, Any, ports(6660, 6669)),
            ("accept *:65535", Accept, Any, ports(65535, 65535)),
        ];
        for (text, action, pattern, range) in cases {
            let r = rule(text);
            assert_eq!(r, PolicyRule::new(*action, *pattern, *range), "{text}");
        }
    }

    #[test]
    fn v4_mapped_masks_follow_c() {
        // C: bits 33..=95 refused, others become 96 + bits % 32.
        assert_eq!(
            rule("accept [::ffff:1.2.3.4]/16").pattern,
            v6("::ffff:1.2.3.4", 112)
        );
        assert_eq!(
            rule("accept [::ffff:1.2.3.4]/120").pattern,
            v6("::ffff:1.2.3.4", 120)
        );
        assert_eq!(
            rule("accept [::ffff:1.2.3.4]").pattern,
            v6("::ffff:1.2.3.4", 128)
        );
        assert_eq!(
            parse_policy_item("accept [::ffff:1.2.3.4]/64"),
            Err(PolicyParseError::BadV4MappedMask(64))
        );
    }

    #[test]
    fn bad_items_say_what_is_wrong() {
        use PolicyParseError as E;
        let cases: &[(&str, PolicyParseError)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            ("allow *:80", E::UnknownAction("allow".into())),
            ("Accept *:80", E::UnknownAction("Accept".into())),
            ("accept", E::MissingPattern("accept")),
            ("reject6   ", E::MissingPattern("reject6")),
            ("accept *:80 *:443", E::TrailingText("*:443".into())),
            ("reject private", E::PrivateWithoutPorts("private".into())),
            (
                "reject private/8:*",
                E::PrivateWithoutPorts("private/8:*".into()),
            ),
            (
                "reject [fc00::/7:*",
                E::UnclosedBracket("[fc00::/7:*".into()),
            ),
            ("reject [::1]x:80", E::JunkAfterBracket("x:80".into())),
            ("reject 1.2.3:80", E::MalformedIpv4("1.2.3".into())),
            ("reject 01.2.3.4:80", E::MalformedIpv4("01.2.3.4".into())),
            ("reject 256.0.0.1:80", E::MalformedIpv4("256.0.0.1".into())),
            ("reject ::1:80", E::MalformedIpv4("".into())),
            (
                "reject example.com:80",
                E::MalformedIpv4("example.com".into()),
            ),
            ("reject [1.2.3.4]:80", E::MalformedIpv6("1.2.3.4".into())),
            ("reject [::g]:80", E::MalformedIpv6("::g".into())),
            ("reject */8:80", E::MaskOnWildcard("*/8:80".into())),
            ("reject *4/0:80", E::MaskOnWildcard("*4/0:80".into())),
            (
                "reject 1.2.3.4/33:80",
                E::MaskBitsOutOfRange { bits: 33, max: 32 },
            ),
            (
                "reject [::1]/129:80",
                E::MaskBitsOutOfRange {
                    bits: 129,
                    max: 128,
                },
            ),
            (
                "reject 1.2.3.4/255.0.255.0:80",
                E::MaskNotPrefix("255.0.255.0".into()),
            ),
            ("reject 1.2.3.4/x:80", E::MalformedMask("x".into())),
            ("reject 1.2.3.4/:80", E::MalformedMask("".into())),
            ("reject *:http", E::MalformedPort("http".into())),
            ("reject *:65536", E::MalformedPort("65536".into())),
            ("reject *:80-", E::MalformedPort("80-".into())),
            ("reject *:-80", E::MalformedPort("-80".into())),
            ("reject *:0-0", E::MalformedPort("0-0".into())),
            ("reject *:+80", E::MalformedPort("+80".into())),
            ("reject *:80:81", E::MalformedPort("80:81".into())),
            (
                "reject *:443-80",
                E::InvertedPortRange { min: 443, max: 80 },
            ),
            ("reject *:0", E::PortZero),
            (
                "accept6 1.2.3.4:80",
                E::Ipv4WithAccept6("1.2.3.4:80".into()),
            ),
            ("reject6 *4:*", E::Ipv4WithAccept6("*4:*".into())),
        ];
        for (text, want) in cases {
            assert_eq!(parse_policy_item(text).as_ref(), Err(want), "{text}");
        }
        let long = format!("accept {}", " ".repeat(300));
        assert_eq!(parse_policy_item(&long), Err(E::TooLong(long.len())));
        // Messages name the offending text.
        let msg = parse_policy_item("reject *:http").unwrap_err().to_string();
        assert!(msg.contains("\"http\""), "{msg}");
        assert!(!E::Ipv4WithAccept6(String::new()).is_fatal());
        assert!(E::PortZero.is_fatal());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "accept *:80",
            "reject *4:*",
            "accept *6:1-1024",
            "reject private:*",
            "accept 127.0.0.1:*",
            "reject 1.2.3.4/8:25",
            "reject 1.2.3.4/0:25",
            "reject [fc00::]/7:*",
            "accept [2001:db8::1]:443",
            "accept [::ffff:1.2.3.4]/112:*",
        ] {
            let r = rule(text);
            assert_eq!(r.to_string(), text);
            assert_eq!(rule(&r.to_string()), r);
        }
        assert_eq!(rule("accept6 *:80").to_string(), "accept *6:80");
        assert_eq!(
            rule("reject 1.2.3.4/255.0.0.0").to_string(),
            "reject 1.2.3.4/8:*"
        );
    }

    #[test]
    fn policy_list_splits_on_commas_and_skips_blanks() {
        let parsed =
            parse_policy_list(" accept *:80 ,, reject6 [::1]:*, accept6 1.2.3.4:*, reject *:* ,")
                .unwrap();
        assert_eq!(
            parsed.rules,
            vec![
                rule("accept *:80"),
                rule("reject [::1]:*"),
                rule("reject *:*")
            ]
        );
        assert_eq!(
            parsed.ignored,
            vec![PolicyParseError::Ipv4WithAccept6("1.2.3.4:*".into())]
        );
        assert_eq!(
            parse_policy_list("accept *:80, reject *:bogus"),
            Err(PolicyParseError::MalformedPort("bogus".into()))
        );
        assert_eq!(parse_policy_list("").unwrap(), ParsedPolicyList::default());
    }
}
