//! `GETINFO dir/…` (C tor control_getinfo.c `getinfo_helper_dir`): the consensuses and
//! server descriptors the directory cache holds, as a DirPort would serve them. Read from
//! the cache's store on the ControlPort thread, never from a shard.

use std::sync::Arc;

use crate::crypto::ids::RsaIdentity;
use crate::dircache::store::{ConsensusFlavor, DirStore, Document};
use crate::dircache::SharedStore;

use super::info::InfoError;

/// C tor's `ROUTER_MAX_AGE_TO_PUBLISH` (one day): `dir/server/fp/…` leaves out older
/// descriptors of other relays.
const ROUTER_MAX_AGE_TO_PUBLISH: u64 = 24 * 3600;

/// Where `GETINFO dir/…` reads from.
#[derive(Clone)]
pub struct DirInfo {
    pub store: SharedStore,
    /// Our own server descriptor, once built (`dir/server/authority`).
    pub own_descriptor: Arc<dyn Fn() -> Option<Document> + Send + Sync>,
}

impl std::fmt::Debug for DirInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirInfo")
    }
}

/// The keys, for `info/names` (C's `getinfo_items`).
pub const DIR_INFO_KEYS: &[(&str, &str)] = &[
    (
        "dir/server/*",
        "Router descriptors as retrieved from a DirPort.",
    ),
    (
        "dir/status/*",
        "v2 networkstatus docs as retrieved from a DirPort.",
    ),
    (
        "dir/status-vote/current/consensus",
        "v3 Networkstatus consensus as retrieved from a DirPort.",
    ),
    (
        "dir/status-vote/current/consensus-microdesc",
        "v3 Microdescriptor consensus as retrieved from a DirPort.",
    ),
];

