//! The ControlPort thread: non-blocking std sockets (TCP on loopback, Unix), polled every
//! 50 ms — the control plane, so simplicity beats latency here. It feeds complete lines to
//! each connection's [`Session`], sends BW events once a second from the shards' byte
//! counters, forwards log events from the logger's bounded tap, and turns SIGNAL commands
//! into the process's own signals so that the main thread handles them exactly as if an
//! operator had sent them.
//!
//! Bounds: [`MAX_CONNECTIONS`] controllers, [`MAX_LINE`] bytes per line, and events are not
//! queued to a controller that has more than [`MAX_PENDING_OUTPUT`] unsent bytes (they are
//! dropped and counted instead). C tor has no limit of its own on controllers; Fors keeps a
//! bound, so that idle sockets cannot lock the operator out a full table makes room by
//! closing the oldest connection that has not authenticated. Only when every slot holds an
//! authenticated controller is a newcomer refused.

// The sans-IO exception in `controlport` (docs/architecture.md "Sans-IO rule"): the thread
// that owns the sockets, the clock and the OS RNG for the sans-IO `Session`s.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::auth::AuthConfig;
use super::events::{bw_event, hibernation_status_event, log_event, EventSet};
use super::info::RelayView;
use super::orconn::OrConnTable;
use super::session::{Action, ControlSignal, Session};
use crate::accounting::Hibernation;
use crate::config::{Config, LogSeverity};
use crate::crypto::ids::RsaIdentity;
use crate::exit::policy::ExitPolicy;
use crate::metrics::MetricsRegistry;
use crate::relay::ctlevents::{self, OrConnEvent};
use crate::relay::log::{self, LogEvent};

/// Connections held at once (the oldest unauthenticated one makes room for a newcomer).
pub const MAX_CONNECTIONS: usize = 64;
/// Longest command line accepted.
pub const MAX_LINE: usize = 16 * 1024;
/// Unsent bytes above which events for a controller are dropped.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Log messages held for controllers between two polls.
pub const LOG_QUEUE: usize = 1000;
/// Seconds of BW history kept for `GETINFO bw-event-cache`.
pub const BW_HISTORY: usize = 300;
const POLL: Duration = Duration::from_millis(50);
/// How often `orconn-status` is checked against the shards' own connection lists even
/// when no ORCONN fact was lost (a lost one asks at once, within a second).
pub const ORCONN_RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// What changes on reload.
#[derive(Clone, Debug)]
pub struct RelayState {
    pub config: Config,
    /// The exit policy in force, one rule per line (`GETINFO exit-policy/full`).
    pub exit_policy_full: String,
    pub address: Option<std::net::IpAddr>,
}

impl RelayState {
    pub fn new(config: Config, policy: &ExitPolicy, address: Option<std::net::IpAddr>) -> Self {
        RelayState {
            config,
            exit_policy_full: exit_policy_full(policy),
            address,
        }
    }
}

