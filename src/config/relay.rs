//! The typed relay [`Config`], built from merged torrc options with C tor's defaults and
//! validation rules (C `app/config/config.c`, `feature/relay/relay_config.c`).

use super::dirauth::{is_legal_nickname, parse_dir_authority, DirAuthority};
use super::error::{ConfigError, ConfigErrorKind, Location, Warning};
use super::log::{parse_log, LogConfig, LogDestination, LogSeverity, SafeLogging};
use super::merge::{RawOptions, RawValue};
use super::port::{parse_listen_port, parse_or_port, ListenPort, OrPort};
use super::testnet::NetworkTimings;
use super::units::{parse_interval, parse_memunit, parse_msec_interval};
use crate::accounting::{AccountingConfig, AccountingRule, AccountingStart};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::dos::DosOptions;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where Fors keeps keys and state when `DataDirectory` is not set.
pub const DEFAULT_DATA_DIRECTORY: &str = "/var/lib/fors";
/// C tor's `UNNAMED_ROUTER_NICKNAME`.
pub const DEFAULT_NICKNAME: &str = "Unnamed";
/// C tor's `RELAY_REQUIRED_MIN_BANDWIDTH`: 75 KB/s.
pub const RELAY_REQUIRED_MIN_BANDWIDTH: u64 = 75 * 1024;
/// C tor's `ROUTER_MAX_DECLARED_BANDWIDTH` (bandwidths are 32-bit signed in descriptors).
pub const MAX_BANDWIDTH: u64 = i32::MAX as u64;
/// C tor raises a `MaxMemInQueues` below this to it, with a warning.
pub const MIN_MAX_MEM_IN_QUEUES: u64 = 256 << 20;
/// C tor's `HeartbeatPeriod` default: 6 hours.
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(6 * 3600);
/// C tor's `MIN_HEARTBEAT_PERIOD` (config.h): 30 minutes, outside TestingTorNetwork.
pub const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_secs(30 * 60);

/// `ExitRelay`: 0, 1 or auto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRelay {
    /// Exit only if an `ExitPolicy` is configured (C tor ≥ 0.3.5 semantics).
    Auto,
    No,
    Yes,
}

/// One `FamilyId` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyId {
    /// `FamilyId *`: every family key in the key directory.
    All,
    /// A family key's public identity.
    Key(Ed25519Identity),
}

/// One `Address` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressConfig {
    Ip(IpAddr),
    /// Resolved later by the address-discovery code.
    Hostname(String),
}

/// Token-bucket settings in bytes (per second for rates), after C tor's normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandwidthConfig {
    pub rate: u64,
    pub burst: u64,
    /// 0 = no separate bucket for relayed traffic.
    pub relay_rate: u64,
    pub relay_burst: u64,
}

/// ControlPort settings beyond the TCP listeners and `CookieAuthentication`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlConfig {
    /// `ControlPort unix:PATH` listeners.
    pub unix_sockets: Vec<PathBuf>,
    /// `CookieAuthFile`; `None`: `DataDirectory/control_auth_cookie`.
    pub cookie_auth_file: Option<PathBuf>,
    /// `CookieAuthFileGroupReadable`: cookie file mode 0640 instead of 0600.
    pub cookie_auth_file_group_readable: bool,
    /// `HashedControlPassword` values (`16:` + 58 hex digits, C tor's S2K format), checked
    /// for form here and verified by the control port.
    pub hashed_passwords: Vec<String>,
}

impl Config {
    /// Where the family keys for `FamilyId` are read from (`FamilyKeyDirectory`).
    pub fn family_key_dir(&self) -> PathBuf {
        self.family_key_directory
            .clone()
            .unwrap_or_else(|| self.data_directory.join("keys"))
    }

    /// The cookie file the control port writes when `CookieAuthentication 1`.
    pub fn cookie_auth_file(&self) -> PathBuf {
        self.control
            .cookie_auth_file
            .clone()
            .unwrap_or_else(|| self.data_directory.join("control_auth_cookie"))
    }
}

