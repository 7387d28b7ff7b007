//! The typed [`Config`] written back as torrc values, for the ControlPort's `GETCONF`,
//! `GETINFO config-text` and `GETINFO config/names` (control-spec §3.3, §3.9).
//!
//! Values are rendered from what Fors uses, not from the text as written: sizes come out in
//! bytes, intervals in seconds, policies one item per value. An option that is not set and
//! has no default renders as no value at all (GETCONF then answers the bare name).

use super::log::SafeLogging;
use super::options::{lookup, Lookup, OptionKind, SUPPORTED};
use super::port::{ListenPort, OrPort, PortNumber};
use super::relay::{AddressConfig, Config, ExitRelay, FamilyId};
use super::source::MemFs;
use std::net::IpAddr;

/// What a `GETCONF` name refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfValue {
    /// An option Fors implements: its canonical name and values (empty: unset).
    Set(&'static str, Vec<String>),
    /// A C tor option Fors accepts and ignores: never has a value.
    Ignored(&'static str),
}

fn b(v: bool) -> Vec<String> {
    vec![if v { "1" } else { "0" }.to_string()]
}

fn one(s: impl ToString) -> Vec<String> {
    vec![s.to_string()]
}

fn opt<T: ToString>(v: &Option<T>) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

fn autobool(v: Option<bool>) -> Vec<String> {
    one(match v {
        None => "auto",
        Some(true) => "1",
        Some(false) => "0",
    })
}

fn path(p: &Option<std::path::PathBuf>) -> Vec<String> {
    p.iter().map(|p| p.display().to_string()).collect()
}

fn port_number(p: PortNumber) -> String {
    match p {
        PortNumber::Auto => "auto".into(),
        PortNumber::Fixed(n) => n.to_string(),
    }
}

fn addr_port(a: Option<IpAddr>, p: PortNumber) -> String {
    match a {
        None => port_number(p),
        Some(IpAddr::V4(v4)) => format!("{v4}:{}", port_number(p)),
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{}", port_number(p)),
    }
}

fn or_port(p: &OrPort) -> String {
    let mut s = addr_port(p.address, p.port);
    for (on, flag) in [
        (p.no_advertise, "NoAdvertise"),
        (p.no_listen, "NoListen"),
        (p.ipv4_only, "IPv4Only"),
        (p.ipv6_only, "IPv6Only"),
    ] {
        if on {
            s.push(' ');
            s.push_str(flag);
        }
    }
    s
}

fn listen_port(p: &ListenPort) -> String {
    let mut s = addr_port(p.address, p.port);
    for f in &p.flags {
        s.push(' ');
        s.push_str(f);
    }
    s
}

fn dir_authority(a: &super::DirAuthority) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(n) = &a.nickname {
        parts.push(n.clone());
    }
    if let Some(p) = a.or_port {
        parts.push(format!("orport={p}"));
    }
    if a.bridge {
        parts.push("bridge".into());
    }
    if let Some(v) = &a.v3ident {
        parts.push(format!("v3ident={}", v.to_hex()));
    }
    if let Some(v6) = &a.ipv6 {
        parts.push(format!("ipv6={v6}"));
    }
    if a.weight != 1.0 {
        parts.push(format!("weight={}", a.weight));
    }
    parts.extend(a.extra_dirports.iter().cloned());
    parts.push(format!("{}:{}", a.address, a.dir_port));
    parts.push(a.fingerprint.to_hex());
    parts.join(" ")
}

