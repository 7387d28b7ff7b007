//! SIGHUP: what changed between two configurations, and what a change takes effect on.
//!
//! Fors's reload is partial (docs/operating.md): logging, the exit policy, the bandwidth
//! limits and the PidFile are applied at once; descriptor contents (nickname, contact, bandwidth, family,
//! addresses, exit policy) go into the next descriptor; anything that shapes the process
//! (ports, DataDirectory, shards, hardware profile, authorities) needs a restart and is
//! logged as such, while the old value stays in force.

use crate::config::{Config, Location};

/// When a changed option takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadEffect {
    /// Applied by the reload itself.
    Now,
    /// Goes into the next descriptor the relay publishes.
    NextDescriptor,
    /// Ignored until Fors is restarted.
    Restart,
}

/// One changed option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The torrc option name.
    pub option: &'static str,
    pub effect: ReloadEffect,
}

fn clear_locations(c: &mut Config) {
    let none = Location::new("", 0);
    for p in &mut c.or_ports {
        p.location = none.clone();
    }
    for p in c
        .control_ports
        .iter_mut()
        .chain(&mut c.metrics_ports)
        .chain(&mut c.dir_ports)
    {
        p.location = none.clone();
    }
    for (_, l) in c.exit_policy.iter_mut().chain(&mut c.metrics_port_policy) {
        *l = none.clone();
    }
    for l in &mut c.logs {
        l.location = none.clone();
    }
    for a in &mut c.dir_authorities {
        a.location = none.clone();
    }
}

macro_rules! config_changes {
    ($old:ident, $new:ident; $( $field:ident => $option:literal, $effect:ident; )*) => {{
        // No `..`: a field added to Config is a compile error here until it is classified.
        let Config { $( $field: _ ),* } = &$old;
        let mut out = Vec::new();
        $(
            if $old.$field != $new.$field {
                out.push(Change { option: $option, effect: ReloadEffect::$effect });
            }
        )*
        out
    }};
}

/// The options whose values differ (ignoring which line they are on).
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let (mut a, mut b) = (old.clone(), new.clone());
    clear_locations(&mut a);
    clear_locations(&mut b);
    config_changes! { a, b;
        nickname => "Nickname", NextDescriptor;
        contact_info => "ContactInfo", NextDescriptor;
        or_ports => "ORPort", Restart;
        addresses => "Address", NextDescriptor;
        data_directory => "DataDirectory", Restart;
        dir_authorities => "DirAuthority", Restart;
        testing_tor_network => "TestingTorNetwork", Restart;
        network_timings => "TestingTorNetwork", Restart;
        exit_relay => "ExitRelay", Now;
        exit_policy => "ExitPolicy", Now;
        exit_policy_reject_private => "ExitPolicyRejectPrivate", Now;
        exit_policy_reject_local_interfaces => "ExitPolicyRejectLocalInterfaces", Now;
        reduced_exit_policy => "ReducedExitPolicy", Now;
        ipv6_exit => "IPv6Exit", Now;
        bandwidth => "BandwidthRate/BandwidthBurst/RelayBandwidth*", Now;
        my_family => "MyFamily", NextDescriptor;
        family_ids => "FamilyId", NextDescriptor;
        family_key_directory => "FamilyKeyDirectory", NextDescriptor;
        dir_cache => "DirCache", Restart;
        fetch_dir_info_early => "FetchDirInfoEarly", Now;
        fetch_dir_info_extra_early => "FetchDirInfoExtraEarly", Now;
        logs => "Log", Now;
        safe_logging => "SafeLogging", Now;
        log_time_granularity => "LogTimeGranularity", Now;
        protocol_warnings => "ProtocolWarnings", Now;
        pid_file => "PidFile", Now;
        server_dns_resolv_conf_file => "ServerDNSResolvConfFile", Restart;
        num_cpus => "NumCPUs", Restart;
        hardware_profile => "HardwareProfile", Restart;
        // Bound into the directory worker and the self-test at start-up: a restart applies
        // them everywhere at once rather than to some connections only.
        outbound_bind_addresses => "OutboundBindAddress", Restart;
        outbound_bind_addresses_or => "OutboundBindAddressOR", Restart;
        outbound_bind_addresses_exit => "OutboundBindAddressExit", Restart;
        control_ports => "ControlPort", Restart;
        cookie_authentication => "CookieAuthentication", Restart;
        control => "ControlPort/CookieAuthFile/CookieAuthFileGroupReadable/HashedControlPassword", Restart;
        metrics_ports => "MetricsPort", Restart;
        metrics_port_policy => "MetricsPortPolicy", Restart;
        dir_ports => "DirPort", Restart;
        // Re-read on every reload (the file's contents are part of the value).
        dir_port_front_page => "DirPortFrontPage", Now;
        publish_server_descriptor => "PublishServerDescriptor", NextDescriptor;
        assume_reachable => "AssumeReachable", NextDescriptor;
        max_mem_in_queues => "MaxMemInQueues", Now;
        testing_max_mem_in_queues => "TestingMaxMemInQueues", Now;
        max_hsdir_cache_bytes => "MaxHSDirCacheBytes", Restart;
        shutdown_wait_length => "ShutdownWaitLength", Now;
        heartbeat_period => "HeartbeatPeriod", Now;
        // Given to each shard when it starts.
        keepalive_period => "KeepalivePeriod", Restart;
        user => "User", Restart;
        disable_debugger_attachment => "DisableDebuggerAttachment", Restart;
        dos => "DoSCircuitCreation*/DoSConnection*", Now;
        // C `options_act_relay_accounting` reconfigures accounting on SIGHUP; the
        // descriptor changes with it (`options_transition_affects_descriptor`).
        accounting_max => "AccountingMax", Now;
        accounting_rule => "AccountingRule", Now;
        accounting_start => "AccountingStart", Now;
    }
}

