//! `Log` lines: `Log minSeverity[-maxSeverity] stdout|stderr|syslog|file PATH` (tor-manual
//! "Log"). Fors keeps the raw line too; per-domain selectors (`[handshake]info`) are refused.

use super::error::Location;
use std::path::PathBuf;

/// Log severities, least severe first (C tor's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogSeverity {
    Debug,
    Info,
    Notice,
    Warn,
    Err,
}

impl LogSeverity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => Self::Debug,
            "info" => Self::Info,
            "notice" => Self::Notice,
            "warn" => Self::Warn,
            "err" => Self::Err,
            _ => return None,
        })
    }
}

/// `SafeLogging 0|1|relay` (tor-manual "SafeLogging"): which addresses log lines and
/// controller log events show as `[scrubbed]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SafeLogging {
    /// `0`: no scrubbing.
    Off,
    /// `1` (the default): every address is scrubbed, relays' included.
    #[default]
    All,
    /// `relay`: addresses that could identify a client or its destination are scrubbed;
    /// relays' addresses are shown.
    Relay,
}

impl SafeLogging {
    /// C tor compares the value case-insensitively with "0", "1" and "relay".
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "0" => Some(Self::Off),
            "1" => Some(Self::All),
            "relay" => Some(Self::Relay),
            _ => None,
        }
    }
}

/// Where log messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    Stderr,
    Syslog,
    File(PathBuf),
}

/// One `Log` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The value as written.
    pub raw: String,
    /// Messages from `min` up to and including `max` are logged.
    pub min: LogSeverity,
    pub max: LogSeverity,
    pub destination: LogDestination,
    pub location: Location,
}

/// Parses one `Log` value.
pub fn parse_log(value: &str, location: &Location) -> Result<LogConfig, String> {
    let mut parts = value.trim().splitn(3, [' ', '\t']);
    let sev = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("missing severity")?;
    if sev.starts_with('[') {
        return Err("per-domain log selectors ([domain]severity) are not supported by Fors".into());
    }
    let (min_s, max_s) = sev.split_once('-').unwrap_or((sev, "err"));
    let min = LogSeverity::parse(min_s).ok_or_else(|| format!("unknown severity {min_s:?}"))?;
    let max = LogSeverity::parse(max_s).ok_or_else(|| format!("unknown severity {max_s:?}"))?;
    if min > max {
        return Err(format!("severity range {sev:?} is empty"));
    }
    let rest: Vec<&str> = parts.map(str::trim).filter(|s| !s.is_empty()).collect();
    let dest = rest.first().copied().unwrap_or("stdout");
    let destination = match dest.to_ascii_lowercase().as_str() {
        "stdout" => LogDestination::Stdout,
        "stderr" => LogDestination::Stderr,
        "syslog" => LogDestination::Syslog,
        "file" => LogDestination::File(PathBuf::from(*rest.get(1).ok_or("\"file\" needs a path")?)),
        other => return Err(format!("unknown log destination {other:?}")),
    };
    if !matches!(destination, LogDestination::File(_)) && rest.len() > 1 {
        return Err(format!("unexpected text after {dest:?}"));
    }
    Ok(LogConfig {
        raw: value.to_string(),
        min,
        max,
        destination,
        location: location.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<LogConfig, String> {
        parse_log(s, &Location::new("t", 1))
    }

    #[test]
    fn forms() {
        let l = p("notice stdout").unwrap();
        assert_eq!(
            (l.min, l.max, l.destination),
            (
                LogSeverity::Notice,
                LogSeverity::Err,
                LogDestination::Stdout
            )
        );
        let l = p("info file /var/log/fors/info log.txt").unwrap();
        assert_eq!(
            l.destination,
            LogDestination::File("/var/log/fors/info log.txt".into())
        );
        let l = p("debug-info stderr").unwrap();
        assert_eq!((l.min, l.max), (LogSeverity::Debug, LogSeverity::Info));
        assert_eq!(
            p("warn SYSLOG").unwrap().destination,
            LogDestination::Syslog
        );
        assert_eq!(p("err").unwrap().destination, LogDestination::Stdout);
    }

    #[test]
    fn safe_logging_values() {
        assert_eq!(SafeLogging::default(), SafeLogging::All);
        assert_eq!(SafeLogging::parse("0"), Some(SafeLogging::Off));
        assert_eq!(SafeLogging::parse("1"), Some(SafeLogging::All));
        assert_eq!(SafeLogging::parse("Relay"), Some(SafeLogging::Relay));
        assert_eq!(SafeLogging::parse("stuffy"), None);
        assert_eq!(SafeLogging::parse("2"), None);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "loud stdout",
            "notice-info stdout",
            "notice file",
            "notice android",
            "[handshake]debug stdout",
            "notice stdout extra",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }
}