/// Whether `s` has the form of a `HashedControlPassword` value: `16:` then 8 bytes of salt,
/// one count byte and a 20-byte SHA-1 digest, in hex (control-spec §3.5, RFC 2440 S2K).
pub fn is_hashed_password(s: &str) -> bool {
    s.strip_prefix("16:")
        .is_some_and(|h| h.len() == 58 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A raw comma-separated policy item (`accept *:80`) with its line, for the policy parser.
pub type PolicyItem = (String, Location);

/// Everything the relay reads from its torrc. See docs/config.md for each option.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub nickname: String,
    pub contact_info: Option<String>,
    pub or_ports: Vec<OrPort>,
    pub addresses: Vec<AddressConfig>,
    pub data_directory: PathBuf,
    /// Empty: use the built-in public-network authorities.
    pub dir_authorities: Vec<DirAuthority>,
    pub testing_tor_network: bool,
    /// Values that follow from `testing_tor_network`.
    pub network_timings: NetworkTimings,
    pub exit_relay: ExitRelay,
    /// `ExitPolicy` items in order, split at commas; parsed by `crate::exit::policy`.
    pub exit_policy: Vec<PolicyItem>,
    pub exit_policy_reject_private: bool,
    pub exit_policy_reject_local_interfaces: bool,
    pub reduced_exit_policy: bool,
    pub ipv6_exit: bool,
    pub bandwidth: BandwidthConfig,
    pub my_family: Vec<RsaIdentity>,
    pub family_ids: Vec<FamilyId>,
    /// `FamilyKeyDirectory`; `None`: the key directory, `DataDirectory/keys` (C tor's
    /// default is `KeyDirectory`, whose default is that; Fors has no `KeyDirectory`).
    pub family_key_directory: Option<PathBuf>,
    pub dir_cache: bool,
    /// Empty: `notice stdout`.
    pub logs: Vec<LogConfig>,
    pub safe_logging: SafeLogging,
    /// `LogTimeGranularity` (default 1 second): log timestamps are rounded down to it, so a
    /// log shows no finer timing than the operator chose (C `log_set_granularity`).
    pub log_time_granularity: Duration,
    /// `ProtocolWarnings` (default 0): peers' protocol violations are logged at warn with
    /// 1, at info with 0 (C `protocol_warning_severity_level`).
    pub protocol_warnings: bool,
    pub pid_file: Option<PathBuf>,
    /// `None`: /etc/resolv.conf.
    pub server_dns_resolv_conf_file: Option<PathBuf>,
    /// Shard count; 0 = one per available core.
    pub num_cpus: u32,
    /// A profile name (looked up in the search path) or a path to a TOML file.
    pub hardware_profile: Option<String>,
    pub outbound_bind_addresses: Vec<IpAddr>,
    pub outbound_bind_addresses_or: Vec<IpAddr>,
    pub outbound_bind_addresses_exit: Vec<IpAddr>,
    /// TCP ControlPorts; address `None` means 127.0.0.1, as in C tor. Only loopback
    /// addresses are accepted (the ControlPort has full control of the relay).
    pub control_ports: Vec<ListenPort>,
    pub cookie_authentication: bool,
    /// The rest of the ControlPort's settings (Unix sockets, cookie file, passwords).
    pub control: ControlConfig,
    /// Address `None` means 127.0.0.1, as in C tor.
    pub metrics_ports: Vec<ListenPort>,
    pub metrics_port_policy: Vec<PolicyItem>,
    /// `DirPort` listeners (flags: only `NoAdvertise` or `NoListen`). Needs `DirCache 1`.
    pub dir_ports: Vec<ListenPort>,
    /// `DirPortFrontPage`: the page answered to `GET /` on the DirPort, read when the
    /// configuration is (at start and on reload).
    pub dir_port_front_page: Option<FrontPage>,
    pub publish_server_descriptor: bool,
    /// `FetchDirInfoEarly`: the directory cache fetches from the authorities, on the cache
    /// schedule, even before its descriptor advertises directory service (C
    /// `dirclient_fetches_from_authorities`).
    pub fetch_dir_info_early: bool,
    /// `FetchDirInfoExtraEarly` (needs `FetchDirInfoEarly`): the next consensus is fetched
    /// within a minute of `fresh-until` plus the slop, not within half an interval.
    pub fetch_dir_info_extra_early: bool,
    pub assume_reachable: bool,
    /// Bytes; 0 = derive from the machine's memory (C tor's "auto").
    pub max_mem_in_queues: u64,
    /// Fors-only, `TestingTorNetwork` only: a cap on queued cells below the 256 MB minimum
    /// of `MaxMemInQueues`, so tests can reach it quickly. 0 = unset.
    pub testing_max_mem_in_queues: u64,
    /// `MaxHSDirCacheBytes`: bytes of onion-service descriptors an HSDir keeps; 0 (the
    /// default) = `MaxMemInQueues / 5`, as C tor's `hs_cache_get_max_bytes`.
    pub max_hsdir_cache_bytes: u64,
    pub shutdown_wait_length: Duration,
    /// `HeartbeatPeriod`: how often the heartbeat lines are logged; zero disables them.
    pub heartbeat_period: Duration,
    /// `KeepalivePeriod`: a PADDING cell on a channel with nothing written for this long;
    /// ten of them with output stuck close it (C `run_connection_housekeeping`). Default 5
    /// minutes; must be positive.
    pub keepalive_period: Duration,
    pub user: Option<String>,
    /// `DisableDebuggerAttachment` (default 1): the process is made non-dumpable, so other
    /// processes of the same user cannot ptrace it or read its memory (keys).
    pub disable_debugger_attachment: bool,
    /// `DoSCircuitCreation*` / `DoSConnection*`: overrides of the consensus DoS parameters.
    pub dos: DosOptions,
    /// `AccountingMax` in bytes; 0 (the default) turns accounting and hibernation off.
    pub accounting_max: u64,
    /// `AccountingRule` (default `max`).
    pub accounting_rule: AccountingRule,
    /// `AccountingStart`; `None` when unset (C then accounts monthly from the 1st, 00:00).
    pub accounting_start: Option<AccountingStart>,
}

impl Config {
    /// The accounting settings, when `AccountingMax` turns accounting on (C
    /// `accounting_is_enabled`).
    pub fn accounting(&self) -> Option<AccountingConfig> {
        (self.accounting_max != 0).then(|| AccountingConfig {
            max: self.accounting_max,
            rule: self.accounting_rule,
            start: self.accounting_start.unwrap_or_default(),
            // C `update_expected_bandwidth`: RelayBandwidthRate when set, else BandwidthRate.
            bandwidth_rate: if self.bandwidth.relay_rate > 0 {
                self.bandwidth.relay_rate
            } else {
                self.bandwidth.rate
            },
            // C reckons AccountingStart in the machine's local time.
            zone: crate::accounting::time::Zone::Local,
        })
    }

    /// Whether the relay is configured as an exit (before the policy itself is examined: an
    /// explicit reject-all policy still makes it a non-exit).
    pub fn wants_exit(&self) -> bool {
        match self.exit_relay {
            ExitRelay::Yes => true,
            ExitRelay::No => false,
            ExitRelay::Auto => !self.exit_policy.is_empty() || self.reduced_exit_policy,
        }
    }

    /// The source addresses for outgoing connections.
    pub fn outbound_bind(&self) -> OutboundBind {
        OutboundBind {
            any: by_family(&self.outbound_bind_addresses),
            or: by_family(&self.outbound_bind_addresses_or),
            exit: by_family(&self.outbound_bind_addresses_exit),
        }
    }

    /// Log destinations, with the default applied.
    pub fn effective_logs(&self) -> Vec<(LogSeverity, LogSeverity, LogDestination)> {
        if self.logs.is_empty() {
            return vec![(
                LogSeverity::Notice,
                LogSeverity::Err,
                LogDestination::Stdout,
            )];
        }
        self.logs
            .iter()
            .map(|l| (l.min, l.max, l.destination.clone()))
            .collect()
    }

    /// Builds the typed configuration from merged options; warnings are appended to `warnings`.
    pub fn from_options(
        raw: &RawOptions,
        warnings: &mut Vec<Warning>,
    ) -> Result<Self, ConfigError> {
        Builder { raw, warnings }.build()
    }
}

/// What an outgoing connection is for, which picks its `OutboundBindAddress*` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundKind {
    /// A channel to another relay (`OutboundBindAddressOR`).
    Or,
    /// An exit stream's connection (`OutboundBindAddressExit`).
    Exit,
    /// A directory request to an authority (`OutboundBindAddressOR`, as C tor).
    Dir,
}

