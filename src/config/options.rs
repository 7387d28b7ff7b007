//! The option tables: what Fors implements, what it accepts from C tor torrcs but ignores
//! (with one warning each), C tor's own obsolete names, and did-you-mean suggestions.

/// Whether an option may appear once (last value wins) or accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    Single,
    List,
}

/// Options Fors implements, by canonical name (C tor's spelling).
pub const SUPPORTED: &[(&str, OptionKind)] = &[
    ("AccountingMax", OptionKind::Single),
    ("AccountingRule", OptionKind::Single),
    ("AccountingStart", OptionKind::Single),
    ("Address", OptionKind::List),
    ("AssumeReachable", OptionKind::Single),
    ("BandwidthBurst", OptionKind::Single),
    ("BandwidthRate", OptionKind::Single),
    ("CircuitPadding", OptionKind::Single),
    ("ConnectionPadding", OptionKind::Single),
    ("ContactInfo", OptionKind::Single),
    ("ControlPort", OptionKind::List),
    ("ControlSocket", OptionKind::List),
    ("CookieAuthFile", OptionKind::Single),
    ("CookieAuthFileGroupReadable", OptionKind::Single),
    ("CookieAuthentication", OptionKind::Single),
    ("DataDirectory", OptionKind::Single),
    ("DirAuthority", OptionKind::List),
    ("DirCache", OptionKind::Single),
    ("FetchDirInfoEarly", OptionKind::Single),
    ("FetchDirInfoExtraEarly", OptionKind::Single),
    ("DirPort", OptionKind::List),
    ("DirPortFrontPage", OptionKind::Single),
    ("DisableDebuggerAttachment", OptionKind::Single),
    ("DoSCircuitCreationBurst", OptionKind::Single),
    ("DoSCircuitCreationDefenseTimePeriod", OptionKind::Single),
    ("DoSCircuitCreationDefenseType", OptionKind::Single),
    ("DoSCircuitCreationEnabled", OptionKind::Single),
    ("DoSCircuitCreationMinConnections", OptionKind::Single),
    ("DoSCircuitCreationRate", OptionKind::Single),
    ("DoSConnectionConnectBurst", OptionKind::Single),
    ("DoSConnectionConnectDefenseTimePeriod", OptionKind::Single),
    ("DoSConnectionConnectRate", OptionKind::Single),
    ("DoSConnectionDefenseType", OptionKind::Single),
    ("DoSConnectionEnabled", OptionKind::Single),
    ("DoSConnectionMaxConcurrentCount", OptionKind::Single),
    ("ExitPolicy", OptionKind::List),
    ("ExitPolicyRejectLocalInterfaces", OptionKind::Single),
    ("ExitPolicyRejectPrivate", OptionKind::Single),
    ("ExitRelay", OptionKind::Single),
    ("FamilyId", OptionKind::List),
    ("FamilyKeyDirectory", OptionKind::Single),
    ("HardwareProfile", OptionKind::Single),
    ("HashedControlPassword", OptionKind::List),
    ("HeartbeatPeriod", OptionKind::Single),
    ("IPv6Exit", OptionKind::Single),
    ("KeepalivePeriod", OptionKind::Single),
    ("Log", OptionKind::List),
    ("LogTimeGranularity", OptionKind::Single),
    ("MaxHSDirCacheBytes", OptionKind::Single),
    ("MaxMemInQueues", OptionKind::Single),
    ("MetricsPort", OptionKind::List),
    ("MetricsPortPolicy", OptionKind::List),
    ("MyFamily", OptionKind::List),
    ("Nickname", OptionKind::Single),
    ("NumCPUs", OptionKind::Single),
    ("ORPort", OptionKind::List),
    ("OutboundBindAddress", OptionKind::List),
    ("OutboundBindAddressExit", OptionKind::List),
    ("OutboundBindAddressOR", OptionKind::List),
    ("PidFile", OptionKind::Single),
    ("ProtocolWarnings", OptionKind::Single),
    ("PublishServerDescriptor", OptionKind::Single),
    ("ReducedCircuitPadding", OptionKind::Single),
    ("ReducedConnectionPadding", OptionKind::Single),
    ("ReducedExitPolicy", OptionKind::Single),
    ("RelayBandwidthBurst", OptionKind::Single),
    ("RelayBandwidthRate", OptionKind::Single),
    ("RunAsDaemon", OptionKind::Single),
    ("SafeLogging", OptionKind::Single),
    ("ServerDNSResolvConfFile", OptionKind::Single),
    ("ShutdownWaitLength", OptionKind::Single),
    ("SocksPort", OptionKind::List),
    ("TestingMaxMemInQueues", OptionKind::Single),
    ("TestingTorNetwork", OptionKind::Single),
    ("User", OptionKind::Single),
];

