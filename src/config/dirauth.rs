//! `DirAuthority` lines (C tor `parse_dir_authority_line`):
//! `[nickname] [flags] address:dirport fingerprint`, flags being `orport=N`, `v3ident=HEX`,
//! `ipv6=[addr]:port`, `weight=N`, `bridge`, `no-v2`, `hs`/`no-hs` and `upload=`/`download=`/
//! `vote=` extra dirports. The fingerprint may be written in space-separated groups.

use super::error::Location;
use super::port::{parse_addr_port, PortNumber};
use crate::crypto::ids::RsaIdentity;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV6};

/// One configured directory authority.
#[derive(Clone, Debug, PartialEq)]
pub struct DirAuthority {
    pub nickname: Option<String>,
    /// IPv4 address; C requires one here.
    pub address: Ipv4Addr,
    pub dir_port: u16,
    /// `orport=`; needed to reach the authority with BEGIN_DIR.
    pub or_port: Option<u16>,
    pub ipv6: Option<SocketAddrV6>,
    /// `v3ident=`: the authority's v3 signing identity; absent for v3-less authorities.
    pub v3ident: Option<RsaIdentity>,
    /// RSA identity fingerprint of the authority's relay key.
    pub fingerprint: RsaIdentity,
    /// `bridge`: a bridge authority.
    pub bridge: bool,
    pub weight: f64,
    /// `upload=`/`download=`/`vote=` entries, kept as written.
    pub extra_dirports: Vec<String>,
    pub location: Location,
}

