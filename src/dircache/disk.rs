//! The directory cache on disk, under `DataDirectory/dircache/`, so a restarted cache serves
//! at once instead of fetching everything again (C keeps `cached-consensus`,
//! `cached-microdesc-consensus`, `cached-certs`, `cached-microdescs` and
//! `cached-descriptors` in its DataDirectory; the same names are used here).
//!
//! Each file is the concatenation of the documents as served, written whole and atomically
//! (a temporary file, `fsync`, then `rename`), so a crash leaves the old file or the new one.
//! Nothing read back is trusted: [`load`] passes every document through the checks a
//! fetched one passes ([`super::mirror::Mirror`]'s `load_*`), in the order that makes them
//! checkable (certificates, then the consensuses, then what they list).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rand::Rng;
use thiserror::Error;

use super::mirror::Mirror;
use super::store::{ConsensusFlavor, DirStore, DocKind};

/// The subdirectory of the DataDirectory.
pub const DIR_NAME: &str = "dircache";
/// Files larger than this are not read (four times the largest bound of the store).
pub const MAX_FILE_SIZE: u64 = 640 << 20;

/// Why the cache could not be saved or read.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the {max}-byte limit")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file that holds `kind` (a consensus: the one of `flavor`).
fn file_name(kind: DocKind, flavor: ConsensusFlavor) -> &'static str {
    match (kind, flavor) {
        (DocKind::Consensus, ConsensusFlavor::Ns) => "cached-consensus",
        (DocKind::Consensus, ConsensusFlavor::Microdesc) => "cached-microdesc-consensus",
        (DocKind::Cert, _) => "cached-certs",
        (DocKind::Microdesc, _) => "cached-microdescs",
        (DocKind::ServerDescriptor, _) => "cached-descriptors",
    }
}

/// `DataDirectory/dircache`.
pub fn cache_dir(data_directory: &Path) -> PathBuf {
    data_directory.join(DIR_NAME)
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, parts: &[Arc<[u8]>]) -> Result<(), DiskError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    for p in parts {
        f.write_all(p).map_err(io_err(&tmp))?;
    }
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Saves the documents of `kinds` from `store` into `dir` (created, mode 0700). Callers
/// holding the store's lock use [`collect`] under it and [`write_files`] after instead.
pub fn save(dir: &Path, store: &DirStore, kinds: &HashSet<DocKind>) -> Result<(), DiskError> {
    write_files(dir, collect(store, kinds))
}

/// The copied document pointers of [`save`], written without the store's lock.
pub type SaveJob = Vec<(&'static str, Vec<Arc<[u8]>>)>;

/// [`save`] in two steps: [`collect`] under the lock, [`write_files`] after.
pub fn collect(store: &DirStore, kinds: &HashSet<DocKind>) -> SaveJob {
    let mut jobs: SaveJob = Vec::new();
    for &kind in kinds {
        match kind {
            DocKind::Consensus => {
                for f in [ConsensusFlavor::Ns, ConsensusFlavor::Microdesc] {
                    if let Some(c) = store.consensus(f) {
                        jobs.push((file_name(kind, f), vec![c.body.clone()]));
                    }
                }
            }
            DocKind::Cert => jobs.push((
                file_name(kind, ConsensusFlavor::Ns),
                store.certs().map(|d| d.body.clone()).collect(),
            )),
            DocKind::Microdesc => jobs.push((
                file_name(kind, ConsensusFlavor::Ns),
                store.microdescs().map(|(_, d)| d.body.clone()).collect(),
            )),
            DocKind::ServerDescriptor => jobs.push((
                file_name(kind, ConsensusFlavor::Ns),
                store
                    .server_descriptors_by_digest()
                    .map(|(_, d)| d.body.clone())
                    .collect(),
            )),
        }
    }
    jobs
}

/// Writes what [`collect`] gathered into `dir` (created with mode 0700).
pub fn write_files(dir: &Path, jobs: SaveJob) -> Result<(), DiskError> {
    if jobs.is_empty() {
        return Ok(());
    }
    create_dir(dir)?;
    for (name, parts) in jobs {
        write_atomic(&dir.join(name), &parts)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), DiskError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Reads one cache file; `Ok(None)` if it does not exist.
fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
    let path = dir.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(DiskError::TooLarge {
            path,
            size: meta.len(),
            max: MAX_FILE_SIZE,
        });
    }
    std::fs::read(&path).map(Some).map_err(io_err(&path))
}

/// What [`load`] found, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub certs: usize,
    pub consensuses: usize,
    pub microdescs: usize,
    pub server_descriptors: usize,
    /// Documents that did not verify (dropped; they will be fetched again).
    pub rejected: usize,
    /// Microdescs and server descriptors the consensus in force does not list (no longer
    /// listed, or changed on disk: the digest names them): dropped.
    pub unlisted: usize,
    /// Files that could not be read or whose consensus did not verify, with the reason.
    pub problems: Vec<String>,
}