/// Old or alternative spellings C tor maps to a canonical option (its `option_abbrevs`).
pub const ALIASES: &[(&str, &str)] = &[
    ("BandwidthBurstBytes", "BandwidthBurst"),
    ("BandwidthRateBytes", "BandwidthRate"),
    ("DirServer", "DirAuthority"),
    ("MaxMemInCellQueues", "MaxMemInQueues"),
    ("NumCPU", "NumCPUs"),
    ("ResolvConf", "ServerDNSResolvConfFile"),
];

const WHY_STATS: &str = "Fors collects and publishes no extra-info statistics";
const WHY_DIRAUTH: &str = "directory-authority option; it has no effect on a relay";
const WHY_CLIENT: &str = "client option; Fors is not a client and builds no circuits of its own";
const WHY_ACCEL: &str =
    "Fors always uses the CPU's AES and SHA instructions when it has them (chosen at start-up)";
const WHY_SCHED: &str = "Fors has no KIST or EWMA scheduler: each shard writes a channel's cells \
     as soon as its socket takes them (io_uring), circuits in arrival order";
const WHY_DNS: &str = "Fors's exit resolver has no hijack detection and makes no test lookups";
const WHY_DOS_STREAM: &str =
    "Fors has no stream-creation defence (its DoS defences are the DoSCircuitCreation* and \
     DoSConnection* options)";

