//! The preamble a shard writes first on a BEGIN_DIR stream's loopback connection to the
//! directory server's internal listeners: the address of the channel the circuit arrived
//! on, which the server needs for `X-Your-Address-Is` and cannot see (its TCP peer is our
//! own shard).
//!
//! C tor gives a BEGIN_DIR stream's directory connection the previous hop channel's address
//! (`connection_exit_begin_conn`: `channel_get_addr_if_possible(or_circ->p_chan)`, copied by
//! `connection_exit_connect_dir`) and writes it in the answer's `X-Your-Address-Is` unless it
//! is local (`write_http_response_header_impl`, here [`super::serve::your_address`]).
//!
//! Fixed size, so the server never scans for it: [`PREAMBLE_LEN`] bytes, `MAGIC`, a family
//! byte (0 none, 4 IPv4, 6 IPv6) and 16 address bytes (IPv4 in the first 4, the rest zero;
//! none: all zero). Anything else is malformed and the server closes the connection. The
//! internal listeners are on loopback, so any local process can write a preamble: the
//! server uses it for nothing but that header, which only goes back to whoever wrote it.
//! Sans-IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// "Fors directory preamble", version 1.
const MAGIC: [u8; 4] = *b"FDP\x01";

/// Bytes of a preamble.
pub const PREAMBLE_LEN: usize = 4 + 1 + 16;

/// Why a preamble was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreambleError {
    /// Not [`PREAMBLE_LEN`] bytes.
    Length,
    /// Wrong magic or version.
    Magic,
    /// A family byte other than 0, 4 or 6.
    Family,
    /// Bytes that must be zero are not.
    Padding,
}

impl std::fmt::Display for PreambleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PreambleError::Length => "wrong length",
            PreambleError::Magic => "wrong magic",
            PreambleError::Family => "unknown address family",
            PreambleError::Padding => "non-zero padding",
        })
    }
}

impl std::error::Error for PreambleError {}

/// The preamble naming `chan_addr` (`None`: the channel's address is unknown).
pub fn encode(chan_addr: Option<IpAddr>) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..4].copy_from_slice(&MAGIC);
    match chan_addr {
        None => {}
        Some(IpAddr::V4(a)) => {
            p[4] = 4;
            p[5..9].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            p[4] = 6;
            p[5..].copy_from_slice(&a.octets());
        }
    }
    p
}

/// The channel address a preamble names; `bytes` must be exactly one preamble.
pub fn decode(bytes: &[u8]) -> Result<Option<IpAddr>, PreambleError> {
    let p: &[u8; PREAMBLE_LEN] = bytes.try_into().map_err(|_| PreambleError::Length)?;
    if p[..4] != MAGIC {
        return Err(PreambleError::Magic);
    }
    let addr = &p[5..];
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    match p[4] {
        0 if zero(addr) => Ok(None),
        4 if zero(&addr[4..]) => Ok(Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        )))),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(addr);
            Ok(Some(IpAddr::V6(Ipv6Addr::from(o))))
        }
        0 | 4 => Err(PreambleError::Padding),
        _ => Err(PreambleError::Family),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    #[test]
    fn round_trips_every_family() {
        for a in [
            None,
            Some("203.0.113.7".parse().unwrap()),
            Some("0.0.0.0".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
            Some("::ffff:198.51.100.2".parse().unwrap()),
        ] {
            let p = encode(a);
            assert_eq!(p.len(), PREAMBLE_LEN);
            assert_eq!(decode(&p), Ok(a), "{a:?}");
        }
        // The layout is fixed: magic, family, address.
        let p = encode(Some("1.2.3.4".parse().unwrap()));
        assert_eq!(&p[..9], b"FDP\x01\x04\x01\x02\x03\x04");
        assert!(p[9..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_malformed_preambles() {
        let good = encode(Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            decode(&good[..PREAMBLE_LEN - 1]),
            Err(PreambleError::Length)
        );
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(PreambleError::Length));
        let mut m = good;
        m[3] = 2; // another version
        assert_eq!(decode(&m), Err(PreambleError::Magic));
        assert_eq!(
            decode(b"GET / HTTP/1.0\r\n\r\n\0\0\0"),
            Err(PreambleError::Magic)
        );
        let mut f = good;
        f[4] = 5;
        assert_eq!(decode(&f), Err(PreambleError::Family));
        let mut v4 = good;
        v4[20] = 1;
        assert_eq!(decode(&v4), Err(PreambleError::Padding));
        let mut none = encode(None);
        none[5] = 1;
        assert_eq!(decode(&none), Err(PreambleError::Padding));
    }

    #[test]
    fn random_bytes_never_panic_and_valid_ones_round_trip() {
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..10_000 {
            let mut b = [0u8; PREAMBLE_LEN];
            rng.fill_bytes(&mut b);
            if rng.gen_bool(0.5) {
                b[..4].copy_from_slice(&MAGIC);
                b[4] = [0, 4, 6, 9][rng.gen_range(0..4)];
            }
            if let Ok(a) = decode(&b) {
                assert_eq!(encode(a), b, "only the canonical form decodes");
            }
        }
    }
}