/// C tor's `exit-policy/full`: every rule, IPv4 then IPv6, one per line.
pub fn exit_policy_full(p: &ExitPolicy) -> String {
    if p.is_reject_star() {
        return "reject *:*".into();
    }
    p.ipv4_rules()
        .chain(p.ipv6_rules())
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything the ControlPort needs from the relay at start.
pub struct ServerParams {
    pub tcp: Vec<SocketAddr>,
    pub unix: Vec<PathBuf>,
    pub auth: AuthConfig,
    pub config_file: Option<PathBuf>,
    pub fingerprint: RsaIdentity,
    pub or_listeners: Vec<SocketAddr>,
    pub metrics: Arc<MetricsRegistry>,
    pub started: Instant,
    pub state: RelayState,
    /// Our own consensus entry in `ns` form, if listed (read per `GETINFO ns/id/…`).
    pub self_status: SelfStatus,
    /// Accounting values for `GETINFO accounting/*` (`None` while accounting is off).
    pub accounting: crate::relay::hibernate::AccountingInfo,
    /// Collect the shards' OR-connection facts (`crate::relay::ctlevents`) for ORCONN and
    /// `GETINFO orconn-status`; off only in tests that share the process-wide queue.
    pub orconn_events: bool,
    /// The directory cache's store and our descriptor, for `GETINFO dir/…`.
    pub dir: Option<super::dirinfo::DirInfo>,
}

/// Where the server reads our current consensus entry from (the control plane's snapshot).
pub type SelfStatus = Arc<dyn Fn() -> Option<Arc<str>> + Send + Sync>;

/// Why the ControlPort could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on ControlPort {addr}: {source}")]
    Tcp { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on ControlPort unix:{}: {source}", path.display())]
    Unix { path: PathBuf, source: io::Error },
    #[error("cannot start the ControlPort thread: {0}")]
    Thread(io::Error),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
}

struct Conn {
    stream: Stream,
    session: Session,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is sent.
    closing: bool,
    /// Events not queued because `output` was full.
    dropped_events: u64,
}

/// The running ControlPort.
pub struct ControlPortServer {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<RelayState>>,
    listeners: Vec<String>,
    thread: Option<JoinHandle<()>>,
}

/// Process facts GETINFO reports, read once.
struct ProcessFacts {
    pid: u32,
    uid: u32,
    user: String,
    descriptor_limit: u64,
}

fn process_facts() -> ProcessFacts {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let (name, _, id) = (f.next()?, f.next()?, f.next()?);
            (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| uid.to_string());
    // "Max open files   SOFT   HARD   files"
    let descriptor_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l["Max open files".len()..].split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    ProcessFacts {
        pid: std::process::id(),
        uid,
        user,
        descriptor_limit,
    }
}

impl ControlPortServer {
    /// Binds every listener (errors name the address) and starts the thread.
    pub fn start(p: ServerParams) -> Result<ControlPortServer, ServerError> {
        let mut listeners = Vec::new();
        let mut names = Vec::new();
        for addr in &p.tcp {
            let l = TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .map_err(|source| ServerError::Tcp {
                    addr: *addr,
                    source,
                })?;
            names.push(l.local_addr().map_or(addr.to_string(), |a| a.to_string()));
            listeners.push(Listener::Tcp(l));
        }
        for path in &p.unix {
            let err = |source| ServerError::Unix {
                path: path.clone(),
                source,
            };
            // A socket left by a previous run would make bind fail; anything else is kept.
            if let Ok(m) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if m.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let l = UnixListener::bind(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(err)?;
            names.push(format!("unix:{}", path.display()));
            listeners.push(Listener::Unix(l, path.clone()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(p.state.clone()));
        let last_hibernation = p
            .accounting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Hibernation::Awake, |r| r.hibernation);
        let mut worker = Worker {
            listeners,
            names: names.clone(),
            conns: Vec::new(),
            auth: p.auth,
            config_file: p.config_file,
            fingerprint: p.fingerprint,
            or_listeners: p.or_listeners,
            metrics: p.metrics,
            self_status: p.self_status,
            last_hibernation,
            accounting: p.accounting,
            dir: p.dir,
            started: p.started,
            state: state.clone(),
            facts: process_facts(),
            bw_history: VecDeque::with_capacity(BW_HISTORY),
            last_bytes: None,
            next_bw: Instant::now() + Duration::from_secs(1),
            tap_min: None,
            rng: rand::rngs::OsRng,
            orconn_events: p.orconn_events,
            orconns: OrConnTable::new(),
            scrubbing: true,
            orconn_dropped: 0,
            next_resync: Instant::now() + ORCONN_RESYNC_PERIOD,
        };
        if p.orconn_events {
            ctlevents::set_enabled(true);
            // Connections opened before we started: the shards list them (C tor's
            // orconn-status reads its whole connection array).
            worker.orconn_dropped = ctlevents::dropped();
            ctlevents::request_resync();
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fors-controlport".into())
            .spawn(move || worker.run(&flag))
            .map_err(ServerError::Thread)?;
        Ok(ControlPortServer {
            stop,
            state,
            listeners: names,
            thread: Some(thread),
        })
    }

    /// Where it listens (`addr:port` or `unix:path`).
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }

    /// Replaces what GETINFO/GETCONF report (after a reload).
    pub fn update(&self, state: RelayState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Stops the thread, closes every connection and removes Unix sockets.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlPortServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Worker {
    listeners: Vec<Listener>,
    names: Vec<String>,
    conns: Vec<Conn>,
    auth: AuthConfig,
    config_file: Option<PathBuf>,
    fingerprint: RsaIdentity,
    or_listeners: Vec<SocketAddr>,
    metrics: Arc<MetricsRegistry>,
    started: Instant,
    state: Arc<Mutex<RelayState>>,
    self_status: SelfStatus,
    accounting: crate::relay::hibernate::AccountingInfo,
    dir: Option<super::dirinfo::DirInfo>,
    /// The hibernation state last reported in a STATUS_SERVER event.
    last_hibernation: Hibernation,
    facts: ProcessFacts,
    bw_history: VecDeque<(u64, u64)>,
    last_bytes: Option<(u64, u64)>,
    next_bw: Instant,
    tap_min: Option<LogSeverity>,
    rng: rand::rngs::OsRng,
    /// Whether this server turned the shards' ORCONN queue on (and drains it).
    orconn_events: bool,
    orconns: OrConnTable,
    /// Whether SafeLogging scrubbed client addresses at the last drain.
    scrubbing: bool,
    /// The queue's drop count at the last resync request.
    orconn_dropped: u64,
    next_resync: Instant,
}

/// Sends a signal to our own process (kill(2), not raise(3): a signal aimed at this thread
/// would stay pending here, where it is blocked, instead of reaching the main thread's
/// signalfd); a heartbeat goes to the main thread as a request instead (C tor has no Unix
/// signal for it).
fn raise(sig: ControlSignal) {
    use nix::sys::signal::Signal;
    let signal = match sig {
        ControlSignal::Reload => Signal::SIGHUP,
        ControlSignal::Shutdown => Signal::SIGINT,
        ControlSignal::Halt => Signal::SIGTERM,
        ControlSignal::Dump => Signal::SIGUSR1,
        ControlSignal::Debug => Signal::SIGUSR2,
        ControlSignal::Heartbeat => {
            if let Err(e) = crate::relay::signals::request_heartbeat() {
                log::log_warn!("SIGNAL HEARTBEAT: cannot reach the main thread ({e}).");
            }
            return;
        }
    };
    // Fails only for a bad pid or signal, neither possible here.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), signal);
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Vec::new();
        let mut orconn = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut busy = self.accept();
            let mut signals = Vec::new();
            for i in 0..self.conns.len() {
                busy |= self.read_conn(i, &mut signals);
            }
            let now = Instant::now();
            if now >= self.next_bw {
                self.bw_tick();
                self.hibernation_tick();
                self.resync_tick(now);
                self.next_bw = (self.next_bw + Duration::from_secs(1)).max(now);
            }
            events.clear();
            let dropped = log::drain_events(&mut events);
            self.send_log_events(&events, dropped);
            if self.orconn_events {
                orconn.clear();
                ctlevents::drain(&mut orconn);
                self.send_orconn_events(&orconn);
            }
            for c in &mut self.conns {
                busy |= flush(c);
            }
            // An owning controller that went away takes the relay with it (TAKEOWNERSHIP).
            let before = self.conns.len();
            let mut owner_gone = false;
            self.conns.retain(|c| {
                let done = c.closing && c.output.is_empty();
                owner_gone |= done && c.session.is_owner();
                if done && c.dropped_events > 0 {
                    log::log_info!(
                        "ControlPort: a controller closed after {} events were dropped because \
                         it did not read them.",
                        c.dropped_events
                    );
                }
                !done
            });
            if self.conns.len() != before {
                self.update_tap();
            }
            self.metrics
                .relay
                .controlport_connections
                .store(self.conns.len() as u64, Ordering::Relaxed);
            if owner_gone {
                signals.push(ControlSignal::Halt);
            }
            // After the replies went out, so a controller sees "250 OK" before we exit.
            for s in signals {
                raise(s);
            }
            if !busy {
                std::thread::sleep(POLL);
            }
        }
        if self.tap_min.is_some() {
            log::set_event_tap(None, 0);
        }
        if self.orconn_events {
            ctlevents::set_enabled(false);
        }
        for l in &self.listeners {
            if let Listener::Unix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Accepts waiting connections; whether any arrived.
    fn accept(&mut self) -> bool {
        let mut any = false;
        for l in &self.listeners {
            loop {
                let s = match l {
                    Listener::Tcp(l) => l.accept().map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        s.set_nonblocking(true).map(|_| Stream::Tcp(s))
                    }),
                    Listener::Unix(l, _) => l
                        .accept()
                        .map(|(s, _)| s.set_nonblocking(true).map(|_| Stream::Unix(s))),
                };
                let stream = match s {
                    Ok(Ok(s)) => s,
                    Ok(Err(_)) => continue,
                    Err(_) => break,
                };
                any = true;
                let mut c = Conn {
                    stream,
                    session: Session::new(),
                    input: Vec::new(),
                    output: Vec::new(),
                    closing: false,
                    dropped_events: 0,
                };
                if self.conns.len() >= MAX_CONNECTIONS {
                    // `conns` keeps accept order: the first unauthenticated one is the oldest.
                    // (TAKEOWNERSHIP needs authentication: an owner is never evicted.)
                    if let Some(i) = self
                        .conns
                        .iter()
                        .position(|c| !c.session.is_authenticated() && !c.closing)
                    {
                        drop(self.conns.remove(i));
                        let n = self
                            .metrics
                            .relay
                            .controlport_evicted
                            .fetch_add(1, Ordering::Relaxed);
                        if (n + 1).is_power_of_two() {
                            log::log_notice!(
                                "ControlPort: {MAX_CONNECTIONS} connections open; closed the \
                                 oldest unauthenticated one to make room ({} so far).",
                                n + 1
                            );
                        }
                    }
                }
                if self.conns.len() >= MAX_CONNECTIONS {
                    self.metrics
                        .relay
                        .controlport_refused
                        .fetch_add(1, Ordering::Relaxed);
                    c.output
                        .extend_from_slice(b"451 Too many controller connections\r\n");
                    c.closing = true;
                    let _ = flush(&mut c);
                    continue;
                }
                self.conns.push(c);
            }
        }
        any
    }

    /// Reads what connection `i` sent and answers every complete line.
    fn read_conn(&mut self, i: usize, signals: &mut Vec<ControlSignal>) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            let c = &mut self.conns[i];
            // A controller that does not read its replies is not read from either.
            if c.closing || c.output.len() > MAX_PENDING_OUTPUT {
                return any;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.closing = true;
                    c.output.clear();
                    return true;
                }
                Ok(n) => {
                    any = true;
                    c.input.extend_from_slice(&buf[..n]);
                    self.handle_lines(i, signals);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closing = true;
                    c.output.clear();
                    return true;
                }
            }
        }
    }

    fn handle_lines(&mut self, i: usize, signals: &mut Vec<ControlSignal>) {
        loop {
            let c = &mut self.conns[i];
            if c.closing {
                return;
            }
            let Some(end) = c.input.iter().position(|&b| b == b'\n') else {
                if c.input.len() > MAX_LINE {
                    c.output.extend_from_slice(b"500 Line too long\r\n");
                    c.closing = true;
                }
                return;
            };
            if end > MAX_LINE {
                c.output.extend_from_slice(b"500 Line too long\r\n");
                c.closing = true;
                return;
            }
            let raw: Vec<u8> = c.input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
            let outcome = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let (read, written) = self.metrics.total_bytes();
                let history: Vec<(u64, u64)> = self.bw_history.iter().copied().collect();
                let ns_self = (self.self_status)();
                let accounting = *self.accounting.lock().unwrap_or_else(|p| p.into_inner());
                let view = RelayView {
                    config: &state.config,
                    config_file: self.config_file.as_deref(),
                    fingerprint: self.fingerprint,
                    address: state.address,
                    exit_policy_full: &state.exit_policy_full,
                    or_listeners: &self.or_listeners,
                    control_listeners: &self.names,
                    traffic: (read, written),
                    uptime_secs: self.started.elapsed().as_secs(),
                    pid: self.facts.pid,
                    uid: self.facts.uid,
                    user: &self.facts.user,
                    descriptor_limit: self.facts.descriptor_limit,
                    bw_history: &history,
                    ns_self: ns_self.as_deref(),
                    accounting,
                    orconns: Some(&self.orconns),
                    dir: (
                        self.dir.as_ref(),
                        crate::keys::time::unix_secs(std::time::SystemTime::now()),
                    ),
                };
                self.conns[i]
                    .session
                    .handle_line(&line, &self.auth, &view, &mut self.rng)
            };
            let c = &mut self.conns[i];
            c.output.extend_from_slice(&outcome.reply);
            c.closing |= outcome.close;
            match outcome.action {
                Some(Action::Signal(s)) => signals.push(s),
                Some(Action::EventsChanged) => self.update_tap(),
                Some(Action::TakeOwnership) | Some(Action::DropOwnership) | None => {}
            }
        }
    }

    /// Collects log messages at the least severe level any controller wants.
    fn update_tap(&mut self) {
        let all = self
            .conns
            .iter()
            .filter(|c| !c.closing)
            .fold(EventSet::EMPTY, |s, c| s.union(c.session.events()));
        let min = all.min_log_severity();
        if min != self.tap_min {
            log::set_event_tap(min, LOG_QUEUE);
            self.tap_min = min;
        }
    }

    fn bw_tick(&mut self) {
        let (r, w) = self.metrics.total_bytes();
        let (dr, dw) = match self.last_bytes {
            None => (0, 0),
            Some((lr, lw)) => (r.saturating_sub(lr), w.saturating_sub(lw)),
        };
        self.last_bytes = Some((r, w));
        if self.bw_history.len() == BW_HISTORY {
            self.bw_history.pop_front();
        }
        self.bw_history.push_back((dr, dw));
        let line = bw_event(dr, dw);
        for c in &mut self.conns {
            if c.session.events().contains("BW") {
                queue_event(c, &line);
            }
        }
    }

    /// A changed accounting hibernation state becomes a STATUS_SERVER event (the control
    /// plane updates the state about once a second; accounting off counts as awake).
    fn hibernation_tick(&mut self) {
        let h = self
            .accounting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Hibernation::Awake, |r| r.hibernation);
        let h = if h == Hibernation::Initial {
            Hibernation::Awake
        } else {
            h
        };
        if std::mem::replace(&mut self.last_hibernation, h) == h {
            return;
        }
        let line = hibernation_status_event(h);
        for c in &mut self.conns {
            if c.session.events().contains("STATUS_SERVER") {
                queue_event(c, &line);
            }
        }
    }

    /// Asks the shards to list their connections again when an ORCONN fact was lost (a
    /// CLOSED among them would leave a dead `orconn-status` entry), and every
    /// [`ORCONN_RESYNC_PERIOD`] anyway.
    fn resync_tick(&mut self, now: Instant) {
        if !self.orconn_events {
            return;
        }
        let dropped = ctlevents::dropped();
        if dropped != self.orconn_dropped || now >= self.next_resync {
            self.orconn_dropped = dropped;
            self.next_resync = now + ORCONN_RESYNC_PERIOD;
            ctlevents::request_resync();
        }
    }

    /// Channel facts from the shards become ORCONN events and update `orconn-status`.
    fn send_orconn_events(&mut self, events: &[OrConnEvent]) {
        // Not a client's address unless `SafeLogging 0` (docs/operating.md).
        let scrubbing = ctlevents::client_addresses_scrubbed();
        if scrubbing && !self.scrubbing {
            self.orconns.forget_client_addresses();
        }
        self.scrubbing = scrubbing;
        for e in events {
            let Some(line) = self.orconns.apply(e, scrubbing) else {
                continue;
            };
            for c in &mut self.conns {
                if c.session.events().contains("ORCONN") {
                    queue_event(c, line.as_bytes());
                }
            }
        }
        let r = &self.metrics.relay;
        r.controlport_orconn_events_dropped
            .store(ctlevents::dropped(), Ordering::Relaxed);
        r.controlport_orconn_untracked
            .store(self.orconns.untracked(), Ordering::Relaxed);
    }

    fn send_log_events(&mut self, events: &[LogEvent], dropped: u64) {
        for c in &mut self.conns {
            let set = c.session.events();
            if set.is_empty() {
                continue;
            }
            for e in events {
                if set.contains(super::events::log_event_name(e.severity)) {
                    queue_event(c, &log_event(e.severity, &e.message));
                }
            }
            if dropped > 0 && set.contains("WARN") {
                let msg = format!(
                    "Fors dropped {dropped} log messages for controllers: more than {LOG_QUEUE} \
                     arrived between two polls."
                );
                queue_event(c, &log_event(LogSeverity::Warn, &msg));
            }
        }
    }
}

