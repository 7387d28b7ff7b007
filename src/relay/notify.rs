//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify` units: `READY=1`
//! once the listeners are open and the keys loaded, `STATUS=` lines from the main thread's
//! one-second loop, `RELOADING=1` around a SIGHUP reload, `STOPPING=1` on the way out, and
//! `WATCHDOG=1` from a thread that pings only while every shard keeps ticking.
//!
//! The protocol: newline-separated `KEY=VALUE` assignments in one datagram to the Unix socket
//! named by `$NOTIFY_SOCKET` — a path, or an abstract name written with a leading `@`.
//! `$WATCHDOG_USEC` (with `$WATCHDOG_PID`, when set, naming this process) asks for a
//! `WATCHDOG=1` at least that often; sd_watchdog_enabled(3) advises half of it. Without
//! `$NOTIFY_SOCKET` nothing is sent and nothing else changes.
//!
//! Hand-written rather than the `sd-notify` crate: that crate connects to `$NOTIFY_SOCKET` as
//! a path, so abstract sockets (`@…`, what systemd passes to services in some containers and
//! what test harnesses use) would fail; the protocol itself is a few lines on `std`'s
//! `UnixDatagram`.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::log::{log_notice, log_warn};

/// The variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog timeout in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The process the watchdog timeout is meant for (unset: this one).
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// The per-shard counter ([`crate::metrics::shard`]) that every shard tick advances (the
/// shard copies its counters to the registry at the end of each tick).
pub const SHARD_TICKS_METRIC: &str = "ticks";

/// How often a healthy shard ticks (`shard` arms a 100 ms timeout): a shard is called stalled
/// only when it missed several ticks, whatever the watchdog period.
const SHARD_TICK: Duration = Duration::from_millis(100);
const MIN_STALL: Duration = Duration::from_millis(5 * SHARD_TICK.as_millis() as u64);

/// Why the notification socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract socket name (@NAME)")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("cannot start the watchdog thread: {0}")]
    Thread(io::Error),
}

/// One assignment of a notification message (sd_notify(3) "Well-known assignments").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State<'a> {
    /// `READY=1`: start-up (or a reload) is finished.
    Ready,
    /// `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC when the reload began, which
    /// `Type=notify-reload` requires; harmless for `Type=notify`).
    Reloading { monotonic_usec: u64 },
    /// `STOPPING=1`: shutting down.
    Stopping,
    /// `STATUS=…`: one line for `systemctl status`.
    Status(&'a str),
    /// `WATCHDOG=1`: still alive.
    Watchdog,
}

/// The datagram for `states`: one `KEY=VALUE` line each. A newline inside a status would
/// start a new assignment, so it becomes a space.
pub fn message(states: &[State<'_>]) -> String {
    let mut m = String::new();
    for s in states {
        match s {
            State::Ready => m.push_str("READY=1\n"),
            State::Reloading { monotonic_usec } => {
                m.push_str(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\n"))
            }
            State::Stopping => m.push_str("STOPPING=1\n"),
            State::Status(text) => {
                m.push_str("STATUS=");
                m.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
                m.push('\n');
            }
            State::Watchdog => m.push_str("WATCHDOG=1\n"),
        }
    }
    m
}

/// `$NOTIFY_SOCKET`'s value as a socket address: an absolute path, or `@NAME` for the
/// abstract name NAME.
pub fn parse_address(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bytes = value.as_bytes();
    let bad = || NotifyError::BadAddress(value.to_string_lossy().into_owned());
    let io = |source| NotifyError::Io {
        addr: value.to_string_lossy().into_owned(),
        source,
    };
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(value).map_err(io),
        Some(b'@') if bytes.len() > 1 => SocketAddr::from_abstract_name(&bytes[1..]).map_err(io),
        _ => Err(bad()),
    }
}

/// The period of the `WATCHDOG=1` pings asked for by `WATCHDOG_USEC`/`WATCHDOG_PID`'s values,
/// for the process `own_pid`: half the timeout (sd_watchdog_enabled(3)). `Ok(None)`: no
/// watchdog (unset, 0, or meant for another process); `Err`: a value that is not a number,
/// as a warning.
pub fn watchdog_period(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    let usec: u64 = usec
        .trim()
        .parse()
        .map_err(|_| format!("{WATCHDOG_USEC_ENV}={usec:?} is not a number: no watchdog."))?;
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("{WATCHDOG_PID_ENV}={pid:?} is not a number: no watchdog."))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    if usec == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_micros(usec / 2)))
}