/// C tor options that Fors accepts and ignores, each with the reason given in its warning.
/// An option is here only if ignoring it cannot change what users, the network or the
/// operator get; where only some values are harmless to ignore, [`IGNORED_VALUES`] lists
/// them and any other value is refused. Anything else is implemented or refused.
pub const IGNORED: &[(&str, &str)] = &[
    ("AccelDir", WHY_ACCEL),
    ("AccelName", WHY_ACCEL),
    (
        "AvoidDiskWrites",
        "Fors writes its state file (accounting) on C tor's normal schedule, not the \
         reduced one; only 0 is accepted",
    ),
    (
        "CacheDirectoryGroupReadable",
        "Fors keeps no cache directory; only 0 (not group-readable) is accepted",
    ),
    ("CellStatistics", WHY_STATS),
    ("CircuitPriorityHalflife", WHY_SCHED),
    ("ClientDNSRejectInternalAddresses", WHY_CLIENT),
    ("ClientRejectInternalAddresses", WHY_CLIENT),
    ("ClientUseIPv4", WHY_CLIENT),
    ("ClientUseIPv6", WHY_CLIENT),
    ("ConnDirectionStatistics", WHY_STATS),
    (
        "ConnLimit",
        "Fors sizes its connection tables from the open-files limit and the hardware profile",
    ),
    (
        "ControlPortFileGroupReadable",
        "it only matters with ControlPortWriteToFile, which Fors does not implement",
    ),
    (
        "ControlSocketsGroupWritable",
        "Fors creates its ControlPort sockets with mode 0600; only 0 is accepted",
    ),
    (
        "ConstrainedSockSize",
        "it only matters with ConstrainedSockets 1, which Fors refuses",
    ),
    (
        "ConstrainedSockets",
        "Fors does not shrink socket buffers; only 0 is accepted",
    ),
    (
        "DataDirectoryGroupReadable",
        "Fors keeps its DataDirectory mode 0700; only 0 is accepted",
    ),
    ("DirReqStatistics", WHY_STATS),
    (
        "DisableAllSwap",
        "Fors does not lock its memory; only 0 is accepted",
    ),
    (
        "DisableOOSCheck",
        "Fors has no out-of-sockets handler (as C tor with the default, 1)",
    ),
    (
        "DoSRefuseSingleHopClientRendezvous",
        "Fors is not a rendezvous point (no onion-service relay cells yet)",
    ),
    ("DoSStreamCreationBurst", WHY_DOS_STREAM),
    ("DoSStreamCreationDefenseType", WHY_DOS_STREAM),
    ("DoSStreamCreationEnabled", WHY_DOS_STREAM),
    ("DoSStreamCreationRate", WHY_DOS_STREAM),
    ("EnforceDistinctSubnets", WHY_CLIENT),
    ("EntryStatistics", WHY_STATS),
    ("ExitPortStatistics", WHY_STATS),
    ("ExtraInfoStatistics", WHY_STATS),
    ("FetchUselessDescriptors", WHY_CLIENT),
    ("GeoIPExcludeUnknown", WHY_CLIENT),
    (
        "GeoIPFile",
        "Fors uses no GeoIP data (no statistics, no country rules)",
    ),
    (
        "GeoIPv6File",
        "Fors uses no GeoIP data (no statistics, no country rules)",
    ),
    ("HardwareAccel", WHY_ACCEL),
    ("HiddenServiceStatistics", WHY_STATS),
    ("KISTSchedRunInterval", WHY_SCHED),
    ("KISTSockBufSizeFactor", WHY_SCHED),
    (
        "KeepBindCapabilities",
        "Fors binds its ports before switching users and never rebinds them (ORPort changes \
         need a restart), so it keeps no capability",
    ),
    (
        "LogMessageDomains",
        "Fors's log lines have no domains; only 0 is accepted",
    ),
    (
        "MainloopStats",
        "Fors has no main loop to report on; only 0 is accepted",
    ),
    (
        "MaxOnionQueueDelay",
        "Fors bounds onion-handshake work with the hardware profile's onion_handshakes_per_tick",
    ),
    (
        "MaxUnparseableDescSizeToLog",
        "Fors never dumps unparseable descriptors to disk",
    ),
    ("NoExec", "Fors never starts other programs"),
    (
        "OverloadStatistics",
        "Fors publishes no overload-general line in its descriptor (C tor does by default)",
    ),
    ("PaddingStatistics", WHY_STATS),
    ("PathsNeededToBuildCircuits", WHY_CLIENT),
    (
        "Sandbox",
        "Fors has no seccomp sandbox of its own (use the systemd unit's SystemCallFilter); \
         only 0 is accepted",
    ),
    ("Schedulers", WHY_SCHED),
    (
        "ServerDNSAllowBrokenConfig",
        "an exit with an unreadable or empty resolv.conf does not start (as C tor with 0); \
         only 0 is accepted",
    ),
    ("ServerDNSDetectHijacking", WHY_DNS),
    (
        "ServerDNSRandomizeCase",
        "Fors always randomizes the case of its DNS questions (0x20); only 1 is accepted",
    ),
    ("ServerDNSTestAddresses", WHY_DNS),
    (
        "SyslogIdentityTag",
        "Fors's syslog lines are tagged \"fors\"; only an empty tag is accepted",
    ),
    ("TestingDirAuthVoteExit", WHY_DIRAUTH),
    ("TestingDirAuthVoteExitIsStrict", WHY_DIRAUTH),
    ("TestingDirAuthVoteGuard", WHY_DIRAUTH),
    ("TestingDirAuthVoteGuardIsStrict", WHY_DIRAUTH),
    ("TestingDirAuthVoteHSDir", WHY_DIRAUTH),
    ("TestingDirAuthVoteHSDirIsStrict", WHY_DIRAUTH),
    (
        "TestingEnableCellStatsEvent",
        "Fors's ControlPort sends no CELL_STATS events",
    ),
    (
        "TestingEnableConnBwEvent",
        "Fors's ControlPort sends no CONN_BW events",
    ),
    ("TestingMinExitFlagThreshold", WHY_DIRAUTH),
    ("TestingMinFastFlagThreshold", WHY_DIRAUTH),
    ("TestingV3AuthInitialDistDelay", WHY_DIRAUTH),
    ("TestingV3AuthInitialVoteDelay", WHY_DIRAUTH),
    ("TestingV3AuthInitialVotingInterval", WHY_DIRAUTH),
    ("TestingV3AuthVotingStartOffset", WHY_DIRAUTH),
    (
        "TokenBucketRefillInterval",
        "Fors refills its bandwidth buckets every 100 ms (C tor's default); the rates hold \
         whatever the interval",
    ),
    (
        "TruncateLogFile",
        "Fors appends to its log files; only 0 is accepted",
    ),
    ("UseMicrodescriptors", WHY_CLIENT),
    ("V3AuthDistDelay", WHY_DIRAUTH),
    ("V3AuthNIntervalsValid", WHY_DIRAUTH),
    ("V3AuthVoteDelay", WHY_DIRAUTH),
    ("V3AuthVotingInterval", WHY_DIRAUTH),
];

