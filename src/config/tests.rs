//! End-to-end tests: torrc text → typed Config, with exact `file:line` error messages.

use super::*;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const FP: &str = "DEADBEEF00112233445566778899AABBCCDDEEFF";
const MIN: &str = "ORPort 9001\nContactInfo ops@example.org\n";

fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    parse_str(&MemFs::default(), "torrc", text)
}

fn ok(extra: &str) -> Config {
    parse(&format!("{MIN}{extra}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// The error for `extra` placed on line 3 (after the two minimal lines).
fn err(extra: &str) -> String {
    parse(&format!("{MIN}{extra}"))
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_match_c_tor() {
    let (c, w) = parse(MIN).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.nickname, "Unnamed");
    assert_eq!(c.data_directory, PathBuf::from("/var/lib/fors"));
    assert_eq!(c.exit_relay, ExitRelay::Auto);
    assert!(!c.wants_exit());
    assert!(c.exit_policy_reject_private);
    assert!(!c.exit_policy_reject_local_interfaces && !c.reduced_exit_policy && !c.ipv6_exit);
    assert_eq!(
        c.bandwidth,
        BandwidthConfig {
            rate: 1 << 30,
            burst: 1 << 30,
            relay_rate: 0,
            relay_burst: 0
        }
    );
    // C tor's default DirCache is 1.
    assert!(c.dir_cache && c.publish_server_descriptor);
    assert_eq!(c.safe_logging, SafeLogging::All);
    assert_eq!(c.log_time_granularity, Duration::from_secs(1));
    assert_eq!(
        ok("LogTimeGranularity 250 msec\n").log_time_granularity,
        Duration::from_millis(250)
    );
    // C tor's default ProtocolWarnings is 0 (peers' violations at info); 1 is warn.
    assert!(!c.protocol_warnings);
    assert!(!ok("ProtocolWarnings 0\n").protocol_warnings);
    assert!(ok("ProtocolWarnings 1\n").protocol_warnings);
    assert!(!c.assume_reachable && !c.cookie_authentication && !c.testing_tor_network);
    assert_eq!(c.network_timings, NetworkTimings::PUBLIC);
    assert_eq!(c.shutdown_wait_length, Duration::from_secs(30));
    assert_eq!((c.num_cpus, c.max_mem_in_queues), (0, 0));
    assert_eq!(
        c.effective_logs(),
        vec![(
            LogSeverity::Notice,
            LogSeverity::Err,
            LogDestination::Stdout
        )]
    );
    assert!(c.dir_authorities.is_empty() && c.control_ports.is_empty());
}

#[test]
fn full_relay_torrc() {
    let text = format!(
        "# A realistic exit relay\n\
         Nickname  ForsExit01\n\
         ContactInfo ops@example.org\n\
         ORPort 443\n\
         ORPort [2001:db8::1]:443 IPv6Only\n\
         Address 203.0.113.5\n\
         DataDirectory /var/lib/fors\n\
         ExitRelay 1\n\
         ExitPolicy accept *:80, accept *:443 # web\n\
         ExitPolicy reject *:*\n\
         IPv6Exit 1\n\
         RelayBandwidthRate 10 MB\n\
         BandwidthRate 20 MBytes\n\
         BandwidthBurst 40 MB\n\
         MyFamily ${FP},$0123456789ABCDEF0123456789ABCDEF01234567\n\
         FamilyId AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
         FamilyId *\n\
         Log notice file /var/log/fors/notices.log\n\
         Log info stdout\n\
         PidFile /run/fors.pid\n\
         RunAsDaemon 0\n\
         SocksPort 0\n\
         ServerDNSResolvConfFile /etc/fors/resolv.conf\n\
         NumCPUs 2\n\
         HardwareProfile epyc-2core\n\
         OutboundBindAddress 203.0.113.5\n\
         OutboundBindAddressExit 203.0.113.6\n\
         OutboundBindAddressExit [2001:db8::6]\n\
         ControlPort 9051\n\
         CookieAuthentication 1\n\
         MetricsPort 127.0.0.1:9035 prometheus\n\
         MetricsPortPolicy accept 127.0.0.1\n\
         PublishServerDescriptor 1\n\
         AssumeReachable 1\n\
         MaxMemInQueues 2 GB\n\
         ShutdownWaitLength 5 seconds\n\
         User fors\n\
         DirCache 0\n\
         ExitPolicyRejectLocalInterfaces 1\n\
         ReducedExitPolicy 0\n"
    );
    let (c, w) = parse(&text).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.nickname, "ForsExit01");
    assert_eq!(c.or_ports.len(), 2);
    assert!(c.or_ports[1].ipv6_only && !c.or_ports[1].no_listen);
    assert_eq!(
        c.addresses,
        [AddressConfig::Ip("203.0.113.5".parse().unwrap())]
    );
    assert!(c.wants_exit() && c.ipv6_exit);
    let items: Vec<(String, String)> = c
        .exit_policy
        .iter()
        .map(|(s, l)| (s.clone(), l.to_string()))
        .collect();
    assert_eq!(
        items,
        [
            ("accept *:80".to_string(), "torrc:9".to_string()),
            ("accept *:443".to_string(), "torrc:9".to_string()),
            ("reject *:*".to_string(), "torrc:10".to_string()),
        ]
    );
    assert_eq!(
        c.bandwidth,
        BandwidthConfig {
            rate: 20 << 20,
            burst: 40 << 20,
            relay_rate: 10 << 20,
            relay_burst: 10 << 20
        }
    );
    assert_eq!(c.my_family.len(), 2);
    assert_eq!(c.my_family[0].to_hex(), FP);
    assert_eq!(c.family_ids.len(), 2);
    assert!(matches!(c.family_ids[0], FamilyId::Key(_)));
    assert_eq!(c.family_ids[1], FamilyId::All);
    assert_eq!(
        c.logs[0].destination,
        LogDestination::File("/var/log/fors/notices.log".into())
    );
    assert_eq!(c.logs[1].min, LogSeverity::Info);
    assert_eq!(c.pid_file, Some("/run/fors.pid".into()));
    assert_eq!(
        c.server_dns_resolv_conf_file,
        Some("/etc/fors/resolv.conf".into())
    );
    assert_eq!(c.num_cpus, 2);
    assert_eq!(c.hardware_profile.as_deref(), Some("epyc-2core"));
    assert_eq!(
        c.outbound_bind_addresses,
        ["203.0.113.5".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(c.outbound_bind_addresses_exit.len(), 2);
    assert_eq!(c.control_ports[0].address, None);
    assert!(c.cookie_authentication);
    assert_eq!(c.metrics_ports[0].flags, ["prometheus"]);
    assert_eq!(c.metrics_port_policy[0].0, "accept 127.0.0.1");
    assert!(c.assume_reachable && !c.dir_cache && c.exit_policy_reject_local_interfaces);
    assert_eq!(c.max_mem_in_queues, 2 << 30);
    assert_eq!(c.shutdown_wait_length, Duration::from_secs(5));
    assert_eq!(c.user.as_deref(), Some("fors"));
}

#[test]
fn testing_tor_network_changes_relay_values() {
    let c = ok(&format!(
        "TestingTorNetwork 1\nDirAuthority test000a orport=5000 \
         v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:7000 {FP}\n\
         Address 127.0.0.1\n"
    ));
    assert!(c.testing_tor_network);
    assert_eq!(c.network_timings, NetworkTimings::TESTING);
    assert!(
        !c.exit_policy_reject_private,
        "testnet default for ExitPolicyRejectPrivate is 0"
    );
    assert!(c.network_timings.extend_allow_private_addresses);
    assert_eq!(
        c.network_timings.min_time_to_report_bandwidth,
        Duration::ZERO
    );
    assert_eq!(c.dir_authorities[0].or_port, Some(5000));
    // An explicit setting still wins over the test-network default.
    let c = ok(&format!(
        "TestingTorNetwork 1\nExitPolicyRejectPrivate 1\nDirAuthority 127.0.0.1:7000 {FP}\n"
    ));
    assert!(c.exit_policy_reject_private);
    assert_eq!(
        err("TestingTorNetwork 1\n"),
        "torrc:3: TestingTorNetwork may only be used with a non-default set of DirAuthority lines"
    );
}

#[test]
fn bad_values_name_file_line_and_option() {
    let cases: &[(&str, &str)] = &[
        ("Nickname ThisNicknameIsWayTooLong", "torrc:3: bad value \"ThisNicknameIsWayTooLong\" for Nickname: nicknames are 1 to 19 characters of [A-Za-z0-9]"),
        ("Nickname bad-name", "for Nickname"),
        ("ORPort 70000", "torrc:3: bad value \"70000\" for ORPort"),
        ("ORPort 0", "torrc:3: bad value \"0\" for ORPort: \"ORPort 0\" given together with a nonzero ORPort"),
        ("Address not_an_address!", "torrc:3: bad value \"not_an_address!\" for Address"),
        ("Address 1.2.3.4\nAddress 5.6.7.8", "torrc:4: bad value \"5.6.7.8\" for Address"),
        ("DirAuthority 1.2.3.4:80 XYZ", "torrc:3: bad value \"1.2.3.4:80 XYZ\" for DirAuthority"),
        ("TestingTorNetwork yes", "torrc:3: bad value \"yes\" for TestingTorNetwork: allowed values are 0 and 1"),
        ("ExitRelay maybe", "torrc:3: bad value \"maybe\" for ExitRelay: allowed values are 0, 1, and auto"),
        ("ExitPolicyRejectPrivate 2", "for ExitPolicyRejectPrivate"),
        ("ExitPolicyRejectLocalInterfaces x", "for ExitPolicyRejectLocalInterfaces"),
        ("ReducedExitPolicy true", "for ReducedExitPolicy"),
        ("IPv6Exit on", "for IPv6Exit"),
        ("RelayBandwidthRate 10 parsecs", "torrc:3: bad value \"10 parsecs\" for RelayBandwidthRate: unknown unit"),
        ("RelayBandwidthBurst lots", "for RelayBandwidthBurst"),
        ("BandwidthRate 3 GB", "torrc:3: bad value \"3 GB\" for BandwidthRate: must be at most 2147483647"),
        ("BandwidthBurst -1", "for BandwidthBurst"),
        ("BandwidthRate 10 KB", "torrc:3: BandwidthRate is set to 10240 bytes/second; for relays it must be at least 76800"),
        ("BandwidthRate 2 MB\nBandwidthBurst 1 MB", "torrc:4: BandwidthBurst must be at least equal to BandwidthRate"),
        ("RelayBandwidthRate 2 MB\nRelayBandwidthBurst 1 MB", "torrc:4: RelayBandwidthBurst must be at least equal to RelayBandwidthRate"),
        ("MyFamily somenickname", "torrc:3: bad value \"somenickname\" for MyFamily"),
        ("FamilyId notbase64!!", "for FamilyId"),
        ("DirCache maybe", "for DirCache"),
        ("DirPort 9030\nDirCache 0", "torrc:3: DirPort configured but DirCache disabled. DirPort requires DirCache."),
        ("DirPort 9030 IPv4Only", "torrc:3: DirPort: unsupported flag \"IPv4Only\""),
        ("DirPort 9030 NoListen NoAdvertise", "torrc:3: DirPort: NoAdvertise and NoListen together"),
        ("DirPortFrontPage /nonexistent/fors-front-page.html", "torrc:3: bad value \"/nonexistent/fors-front-page.html\" for DirPortFrontPage: cannot read it"),
        ("ORPort 9001", "torrc:3: ORPort: the same address and port as the ORPort at torrc:1"),
        ("LogTimeGranularity 300 msec", "for LogTimeGranularity: must be positive and divide"),
        ("LogTimeGranularity 0", "for LogTimeGranularity"),
        ("SafeLogging 2", "torrc:3: bad value \"2\" for SafeLogging: allowed values are 0, 1 and relay"),
        ("ControlSocket run/control", "torrc:3: bad value \"run/control\" for ControlSocket: a ControlSocket needs an absolute path"),
        ("ExtraInfoStatistics 1", "torrc:3: bad value \"1\" for ExtraInfoStatistics: Fors does not implement this value: Fors collects and publishes no extra-info statistics"),
        ("ConnectionPadding 0", "torrc:3: bad value \"0\" for ConnectionPadding: Relays must use 'auto' for the ConnectionPadding setting."),
        ("ConnectionPadding 1", "torrc:3: bad value \"1\" for ConnectionPadding: Relays must use 'auto'"),
        ("ConnectionPadding yes", "torrc:3: bad value \"yes\" for ConnectionPadding: allowed values are 0, 1, and auto"),
        ("ReducedConnectionPadding 1", "torrc:3: bad value \"1\" for ReducedConnectionPadding: Relays cannot set ReducedConnectionPadding."),
        ("ReducedConnectionPadding 2", "torrc:3: bad value \"2\" for ReducedConnectionPadding: allowed values are 0 and 1"),
        ("CircuitPadding 0", "torrc:3: bad value \"0\" for CircuitPadding: Relays cannot set CircuitPadding to 0."),
        ("CircuitPadding 2", "torrc:3: bad value \"2\" for CircuitPadding: allowed values are 0 and 1"),
        ("ReducedCircuitPadding 1", "torrc:3: bad value \"1\" for ReducedCircuitPadding: Relays cannot set ReducedCircuitPadding."),
        ("FetchDirInfoExtraEarly 1", "torrc:3: bad value \"1\" for FetchDirInfoExtraEarly: FetchDirInfoExtraEarly requires that you also set FetchDirInfoEarly"),
        ("FetchDirInfoEarly 1\nDirCache 0", "for FetchDirInfoEarly: Fors applies FetchDirInfoEarly only to its directory cache"),
        ("Sandbox 1", "for Sandbox"),
        ("DisableAllSwap 1", "for DisableAllSwap"),
        ("ProtocolWarnings 2", "torrc:3: bad value \"2\" for ProtocolWarnings: allowed values are 0 and 1"),
        ("ProtocolWarnings warn", "torrc:3: bad value \"warn\" for ProtocolWarnings: allowed values are 0 and 1"),
        ("ServerDNSRandomizeCase 0", "for ServerDNSRandomizeCase"),
        ("DoSStreamCreationEnabled 1", "for DoSStreamCreationEnabled"),
        ("SyslogIdentityTag relay1", "for SyslogIdentityTag"),
        ("ControlPortWriteToFile /run/fors/port", "torrc:3: C tor option \"ControlPortWriteToFile\" is not supported by Fors"),
        ("Log loud stdout", "torrc:3: bad value \"loud stdout\" for Log: unknown severity \"loud\""),
        ("RunAsDaemon 1", "torrc:3: bad value \"1\" for RunAsDaemon: Fors always runs in the foreground"),
        ("SocksPort 9050", "torrc:3: bad value \"9050\" for SocksPort: Fors is a relay, not a client"),
        ("NumCPUs -2", "torrc:3: bad value \"-2\" for NumCPUs"),
        ("OutboundBindAddress host.example", "for OutboundBindAddress"),
        ("OutboundBindAddressExit 1.2.3.4 5.6.7.8", "for OutboundBindAddressExit: \"1.2.3.4 5.6.7.8\" is not one IP address"),
        ("OutboundBindAddressExit 1.2.3.4\nOutboundBindAddressExit 5.6.7.8", "torrc:4: bad value \"5.6.7.8\" for OutboundBindAddressExit: only one IPv4"),
        ("ControlPort unix:run/control", "for ControlPort: a Unix-socket ControlPort needs an absolute path"),
        ("ControlPort 192.0.2.7:9051", "torrc:3: bad value \"192.0.2.7:9051\" for ControlPort: 192.0.2.7 is not a loopback address"),
        ("ControlPort 0.0.0.0:9051", "for ControlPort: 0.0.0.0 is not a loopback address"),
        ("ControlPort [2001:db8::1]:9051", "for ControlPort: 2001:db8::1 is not a loopback address"),
        ("HashedControlPassword 16:ABC", "torrc:3: bad value \"16:ABC\" for HashedControlPassword"),
        ("HashedControlPassword secret", "for HashedControlPassword"),
        ("CookieAuthFileGroupReadable maybe", "for CookieAuthFileGroupReadable"),
        ("MetricsPort 1.2.3.4", "for MetricsPort"),
        ("CookieAuthentication yes", "for CookieAuthentication"),
        ("DirPort 99999", "for DirPort"),
        ("PublishServerDescriptor bridge", "for PublishServerDescriptor: Fors does not run as a bridge"),
        ("AssumeReachable 5", "for AssumeReachable"),
        ("MaxMemInQueues 5 zettabytes", "for MaxMemInQueues"),
        ("ShutdownWaitLength forever", "for ShutdownWaitLength"),
        ("User \"two words\"", "for User"),
        ("DoSCircuitCreationEnabled yes", "torrc:3: bad value \"yes\" for DoSCircuitCreationEnabled: allowed values are 0, 1, and auto"),
        ("DoSConnectionEnabled 2", "for DoSConnectionEnabled"),
        ("DoSCircuitCreationBurst -1", "torrc:3: bad value \"-1\" for DoSCircuitCreationBurst: expected an integer from 0 to 2147483647"),
        ("DoSCircuitCreationRate 2147483648", "for DoSCircuitCreationRate"),
        ("DoSCircuitCreationMinConnections many", "for DoSCircuitCreationMinConnections"),
        ("DoSConnectionMaxConcurrentCount 1.5", "for DoSConnectionMaxConcurrentCount"),
        ("DoSConnectionConnectRate x", "for DoSConnectionConnectRate"),
        ("DoSConnectionConnectBurst -3", "for DoSConnectionConnectBurst"),
        ("DoSCircuitCreationDefenseType 3", "torrc:3: bad value \"3\" for DoSCircuitCreationDefenseType: allowed values are 0 (consensus), 1 (none) and 2 (defend)"),
        ("DoSConnectionDefenseType -1", "for DoSConnectionDefenseType"),
        ("DoSCircuitCreationDefenseTimePeriod 1 fortnightish", "for DoSCircuitCreationDefenseTimePeriod"),
        ("DoSConnectionConnectDefenseTimePeriod 100 years", "for DoSConnectionConnectDefenseTimePeriod"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        assert!(
            e.starts_with("torrc:3: ") || e.starts_with("torrc:4: "),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn control_port_settings() {
    let c = ok("ControlPort 127.0.0.1:9051\nControlPort [::1]:9052\nControlPort unix:/run/fors/ctl\n\
                ControlPort unix:\"/run/fors dir/ctl\" GroupWritable\nCookieAuthentication 1\n\
                CookieAuthFile /run/fors/cookie\nCookieAuthFileGroupReadable 1\n\
                HashedControlPassword 16:208dbeed17d8ced360996c11c3bb158cb5326796842ddbe220ba14cc1c\n");
    assert_eq!(c.control_ports.len(), 2);
    assert_eq!(
        c.control.unix_sockets,
        [
            PathBuf::from("/run/fors/ctl"),
            PathBuf::from("/run/fors dir/ctl")
        ]
    );
    assert_eq!(c.cookie_auth_file(), PathBuf::from("/run/fors/cookie"));
    assert!(c.control.cookie_auth_file_group_readable);
    assert_eq!(
        c.control.hashed_passwords,
        ["16:208DBEED17D8CED360996C11C3BB158CB5326796842DDBE220BA14CC1C"]
    );
    let c = ok("ControlPort 9051\nCookieAuthentication 1\nDataDirectory /srv/fors\n");
    assert_eq!(
        c.cookie_auth_file(),
        PathBuf::from("/srv/fors/control_auth_cookie")
    );
    // Without any authentication: accepted, with a warning naming the line.
    let (_, w) = parse(&format!("{MIN}ControlPort 9051\n")).unwrap();
    assert!(
        w.iter().any(|w| w
            .to_string()
            .starts_with("torrc:3: ControlPort is open but neither")),
        "{w:?}"
    );
}

#[test]
fn relay_needs_an_or_port() {
    let e = parse("Nickname a\n").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("no ORPort is configured"), "{e}");
    let e = parse("ORPort 9001 NoListen\n")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "torrc:1: every ORPort is NoListen; at least one must listen"
    );
}

#[test]
fn warnings_for_accepted_but_noted_options() {
    let (c, w) = parse(&format!(
        "{MIN}DirPort 0\nHardwareAccel 1\nHardwareAccel 0\nMaxMemInQueues 10 MB\n\
         ExitRelay 0\nExitPolicy accept *:*\nAddress 10.0.0.1\nConnectionPadding auto\n\
         ReducedConnectionPadding 0\nCircuitPadding 1\nReducedCircuitPadding 0\n"
    ))
    .unwrap();
    let w: Vec<String> = w.iter().map(ToString::to_string).collect();
    // ConnectionPadding auto and ReducedConnectionPadding 0 are what a relay does: no
    // warning (padding is implemented).
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(w[0].starts_with("torrc:4: option \"HardwareAccel\" is ignored by Fors"));
    assert!(!w.iter().any(|m| m.contains("ConnectionPadding")), "{w:#?}");
    assert!(!w.iter().any(|m| m.contains("CircuitPadding")), "{w:#?}");
    assert!(w
        .iter()
        .any(|m| m.starts_with("torrc:6: MaxMemInQueues must be at least 256 MB")));
    assert!(w
        .iter()
        .any(|m| m.starts_with("torrc:9: Address is a private")));
    assert!(w
        .iter()
        .any(|m| m.starts_with("torrc:8: ExitPolicy is set but ExitRelay is 0")));
    assert!(c.dir_ports.is_empty());
    assert_eq!(c.max_mem_in_queues, 256 << 20);
    assert!(!c.wants_exit());
    // NumCPUs above what one process can run: clamped, with a warning naming the line.
    let (c, w) = parse(&format!("{MIN}NumCPUs 257\n")).unwrap();
    assert_eq!(c.num_cpus, 256);
    assert!(
        w.iter().any(|m| m
            .to_string()
            .starts_with("torrc:3: NumCPUs 257 is more than the 256 shards")),
        "{w:#?}"
    );
    // Without ContactInfo, C tor nags; so does Fors.
    let (_, w) = parse("ORPort 9001\n").unwrap();
    assert!(w[0].message.starts_with("ContactInfo is not set"));
}

#[test]
fn unknown_option_suggests_and_names_line() {
    assert_eq!(
        err("\n# comment\nExitPolcy accept *:80"),
        "torrc:5: unknown option \"ExitPolcy\" (did you mean \"ExitPolicy\"?)"
    );
    assert_eq!(err("Zqxjkvw 1"), "torrc:3: unknown option \"Zqxjkvw\"");
    assert!(err("BridgeRelay 1")
        .starts_with("torrc:3: C tor option \"BridgeRelay\" is not supported by Fors"));
}

#[test]
fn options_are_case_insensitive_and_aliases_work() {
    let c = ok("nickname abc\nEXITRELAY auto\nDirServer 127.0.0.1:7000 DEADBEEF00112233445566778899AABBCCDDEEFF\nNumCPU 3\n");
    assert_eq!(c.nickname, "abc");
    assert_eq!(c.dir_authorities.len(), 1);
    assert_eq!(c.num_cpus, 3);
}

#[test]
fn reduced_exit_policy_makes_an_exit_under_auto() {
    assert!(ok("ReducedExitPolicy 1\n").wants_exit());
    assert!(
        ok("ExitPolicy reject *:*\n").wants_exit(),
        "policy content is judged by exit::policy"
    );
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fors-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn verify_with_defaults_torrc_and_command_line_overrides() {
    let d = tmpdir("verify");
    std::fs::write(
        d.join("defaults"),
        "Nickname FromDefaults\nORPort 9001\nExitPolicy reject *:25\nContactInfo d@example.org\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("torrc.d")).unwrap();
    std::fs::write(d.join("torrc.d/50-exit"), "+ExitPolicy accept *:80\n").unwrap();
    std::fs::write(
        d.join("torrc"),
        format!(
            "Nickname FromTorrc\n%include {}\n",
            d.join("torrc.d").display()
        ),
    )
    .unwrap();
    let (c, _) = verify(&d.join("torrc"), Some(&d.join("defaults"))).unwrap();
    assert_eq!(c.nickname, "FromTorrc");
    assert_eq!(
        c.or_ports.len(),
        1,
        "ORPort inherited from the defaults file"
    );
    let pol: Vec<&str> = c.exit_policy.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(pol, ["reject *:25", "accept *:80"]);

    let args: Vec<String> = [
        "--verify-config",
        "-f",
        d.join("torrc").to_str().unwrap(),
        "--defaults-torrc",
        d.join("defaults").to_str().unwrap(),
        "--Nickname",
        "FromCmdLine",
        "--ORPort",
        "9002",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cl = CommandLine::parse(&args).unwrap();
    assert!(cl.verify_config);
    let (c, _) = load(&cl).unwrap();
    assert_eq!(c.nickname, "FromCmdLine");
    assert_eq!(c.or_ports.len(), 1);
    assert_eq!(c.or_ports[0].location.to_string(), "command line:8");
    assert_eq!(verify_config_main(&args), 0);

    // Errors inside included files name that file.
    std::fs::write(d.join("torrc.d/60-bad"), "\nIPv6Exit perhaps\n").unwrap();
    let e = verify(&d.join("torrc"), Some(&d.join("defaults"))).unwrap_err();
    let inc = d.join("torrc.d/60-bad");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: bad value \"perhaps\" for IPv6Exit: allowed values are 0 and 1",
            inc.display()
        )
    );
    assert_eq!(verify_config_main(&args), 1);

    // A torrc named explicitly must exist.
    let e = verify(&d.join("missing"), None).unwrap_err();
    assert!(e.to_string().contains("No such file"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn profile_named_in_torrc_resolves() {
    let c = ok("HardwareProfile generic\n");
    let search = ProfileSearchPath {
        dirs: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hw-profiles")],
    };
    let p = search.load(c.hardware_profile.as_deref()).unwrap();
    assert_eq!(p.sq_entries, HardwareProfile::default().sq_entries);
    assert_eq!(shard_count(&c, &p, 6), 6);
    assert_eq!(shard_count(&ok("NumCPUs 1\n"), &p, 6), 1);
    assert_eq!(shard_count(&ok("NumCPUs 256\n"), &p, 6), 256);
    // More CPUs than a channel name can tell shards apart: clamped.
    assert_eq!(shard_count(&c, &p, 1000), 256);
}

/// A deterministic stand-in for the fuzz target that runs with `cargo test`: mutated torrcs
/// (byte flips, insertions of syntax characters, truncations) must never panic.
#[test]
fn mutated_torrcs_never_panic() {
    let seed = format!(
        "Nickname a\nORPort [::1]:9001 NoAdvertise\nExitPolicy accept *:80,\\\n reject *:*\n\
         Log \"notice\" file /x\n%include /fuzz/d\nDirAuthority a orport=1 ipv6=[::1]:2 \
         v3ident={FP} 127.0.0.1:7 {FP}\nBandwidthRate 1.5 MB\n+Log info stderr\n/ORPort\n"
    );
    let fs = MemFs::default()
        .with("/fuzz/d/a.conf", "ORPort 9001\n")
        .with("/fuzz/d/b.conf", "%include /fuzz/d\n");
    let alphabet = b"\\\"#\n\r\t :,[]+/%0x\x7f";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1000 {
        let mut b = seed.clone().into_bytes();
        for _ in 0..(next() % 6 + 1) {
            let r = next() as usize;
            let pos = r % (b.len() + 1);
            match r % 4 {
                0 if pos < b.len() => b[pos] = alphabet[(r >> 8) % alphabet.len()],
                1 => b.insert(pos, alphabet[(r >> 8) % alphabet.len()]),
                2 => b.truncate(pos),
                _ if pos < b.len() => {
                    b.remove(pos);
                }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&b);
        if let Err(e) = parse_str(&fs, "torrc", &text) {
            let _ = e.to_string();
        }
    }
}

/// The shape of chutney's relay/exit torrc templates (with RunAsDaemon 0): accepted, with one
/// warning per ignored option.
#[test]
fn chutney_style_exit_torrc() {
    let text = format!(
        "TestingTorNetwork 1\nAssumeReachable 1\nPathsNeededToBuildCircuits 0.25\n\
         TestingDirAuthVoteExit *\nTestingDirAuthVoteHSDir *\nV3AuthNIntervalsValid 2\n\
         TestingDirAuthVoteGuard *\nTestingMinExitFlagThreshold 0\nDataDirectory /tmp/net/nodes/003r\n\
         RunAsDaemon 0\nConnDirectionStatistics 0\nDirReqStatistics 0\nDirAuthority test000a \
         orport=5000 no-v2 v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:7000 {FP}\n\
         SafeLogging 0\nLog notice file /tmp/net/nodes/003r/notice.log\nLog info file /tmp/net/nodes/003r/info.log\n\
         ProtocolWarnings 1\nNickname test003r\nSocksPort 0\nOrPort 5003\nAddress 127.0.0.1\n\
         DirPort 7003\nExitRelay 1\nExitPolicy accept 127.0.0.0/8:*\nExitPolicyRejectPrivate 0\n\
         ServerDNSDetectHijacking 0\nServerDNSTestAddresses\nControlPort 8003\nControlSocket /tmp/net/nodes/003r/control\n\
         CookieAuthentication 1\nPidFile /tmp/net/nodes/003r/pid\nSandbox 0\nContactInfo chutney\n"
    );
    // Protocol warnings at warn level, as chutney asks. The DirPort is served: DirCache
    // defaults to 1 as in C tor.
    let (c, _) = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.protocol_warnings);
    assert!(c.dir_cache && !c.dir_ports.is_empty());
    let text = text.replace("DirPort 7003\n", "");
    let (c, w) = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.testing_tor_network && c.wants_exit() && !c.exit_policy_reject_private);
    assert_eq!(c.nickname, "test003r");
    assert_eq!(c.safe_logging, SafeLogging::Off);
    // ControlSocket is C tor's spelling of `ControlPort unix:PATH`.
    assert_eq!(
        c.control.unix_sockets,
        vec![PathBuf::from("/tmp/net/nodes/003r/control")]
    );
    let ignored = w
        .iter()
        .filter(|w| w.message.contains("is ignored by Fors"))
        .count();
    assert_eq!(ignored, 11, "{w:#?}");
}

#[test]
fn dos_options_override_the_consensus() {
    use crate::dos::{DosConfig, DosOptions};
    // Unset: every value defers to the consensus.
    assert_eq!(ok("").dos, DosOptions::default());
    let c = ok(
        "DoSCircuitCreationEnabled 1\nDoSCircuitCreationMinConnections 1\n\
                DoSCircuitCreationRate 1\nDoSCircuitCreationBurst 5\n\
                DoSCircuitCreationDefenseType 2\nDoSCircuitCreationDefenseTimePeriod 2 hours\n\
                DoSConnectionEnabled auto\nDoSConnectionMaxConcurrentCount 3\n\
                DoSConnectionDefenseType 1\nDoSConnectionConnectRate 7\n\
                DoSConnectionConnectBurst 9\nDoSConnectionConnectDefenseTimePeriod 600\n\
                DoSRefuseSingleHopClientRendezvous 1\n",
    );
    let d = c.dos;
    assert_eq!(d.cc_enabled, Some(true));
    assert_eq!(
        (
            d.cc_min_concurrent_conn,
            d.cc_circuit_rate,
            d.cc_circuit_burst
        ),
        (1, 1, 5)
    );
    assert_eq!((d.cc_defense_type, d.cc_defense_time_period), (2, 7200));
    assert_eq!(d.conn_enabled, None);
    assert_eq!((d.conn_max_concurrent_count, d.conn_defense_type), (3, 1));
    assert_eq!(
        (
            d.conn_connect_rate,
            d.conn_connect_burst,
            d.conn_connect_defense_time_period
        ),
        (7, 9, 600)
    );
    // With the consensus defaults underneath: connections stay off ("auto"), circuits on.
    let eff = DosConfig::resolve(&d, &crate::dir::params::ConsensusParams::default().dos);
    assert!(eff.cc_enabled && !eff.conn_enabled);
    assert_eq!(eff.conn_max_concurrent_count, 3);
    assert_eq!(eff.cc_defense_time_period, 7200);
    // GETCONF shows what the torrc says.
    let v = render::conf_value(&c, "DoSConnectionEnabled").unwrap();
    assert!(format!("{v:?}").contains("auto"), "{v:?}");
}

#[test]
fn outbound_bind_addresses_follow_c_tor() {
    let c = ok(
        "OutboundBindAddress 198.51.100.1\nOutboundBindAddress [2001:db8::1]\n\
                OutboundBindAddressOR 198.51.100.2\n\
                OutboundBindAddressExit 2001:db8::3\n",
    );
    let b = c.outbound_bind();
    let v4: IpAddr = "192.0.2.9".parse().unwrap();
    let v6: IpAddr = "2001:db8::9".parse().unwrap();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    // The kind's own option for the destination's family, else OutboundBindAddress's.
    assert_eq!(b.source(OutboundKind::Or, v4), ip("198.51.100.2"));
    assert_eq!(b.source(OutboundKind::Or, v6), ip("2001:db8::1"));
    assert_eq!(b.source(OutboundKind::Exit, v4), ip("198.51.100.1"));
    assert_eq!(b.source(OutboundKind::Exit, v6), ip("2001:db8::3"));
    // Directory connections take the OR address, as every non-exit connection in C.
    assert_eq!(b.source(OutboundKind::Dir, v4), ip("198.51.100.2"));
    assert_eq!(b.source(OutboundKind::Dir, v6), ip("2001:db8::1"));
    // Never for a loopback destination (C `connection_connect`).
    for dest in ["127.0.0.2", "::1"] {
        assert_eq!(b.source(OutboundKind::Exit, dest.parse().unwrap()), None);
    }
    assert_eq!(ok("").outbound_bind().source(OutboundKind::Exit, v4), None);
}

#[test]
fn heartbeat_period_follows_c_tor() {
    assert_eq!(ok("").heartbeat_period, Duration::from_secs(6 * 3600));
    assert_eq!(ok("HeartbeatPeriod 0\n").heartbeat_period, Duration::ZERO);
    assert_eq!(
        ok("HeartbeatPeriod 2 hours\n").heartbeat_period,
        Duration::from_secs(7200)
    );
    // Under 30 minutes: raised, with a warning naming the line (C tor's MIN_HEARTBEAT_PERIOD).
    let (c, w) = parse(&format!("{MIN}HeartbeatPeriod 10 minutes\n")).unwrap();
    assert_eq!(c.heartbeat_period, Duration::from_secs(1800));
    assert!(
        w.iter().any(|w| w.to_string()
            == "torrc:3: HeartbeatPeriod option is too short; raising to 1800 seconds"),
        "{w:?}"
    );
    // ...except on a test network.
    let c = ok(&format!(
        "TestingTorNetwork 1\nDirAuthority 127.0.0.1:7000 {FP}\nHeartbeatPeriod 2 seconds\n"
    ));
    assert_eq!(c.heartbeat_period, Duration::from_secs(2));
    assert!(err("HeartbeatPeriod often\n").contains("HeartbeatPeriod"));
}

#[test]
fn keepalive_period_follows_c_tor() {
    assert_eq!(ok("").keepalive_period, Duration::from_secs(300));
    assert_eq!(
        ok("KeepalivePeriod 90\n").keepalive_period,
        Duration::from_secs(90)
    );
    assert_eq!(
        ok("KeepalivePeriod 2 minutes\n").keepalive_period,
        Duration::from_secs(120)
    );
    // C: "KeepalivePeriod option must be positive.", with the line.
    let e = err("KeepalivePeriod 0\n");
    assert!(
        e.contains("KeepalivePeriod") && e.contains("must be positive") && e.contains("torrc:3"),
        "{e}"
    );
    assert!(err("KeepalivePeriod often\n").contains("KeepalivePeriod"));
}

/// The exit torrc of issue #9 (Debian layout, community exit guidance), as an operator who
/// switches from C tor keeps it. Every line is taken except the two the issue allows until
/// the directory cache exists (DirPort, DirPortFrontPage), each refused with its line number.
#[test]
fn typical_exit_operator_torrc() {
    const TORRC: &str = "\
User debian-tor
DataDirectory /var/lib/tor
Nickname SwedishExit01
ContactInfo abuse@example.org
ORPort 443
ORPort [2001:db8::1]:443
DirPort 80
DirPortFrontPage /etc/tor/tor-exit-notice.html
ExitRelay 1
ReducedExitPolicy 1
IPv6Exit 1
OutboundBindAddressExit 203.0.113.6
OutboundBindAddressExit 2001:db8::6
RelayBandwidthRate 50 MBytes
RelayBandwidthBurst 100 MBytes
AccountingMax 10 TBytes
AccountingStart month 1 00:00
MyFamily $0123456789ABCDEF0123456789ABCDEF01234567
MaxMemInQueues 2 GB
SafeLogging 1
HeartbeatPeriod 1 hour
ControlPort 9051
CookieAuthentication 1
MetricsPort 127.0.0.1:9035
MetricsPortPolicy accept 127.0.0.1
Log notice file /var/log/tor/notices.log
";
    let mut text = TORRC.to_string();
    let mut refused = Vec::new();
    for _ in 0..TORRC.lines().count() {
        match parse(&text) {
            Ok((c, _)) => {
                assert!(c.wants_exit() && c.ipv6_exit && c.reduced_exit_policy);
                assert_eq!(c.or_ports.len(), 2);
                assert_eq!(c.safe_logging, SafeLogging::All);
                break;
            }
            Err(e) => {
                let e = e.to_string();
                let line: usize = e
                    .strip_prefix("torrc:")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("error without a line: {e}"));
                let src = text.lines().nth(line - 1).unwrap().to_string();
                refused.push(src.split_whitespace().next().unwrap().to_string());
                text = text
                    .lines()
                    .enumerate()
                    .map(|(i, l)| if i + 1 == line { "" } else { l })
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
    }
    refused.sort();
    // DirCache defaults to 1 as in C tor, so the DirPort is served; the front page file
    // does not exist on this machine.
    assert_eq!(refused, ["DirPortFrontPage"], "refused lines");
}

#[test]
fn accounting_options() {
    use crate::accounting::{AccountingRule, IntervalUnit};
    let c = ok("");
    assert_eq!(c.accounting_max, 0);
    assert!(c.accounting().is_none(), "off by default, as C");
    let c = ok("AccountingMax 2 GB\nAccountingRule sum\nAccountingStart week 7 23:30\nRelayBandwidthRate 100 KB\nRelayBandwidthBurst 200 KB\n");
    let a = c.accounting().unwrap();
    assert_eq!(a.max, 2 << 30);
    assert_eq!(a.rule, AccountingRule::Sum);
    assert_eq!(a.start.unit, IntervalUnit::Week);
    assert_eq!((a.start.day, a.start.hour, a.start.minute), (7, 23, 30));
    assert_eq!(a.bandwidth_rate, 100 << 10);
    // No minimum, as C.
    assert_eq!(ok("AccountingMax 1\n").accounting().unwrap().max, 1);
    assert_eq!(
        ok("AccountingMax 1 MB\n")
            .accounting()
            .unwrap()
            .start
            .to_string(),
        "month 1 00:00"
    );
    let e = err("AccountingRule both\n");
    assert!(
        e.starts_with("torrc:3:") && e.contains("'sum', 'max', 'in', or 'out'"),
        "{e}"
    );
    let e = err("AccountingStart month 31 00:00\n");
    assert!(
        e.starts_with("torrc:3:") && e.contains("between 1 and 28"),
        "{e}"
    );
    let e = err("AccountingMax lots\n");
    assert!(
        e.starts_with("torrc:3:") && e.contains("AccountingMax"),
        "{e}"
    );
}

/// C `check_and_prune_server_ports`: listening on ORPorts but advertising none, or only IPv6
/// ones, is an error.
#[test]
fn orports_must_be_advertised_with_ipv4() {
    let e = parse("ORPort 9001 NoAdvertise\nContactInfo x\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("torrc:1: every ORPort is NoAdvertise"), "{e}");
    let e = parse("ORPort [::1]:9001\nORPort 9002 NoAdvertise\nContactInfo x\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("torrc:1: only IPv6 ORPorts are advertised"),
        "{e}"
    );
    parse("ORPort [::1]:9001\nORPort 9002\nContactInfo x\n").unwrap();
}

#[test]
fn dir_cache_1_turns_the_mirror_on() {
    let (c, w) = parse("ORPort 9001\nDirCache 1\n").unwrap();
    assert!(c.dir_cache, "{w:?}");
    let (c, _) = parse("ORPort 9001\nDirCache 0\n").unwrap();
    assert!(!c.dir_cache);
    // The default is C tor's, 1: a DirPort needs no DirCache line...
    let (c, _) = parse("ORPort 9001\nDirPort 9030\n").unwrap();
    assert!(c.dir_cache);
    // ...and with DirCache 0 it is C tor's error.
    let e = parse("ORPort 9001\nDirPort 9030\nDirCache 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DirPort configured but DirCache disabled"),
        "{e}"
    );
}

#[test]
fn dir_port_front_page_is_read_with_the_configuration() {
    let path = std::env::temp_dir().join(format!("fors-front-page-{}.html", std::process::id()));
    std::fs::write(&path, b"<html>exit notice</html>").unwrap();
    let c = ok(&format!("DirPortFrontPage {}\n", path.display()));
    let page = c.dir_port_front_page.expect("read");
    assert_eq!(&*page.contents, b"<html>exit notice</html>");
    assert_eq!(page.path, path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn max_hsdir_cache_bytes_is_a_memunit_defaulting_to_zero() {
    // 0 = C tor's default: MaxMemInQueues / 5 (resolved where MaxMemInQueues is).
    assert_eq!(ok("").max_hsdir_cache_bytes, 0);
    assert_eq!(
        ok("MaxHSDirCacheBytes 10 MB\n").max_hsdir_cache_bytes,
        10 << 20
    );
    assert!(err("MaxHSDirCacheBytes lots\n")
        .contains("torrc:3: bad value \"lots\" for MaxHSDirCacheBytes"));
}
