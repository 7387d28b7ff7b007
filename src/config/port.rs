//! Listener lines: `ORPort`, `DirPort`, `ControlPort`, `MetricsPort`, `SocksPort`. The syntax
//! is C tor's `port_parse_config`: `[Address:](Port|auto) [Flags]`, with `0` meaning "none".

use super::error::Location;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU16;

/// A listening port number: fixed, or chosen by the kernel (`auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortNumber {
    Auto,
    Fixed(NonZeroU16),
}

/// One `ORPort` line (tor-manual "ORPort"; flags from C's server-port options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrPort {
    /// `None`: all addresses (C binds 0.0.0.0 and, when available, [::]).
    pub address: Option<IpAddr>,
    pub port: PortNumber,
    /// Listen but do not put this address/port in the descriptor.
    pub no_advertise: bool,
    /// Advertise but do not listen (e.g. behind a port forward).
    pub no_listen: bool,
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    pub location: Location,
}

impl OrPort {
    /// Whether this line binds (or advertises) IPv4: an IPv4 address, or none without
    /// `IPv6Only`.
    pub fn is_ipv4(&self) -> bool {
        match self.address {
            Some(a) => a.is_ipv4(),
            None => !self.ipv6_only,
        }
    }
}

/// One non-OR listener (`ControlPort`, `MetricsPort`, `DirPort`). Flags other than the
/// address are kept as written for the module that serves the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenPort {
    pub address: Option<IpAddr>,
    pub port: PortNumber,
    pub flags: Vec<String>,
    pub location: Location,
}

/// Splits `addr:port`, `[v6]:port`, `addr`, `port` or `auto`. Returns (address, port) where a
/// missing port is `None` and port `0` is `Some(None)`.
#[allow(clippy::type_complexity)]
pub fn parse_addr_port(s: &str) -> Result<(Option<IpAddr>, Option<Option<PortNumber>>), String> {
    let port_of = |p: &str| -> Result<Option<PortNumber>, String> {
        if p.eq_ignore_ascii_case("auto") {
            return Ok(Some(PortNumber::Auto));
        }
        let n: u16 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a port number (0-65535 or auto)"))?;
        Ok(NonZeroU16::new(n).map(PortNumber::Fixed))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unterminated '[' in address {s:?}"))?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(port_of(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("junk after ']' in {s:?}"))?,
            )?),
        };
        return Ok((Some(IpAddr::V6(ip)), port));
    }
    match s.matches(':').count() {
        0 => {
            if s.eq_ignore_ascii_case("auto") || s.bytes().all(|b| b.is_ascii_digit()) {
                Ok((None, Some(port_of(s)?)))
            } else {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| format!("{s:?} is not an IP address or port"))?;
                Ok((Some(ip), None))
            }
        }
        1 => {
            let (a, p) = s.split_once(':').unwrap_or((s, ""));
            let ip: std::net::Ipv4Addr = a.parse().map_err(|_| {
                format!("{a:?} is not an IPv4 address (hostnames are not accepted)")
            })?;
            Ok((Some(IpAddr::V4(ip)), Some(port_of(p)?)))
        }
        _ => {
            let ip: Ipv6Addr = s
                .parse()
                .map_err(|_| format!("{s:?} is not an address (write IPv6 as [addr]:port)"))?;
            Ok((Some(IpAddr::V6(ip)), None))
        }
    }
}

/// Parses the address/port word of a listener line; `Ok(None)` for port 0 (disabled).
fn parse_listener_addr(word: &str) -> Result<Option<(Option<IpAddr>, PortNumber)>, String> {
    if word.starts_with("unix:") {
        return Err("Unix-socket listeners are not supported by Fors".into());
    }
    match parse_addr_port(word)? {
        (_, None) => Err(format!("{word:?} has an address but no port")),
        (_, Some(None)) => Ok(None),
        (addr, Some(Some(port))) => Ok(Some((addr, port))),
    }
}

