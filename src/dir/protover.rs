//! Subprotocol lists (tor-spec §"Subprotocol versioning") and the check a relay makes of a
//! new consensus's `required-relay-protocols` / `recommended-relay-protocols` against what
//! it implements (C tor `networkstatus_check_required_protocols`, `protover_all_supported`).
//!
//! A list is `Name=ranges` entries separated by spaces; ranges are `N` or `N-M`, comma
//! separated; names are alphanumerics and `-`, at most 100 bytes; versions are 0..=63 (C
//! `MAX_PROTOCOL_NAME_LENGTH`, `MAX_PROTOCOL_VERSION`), so one `u64` bitmask holds them.

#![forbid(unsafe_code)]

use std::fmt;

/// C `MAX_PROTOCOL_NAME_LENGTH`.
const MAX_NAME_LEN: usize = 100;
/// C `MAX_PROTOCOL_VERSION`.
const MAX_VERSION: u32 = 63;
/// Entries a list may hold (the spec names 13 protocols; a consensus is trusted input, but
/// a bound keeps a malformed one cheap).
const MAX_ENTRIES: usize = 64;

/// A protocol list that does not parse (C `parse_protocol_list` returns NULL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoverError {
    #[error("protocol entry without '=': {0:?}")]
    NoEquals(String),
    #[error("empty or over-long protocol name in {0:?}")]
    BadName(String),
    #[error("bad version range in {0:?}")]
    BadRange(String),
    #[error("more than {MAX_ENTRIES} protocol entries")]
    TooMany,
}

/// One protocol's versions as a bitmask (bit `v` set: version `v` listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoEntry {
    pub name: String,
    pub versions: u64,
}

/// A parsed protocol list, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtoList(pub Vec<ProtoEntry>);

impl ProtoList {
    /// Parses a list as C tor's `parse_protocol_list` does.
    pub fn parse(s: &str) -> Result<ProtoList, ProtoverError> {
        let mut entries = Vec::new();
        for word in s.split_ascii_whitespace() {
            if entries.len() == MAX_ENTRIES {
                return Err(ProtoverError::TooMany);
            }
            entries.push(parse_entry(word)?);
        }
        Ok(ProtoList(entries))
    }

    fn versions_of(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|e| e.name == name)
            .fold(0, |m, e| m | e.versions)
    }

    /// The entries of `self` (what a consensus asks for) that `supported` lacks, with only
    /// the missing versions (C `protover_all_supported`); empty when all are supported.
    pub fn missing_from(&self, supported: &ProtoList) -> ProtoList {
        ProtoList(
            self.0
                .iter()
                .filter_map(|e| {
                    let missing = e.versions & !supported.versions_of(&e.name);
                    (missing != 0).then(|| ProtoEntry {
                        name: e.name.clone(),
                        versions: missing,
                    })
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Encodes like C `encode_protocol_list`: `Name=a-b,c` entries joined by spaces.
impl fmt::Display for ProtoList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}=", e.name)?;
            let mut first = true;
            let mut v = 0u32;
            while v <= MAX_VERSION {
                if e.versions & (1 << v) == 0 {
                    v += 1;
                    continue;
                }
                let low = v;
                while v < MAX_VERSION && e.versions & (1 << (v + 1)) != 0 {
                    v += 1;
                }
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                if low == v {
                    write!(f, "{low}")?;
                } else {
                    write!(f, "{low}-{v}")?;
                }
                v += 1;
            }
        }
        Ok(())
    }
}

fn parse_entry(word: &str) -> Result<ProtoEntry, ProtoverError> {
    let (name, ranges) = word
        .split_once('=')
        .ok_or_else(|| ProtoverError::NoEquals(word.to_owned()))?;
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ProtoverError::BadName(word.to_owned()));
    }
    let mut versions = 0u64;
    // C accepts an empty version list ("Name=") as an entry with no versions.
    if !ranges.is_empty() {
        for range in ranges.split(',') {
            let (low, high) =
                parse_range(range).ok_or_else(|| ProtoverError::BadRange(word.to_owned()))?;
            for v in low..=high {
                versions |= 1 << v;
            }
        }
    }
    Ok(ProtoEntry {
        name: name.to_owned(),
        versions,
    })
}

/// `N` or `N-M` with `N <= M <= 63`, digits only (C `parse_version_range`).
fn parse_range(s: &str) -> Option<(u32, u32)> {
    let num = |t: &str| -> Option<u32> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u32>().ok().filter(|&v| v <= MAX_VERSION)
    };
    match s.split_once('-') {
        None => num(s).map(|v| (v, v)),
        Some((a, b)) => {
            let (low, high) = (num(a)?, num(b)?);
            (low <= high).then_some((low, high))
        }
    }
}