/// Ignored options that Fors accepts only with the values (compared case-insensitively)
/// that describe what it does anyway. Another value asks for behaviour Fors lacks — stats
/// published, padding sent, memory locked, a sandbox — and is refused with its line, since
/// ignoring it would change what the operator, the network or users get.
pub const IGNORED_VALUES: &[(&str, &[&str])] = &[
    ("AvoidDiskWrites", &["0"]),
    ("CacheDirectoryGroupReadable", &["0"]),
    ("CellStatistics", &["0"]),
    ("ConnDirectionStatistics", &["0"]),
    ("ConstrainedSockets", &["0"]),
    ("ControlSocketsGroupWritable", &["0"]),
    ("DataDirectoryGroupReadable", &["0"]),
    ("DirReqStatistics", &["0"]),
    ("DisableAllSwap", &["0"]),
    ("DisableOOSCheck", &["1"]),
    ("DoSStreamCreationEnabled", &["0"]),
    ("EntryStatistics", &["0"]),
    ("ExitPortStatistics", &["0"]),
    ("ExtraInfoStatistics", &["0"]),
    ("HiddenServiceStatistics", &["0"]),
    ("LogMessageDomains", &["0"]),
    ("MainloopStats", &["0"]),
    ("OverloadStatistics", &["0"]),
    ("PaddingStatistics", &["0"]),
    ("Sandbox", &["0"]),
    ("ServerDNSAllowBrokenConfig", &["0"]),
    ("ServerDNSDetectHijacking", &["0"]),
    ("ServerDNSRandomizeCase", &["1"]),
    ("SyslogIdentityTag", &[]),
    ("TruncateLogFile", &["0"]),
];

