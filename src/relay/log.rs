//! A small logger for the daemon, configured by the torrc's `Log` lines (tor-manual "Log").
//!
//! Lines look like C tor's: `Nov 24 21:00:00.000 [notice] message`. Timestamps are UTC (C tor
//! uses local time; Fors has no time-zone database and systemd's journal adds its own).
//! Destinations: stdout, stderr, a file (appended; reopened on SIGHUP so logrotate works), or
//! syslog (`/dev/log`). A message is formatted once and written to every destination whose
//! severity range covers it.
//!
//! Shards may log, but only rarely (start-up, errors): the severity check is one relaxed
//! atomic load, and only an enabled message takes the lock.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{LogDestination, LogSeverity, SafeLogging};

/// Why a log destination could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {path:?}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach syslog at /dev/log: {0}")]
    Syslog(std::io::Error),
}

enum Sink {
    Stdout,
    Stderr,
    File(File),
    Syslog(UnixDatagram),
}

struct Route {
    min: LogSeverity,
    max: LogSeverity,
    sink: Sink,
}

struct Logger {
    routes: Vec<Route>,
}

static LOGGER: Mutex<Option<Logger>> = Mutex::new(None);
/// Least severe level any route takes; `u8::MAX` = nothing configured (stdout, notice).
static MIN_ENABLED: AtomicU8 = AtomicU8::new(u8::MAX);

/// `SafeLogging` in force (tor-manual "SafeLogging"); the default scrubs every address, so
/// nothing logged before the torrc is read can show a client's address.
static SAFE_LOGGING: AtomicU8 = AtomicU8::new(SAFE_ALL);
const SAFE_OFF: u8 = 0;
const SAFE_ALL: u8 = 1;
const SAFE_RELAY: u8 = 2;

/// Applies `SafeLogging` (at start-up and on SIGHUP). Log files and controller log events
/// are both fed by [`log`], so one setting covers both.
pub fn set_safe_logging(mode: SafeLogging) {
    let v = match mode {
        SafeLogging::Off => SAFE_OFF,
        SafeLogging::All => SAFE_ALL,
        SafeLogging::Relay => SAFE_RELAY,
    };
    SAFE_LOGGING.store(v, Ordering::Relaxed);
}

/// `ProtocolWarnings` in force: whether peers' protocol violations are logged at warn (1)
/// or info (0, the default), as C tor's `protocol_warning_severity_level` does.
static PROTOCOL_WARNINGS: AtomicBool = AtomicBool::new(false);

/// Applies `ProtocolWarnings` (at start-up and on SIGHUP).
pub fn set_protocol_warnings(on: bool) {
    PROTOCOL_WARNINGS.store(on, Ordering::Relaxed);
}

/// The severity of a line about a peer's protocol violation (C tor `LOG_PROTOCOL_WARN`):
/// warn under `ProtocolWarnings 1`, info under 0. Log such lines with
/// [`log_protocol_warn!`], and rate-limit them: a peer controls how often it breaks a rule.
pub fn protocol_warn_severity() -> LogSeverity {
    if PROTOCOL_WARNINGS.load(Ordering::Relaxed) {
        LogSeverity::Warn
    } else {
        LogSeverity::Info
    }
}

/// `LogTimeGranularity` in milliseconds (C's default, 1 second, until the torrc is read).
static GRANULARITY_MS: AtomicU64 = AtomicU64::new(1000);

/// Applies `LogTimeGranularity` (at start-up and on SIGHUP).
pub fn set_time_granularity(d: std::time::Duration) {
    GRANULARITY_MS.store((d.as_millis() as u64).max(1), Ordering::Relaxed);
}

/// What C tor prints in place of a scrubbed address.
pub const SCRUBBED: &str = "[scrubbed]";

/// An address for a log line, shown or `[scrubbed]` by `SafeLogging` when formatted.
pub struct Scrubbed<T> {
    value: T,
    client: bool,
}