/// The values of a supported option (canonical name) in `c`.
fn values(c: &Config, name: &str) -> Vec<String> {
    match name {
        "Address" => c
            .addresses
            .iter()
            .map(|a| match a {
                AddressConfig::Ip(ip) => ip.to_string(),
                AddressConfig::Hostname(h) => h.clone(),
            })
            .collect(),
        "AssumeReachable" => b(c.assume_reachable),
        "FetchDirInfoEarly" => b(c.fetch_dir_info_early),
        "FetchDirInfoExtraEarly" => b(c.fetch_dir_info_extra_early),
        "BandwidthBurst" => one(c.bandwidth.burst),
        "BandwidthRate" => one(c.bandwidth.rate),
        "CircuitPadding" => b(true),
        "ConnectionPadding" => one("auto"),
        "ContactInfo" => opt(&c.contact_info),
        "ControlPort" => c
            .control_ports
            .iter()
            .map(listen_port)
            .chain(
                c.control
                    .unix_sockets
                    .iter()
                    .map(|p| format!("unix:{}", p.display())),
            )
            .collect(),
        // Unix sockets from ControlSocket lines are listed under ControlPort (unix:PATH).
        "ControlSocket" => Vec::new(),
        "CookieAuthFile" => path(&c.control.cookie_auth_file),
        "CookieAuthFileGroupReadable" => b(c.control.cookie_auth_file_group_readable),
        "CookieAuthentication" => b(c.cookie_authentication),
        "DataDirectory" => one(c.data_directory.display()),
        "DirAuthority" => c.dir_authorities.iter().map(dir_authority).collect(),
        "DirCache" => b(c.dir_cache),
        "DirPort" => c.dir_ports.iter().map(listen_port).collect(),
        "DirPortFrontPage" => c
            .dir_port_front_page
            .iter()
            .map(|f| f.path.display().to_string())
            .collect(),
        "DisableDebuggerAttachment" => b(c.disable_debugger_attachment),
        "DoSCircuitCreationBurst" => one(c.dos.cc_circuit_burst),
        "DoSCircuitCreationDefenseTimePeriod" => one(c.dos.cc_defense_time_period),
        "DoSCircuitCreationDefenseType" => one(c.dos.cc_defense_type),
        "DoSCircuitCreationEnabled" => autobool(c.dos.cc_enabled),
        "DoSCircuitCreationMinConnections" => one(c.dos.cc_min_concurrent_conn),
        "DoSCircuitCreationRate" => one(c.dos.cc_circuit_rate),
        "DoSConnectionConnectBurst" => one(c.dos.conn_connect_burst),
        "DoSConnectionConnectDefenseTimePeriod" => one(c.dos.conn_connect_defense_time_period),
        "DoSConnectionConnectRate" => one(c.dos.conn_connect_rate),
        "DoSConnectionDefenseType" => one(c.dos.conn_defense_type),
        "DoSConnectionEnabled" => autobool(c.dos.conn_enabled),
        "DoSConnectionMaxConcurrentCount" => one(c.dos.conn_max_concurrent_count),
        "ExitPolicy" => c.exit_policy.iter().map(|(s, _)| s.clone()).collect(),
        "ExitPolicyRejectLocalInterfaces" => b(c.exit_policy_reject_local_interfaces),
        "ExitPolicyRejectPrivate" => b(c.exit_policy_reject_private),
        "ExitRelay" => one(match c.exit_relay {
            ExitRelay::Auto => "auto",
            ExitRelay::No => "0",
            ExitRelay::Yes => "1",
        }),
        "FamilyId" => c
            .family_ids
            .iter()
            .map(|f| match f {
                FamilyId::All => "*".to_string(),
                FamilyId::Key(k) => k.to_base64(),
            })
            .collect(),
        "FamilyKeyDirectory" => path(&c.family_key_directory),
        "HardwareProfile" => opt(&c.hardware_profile),
        "HashedControlPassword" => c.control.hashed_passwords.clone(),
        "IPv6Exit" => b(c.ipv6_exit),
        "Log" => c.logs.iter().map(|l| l.raw.clone()).collect(),
        "LogTimeGranularity" => one(c.log_time_granularity.as_millis()),
        "MaxMemInQueues" => one(c.max_mem_in_queues),
        "TestingMaxMemInQueues" => one(c.testing_max_mem_in_queues),
        "MaxHSDirCacheBytes" => one(c.max_hsdir_cache_bytes),
        "MetricsPort" => c.metrics_ports.iter().map(listen_port).collect(),
        "MetricsPortPolicy" => c
            .metrics_port_policy
            .iter()
            .map(|(s, _)| s.clone())
            .collect(),
        "MyFamily" => c
            .my_family
            .iter()
            .map(|id| format!("${}", id.to_hex()))
            .collect(),
        "Nickname" => one(&c.nickname),
        "NumCPUs" => one(c.num_cpus),
        "ORPort" => c.or_ports.iter().map(or_port).collect(),
        "OutboundBindAddress" => c
            .outbound_bind_addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
        "OutboundBindAddressExit" => c
            .outbound_bind_addresses_exit
            .iter()
            .map(ToString::to_string)
            .collect(),
        "OutboundBindAddressOR" => c
            .outbound_bind_addresses_or
            .iter()
            .map(ToString::to_string)
            .collect(),
        "PidFile" => path(&c.pid_file),
        "ProtocolWarnings" => b(c.protocol_warnings),
        "PublishServerDescriptor" => b(c.publish_server_descriptor),
        "ReducedExitPolicy" => b(c.reduced_exit_policy),
        "RelayBandwidthBurst" => one(c.bandwidth.relay_burst),
        "RelayBandwidthRate" => one(c.bandwidth.relay_rate),
        "ReducedCircuitPadding" => b(false),
        "ReducedConnectionPadding" => b(false),
        "RunAsDaemon" => b(false),
        "SafeLogging" => one(match c.safe_logging {
            SafeLogging::Off => "0",
            SafeLogging::All => "1",
            SafeLogging::Relay => "relay",
        }),
        "ServerDNSResolvConfFile" => path(&c.server_dns_resolv_conf_file),
        "ShutdownWaitLength" => one(c.shutdown_wait_length.as_secs()),
        "HeartbeatPeriod" => one(c.heartbeat_period.as_secs()),
        "KeepalivePeriod" => one(c.keepalive_period.as_secs()),
        "AccountingMax" => one(c.accounting_max),
        "AccountingRule" => one(c.accounting_rule.as_str()),
        "AccountingStart" => opt(&c.accounting_start.map(|s| s.to_string())),
        "SocksPort" => one(0),
        "TestingTorNetwork" => b(c.testing_tor_network),
        "User" => opt(&c.user),
        // Every SUPPORTED name is listed above; the table test keeps it that way.
        _ => Vec::new(),
    }
}

