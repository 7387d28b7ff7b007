//! `PidFile`: the process id, written at start-up and removed on clean exit (as C tor's
//! `write_pidfile` / `tor_cleanup`).

use std::path::{Path, PathBuf};

/// Why the pid file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write PidFile {path:?}: {source}")]
pub struct PidFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A written pid file; [`PidFile::remove`] deletes it (only if it still holds our pid, so a
/// second instance that took it over is left alone).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes `"<pid>\n"` to `path` (replacing what was there).
    pub fn write(path: &Path) -> Result<PidFile, PidFileError> {
        let pid = std::process::id();
        std::fs::write(path, format!("{pid}\n")).map_err(|source| PidFileError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it still names this process.
    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) if s.trim() == self.pid.to_string() => std::fs::remove_file(&self.path),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_remove() {
        let dir = std::env::temp_dir().join(format!("fors-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fors.pid");
        let p = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        p.remove().unwrap();
        assert!(!path.exists());
        // Someone else's pid: left alone.
        let p = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        p.remove().unwrap();
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(PidFile::write(Path::new("/nonexistent-dir/x.pid")).is_err());
    }
}
