//! The consensus (dir-spec §3.4.1 "Network status format"), microdesc flavour by default:
//! header times and parameters, the router-status table, and the authorities' signatures
//! (verified against their key certificates). C: `ns_parse.c`, `networkstatus.c`
//! `networkstatus_check_consensus_signature`.
//!
//! A relay needs it for its own status (listed? Running? StaleDesc?), the parameters, and the
//! set of known relays (refuse-unknown-exits, network re-entry checks).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::authcert::AuthorityCert;
use super::isotime;
use super::netdoc::{self, decode_base64_any, Item, NetdocError};
use super::params::{ConsensusParams, ParamsError};
use crate::crypto::ids::RsaIdentity;
use crate::keys::rsa as tor_rsa;
use crate::keys::time::unix_secs;

/// Refuse documents larger than this (the live microdesc consensus is about 3 MB).
pub const MAX_CONSENSUS_SIZE: usize = 32 << 20;
/// C `REASONABLY_LIVE_TIME`: a consensus stays usable this long after `valid-until`.
pub const REASONABLY_LIVE_SECS: u64 = 24 * 3600;

/// Why a consensus was refused.
#[derive(Debug, Error)]
pub enum ConsensusError {
    #[error("consensus is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error(transparent)]
    Netdoc(#[from] NetdocError),
    #[error("not a v3 consensus: {0}")]
    NotConsensus(&'static str),
    #[error("missing header item {0:?}")]
    Missing(&'static str),
    #[error("line {line}: item {keyword:?} is malformed")]
    Malformed { keyword: String, line: usize },
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("no directory-signature found")]
    NoSignatures,
    #[error("only {good} good signatures from the {known} known authorities; need {needed}")]
    NotEnoughSignatures {
        good: usize,
        needed: usize,
        known: usize,
    },
    #[error("consensus is not live: valid {valid_after} to {valid_until}, now {now}")]
    NotLive {
        valid_after: String,
        valid_until: String,
        now: String,
    },
}

type E = ConsensusError;

fn malformed(item: &Item<'_>) -> E {
    E::Malformed {
        keyword: item.keyword.to_owned(),
        line: item.line,
    }
}

/// Router flags (dir-spec §3.4.1 `s` line), as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RelayFlags(pub u16);

impl RelayFlags {
    pub const AUTHORITY: RelayFlags = RelayFlags(1 << 0);
    pub const BAD_EXIT: RelayFlags = RelayFlags(1 << 1);
    pub const EXIT: RelayFlags = RelayFlags(1 << 2);
    pub const FAST: RelayFlags = RelayFlags(1 << 3);
    pub const GUARD: RelayFlags = RelayFlags(1 << 4);
    pub const HSDIR: RelayFlags = RelayFlags(1 << 5);
    pub const MIDDLE_ONLY: RelayFlags = RelayFlags(1 << 6);
    pub const NO_ED_CONSENSUS: RelayFlags = RelayFlags(1 << 7);
    pub const RUNNING: RelayFlags = RelayFlags(1 << 8);
    pub const STABLE: RelayFlags = RelayFlags(1 << 9);
    pub const STALE_DESC: RelayFlags = RelayFlags(1 << 10);
    pub const SYBIL: RelayFlags = RelayFlags(1 << 11);
    pub const V2DIR: RelayFlags = RelayFlags(1 << 12);
    pub const VALID: RelayFlags = RelayFlags(1 << 13);

    const NAMES: [(&'static str, RelayFlags); 14] = [
        ("Authority", Self::AUTHORITY),
        ("BadExit", Self::BAD_EXIT),
        ("Exit", Self::EXIT),
        ("Fast", Self::FAST),
        ("Guard", Self::GUARD),
        ("HSDir", Self::HSDIR),
        ("MiddleOnly", Self::MIDDLE_ONLY),
        ("NoEdConsensus", Self::NO_ED_CONSENSUS),
        ("Running", Self::RUNNING),
        ("Stable", Self::STABLE),
        ("StaleDesc", Self::STALE_DESC),
        ("Sybil", Self::SYBIL),
        ("V2Dir", Self::V2DIR),
        ("Valid", Self::VALID),
    ];

    /// The flag called `name`; unknown flags (future ones) map to none.
    pub fn from_name(name: &str) -> RelayFlags {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(RelayFlags(0), |(_, f)| *f)
    }

    pub fn contains(self, other: RelayFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: RelayFlags) {
        self.0 |= other.0;
    }

    /// Flag names in dir-spec order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, f)| self.contains(*f))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// One relay's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    pub nickname: String,
    pub rsa_identity: RsaIdentity,
    pub published_secs: u64,
    pub address: Ipv4Addr,
    pub or_port: u16,
    pub dir_port: u16,
    /// `a` lines (IPv6 ORPorts).
    pub extra_addresses: Vec<SocketAddr>,
    pub flags: RelayFlags,
    /// `v` line.
    pub version: Option<String>,
    /// `pr` line.
    pub protocols: Option<String>,
    /// `w Bandwidth=`.
    pub bandwidth: Option<u32>,
    pub unmeasured: bool,
    /// `m` line (microdesc flavour): SHA-256 of the microdescriptor.
    pub microdesc_digest: Option<[u8; 32]>,
    /// The `r` line's descriptor digest (ns flavour only): SHA-1 of the signed part of the
    /// relay's server descriptor (dir-spec §3.4.1 "r" line, "Digest").
    pub descriptor_digest: Option<[u8; 20]>,
}

impl RouterStatus {
    /// This entry in the `ns` form a controller reads from `GETINFO ns/id/…` (control-spec
    /// §3.9; C `routerstatus_format_entry` for the control port): `r` with the descriptor
    /// digest, `a`, `s`, `v`, `w`. A microdesc consensus has no descriptor digest, so the
    /// caller supplies the one of the descriptor we published.
    pub fn ns_entry(&self, descriptor_digest: &[u8; 20]) -> String {
        use base64::engine::general_purpose::STANDARD_NO_PAD;
        use base64::Engine as _;
        use std::fmt::Write as _;
        let mut t = format!(
            "r {} {} {} {} {} {} {}\n",
            self.nickname,
            STANDARD_NO_PAD.encode(self.rsa_identity.0),
            STANDARD_NO_PAD.encode(descriptor_digest),
            isotime::format_secs(self.published_secs),
            self.address,
            self.or_port,
            self.dir_port
        );
        for a in &self.extra_addresses {
            let _ = writeln!(t, "a {a}");
        }
        let _ = writeln!(t, "s {}", self.flags.names().join(" "));
        if let Some(v) = &self.version {
            let _ = writeln!(t, "v {v}");
        }
        if let Some(bw) = self.bandwidth {
            let _ = write!(t, "w Bandwidth={bw}");
            if self.unmeasured {
                t.push_str(" Unmeasured=1");
            }
            t.push('\n');
        }
        t
    }
}

/// Digest algorithm named on a `directory-signature` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    Sha1,
    Sha256,
}

/// One `directory-signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySignature {
    pub algorithm: SignatureAlgorithm,
    /// The authority's v3 identity.
    pub identity: RsaIdentity,
    pub signing_key_digest: [u8; 20],
    pub signature: Vec<u8>,
}

/// A `dir-source` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource {
    pub nickname: String,
    pub identity: RsaIdentity,
    pub address: String,
    pub dir_port: u16,
    pub or_port: u16,
}

