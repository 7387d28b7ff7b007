//! Hostnames an exit is asked to resolve: validation, literal addresses and PTR names.
//!
//! Rules follow C tor's exit (`dns_resolve_impl`, `address_is_invalid_destination`,
//! `tor_addr_parse_PTR_name`): literal IPs need no lookup; names outside `[A-Za-z0-9-._]` are
//! refused unless `ServerDNSAllowNonRFC953Hostnames`; `in-addr.arpa`/`ip6.arpa` names are only
//! looked up for RESOLVE (tor-spec §6.4) and never for internal addresses.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest name, in presentation form without the final dot (RFC 1035 §2.3.4: 255 octets on
/// the wire, which is 253 characters written out).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A DNS name in presentation form (no final dot) held inline, so tables of names need no
/// allocation. Comparison and hashing are byte-exact; names used as keys are lower-cased first.
#[derive(Clone, Copy)]
pub struct DnsName {
    len: u8,
    buf: [u8; MAX_NAME_LEN],
}

impl DnsName {
    /// Copies `bytes` if it fits; no other check.
    pub fn from_bytes(bytes: &[u8]) -> Option<DnsName> {
        if bytes.len() > MAX_NAME_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(DnsName {
            len: bytes.len() as u8,
            buf,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The name as text (lossy for the odd bytes `ServerDNSAllowNonRFC953Hostnames` lets in).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    fn make_ascii_lowercase(&mut self) {
        let len = self.len as usize;
        self.buf[..len].make_ascii_lowercase();
    }
}

impl PartialEq for DnsName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for DnsName {}
impl Hash for DnsName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({:?})", self.to_string_lossy())
    }
}
impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// Why a hostname is refused before any lookup. All of these are permanent: asking again will
/// not help (C answers END RESOLVEFAILED or RESOLVED 0xF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty hostname")]
    Empty,
    #[error("hostname longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("hostname has an empty label or a label longer than {MAX_LABEL_LEN} characters")]
    BadLabel,
    #[error("hostname has a character outside [A-Za-z0-9-._]")]
    BadCharacter,
    #[error("reverse (in-addr.arpa / ip6.arpa) names are only resolved for RESOLVE")]
    ReverseNotAllowed,
    #[error("malformed in-addr.arpa / ip6.arpa name")]
    MalformedReverse,
    #[error("reverse lookup of an internal address")]
    InternalAddress,
    #[error("special-use name (.onion, .exit, localhost) is never sent to DNS")]
    SpecialUse,
}

/// What an exit was asked for, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRequest {
    /// A literal address: no lookup, TTL `DEFAULT_DNS_TTL`.
    Literal(IpAddr),
    /// A name to look up with A and/or AAAA; lower-case, without a final dot.
    Forward(DnsName),
    /// A PTR lookup of `addr`, under its canonical `in-addr.arpa`/`ip6.arpa` name.
    Reverse { addr: IpAddr, name: DnsName },
}

/// Validates a hostname from BEGIN (`for_resolve == false`) or RESOLVE (`true`).
///
/// `allow_non_rfc953` is `ServerDNSAllowNonRFC953Hostnames`: it lifts the character check only.
pub fn classify_host(
    host: &[u8],
    for_resolve: bool,
    allow_non_rfc953: bool,
) -> Result<HostRequest, NameError> {
    if let Some(addr) = parse_literal(host) {
        return Ok(HostRequest::Literal(addr));
    }
    if host.is_empty() {
        return Err(NameError::Empty);
    }
    // One final dot names the same FQDN; drop it so "a.b." and "a.b" share a cache entry.
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return Err(NameError::Empty);
    }
    if host.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !allow_non_rfc953 && !host.iter().all(|&b| is_rfc953_byte(b)) {
        return Err(NameError::BadCharacter);
    }
    // NUL would truncate the name in every C consumer downstream.
    if host.contains(&0) {
        return Err(NameError::BadCharacter);
    }
    if host
        .split(|&b| b == b'.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN)
    {
        return Err(NameError::BadLabel);
    }
    let mut name = DnsName::from_bytes(host).ok_or(NameError::TooLong)?;
    name.make_ascii_lowercase();
    let lower = name.as_bytes();

    if is_special_use(lower) {
        return Err(NameError::SpecialUse);
    }
    if let Some(parsed) = parse_ptr_name(lower) {
        let addr = parsed?;
        if !for_resolve {
            return Err(NameError::ReverseNotAllowed);
        }
        if is_internal(addr) {
            return Err(NameError::InternalAddress);
        }
        return Ok(HostRequest::Reverse {
            addr,
            name: ptr_name_for(addr),
        });
    }
    Ok(HostRequest::Forward(name))
}