/// Loads the cache from `dir` into `mirror` (and so its store), verifying everything.
pub fn load(dir: &Path, mirror: &mut Mirror, now: SystemTime, rng: &mut impl Rng) -> LoadReport {
    let mut r = LoadReport::default();
    let get = |name: &str, r: &mut LoadReport| match read(dir, name) {
        Ok(b) => b,
        Err(e) => {
            r.problems.push(e.to_string());
            None
        }
    };
    if let Some(b) = get(file_name(DocKind::Cert, ConsensusFlavor::Ns), &mut r) {
        r.certs = mirror.load_certs(&b, now);
    }
    for f in [ConsensusFlavor::Microdesc, ConsensusFlavor::Ns] {
        if let Some(b) = get(file_name(DocKind::Consensus, f), &mut r) {
            match mirror.load_consensus(f, &b, now, rng) {
                Ok(()) => r.consensuses += 1,
                Err(e) => {
                    r.rejected += 1;
                    r.problems
                        .push(format!("{}: {e}", file_name(DocKind::Consensus, f)));
                }
            }
        }
    }
    if let Some(b) = get(file_name(DocKind::Microdesc, ConsensusFlavor::Ns), &mut r) {
        let (kept, bad, unlisted) = mirror.load_microdescs(&b);
        r.microdescs = kept;
        r.rejected += bad;
        r.unlisted += unlisted;
    }
    if let Some(b) = get(
        file_name(DocKind::ServerDescriptor, ConsensusFlavor::Ns),
        &mut r,
    ) {
        let (kept, bad, unlisted) = mirror.load_server_descriptors(&b);
        r.server_descriptors = kept;
        r.rejected += bad;
        r.unlisted += unlisted;
    }
    // Loading is not a change to save back.
    mirror.take_dirty();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("fors-dircache-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_dir(&dir).unwrap();
        let p = dir.join("cached-certs");
        write_atomic(&p, &[Arc::from(&b"one "[..]), Arc::from(&b"two"[..])]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one two");
        write_atomic(&p, &[Arc::from(&b"three"[..])]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        assert!(!dir.join("cached-certs.tmp").exists());
        assert_eq!(read(&dir, "absent").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_store_survives_a_restart_and_only_what_verifies_is_loaded() {
        use crate::dircache::mirror::tests::{filled_mirror, fixture_now, rng, trusted};
        use crate::dircache::mirror::FetchRequest;
        use crate::dircache::store::DirStore;
        let mut rng = rng();
        let m = filled_mirror(&mut rng);
        let dir = std::env::temp_dir().join(format!("fors-dircache-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let all: HashSet<DocKind> = DocKind::ALL.into_iter().collect();
        let before = m.store().read().unwrap().stats();
        save(&dir, &m.store().read().unwrap(), &all).unwrap();
        for f in [
            "cached-consensus",
            "cached-microdesc-consensus",
            "cached-certs",
            "cached-microdescs",
            "cached-descriptors",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }

        let load_fresh = |rng: &mut rand::rngs::StdRng| {
            let store = Arc::new(std::sync::RwLock::new(DirStore::new()));
            let mut m2 = Mirror::new(store.clone(), trusted());
            let r = load(&dir, &mut m2, fixture_now(), rng);
            (m2, store, r)
        };
        let (mut m2, store, r) = load_fresh(&mut rng);
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(
            (r.certs, r.consensuses, r.rejected, r.unlisted),
            (3, 2, 0, 0)
        );
        let after = store.read().unwrap().stats();
        for k in DocKind::ALL {
            assert_eq!(after.get(k).documents, before.get(k).documents, "{k:?}");
            assert_eq!(after.get(k).bytes, before.get(k).bytes, "{k:?}");
        }
        // Nothing to fetch but the certificates (re-checked once after a restart).
        assert_eq!(m2.poll(fixture_now()), [FetchRequest::Certs]);

        // A byte changed on disk in a microdesc: that one is dropped (and fetched again).
        let p = dir.join("cached-microdescs");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("ntor-onion-key ", "ntor-onion-key Z", 1)).unwrap();
        // And a consensus that no longer verifies is not loaded.
        let p = dir.join("cached-consensus");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\ns ", "\ns Guard ", 1)).unwrap();
        let (_, store, r) = load_fresh(&mut rng);
        assert_eq!(r.consensuses, 1, "{r:?}");
        assert_eq!(r.microdescs as u64, before.microdesc.documents - 1);
        assert_eq!(
            r.server_descriptors, 0,
            "no ns consensus, nothing to check them by"
        );
        assert_eq!((r.rejected, r.unlisted), (1, 1), "{r:?}");
        let s = store.read().unwrap();
        assert!(s.consensus(ConsensusFlavor::Ns).is_none());
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