/// `GETCONF name`: `None` for names Fors neither implements nor ignores (C tor's 552).
pub fn conf_value(c: &Config, name: &str) -> Option<ConfValue> {
    match lookup(name) {
        Lookup::Supported(canon, _) => Some(ConfValue::Set(canon, values(c, canon))),
        Lookup::Ignored(canon, _) => Some(ConfValue::Ignored(canon)),
        Lookup::Obsolete(_) | Lookup::Unsupported(_) | Lookup::Unknown => None,
    }
}

/// The type word `GETINFO config/names` gives for an option (C tor's type names).
pub fn type_name(name: &str) -> &'static str {
    match name {
        "BandwidthBurst"
        | "BandwidthRate"
        | "RelayBandwidthBurst"
        | "RelayBandwidthRate"
        | "MaxMemInQueues"
        | "TestingMaxMemInQueues"
        | "MaxHSDirCacheBytes"
        | "AccountingMax" => "DataSize",
        "ShutdownWaitLength" | "HeartbeatPeriod" | "KeepalivePeriod" => "TimeInterval",
        "NumCPUs" => "Integer",
        "ExitRelay" | "ConnectionPadding" => "Autobool",
        "ORPort" | "ControlPort" | "MetricsPort" | "DirPort" | "SocksPort" => "LineList",
        _ => match SUPPORTED.iter().find(|(n, _)| *n == name) {
            Some((_, OptionKind::List)) => "LineList",
            _ if values_are_bool(name) => "Boolean",
            _ => "String",
        },
    }
}

fn values_are_bool(name: &str) -> bool {
    matches!(
        name,
        "AssumeReachable"
            | "CircuitPadding"
            | "CookieAuthFileGroupReadable"
            | "CookieAuthentication"
            | "DirCache"
            | "DisableDebuggerAttachment"
            | "ExitPolicyRejectLocalInterfaces"
            | "ExitPolicyRejectPrivate"
            | "FetchDirInfoEarly"
            | "FetchDirInfoExtraEarly"
            | "IPv6Exit"
            | "PublishServerDescriptor"
            | "ReducedCircuitPadding"
            | "ReducedConnectionPadding"
            | "ReducedExitPolicy"
            | "RunAsDaemon"
            | "TestingTorNetwork"
    )
}

/// `GETINFO config/names`: one `Name Type` line per implemented option.
pub fn config_names() -> String {
    let mut out = String::new();
    for (n, _) in SUPPORTED {
        out.push_str(n);
        out.push(' ');
        out.push_str(type_name(n));
        out.push('\n');
    }
    out
}