/// An address that may identify a client or a client's destination: a channel peer that
/// has not proven a relay identity, an exit stream's target, a hostname it asked for.
/// Scrubbed unless `SafeLogging 0`: what C tor logs with `safe_str`, which scrubs under `1`
/// and `relay` (everything a relay logs about others' traffic).
pub fn client_addr<T: fmt::Display>(value: T) -> Scrubbed<T> {
    Scrubbed {
        value,
        client: true,
    }
}

/// A relay's (or any other non-client) address: scrubbed only under `SafeLogging 1`
/// (C tor's `safe_str_client` level: scrubbed under `1` only).
pub fn relay_addr<T: fmt::Display>(value: T) -> Scrubbed<T> {
    Scrubbed {
        value,
        client: false,
    }
}

impl<T: fmt::Display> fmt::Display for Scrubbed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scrub = match SAFE_LOGGING.load(Ordering::Relaxed) {
            SAFE_OFF => false,
            SAFE_RELAY => self.client,
            _ => true,
        };
        if scrub {
            f.write_str(SCRUBBED)
        } else {
            self.value.fmt(f)
        }
    }
}

/// Messages kept for the ControlPort's log events (control-spec §4.1.5): a bounded queue
/// filled by [`log`] and drained by the ControlPort thread; when full, the oldest message is
/// dropped and counted, so a stalled controller never blocks or grows a logging thread.
struct EventTap {
    queue: VecDeque<LogEvent>,
    capacity: usize,
    dropped: u64,
}

/// One message for the ControlPort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub severity: LogSeverity,
    pub message: String,
}

static TAP: Mutex<Option<EventTap>> = Mutex::new(None);
/// Least severe level the tap takes; `u8::MAX` = no tap.
static TAP_MIN: AtomicU8 = AtomicU8::new(u8::MAX);

/// Starts (or changes) collecting messages of `min` and above for the ControlPort, keeping
/// at most `capacity`; `None` stops collecting and drops what is queued.
pub fn set_event_tap(min: Option<LogSeverity>, capacity: usize) {
    let mut guard = TAP.lock().unwrap_or_else(|p| p.into_inner());
    match min {
        None => {
            *guard = None;
            TAP_MIN.store(u8::MAX, Ordering::Relaxed);
        }
        Some(min) => {
            let tap = guard.get_or_insert_with(|| EventTap {
                queue: VecDeque::new(),
                capacity,
                dropped: 0,
            });
            tap.capacity = capacity.max(1);
            TAP_MIN.store(rank(min), Ordering::Relaxed);
        }
    }
}

/// Moves the queued messages into `out`; returns how many were dropped (queue full) since
/// the last call.
pub fn drain_events(out: &mut Vec<LogEvent>) -> u64 {
    let mut guard = TAP.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        None => 0,
        Some(t) => {
            out.extend(t.queue.drain(..));
            std::mem::take(&mut t.dropped)
        }
    }
}

fn tap(sev: LogSeverity, args: &fmt::Arguments<'_>) {
    if rank(sev) < TAP_MIN.load(Ordering::Relaxed) {
        return;
    }
    let mut guard = TAP.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = guard.as_mut() {
        if t.queue.len() >= t.capacity {
            t.queue.pop_front();
            t.dropped += 1;
        }
        t.queue.push_back(LogEvent {
            severity: sev,
            message: args.to_string(),
        });
    }
}

fn rank(s: LogSeverity) -> u8 {
    s as u8
}

/// C tor's severity words, as they appear between brackets.
pub fn severity_name(s: LogSeverity) -> &'static str {
    match s {
        LogSeverity::Debug => "debug",
        LogSeverity::Info => "info",
        LogSeverity::Notice => "notice",
        LogSeverity::Warn => "warn",
        LogSeverity::Err => "err",
    }
}