/// CLOCK_MONOTONIC in microseconds (what `MONOTONIC_USEC=` carries).
pub fn monotonic_usec() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000 + (ts.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for; `Ok(None)` when it is not set.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os(NOTIFY_SOCKET_ENV) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Notifier::to(&v).map(Some),
        }
    }

    /// A notifier sending to `$NOTIFY_SOCKET`-style address `value`.
    pub fn to(value: &OsStr) -> Result<Notifier, NotifyError> {
        let addr = parse_address(value)?;
        let name = value.to_string_lossy().into_owned();
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Io {
            addr: name.clone(),
            source,
        })?;
        Ok(Notifier { socket, addr, name })
    }

    /// The address, as `$NOTIFY_SOCKET` wrote it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message; the caller decides how loudly a failure is reported.
    pub fn send(&self, states: &[State<'_>]) -> io::Result<()> {
        let m = message(states);
        let sent = self.socket.send_to_addr(m.as_bytes(), &self.addr)?;
        if sent != m.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram truncated",
            ));
        }
        Ok(())
    }

    /// Sends one message; a failure is a warning (it does not stop the relay: systemd will
    /// see the missing READY or WATCHDOG and act on it).
    pub fn send_or_warn(&self, states: &[State<'_>]) {
        if let Err(e) = self.send(states) {
            log_warn!(
                "Cannot notify the service manager on {} ({}): {e}",
                self.name,
                message(states).trim_end().replace('\n', ", ")
            );
        }
    }
}

/// Which shards are alive, from their tick counters (sans-IO: counters and time in, stalled
/// shards out). A shard whose counter has not changed for `stall_after` is stalled.
#[derive(Debug)]
pub struct ShardLiveness {
    last: Vec<u64>,
    advanced_at: Vec<Instant>,
    stall_after: Duration,
}

impl ShardLiveness {
    /// Starts watching `counters` (one per shard) at `now`.
    pub fn new(counters: &[u64], now: Instant, stall_after: Duration) -> ShardLiveness {
        ShardLiveness {
            last: counters.to_vec(),
            advanced_at: vec![now; counters.len()],
            stall_after,
        }
    }

    /// The stall limit for a watchdog pinging every `period`: one period, but never under five
    /// shard ticks (a shorter limit would call a healthy shard stalled).
    pub fn stall_limit(period: Duration) -> Duration {
        period.max(MIN_STALL)
    }

    /// Takes the counters' values at `now`; returns the shards that are stalled.
    pub fn observe(&mut self, counters: &[u64], now: Instant) -> Vec<usize> {
        let mut stalled = Vec::new();
        for (i, &c) in counters.iter().enumerate() {
            if i >= self.last.len() {
                self.last.push(c);
                self.advanced_at.push(now);
                continue;
            }
            if c != self.last[i] {
                self.last[i] = c;
                self.advanced_at[i] = now;
            } else if now.saturating_duration_since(self.advanced_at[i]) >= self.stall_after {
                stalled.push(i);
            }
        }
        stalled
    }
}

/// The watchdog thread: every period, pings `WATCHDOG=1` if every shard ticked recently.
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    stalled: Arc<AtomicUsize>,
}