/// `GETINFO config-text`: `Name value` lines for every implemented option whose value
/// differs from the default (ORPort always appears: it has no default).
pub fn config_text(c: &Config) -> String {
    // The defaults are what a torrc with only the required ORPort yields.
    let defaults = super::parse_str(&MemFs::default(), "defaults", "ORPort auto\n")
        .ok()
        .map(|(d, _)| d);
    let mut out = String::new();
    for (n, _) in SUPPORTED {
        let v = values(c, n);
        if defaults.as_ref().is_some_and(|d| values(d, n) == v) {
            continue;
        }
        for line in v {
            out.push_str(n);
            out.push(' ');
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn cfg(text: &str) -> Config {
        parse_str(&MemFs::default(), "torrc", text).unwrap().0
    }

    #[test]
    fn every_supported_option_renders() {
        let c = cfg("ORPort 127.0.0.1:9001 NoAdvertise\nORPort 443 NoListen\nNickname Fred\nContactInfo a b\n\
             ControlPort 9051\nControlPort unix:/run/fors/control\nCookieAuthentication 1\n\
             ExitPolicy accept *:80, reject *:*\nBandwidthRate 10 MB\nShutdownWaitLength 2 minutes\n\
             Log notice stdout\n");
        let get = |n: &str| match conf_value(&c, n) {
            Some(ConfValue::Set(_, v)) => v,
            other => panic!("{n}: {other:?}"),
        };
        assert_eq!(
            get("orport"),
            ["127.0.0.1:9001 NoAdvertise", "443 NoListen"]
        );
        assert_eq!(get("Nickname"), ["Fred"]);
        assert_eq!(get("ContactInfo"), ["a b"]);
        assert_eq!(get("ControlPort"), ["9051", "unix:/run/fors/control"]);
        assert_eq!(get("CookieAuthentication"), ["1"]);
        assert_eq!(get("ExitPolicy"), ["accept *:80", "reject *:*"]);
        assert_eq!(get("BandwidthRate"), ["10485760"]);
        assert_eq!(get("ShutdownWaitLength"), ["120"]);
        assert_eq!(get("Log"), ["notice stdout"]);
        assert_eq!(get("PidFile"), Vec::<String>::new());
        assert_eq!(get("ExitRelay"), ["auto"]);
        // Aliases resolve to the canonical name.
        assert_eq!(
            conf_value(&c, "NumCPU"),
            Some(ConfValue::Set("NumCPUs", vec!["0".into()]))
        );
        assert_eq!(
            conf_value(&c, "sandbox"),
            Some(ConfValue::Ignored("Sandbox"))
        );
        assert_eq!(conf_value(&c, "HiddenServiceDir"), None);
        assert_eq!(conf_value(&c, "NoSuchOption"), None);
        // A value for every implemented option, or a deliberate "unset".
        let unset_by_default = [
            "Address",
            "ContactInfo",
            "CookieAuthFile",
            "DirAuthority",
            "DirPort",
            "DirPortFrontPage",
            "FamilyId",
            "FamilyKeyDirectory",
            "HardwareProfile",
            "AccountingStart",
            "HashedControlPassword",
            "MetricsPort",
            "MetricsPortPolicy",
            "MyFamily",
            "OutboundBindAddress",
            "OutboundBindAddressExit",
            "OutboundBindAddressOR",
            "ControlSocket",
            "PidFile",
            "ServerDNSResolvConfFile",
            "User",
        ];
        for (n, _) in SUPPORTED {
            if !unset_by_default.contains(n) {
                assert!(!values(&c, n).is_empty(), "{n} renders nothing");
            }
        }
    }

    #[test]
    fn config_text_lists_only_changed_options() {
        let c = cfg("ORPort 9001\nNickname Fred\nIPv6Exit 0\nExitPolicy accept *:443\n");
        let text = config_text(&c);
        assert_eq!(
            text, "ExitPolicy accept *:443\nNickname Fred\nORPort 9001\n",
            "{text}"
        );
        let names = config_names();
        assert!(names.contains("Nickname String\n"), "{names}");
        assert!(names.contains("IPv6Exit Boolean\n"), "{names}");
        assert!(names.contains("BandwidthRate DataSize\n"), "{names}");
        assert!(names.contains("ExitPolicy LineList\n"), "{names}");
    }
}