/// Opens every destination first and swaps the routes in only if all opened, so a bad `Log`
/// line on reload leaves the old logging in place.
pub fn install(logs: &[(LogSeverity, LogSeverity, LogDestination)]) -> Result<(), LogError> {
    let mut routes = Vec::with_capacity(logs.len());
    for (min, max, dest) in logs {
        let sink = match dest {
            LogDestination::Stdout => Sink::Stdout,
            LogDestination::Stderr => Sink::Stderr,
            LogDestination::File(path) => Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LogError::File {
                        path: path.clone(),
                        source,
                    })?,
            ),
            LogDestination::Syslog => {
                let s = UnixDatagram::unbound().map_err(LogError::Syslog)?;
                s.connect("/dev/log").map_err(LogError::Syslog)?;
                Sink::Syslog(s)
            }
        };
        routes.push(Route {
            min: *min,
            max: *max,
            sink,
        });
    }
    let min = routes.iter().map(|r| rank(r.min)).min().unwrap_or(u8::MAX);
    let mut guard = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
    *guard = Some(Logger { routes });
    MIN_ENABLED.store(min, Ordering::Relaxed);
    Ok(())
}

/// Whether a message of this severity would go anywhere (cheap; use before building
/// expensive messages).
pub fn enabled(sev: LogSeverity) -> bool {
    routed(sev) || rank(sev) >= TAP_MIN.load(Ordering::Relaxed)
}

/// Whether a message of this severity goes to a configured destination.
fn routed(sev: LogSeverity) -> bool {
    let min = MIN_ENABLED.load(Ordering::Relaxed);
    if min == u8::MAX {
        return sev >= LogSeverity::Notice;
    }
    rank(sev) >= min
}

/// Logs one message. Before [`install`], notice and above go to stdout.
pub fn log(sev: LogSeverity, args: fmt::Arguments<'_>) {
    tap(sev, &args);
    if !routed(sev) {
        return;
    }
    let line = format!(
        "{} [{}] {}\n",
        timestamp(coarse(SystemTime::now())),
        severity_name(sev),
        args
    );
    let mut guard = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        None => {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
        Some(logger) => {
            for r in logger.routes.iter_mut() {
                if sev < r.min || sev > r.max {
                    continue;
                }
                // A failing destination cannot be reported anywhere better; drop the line.
                let _ = match &mut r.sink {
                    Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
                    Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
                    Sink::File(f) => f.write_all(line.as_bytes()),
                    Sink::Syslog(s) => s.send(syslog_datagram(sev, &line).as_bytes()).map(|_| ()),
                };
            }
        }
    }
}