/// Result of a successful signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSummary {
    /// Authorities whose signature verified.
    pub good: Vec<RsaIdentity>,
    /// Known authorities with no usable signature (missing cert, bad signature...).
    pub missing: Vec<RsaIdentity>,
}

/// A parsed consensus. Signatures are not trusted until [`Consensus::verify_signatures`].
#[derive(Debug, Clone)]
pub struct Consensus {
    /// `microdesc` or `ns`.
    pub flavor: String,
    pub valid_after: u64,
    pub fresh_until: u64,
    pub valid_until: u64,
    pub consensus_method: Option<u32>,
    pub known_flags: Vec<String>,
    pub params: ConsensusParams,
    pub required_relay_protocols: Option<String>,
    pub recommended_relay_protocols: Option<String>,
    pub dir_sources: Vec<DirSource>,
    pub relays: Vec<RouterStatus>,
    pub signatures: Vec<DirectorySignature>,
    digest_sha1: [u8; 20],
    digest_sha256: [u8; 32],
    /// SHA3-256 of the same signed part: the "digest-as-signed" that names this consensus in
    /// `X-Or-Diff-From-Consensus` and diffs (prop 140; C
    /// `router_get_networkstatus_v3_sha3_as_signed`).
    digest_sha3: [u8; 32],
    by_id: HashMap<RsaIdentity, usize>,
    by_addr_port: HashSet<(IpAddr, u16)>,
    by_addr: HashSet<IpAddr>,
}

