//! DNS resolution for exit streams: a sans-IO stub resolver with a bounded cache.
//!
//! The shard owns the UDP socket and the clock. It asks [`Resolver::resolve`] for a name, sends
//! whatever [`Resolver::poll_transmit`] yields to the nameserver, feeds replies to
//! [`Resolver::handle_datagram`] and calls [`Resolver::handle_timeout`] at
//! [`Resolver::next_timeout`]. Nothing here blocks, spawns or reads a clock.
//!
//! * [`resolv_conf`]: nameservers from `ServerDNSResolvConfFile`.
//! * [`name`]: which hostnames an exit resolves (C tor's rules).
//! * [`wire`]: RFC 1035 queries and response parsing.
//! * [`ttl`]: TTL bucketing and fuzz for cells sent to clients.
//! * [`cache`]: bounded answer cache.
//! * [`resolver`]: the state machine.
//!
//! Not done (C tor has them): NXDOMAIN-hijack detection (`ServerDNSDetectHijacking`), TCP
//! retry of truncated answers (we report them as transient failures, as C does), and
//! re-reading resolv.conf when it changes. Choosing between IPv4 and IPv6 answers by exit
//! policy and BEGIN flags, and refusing to resolve at all on a non-exit, belong to the stream
//! layer.

mod answer;
pub mod cache;
pub mod name;
pub mod resolv_conf;
pub mod resolver;
pub mod ttl;
pub mod wire;

pub use name::{classify_host, DnsName, HostRequest, NameError};
pub use resolv_conf::{ResolvConf, ResolvConfError, DEFAULT_RESOLV_CONF};
pub use resolver::{
    Answer, Completion, DnsFailure, DnsMetrics, FailureCause, FamilyWanted, Lookup, Purpose,
    QueryHandle, Refusal, Resolution, Resolver, ResolverConfig,
};
pub use ttl::{clip_dns_fuzzy_ttl, clip_dns_ttl};

/// RESOLVED answer type for a transient error (tor-spec §6.4).
pub const RESOLVED_TYPE_ERROR_TRANSIENT: u8 = 0xF0;
/// RESOLVED answer type for a permanent error (tor-spec §6.4).
pub const RESOLVED_TYPE_ERROR: u8 = 0xF1;