/// The values Fors accepts for an ignored option, if they are restricted.
pub fn ignored_values(name: &str) -> Option<&'static [&'static str]> {
    IGNORED_VALUES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// Every option name C tor 0.4.9 accepts (from its `option_vars` tables), used to tell
/// "a C tor option Fors does not implement" from "a typo".
pub const C_TOR_OPTIONS: &[&str] = &[
    "AccelDir",
    "AccelName",
    "AccountingMax",
    "AccountingRule",
    "AccountingStart",
    "Address",
    "AddressDisableIPv6",
    "AllowNonRFC953Hostnames",
    "AlternateBridgeAuthority",
    "AlternateDirAuthority",
    "AssumeReachable",
    "AssumeReachableIPv6",
    "AuthDirBadExit",
    "AuthDirBadExitCCs",
    "AuthDirFastGuarantee",
    "AuthDirGuardBWGuarantee",
    "AuthDirHasIPv6Connectivity",
    "AuthDirInvalid",
    "AuthDirInvalidCCs",
    "AuthDirListBadExits",
    "AuthDirListMiddleOnly",
    "AuthDirMaxServersPerAddr",
    "AuthDirMiddleOnly",
    "AuthDirMiddleOnlyCCs",
    "AuthDirPinKeys",
    "AuthDirReject",
    "AuthDirRejectCCs",
    "AuthDirRejectRequestsUnderLoad",
    "AuthDirSharedRandomness",
    "AuthDirTestEd25519LinkKeys",
    "AuthDirTestReachability",
    "AuthDirVoteGuard",
    "AuthDirVoteGuardBwThresholdFraction",
    "AuthDirVoteGuardGuaranteeTimeKnown",
    "AuthDirVoteGuardGuaranteeWFU",
    "AuthDirVoteStableGuaranteeMTBF",
    "AuthDirVoteStableGuaranteeMinUptime",
    "AuthoritativeDirectory",
    "AutomapHostsOnResolve",
    "AutomapHostsSuffixes",
    "AvoidDiskWrites",
    "BandwidthBurst",
    "BandwidthRate",
    "Bridge",
    "BridgeAuthoritativeDir",
    "BridgeDistribution",
    "BridgePassword",
    "BridgeRecordUsageByCountry",
    "BridgeRelay",
    "CacheDirectory",
    "CacheDirectoryGroupReadable",
    "CellStatistics",
    "CircuitBuildTimeout",
    "CircuitPadding",
    "CircuitPriorityHalflife",
    "CircuitStreamTimeout",
    "CircuitsAvailableTimeout",
    "ClientBootstrapConsensusAuthorityDownloadInitialDelay",
    "ClientBootstrapConsensusAuthorityOnlyDownloadInitialDelay",
    "ClientBootstrapConsensusFallbackDownloadInitialDelay",
    "ClientBootstrapConsensusMaxInProgressTries",
    "ClientDNSRejectInternalAddresses",
    "ClientOnionAuthDir",
    "ClientOnly",
    "ClientPreferIPv6DirPort",
    "ClientPreferIPv6ORPort",
    "ClientRejectInternalAddresses",
    "ClientTransportPlugin",
    "ClientUseIPv4",
    "ClientUseIPv6",
    "CompiledProofOfWorkHash",
    "ConfluxClientUX",
    "ConfluxEnabled",
    "ConnDirectionStatistics",
    "ConnLimit",
    "ConnectionPadding",
    "ConsensusParams",
    "ConstrainedSockSize",
    "ConstrainedSockets",
    "ContactInfo",
    "ControlPort",
    "ControlPortFileGroupReadable",
    "ControlPortWriteToFile",
    "ControlSocket",
    "ControlSocketsGroupWritable",
    "CookieAuthFile",
    "CookieAuthFileGroupReadable",
    "CookieAuthentication",
    "CountPrivateBandwidth",
    "DNSPort",
    "DataDirectory",
    "DataDirectoryGroupReadable",
    "DirAllowPrivateAddresses",
    "DirAuthority",
    "DirAuthorityFallbackRate",
    "DirCache",
    "DirPolicy",
    "DirPort",
    "DirPortFrontPage",
    "DirReqStatistics",
    "DisableAllSwap",
    "DisableDebuggerAttachment",
    "DisableNetwork",
    "DisableOOSCheck",
    "DoSCircuitCreationBurst",
    "DoSCircuitCreationDefenseTimePeriod",
    "DoSCircuitCreationDefenseType",
    "DoSCircuitCreationEnabled",
    "DoSCircuitCreationMinConnections",
    "DoSCircuitCreationRate",
    "DoSConnectionConnectBurst",
    "DoSConnectionConnectDefenseTimePeriod",
    "DoSConnectionConnectRate",
    "DoSConnectionDefenseType",
    "DoSConnectionEnabled",
    "DoSConnectionMaxConcurrentCount",
    "DoSRefuseSingleHopClientRendezvous",
    "DoSStreamCreationBurst",
    "DoSStreamCreationDefenseType",
    "DoSStreamCreationEnabled",
    "DoSStreamCreationRate",
    "DormantCanceledByStartup",
    "DormantClientTimeout",
    "DormantOnFirstStartup",
    "DormantTimeoutDisabledByIdleStreams",
    "DormantTimeoutEnabled",
    "DownloadExtraInfo",
    "EnforceDistinctSubnets",
    "EntryNodes",
    "EntryStatistics",
    "ExcludeExitNodes",
    "ExcludeNodes",
    "ExitNodes",
    "ExitPolicy",
    "ExitPolicyRejectLocalInterfaces",
    "ExitPolicyRejectPrivate",
    "ExitPortStatistics",
    "ExitRelay",
    "ExtORPort",
    "ExtORPortCookieAuthFile",
    "ExtORPortCookieAuthFileGroupReadable",
    "ExtendAllowPrivateAddresses",
    "ExtendByEd25519ID",
    "ExtraInfoStatistics",
    "FallbackDir",
    "FamilyId",
    "FamilyKeyDirectory",
    "FascistFirewall",
    "FetchDirInfoEarly",
    "FetchDirInfoExtraEarly",
    "FetchHidServDescriptors",
    "FetchServerDescriptors",
    "FetchUselessDescriptors",
    "FirewallPorts",
    "GeoIPExcludeUnknown",
    "GeoIPFile",
    "GeoIPv6File",
    "GuardLifetime",
    "GuardfractionFile",
    "HSLayer2Nodes",
    "HSLayer3Nodes",
    "HTTPProxy",
    "HTTPProxyAuthenticator",
    "HTTPSProxy",
    "HTTPSProxyAuthenticator",
    "HTTPTunnelPort",
    "HardwareAccel",
    "HashedControlPassword",
    "HeartbeatPeriod",
    "HiddenServiceAllowUnknownPorts",
    "HiddenServiceDir",
    "HiddenServiceDirGroupReadable",
    "HiddenServiceEnableIntroDoSBurstPerSec",
    "HiddenServiceEnableIntroDoSDefense",
    "HiddenServiceEnableIntroDoSRatePerSec",
    "HiddenServiceExportCircuitID",
    "HiddenServiceMaxStreams",
    "HiddenServiceMaxStreamsCloseCircuit",
    "HiddenServiceNonAnonymousMode",
    "HiddenServiceNumIntroductionPoints",
    "HiddenServiceOnionBalanceInstance",
    "HiddenServiceOptions",
    "HiddenServicePoWDefensesEnabled",
    "HiddenServicePoWQueueBurst",
    "HiddenServicePoWQueueRate",
    "HiddenServicePort",
    "HiddenServiceSingleHopMode",
    "HiddenServiceStatistics",
    "HiddenServiceVersion",
    "IPv6Exit",
    "KISTSchedRunInterval",
    "KISTSockBufSizeFactor",
    "KeepBindCapabilities",
    "KeepalivePeriod",
    "KeyDirectory",
    "KeyDirectoryGroupReadable",
    "LearnCircuitBuildTimeout",
    "Log",
    "LogMessageDomains",
    "LogTimeGranularity",
    "LongLivedPorts",
    "MainloopStats",
    "MapAddress",
    "MaxAdvertisedBandwidth",
    "MaxCircuitDirtiness",
    "MaxClientCircuitsPending",
    "MaxConsensusAgeForDiffs",
    "MaxHSDirCacheBytes",
    "MaxMemInQueues",
    "MaxOnionQueueDelay",
    "MaxUnparseableDescSizeToLog",
    "MetricsPort",
    "MetricsPortPolicy",
    "MiddleNodes",
    "MinMeasuredBWsForAuthToIgnoreAdvertised",
    "MinUptimeHidServDirectoryV2",
    "MinimalAcceptedServerVersion",
    "MyFamily",
    "NATDPort",
    "NewCircuitPeriod",
    "Nickname",
    "NoExec",
    "NodeFamily",
    "NumCPUs",
    "NumDirectoryGuards",
    "NumEntryGuards",
    "NumPrimaryGuards",
    "ORPort",
    "OfflineMasterKey",
    "OutboundBindAddress",
    "OutboundBindAddressExit",
    "OutboundBindAddressOR",
    "OutboundBindAddressPT",
    "OverloadStatistics",
    "PaddingStatistics",
    "PathBiasCircThreshold",
    "PathBiasDropGuards",
    "PathBiasExtremeRate",
    "PathBiasExtremeUseRate",
    "PathBiasNoticeRate",
    "PathBiasNoticeUseRate",
    "PathBiasScaleThreshold",
    "PathBiasScaleUseThreshold",
    "PathBiasUseThreshold",
    "PathBiasWarnRate",
    "PathsNeededToBuildCircuits",
    "PerConnBWBurst",
    "PerConnBWRate",
    "PidFile",
    "ProtocolWarnings",
    "PublishHidServDescriptors",
    "PublishServerDescriptor",
    "ReachableAddresses",
    "ReachableDirAddresses",
    "ReachableORAddresses",
    "RecommendedClientVersions",
    "RecommendedServerVersions",
    "RecommendedVersions",
    "ReconfigDropsBridgeDescs",
    "ReducedCircuitPadding",
    "ReducedConnectionPadding",
    "ReducedExitPolicy",
    "ReevaluateExitPolicy",
    "RefuseUnknownExits",
    "RejectPlaintextPorts",
    "RelayBandwidthBurst",
    "RelayBandwidthRate",
    "RephistTrackTime",
    "RunAsDaemon",
    "SSLKeyLifetime",
    "SafeLogging",
    "SafeSocks",
    "Sandbox",
    "Schedulers",
    "ServerDNSAllowBrokenConfig",
    "ServerDNSAllowNonRFC953Hostnames",
    "ServerDNSDetectHijacking",
    "ServerDNSRandomizeCase",
    "ServerDNSResolvConfFile",
    "ServerDNSSearchDomains",
    "ServerDNSTestAddresses",
    "ServerTransportListenAddr",
    "ServerTransportOptions",
    "ServerTransportPlugin",
    "ShutdownWaitLength",
    "SigningKeyLifetime",
    "Socks4Proxy",
    "Socks5Proxy",
    "Socks5ProxyPassword",
    "Socks5ProxyUsername",
    "SocksPolicy",
    "SocksPort",
    "SocksTimeout",
    "StrictNodes",
    "SyslogIdentityTag",
    "TCPProxy",
    "TestSocks",
    "TestingAuthDirTimeToLearnReachability",
    "TestingAuthKeyLifetime",
    "TestingAuthKeySlop",
    "TestingBridgeBootstrapDownloadInitialDelay",
    "TestingBridgeDownloadInitialDelay",
    "TestingClientConsensusDownloadInitialDelay",
    "TestingClientDownloadInitialDelay",
    "TestingClientMaxIntervalWithoutRequest",
    "TestingDirAuthVoteExit",
    "TestingDirAuthVoteExitIsStrict",
    "TestingDirAuthVoteGuard",
    "TestingDirAuthVoteGuardIsStrict",
    "TestingDirAuthVoteHSDir",
    "TestingDirAuthVoteHSDirIsStrict",
    "TestingDirConnectionMaxStall",
    "TestingEnableCellStatsEvent",
    "TestingEnableConnBwEvent",
    "TestingLinkCertLifetime",
    "TestingLinkKeySlop",
    "TestingMinExitFlagThreshold",
    "TestingMinFastFlagThreshold",
    "TestingMinTimeToReportBandwidth",
    "TestingServerConsensusDownloadInitialDelay",
    "TestingServerDownloadInitialDelay",
    "TestingSigningKeySlop",
    "TestingTorNetwork",
    "TestingV3AuthInitialDistDelay",
    "TestingV3AuthInitialVoteDelay",
    "TestingV3AuthInitialVotingInterval",
    "TestingV3AuthVotingStartOffset",
    "TokenBucketRefillInterval",
    "TrackHostExits",
    "TrackHostExitsExpire",
    "TransPort",
    "TransProxyType",
    "TruncateLogFile",
    "UnixSocksGroupWritable",
    "UpdateBridgesFromAuthority",
    "UseBridges",
    "UseDefaultFallbackDirs",
    "UseEntryGuards",
    "UseGuardFraction",
    "UseMicrodescriptors",
    "User",
    "V3AuthDistDelay",
    "V3AuthNIntervalsValid",
    "V3AuthUseLegacyKey",
    "V3AuthVoteDelay",
    "V3AuthVotingInterval",
    "V3AuthoritativeDirectory",
    "V3BandwidthsFile",
    "VanguardsLiteEnabled",
    "VersioningAuthoritativeDirectory",
    "VirtualAddrNetworkIPv4",
    "VirtualAddrNetworkIPv6",
    "WarnPlaintextPorts",
];

/// Names C tor itself marks obsolete (it warns and ignores them); Fors does the same.
pub const C_TOR_OBSOLETE: &[&str] = &[
    "AllowDotExit",
    "AllowInvalidNodes",
    "AllowSingleHopCircuits",
    "AllowSingleHopExits",
    "AlternateHSAuthority",
    "AndroidIdentityTag",
    "AuthDirBadDir",
    "AuthDirBadDirCCs",
    "AuthDirListBadDirs",
    "AuthDirMaxServersPerAuthAddr",
    "AuthDirRejectUnlisted",
    "CircuitIdleTimeout",
    "ClientAutoIPv6ORPort",
    "ClientBootstrapConsensusAuthorityOnlyMaxDownloadTries",
    "ClientBootstrapConsensusMaxDownloadTries",
    "CloseHSClientCircuitsImmediatelyOnTimeout",
    "CloseHSServiceRendCircuitsImmediatelyOnTimeout",
    "ControlListenAddress",
    "DNSListenAddress",
    "DirListenAddress",
    "DisableIOCP",
    "DisableV2DirectoryInfo_",
    "DynamicDHGroups",
    "ExcludeSingleHopRelays",
    "FallbackNetworkstatusFile",
    "FastFirstHopPK",
    "FetchV2Networkstatus",
    "Group",
    "HidServAuth",
    "HidServDirectoryV2",
    "HiddenServiceAuthorizeClient",
    "MaxOnionsPending",
    "NATDListenAddress",
    "NamingAuthoritativeDirectory",
    "ORListenAddress",
    "OptimisticData",
    "PathBiasDisableRate",
    "PathBiasMultFactor",
    "PathBiasScaleFactor",
    "PathBiasUseCloseCounts",
    "PortForwarding",
    "PortForwardingHelper",
    "PredictedPortsRelevanceTime",
    "PreferTunneledDirConns",
    "RecommendedPackages",
    "RunTesting",
    "SchedulerHighWaterMark__",
    "SchedulerLowWaterMark__",
    "SchedulerMaxFlushCells__",
    "SocksListenAddress",
    "StrictEntryNodes",
    "StrictExitNodes",
    "Support022HiddenServices",
    "TLSECGroup",
    "TestingCertMaxDownloadTries",
    "TestingConsensusMaxDownloadTries",
    "TestingDescriptorMaxDownloadTries",
    "TestingEnableTbEmptyEvent",
    "TestingEstimatedDescriptorPropagationTime",
    "TestingMicrodescMaxDownloadTries",
    "Tor2webMode",
    "Tor2webRendezvousPoints",
    "TransListenAddress",
    "TunnelDirConns",
    "UseEntryGuardsAsDirGuards",
    "UseFilteringSSLBufferevents",
    "UseNTorHandshake",
    "UserspaceIOCPBuffers",
    "V1AuthoritativeDirectory",
    "V2AuthoritativeDirectory",
    "VoteOnHidServDirectoriesV2",
    "WarnUnsafeSocks",
];

/// What the option table says about a name from a torrc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Implemented: the canonical name and its kind.
    Supported(&'static str, OptionKind),
    /// Accepted and ignored, with the reason.
    Ignored(&'static str, &'static str),
    /// C tor marks it obsolete.
    Obsolete(&'static str),
    /// A real C tor option that Fors does not implement.
    Unsupported(&'static str),
    Unknown,
}

/// Looks a name up case-insensitively, as C tor does.
pub fn lookup(name: &str) -> Lookup {
    let name = ALIASES
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(name))
        .map(|&(_, canon)| canon)
        .unwrap_or(name);
    if let Some(&(n, k)) = SUPPORTED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Lookup::Supported(n, k);
    }
    if let Some(&(n, why)) = IGNORED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Lookup::Ignored(n, why);
    }
    if let Some(&n) = C_TOR_OBSOLETE.iter().find(|n| n.eq_ignore_ascii_case(name)) {
        return Lookup::Obsolete(n);
    }
    if let Some(&n) = C_TOR_OPTIONS.iter().find(|n| n.eq_ignore_ascii_case(name)) {
        return Lookup::Unsupported(n);
    }
    Lookup::Unknown
}