fn time_item(items: &[Item<'_>], kw: &'static str) -> Result<u64, E> {
    let i = items
        .iter()
        .find(|i| i.keyword == kw)
        .ok_or(E::Missing(kw))?;
    isotime::parse_secs(i.rest).ok_or_else(|| malformed(i))
}

fn parse_r(item: &Item<'_>, microdesc: bool) -> Result<RouterStatus, E> {
    let a = &item.args;
    // microdesc: nick id date time ip orport dirport; ns: nick id digest date time ...
    let off = usize::from(!microdesc);
    if a.len() < 7 + off {
        return Err(malformed(item));
    }
    let bad = || malformed(item);
    let id: [u8; 20] = decode_base64_any(a[1])
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    let descriptor_digest = if microdesc {
        None
    } else {
        Some(
            decode_base64_any(a[2])
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad)?,
        )
    };
    let published_secs =
        isotime::parse_secs(&format!("{} {}", a[2 + off], a[3 + off])).ok_or_else(bad)?;
    Ok(RouterStatus {
        nickname: a[0].to_owned(),
        rsa_identity: RsaIdentity(id),
        published_secs,
        address: a[4 + off].parse().map_err(|_| bad())?,
        or_port: a[5 + off].parse().map_err(|_| bad())?,
        dir_port: a[6 + off].parse().map_err(|_| bad())?,
        extra_addresses: Vec::new(),
        flags: RelayFlags::default(),
        version: None,
        protocols: None,
        bandwidth: None,
        unmeasured: false,
        microdesc_digest: None,
        descriptor_digest,
    })
}

impl Consensus {
    /// Parses a consensus document (either flavour).
    pub fn parse(text: &str) -> Result<Consensus, E> {
        if text.len() > MAX_CONSENSUS_SIZE {
            return Err(E::TooLarge(text.len()));
        }
        if !text.starts_with("network-status-version ") {
            return Err(E::NotConsensus("must start with network-status-version"));
        }
        let items = netdoc::tokenize(text)?;
        let first = &items[0];
        if first.arg(0) != Some("3") {
            return Err(E::NotConsensus("network-status-version is not 3"));
        }
        let flavor = first.arg(1).unwrap_or("ns").to_owned();
        let microdesc = match flavor.as_str() {
            "microdesc" => true,
            "ns" => false,
            _ => return Err(E::NotConsensus("unknown flavour")),
        };
        let first_r = items
            .iter()
            .position(|i| matches!(i.keyword, "r" | "directory-footer" | "directory-signature"))
            .unwrap_or(items.len());
        let header = &items[..first_r];
        match header.iter().find(|i| i.keyword == "vote-status") {
            Some(i) if i.arg(0) == Some("consensus") => {}
            Some(_) => return Err(E::NotConsensus("vote-status is not consensus")),
            None => return Err(E::Missing("vote-status")),
        }
        let valid_after = time_item(header, "valid-after")?;
        let fresh_until = time_item(header, "fresh-until")?;
        let valid_until = time_item(header, "valid-until")?;
        let consensus_method = match header.iter().find(|i| i.keyword == "consensus-method") {
            Some(i) => Some(
                i.arg(0)
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| malformed(i))?,
            ),
            None => None,
        };
        let known_flags = header
            .iter()
            .find(|i| i.keyword == "known-flags")
            .ok_or(E::Missing("known-flags"))?
            .args
            .iter()
            .map(|s| s.to_string())
            .collect();
        let params = match header.iter().find(|i| i.keyword == "params") {
            Some(i) => ConsensusParams::parse(&i.args)?,
            None => ConsensusParams::default(),
        };
        let rest_of = |kw: &str| {
            header
                .iter()
                .find(|i| i.keyword == kw)
                .map(|i| i.rest.to_owned())
        };
        let mut dir_sources = Vec::new();
        for i in header.iter().filter(|i| i.keyword == "dir-source") {
            let bad = || malformed(i);
            if i.args.len() < 6 {
                return Err(bad());
            }
            dir_sources.push(DirSource {
                nickname: i.args[0].to_owned(),
                identity: RsaIdentity::from_hex(i.args[1]).ok_or_else(bad)?,
                address: i.args[3].to_owned(),
                dir_port: i.args[4].parse().map_err(|_| bad())?,
                or_port: i.args[5].parse().map_err(|_| bad())?,
            });
        }

