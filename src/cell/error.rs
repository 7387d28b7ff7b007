//! The one error type of the cell codec. Every variant says what was wrong and, where it helps,
//! the offending value and the limit, so a protocol warning can be logged without context.

use thiserror::Error;

/// A cell, cell body or relay message that could not be parsed or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CellError {
    /// Input ended before a field was complete.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The caller's output buffer cannot hold the encoding.
    #[error("output buffer too small for {what}: need {need} bytes, have {have}")]
    BufferTooSmall {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A length field (or a body to be encoded) exceeds what the format allows.
    #[error("{what} length {len} exceeds {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A length field has a value the format forbids (wrong fixed size, odd length...).
    #[error("{what} has invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    /// A version field holds a value we do not understand.
    #[error("{what} version {version} is not supported")]
    UnsupportedVersion { what: &'static str, version: u16 },
    /// An enumerated field holds a value the format forbids.
    #[error("{what} has invalid value {value}")]
    BadValue { what: &'static str, value: u32 },
    /// A circuit ID does not fit the channel's circuit-ID width.
    #[error("circuit ID {circ_id:#x} does not fit in {width} bytes")]
    CircIdTooWide { circ_id: u32, width: usize },
    /// Link protocol versions below 3 are not framed by this codec.
    #[error("link protocol version {0} is not supported")]
    UnsupportedLinkVersion(u16),
    /// Relay cell format v1 rejects commands it does not know (prop 359).
    #[error("relay command {0} is unknown to relay cell format v1")]
    UnknownRelayCmdV1(u8),
    /// Relay cell format v1: this command needs a nonzero stream ID, or must not carry one.
    #[error("relay command {cmd} {}", if *.needs_stream { "needs a nonzero stream ID" } else { "must have stream ID 0" })]
    StreamIdMismatch { cmd: u8, needs_stream: bool },
    /// BEGIN / RESOLVE body has no NUL terminator (tor-spec "Opening streams").
    #[error("{0} body has no NUL terminator")]
    MissingNul(&'static str),
    /// BEGIN target is not `ADDRESS:PORT`.
    #[error("BEGIN target has no port")]
    MissingPort,
    /// BEGIN port is zero or not a decimal number in 1..=65535.
    #[error("BEGIN port is not a number in 1..=65535")]
    BadPort,
    /// BEGIN/RESOLVE address is empty, has forbidden characters, or is a malformed IP literal.
    #[error("{0} address is malformed")]
    BadAddress(&'static str),
    /// CONNECTED cannot carry 0.0.0.0: that prefix marks the IPv6 form.
    #[error("CONNECTED cannot encode IPv4 address 0.0.0.0")]
    ConnectedZeroIpv4,
}
