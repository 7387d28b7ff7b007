//! Denial-of-service defences for the ORPort, after C tor's `dos.c` (0.4.9):
//!
//! * **Circuit creation** (`DoSCircuitCreation*`): per client address, a token bucket of
//!   CREATE/CREATE2/CREATE_FAST cells received on *client* channels (peers that did not
//!   authenticate as relays). When it is empty while the address has at least
//!   `MinConnections` connections open, the address is marked for `DefenseTimePeriod` plus a
//!   random 1..period/2 seconds; meanwhile (defence type 2) its CREATE* cells get DESTROY
//!   with reason RESOURCELIMIT and no handshake.
//! * **Connections** (`DoSConnection*`): an address with more than `MaxConcurrentCount`
//!   connections open, or marked by its connect-rate bucket (`ConnectRate`/`ConnectBurst`,
//!   marked for `ConnectDefenseTimePeriod` + jitter), has new connections closed at accept.
//!
//! Every incoming connection counts (C tor stopped exempting addresses of known relays in
//! 0.4.8: exits refuse network re-entry now, and the exemption was a way around the limits);
//! only the circuit defence looks at whether the channel is a client's.
//!
//! [`config`] resolves torrc over consensus; [`table`] is the per-address state, one
//! lock-free table shared by all shards; [`stats`] the counters. All of it is sans-IO: the
//! caller passes the time.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod config;
pub mod stats;
pub mod table;

pub use config::{CcDefenseType, ConnDefenseType, DosConfig, DosOptions};
pub use stats::{DosCounters, StripedCounter};
pub use table::{AddrSlot, CircCreateDecision, ClientAddrTable, ConnDecision, ConnRefusal};
