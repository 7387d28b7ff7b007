//! File I/O for the `DataDirectory/keys` directory: private directories, atomic writes, and
//! reads that tell "missing" apart from "unreadable".

// The sans-IO exception in `keys` (docs/architecture.md "Sans-IO rule"): the file side, whose
// temporary names take OS randomness.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::error::KeyError;

/// Creates `dir` with mode 0700 if missing; tightens it to 0700 if it is group/world
/// accessible (C tor's `check_private_dir(.., CPD_CREATE)` does the same).
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| KeyError::io("set permissions on", dir, e))?;
            }
            Ok(())
        }
        Ok(_) => Err(KeyError::io(
            "use as a directory",
            dir,
            std::io::Error::from(ErrorKind::NotADirectory),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| KeyError::io("create directory", dir, e)),
        Err(e) => Err(KeyError::io("stat", dir, e)),
    }
}

/// Writes `contents` to `path` atomically: a mode-0600 temporary file in the same directory,
/// fsync, rename over the target, fsync the directory. A crash leaves the old or the new file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| KeyError::io("create", &tmp, e))?;
        f.write_all(contents)
            .map_err(|e| KeyError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| KeyError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| KeyError::io("rename into place", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io("fsync directory", dir, e))
}

/// A relay's `keys` directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    /// `DataDirectory/keys`, creating both directories (mode 0700) if needed.
    pub fn open_or_create(data_dir: &Path) -> Result<KeyDir, KeyError> {
        ensure_private_dir(data_dir)?;
        let dir = data_dir.join("keys");
        ensure_private_dir(&dir)?;
        Ok(KeyDir { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a file; `Ok(None)` if it does not exist. Any other failure is an error.
    pub fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::io("read", path, e)),
        }
    }

    /// Like [`read`](Self::read) but an empty file also counts as missing, as C tor treats
    /// RSA and curve25519 key files (`FN_EMPTY`).
    pub fn read_nonempty(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
        Ok(self.read(name)?.filter(|v| !v.is_empty()))
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> Result<(), KeyError> {
        write_atomic(&self.path(name), contents)
    }

    /// Renames `from` to `to` within the directory (used to keep the previous onion keys).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), KeyError> {
        fs::rename(self.path(from), self.path(to))
            .map_err(|e| KeyError::io("rename", self.path(from), e))?;
        sync_dir(&self.dir)
    }

    /// Removes a file if it exists.
    pub fn remove(&self, name: &str) -> Result<(), KeyError> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(KeyError::io("remove", self.path(name), e)),
        }
    }

    /// Last modification time of a file, if it exists.
    pub fn modified(&self, name: &str) -> Result<Option<SystemTime>, KeyError> {
        match fs::metadata(self.path(name)) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::io("stat", self.path(name), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_modes() {
        let base = std::env::temp_dir().join(format!(
            "fors-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let kd = KeyDir::open_or_create(&base.join("data")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&base.join("data")), 0o700);
        assert_eq!(mode(&base.join("data/keys")), 0o700);
        kd.write("k", b"one").unwrap();
        kd.write("k", b"two").unwrap();
        assert_eq!(&kd.read("k").unwrap().unwrap()[..], b"two");
        assert_eq!(mode(&kd.path("k")), 0o600);
        assert!(kd.read("missing").unwrap().is_none());
        kd.write("empty", b"").unwrap();
        assert!(kd.read_nonempty("empty").unwrap().is_none());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(base.join("data/keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A loose directory gets tightened.
        fs::set_permissions(base.join("data"), fs::Permissions::from_mode(0o755)).unwrap();
        KeyDir::open_or_create(&base.join("data")).unwrap();
        assert_eq!(mode(&base.join("data")), 0o700);
        fs::remove_dir_all(&base).unwrap();
    }
}