/// The characters C accepts in a hostname; `_` is not RFC 953 but is common in practice.
fn is_rfc953_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// `1.2.3.4`, `::1` or `[::1]`.
fn parse_literal(host: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(host).ok()?;
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<IpAddr>().ok()
}

/// Names that must never leave the relay as DNS queries. C tor passes these to its resolver;
/// we refuse them locally (RFC 7686 for `.onion`, RFC 6761 §6.3 for `localhost`; `.exit` is
/// Tor's own client-side notation), which gives the same permanent failure without a query.
fn is_special_use(lower: &[u8]) -> bool {
    const SUFFIXES: [&[u8]; 3] = [b"onion", b"exit", b"localhost"];
    SUFFIXES.iter().any(|s| {
        lower == *s
            || (lower.len() > s.len()
                && lower.ends_with(s)
                && lower[lower.len() - s.len() - 1] == b'.')
    })
}

/// `None`: not a reverse name. `Some(Err)`: under a reverse zone but malformed.
/// Input is lower-case without a final dot.
fn parse_ptr_name(lower: &[u8]) -> Option<Result<IpAddr, NameError>> {
    if let Some(prefix) = lower.strip_suffix(b".in-addr.arpa") {
        return Some(parse_in_addr(prefix).ok_or(NameError::MalformedReverse));
    }
    if let Some(prefix) = lower.strip_suffix(b".ip6.arpa") {
        return Some(parse_ip6_arpa(prefix).ok_or(NameError::MalformedReverse));
    }
    None
}

/// `d.c.b.a` (reversed dotted quad, four decimal octets) → a.b.c.d.
fn parse_in_addr(prefix: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(prefix).ok()?;
    let forward: Ipv4Addr = text.parse().ok()?;
    let mut o = forward.octets();
    o.reverse();
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

/// 32 nibbles, low-order first, each followed by a dot (the last dot was stripped with the
/// suffix).
fn parse_ip6_arpa(prefix: &[u8]) -> Option<IpAddr> {
    if prefix.len() != 63 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in prefix.chunks(2).enumerate() {
        let nibble = (chunk[0] as char).to_digit(16)? as u8;
        if chunk.len() == 2 && chunk[1] != b'.' {
            return None;
        }
        let byte = 15 - i / 2;
        if i % 2 == 0 {
            bytes[byte] |= nibble;
        } else {
            bytes[byte] |= nibble << 4;
        }
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// The canonical PTR name for `addr` (RFC 1035 §3.5, RFC 3596 §2.5).
pub fn ptr_name_for(addr: IpAddr) -> DnsName {
    let mut buf = [0u8; MAX_NAME_LEN];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    match addr {
        IpAddr::V4(a) => {
            for o in a.octets().iter().rev() {
                push(o.to_string().as_bytes());
                push(b".");
            }
            push(b"in-addr.arpa");
        }
        IpAddr::V6(a) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in a.octets().iter().rev() {
                push(&[HEX[(b & 0xf) as usize], b'.', HEX[(b >> 4) as usize], b'.']);
            }
            push(b"ip6.arpa");
        }
    }
    DnsName {
        len: len as u8,
        buf,
    }
}

/// C tor's `tor_addr_is_internal(addr, 0)`: private, loopback, link-local, shared (RFC 6598),
/// `0/8`, unique-local, deprecated site-local and `::`/`::1`; IPv4-mapped addresses are
/// judged as IPv4.
pub fn is_internal(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_internal_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = a.segments();
            (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[..7].iter().all(|&x| x == 0) && s[7] <= 1)
        }
    }
}