/// The answer to `key` (which starts with `dir/`), at Unix time `now`. C tor answers 551
/// with its message when a known key has nothing, 552 for an unknown one.
pub fn getinfo(
    dir: Option<&DirInfo>,
    fingerprint: RsaIdentity,
    key: &str,
    now: u64,
) -> Result<String, InfoError> {
    let flavor = match key {
        "dir/status-vote/current/consensus" => Some(ConsensusFlavor::Ns),
        "dir/status-vote/current/consensus-microdesc" => Some(ConsensusFlavor::Microdesc),
        _ => None,
    };
    if let Some(flavor) = flavor {
        let body = dir.and_then(|d| {
            let s = d.store.read().unwrap_or_else(|p| p.into_inner());
            s.consensus(flavor).map(|c| c.body.clone())
        });
        return body
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| {
                InfoError::Unavailable(
                    "Could not open cached consensus. Make sure FetchUselessDescriptors is set to 1."
                        .into(),
                )
            });
    }
    // v2 networkstatus documents are gone; C tor still answers the prefix, empty.
    if key.starts_with("dir/status/") {
        return Ok(String::new());
    }
    let Some(what) = key.strip_prefix("dir/server/") else {
        return Err(InfoError::Unrecognized(key.to_string()));
    };
    let own = dir.and_then(|d| (d.own_descriptor)());
    let store = dir.map(|d| d.store.read().unwrap_or_else(|p| p.into_inner()));
    let descs = server_descriptors(store.as_deref(), own.as_ref(), fingerprint, what, now)?;
    if descs.is_empty() {
        return Err(InfoError::Unavailable("Servers unavailable".into()));
    }
    let mut out = Vec::with_capacity(descs.iter().map(|b| b.len()).sum());
    for b in &descs {
        out.extend_from_slice(b);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// C tor's `controller_get_routerdescs` for `/tor/server/<what>`.
fn server_descriptors(
    store: Option<&DirStore>,
    own: Option<&Document>,
    fingerprint: RsaIdentity,
    what: &str,
    now: u64,
) -> Result<Vec<Arc<[u8]>>, InfoError> {
    let mut out = Vec::new();
    if what == "all" {
        if let Some(s) = store {
            out.extend(s.server_descriptors().map(|d| d.body.clone()));
        }
    } else if what == "authority" {
        out.extend(own.map(|d| d.body.clone()));
    } else if let Some(list) = what.strip_prefix("d/") {
        for d in hex_digests(list) {
            if let Some(doc) = store.and_then(|s| s.server_descriptor_by_digest(&d)) {
                out.push(doc.body.clone());
            }
        }
    } else if let Some(list) = what.strip_prefix("fp/") {
        let cutoff = now.saturating_sub(ROUTER_MAX_AGE_TO_PUBLISH);
        for d in hex_digests(list) {
            let id = RsaIdentity(d);
            if id == fingerprint {
                out.extend(own.map(|d| d.body.clone()));
            } else if let Some(doc) = store.and_then(|s| s.server_descriptor_by_id(&id)) {
                if doc.published > cutoff {
                    out.push(doc.body.clone());
                }
            }
        }
    } else {
        return Err(InfoError::Unavailable("Key not recognized".into()));
    }
    Ok(out)
}

/// C tor's `dir_split_resource_into_fingerprints` with `DSR_HEX|DSR_SORT_UNIQ`: `+`-separated
/// hex SHA-1 digests, a `.z` on the last one dropped, ones of the wrong length or not hex
/// skipped, sorted and without repeats.
fn hex_digests(list: &str) -> Vec<[u8; 20]> {
    let n = list.split('+').count();
    let mut out: Vec<[u8; 20]> = list
        .split('+')
        .enumerate()
        .map(|(i, s)| {
            if i + 1 == n && s.len() > 2 {
                s.strip_suffix(".z").unwrap_or(s)
            } else {
                s
            }
        })
        .filter(|s| s.len() == 40)
        .filter_map(|s| crate::util::hex::decode(s)?.try_into().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;

    fn doc(body: &str, published: u64) -> Document {
        Document {
            body: Arc::from(body.as_bytes()),
            published,
        }
    }

    #[test]
    fn hex_lists_as_c_tor_splits_them() {
        let a = "AA".repeat(20);
        let b = "0b".repeat(20);
        let l = format!("{a}+{b}+zz+{a}+{}.z", "01".repeat(20));
        assert_eq!(
            hex_digests(&l),
            vec![[0x01; 20], [0x0b; 20], [0xaa; 20]],
            "sorted, unique, short and non-hex skipped, .z dropped"
        );
        assert!(hex_digests("").is_empty());
        assert!(hex_digests(&"g".repeat(40)).is_empty());
    }

    #[test]
    fn answers_and_errors_as_c_tor() {
        let me = RsaIdentity([7; 20]);
        let now = 1_000_000;
        // Without a store or descriptor: C tor's 551 messages; unknown keys 552.
        let e = getinfo(None, me, "dir/status-vote/current/consensus", now).unwrap_err();
        assert!(
            matches!(e, InfoError::Unavailable(m) if m.starts_with("Could not open cached consensus"))
        );
        assert_eq!(getinfo(None, me, "dir/status/all", now), Ok(String::new()));
        assert_eq!(
            getinfo(None, me, "dir/server/authority", now),
            Err(InfoError::Unavailable("Servers unavailable".into()))
        );
        assert_eq!(
            getinfo(None, me, "dir/server/bogus", now),
            Err(InfoError::Unavailable("Key not recognized".into()))
        );
        assert!(matches!(
            getinfo(None, me, "dir/nothing", now),
            Err(InfoError::Unrecognized(_))
        ));

        let dir = DirInfo {
            store: Arc::new(RwLock::new(DirStore::new())),
            own_descriptor: Arc::new(|| Some(doc("router me\n", 5))),
        };
        assert_eq!(
            getinfo(Some(&dir), me, "dir/server/authority", now).unwrap(),
            "router me\n"
        );
        // Our own fingerprint answers our descriptor whatever its age.
        assert_eq!(
            getinfo(
                Some(&dir),
                me,
                &format!("dir/server/fp/{}", "07".repeat(20)),
                now
            )
            .unwrap(),
            "router me\n"
        );

        // From the store: by digest, by fingerprint (not older than a day), all; and the
        // consensus of each flavour.
        {
            let mut s = dir.store.write().unwrap();
            assert!(s.insert_server_descriptor(
                RsaIdentity([1; 20]),
                [0x11; 20],
                doc("router a\n", now - 60)
            ));
            assert!(s.insert_server_descriptor(
                RsaIdentity([2; 20]),
                [0x22; 20],
                doc("router b\n", now - 2 * 86400)
            ));
            s.set_consensus(crate::dircache::store::ConsensusDoc {
                body: Arc::from(&b"network-status-version 3 microdesc\n"[..]),
                flavor: ConsensusFlavor::Microdesc,
                valid_after: now,
                fresh_until: now + 3600,
                valid_until: now + 3 * 3600,
                signers: vec![],
                sha3_digest: [3; 32],
                try_diff_newer_than: crate::dircache::store::TRY_DIFF_DEFAULT_SECS,
            });
        }
        let q = |k: String| getinfo(Some(&dir), me, &k, now);
        assert_eq!(
            q(format!(
                "dir/server/d/{}+{}",
                "22".repeat(20),
                "11".repeat(20)
            ))
            .unwrap(),
            "router a\nrouter b\n"
        );
        assert_eq!(
            q(format!("dir/server/fp/{}", "01".repeat(20))).unwrap(),
            "router a\n"
        );
        assert_eq!(
            q(format!("dir/server/fp/{}", "02".repeat(20))),
            Err(InfoError::Unavailable("Servers unavailable".into())),
            "a descriptor older than ROUTER_MAX_AGE_TO_PUBLISH is left out"
        );
        let all = q("dir/server/all".into()).unwrap();
        assert!(all.contains("router a\n") && all.contains("router b\n"));
        assert_eq!(
            q("dir/status-vote/current/consensus-microdesc".into()).unwrap(),
            "network-status-version 3 microdesc\n"
        );
        assert!(q("dir/status-vote/current/consensus".into()).is_err());
    }
}
