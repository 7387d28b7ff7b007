//! The shard runtime: thread-per-core event loops on io_uring, protocol-agnostic.
//!
//! Fors runs N shards. Each is one thread pinned to one core that owns one io_uring, its own
//! SO_REUSEPORT listening socket and every connection that lands on it. The protocol (TLS,
//! cells, circuits) plugs in as a sans-IO [`ConnHandler`]: it gets bytes, connection ids and
//! time, and answers through an [`Outbox`]. Shards share no locks; they talk only through
//! bounded SPSC queues ([`spsc`]), one per ordered pair of shards, with one eventfd wake-up
//! per batch.
//!
//! Why each io_uring feature (all checked at start-up by [`probe_kernel`], which names any
//! missing one in a [`ShardError::MissingKernelFeature`]):
//! - **Multishot accept** (5.19): one SQE keeps accepting; no re-submission per connection.
//! - **Multishot recv + provided buffer ring** (6.0 / 5.19, `IORING_REGISTER_PBUF_RING`): one
//!   SQE per connection keeps receiving, and the kernel takes a buffer from a shared ring only
//!   when data arrives, so idle connections hold no receive memory. Buffers go back to the
//!   ring right after the handler's `on_data` returns. Pausing a connection's reads cancels
//!   its multishot recv; resuming re-arms it.
//! - **Registered (fixed) files**: each connection's socket sits in the ring's file table at
//!   its slot index, so every recv/send skips the kernel's per-op fd lookup and refcounting.
//! - **Send from pre-allocated buffers**: handlers' bytes are copied into a fixed pool (no
//!   allocation per write); one send in flight per connection keeps the stream ordered; a
//!   per-connection bound on queued buffers is the backpressure point.
//! - **Zero-copy send** (`IORING_OP_SEND_ZC`, 6.0) for sends of at least
//!   `ShardConfig::zero_copy_threshold` bytes, from the pool registered as fixed buffer 0;
//!   the buffer stays pinned until the kernel's notification. Delivered to a local socket
//!   (loopback, veth) the kernel copies anyway, which the notification reports on 6.2+
//!   (`send_zc_copied`); measured here it never beat a plain send (bench/RESULTS.md), so the
//!   shipped profiles leave it off.
//! - **Connect with a linked timeout** (`IORING_OP_CONNECT` + `IORING_OP_LINK_TIMEOUT`) for
//!   outbound connections (extending circuits, exit streams).
//! - **Timeout op** for the handler's periodic `on_tick`; **eventfd read** for cross-shard
//!   wake-ups and stop; **eventfd write through the ring** to wake a peer with no extra
//!   syscall.
//! - **Multishot poll** (5.13) on descriptors a handler owns (the exit resolver's UDP
//!   socket): `Outbox::watch_readable`, then `ConnHandler::on_readable` on each wake-up.
//! - **SINGLE_ISSUER + DEFER_TASKRUN** (6.1, used when present): completion work runs only
//!   when the shard waits, never interrupting it mid-batch.
//!
//! No locks and no allocation on the read/write path: all tables and buffers are sized from
//! [`ShardConfig`] at start-up, and each bound has a counter in [`ShardMetrics`].

mod bufring;
mod config;
mod conn;
mod core;
mod error;
mod event_loop;
mod handler;
mod metrics;
mod probe;
pub mod ratelimit;
mod runtime;
mod sendpool;
pub mod slots;
pub mod spsc;
mod watch;

pub use self::config::{RuntimeConfig, ShardConfig};
pub use self::conn::{ConnId, ShardId};
pub use self::error::{CloseReason, CrossPushError, OutboxError, ShardError};
pub use self::event_loop::ShardReport;
pub use self::handler::{ConnHandler, Filled, Outbox, ShardIo};
pub use self::metrics::ShardMetrics;
pub use self::probe::{probe_kernel, KernelFeatures};
pub use self::ratelimit::{BwClass, BwRates, SharedBudget};
pub use self::runtime::Runtime;
pub use self::slots::{SlotBounds, SlotClass};
pub use self::watch::WatchId;