/// The closest known option name to a misspelt one, if any is close enough to be a typo.
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let candidates = SUPPORTED
        .iter()
        .map(|&(n, _)| n)
        .chain(IGNORED.iter().map(|&(n, _)| n))
        .chain(C_TOR_OPTIONS.iter().copied());
    let mut best: Option<(usize, &'static str)> = None;
    for c in candidates {
        let d = edit_distance(&lower, &c.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    // Allow about one edit per four characters, at least one, at most three.
    let budget = (name.len() / 4).clamp(1, 3);
    best.filter(|&(d, _)| d <= budget).map(|(_, n)| n)
}

/// Levenshtein distance (insert, delete, substitute), by bytes.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_categories() {
        assert_eq!(
            lookup("orport"),
            Lookup::Supported("ORPort", OptionKind::List)
        );
        assert_eq!(
            lookup("DirServer"),
            Lookup::Supported("DirAuthority", OptionKind::List)
        );
        assert!(matches!(
            lookup("avoiddiskwrites"),
            Lookup::Ignored("AvoidDiskWrites", _)
        ));
        assert_eq!(lookup("TunnelDirConns"), Lookup::Obsolete("TunnelDirConns"));
        assert_eq!(
            lookup("HiddenServiceDir"),
            Lookup::Unsupported("HiddenServiceDir")
        );
        assert_eq!(lookup("Frobnicate"), Lookup::Unknown);
    }

    #[test]
    fn tables_are_consistent() {
        for (n, _) in SUPPORTED {
            assert!(
                !IGNORED.iter().any(|(i, _)| i == n),
                "{n} both supported and ignored"
            );
        }
        // Every ignored option is a real C tor option, so ignoring never hides a typo.
        for (n, _) in IGNORED {
            assert!(C_TOR_OPTIONS.contains(n), "{n} is not a C tor option");
        }
        for (n, _) in IGNORED_VALUES {
            assert!(
                IGNORED.iter().any(|(i, _)| i == n),
                "{n} has restricted values but is not ignored"
            );
        }
    }

    /// docs/config.md is the operator's list: every option Fors takes is there, and every
    /// ignored one with the values it accepts.
    #[test]
    fn docs_list_every_option() {
        let doc = include_str!("../../docs/config.md");
        for (n, _) in SUPPORTED {
            assert!(
                doc.contains(&format!("| `{n}")),
                "{n} is not in docs/config.md"
            );
        }
        for (n, why) in IGNORED {
            let vals = match ignored_values(n) {
                None => "any".to_string(),
                Some([]) => "only an empty value".to_string(),
                Some(v) => v
                    .iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let row = format!("| `{n}` | {vals} | {why} |");
            assert!(doc.contains(&row), "docs/config.md lacks the row {row}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("ExitPolcy"), Some("ExitPolicy"));
        assert_eq!(suggest("nicknam"), Some("Nickname"));
        assert_eq!(suggest("ORPrt"), Some("ORPort"));
        assert_eq!(suggest("Zzzzzzzzzzzz"), None);
    }
}
