//! Readiness watches: the shard tells a handler when a descriptor the handler owns (the exit
//! resolver's UDP socket) has something to read, so the handler can drain it with ordinary
//! non-blocking calls. One multishot `IORING_OP_POLL_ADD` (5.13) per watch keeps firing
//! without re-submission; it is re-armed only if the kernel ends it.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// At most this many watches per shard: they are for a few long-lived sockets, not per-stream.
pub(crate) const MAX_WATCHES: usize = 4;

/// Names one watch in `ConnHandler::on_readable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(pub u32);

/// One watched descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    pub fd: RawFd,
    /// A poll is in flight for it.
    pub armed: bool,
    /// The kernel refused it (e.g. EBADF): do not re-arm in a loop.
    pub dead: bool,
}

impl Watch {
    pub fn new(fd: BorrowedFd<'_>) -> Watch {
        Watch {
            fd: fd.as_raw_fd(),
            armed: false,
            dead: false,
        }
    }
}
