//! The directory cache (dir-spec §4 "Directory cache operation"): what a relay with
//! `DirCache 1` keeps and serves.
//!
//! - [`consdiff`]: consensus diffs, generated and applied as C tor does (dir-spec
//!   "Consensus diff format").
//! - [`store`]: the documents kept, keyed as dir-spec's URLs look them up. Sans-IO: the
//!   mirror inserts verified documents, the directory server reads them.
//! - [`hsdir`]: the HSDir v3 onion-service descriptor cache (`HSDir=2`).
//! - [`mirror`]: what to fetch from the authorities and when, and filing the answers.
//! - [`verify`]: the checks a fetched document passes before it is stored.
//! - [`memory`]: C tor's warning when the machine's memory and `DirCache` disagree.
//! - [`disk`]: the store's copy under `DataDirectory/dircache/` (atomic writes), loaded at
//!   start-up through the same checks.
//! - [`request`], [`serve`], [`compress`]: the serving side, sans-IO: a request's bytes
//!   in, the answer's bytes out (dir-spec appendix "Standard URLs", C tor `dircache.c`).
//! - [`tunnel`]: the fixed-size preamble a shard writes first on a BEGIN_DIR stream's
//!   loopback connection (the previous hop's address, for `X-Your-Address-Is`).
//!
//! The store is shared between the mirror (the directory worker thread, a rare writer) and the
//! directory server thread (readers) as a [`SharedStore`]; neither is on the per-cell path, so a
//! lock is allowed here (docs/architecture.md "Shape").

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod compress;
pub mod consdiff;
pub mod disk;
pub mod hsdir;
pub mod memory;
pub mod mirror;
pub mod request;
pub mod serve;
pub mod store;
pub mod tunnel;
pub mod verify;

pub use store::{
    ConsensusDoc, ConsensusFlavor, DirStore, DocKind, Document, KindStats, SharedStore,
    StoreLimits, StoreStats,
};