/// Source addresses for outgoing connections (tor-manual "OutboundBindAddress"), indexed by
/// address family (0 = IPv4, 1 = IPv6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboundBind {
    pub any: [Option<IpAddr>; 2],
    pub or: [Option<IpAddr>; 2],
    pub exit: [Option<IpAddr>; 2],
}

impl OutboundBind {
    /// The address to bind before connecting to `dest`, as C tor's
    /// `conn_get_outbound_address`: the kind's own option for `dest`'s family, else
    /// `OutboundBindAddress`'s, else none (the kernel chooses).
    pub fn source(&self, kind: OutboundKind, dest: IpAddr) -> Option<IpAddr> {
        // C `connection_connect` (and the manual): never for a loopback destination.
        if dest.is_loopback() {
            return None;
        }
        let fam = usize::from(dest.is_ipv6());
        // Everything that is not an exit connection (directory requests too) takes the OR
        // address: C's `conn_get_outbound_address`.
        let own = match kind {
            OutboundKind::Exit => self.exit[fam],
            OutboundKind::Or | OutboundKind::Dir => self.or[fam],
        };
        own.or(self.any[fam])
    }
}

/// At most one address per family (the parser checks it).
fn by_family(list: &[IpAddr]) -> [Option<IpAddr>; 2] {
    [
        list.iter().copied().find(IpAddr::is_ipv4),
        list.iter().copied().find(IpAddr::is_ipv6),
    ]
}

fn bad(option: &'static str, v: &RawValue, reason: impl Into<String>) -> ConfigError {
    ConfigError::at(
        &v.location,
        ConfigErrorKind::BadValue {
            option,
            value: v.value.clone(),
            reason: reason.into(),
        },
    )
}

/// Largest `DirPortFrontPage` served (an exit notice is a few kB).
pub const MAX_FRONT_PAGE_BYTES: usize = 1 << 20;

/// A `DirPortFrontPage` file and what it held when the configuration was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontPage {
    pub path: PathBuf,
    pub contents: std::sync::Arc<[u8]>,
}

/// `DirPort` takes C tor's `NoAdvertise` and `NoListen` (not both); any other flag, such as
/// C tor's `IPv4Only`/`IPv6Only` which it ignores on a DirPort, is refused.
fn check_dir_port_flags(p: &ListenPort) -> Result<(), ConfigError> {
    let mut no_advertise = false;
    let mut no_listen = false;
    for f in &p.flags {
        if f.eq_ignore_ascii_case("NoAdvertise") {
            no_advertise = true;
        } else if f.eq_ignore_ascii_case("NoListen") {
            no_listen = true;
        } else {
            return Err(inconsistent(
                Some(&p.location),
                format!("DirPort: unsupported flag {f:?} (only NoAdvertise or NoListen)"),
            ));
        }
    }
    if no_advertise && no_listen {
        return Err(inconsistent(
            Some(&p.location),
            "DirPort: NoAdvertise and NoListen together leave nothing to do".into(),
        ));
    }
    Ok(())
}

fn inconsistent(loc: Option<&Location>, msg: String) -> ConfigError {
    let kind = ConfigErrorKind::Inconsistent(msg);
    match loc {
        Some(l) => ConfigError::at(l, kind),
        None => ConfigError::global(kind),
    }
}

struct Builder<'a> {
    raw: &'a RawOptions,
    warnings: &'a mut Vec<Warning>,
}