impl Watchdog {
    /// Starts pinging `notifier` every `period`; `ticks` fills in each shard's tick counter.
    pub fn spawn(
        notifier: Arc<Notifier>,
        period: Duration,
        ticks: impl Fn(&mut Vec<u64>) + Send + 'static,
    ) -> Result<Watchdog, NotifyError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let stalled = Arc::new(AtomicUsize::new(0));
        let stalled_out = stalled.clone();
        let thread = std::thread::Builder::new()
            .name("fors-watchdog".into())
            .spawn(move || {
                let mut counters = Vec::new();
                ticks(&mut counters);
                let mut liveness = ShardLiveness::new(
                    &counters,
                    Instant::now(),
                    ShardLiveness::stall_limit(period),
                );
                let mut reported: Vec<usize> = Vec::new();
                let mut failing = false;
                // The first ping right away: start-up just showed every shard alive.
                let mut ping = true;
                loop {
                    if ping {
                        match notifier.send(&[State::Watchdog]) {
                            Ok(()) if failing => {
                                failing = false;
                                log_notice!("Watchdog pings reach the service manager again.");
                            }
                            Ok(()) => {}
                            Err(e) if !failing => {
                                failing = true;
                                log_warn!(
                                    "Cannot send the watchdog ping to {}: {e}",
                                    notifier.name()
                                );
                            }
                            Err(_) => {}
                        }
                    }
                    match stopped.recv_timeout(period) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    counters.clear();
                    ticks(&mut counters);
                    let now = Instant::now();
                    let stuck = liveness.observe(&counters, now);
                    stalled_out.store(stuck.len(), Ordering::Relaxed);
                    if stuck != reported {
                        if stuck.is_empty() {
                            log_notice!("Every shard is ticking again; watchdog pings resume.");
                        } else {
                            log_warn!(
                                "Shard{} {} stopped ticking (no tick for {} ms); withholding \
                                 the watchdog ping so that the service manager restarts Fors.",
                                if stuck.len() == 1 { "" } else { "s" },
                                stuck
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                ShardLiveness::stall_limit(period).as_millis()
                            );
                        }
                        reported = stuck.clone();
                    }
                    ping = stuck.is_empty();
                }
            })
            .map_err(NotifyError::Thread)?;
        Ok(Watchdog {
            stop,
            thread,
            stalled,
        })
    }

    /// How many shards the last check found stalled.
    pub fn stalled_shards(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Stops pinging and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// What the `STATUS=` line says, gathered by the main thread from the control plane's
/// gauges (never per cell).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFacts {
    pub shards: usize,
    /// Shards the watchdog found stalled (0 without a watchdog).
    pub stalled_shards: usize,
    /// `PublishServerDescriptor` is on.
    pub publishing: bool,
    pub consensus_fetches_ok: u64,
    pub consensus_fetches_failed: u64,
    pub descriptor_uploads_accepted: u64,
    pub listed_in_consensus: bool,
    /// Accounting's hibernation refuses new work.
    pub hibernating: bool,
}

