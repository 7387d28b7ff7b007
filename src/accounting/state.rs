//! The `DataDirectory/state` file in C tor's format (`app/config/statefile.c`): `Key value`
//! lines, `#` comments. Fors reads and writes the accounting keys under C's names, so a C
//! tor relay's usage carries over, and keeps every other line (guards, C's own keys) as it
//! found it. A malformed line is an error naming it: the file is never silently replaced.
//!
//! Value formats as C writes them: memory units and intervals as plain integers (units are
//! accepted on reading, as C's parser accepts them), times as `YYYY-MM-DD HH:MM:SS` UTC.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::time::{format_iso, parse_iso};
use super::StoredAccounting;
use crate::config::units::{parse_interval, parse_memunit};

/// The state file's name inside the data directory (C `get_datadir_fname("state")`).
pub const STATE_FILE_NAME: &str = "state";

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// The accounting keys (C `or_state_t` names) in the order C writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    BytesRead,
    BytesWritten,
    ExpectedUsage,
    IntervalStart,
    SecondsActive,
    SecondsToSoftLimit,
    SoftLimitHitAt,
    BytesAtSoftLimit,
}

const KEYS: &[(&str, Key)] = &[
    ("AccountingBytesReadInInterval", Key::BytesRead),
    ("AccountingBytesWrittenInInterval", Key::BytesWritten),
    ("AccountingExpectedUsage", Key::ExpectedUsage),
    ("AccountingIntervalStart", Key::IntervalStart),
    ("AccountingSecondsActive", Key::SecondsActive),
    ("AccountingSecondsToReachSoftLimit", Key::SecondsToSoftLimit),
    ("AccountingSoftLimitHitAt", Key::SoftLimitHitAt),
    ("AccountingBytesAtSoftLimit", Key::BytesAtSoftLimit),
];

/// Keys Fors writes itself on every save (so old values are not kept).
const REWRITTEN: &[&str] = &["LastWritten", "TorVersion"];

/// A parsed state file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateFile {
    /// Accounting values, if the file had any accounting key.
    pub accounting: Option<StoredAccounting>,
    /// Every other `Key value` line, verbatim, in file order.
    pub other: Vec<String>,
}