fn is_internal_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 10
        || o[0] == 0
        || o[0] == 127
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (o[1] & 0xf0) == 16)
        || (o[0] == 192 && o[1] == 168)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(s: &str) -> Result<HostRequest, NameError> {
        classify_host(s.as_bytes(), false, false)
    }

    #[test]
    fn literals_need_no_lookup() {
        assert_eq!(
            fwd("192.0.2.7"),
            Ok(HostRequest::Literal("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            fwd("[2001:db8::1]"),
            Ok(HostRequest::Literal("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            fwd("2001:db8::1"),
            Ok(HostRequest::Literal("2001:db8::1".parse().unwrap()))
        );
    }

    #[test]
    fn forward_names_are_lowercased_and_lose_the_final_dot() {
        match fwd("WWW.Example.COM.").unwrap() {
            HostRequest::Forward(n) => assert_eq!(n.as_bytes(), b"www.example.com"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            fwd("_srv.ex-ample.org"),
            Ok(HostRequest::Forward(_))
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(fwd(""), Err(NameError::Empty));
        assert_eq!(fwd("."), Err(NameError::Empty));
        assert_eq!(fwd("a b.com"), Err(NameError::BadCharacter));
        assert_eq!(fwd("a:b.com"), Err(NameError::BadCharacter));
        assert_eq!(fwd("a..b"), Err(NameError::BadLabel));
        assert_eq!(fwd(".a"), Err(NameError::BadLabel));
        assert_eq!(fwd(&"a".repeat(64)), Err(NameError::BadLabel));
        assert!(matches!(fwd(&"a".repeat(63)), Ok(HostRequest::Forward(_))));
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(fwd(&long), Err(NameError::TooLong));
        let fits = format!(
            "{}.{}",
            ["a".repeat(63).as_str(); 3].join("."),
            "a".repeat(61)
        );
        assert_eq!(fits.len(), 253);
        assert!(matches!(fwd(&fits), Ok(HostRequest::Forward(_))));
        // The non-RFC-953 switch lifts only the character check.
        assert!(matches!(
            classify_host(b"a b.com", false, true),
            Ok(HostRequest::Forward(_))
        ));
        assert_eq!(
            classify_host(b"a\0b", false, true),
            Err(NameError::BadCharacter)
        );
    }

    #[test]
    fn special_use_names() {
        for n in ["foo.onion", "ONION", "x.y.exit", "localhost", "a.localhost"] {
            assert_eq!(fwd(n), Err(NameError::SpecialUse), "{n}");
        }
        for n in ["notonion", "onion.com", "myexit", "localhost.example"] {
            assert!(matches!(fwd(n), Ok(HostRequest::Forward(_))), "{n}");
        }
    }

    #[test]
    fn reverse_names_only_for_resolve() {
        let r = classify_host(b"4.3.2.192.IN-ADDR.ARPA", true, false).unwrap();
        match r {
            HostRequest::Reverse { addr, name } => {
                assert_eq!(addr, "192.2.3.4".parse::<IpAddr>().unwrap());
                assert_eq!(name.as_bytes(), b"4.3.2.192.in-addr.arpa");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fwd("4.3.2.192.in-addr.arpa"),
            Err(NameError::ReverseNotAllowed)
        );
        assert_eq!(
            classify_host(b"1.0.0.127.in-addr.arpa", true, false),
            Err(NameError::InternalAddress)
        );
        for bad in [
            "3.2.1.in-addr.arpa",
            "x.3.2.1.in-addr.arpa",
            "in-addr.arpa.in-addr.arpa",
        ] {
            assert_eq!(
                classify_host(bad.as_bytes(), true, false),
                Err(NameError::MalformedReverse),
                "{bad}"
            );
        }
    }

    #[test]
    fn ip6_arpa_round_trip() {
        let addr: IpAddr = "2001:db8::567:89ab".parse().unwrap();
        let name = ptr_name_for(addr);
        assert_eq!(
            name.as_bytes(),
            b"b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(
            classify_host(name.as_bytes(), true, false),
            Ok(HostRequest::Reverse { addr, name })
        );
        assert_eq!(
            classify_host(b"1.0.ip6.arpa", true, false),
            Err(NameError::MalformedReverse)
        );
        let loopback = ptr_name_for("::1".parse().unwrap());
        assert_eq!(
            classify_host(loopback.as_bytes(), true, false),
            Err(NameError::InternalAddress)
        );
    }

    #[test]
    fn internal_addresses_match_c() {
        for a in [
            "10.1.2.3",
            "0.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "::",
            "::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in [
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "::2",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
