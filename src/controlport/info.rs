//! GETINFO (control-spec §3.9): the keys Fors answers, from a [`RelayView`] the server
//! fills in for each command.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::events::EVENT_NAMES;
use super::quote::quote;
use crate::accounting::time::format_iso;
use crate::accounting::{AccountingReport, Hibernation};
use crate::config::{render, Config};
use crate::crypto::ids::RsaIdentity;

/// The version C tor's protocol Fors speaks, in tor's version syntax so that controllers
/// (stem's `Version`) can parse it; the parenthesised part names Fors.
pub fn version_string() -> String {
    format!("0.4.9.0-fors (fors-{})", env!("CARGO_PKG_VERSION"))
}

/// What GETINFO answers from.
#[derive(Clone, Debug)]
pub struct RelayView<'a> {
    pub config: &'a Config,
    /// The torrc given with `-f`, if any.
    pub config_file: Option<&'a Path>,
    pub fingerprint: RsaIdentity,
    /// Our address as published (first IPv4 of `Address`/ORPort), if known.
    pub address: Option<IpAddr>,
    /// The exit policy in force, one rule per line.
    pub exit_policy_full: &'a str,
    pub or_listeners: &'a [SocketAddr],
    /// ControlPort listeners as `addr:port` or `unix:path`.
    pub control_listeners: &'a [String],
    /// Bytes (read, written) since start.
    pub traffic: (u64, u64),
    pub uptime_secs: u64,
    pub pid: u32,
    pub uid: u32,
    pub user: &'a str,
    pub descriptor_limit: u64,
    /// Recent per-second BW values, oldest first.
    pub bw_history: &'a [(u64, u64)],
    /// Our consensus entry in `ns` form, when the consensus lists us and it is known.
    pub ns_self: Option<&'a str>,
    /// Accounting values, when `AccountingMax` is set.
    pub accounting: Option<AccountingReport>,
    /// The OR connections, when the ControlPort collects them.
    pub orconns: Option<&'a super::orconn::OrConnTable>,
    /// The directory cache, for `GETINFO dir/…`, and the Unix time now.
    pub dir: (Option<&'a super::dirinfo::DirInfo>, u64),
}

/// Every key with a line of description, for `info/names` (C's `getinfo_items`).
pub const INFO_KEYS: &[(&str, &str)] = &[
    (
        "accounting/bytes",
        "Number of bytes read/written so far in the accounting interval.",
    ),
    (
        "accounting/bytes-left",
        "Number of bytes left to write/read so far in the accounting interval.",
    ),
    ("accounting/enabled", "Is accounting currently enabled?"),
    ("accounting/hibernating", "Are we hibernating or awake?"),
    (
        "accounting/interval-end",
        "Time when the accounting period ends.",
    ),
    (
        "accounting/interval-start",
        "Time when the accounting period starts.",
    ),
    (
        "accounting/interval-wake",
        "Time to wake up in this accounting period.",
    ),
    ("address", "IP address of this relay."),
    ("bw-event-cache", "Cached BW events for a short interval."),
    (
        "circuit-status",
        "List of current circuits originating here (always empty).",
    ),
    ("config-file", "Current location of the \"torrc\" file."),
    ("config-text", "Contents that would be written to a torrc."),
    (
        "config/names",
        "List of configuration options, types, and documentation.",
    ),
    (
        "events/names",
        "Events that the controller can ask for with SETEVENTS.",
    ),
    ("exit-policy/full", "The entire exit policy of this relay."),
    ("fingerprint", "Get hash of router identity key."),
    (
        "info/names",
        "List of GETINFO options, types, and documentation.",
    ),
    (
        "net/listeners/control",
        "Bound addresses of ControlPort listeners.",
    ),
    ("net/listeners/or", "Bound addresses of ORPort listeners."),
    (
        "net/listeners/socks",
        "Bound addresses of SocksPort listeners (always empty).",
    ),
    (
        "network-liveness",
        "Current opinion on whether the network is live.",
    ),
    (
        "ns/id/*",
        "Network status info for a relay by fingerprint (ourselves only).",
    ),
    (
        "orconn-status",
        "A list of and status for each OR connection.",
    ),
    ("process/descriptor-limit", "File descriptor limit."),
    (
        "process/pid",
        "Process id belonging to the main tor process.",
    ),
    ("process/uid", "User id running the tor process."),
    (
        "process/user",
        "Username under which the tor process is running.",
    ),
    (
        "status/bootstrap-phase",
        "The last bootstrap phase status event.",
    ),
    ("status/version/current", "Status of the current version."),
    ("stream-status", "List of current streams (always empty)."),
    ("traffic/read", "Bytes read since the process was started."),
    (
        "traffic/written",
        "Bytes written since the process was started.",
    ),
    ("uptime", "Uptime of the process in seconds."),
    ("version", "The current version of tor."),
];