impl StateFile {
    /// Parses `text`; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<StateFile, StateError> {
        let mut out = StateFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |msg: String| StateError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            };
            let (key, value) = match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            if !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(err(format!("not a `Key value` line: {key:?}")));
            }
            if let Some(&(name, k)) = KEYS.iter().find(|(n, _)| n.eq_ignore_ascii_case(key)) {
                let acc = out.accounting.get_or_insert_with(StoredAccounting::default);
                let bad = |why: String| err(format!("bad {name} value {value:?}: {why}"));
                match k {
                    Key::IntervalStart | Key::SoftLimitHitAt => {
                        let t = parse_iso(value)
                            .ok_or_else(|| bad("expected YYYY-MM-DD HH:MM:SS".into()))?;
                        if k == Key::IntervalStart {
                            acc.interval_start = t;
                        } else {
                            acc.soft_limit_hit_at = t;
                        }
                    }
                    Key::SecondsActive | Key::SecondsToSoftLimit => {
                        let s = parse_interval(value).map_err(bad)?.as_secs();
                        if k == Key::SecondsActive {
                            acc.seconds_active = s;
                        } else {
                            acc.seconds_to_soft_limit = s;
                        }
                    }
                    Key::BytesRead
                    | Key::BytesWritten
                    | Key::ExpectedUsage
                    | Key::BytesAtSoftLimit => {
                        let n = parse_memunit(value).map_err(bad)?;
                        match k {
                            Key::BytesRead => acc.bytes_read = n,
                            Key::BytesWritten => acc.bytes_written = n,
                            Key::ExpectedUsage => acc.expected_usage = n,
                            _ => acc.bytes_at_soft_limit = n,
                        }
                    }
                }
            } else if !REWRITTEN.iter().any(|n| n.eq_ignore_ascii_case(key)) {
                out.other.push(line.to_string());
            }
        }
        Ok(out)
    }

    /// The file's text as of `now` (Unix seconds).
    pub fn render(&self, now: u64, version: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "# Tor state file last generated on {} UTC\n# Other times below are in UTC\n\
             # You *do not* need to edit this file.\n\n",
            format_iso(now)
        ));
        if let Some(a) = &self.accounting {
            for &(name, k) in KEYS {
                let v = match k {
                    Key::BytesRead => a.bytes_read.to_string(),
                    Key::BytesWritten => a.bytes_written.to_string(),
                    Key::ExpectedUsage => a.expected_usage.to_string(),
                    Key::IntervalStart => format_iso(a.interval_start),
                    Key::SecondsActive => a.seconds_active.to_string(),
                    Key::SecondsToSoftLimit => a.seconds_to_soft_limit.to_string(),
                    // C leaves an unset time out.
                    Key::SoftLimitHitAt if a.soft_limit_hit_at == 0 => continue,
                    Key::SoftLimitHitAt => format_iso(a.soft_limit_hit_at),
                    Key::BytesAtSoftLimit => a.bytes_at_soft_limit.to_string(),
                };
                s.push_str(&format!("{name} {v}\n"));
            }
        }
        for l in &self.other {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!("TorVersion {version}\n"));
        s.push_str(&format!("LastWritten {}\n", format_iso(now)));
        s
    }

    /// Reads `path`; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<StateFile>, StateError> {
        match std::fs::read_to_string(path) {
            Ok(text) => StateFile::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the file atomically: a temporary file in the same directory, synced, then
    /// renamed over `path`, so a crash leaves the old or the new file, never half of one.
    pub fn save(&self, path: &Path, now: u64, version: &str) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = self.render(now, version);
        // Owner-only, as C writes its state file.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C_STATE: &str = "# Tor state file last generated on Tue Oct  2 11:25:50 2026 local time
# Other times below are in UTC
# You *do not* need to edit this file.

AccountingBytesReadInInterval 40329216
AccountingBytesWrittenInInterval 2846720
AccountingExpectedUsage 1024
AccountingIntervalStart 2026-09-29 22:00:00
AccountingSecondsActive 73
AccountingSecondsToReachSoftLimit 0
AccountingBytesAtSoftLimit 0
Guard in=default rsa_id=0123456789ABCDEF0123456789ABCDEF01234567 nickname=x sampled_on=2026-09-01T00:00:00
TorVersion Tor 0.4.9.2
LastWritten 2026-10-02 11:25:50
";

    #[test]
    fn reads_c_tors_state_and_keeps_other_lines() {
        let s = StateFile::parse(C_STATE, Path::new("state")).unwrap();
        let a = s.accounting.unwrap();
        assert_eq!(a.bytes_read, 40_329_216);
        assert_eq!(a.bytes_written, 2_846_720);
        assert_eq!(a.expected_usage, 1024);
        assert_eq!(format_iso(a.interval_start), "2026-09-29 22:00:00");
        assert_eq!(a.seconds_active, 73);
        assert_eq!(a.soft_limit_hit_at, 0);
        assert_eq!(s.other.len(), 1);
        assert!(s.other[0].starts_with("Guard in=default"));
        // Round trip: same values, other lines kept, our own version and time.
        let text = s.render(1_800_000_000, "Fors test");
        assert!(text.contains("\nTorVersion Fors test\n"), "{text}");
        assert!(!text.contains("Tor 0.4.9.2"));
        assert!(!text.contains("AccountingSoftLimitHitAt"));
        let again = StateFile::parse(&text, Path::new("state")).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn units_are_accepted_as_c_accepts_them() {
        let s = StateFile::parse(
            "AccountingBytesReadInInterval 2 MB\nAccountingSecondsActive 2 hours\n",
            Path::new("state"),
        )
        .unwrap();
        let a = s.accounting.unwrap();
        assert_eq!((a.bytes_read, a.seconds_active), (2 << 20, 7200));
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let e = StateFile::parse(
            "# c\nAccountingBytesReadInInterval 5\nAccountingIntervalStart yesterday\n",
            Path::new("/d/state"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/d/state:3: bad AccountingIntervalStart"),
            "{e}"
        );
        let e = StateFile::parse("AccountingBytesReadInInterval lots\n", Path::new("state"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("state:1: bad AccountingBytesReadInInterval"),
            "{e}"
        );
        let e = StateFile::parse("x\n\"junk\" here\n", Path::new("state"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("state:2: "), "{e}");
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("fors-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE_NAME);
        assert_eq!(StateFile::load(&path).unwrap(), None);
        let s = StateFile {
            accounting: Some(StoredAccounting {
                interval_start: 1_800_000_000 - 600,
                bytes_read: 4096,
                bytes_written: 1024,
                seconds_active: 600,
                expected_usage: 7,
                seconds_to_soft_limit: 500,
                soft_limit_hit_at: 1_800_000_000 - 100,
                bytes_at_soft_limit: 3072,
            }),
            other: vec!["Guard x".into()],
        };
        s.save(&path, 1_800_000_000, "Fors test").unwrap();
        assert!(!dir.join("state.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(StateFile::load(&path).unwrap(), Some(s));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
