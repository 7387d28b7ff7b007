//! Fors: a thread-per-core Tor relay.
//!
//! The protocol core (`cell`, `crypto`, `keys`, `proto`, `exit`, `dir`, `config`) is sans-IO:
//! plain state machines that take bytes and time and return bytes and actions. Only `shard`
//! touches io_uring and sockets.

pub mod accounting;
pub mod cell;
pub mod cli;
pub mod config;
pub mod controlport;
pub mod crypto;
pub mod dir;
pub mod dircache;
pub mod dos;
pub mod exit;
pub mod keys;
pub mod metrics;
pub mod probe;
pub mod proto;
pub mod relay;
pub mod shard;
pub mod util;