/// Why a key has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// C tor's `552 Unrecognized key`.
    #[error("Unrecognized key \"{0}\"")]
    Unrecognized(String),
    /// A known key with nothing to say right now (551 in C tor).
    #[error("{0}")]
    Unavailable(String),
}

fn listeners(addrs: impl Iterator<Item = String>) -> String {
    addrs
        .map(|a| quote(a.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl RelayView<'_> {
    /// The value of one GETINFO key.
    pub fn getinfo(&self, key: &str) -> Result<String, InfoError> {
        let v = match key {
            "version" => version_string(),
            "config-file" => self
                .config_file
                .map(|p| p.display().to_string())
                .ok_or_else(|| InfoError::Unavailable("no torrc file in use".into()))?,
            "config-text" => render::config_text(self.config),
            "config/names" => render::config_names(),
            "info/names" => INFO_KEYS
                .iter()
                .chain(super::dirinfo::DIR_INFO_KEYS)
                .map(|(k, d)| format!("{k} -- {d}\n"))
                .collect(),
            "events/names" => EVENT_NAMES.join(" "),
            "fingerprint" => self.fingerprint.to_hex(),
            "address" => self
                .address
                .map(|a| a.to_string())
                .ok_or_else(|| InfoError::Unavailable("Address unknown".into()))?,
            "process/pid" => self.pid.to_string(),
            "process/uid" => self.uid.to_string(),
            "process/user" => self.user.to_string(),
            "process/descriptor-limit" => self.descriptor_limit.to_string(),
            "traffic/read" => self.traffic.0.to_string(),
            "traffic/written" => self.traffic.1.to_string(),
            "uptime" => self.uptime_secs.to_string(),
            // C `getinfo_helper_accounting`: with accounting off the other keys still
            // answer, from zeroed values.
            "accounting/enabled" => if self.accounting.is_some() { "1" } else { "0" }.into(),
            "accounting/hibernating" => self
                .accounting
                .map_or(Hibernation::Awake, |a| a.hibernation)
                .as_str()
                .into(),
            "accounting/bytes" => {
                let (r, w) = self.accounting.map_or((0, 0), |a| a.read_written);
                format!("{r} {w}")
            }
            "accounting/bytes-left" => {
                let (r, w) = self.accounting.map_or((0, 0), |a| a.bytes_left);
                format!("{r} {w}")
            }
            "accounting/interval-start" => {
                format_iso(self.accounting.map_or(0, |a| a.interval_start))
            }
            "accounting/interval-wake" => {
                format_iso(self.accounting.map_or(0, |a| a.interval_wake))
            }
            "accounting/interval-end" => format_iso(self.accounting.map_or(0, |a| a.interval_end)),
            "exit-policy/full" => self.exit_policy_full.to_string(),
            "net/listeners/or" => listeners(self.or_listeners.iter().map(|a| a.to_string())),
            "net/listeners/control" => listeners(self.control_listeners.iter().cloned()),
            "net/listeners/socks" => String::new(),
            "network-liveness" => "up".into(),
            "status/version/current" => "unknown".into(),
            "status/bootstrap-phase" => {
                "NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"".into()
            }
            // A relay's own origin circuits and AP streams: Fors builds none (its
            // reachability test is a bare link, not a circuit; it has no SocksPort).
            "circuit-status" | "stream-status" => String::new(),
            "orconn-status" => self.orconns.map_or(String::new(), |t| {
                t.status(crate::relay::ctlevents::client_addresses_scrubbed())
            }),
            "bw-event-cache" => self
                .bw_history
                .iter()
                .map(|(r, w)| format!("{r},{w}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => {
                if key.starts_with("dir/") {
                    return super::dirinfo::getinfo(self.dir.0, self.fingerprint, key, self.dir.1);
                }
                if let Some(fp) = key.strip_prefix("ns/id/") {
                    return self.ns_id(key, fp);
                }
                return Err(InfoError::Unrecognized(key.to_string()));
            }
        };
        Ok(v)
    }

    fn ns_id(&self, key: &str, fp: &str) -> Result<String, InfoError> {
        let id = RsaIdentity::from_hex(fp.trim_start_matches('$'))
            .ok_or_else(|| InfoError::Unrecognized(key.to_string()))?;
        if id != self.fingerprint {
            return Err(InfoError::Unrecognized(format!(
                "{key}: Fors knows consensus entries only for itself"
            )));
        }
        self.ns_self
            .map(str::to_string)
            .ok_or_else(|| InfoError::Unrecognized(format!("{key}: not listed in a consensus")))
    }
}