/// What a consensus's relay protocol lines mean for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolCheck {
    /// We implement everything required and recommended (or the consensus is older than
    /// this release, when C tor does not judge).
    Fine,
    /// Recommended protocols we lack: a warning.
    RecommendedMissing(ProtoList),
    /// Required protocols we lack: C tor logs an error and exits.
    RequiredMissing(ProtoList),
}

/// C `networkstatus_check_required_protocols` for a relay: a consensus valid before
/// `release_date` (Unix seconds) is not judged; an unparseable line counts as supported
/// (C tor logs it and returns "supported").
pub fn check_relay_protocols(
    supported: &ProtoList,
    required: Option<&str>,
    recommended: Option<&str>,
    valid_after: u64,
    release_date: u64,
) -> ProtocolCheck {
    if valid_after < release_date {
        return ProtocolCheck::Fine;
    }
    let missing = |line: Option<&str>| {
        line.and_then(|l| ProtoList::parse(l).ok())
            .map(|l| l.missing_from(supported))
            .filter(|m| !m.is_empty())
    };
    if let Some(m) = missing(required) {
        return ProtocolCheck::RequiredMissing(m);
    }
    match missing(recommended) {
        Some(m) => ProtocolCheck::RecommendedMissing(m),
        None => ProtocolCheck::Fine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE_REQUIRED: &str = "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 \
                                 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4";

    #[test]
    fn parses_and_encodes_like_c() {
        let l = ProtoList::parse("Link=1-5 LinkAuth=1,3 Relay=2-4,6 Padding=").unwrap();
        assert_eq!(l.0[0].versions, 0b111110);
        assert_eq!(l.0[1].versions, 0b1010);
        assert_eq!(l.to_string(), "Link=1-5 LinkAuth=1,3 Relay=2-4,6 Padding=");
        assert_eq!(ProtoList::parse("X=63").unwrap().0[0].versions, 1 << 63);
    }

    #[test]
    fn refuses_what_c_refuses() {
        for bad in [
            "Link",
            "=1",
            "Li nk=1",
            "Link=64",
            "Link=3-1",
            "Link=1-",
            "Link=-1",
            "Link=1,,2",
            "Link=a",
            "Link=+1",
            "Li_nk=1",
        ] {
            assert!(ProtoList::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}=1", "a".repeat(101));
        assert!(ProtoList::parse(&long).is_err());
        assert!(ProtoList::parse(&format!("{}=1", "a".repeat(100))).is_ok());
    }

    #[test]
    fn missing_lists_only_the_versions_we_lack() {
        let ours = ProtoList::parse(crate::dir::descriptor::DIR_CACHE_PROTO).unwrap();
        let req = ProtoList::parse(LIVE_REQUIRED).unwrap();
        assert_eq!(req.missing_from(&ours).to_string(), "HSIntro=4-5 HSRend=2");
        let rec = ProtoList::parse("Relay=2-6 Link=5 Conflux=1").unwrap();
        // Relay=2-6 is ours since CGO (Relay=6) runs on live circuits.
        assert_eq!(rec.missing_from(&ours).to_string(), "Conflux=1");
        // A protocol listed with no versions asks for nothing.
        assert!(ProtoList::parse("Padding=")
            .unwrap()
            .missing_from(&ours)
            .is_empty());
    }

    #[test]
    fn check_follows_c_networkstatus_rules() {
        let ours = ProtoList::parse(crate::dir::descriptor::DIR_CACHE_PROTO).unwrap();
        let check = |req, rec, va| check_relay_protocols(&ours, req, rec, va, 1000);
        // Required first; recommended only when required is fine.
        assert!(matches!(
            check(Some(LIVE_REQUIRED), Some("Conflux=1"), 1000),
            ProtocolCheck::RequiredMissing(m) if m.to_string() == "HSIntro=4-5 HSRend=2"
        ));
        assert!(matches!(
            check(Some("Link=4"), Some("Conflux=1"), 2000),
            ProtocolCheck::RecommendedMissing(m) if m.to_string() == "Conflux=1"
        ));
        assert_eq!(check(Some("Link=4"), None, 2000), ProtocolCheck::Fine);
        // Older than this release: not judged.
        assert_eq!(check(Some(LIVE_REQUIRED), None, 999), ProtocolCheck::Fine);
        // Unparseable: counted as supported, as C tor does.
        assert_eq!(check(Some("Link=99"), None, 2000), ProtocolCheck::Fine);
    }
}
