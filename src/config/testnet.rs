//! Values C tor changes when `TestingTorNetwork 1` is set (its `app/config/testnet.inc` and a
//! few code paths), restricted to the ones that matter to a relay. Client, directory-authority
//! and control-port entries of that list are left out.

use std::time::Duration;

/// Relay behaviour that depends on `TestingTorNetwork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkTimings {
    /// `DirAllowPrivateAddresses`: publish/accept private addresses in descriptors.
    pub dir_allow_private_addresses: bool,
    /// `ExtendAllowPrivateAddresses`: EXTEND to relays on private addresses.
    pub extend_allow_private_addresses: bool,
    /// Default of `ExitPolicyRejectPrivate` when the torrc does not set it.
    pub exit_policy_reject_private_default: bool,
    /// `CountPrivateBandwidth`: count traffic with private addresses in bandwidth stats.
    pub count_private_bandwidth: bool,
    /// `TestingMinTimeToReportBandwidth`: wait before reporting observed bandwidth.
    pub min_time_to_report_bandwidth: Duration,
    /// `TestingServerDownloadInitialDelay`: first-retry delay for relay directory downloads.
    pub server_download_initial_delay: Duration,
    /// `TestingServerConsensusDownloadInitialDelay`: same for consensus downloads.
    pub server_consensus_download_initial_delay: Duration,
    /// `TestingDirConnectionMaxStall`: give up on a directory connection that stalls this long.
    pub dir_connection_max_stall: Duration,
    /// How often to check whether a new consensus should be fetched (C mainloop.c:
    /// `fetch_networkstatus_callback`, 60 s normally, every second in a test network).
    pub consensus_fetch_check_interval: Duration,
}

impl NetworkTimings {
    /// The public-network values (C tor's defaults).
    pub const PUBLIC: Self = Self {
        dir_allow_private_addresses: false,
        extend_allow_private_addresses: false,
        exit_policy_reject_private_default: true,
        count_private_bandwidth: false,
        min_time_to_report_bandwidth: Duration::from_secs(86_400),
        server_download_initial_delay: Duration::ZERO,
        server_consensus_download_initial_delay: Duration::ZERO,
        dir_connection_max_stall: Duration::from_secs(300),
        consensus_fetch_check_interval: Duration::from_secs(60),
    };

    /// The `TestingTorNetwork 1` values.
    pub const TESTING: Self = Self {
        dir_allow_private_addresses: true,
        extend_allow_private_addresses: true,
        exit_policy_reject_private_default: false,
        count_private_bandwidth: true,
        min_time_to_report_bandwidth: Duration::ZERO,
        server_download_initial_delay: Duration::ZERO,
        server_consensus_download_initial_delay: Duration::ZERO,
        dir_connection_max_stall: Duration::from_secs(30),
        consensus_fetch_check_interval: Duration::from_secs(1),
    };

    pub fn for_network(testing: bool) -> Self {
        if testing {
            Self::TESTING
        } else {
            Self::PUBLIC
        }
    }
}
