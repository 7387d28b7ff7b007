//! The relay daemon: process lifecycle, control-plane thread, and the shards' relay handler.
//!
//! `fors -f TORRC` runs [`run_main`]: read the configuration, set up logging, write the
//! PidFile, load or create the keys, build the exit policy, size and start the shards on the
//! ORPort, start the MetricsPort and the control-plane thread, then wait for signals (SIGTERM:
//! clean exit; SIGINT: close the listeners, clean exit after ShutdownWaitLength; SIGHUP:
//! reload; SIGUSR1: status). Under systemd (`Type=notify`) it tells the service manager when it
//! is ready, reloading and stopping, and pings its watchdog while every shard ticks
//! (`notify.rs`).
//! Operators' view: docs/operating.md.

// No unsafe here: process plumbing goes through `nix` and std.
#![forbid(unsafe_code)]

pub mod bandwidth;
pub mod control;
pub mod ctlevents;
pub mod dirserver;
pub mod dirworker;
pub mod exit_dns;
pub mod fdlimit;
pub mod handler;
pub mod heartbeat;
pub mod hibernate;
pub mod log;
pub mod node;
pub mod notify;
pub mod pidfile;
pub mod pressure;
pub mod publish;
pub mod reach;
pub mod reload;
pub mod setup;
pub mod shardcfg;
pub mod signals;
pub mod snapshot;
pub mod testing;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use self::control::{ControlMsg, ControlPlane, ControlThread};
use self::exit_dns::ExitDns;
use self::handler::RelayHandler;
use self::log::{log_err, log_info, log_notice, log_warn};
use self::notify::{Notifier, State, StatusFacts, Watchdog};
use self::pidfile::{PidFile, PidFileError};
use self::reload::ReloadEffect;
use self::setup::SetupError;
use self::signals::{RelaySignal, SignalEvents};
use self::snapshot::{NetworkSnapshot, SnapshotCell};
use crate::config::{
    self, CommandLine, Config, HardwareProfileError, LogDestination, ProfileSearchPath,
};
use crate::controlport::{AuthConfig, ControlPortServer, Cookie, HashedPassword, RelayState};
use crate::dos::ClientAddrTable;
use crate::exit::policy::ExitPolicy;
use crate::keys::{spaced_fingerprint, KeyError, KeyParams, RelayKeys};
use crate::metrics::{MetricsPolicy, MetricsPolicyError, MetricsRegistry, MetricsServer};
use crate::shard::{BwRates, Runtime, ShardError, SharedBudget};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Setup(#[from] SetupError),
    #[error("{0}")]
    PidFile(#[from] PidFileError),
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Link(#[from] control::LinkSetupError),
    #[error("{0}")]
    Profile(#[from] HardwareProfileError),
    #[error("{0}")]
    MetricsPolicy(#[from] MetricsPolicyError),
    #[error("cannot open MetricsPort {addr} ({location}): {source}")]
    MetricsPort {
        addr: std::net::SocketAddr,
        location: config::Location,
        source: std::io::Error,
    },
    #[error("cannot start the shards on ORPort {addr}: {source}")]
    Shards {
        addr: std::net::SocketAddr,
        source: ShardError,
    },
    #[error("ServerDNSResolvConfFile: {0}")]
    ResolvConf(#[from] crate::exit::dns::ResolvConfError),
    #[error("{0}")]
    ControlPort(#[from] crate::controlport::ServerError),
    #[error("{0}")]
    ControlAuth(#[from] crate::controlport::auth::AuthError),
    /// The state file is unreadable or malformed: never replaced silently.
    #[error("accounting state file: {0}")]
    State(#[from] crate::accounting::state::StateError),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// `fors -f TORRC [--defaults-torrc F] [--Option value…]`: runs the relay until SIGTERM or
/// SIGINT. Returns the process exit code.
pub fn run_main(args: &[String]) -> i32 {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = match SignalEvents::block_and_open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[err] cannot set up signal handling: {e}");
            return 1;
        }
    };
    let loaded = CommandLine::parse(args).and_then(|cl| config::load(&cl).map(|l| (cl, l)));
    let (cl, (config, warnings)) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("[err] {e}");
            return 1;
        }
    };
    if let Err(e) = log::install(&config.effective_logs()) {
        eprintln!("[err] {e}");
        return 1;
    }
    log::set_safe_logging(config.safe_logging);
    log::set_time_granularity(config.log_time_granularity);
    log::set_protocol_warnings(config.protocol_warnings);
    if config.disable_debugger_attachment {
        if let Err(e) = setup::set_dumpable(false) {
            log_warn!("DisableDebuggerAttachment: could not make the process non-dumpable: {e}");
        }
    }
    record_panics();
    log_notice!(
        "Fors {} (a Tor relay) starting, pid {}.",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    for w in &warnings {
        log_warn!("{w}");
    }
    let logs_to_terminal = config.effective_logs().iter().any(|(_, max, d)| {
        *max == config::LogSeverity::Err
            && matches!(d, LogDestination::Stdout | LogDestination::Stderr)
    });
    match Relay::start(cl, config, signals) {
        Ok(relay) => relay.run(),
        Err(e) => {
            log_err!("{e}");
            if !logs_to_terminal {
                eprintln!("[err] {e}");
            }
            1
        }
    }
}

/// Panics seen in any thread, as "thread NAME panicked at FILE:LINE: MESSAGE", for the main
/// thread's err line when it finds a dead thread. The hook itself only records: logging from
/// it could deadlock if the panicking thread held the log lock.
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Installs a panic hook that records the panic (see [`PANICS`]) and then runs the default
/// hook (its stderr message and backtrace).
fn record_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!(
            "thread {} panicked{at}: {msg}",
            std::thread::current().name().unwrap_or("(unnamed)")
        );
        if let Ok(mut p) = PANICS.try_lock() {
            p.push(line);
        }
        default(info);
    }));
}

/// The recorded panic of thread `name`, if any.
fn panic_of(name: &str) -> Option<String> {
    let p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("thread {name} panicked");
    p.iter().find(|l| l.starts_with(&prefix)).cloned()
}

/// How long the shutdown after a fatal error may take before the process exits anyway, so
/// that a service manager sees the failure and restarts Fors in bounded time.
const FATAL_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Starts a thread that ends the process with status 1 if it is still running after `limit`
/// (a shutdown after a fatal error that hangs, e.g. a shard that does not stop).
fn exit_anyway_after(limit: Duration) {
    let spawned = std::thread::Builder::new()
        .name("fors-exit-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            // Not through the logger, nor through `Stderr`'s lock: whatever hangs may hold
            // them. One write(2) to fd 2.
            let msg =
                b"[err] The shutdown after a fatal error did not finish in time; exiting now.\n";
            let _ = nix::unistd::write(std::os::fd::AsFd::as_fd(&std::io::stderr()), msg);
            // exit(3) runs no destructor of any thread; Rust's own flush of stdout at exit
            // only tries its lock, so a thread hung holding it cannot stop this.
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        log_warn!("Cannot start the exit watchdog ({e}); shutting down without it.");
    }
}

/// The running relay (main thread's view).
struct Relay {
    cl: CommandLine,
    /// The configuration the process started with (ports, shards: what a reload cannot change).
    started_config: Config,
    /// The configuration in force.
    config: Config,
    signals: SignalEvents,
    pid_file: Option<PidFile>,
    runtime: Option<Runtime<RelayHandler>>,
    control: Option<ControlThread>,
    control_port: Option<ControlPortServer>,
    metrics_servers: Vec<MetricsServer>,
    dir_server: Option<dirserver::DirServer>,
    /// The directory cache's documents: one store, filled by the mirror (control plane) and
    /// read by the directory server.
    dir_store: crate::dircache::SharedStore,
    metrics: Arc<MetricsRegistry>,
    started: Instant,
    /// The torrc's DoS options as the shards read them (republished on SIGHUP).
    dos_options: Arc<SnapshotCell<crate::dos::DosOptions>>,
    /// The consensus view the shards read (for the DoS heartbeat's thresholds).
    network: Option<Arc<SnapshotCell<NetworkSnapshot>>>,
    /// When the next heartbeat is due (`None`: HeartbeatPeriod 0). As in C tor the first one
    /// comes one period after start-up, not at start-up.
    next_heartbeat: Option<Instant>,
    /// `User` to switch to once everything is bound (`None`: no switch).
    user: Option<setup::UserIds>,
    /// The bandwidth buckets all shards draw from (new rates on SIGHUP).
    bandwidth: Option<Arc<SharedBudget>>,
    /// The shards' shared cell-memory budget and the profile's `max_mem_in_queues_bytes`
    /// (a reload recomputes the cap from the new torrc).
    mem_budget: Option<(Arc<crate::proto::circuit::MemBudget>, u64)>,
    /// The service manager's notification socket (`$NOTIFY_SOCKET`), if any.
    notifier: Option<Arc<Notifier>>,
    /// The thread pinging the service manager's watchdog (`$WATCHDOG_USEC`), if asked for.
    watchdog: Option<Watchdog>,
    /// The last `STATUS=` sent (a new one goes out only when it changes).
    last_status: String,
    /// The rate-limited "Under pressure" line (refused and dropped work made visible).
    pressure: pressure::PressureLog,
}

impl Relay {
    /// Where `GETINFO dir/…` reads: the cache's store and the descriptor the directory
    /// server serves as ours.
    fn control_dir_info(&self) -> crate::controlport::dirinfo::DirInfo {
        let inputs = self.dir_server.as_ref().map(|d| d.inputs.clone());
        crate::controlport::dirinfo::DirInfo {
            store: self.dir_store.clone(),
            own_descriptor: Arc::new(move || {
                let i = inputs.as_ref()?;
                let i = i.read().unwrap_or_else(|p| p.into_inner());
                i.own_descriptor.clone()
            }),
        }
    }

    fn start(cl: CommandLine, config: Config, signals: SignalEvents) -> Result<Relay, RelayError> {
        let started = Instant::now();
        // `User`: files are made with the user's effective ids, ports are bound and rings
        // opened as root, then the ids are switched for good (C tor's order: bind, then
        // switch_id, then keys and pid file as the user).
        let user = setup::plan_user_switch(&config)?;
        let (exit_policy, policy_warnings) = setup::build_exit_policy(&config)?;
        for w in &policy_warnings {
            log_warn!("{w}");
        }
        let metrics_policy = MetricsPolicy::parse(&config.metrics_port_policy)?;
        let profile = ProfileSearchPath::default().load(config.hardware_profile.as_deref())?;

        let pid_file = match &config.pid_file {
            Some(p) => {
                let _as_user = user.as_ref().map(setup::act_as).transpose()?;
                Some(PidFile::write(p)?)
            }
            None => None,
        };
        let dos_options = config.dos.for_relay(config.publish_server_descriptor);
        let notifier = match Notifier::from_env() {
            Ok(n) => n.map(Arc::new),
            Err(e) => {
                log_warn!("Not notifying the service manager: {e}");
                None
            }
        };
        // From here on a failure must remove the pid file: build the rest in a closure.
        let mut relay = Relay {
            cl,
            started_config: config.clone(),
            config,
            signals,
            pid_file,
            runtime: None,
            control: None,
            control_port: None,
            metrics_servers: Vec::new(),
            dir_server: None,
            dir_store: Default::default(),
            metrics: Arc::new(MetricsRegistry::new(0, started)),
            started,
            dos_options: SnapshotCell::new(dos_options),
            network: None,
            next_heartbeat: None,
            user,
            bandwidth: None,
            mem_budget: None,
            notifier,
            watchdog: None,
            last_status: String::new(),
            pressure: pressure::PressureLog::new(pressure::PressureCounts::default()),
        };
        match relay.start_services(started, exit_policy, metrics_policy, &profile) {
            Ok(()) => Ok(relay),
            Err(e) => {
                relay.shutdown();
                Err(e)
            }
        }
    }

    fn start_services(
        &mut self,
        started: Instant,
        exit_policy: ExitPolicy,
        metrics_policy: MetricsPolicy,
        profile: &config::HardwareProfile,
    ) -> Result<(), RelayError> {
        let config = &self.config;
        let keys = {
            let _as_user = self.user.as_ref().map(setup::act_as).transpose()?;
            let mut keys = RelayKeys::load_or_create(
                &config.data_directory,
                SystemTime::now(),
                KeyParams::default(),
            )?;
            // A missing or unreadable family key stops start-up, as in C tor.
            for (path, id) in keys.load_family_keys(&config.family_ids, &config.family_key_dir())? {
                log_warn!(
                    "Found secret family key in {} with unexpected FamilyID {}; it is not used.",
                    path.display(),
                    id.to_base64()
                );
            }
            keys.write_fingerprint_files(&config.nickname)?;
            keys
        };
        log_notice!(
            "Your relay's identity key fingerprint is '{} {}'",
            config.nickname,
            spaced_fingerprint(&keys.rsa_identity())
        );
        log_notice!(
            "Your relay's identity key ed25519 fingerprint is '{} {}'",
            config.nickname,
            keys.ed25519_identity().to_base64()
        );
        for id in keys.family_ids() {
            log_notice!("Member of the family with FamilyId {}.", id.to_base64());
        }
        if exit_policy.is_reject_star() {
            log_notice!("Not an exit relay: exit policy is reject *:*.");
        } else {
            log_notice!(
                "Exit relay; policy summary: {} (IPv6: {})",
                exit_policy.summary_v4(),
                if exit_policy.ipv6_exit() {
                    exit_policy.summary_v6().to_string()
                } else {
                    "no".into()
                }
            );
        }

        // Shards.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let shards = config::shard_count(config, profile, cpus).max(1);
        let fd_limit = setup::raise_fd_limit();
        let wanted = profile.max_channels_per_shard + profile.max_streams_per_shard;
        if let Some(l) = fd_limit {
            match fdlimit::check(l, shards, u64::from(wanted)) {
                Err(e) => return Err(RelayError::Setup(SetupError::User(e.to_string()))),
                Ok(fdlimit::FdCheck::Low(w)) => log_warn!("{w}"),
                Ok(fdlimit::FdCheck::Ok) => {}
            }
        }
        let fd_limit = fd_limit.map(|l| l.soft);
        let listen = setup::or_listen_addrs(config);
        let (addr, _) = listen.first().cloned().ok_or_else(|| {
            // Config validation guarantees a listening ORPort; keep a typed error anyway.
            RelayError::Setup(SetupError::User("no listening ORPort".into()))
        })?;
        let listen: Vec<std::net::SocketAddr> = listen.into_iter().map(|(a, _)| a).collect();
        let rc = shardcfg::runtime_config(profile, shards, &listen, fd_limit);
        let channel_config = shardcfg::channel_config(profile);
        // Accounting starts before the shards, so that their first snapshot already says
        // whether to hibernate (a restart after the soft limit stays hibernating).
        let accounting_info = hibernate::AccountingInfo::default();
        let accounting = match config.accounting() {
            Some(cfg) => Some(hibernate::AccountingDriver::start(
                cfg,
                &config.data_directory,
                keys.rsa_identity().0,
                SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                // The shards' counters start at zero with them, after this.
                Some((0, 0)),
                accounting_info.clone(),
            )?),
            None => None,
        };
        let mut first = control::initial_snapshot(
            &keys,
            &exit_policy,
            config.outbound_bind(),
            control::link_context(
                &keys,
                &setup::advertised_addrs(config),
                channel_config,
                SystemTime::now(),
            )?,
        );
        first.extend_over_ipv6 = setup::can_extend_over_ipv6(config);
        if let Some(a) = &accounting {
            if a.hibernation().refuses_new_work() {
                first.hibernation = a.hibernation();
            }
        }
        let network = SnapshotCell::new(first);
        // BandwidthRate & co., enforced on every shard's sockets from one shared budget.
        let budget =
            SharedBudget::new(shards as usize, bw_rates(&config.bandwidth), Instant::now());
        self.bandwidth = Some(budget.clone());
        self.metrics =
            Arc::new(MetricsRegistry::new(shards as usize, started).with_bandwidth(budget.clone()));
        let registry = self.metrics.clone();
        let cell: Arc<SnapshotCell<NetworkSnapshot>> = network.clone();
        self.network = Some(network.clone());
        let max_connections = rc.shard.max_connections as usize;
        // One DoS table for all shards: an address's connections land on any shard.
        let dos_table = Arc::new(ClientAddrTable::new(
            ClientAddrTable::slots_for(max_connections.saturating_mul(shards as usize)),
            self.metrics.dos.clone(),
            Instant::now(),
        ));
        log_info!(
            "DoS address table: {} slots ({} KiB), shared by all shards.",
            dos_table.capacity(),
            dos_table.capacity() * ClientAddrTable::SLOT_BYTES / 1024
        );
        let dos_options = self.dos_options.clone();
        let (mem_cap, mem_source) = shardcfg::max_mem_in_queues(
            config,
            profile.max_mem_in_queues_bytes,
            shardcfg::total_system_memory(),
        );
        log_notice!(
            "MaxMemInQueues is {} MB ({mem_source:?}), shared by all shards.",
            mem_cap >> 20
        );
        // C tor `options_validate`: `have_enough_mem_for_dircache`, a warning only.
        if let Some(w) = crate::dircache::memory::memory_warning(
            config.dir_cache,
            shardcfg::total_system_memory().unwrap_or(mem_cap),
        ) {
            log_warn!("{w}");
        }
        let mut circuits = shardcfg::circuit_config(
            profile,
            config.network_timings.extend_allow_private_addresses,
            mem_cap,
        );
        // The directory cache's documents are served on the DirPort and to BEGIN_DIR streams
        // (through the server's internal loopback listener).
        self.dir_server = setup::start_dir_server(config, self.dir_store.clone())?;
        if let Some(d) = &self.dir_server {
            circuits.dir_server = d.internal_addr();
            circuits.dir_server_anonymous = d.internal_anonymous_addr();
            let mut inputs = d.inputs.write().unwrap_or_else(|p| p.into_inner());
            inputs.max_hsdir_cache_bytes = config.max_hsdir_cache_bytes;
            inputs.max_mem_in_queues = mem_cap;
            // DirPort answers are paced at BandwidthRate/Burst, as C tor's global bucket.
            inputs.bandwidth = Some(budget.clone());
            inputs.count_private_bandwidth = config.network_timings.count_private_bandwidth;
            inputs.dir_conn_max_stall = Some(config.network_timings.dir_connection_max_stall);
            for a in &config.addresses {
                if let crate::config::AddressConfig::Ip(ip) = a {
                    inputs.set_our_address(*ip);
                }
            }
            drop(inputs);
            for a in d.local_addrs() {
                log_notice!("DirPort listening on {a}.");
            }
        }
        self.mem_budget = circuits
            .mem_budget
            .clone()
            .map(|b| (b, profile.max_mem_in_queues_bytes));
        // An exit resolves hostnames: its resolv.conf must be usable before we start.
        let resolver = if exit_policy.is_reject_star() {
            None
        } else {
            let c = exit_dns::load_resolver_config(config.server_dns_resolv_conf_file.as_deref())?;
            log_notice!(
                "Exit DNS: nameserver{} {}.",
                if c.nameservers.len() == 1 { "" } else { "s" },
                c.nameservers
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Some(c)
        };
        let count_private = config.network_timings.count_private_bandwidth;
        let keepalive_period = config.keepalive_period;
        let runtime = Runtime::start_limited(rc.clone(), Some(budget), move |id| {
            let stats = registry
                .shard(id.0)
                .cloned()
                .unwrap_or_else(|| Arc::new(Default::default()));
            let latency = registry
                .latency(id.0)
                .cloned()
                .unwrap_or_else(|| Arc::new(Default::default()));
            let dns = resolver.clone().and_then(|c| {
                ExitDns::new(c, Instant::now())
                    .inspect_err(|e| {
                        log_warn!(
                            "shard {}: cannot open the exit resolver's UDP socket ({e}); \
                             hostnames get transient failures.",
                            id.0
                        )
                    })
                    .ok()
            });
            RelayHandler::new(
                id,
                stats,
                cell.clone(),
                max_connections,
                circuits.clone(),
                dns,
                handler::DosShared {
                    table: dos_table.clone(),
                    options: dos_options.clone(),
                },
            )
            .count_private_bandwidth(count_private)
            .keepalive_period(keepalive_period)
            .with_latency(latency)
        })
        .map_err(|source| RelayError::Shards { addr, source })?;
        let bound = runtime.local_addr().unwrap_or(addr);
        let runtime_addrs = runtime.local_addrs().to_vec();
        for also in runtime.local_addrs().iter().skip(1) {
            log_notice!("Opened ORPort on {also} too.");
        }
        log_notice!(
            "Opened ORPort on {bound} with {shards} shard{} ({}; io_uring defer_taskrun: {}).",
            if shards == 1 { "" } else { "s" },
            config
                .hardware_profile
                .as_deref()
                .map_or("built-in generic profile".to_string(), |p| format!(
                    "hardware profile {p}"
                )),
            runtime.kernel_features().defer_taskrun
        );
        log_info!(
            "Per-shard sizes: {} connections, {} x {} B receive buffers, {} x {} B send buffers.",
            rc.shard.max_connections,
            rc.shard.recv_buf_count,
            rc.shard.recv_buf_size,
            rc.shard.send_buf_count,
            rc.shard.send_buf_size
        );
        log_notice!("{}", describe_bandwidth(&config.bandwidth));
        self.runtime = Some(runtime);

        // MetricsPort(s).
        for p in &config.metrics_ports {
            let addr = setup::metrics_listen_addr(p);
            let server = MetricsServer::start(addr, metrics_policy.clone(), self.metrics.clone())
                .map_err(|source| RelayError::MetricsPort {
                addr,
                location: p.location.clone(),
                source,
            })?;
            log_notice!(
                "MetricsPort listening on {} (GET /metrics, Prometheus format).",
                server.local_addr()
            );
            if metrics_policy.is_empty() {
                log_warn!(
                    "{}: MetricsPortPolicy is empty, so every MetricsPort request is refused (as \
                     in C tor); add e.g. \"MetricsPortPolicy accept 127.0.0.1\".",
                    p.location
                );
            }
            self.metrics_servers.push(server);
        }
        self.control_port = start_control_port(
            &self.cl,
            config,
            &keys,
            &exit_policy,
            runtime_addrs,
            &self.metrics,
            started,
            {
                let cell = network.clone();
                Arc::new(move || cell.load().self_status.clone())
            },
            accounting_info.clone(),
            self.user.as_ref(),
            self.control_dir_info(),
        )?;
        // Every listener is bound and every ring open: drop root for good. C tor creates its
        // Unix sockets after switching, so they belong to the user; ours were bound as root,
        // so they are given to the user first (else the user could not connect to them).
        if let Some(u) = &self.user {
            for path in &config.control.unix_sockets {
                std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(|e| {
                    SetupError::User(format!(
                        "User {}: cannot chown ControlPort socket {}: {e}",
                        u.name,
                        path.display()
                    ))
                })?;
            }
            setup::switch_user(u)?;
            log_notice!(
                "Switched to user {} (uid {}, gid {}) after binding the listeners.",
                u.name,
                u.uid,
                u.gid
            );
            // A uid change resets the dumpable flag to fs.suid_dumpable: set it again, as C
            // tor (its switch_id makes a non-root process dumpable; options_act then
            // applies DisableDebuggerAttachment). A failure is a warning, as in C.
            if let Err(e) = setup::set_dumpable(!config.disable_debugger_attachment) {
                log_warn!("DisableDebuggerAttachment after switching users: {e}");
            }
        }

        let (endpoints, trusted) = dirworker::endpoints(&config.dir_authorities);
        let worker = if endpoints.is_empty() {
            None
        } else {
            let limits = crate::dir::client::ClientLimits {
                connect_timeout: Duration::from_secs(10),
                total_timeout: config.network_timings.dir_connection_max_stall,
                // Taken at start-up: directory requests keep it until a restart.
                outbound: config.outbound_bind(),
                ..Default::default()
            };
            Some(
                dirworker::DirWorker::spawn(
                    endpoints,
                    dirworker::or_endpoints(&config.dir_authorities),
                    trusted,
                    limits,
                )
                .map_err(|source| RelayError::Thread {
                    what: "directory",
                    source,
                })?,
            )
        };
        let mut directory = publish::Directory::new(worker, config, Instant::now());
        // The onion-service roles are served on any shard count (`proto::circuit` `hs.rs`,
        // `hs_cross.rs`); conflux only where `conflux_served` says (`conflux.rs`).
        directory.set_onion_service_roles(true);
        directory.set_conflux(crate::proto::circuit::conflux_served(shards as usize));
        let mut plane = ControlPlane::new(
            config.clone(),
            keys,
            exit_policy,
            network,
            self.metrics.clone(),
            directory,
            bound.port(),
            channel_config,
            Instant::now(),
        );
        plane.set_accounting(accounting, accounting_info);
        if let Some(d) = control::DirCacheDriver::for_config(config, self.dir_store.clone())
            .map_err(|source| RelayError::Thread {
                what: "directory cache",
                source,
            })?
        {
            plane.set_dircache(d);
        }
        if let Some(d) = &self.dir_server {
            plane.set_dir_server_inputs(d.inputs.clone());
            self.metrics.set_dir_server(d.stats.clone());
        }
        plane.announce();
        self.control = Some(
            ControlThread::spawn(plane).map_err(|source| RelayError::Thread {
                what: "control-plane",
                source,
            })?,
        );
        log_notice!("Fors has started; the relay is running.");
        let request = std::env::var(testing::PANIC_SHARD_ENV).ok();
        match testing::panic_request(request.as_deref(), config) {
            testing::ShardRequest::None => {}
            testing::ShardRequest::Ignored(why) => log_warn!("{why}"),
            testing::ShardRequest::Shard(n) => {
                log_warn!(
                    "Testing: {} asks shard {n} to panic at its next tick.",
                    testing::PANIC_SHARD_ENV
                );
                testing::arm(n);
            }
        }
        let request = std::env::var(testing::STALL_SHARD_ENV).ok();
        match testing::stall_request(request.as_deref(), config) {
            testing::ShardRequest::None => {}
            testing::ShardRequest::Ignored(why) => log_warn!("{why}"),
            testing::ShardRequest::Shard(n) => {
                log_warn!(
                    "Testing: {} asks shard {n} to stall at its next tick.",
                    testing::STALL_SHARD_ENV
                );
                testing::arm_stall(n);
            }
        }
        self.notify_ready();
        Ok(())
    }

    /// Start-up is complete (listeners open, keys loaded, shards running): `READY=1` with the
    /// first `STATUS=`, then the watchdog if the service manager asked for one.
    fn notify_ready(&mut self) {
        let Some(n) = self.notifier.clone() else {
            return;
        };
        self.last_status = notify::status_line(&self.status_facts());
        n.send_or_warn(&[State::Ready, State::Status(&self.last_status)]);
        log_info!(
            "Told the service manager on {} that Fors is ready.",
            n.name()
        );
        let period = notify::watchdog_period(
            std::env::var(notify::WATCHDOG_USEC_ENV).ok().as_deref(),
            std::env::var(notify::WATCHDOG_PID_ENV).ok().as_deref(),
            std::process::id(),
        );
        let period = match period {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(why) => {
                log_warn!("{why}");
                return;
            }
        };
        let Some(ticks) = crate::metrics::shard::shard_metric_index(notify::SHARD_TICKS_METRIC)
        else {
            // Cannot happen while the counter exists (a unit test in notify.rs checks it);
            // without pings systemd restarts Fors, so say why at err level.
            log_err!("No per-shard tick counter: the watchdog cannot check the shards.");
            return;
        };
        let metrics = self.metrics.clone();
        match Watchdog::spawn(n, period, move |out| {
            out.extend(metrics.shards().iter().map(|s| s.get(ticks)))
        }) {
            Ok(w) => {
                log_notice!(
                    "Pinging the service manager's watchdog every {} ms while every shard ticks.",
                    period.as_millis()
                );
                self.watchdog = Some(w);
            }
            Err(e) => log_warn!("{e}; the service manager's watchdog will restart Fors."),
        }
    }

    /// What the `STATUS=` line says now, from the control plane's gauges.
    fn status_facts(&self) -> StatusFacts {
        let r = &self.metrics.relay;
        StatusFacts {
            shards: self.metrics.shards().len(),
            stalled_shards: self.watchdog.as_ref().map_or(0, Watchdog::stalled_shards),
            publishing: self.config.publish_server_descriptor,
            consensus_fetches_ok: r.consensus_fetches_ok.load(Ordering::Relaxed),
            consensus_fetches_failed: r.consensus_fetches_failed.load(Ordering::Relaxed),
            descriptor_uploads_accepted: r.descriptor_uploads_accepted.load(Ordering::Relaxed),
            listed_in_consensus: r.listed_in_consensus.load(Ordering::Relaxed) == 1,
            hibernating: self
                .network
                .as_ref()
                .is_some_and(|n| n.load().hibernation.refuses_new_work()),
        }
    }

    /// Sends `STATUS=` if it changed since the last one (main loop, once a second).
    fn update_status(&mut self) {
        let Some(n) = &self.notifier else {
            return;
        };
        let line = notify::status_line(&self.status_facts());
        if line != self.last_status {
            n.send_or_warn(&[State::Status(&line)]);
            self.last_status = line;
        }
    }

    /// Sends `states` to the service manager, if there is one.
    fn notify(&self, states: &[State<'_>]) {
        if let Some(n) = &self.notifier {
            n.send_or_warn(states);
        }
    }

    /// Waits for signals until asked to exit; returns the exit code.
    fn run(mut self) -> i32 {
        // SIGINT starts C tor's delayed shutdown of a relay (main.c process_signal,
        // hibernate.c hibernate_begin): stop accepting at once, exit after ShutdownWaitLength,
        // or at once on a second SIGINT or a SIGTERM.
        let mut exit_at: Option<Instant> = None;
        self.next_heartbeat = heartbeat::next_due(Instant::now(), self.config.heartbeat_period);
        let code = loop {
            let wait = exit_at.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            match self.signals.wait(wait) {
                Ok(Some(RelaySignal::Reload)) => {
                    self.notify(&[
                        State::Reloading {
                            monotonic_usec: notify::monotonic_usec(),
                        },
                        State::Status("Reloading the configuration (SIGHUP)"),
                    ]);
                    self.reload();
                    // A refused reload keeps the running configuration: ready either way.
                    self.last_status = notify::status_line(&self.status_facts());
                    self.notify(&[State::Ready, State::Status(&self.last_status)]);
                }
                Ok(Some(RelaySignal::DumpStats)) => self.dump_stats(),
                Ok(Some(RelaySignal::Heartbeat)) => self.log_heartbeat(),
                Ok(Some(RelaySignal::Debug)) => log_notice!(
                    "Caught SIGUSR2: Fors does not switch to debug logging on a signal; set \
                     \"Log debug ...\" and send SIGHUP."
                ),
                Ok(Some(RelaySignal::Terminate)) => {
                    log_notice!("Caught SIGTERM; shutting down cleanly.");
                    break 0;
                }
                Ok(Some(RelaySignal::Interrupt)) => {
                    let wait = self.config.shutdown_wait_length;
                    if exit_at.is_some() || wait.is_zero() {
                        log_notice!("Caught SIGINT; shutting down cleanly now.");
                        break 0;
                    }
                    self.stop_accepting();
                    let status = format!(
                        "Shutting down in {} s (ShutdownWaitLength); no longer accepting \
                         connections",
                        wait.as_secs()
                    );
                    self.notify(&[State::Stopping, State::Status(&status)]);
                    log_notice!(
                        "Interrupt: no longer accepting connections (ORPort and MetricsPort \
                         closed); shutting down cleanly in {} seconds (ShutdownWaitLength). \
                         Interrupt again or send SIGTERM to exit now.",
                        wait.as_secs()
                    );
                    exit_at = Some(Instant::now() + wait);
                }
                Ok(None) => {
                    // During SIGINT's delayed shutdown the status says so and stays.
                    if exit_at.is_none() {
                        self.update_status();
                    }
                    let counts = pressure::PressureCounts::read(&self.metrics);
                    match self.pressure.tick(counts, Instant::now()) {
                        Some((true, line)) => log_warn!("{line}"),
                        Some((false, line)) => log_notice!("{line}"),
                        None => {}
                    }
                    if self.next_heartbeat.is_some_and(|t| Instant::now() >= t) {
                        self.next_heartbeat =
                            heartbeat::next_due(Instant::now(), self.config.heartbeat_period);
                        self.log_heartbeat();
                    }
                    if exit_at.is_some_and(|t| Instant::now() >= t) {
                        log_notice!("ShutdownWaitLength is over; shutting down cleanly.");
                        break 0;
                    }
                    if self.control.as_ref().is_some_and(|c| c.is_finished()) {
                        let plane = self.control.take().and_then(|c| c.stop());
                        match plane.as_ref().and_then(|p| p.fatal_reason()) {
                            // Logged when found; C tor exits with status 1 here.
                            Some(_) => log_err!(
                                "Exiting: the consensus requires a protocol Fors does not \
                                 implement (see the error above)."
                            ),
                            None => log_err!("The control-plane thread died; shutting down."),
                        }
                        break 1;
                    }
                    if let Some(i) = self.runtime.as_ref().and_then(|r| r.exited_shard()) {
                        let why = panic_of(&format!("fors-shard-{i}"))
                            .unwrap_or_else(|| "its thread ended".into());
                        log_err!(
                            "Shard {i} stopped while the relay was running ({why}); its \
                             connections are lost. Exiting with status 1 so that the service \
                             manager restarts Fors."
                        );
                        break 1;
                    }
                }
                Err(e) => {
                    log_err!("Waiting for signals failed: {e}; shutting down.");
                    break 1;
                }
            }
        };
        if code != 0 {
            exit_anyway_after(FATAL_SHUTDOWN_LIMIT);
        }
        self.shutdown();
        if code == 0 {
            log_notice!("Fors exited cleanly.");
        }
        code
    }

    /// The heartbeat (C tor's `log_heartbeat`): the "not in the consensus" line when we
    /// publish and are not listed, the uptime/circuits/bytes/connections line, the DoS line.
    fn log_heartbeat(&self) {
        let m = &self.metrics;
        if self.config.publish_server_descriptor
            && m.relay.listed_in_consensus.load(Ordering::Relaxed) != 1
        {
            log_notice!("Heartbeat: this relay is not listed in the consensus we have.");
        }
        let (read, written) = m.total_bytes();
        let index = crate::metrics::shard::shard_metric_index;
        let sum = |i: Option<usize>| -> u64 {
            i.map_or(0, |i| m.shards().iter().map(|s| s.get(i)).sum())
        };
        let stats = heartbeat::HeartbeatStats {
            uptime: self.started.elapsed(),
            circuits_open: m
                .shards()
                .iter()
                .map(|s| s.handler.circuits_open.load(Ordering::Relaxed))
                .sum(),
            bytes_written: written,
            bytes_read: read,
            conns_accepted: sum(index("accepted")),
            conns_made: sum(index("connected")),
        };
        log_notice!("{}", heartbeat::heartbeat_line(&stats));
        log_notice!(
            "{}",
            pressure::PressureCounts::read(&self.metrics).since_start_line()
        );
        self.log_dos_heartbeat();
    }

    /// C tor's DoS heartbeat line (`dos_log_heartbeat`), with the thresholds in force.
    fn log_dos_heartbeat(&self) {
        if let Some(net) = &self.network {
            let cfg = handler::dos_config(&net.load(), self.dos_options.load().as_ref());
            log_notice!("{}", self.metrics.dos.heartbeat(&cfg));
        }
    }

    /// SIGUSR1: one summary line per shard and one for the relay.
    fn dump_stats(&self) {
        let m = &self.metrics;
        let (read, written) = m.total_bytes();
        let up = self.started.elapsed().as_secs();
        log_notice!(
            "Status: up {}h{:02}m, {} shards, {read} bytes read, {written} bytes written, \
             observed bandwidth {} B/s, listed in consensus: {}.",
            up / 3600,
            (up / 60) % 60,
            m.shards().len(),
            m.relay.observed_bandwidth.load(Ordering::Relaxed),
            if m.relay.listed_in_consensus.load(Ordering::Relaxed) == 1 {
                "yes"
            } else {
                "no"
            }
        );
        self.log_dos_heartbeat();
        let open = crate::metrics::shard::shard_metric_index("conns_open").unwrap_or(0);
        let accepted = crate::metrics::shard::shard_metric_index("accepted").unwrap_or(0);
        for (i, s) in m.shards().iter().enumerate() {
            log_notice!(
                "Status: shard {i}: {} connections open, {} accepted, {} bytes in, {} bytes out.",
                s.get(open),
                s.get(accepted),
                s.bytes().0,
                s.bytes().1
            );
        }
    }

    /// SIGHUP: re-read the configuration; apply what can be applied, name the rest.
    fn reload(&mut self) {
        log_notice!("Received reload signal (SIGHUP). Reloading the configuration.");
        let fail = |msg: String| {
            log_warn!("Reloading the configuration failed; keeping the running one: {msg}");
        };
        let (new, warnings) = match config::load(&self.cl) {
            Ok(x) => x,
            Err(e) => {
                self.metrics
                    .relay
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                return fail(e.to_string());
            }
        };
        let (exit_policy, policy_warnings) = match setup::build_exit_policy(&new) {
            Ok(x) => x,
            Err(e) => {
                self.metrics
                    .relay
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                return fail(e.to_string());
            }
        };
        // Turning accounting on reads the state file: one that cannot be read refuses the
        // reload, as it refuses start-up, rather than leaving AccountingMax without effect.
        if new.accounting().is_some() && self.config.accounting().is_none() {
            let path = self
                .started_config
                .data_directory
                .join(crate::accounting::state::STATE_FILE_NAME);
            if let Err(e) = crate::accounting::state::StateFile::load(&path) {
                self.metrics
                    .relay
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                return fail(format!("accounting state file: {e}"));
            }
        }
        for w in warnings
            .iter()
            .map(ToString::to_string)
            .chain(policy_warnings)
        {
            log_warn!("{w}");
        }
        // Always reinstall logging: this also reopens log files after rotation.
        if let Err(e) = log::install(&new.effective_logs()) {
            log_warn!("Keeping the old Log settings: {e}");
        }
        log::set_safe_logging(new.safe_logging);
        log::set_time_granularity(new.log_time_granularity);
        log::set_protocol_warnings(new.protocol_warnings);
        let applied = reload::changes(&self.config, &new);
        let restart: Vec<&str> = reload::changes(&self.started_config, &new)
            .into_iter()
            .filter(|c| c.effect == ReloadEffect::Restart)
            .map(|c| c.option)
            .collect();
        // The exit policy and the bandwidth limits are both enforced (applied now) and
        // published.
        let descriptor_changed = reload::exit_policy_changed(&applied)
            || reload::bandwidth_changed(&applied)
            || applied
                .iter()
                .any(|c| c.effect == ReloadEffect::NextDescriptor);
        for c in applied.iter().filter(|c| c.effect != ReloadEffect::Restart) {
            match c.effect {
                ReloadEffect::Now => log_notice!("Reload: {} changed; applied.", c.option),
                _ => log_notice!(
                    "Reload: {} changed; it goes into the next descriptor.",
                    c.option
                ),
            }
        }
        if !restart.is_empty() {
            log_warn!(
                "Reload: {} changed since start-up; Fors must be restarted for that to take \
                 effect (the old values stay in force).",
                restart.join(", ")
            );
        }
        if applied.is_empty() && restart.is_empty() {
            log_notice!("Reload: no option changed.");
        }
        if new.pid_file != self.config.pid_file {
            if let Some(old) = self.pid_file.take() {
                let _ = old.remove();
            }
            self.pid_file = match &new.pid_file {
                Some(p) => match PidFile::write(p) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        log_warn!("{e}");
                        None
                    }
                },
                None => None,
            };
        }
        if let Some(cp) = &self.control_port {
            cp.update(RelayState::new(
                new.clone(),
                &exit_policy,
                ipv4_address(&new),
            ));
        }
        if let Some(c) = &self.control {
            c.send(ControlMsg::NewConfig {
                config: Box::new(new.clone()),
                exit_policy: Box::new(exit_policy),
                descriptor_changed,
            });
        }
        if new.bandwidth != self.config.bandwidth {
            if let Some(b) = &self.bandwidth {
                // Shards pick the new rates up at their next tick (≤ 100 ms).
                b.set_rates(bw_rates(&new.bandwidth));
                log_notice!("{}", describe_bandwidth(&new.bandwidth));
            }
        }
        if let Some((budget, profile_bytes)) = &self.mem_budget {
            // TestingTorNetwork needs a restart, and so the testing cap with it.
            let mut effective = new.clone();
            effective.testing_tor_network &= self.started_config.testing_tor_network;
            let (cap, source) = shardcfg::max_mem_in_queues(
                &effective,
                *profile_bytes,
                shardcfg::total_system_memory(),
            );
            let cells = cap / crate::proto::circuit::CELL_MEM_COST;
            if cells != budget.cap_cells() {
                budget.set_cap_bytes(cap);
                log_notice!("MaxMemInQueues is now {} MB ({source:?}).", cap >> 20);
            }
        }
        if new.dos != self.config.dos
            || new.publish_server_descriptor != self.config.publish_server_descriptor
        {
            self.dos_options
                .publish(new.dos.for_relay(new.publish_server_descriptor));
        }
        if new.dir_port_front_page != self.config.dir_port_front_page {
            // Read again with the configuration: the next `GET /` answers the new page.
            if let Some(d) = &self.dir_server {
                let mut inputs = d.inputs.write().unwrap_or_else(|p| p.into_inner());
                inputs.front_page = new.dir_port_front_page.as_ref().map(|f| f.contents.clone());
            }
        }
        if new.heartbeat_period != self.config.heartbeat_period {
            // The new period counts from the reload.
            self.next_heartbeat = heartbeat::next_due(Instant::now(), new.heartbeat_period);
        }
        self.config = new;
        self.metrics
            .relay
            .reloads_applied
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The start of a delayed shutdown: close every listener but the ControlPort's, as C tor
    /// does (`connection_mark_all_noncontrol_listeners`); established connections and
    /// circuits are still served.
    fn stop_accepting(&mut self) {
        if let Some(rt) = &self.runtime {
            if let Err(e) = rt.close_listeners() {
                log_warn!("Could not close the ORPort listener: {e}");
            }
        }
        for s in self.metrics_servers.drain(..) {
            s.stop();
        }
        if let Some(d) = self.dir_server.take() {
            d.stop();
        }
    }

    /// Stops everything that was started, in reverse order, and removes the PidFile.
    fn shutdown(&mut self) {
        self.notify(&[State::Stopping, State::Status("Shutting down")]);
        // No pings while stopping: the unit's stop timeout governs from here.
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        // A shard stalled for a test must wake to be stopped.
        testing::release_stall();
        if let Some(cp) = self.control_port.take() {
            cp.stop();
        }
        for s in self.metrics_servers.drain(..) {
            s.stop();
        }
        if let Some(d) = self.dir_server.take() {
            d.stop();
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        if let Some(rt) = self.runtime.take() {
            match rt.stop() {
                Ok(reports) => {
                    for r in reports {
                        log_info!(
                            "Shard {}: {} connections accepted, {} bytes in, {} bytes out.",
                            r.shard.0,
                            r.metrics.accepted,
                            r.metrics.recv_bytes,
                            r.metrics.send_bytes
                        );
                    }
                }
                Err(e) => log_warn!("A shard ended with an error: {e}"),
            }
        }
        if let Some(p) = self.pid_file.take() {
            let path = p.path().to_path_buf();
            if let Err(e) = p.remove() {
                log_warn!("Could not remove PidFile {}: {e}", path.display());
            }
        }
    }
}

/// The shard runtime's view of the torrc's bandwidth options.
fn bw_rates(b: &config::BandwidthConfig) -> BwRates {
    BwRates {
        rate: b.rate,
        burst: b.burst,
        relay_rate: b.relay_rate,
        relay_burst: b.relay_burst,
    }
}

/// One log line naming the limits in force.
fn describe_bandwidth(b: &config::BandwidthConfig) -> String {
    let relayed = if b.relay_rate == 0 {
        "no separate limit for relayed traffic".to_string()
    } else {
        format!(
            "relayed traffic {} B/s, burst {} B",
            b.relay_rate, b.relay_burst
        )
    };
    format!(
        "Bandwidth limits in force: {} B/s, burst {} B, each way; {relayed}.",
        b.rate, b.burst
    )
}

/// The address `GETINFO address` reports: the first advertised IPv4 address.
fn ipv4_address(config: &Config) -> Option<std::net::IpAddr> {
    setup::advertised_addrs(config)
        .into_iter()
        .find(|a| a.is_ipv4())
}

/// Opens the ControlPort(s), if configured: writes a fresh cookie when
/// `CookieAuthentication 1`, then binds (docs/operating.md "ControlPort and nyx").
#[allow(clippy::too_many_arguments)]
fn start_control_port(
    cl: &CommandLine,
    config: &Config,
    keys: &RelayKeys,
    exit_policy: &ExitPolicy,
    or_listeners: Vec<std::net::SocketAddr>,
    metrics: &Arc<MetricsRegistry>,
    started: Instant,
    self_status: crate::controlport::SelfStatus,
    accounting: hibernate::AccountingInfo,
    user: Option<&setup::UserIds>,
    dir: crate::controlport::dirinfo::DirInfo,
) -> Result<Option<ControlPortServer>, RelayError> {
    if config.control_ports.is_empty() && config.control.unix_sockets.is_empty() {
        return Ok(None);
    }
    let mut rng = rand::rngs::OsRng;
    let cookie = if config.cookie_authentication {
        // Made by the `User`, who reads and rewrites it later.
        let _as_user = user.map(setup::act_as).transpose()?;
        Some(Cookie::create(
            &config.cookie_auth_file(),
            config.control.cookie_auth_file_group_readable,
            &mut rng,
        )?)
    } else {
        None
    };
    let passwords = config
        .control
        .hashed_passwords
        .iter()
        .map(|h| HashedPassword::parse(h))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = AuthConfig { cookie, passwords };
    // Same default address (127.0.0.1) as the MetricsPort.
    let tcp = config
        .control_ports
        .iter()
        .map(setup::metrics_listen_addr)
        .collect();
    let server = ControlPortServer::start(crate::controlport::ServerParams {
        tcp,
        unix: config.control.unix_sockets.clone(),
        // Absolute, so a controller in another directory (nyx) finds it.
        config_file: cl
            .torrc
            .clone()
            .or_else(|| Some(config::cmdline::DEFAULT_TORRC.into()))
            .map(|p| std::path::absolute(&p).unwrap_or(p)),
        fingerprint: keys.rsa_identity(),
        or_listeners,
        metrics: metrics.clone(),
        started,
        state: RelayState::new(config.clone(), exit_policy, ipv4_address(config)),
        auth: auth.clone(),
        self_status,
        accounting,
        orconn_events: true,
        dir: Some(dir),
    })?;
    log_notice!(
        "ControlPort listening on {} (authentication: {}).",
        server.listeners().join(", "),
        auth.method_names()
    );
    if let Some(c) = &auth.cookie {
        log_info!("ControlPort cookie written to {}.", c.path.display());
    }
    Ok(Some(server))
}