/// Parses one `ORPort` value; `Ok(None)` for `ORPort 0`.
pub fn parse_or_port(value: &str, location: &Location) -> Result<Option<OrPort>, String> {
    let mut words = value.split_ascii_whitespace();
    let first = words.next().ok_or("missing port")?;
    let Some((address, port)) = parse_listener_addr(first)? else {
        return match words.next() {
            Some(_) => Err("flags given for a disabled (0) port".into()),
            None => Ok(None),
        };
    };
    let mut p = OrPort {
        address,
        port,
        no_advertise: false,
        no_listen: false,
        ipv4_only: false,
        ipv6_only: false,
        location: location.clone(),
    };
    for flag in words {
        match flag.to_ascii_lowercase().as_str() {
            "noadvertise" => p.no_advertise = true,
            "nolisten" => p.no_listen = true,
            "ipv4only" => p.ipv4_only = true,
            "ipv6only" => p.ipv6_only = true,
            _ => return Err(format!("unknown ORPort flag {flag:?}")),
        }
    }
    if p.no_advertise && p.no_listen {
        return Err("NoAdvertise and NoListen together would make the port useless".into());
    }
    if p.ipv4_only && p.ipv6_only {
        return Err("IPv4Only and IPv6Only are mutually exclusive".into());
    }
    match p.address {
        Some(IpAddr::V6(_)) if p.ipv4_only => Err("IPv4Only on an IPv6 address".into()),
        Some(IpAddr::V4(_)) if p.ipv6_only => Err("IPv6Only on an IPv4 address".into()),
        _ => Ok(Some(p)),
    }
}

/// Parses one `ControlPort`/`MetricsPort`/`DirPort` value; `Ok(None)` for port 0.
pub fn parse_listen_port(value: &str, location: &Location) -> Result<Option<ListenPort>, String> {
    let mut words = value.split_ascii_whitespace();
    let first = words.next().ok_or("missing port")?;
    let flags: Vec<String> = words.map(str::to_string).collect();
    match parse_listener_addr(first)? {
        None if !flags.is_empty() => Err("flags given for a disabled (0) port".into()),
        None => Ok(None),
        Some((address, port)) => Ok(Some(ListenPort {
            address,
            port,
            flags,
            location: location.clone(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Location {
        Location::new("t", 1)
    }
    fn fixed(n: u16) -> PortNumber {
        PortNumber::Fixed(NonZeroU16::new(n).unwrap())
    }

    #[test]
    fn or_port_forms() {
        let p = parse_or_port("9001", &loc()).unwrap().unwrap();
        assert_eq!((p.address, p.port), (None, fixed(9001)));
        let p = parse_or_port("127.0.0.1:5000 NoAdvertise", &loc())
            .unwrap()
            .unwrap();
        assert_eq!(p.address, Some("127.0.0.1".parse().unwrap()));
        assert!(p.no_advertise && !p.no_listen);
        let p = parse_or_port("[::1]:443 noListen IPv6Only", &loc())
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.address, p.port),
            (Some("::1".parse().unwrap()), fixed(443))
        );
        assert!(p.no_listen && p.ipv6_only);
        let p = parse_or_port("auto IPv4Only", &loc()).unwrap().unwrap();
        assert_eq!(p.port, PortNumber::Auto);
        let p = parse_or_port("10.0.0.1:auto", &loc()).unwrap().unwrap();
        assert_eq!(p.port, PortNumber::Auto);
        assert_eq!(parse_or_port("0", &loc()).unwrap(), None);
    }

    #[test]
    fn or_port_errors() {
        for bad in [
            "70000",
            "1.2.3.4",
            "[::1]",
            "example.com:9001",
            "9001 NoAdvertise NoListen",
            "9001 IPv4Only IPv6Only",
            "[::1]:9001 IPv4Only",
            "1.2.3.4:9001 IPv6Only",
            "9001 Bogus",
            "unix:/tmp/x",
            "0 NoListen",
            "",
        ] {
            assert!(parse_or_port(bad, &loc()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_port_keeps_flags() {
        let p = parse_listen_port("127.0.0.1:9035 prometheus", &loc())
            .unwrap()
            .unwrap();
        assert_eq!(p.flags, ["prometheus"]);
        assert_eq!(p.port, fixed(9035));
        assert_eq!(parse_listen_port("0", &loc()).unwrap(), None);
    }
}
