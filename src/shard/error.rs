//! Typed errors of the shard runtime, and why a connection closed.

use std::io;

/// A runtime-level failure: start-up, kernel features, or a broken ring.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The kernel lacks an io_uring feature the runtime depends on.
    #[error("kernel lacks {feature} (needs Linux >= {needs})")]
    MissingKernelFeature {
        /// The io_uring opcode, flag or register command that is missing.
        feature: &'static str,
        /// The first kernel release that has it.
        needs: &'static str,
    },
    /// A configuration value is out of its allowed range.
    #[error("invalid shard configuration: {0}")]
    Config(String),
    /// Creating or registering something with io_uring failed.
    #[error("io_uring {what} failed: {source}")]
    Ring {
        /// Which step failed.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Creating, binding or listening on a socket failed.
    #[error("socket {what} failed: {source}")]
    Socket {
        /// Which step failed.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Pinning a shard thread to its core failed.
    #[error("could not pin shard {shard} to core {core}")]
    Pin {
        /// The shard index.
        shard: usize,
        /// The requested core id.
        core: usize,
    },
    /// A shard thread could not be spawned or panicked.
    #[error("shard thread {shard}: {what}")]
    Thread {
        /// The shard index.
        shard: usize,
        /// What went wrong.
        what: &'static str,
    },
}

impl ShardError {
    pub(crate) fn ring(what: &'static str, source: io::Error) -> Self {
        ShardError::Ring { what, source }
    }
    pub(crate) fn socket(what: &'static str, source: io::Error) -> Self {
        ShardError::Socket { what, source }
    }
}

/// Why a connection was closed; given to `ConnHandler::on_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent FIN (recv returned 0).
    PeerClosed,
    /// The peer reset the connection (ECONNRESET / EPIPE).
    Reset,
    /// Another socket error, as a positive errno.
    Error(i32),
    /// The handler asked for the close (after pending output was flushed).
    LocalClose,
    /// An outbound connect failed, with the positive errno.
    ConnectFailed(i32),
    /// An outbound connect did not finish within the configured timeout.
    ConnectTimeout,
    /// The runtime is stopping.
    Shutdown,
    /// An unauthenticated inbound handshake closed by the shard to make room (the oldest
    /// in a full handshake class) or for outliving the shortened handshake timeout under
    /// pressure (`shard::slots`).
    Evicted,
}

impl CloseReason {
    /// Classifies a negative io_uring result of a recv/send on an open connection.
    pub(crate) fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => CloseReason::Reset,
            e => CloseReason::Error(e),
        }
    }
}

/// Why an `Outbox` request about a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The connection id is stale (closed) or was never valid.
    #[error("connection is closed or unknown")]
    NotOpen,
    /// The connection's pending-output bound (or the shard's send buffer pool) is exhausted;
    /// `ConnHandler::on_writable` follows once it has drained.
    #[error("connection output is full")]
    Full,
    /// The connection table is full; no outbound connection can be opened.
    #[error("connection table is full")]
    TableFull,
    /// Creating the outbound socket failed (positive errno).
    #[error("outbound socket could not be created (errno {0})")]
    Socket(i32),
}

/// Why a cross-shard push was refused; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum CrossPushError<M> {
    /// The bounded queue to that shard is full.
    Full(M),
    /// No such shard (or the shard itself: a shard does not queue to itself).
    NoSuchShard(M),
}