/// RFC 3164-style datagram for the local syslog daemon: facility daemon (3), the severity
/// mapped onto syslog's, no timestamp (the daemon adds one).
fn syslog_datagram(sev: LogSeverity, line: &str) -> String {
    let level = match sev {
        LogSeverity::Debug => 7,
        LogSeverity::Info => 6,
        LogSeverity::Notice => 5,
        LogSeverity::Warn => 4,
        LogSeverity::Err => 3,
    };
    // Drop our own timestamp: everything up to the first '['.
    let msg = line.find('[').map_or(line, |i| &line[i..]);
    format!(
        "<{}>fors[{}]: {}",
        3 * 8 + level,
        std::process::id(),
        msg.trim_end()
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `t` rounded down to `LogTimeGranularity`.
fn coarse(t: SystemTime) -> SystemTime {
    let g = GRANULARITY_MS.load(Ordering::Relaxed).max(1);
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    UNIX_EPOCH + std::time::Duration::from_millis(ms - ms % g)
}

/// `Nov 24 21:00:00.000` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (_, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{} {:02} {:02}:{:02}:{:02}.{:03}",
        MONTHS[(month - 1) as usize],
        day,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_millis()
    )
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days` algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

macro_rules! log_at {
    ($sev:ident, $($arg:tt)*) => {
        $crate::relay::log::log($crate::config::LogSeverity::$sev, format_args!($($arg)*))
    };
}
macro_rules! log_debug { ($($arg:tt)*) => { $crate::relay::log::log_at!(Debug, $($arg)*) }; }
macro_rules! log_info { ($($arg:tt)*) => { $crate::relay::log::log_at!(Info, $($arg)*) }; }
macro_rules! log_notice { ($($arg:tt)*) => { $crate::relay::log::log_at!(Notice, $($arg)*) }; }
macro_rules! log_warn { ($($arg:tt)*) => { $crate::relay::log::log_at!(Warn, $($arg)*) }; }
macro_rules! log_err { ($($arg:tt)*) => { $crate::relay::log::log_at!(Err, $($arg)*) }; }
/// A peer's protocol violation, at [`protocol_warn_severity`] (C tor `LOG_PROTOCOL_WARN`).
macro_rules! log_protocol_warn {
    ($($arg:tt)*) => {
        $crate::relay::log::log($crate::relay::log::protocol_warn_severity(), format_args!($($arg)*))
    };
}
#[allow(unused_imports)]
pub(crate) use {log_at, log_debug, log_err, log_info, log_notice, log_protocol_warn, log_warn};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_known_dates() {
        // 2026-11-24 21:00:00.123 UTC
        let t = UNIX_EPOCH + Duration::from_millis(1_795_554_000_123);
        assert_eq!(timestamp(t), "Nov 24 21:00:00.123");
        assert_eq!(timestamp(UNIX_EPOCH), "Jan 01 00:00:00.000");
        // Leap day 2024-02-29.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn scrubbing_follows_safe_logging() {
        // The only test that changes the global mode; it restores the default.
        let ip: std::net::IpAddr = "127.0.0.5".parse().unwrap();
        let show = |m| {
            set_safe_logging(m);
            (client_addr(ip).to_string(), relay_addr(ip).to_string())
        };
        assert_eq!(show(SafeLogging::All), (SCRUBBED.into(), SCRUBBED.into()));
        assert_eq!(
            show(SafeLogging::Relay),
            (SCRUBBED.into(), "127.0.0.5".into())
        );
        assert_eq!(
            show(SafeLogging::Off),
            ("127.0.0.5".into(), "127.0.0.5".into())
        );
        set_safe_logging(SafeLogging::default());
    }

    #[test]
    fn protocol_warning_severity_follows_the_option() {
        // C tor: `ProtocolWarnings 1` → LOG_WARN, 0 → LOG_INFO. The only test that changes
        // the global option; it restores the default.
        set_protocol_warnings(true);
        assert_eq!(protocol_warn_severity(), LogSeverity::Warn);
        set_protocol_warnings(false);
        assert_eq!(protocol_warn_severity(), LogSeverity::Info);
    }

    #[test]
    fn timestamps_are_rounded_to_the_granularity() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_554_000_123);
        set_time_granularity(Duration::from_millis(100));
        assert_eq!(timestamp(coarse(t)), "Nov 24 21:00:00.100");
        // C's default, restored for the other tests.
        set_time_granularity(Duration::from_secs(1));
        assert_eq!(timestamp(coarse(t)), "Nov 24 21:00:00.000");
    }

    #[test]
    fn syslog_format() {
        let d = syslog_datagram(LogSeverity::Warn, "Nov 24 21:00:00.000 [warn] x y\n");
        assert!(d.starts_with("<28>fors["), "{d}");
        assert!(d.ends_with("]: [warn] x y"), "{d}");
    }

    #[test]
    fn event_tap_is_bounded_and_drops_oldest() {
        set_event_tap(Some(LogSeverity::Info), 3);
        for i in 0..5 {
            log(LogSeverity::Info, format_args!("tap test {i}"));
        }
        log(LogSeverity::Debug, format_args!("tap test debug"));
        assert!(enabled(LogSeverity::Info));
        let mut out = Vec::new();
        let dropped = drain_events(&mut out);
        // Other tests may log concurrently; ours are the last three of five.
        let ours: Vec<&str> = out
            .iter()
            .filter(|e| e.message.starts_with("tap test"))
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(ours, ["tap test 2", "tap test 3", "tap test 4"]);
        assert!(dropped >= 2);
        set_event_tap(None, 0);
        log(LogSeverity::Warn, format_args!("tap test after"));
        out.clear();
        assert_eq!(drain_events(&mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn bad_log_file_names_path_and_keeps_old_routes() {
        let e = install(&[(
            LogSeverity::Notice,
            LogSeverity::Err,
            LogDestination::File("/nonexistent-dir/x.log".into()),
        )])
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x.log"), "{e}");
    }
}