impl Builder<'_> {
    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw.single(name) {
            None => Ok(default),
            Some(v) => match v.value.as_str() {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad(name, v, "allowed values are 0 and 1")),
            },
        }
    }

    fn memunit(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        match self.raw.single(name) {
            None => Ok(default),
            Some(v) => parse_memunit(&v.value).map_err(|e| bad(name, v, e)),
        }
    }

    fn bandwidth(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        let b = self.memunit(name, default)?;
        match self.raw.single(name) {
            Some(v) if b > MAX_BANDWIDTH => Err(bad(
                name,
                v,
                format!("must be at most {MAX_BANDWIDTH} bytes/second"),
            )),
            _ => Ok(b),
        }
    }

    fn string(&self, name: &'static str) -> Option<String> {
        self.raw.single(name).map(|v| v.value.clone())
    }

    fn path(&self, name: &'static str) -> Option<PathBuf> {
        self.raw.single(name).map(|v| PathBuf::from(&v.value))
    }

    fn warn(&mut self, loc: &Location, msg: impl Into<String>) {
        self.warnings.push(Warning::at(loc, msg));
    }

    fn build(mut self) -> Result<Config, ConfigError> {
        let raw = self.raw;
        let nickname = match raw.single("Nickname") {
            None => DEFAULT_NICKNAME.to_string(),
            Some(v) if is_legal_nickname(&v.value) => v.value.clone(),
            Some(v) => {
                return Err(bad(
                    "Nickname",
                    v,
                    "nicknames are 1 to 19 characters of [A-Za-z0-9]",
                ))
            }
        };

        // Ports: "0" disables, and mixing "0" with real ports is refused as in C tor.
        let or_ports = self.or_ports()?;
        let (control_ports, unix_sockets) = self.control_ports()?;
        let metrics_ports = self.listen_ports("MetricsPort")?;
        let dir_ports = self.listen_ports("DirPort")?;
        for p in &dir_ports {
            check_dir_port_flags(p)?;
        }
        let dir_port_front_page = self.dir_port_front_page()?;
        for v in raw.list("SocksPort") {
            if v.value.trim() != "0" {
                return Err(bad(
                    "SocksPort",
                    v,
                    "Fors is a relay, not a client: only 0 is accepted",
                ));
            }
        }
        if let Some(v) = raw.single("RunAsDaemon") {
            match v.value.as_str() {
                "0" => {}
                "1" => {
                    return Err(bad(
                        "RunAsDaemon",
                        v,
                        "Fors always runs in the foreground (use a systemd service to run it in \
                         the background); only 0 is accepted",
                    ))
                }
                _ => return Err(bad("RunAsDaemon", v, "allowed value is 0")),
            }
        }

        let mut addresses = Vec::new();
        let (mut seen_v4, mut seen_v6) = (false, false);
        for v in raw.list("Address") {
            let s = v.value.trim();
            let a = match s.parse::<IpAddr>() {
                Ok(ip) => {
                    let seen = if ip.is_ipv4() {
                        &mut seen_v4
                    } else {
                        &mut seen_v6
                    };
                    if std::mem::replace(seen, true) {
                        return Err(bad(
                            "Address",
                            v,
                            "only one IPv4 and one IPv6 Address are allowed",
                        ));
                    }
                    if ip.is_unspecified() || ip.is_multicast() {
                        return Err(bad("Address", v, "not a usable unicast address"));
                    }
                    AddressConfig::Ip(ip)
                }
                Err(_) if is_hostname(s) => AddressConfig::Hostname(s.to_string()),
                Err(_) => return Err(bad("Address", v, "not an IP address or hostname")),
            };
            addresses.push(a);
        }

        let testing_tor_network = self.bool("TestingTorNetwork", false)?;
        let network_timings = NetworkTimings::for_network(testing_tor_network);

        let mut dir_authorities = Vec::new();
        for v in raw.list("DirAuthority") {
            let (a, w) = parse_dir_authority(&v.value, &v.location)
                .map_err(|e| bad("DirAuthority", v, e))?;
            for msg in w {
                self.warn(&v.location, msg);
            }
            dir_authorities.push(a);
        }
        if testing_tor_network && dir_authorities.is_empty() {
            return Err(inconsistent(
                raw.single("TestingTorNetwork").map(|v| &v.location),
                "TestingTorNetwork may only be used with a non-default set of DirAuthority lines"
                    .into(),
            ));
        }

        let exit_relay = match raw.single("ExitRelay") {
            None => ExitRelay::Auto,
            Some(v) => match v.value.to_ascii_lowercase().as_str() {
                "auto" => ExitRelay::Auto,
                "0" => ExitRelay::No,
                "1" => ExitRelay::Yes,
                _ => return Err(bad("ExitRelay", v, "allowed values are 0, 1, and auto")),
            },
        };
        let exit_policy = policy_items(raw.list("ExitPolicy"));
        let metrics_port_policy = policy_items(raw.list("MetricsPortPolicy"));

        let bandwidth = self.bandwidth_config()?;

        let mut my_family = Vec::new();
        for v in raw.list("MyFamily") {
            for item in v.value.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
                // "$HEX", "HEX", "$HEX~nick" and "$HEX=nick" all name a fingerprint.
                let hex = item.split(['~', '=']).next().unwrap_or(item);
                match RsaIdentity::from_hex(hex) {
                    Some(id) if hex.trim_start_matches('$').len() == 40 => my_family.push(id),
                    _ => {
                        return Err(bad(
                            "MyFamily",
                            v,
                            format!("{item:?} is not a relay fingerprint (Fors does not accept nicknames here)"),
                        ))
                    }
                }
            }
        }
        let contact_info = self.string("ContactInfo");
        if !my_family.is_empty() && contact_info.is_none() {
            if let Some(v) = raw.list("MyFamily").first() {
                self.warn(&v.location, "MyFamily is set but ContactInfo is not");
            }
        }
        let mut family_ids = Vec::new();
        for v in raw.list("FamilyId") {
            let s = v.value.trim();
            family_ids.push(if s == "*" {
                FamilyId::All
            } else {
                FamilyId::Key(Ed25519Identity::from_base64(s).ok_or_else(|| {
                    bad(
                        "FamilyId",
                        v,
                        "expected \"*\" or a base64 family identity (32 bytes)",
                    )
                })?)
            });
        }

        let mut logs = Vec::new();
        for v in raw.list("Log") {
            logs.push(parse_log(&v.value, &v.location).map_err(|e| bad("Log", v, e))?);
        }

        let safe_logging = match raw.single("SafeLogging") {
            None => SafeLogging::default(),
            Some(v) => SafeLogging::parse(&v.value)
                .ok_or_else(|| bad("SafeLogging", v, "allowed values are 0, 1 and relay"))?,
        };

        let log_time_granularity = match raw.single("LogTimeGranularity") {
            None => Duration::from_secs(1),
            Some(v) => {
                let d =
                    parse_msec_interval(&v.value).map_err(|e| bad("LogTimeGranularity", v, e))?;
                let ms = d.as_millis() as u64;
                // tor-manual: positive, and a divisor or a multiple of 1 second.
                if ms == 0
                    || (ms < 1000 && 1000 % ms != 0)
                    || (ms > 1000 && !ms.is_multiple_of(1000))
                {
                    return Err(bad(
                        "LogTimeGranularity",
                        v,
                        "must be positive and divide, or be a multiple of, 1 second",
                    ));
                }
                d
            }
        };

        let num_cpus = match raw.single("NumCPUs") {
            None => 0,
            Some(v) => {
                let n = v
                    .value
                    .parse::<u32>()
                    .map_err(|_| bad("NumCPUs", v, "expected an integer, 0 for automatic"))?;
                // One relay process runs at most `ShardId::LIMIT` shards (a channel's name
                // carries its shard in one byte). C tor has no upper bound here, so a larger
                // value is clamped with a warning rather than refused.
                let limit = crate::shard::ShardId::LIMIT as u32;
                if n > limit {
                    self.warn(
                        &v.location,
                        format!(
                            "NumCPUs {n} is more than the {limit} shards one Fors process can \
                             run; using {limit}"
                        ),
                    );
                    limit
                } else {
                    n
                }
            }
        };

        // Channel padding (proto::channel::padding): a relay pads as the consensus and its
        // peers' PADDING_NEGOTIATE say; C tor refuses the client-side overrides on a relay
        // (relay_config.c `options_validate_relay_padding`), with these words.
        if self.autobool("ConnectionPadding")?.is_some() {
            if let Some(v) = raw.single("ConnectionPadding") {
                return Err(bad(
                    "ConnectionPadding",
                    v,
                    "Relays must use 'auto' for the ConnectionPadding setting.",
                ));
            }
        }
        if self.bool("ReducedConnectionPadding", false)? {
            if let Some(v) = raw.single("ReducedConnectionPadding") {
                return Err(bad(
                    "ReducedConnectionPadding",
                    v,
                    "Relays cannot set ReducedConnectionPadding.",
                ));
            }
        }

        // Circuit padding (proto::circuit::padding) runs the machines a client negotiates, as
        // the consensus allows; C tor refuses turning it off or reducing it on a relay, with
        // these words (relay_config.c `options_validate_relay_padding`).
        if !self.bool("CircuitPadding", true)? {
            if let Some(v) = raw.single("CircuitPadding") {
                return Err(bad(
                    "CircuitPadding",
                    v,
                    "Relays cannot set CircuitPadding to 0.",
                ));
            }
        }
        if self.bool("ReducedCircuitPadding", false)? {
            if let Some(v) = raw.single("ReducedCircuitPadding") {
                return Err(bad(
                    "ReducedCircuitPadding",
                    v,
                    "Relays cannot set ReducedCircuitPadding.",
                ));
            }
        }

        // C config.c `options_validate`, with its words.
        let fetch_dir_info_early = self.bool("FetchDirInfoEarly", false)?;
        let fetch_dir_info_extra_early = self.bool("FetchDirInfoExtraEarly", false)?;
        if fetch_dir_info_extra_early && !fetch_dir_info_early {
            if let Some(v) = raw.single("FetchDirInfoExtraEarly") {
                return Err(bad(
                    "FetchDirInfoExtraEarly",
                    v,
                    "FetchDirInfoExtraEarly requires that you also set FetchDirInfoEarly",
                ));
            }
        }

        let publish_server_descriptor = match raw.single("PublishServerDescriptor") {
            None => true,
            Some(v) => self.publish(v)?,
        };

        let mut max_mem_in_queues = self.memunit("MaxMemInQueues", 0)?;
        if max_mem_in_queues != 0 && max_mem_in_queues < MIN_MAX_MEM_IN_QUEUES {
            if let Some(v) = raw.single("MaxMemInQueues") {
                self.warn(
                    &v.location,
                    "MaxMemInQueues must be at least 256 MB for now; raising it to 256 MB",
                );
            }
            max_mem_in_queues = MIN_MAX_MEM_IN_QUEUES;
        }
        let testing_max_mem_in_queues = self.memunit("TestingMaxMemInQueues", 0)?;
        if let (Some(v), false) = (raw.single("TestingMaxMemInQueues"), testing_tor_network) {
            // As C tor for its Testing* options.
            return Err(bad(
                "TestingMaxMemInQueues",
                v,
                "may only be changed in testing Tor networks (TestingTorNetwork 1)",
            ));
        }
        let shutdown_wait_length = match raw.single("ShutdownWaitLength") {
            None => Duration::from_secs(30),
            Some(v) => parse_interval(&v.value).map_err(|e| bad("ShutdownWaitLength", v, e))?,
        };
        // C tor's rule (config.c, MIN_HEARTBEAT_PERIOD): default 6 hours, 0 disables, and a
        // nonzero value under 30 minutes is raised to 30 minutes unless TestingTorNetwork.
        let mut heartbeat_period = match raw.single("HeartbeatPeriod") {
            None => DEFAULT_HEARTBEAT_PERIOD,
            Some(v) => parse_interval(&v.value).map_err(|e| bad("HeartbeatPeriod", v, e))?,
        };
        if !heartbeat_period.is_zero()
            && heartbeat_period < MIN_HEARTBEAT_PERIOD
            && !testing_tor_network
        {
            if let Some(v) = raw.single("HeartbeatPeriod") {
                self.warn(
                    &v.location,
                    "HeartbeatPeriod option is too short; raising to 1800 seconds",
                );
            }
            heartbeat_period = MIN_HEARTBEAT_PERIOD;
        }
        let keepalive_period = match raw.single("KeepalivePeriod") {
            None => crate::proto::channel::padding::DEFAULT_KEEPALIVE_PERIOD,
            Some(v) => match parse_interval(&v.value) {
                Ok(d) if d.is_zero() => {
                    return Err(bad(
                        "KeepalivePeriod",
                        v,
                        "KeepalivePeriod option must be positive.",
                    ))
                }
                Ok(d) => d,
                Err(e) => return Err(bad("KeepalivePeriod", v, e)),
            },
        };
        let user = match raw.single("User") {
            Some(v) if v.value.contains(char::is_whitespace) => {
                return Err(bad("User", v, "user names cannot contain spaces"))
            }
            _ => self.string("User"),
        };
        let hardware_profile = self.string("HardwareProfile");

        let exit_policy_reject_private = self.bool(
            "ExitPolicyRejectPrivate",
            network_timings.exit_policy_reject_private_default,
        )?;

        let cfg = Config {
            nickname,
            contact_info,
            or_ports,
            addresses,
            data_directory: self
                .path("DataDirectory")
                .unwrap_or_else(|| DEFAULT_DATA_DIRECTORY.into()),
            dir_authorities,
            testing_tor_network,
            network_timings,
            exit_relay,
            exit_policy,
            exit_policy_reject_private,
            exit_policy_reject_local_interfaces: self
                .bool("ExitPolicyRejectLocalInterfaces", false)?,
            reduced_exit_policy: self.bool("ReducedExitPolicy", false)?,
            ipv6_exit: self.bool("IPv6Exit", false)?,
            bandwidth,
            my_family,
            family_ids,
            family_key_directory: self.path("FamilyKeyDirectory"),
            dir_cache: self.dir_cache()?,
            logs,
            safe_logging,
            log_time_granularity,
            protocol_warnings: self.bool("ProtocolWarnings", false)?,
            pid_file: self.path("PidFile"),
            server_dns_resolv_conf_file: self.path("ServerDNSResolvConfFile"),
            num_cpus,
            hardware_profile,
            outbound_bind_addresses: self.bind_addresses("OutboundBindAddress")?,
            outbound_bind_addresses_or: self.bind_addresses("OutboundBindAddressOR")?,
            outbound_bind_addresses_exit: self.bind_addresses("OutboundBindAddressExit")?,
            control_ports,
            cookie_authentication: self.bool("CookieAuthentication", false)?,
            control: ControlConfig {
                unix_sockets,
                cookie_auth_file: self.path("CookieAuthFile"),
                cookie_auth_file_group_readable: self.bool("CookieAuthFileGroupReadable", false)?,
                hashed_passwords: self.hashed_passwords()?,
            },
            metrics_ports,
            metrics_port_policy,
            dir_ports,
            dir_port_front_page,
            publish_server_descriptor,
            fetch_dir_info_early,
            fetch_dir_info_extra_early,
            assume_reachable: self.bool("AssumeReachable", false)?,
            max_mem_in_queues,
            testing_max_mem_in_queues,
            max_hsdir_cache_bytes: self.memunit("MaxHSDirCacheBytes", 0)?,
            shutdown_wait_length,
            heartbeat_period,
            keepalive_period,
            user,
            disable_debugger_attachment: self.bool("DisableDebuggerAttachment", true)?,
            dos: self.dos_options()?,
            accounting_max: self.memunit("AccountingMax", 0)?,
            accounting_rule: match raw.single("AccountingRule") {
                None => AccountingRule::default(),
                Some(v) => v
                    .value
                    .parse()
                    .map_err(|e: String| bad("AccountingRule", v, e))?,
            },
            accounting_start: match raw.single("AccountingStart") {
                None => None,
                Some(v) => Some(
                    v.value
                        .parse()
                        .map_err(|e: String| bad("AccountingStart", v, e))?,
                ),
            },
        };
        self.final_checks(&cfg)?;
        // C tor relay_config.c: "DirPort configured but DirCache disabled. DirPort requires
        // DirCache."
        if let (Some(p), false) = (cfg.dir_ports.first(), cfg.dir_cache) {
            return Err(inconsistent(
                Some(&p.location),
                "DirPort configured but DirCache disabled. DirPort requires DirCache.".into(),
            ));
        }
        // Fors implements FetchDirInfoEarly in its directory cache's mirror only; without
        // one, its own consensus fetch would ignore it, so it is refused rather than inert.
        if cfg.fetch_dir_info_early && !cfg.dir_cache {
            if let Some(v) = self.raw.single("FetchDirInfoEarly") {
                return Err(bad(
                    "FetchDirInfoEarly",
                    v,
                    "Fors applies FetchDirInfoEarly only to its directory cache: it needs \
                     DirCache 1",
                ));
            }
        }
        Ok(cfg)
    }

    /// C tor's `AUTOBOOL`: 0, 1 or auto (`None`).
    fn autobool(&self, name: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.raw.single(name) {
            None => Ok(None),
            Some(v) => match v.value.to_ascii_lowercase().as_str() {
                "auto" => Ok(None),
                "0" => Ok(Some(false)),
                "1" => Ok(Some(true)),
                _ => Err(bad(name, v, "allowed values are 0, 1, and auto")),
            },
        }
    }

    /// C tor's `POSINT`: 0 to 2147483647 (0 is the default).
    fn posint(&self, name: &'static str) -> Result<u32, ConfigError> {
        match self.raw.single(name) {
            None => Ok(0),
            Some(v) => v
                .value
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= i32::MAX as u32)
                .ok_or_else(|| bad(name, v, "expected an integer from 0 to 2147483647")),
        }
    }

    /// A time interval in seconds (C `INTERVAL`: "3600", "1 hour"...); 0 when unset.
    fn interval_secs(&self, name: &'static str) -> Result<u32, ConfigError> {
        match self.raw.single(name) {
            None => Ok(0),
            Some(v) => parse_interval(&v.value)
                .map(|d| d.as_secs() as u32)
                .map_err(|e| bad(name, v, e)),
        }
    }

    /// A DoS defence type: 0 (use the consensus), 1 (none) or 2 (act). C reads any integer
    /// and treats everything but 2 as "none"; Fors refuses the meaningless values.
    fn defense_type(&self, name: &'static str) -> Result<u32, ConfigError> {
        match self.raw.single(name) {
            None => Ok(0),
            Some(v) => match v.value.trim() {
                "0" => Ok(0),
                "1" => Ok(1),
                "2" => Ok(2),
                _ => Err(bad(
                    name,
                    v,
                    "allowed values are 0 (consensus), 1 (none) and 2 (defend)",
                )),
            },
        }
    }

    /// The `DoS*` options (C `dos_options.inc`): each unset / auto / 0 defers to the
    /// consensus parameter of the same name.
    fn dos_options(&self) -> Result<DosOptions, ConfigError> {
        Ok(DosOptions {
            cc_enabled: self.autobool("DoSCircuitCreationEnabled")?,
            cc_min_concurrent_conn: self.posint("DoSCircuitCreationMinConnections")?,
            cc_circuit_rate: self.posint("DoSCircuitCreationRate")?,
            cc_circuit_burst: self.posint("DoSCircuitCreationBurst")?,
            cc_defense_type: self.defense_type("DoSCircuitCreationDefenseType")?,
            cc_defense_time_period: self.interval_secs("DoSCircuitCreationDefenseTimePeriod")?,
            conn_enabled: self.autobool("DoSConnectionEnabled")?,
            conn_max_concurrent_count: self.posint("DoSConnectionMaxConcurrentCount")?,
            conn_defense_type: self.defense_type("DoSConnectionDefenseType")?,
            conn_connect_rate: self.posint("DoSConnectionConnectRate")?,
            conn_connect_burst: self.posint("DoSConnectionConnectBurst")?,
            conn_connect_defense_time_period: self
                .interval_secs("DoSConnectionConnectDefenseTimePeriod")?,
        })
    }

    fn or_ports(&mut self) -> Result<Vec<OrPort>, ConfigError> {
        let mut out = Vec::new();
        let mut zero: Option<&RawValue> = None;
        for v in self.raw.list("ORPort") {
            match parse_or_port(&v.value, &v.location).map_err(|e| bad("ORPort", v, e))? {
                Some(p) => out.push(p),
                None => zero = Some(v),
            }
        }
        if let (Some(z), false) = (zero, out.is_empty()) {
            return Err(bad(
                "ORPort",
                z,
                "\"ORPort 0\" given together with a nonzero ORPort",
            ));
        }
        // Every listening ORPort gets a socket on every shard; two lines may not bind the
        // same address and port.
        let listening: Vec<&OrPort> = out.iter().filter(|p| !p.no_listen).collect();
        for (i, p) in listening.iter().enumerate() {
            if let Some(q) = listening[..i]
                .iter()
                .find(|q| q.address == p.address && q.port == p.port && q.ipv6_only == p.ipv6_only)
            {
                return Err(inconsistent(
                    Some(&p.location),
                    format!(
                        "ORPort: the same address and port as the ORPort at {}",
                        q.location
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn listen_ports(&mut self, name: &'static str) -> Result<Vec<ListenPort>, ConfigError> {
        let mut out = Vec::new();
        let mut zero: Option<&RawValue> = None;
        for v in self.raw.list(name) {
            match parse_listen_port(&v.value, &v.location).map_err(|e| bad(name, v, e))? {
                Some(p) => out.push(p),
                None => zero = Some(v),
            }
        }
        if let (Some(z), false) = (zero, out.is_empty()) {
            return Err(bad(
                name,
                z,
                format!("\"{name} 0\" given together with a nonzero {name}"),
            ));
        }
        Ok(out)
    }

    /// `ControlPort` lines: loopback TCP listeners and `unix:PATH` sockets. A non-loopback
    /// address is refused: whoever reaches the ControlPort controls the relay.
    fn control_ports(&mut self) -> Result<(Vec<ListenPort>, Vec<PathBuf>), ConfigError> {
        let mut tcp = Vec::new();
        let mut unix = Vec::new();
        let mut zero: Option<&RawValue> = None;
        for v in self.raw.list("ControlPort") {
            let value = v.value.trim();
            if let Some(rest) = value.strip_prefix("unix:") {
                let path = match rest.strip_prefix('"') {
                    Some(q) => q
                        .split_once('"')
                        .map(|(p, _)| p)
                        .ok_or_else(|| bad("ControlPort", v, "unterminated quoted path"))?,
                    None => rest.split_ascii_whitespace().next().unwrap_or(""),
                };
                if !path.starts_with('/') {
                    return Err(bad(
                        "ControlPort",
                        v,
                        "a Unix-socket ControlPort needs an absolute path (unix:/path)",
                    ));
                }
                unix.push(PathBuf::from(path));
                continue;
            }
            match parse_listen_port(value, &v.location).map_err(|e| bad("ControlPort", v, e))? {
                Some(p) => {
                    if let Some(ip) = p.address.filter(|ip| !ip.is_loopback()) {
                        return Err(bad(
                            "ControlPort",
                            v,
                            format!(
                                "{ip} is not a loopback address; the ControlPort gives full \
                                 control of the relay, so Fors only listens on 127.0.0.0/8, \
                                 ::1 or a Unix socket"
                            ),
                        ));
                    }
                    tcp.push(p)
                }
                None => zero = Some(v),
            }
        }
        // `ControlSocket PATH` is C tor's older spelling of `ControlPort unix:PATH`; 0 means none.
        for v in self.raw.list("ControlSocket") {
            let value = v.value.trim();
            let value = value.strip_prefix("unix:").unwrap_or(value);
            let path = value
                .strip_prefix('"')
                .and_then(|q| q.split_once('"').map(|(p, _)| p))
                .unwrap_or_else(|| value.split_ascii_whitespace().next().unwrap_or(""));
            if path == "0" {
                continue;
            }
            if !path.starts_with('/') {
                return Err(bad(
                    "ControlSocket",
                    v,
                    "a ControlSocket needs an absolute path",
                ));
            }
            unix.push(PathBuf::from(path));
        }
        if let (Some(z), false) = (zero, tcp.is_empty() && unix.is_empty()) {
            return Err(bad(
                "ControlPort",
                z,
                "\"ControlPort 0\" given together with a nonzero ControlPort",
            ));
        }
        Ok((tcp, unix))
    }

    /// `DirCache 1` turns on the directory cache's mirror: both consensus flavours, the
    /// authority certificates, and the microdescriptors and server descriptors they list are
    /// fetched from the authorities, verified and kept under `DataDirectory/dircache/`.
    /// C tor's default, 1. Whether it is advertised (`tunnelled-dir-server`) follows C
    /// tor's bandwidth and accounting rules (`dir::descriptor::DirAdvertise`).
    fn dir_cache(&self) -> Result<bool, ConfigError> {
        self.bool("DirCache", true)
    }

    /// `DirPortFrontPage FILE`: read now, so a missing or unreadable file is an error
    /// naming its line (C tor only warns and serves 404; a page the operator configured and
    /// that silently is not shown is worse than a refusal).
    fn dir_port_front_page(&self) -> Result<Option<FrontPage>, ConfigError> {
        let Some(v) = self.raw.single("DirPortFrontPage") else {
            return Ok(None);
        };
        let path = PathBuf::from(v.value.trim());
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() <= MAX_FRONT_PAGE_BYTES => Ok(Some(FrontPage {
                path,
                contents: bytes.into(),
            })),
            Ok(bytes) => Err(bad(
                "DirPortFrontPage",
                v,
                format!(
                    "file is {} bytes; at most {MAX_FRONT_PAGE_BYTES} are served",
                    bytes.len()
                ),
            )),
            Err(e) => Err(bad("DirPortFrontPage", v, format!("cannot read it: {e}"))),
        }
    }

    fn hashed_passwords(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for v in self.raw.list("HashedControlPassword") {
            let s = v.value.trim();
            if !is_hashed_password(s) {
                return Err(bad(
                    "HashedControlPassword",
                    v,
                    "expected \"16:\" and 58 hex digits, as printed by tor --hash-password",
                ));
            }
            out.push(s.to_ascii_uppercase());
        }
        Ok(out)
    }

    /// `OutboundBindAddress*`: one IP address per line (IPv6 with or without brackets), at
    /// most one per family, as C's `parse_outbound_address_lines`.
    fn bind_addresses(&self, name: &'static str) -> Result<Vec<IpAddr>, ConfigError> {
        let mut out: Vec<IpAddr> = Vec::new();
        for v in self.raw.list(name) {
            let word = v.value.trim();
            let bare = word
                .strip_prefix('[')
                .and_then(|w| w.strip_suffix(']'))
                .unwrap_or(word);
            let ip: IpAddr = bare.parse().map_err(|_| {
                bad(
                    name,
                    v,
                    format!("{word:?} is not one IP address (give one address per line)"),
                )
            })?;
            if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                return Err(bad(
                    name,
                    v,
                    "only one IPv4 and one IPv6 address are allowed",
                ));
            }
            out.push(ip);
        }
        Ok(out)
    }

    fn publish(&self, v: &RawValue) -> Result<bool, ConfigError> {
        let mut publish = false;
        for item in v.value.split(',').map(str::trim) {
            match item.to_ascii_lowercase().as_str() {
                "0" | "" => {}
                "1" | "v3" => publish = true,
                "bridge" => {
                    return Err(bad(
                        "PublishServerDescriptor",
                        v,
                        "Fors does not run as a bridge",
                    ))
                }
                _ => {
                    return Err(bad(
                        "PublishServerDescriptor",
                        v,
                        format!("unrecognized value {item:?} (allowed: 0, 1, v3)"),
                    ))
                }
            }
        }
        Ok(publish)
    }

    /// C tor's rules: the relay bucket's rate and burst default to each other; burst must be at
    /// least rate; a relay needs at least 75 KB/s; a large relay bucket raises the overall one.
    fn bandwidth_config(&mut self) -> Result<BandwidthConfig, ConfigError> {
        let raw = self.raw;
        let mut rate = self.bandwidth("BandwidthRate", 1 << 30)?;
        let mut burst = self.bandwidth("BandwidthBurst", 1 << 30)?;
        let mut relay_rate = self.bandwidth("RelayBandwidthRate", 0)?;
        let mut relay_burst = self.bandwidth("RelayBandwidthBurst", 0)?;
        let at = |n: &str| raw.single(n).map(|v| &v.location);
        if burst < rate {
            return Err(inconsistent(
                at("BandwidthBurst").or(at("BandwidthRate")),
                "BandwidthBurst must be at least equal to BandwidthRate".into(),
            ));
        }
        if relay_rate != 0 && relay_burst == 0 {
            relay_burst = relay_rate;
        }
        if relay_burst != 0 && relay_rate == 0 {
            relay_rate = relay_burst;
        }
        if rate < RELAY_REQUIRED_MIN_BANDWIDTH {
            return Err(inconsistent(
                at("BandwidthRate"),
                format!(
                    "BandwidthRate is set to {rate} bytes/second; for relays it must be at least \
                     {RELAY_REQUIRED_MIN_BANDWIDTH}"
                ),
            ));
        }
        if relay_rate != 0 && relay_rate < RELAY_REQUIRED_MIN_BANDWIDTH {
            return Err(inconsistent(
                at("RelayBandwidthRate").or(at("RelayBandwidthBurst")),
                format!(
                    "RelayBandwidthRate is set to {relay_rate} bytes/second; for relays it must \
                     be at least {RELAY_REQUIRED_MIN_BANDWIDTH}"
                ),
            ));
        }
        if relay_rate > relay_burst {
            return Err(inconsistent(
                at("RelayBandwidthBurst"),
                "RelayBandwidthBurst must be at least equal to RelayBandwidthRate".into(),
            ));
        }
        rate = rate.max(relay_rate);
        burst = burst.max(relay_burst);
        Ok(BandwidthConfig {
            rate,
            burst,
            relay_rate,
            relay_burst,
        })
    }

    fn final_checks(&mut self, cfg: &Config) -> Result<(), ConfigError> {
        if cfg.or_ports.is_empty() {
            return Err(inconsistent(
                self.raw.list("ORPort").first().map(|v| &v.location),
                "no ORPort is configured; Fors only runs as a relay and needs one".into(),
            ));
        }
        if cfg.or_ports.iter().all(|p| p.no_listen) {
            return Err(inconsistent(
                Some(&cfg.or_ports[0].location),
                "every ORPort is NoListen; at least one must listen".into(),
            ));
        }
        // C `check_and_prune_server_ports`: a relay must advertise what it listens on, and
        // an IPv4 ORPort among it.
        if !cfg.or_ports.iter().any(|p| !p.no_advertise) {
            return Err(inconsistent(
                Some(&cfg.or_ports[0].location),
                "every ORPort is NoAdvertise: we would listen on an ORPort but advertise none, \
                 so no descriptor could be built and nobody could use the relay"
                    .into(),
            ));
        }
        if !cfg.or_ports.iter().any(|p| !p.no_advertise && p.is_ipv4()) {
            return Err(inconsistent(
                Some(&cfg.or_ports[0].location),
                "only IPv6 ORPorts are advertised; a public relay needs an IPv4 ORPort too".into(),
            ));
        }
        if cfg.contact_info.is_none() && cfg.publish_server_descriptor {
            self.warnings.push(Warning::global(
                "ContactInfo is not set; please set it so the directory authorities and \
                 operators can reach you if your relay misbehaves",
            ));
        }
        if !cfg.testing_tor_network {
            for (a, v) in cfg.addresses.iter().zip(self.raw.list("Address")) {
                if let AddressConfig::Ip(ip) = a {
                    if is_internal(ip) {
                        self.warn(
                            &v.location,
                            "Address is a private or local address; authorities will not list \
                             the relay outside a TestingTorNetwork",
                        );
                    }
                }
            }
        }
        let control_open = !cfg.control_ports.is_empty() || !cfg.control.unix_sockets.is_empty();
        if control_open && !cfg.cookie_authentication && cfg.control.hashed_passwords.is_empty() {
            let loc = self.raw.list("ControlPort")[0].location.clone();
            self.warn(
                &loc,
                "ControlPort is open but neither CookieAuthentication nor \
                 HashedControlPassword is set: any local program can control the relay",
            );
        }
        if !cfg.exit_policy.is_empty() && cfg.exit_relay == ExitRelay::No {
            let loc = cfg.exit_policy[0].1.clone();
            self.warn(
                &loc,
                "ExitPolicy is set but ExitRelay is 0; the relay will not be an exit",
            );
        }
        Ok(())
    }
}

/// Splits each policy line at commas, keeping each item's line.
fn policy_items(lines: &[RawValue]) -> Vec<PolicyItem> {
    lines
        .iter()
        .flat_map(|v| {
            v.value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| (s.to_string(), v.location.clone()))
        })
        .collect()
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        })
}

fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_private() || a.is_loopback() || a.is_link_local() || a.octets()[0] == 0
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}