/// The `STATUS=` line: shards, then bootstrap progress toward being listed.
pub fn status_line(f: &StatusFacts) -> String {
    let shards = if f.stalled_shards == 0 {
        format!(
            "{} shard{} running",
            f.shards,
            if f.shards == 1 { "" } else { "s" }
        )
    } else {
        format!("{} of {} shards stalled", f.stalled_shards, f.shards)
    };
    let directory = if f.consensus_fetches_ok == 0 {
        if f.consensus_fetches_failed == 0 {
            "bootstrapping: fetching a consensus".to_string()
        } else {
            format!(
                "bootstrapping: no consensus yet ({} fetch{} failed)",
                f.consensus_fetches_failed,
                if f.consensus_fetches_failed == 1 {
                    ""
                } else {
                    "es"
                }
            )
        }
    } else if !f.publishing {
        "consensus fetched; not publishing a descriptor (PublishServerDescriptor 0)".to_string()
    } else if f.listed_in_consensus {
        "listed in the consensus".to_string()
    } else if f.descriptor_uploads_accepted == 0 {
        "not listed in the consensus; descriptor not yet accepted by an authority".to_string()
    } else {
        "not listed in the consensus (yet); descriptor accepted".to_string()
    };
    let hibernating = if f.hibernating {
        "; hibernating (AccountingMax reached)"
    } else {
        ""
    };
    format!("{shards}; {directory}{hibernating}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(
            message(&[State::Ready, State::Status("up\nand running")]),
            "READY=1\nSTATUS=up and running\n"
        );
        assert_eq!(
            message(&[State::Reloading { monotonic_usec: 42 }]),
            "RELOADING=1\nMONOTONIC_USEC=42\n"
        );
        assert_eq!(
            message(&[State::Stopping, State::Watchdog]),
            "STOPPING=1\nWATCHDOG=1\n"
        );
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        let p = parse_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = parse_address(OsStr::new("@fors/notify")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"fors/notify"[..]));
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert!(
                matches!(
                    parse_address(OsStr::new(bad)),
                    Err(NotifyError::BadAddress(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn watchdog_period_is_half_the_timeout_for_this_process() {
        let s = |v: u64| Ok(Some(Duration::from_micros(v)));
        assert_eq!(watchdog_period(None, None, 7), Ok(None));
        assert_eq!(watchdog_period(Some("3000000"), None, 7), s(1_500_000));
        assert_eq!(watchdog_period(Some("3000000"), Some("7"), 7), s(1_500_000));
        assert_eq!(watchdog_period(Some("3000000"), Some("8"), 7), Ok(None));
        assert_eq!(watchdog_period(Some("0"), None, 7), Ok(None));
        assert!(watchdog_period(Some("soon"), None, 7).is_err());
        assert!(watchdog_period(Some("1000"), Some("me"), 7).is_err());
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("fors-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to(path.as_os_str()).unwrap();
        n.send(&[State::Ready, State::Status("ok")]).unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok\n");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("fors-notify-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to(OsStr::new(&format!("@{name}"))).unwrap();
        n.send(&[State::Watchdog]).unwrap();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        // Nobody listening: an error the caller sees, not a silent loss.
        drop(rx);
        assert!(n.send(&[State::Watchdog]).is_err());
    }

    #[test]
    fn the_shards_publish_the_tick_counter_the_watchdog_reads() {
        assert!(crate::metrics::shard::shard_metric_index(SHARD_TICKS_METRIC).is_some());
    }

    #[test]
    fn a_shard_whose_ticks_stop_is_stalled_after_the_limit() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = ShardLiveness::new(&[0, 0], t0, Duration::from_millis(500));
        assert!(l.observe(&[3, 3], ms(300)).is_empty());
        // Shard 1 stops at 3: not yet stalled 400 ms later, stalled 500 ms later.
        assert!(l.observe(&[7, 3], ms(700)).is_empty());
        assert_eq!(l.observe(&[9, 3], ms(800)), vec![1]);
        // It ticks again: alive.
        assert!(l.observe(&[12, 4], ms(900)).is_empty());
        assert_eq!(
            ShardLiveness::stall_limit(Duration::from_millis(50)),
            MIN_STALL
        );
        assert_eq!(
            ShardLiveness::stall_limit(Duration::from_secs(15)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn the_watchdog_thread_pings_only_while_every_shard_ticks() {
        let name = format!("fors-watchdog-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let n = Arc::new(Notifier::to(OsStr::new(&format!("@{name}"))).unwrap());
        // Shard 0 ticks on every read; shard 1 only while `alive` is set.
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let a = alive.clone();
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = clock.clone();
        let s1 = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = s1.clone();
        let period = Duration::from_millis(100);
        let w = Watchdog::spawn(n, period, move |v| {
            let t = c.fetch_add(1, Ordering::Relaxed);
            if a.load(Ordering::Relaxed) {
                s.store(t, Ordering::Relaxed);
            }
            v.extend([t, s.load(Ordering::Relaxed)]);
        })
        .unwrap();
        let count_for = |d: Duration| {
            let end = Instant::now() + d;
            let mut n = 0;
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                if let Ok(len) = rx.recv(&mut buf) {
                    assert_eq!(&buf[..len], b"WATCHDOG=1\n");
                    n += 1;
                }
            }
            n
        };
        assert!(count_for(Duration::from_millis(1000)) >= 5);
        alive.store(false, Ordering::Relaxed);
        // Stalled after MIN_STALL (500 ms); from then on, no ping at all.
        count_for(MIN_STALL + 2 * period);
        assert_eq!(count_for(Duration::from_millis(1000)), 0);
        assert_eq!(w.stalled_shards(), 1);
        alive.store(true, Ordering::Relaxed);
        assert!(count_for(Duration::from_millis(1000)) >= 5);
        assert_eq!(w.stalled_shards(), 0);
        w.stop();
    }

    #[test]
    fn status_line_says_shards_and_bootstrap() {
        let mut f = StatusFacts {
            shards: 4,
            publishing: true,
            ..Default::default()
        };
        assert_eq!(
            status_line(&f),
            "4 shards running; bootstrapping: fetching a consensus"
        );
        f.consensus_fetches_failed = 2;
        assert_eq!(
            status_line(&f),
            "4 shards running; bootstrapping: no consensus yet (2 fetches failed)"
        );
        f.consensus_fetches_ok = 1;
        assert_eq!(
            status_line(&f),
            "4 shards running; not listed in the consensus; descriptor not yet accepted by an \
             authority"
        );
        f.descriptor_uploads_accepted = 1;
        f.listed_in_consensus = true;
        f.stalled_shards = 1;
        f.hibernating = true;
        assert_eq!(
            status_line(&f),
            "1 of 4 shards stalled; listed in the consensus; hibernating (AccountingMax reached)"
        );
        f = StatusFacts {
            shards: 1,
            consensus_fetches_ok: 3,
            ..Default::default()
        };
        assert_eq!(
            status_line(&f),
            "1 shard running; consensus fetched; not publishing a descriptor \
             (PublishServerDescriptor 0)"
        );
    }
}