/// Whether `s` is a legal relay nickname: 1-19 characters of `[A-Za-z0-9]` (dir-spec §2.1.1).
pub fn is_legal_nickname(s: &str) -> bool {
    (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Parses one `DirAuthority` value. Returns the authority and any warnings (obsolete flags).
pub fn parse_dir_authority(
    value: &str,
    location: &Location,
) -> Result<(DirAuthority, Vec<String>), String> {
    let mut items: Vec<&str> = value.split_ascii_whitespace().collect();
    let mut warnings = Vec::new();
    if items.is_empty() {
        return Err("no arguments".into());
    }
    let nickname = if is_legal_nickname(items[0]) {
        Some(items.remove(0).to_string())
    } else {
        None
    };
    let (mut or_port, mut v3ident, mut ipv6, mut bridge, mut weight) =
        (None, None, None, false, 1.0);
    let mut extra_dirports = Vec::new();
    while let Some(&flag) = items.first() {
        if flag.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        items.remove(0);
        let lower = flag.to_ascii_lowercase();
        let arg = |prefix: &str| flag[prefix.len()..].to_string();
        if lower == "hs" || lower == "no-hs" {
            warnings.push(format!("DirAuthority flag {flag:?} is obsolete"));
        } else if lower == "bridge" {
            bridge = true;
        } else if lower == "no-v2" {
            // Obsolete, still written by tools that generate these lines.
        } else if lower.starts_with("orport=") {
            let p = arg("orport=");
            or_port = Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&n| n != 0)
                    .ok_or_else(|| format!("invalid orport {p:?}"))?,
            );
        } else if flag.starts_with("weight=") {
            let w = arg("weight=");
            weight = w
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| format!("invalid weight {w:?}"))?;
        } else if lower.starts_with("v3ident=") {
            let id = arg("v3ident=");
            if id.len() != 40 {
                return Err(format!("bad v3ident {id:?}: need 40 hex digits"));
            }
            v3ident =
                Some(RsaIdentity::from_hex(&id).ok_or_else(|| format!("bad v3ident {id:?}"))?);
        } else if lower.starts_with("ipv6=") {
            if ipv6.is_some() {
                return Err("more than one ipv6= flag".into());
            }
            let a = arg("ipv6=");
            ipv6 = match parse_addr_port(&a) {
                Ok((Some(IpAddr::V6(ip)), Some(Some(PortNumber::Fixed(p))))) => {
                    Some(SocketAddrV6::new(ip, p.get(), 0, 0))
                }
                _ => return Err(format!("bad ipv6 address:port {a:?} (want [addr]:port)")),
            };
        } else if lower.starts_with("upload=")
            || lower.starts_with("download=")
            || lower.starts_with("vote=")
        {
            extra_dirports.push(flag.to_string());
        } else {
            return Err(format!("unrecognized flag {flag:?}"));
        }
    }
    if items.len() < 2 {
        return Err("too few arguments: need address:dirport and fingerprint".into());
    }
    let addrport = items.remove(0);
    let (address, dir_port) = match parse_addr_port(addrport) {
        Ok((Some(IpAddr::V4(a)), Some(Some(PortNumber::Fixed(p))))) => (a, p.get()),
        Ok((Some(IpAddr::V4(_)), _)) => {
            return Err(format!("missing port in address {addrport:?}"))
        }
        _ => {
            return Err(format!(
                "bad address {addrport:?} (want IPv4 address:dirport)"
            ))
        }
    };
    let fp: String = items.concat();
    if fp.len() != 40 {
        return Err(format!(
            "fingerprint {fp:?} has length {}, not 40",
            fp.len()
        ));
    }
    let fingerprint =
        RsaIdentity::from_hex(&fp).ok_or_else(|| format!("fingerprint {fp:?} is not hex"))?;
    Ok((
        DirAuthority {
            nickname,
            address,
            dir_port,
            or_port,
            ipv6,
            v3ident,
            fingerprint,
            bridge,
            weight,
            extra_dirports,
            location: location.clone(),
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "DEADBEEF00112233445566778899AABBCCDDEEFF";

    fn loc() -> Location {
        Location::new("t", 1)
    }

    #[test]
    fn chutney_style_line() {
        // The shape chutney writes for its authorities.
        let line = format!(
            "test000a orport=5000 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 \
             ipv6=[::1]:5000 127.0.0.1:7000 {FP}"
        );
        let (a, w) = parse_dir_authority(&line, &loc()).unwrap();
        assert!(w.is_empty());
        assert_eq!(a.nickname.as_deref(), Some("test000a"));
        assert_eq!(a.or_port, Some(5000));
        assert_eq!(a.address, Ipv4Addr::LOCALHOST);
        assert_eq!(a.dir_port, 7000);
        assert_eq!(a.ipv6.unwrap().to_string(), "[::1]:5000");
        assert_eq!(a.fingerprint.to_hex(), FP);
        assert_eq!(
            a.v3ident.unwrap().to_hex(),
            "0123456789ABCDEF0123456789ABCDEF01234567"
        );
        assert!(!a.bridge);
    }

    #[test]
    fn grouped_fingerprint_and_no_nickname() {
        let line =
            "orport=443 bridge 128.31.0.34:9131 DEAD BEEF 0011 2233 4455 6677 8899 AABB CCDD EEFF";
        let (a, _) = parse_dir_authority(line, &loc()).unwrap();
        assert_eq!(a.nickname, None);
        assert!(a.bridge);
        // As in C tor, a first word that is a legal nickname is the nickname, even "bridge".
        let (a, _) = parse_dir_authority(&format!("bridge 1.2.3.4:80 {FP}"), &loc()).unwrap();
        assert_eq!((a.nickname.as_deref(), a.bridge), (Some("bridge"), false));
        assert_eq!(a.fingerprint.to_hex(), FP);
        assert_eq!(a.v3ident, None);
    }

    #[test]
    fn obsolete_hs_flag_warns() {
        let (_, w) = parse_dir_authority(&format!("auth hs 1.2.3.4:80 {FP}"), &loc()).unwrap();
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn bad_lines() {
        for bad in [
            String::new(),
            format!("x orport=0 1.2.3.4:80 {FP}"),
            format!("x orport=99999 1.2.3.4:80 {FP}"),
            format!("x v3ident=ABC 1.2.3.4:80 {FP}"),
            format!("x ipv6=1.2.3.4:5 1.2.3.4:80 {FP}"),
            format!("x frob 1.2.3.4:80 {FP}"),
            format!("x 1.2.3.4 {FP}"),
            format!("x [::1]:80 {FP}"),
            "x 1.2.3.4:80 DEADBEEF".to_string(),
            format!("x 1.2.3.4:80 {}", FP.replace('D', "G")),
            "x 1.2.3.4:80".to_string(),
        ] {
            assert!(
                parse_dir_authority(&bad, &loc()).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