/// The name the bandwidth options are reported under.
pub const BANDWIDTH: &str = "BandwidthRate/BandwidthBurst/RelayBandwidth*";

/// Whether the bandwidth limits changed: enforced at once by the shards' token buckets,
/// and advertised in the next descriptor.
pub fn bandwidth_changed(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.option == BANDWIDTH)
}

/// Whether any change touches the exit policy (it must be rebuilt).
pub fn exit_policy_changed(changes: &[Change]) -> bool {
    changes.iter().any(|c| {
        matches!(
            c.option,
            "ExitRelay"
                | "ExitPolicy"
                | "ExitPolicyRejectPrivate"
                | "ExitPolicyRejectLocalInterfaces"
                | "ReducedExitPolicy"
                | "IPv6Exit"
                | "Address"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};

    fn cfg(text: &str) -> Config {
        parse_str(&MemFs::default(), "torrc", text).unwrap().0
    }

    const BASE: &str = "ORPort 127.0.0.1:9001\nDataDirectory /tmp/x\nNickname a\n\
                        ExitPolicy accept *:80\nPublishServerDescriptor 0\n";

    #[test]
    fn same_values_on_other_lines_are_no_change() {
        let a = cfg(BASE);
        let b = cfg(&format!("\n\n# moved\n{BASE}"));
        assert_eq!(changes(&a, &b), vec![]);
    }

    #[test]
    fn changes_are_named_and_classified() {
        let a = cfg(BASE);
        let b = cfg(&BASE
            .replace("Nickname a", "Nickname b")
            .replace("9001", "9002")
            .replace("*:80", "*:443"));
        let c = changes(&a, &b);
        assert_eq!(
            c,
            vec![
                Change {
                    option: "Nickname",
                    effect: ReloadEffect::NextDescriptor
                },
                Change {
                    option: "ORPort",
                    effect: ReloadEffect::Restart
                },
                Change {
                    option: "ExitPolicy",
                    effect: ReloadEffect::Now
                },
            ]
        );
        assert!(exit_policy_changed(&c));
        assert!(!exit_policy_changed(&c[..2]));
    }

    #[test]
    fn protocol_warnings_apply_at_once() {
        // SIGHUP sets the new severity (`relay::mod` `reload`, `log::set_protocol_warnings`).
        let a = cfg(BASE);
        let b = cfg(&format!("{BASE}ProtocolWarnings 1\n"));
        assert_eq!(
            changes(&a, &b),
            vec![Change {
                option: "ProtocolWarnings",
                effect: ReloadEffect::Now
            }]
        );
    }

    #[test]
    fn bandwidth_limits_are_live() {
        let a = cfg(BASE);
        let b = cfg(&format!(
            "{BASE}RelayBandwidthRate 2 MBytes\nRelayBandwidthBurst 4 MBytes\n"
        ));
        let c = changes(&a, &b);
        assert_eq!(
            c,
            vec![Change {
                option: BANDWIDTH,
                effect: ReloadEffect::Now
            }]
        );
        assert!(bandwidth_changed(&c));
        assert!(!bandwidth_changed(&changes(&a, &a)));
    }
}