fn queue_event(c: &mut Conn, bytes: &[u8]) {
    if c.closing {
        return;
    }
    if c.output.len() + bytes.len() > MAX_PENDING_OUTPUT {
        c.dropped_events += 1;
        return;
    }
    c.output.extend_from_slice(bytes);
}

/// Writes what the socket takes; whether anything was written. A write error closes.
fn flush(c: &mut Conn) -> bool {
    let mut any = false;
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => {
                c.output.clear();
                c.closing = true;
                break;
            }
            Ok(n) => {
                c.output.drain(..n);
                any = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.output.clear();
                c.closing = true;
                break;
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};
    use std::io::{BufRead, BufReader};

    fn params(unix: PathBuf) -> ServerParams {
        let config = parse_str(&MemFs::default(), "torrc", "ORPort 127.0.0.1:9001\n")
            .unwrap()
            .0;
        ServerParams {
            tcp: vec!["127.0.0.1:0".parse().unwrap()],
            unix: vec![unix],
            auth: AuthConfig::default(),
            config_file: None,
            fingerprint: RsaIdentity::from_hex("DEADBEEF00112233445566778899AABBCCDDEEFF").unwrap(),
            or_listeners: vec!["127.0.0.1:9001".parse().unwrap()],
            metrics: Arc::new(MetricsRegistry::new(1, Instant::now())),
            started: Instant::now(),
            state: RelayState::new(config, &ExitPolicy::reject_all(), None),
            self_status: Arc::new(|| None),
            accounting: Default::default(),
            orconn_events: false,
            dir: None,
        }
    }

    fn read_line(r: &mut impl BufRead) -> String {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn serves_tcp_and_unix_with_bounds() {
        let dir = std::env::temp_dir().join(format!("fors-cp-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("control");
        let server = ControlPortServer::start(params(sock.clone())).unwrap();
        let tcp_addr: SocketAddr = server.listeners()[0].parse().unwrap();
        assert_eq!(server.listeners()[1], format!("unix:{}", sock.display()));

        // Unix socket: authenticate (NULL), GETINFO, BW events once a second.
        let mut u = UnixStream::connect(&sock).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        u.write_all(
            b"AUTHENTICATE\r\nGETINFO net/listeners/control exit-policy/full\r\nSETEVENTS BW\r\n",
        )
        .unwrap();
        let mut r = BufReader::new(u.try_clone().unwrap());
        assert_eq!(read_line(&mut r), "250 OK\r\n");
        let l = read_line(&mut r);
        assert_eq!(
            l,
            format!(
                "250-net/listeners/control=\"{tcp_addr}\" \"unix:{}\"\r\n",
                sock.display()
            )
        );
        assert_eq!(read_line(&mut r), "250-exit-policy/full=reject *:*\r\n");
        assert_eq!(read_line(&mut r), "250 OK\r\n");
        assert_eq!(read_line(&mut r), "250 OK\r\n");
        assert_eq!(read_line(&mut r), "650 BW 0 0\r\n");
        assert_eq!(read_line(&mut r), "650 BW 0 0\r\n");

        // TCP: an overlong line is refused and the connection closed.
        let mut t = TcpStream::connect(tcp_addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let long = vec![b'A'; MAX_LINE + 10];
        let _ = t.write_all(&long);
        let mut rt = BufReader::new(t);
        assert_eq!(read_line(&mut rt), "500 Line too long\r\n");
        assert_eq!(read_line(&mut rt), "");

        // A full table of idle, unauthenticated sockets does not lock a controller out: the
        // newcomer takes the oldest one's place.
        let mut idle: Vec<TcpStream> = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            idle.push(TcpStream::connect(tcp_addr).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut newcomer = TcpStream::connect(tcp_addr).unwrap();
        newcomer
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        newcomer.write_all(b"AUTHENTICATE\r\n").unwrap();
        let mut rn = BufReader::new(newcomer.try_clone().unwrap());
        assert_eq!(read_line(&mut rn), "250 OK\r\n");
        idle[0]
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut b = [0u8; 16];
        assert_eq!(
            idle[0].read(&mut b).unwrap_or(0),
            0,
            "oldest idle one closed"
        );
        // Authenticated controllers are never evicted: with every slot authenticated, the
        // one over the bound gets 451 and is closed.
        for s in &mut idle[1..] {
            s.write_all(b"AUTHENTICATE\r\n").unwrap();
        }
        for s in &mut idle[1..] {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            assert_eq!(read_line(&mut r), "250 OK\r\n");
        }
        let over = TcpStream::connect(tcp_addr).unwrap();
        over.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut ro = BufReader::new(over);
        assert_eq!(
            read_line(&mut ro),
            "451 Too many controller connections\r\n"
        );
        // The Unix controller still works.
        u.write_all(b"GETINFO process/pid\r\n").unwrap();
        let pid = format!("250-process/pid={}\r\n", std::process::id());
        let mut seen = false;
        for _ in 0..10 {
            let l = read_line(&mut r);
            if l == pid {
                seen = true;
                break;
            }
        }
        assert!(seen);
        server.stop();
        assert!(!sock.exists(), "Unix socket removed on stop");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