        let mut relays: Vec<RouterStatus> = Vec::new();
        let mut signatures = Vec::new();
        let mut in_footer = false;
        for item in &items[first_r..] {
            match item.keyword {
                "directory-footer" | "bandwidth-weights" => in_footer = true,
                "directory-signature" => {
                    in_footer = true;
                    // Unknown digest algorithms are skipped, as C does.
                    if let Some(sig) = parse_signature(item)? {
                        signatures.push(sig);
                    }
                }
                "r" if !in_footer => relays.push(parse_r(item, microdesc)?),
                // Unknown footer items are skipped, as C tor's tokenizer treats an unknown
                // keyword (a later consensus method may add footer items).
                _ if in_footer => {}
                kw => {
                    let rs = relays.last_mut().ok_or_else(|| malformed(item))?;
                    match kw {
                        "a" => {
                            if let Some(sa) = item.arg(0).and_then(|a| a.parse().ok()) {
                                rs.extra_addresses.push(sa);
                            }
                        }
                        "s" => {
                            for f in &item.args {
                                rs.flags.insert(RelayFlags::from_name(f));
                            }
                        }
                        "v" => rs.version = Some(item.rest.to_owned()),
                        "pr" => rs.protocols = Some(item.rest.to_owned()),
                        "w" => {
                            for kv in &item.args {
                                match kv.split_once('=') {
                                    Some(("Bandwidth", v)) => rs.bandwidth = v.parse().ok(),
                                    Some(("Unmeasured", "1")) => rs.unmeasured = true,
                                    _ => {}
                                }
                            }
                        }
                        "m" if microdesc => {
                            rs.microdesc_digest = Some(
                                item.arg(0)
                                    .and_then(decode_base64_any)
                                    .and_then(|v| v.try_into().ok())
                                    .ok_or_else(|| malformed(item))?,
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        if signatures.is_empty() {
            return Err(E::NoSignatures);
        }
        let end =
            netdoc::signed_end(text, 0, "\ndirectory-signature", ' ').ok_or(E::NoSignatures)?;
        let signed = &text.as_bytes()[..end];
        let mut by_id = HashMap::with_capacity(relays.len());
        let mut by_addr_port = HashSet::with_capacity(relays.len() * 2);
        let mut by_addr = HashSet::with_capacity(relays.len());
        for (idx, r) in relays.iter().enumerate() {
            by_id.entry(r.rsa_identity).or_insert(idx);
            let v4 = IpAddr::V4(r.address);
            by_addr.insert(v4);
            by_addr_port.insert((v4, r.or_port));
            if r.dir_port != 0 {
                by_addr_port.insert((v4, r.dir_port));
            }
            for sa in &r.extra_addresses {
                by_addr.insert(sa.ip());
                by_addr_port.insert((sa.ip(), sa.port()));
            }
        }
        Ok(Consensus {
            flavor,
            valid_after,
            fresh_until,
            valid_until,
            consensus_method,
            known_flags,
            params,
            required_relay_protocols: rest_of("required-relay-protocols"),
            recommended_relay_protocols: rest_of("recommended-relay-protocols"),
            dir_sources,
            relays,
            signatures,
            digest_sha1: Sha1::digest(signed).into(),
            digest_sha256: Sha256::digest(signed).into(),
            digest_sha3: sha3::Sha3_256::digest(signed).into(),
            by_id,
            by_addr_port,
            by_addr,
        })
    }

    /// Verifies the signatures against `certs`, counting only authorities in `trusted` (their
    /// v3 identities). More than half of `trusted` must have signed (C
    /// `networkstatus_check_consensus_signature`). With `now`, expired certs are not used.
    pub fn verify_signatures(
        &self,
        certs: &[AuthorityCert],
        trusted: &[RsaIdentity],
        now: Option<SystemTime>,
    ) -> Result<SignatureSummary, E> {
        let mut known: Vec<RsaIdentity> = trusted.to_vec();
        known.sort();
        known.dedup();
        let mut good = Vec::new();
        for id in &known {
            let ok = self
                .signatures
                .iter()
                .filter(|s| s.identity == *id)
                .any(|s| {
                    certs
                        .iter()
                        .filter(|c| {
                            c.fingerprint == *id && c.signing_key_digest == s.signing_key_digest
                        })
                        .filter(|c| now.is_none_or(|n| !c.is_expired(n)))
                        .any(|c| {
                            let digest: &[u8] = match s.algorithm {
                                SignatureAlgorithm::Sha1 => &self.digest_sha1,
                                SignatureAlgorithm::Sha256 => &self.digest_sha256,
                            };
                            tor_rsa::verify_unprefixed(&c.signing_key, digest, &s.signature).is_ok()
                        })
                });
            if ok {
                good.push(*id);
            }
        }
        let needed = known.len() / 2 + 1;
        if good.len() < needed {
            return Err(E::NotEnoughSignatures {
                good: good.len(),
                needed,
                known: known.len(),
            });
        }
        let missing = known.into_iter().filter(|k| !good.contains(k)).collect();
        Ok(SignatureSummary { good, missing })
    }

    /// SHA3-256 of the signed part (from `network-status-version` through the space after
    /// the first `directory-signature`): the digest-as-signed that consensus diffs and
    /// `X-Or-Diff-From-Consensus` name (prop 140 §"digest-as-signed").
    pub fn sha3_as_signed(&self) -> [u8; 32] {
        self.digest_sha3
    }

    /// valid-after ≤ now ≤ valid-until.
    pub fn is_live(&self, now: SystemTime) -> bool {
        let n = unix_secs(now);
        self.valid_after <= n && n <= self.valid_until
    }

    /// Usable: live, or expired for less than a day (C `networkstatus_consensus_reasonably_live`).
    pub fn check_reasonably_live(&self, now: SystemTime) -> Result<(), E> {
        let n = unix_secs(now);
        if self.valid_after <= n && n <= self.valid_until + REASONABLY_LIVE_SECS {
            Ok(())
        } else {
            Err(E::NotLive {
                valid_after: isotime::format_secs(self.valid_after),
                valid_until: isotime::format_secs(self.valid_until),
                now: isotime::format_secs(n),
            })
        }
    }

    /// Our (or any relay's) entry, if listed.
    pub fn is_listed(&self, id: &RsaIdentity) -> Option<&RouterStatus> {
        self.by_id.get(id).map(|&i| &self.relays[i])
    }

    /// True if some relay has this address and ORPort/DirPort (re-entry check, C
    /// `nodelist_reentry_contains`).
    pub fn is_relay_addr_port(&self, addr: IpAddr, port: u16) -> bool {
        self.by_addr_port.contains(&(addr, port))
    }

    /// True if some relay uses this address.
    pub fn is_relay_address(&self, addr: IpAddr) -> bool {
        self.by_addr.contains(&addr)
    }
}

fn parse_signature(item: &Item<'_>) -> Result<Option<DirectorySignature>, E> {
    let bad = || malformed(item);
    let (algorithm, id, sk) = match item.args.as_slice() {
        [id, sk] => (SignatureAlgorithm::Sha1, *id, *sk),
        [alg, id, sk, ..] => {
            let a = match *alg {
                "sha1" => SignatureAlgorithm::Sha1,
                "sha256" => SignatureAlgorithm::Sha256,
                _ => return Ok(None),
            };
            (a, *id, *sk)
        }
        _ => return Err(bad()),
    };
    let signature = match &item.object {
        Some(o) if o.tag == "SIGNATURE" && (128..=512).contains(&o.data.len()) => o.data.clone(),
        _ => return Err(bad()),
    };
    Ok(Some(DirectorySignature {
        algorithm,
        identity: RsaIdentity::from_hex(id).ok_or_else(bad)?,
        signing_key_digest: RsaIdentity::from_hex(sk).ok_or_else(bad)?.0,
        signature,
    }))
}
