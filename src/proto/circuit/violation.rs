//! Which rule a circuit broke when the core closed it with DESTROY (TORPROTOCOL): kept for
//! the shard's rate-limited debug line (C tor logs these as protocol warnings), so that a
//! "circuits closed for protocol violations" count can be traced to its cause. Never holds
//! an address or a circuit ID.

/// A rule of tor-spec (or C tor's behaviour) a circuit broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// tor-spec §"Relay cells": the length field runs past the cell body.
    RelayLength,
    /// prop 350: TAP EXTEND cells are refused.
    TapExtend,
    /// An EXTEND2 that does not parse.
    BadExtend2,
    /// An EXTEND2 on a circuit already extended or extending (C
    /// `circuit_extend_state_valid_helper`).
    ExtendAgain,
    /// An EXTEND2 whose CREATE2 is TAP or CREATE_FAST.
    ExtendHandshake,
    /// An EXTEND2 without exactly one RSA identity, or with two Ed25519 identities.
    ExtendLinkSpecs,
    /// An EXTEND2 without a usable address (port 0, unspecified, or private where not
    /// allowed).
    ExtendAddress,
    /// An EXTEND2 back to the previous hop (C `circuit_extend_lspec_valid_helper`).
    ExtendToPreviousHop,
    /// An EXTEND2 to this relay itself.
    ExtendToSelf,
    /// A DATA cell past the circuit's receive window (tor-spec §"Flow control").
    CircuitWindow,
    /// A DATA cell past the stream's receive window.
    StreamWindow,
    /// A circuit SENDME without the authenticated tag we expect (prop 289).
    SendmeAuth,
    /// A SENDME that would open the package window past its maximum.
    UnexpectedSendme,
    /// A stream-level SENDME on a congestion-controlled circuit (C
    /// `sendme_process_stream_level`).
    StreamSendmeOnCc,
    /// CONNECTED or RESOLVED, a reply only an origin takes, for an open exit stream (C
    /// `handle_relay_msg`: "unsupported while open. Closing circ.").
    ReplyOnOpenStream,
    /// A relay cell before the circuit finished its handshake.
    RelayBeforeCreated,
    /// More RELAY_EARLY cells than tor-spec allows per circuit.
    TooManyRelayEarly,
    /// A RELAY_EARLY cell travelling toward the client.
    InboundRelayEarly,
    /// An unrecognized relay cell on a circuit that ends here (C
    /// `circuit_receive_relay_cell`: "circ stops here").
    UnrecognizedAtLastHop,
    /// An ESTABLISH_INTRO, INTRODUCE1, ESTABLISH_RENDEZVOUS or RENDEZVOUS1 the intro- or
    /// rendezvous-point rules refused (malformed, bad signature or MAC, wrong circuit,
    /// unknown cookie…): `proto::hs`'s counters say which rule. Not counted as a peer's
    /// protocol violation, since those counters count it.
    OnionServiceRole,
}

impl ::core::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.write_str(match self {
            Self::RelayLength => "relay cell length past the cell body",
            Self::TapExtend => "TAP EXTEND cell (refused since prop 350)",
            Self::BadExtend2 => "unparsable EXTEND2",
            Self::ExtendAgain => "EXTEND2 on a circuit already extended",
            Self::ExtendHandshake => "EXTEND2 with a TAP or CREATE_FAST handshake",
            Self::ExtendLinkSpecs => "EXTEND2 without exactly one RSA identity",
            Self::ExtendAddress => "EXTEND2 without a usable address",
            Self::ExtendToPreviousHop => "EXTEND2 back to the previous hop",
            Self::ExtendToSelf => "EXTEND2 to this relay itself",
            Self::CircuitWindow => "DATA cell past the circuit window",
            Self::StreamWindow => "DATA cell past the stream window",
            Self::SendmeAuth => "circuit SENDME without the expected tag (prop 289)",
            Self::UnexpectedSendme => "SENDME past the package window's maximum",
            Self::StreamSendmeOnCc => "stream SENDME on a congestion-controlled circuit",
            Self::ReplyOnOpenStream => "CONNECTED or RESOLVED for an open exit stream",
            Self::RelayBeforeCreated => "relay cell before the circuit was created",
            Self::TooManyRelayEarly => "more RELAY_EARLY cells than allowed",
            Self::InboundRelayEarly => "inbound RELAY_EARLY cell",
            Self::UnrecognizedAtLastHop => "unrecognized relay cell at the last hop",
            Self::OnionServiceRole => "onion-service cell refused (a multi-shard relay refuses every one; else see the HS counters)",
        })
    }
}

/// A relay cell the core drops where C tor logs at `LOG_PROTOCOL_WARN` and keeps the
/// circuit (C `relay.c` `handle_relay_msg`, `connection_edge_process_relay_cell`). Counted
/// for the shard's protocol-warning line; never an address, circuit ID or stream ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolDrop {
    /// EXTEND2 with a nonzero stream ID ("'extend' cell received for non-zero stream").
    ExtendNonZeroStream,
    /// EXTEND2 in a RELAY cell, not RELAY_EARLY, while `AllowNonearlyExtend` is 0.
    ExtendNotEarly,
    /// DATA, BEGIN, BEGIN_DIR, CONNECTED, END, RESOLVE or RESOLVED with stream ID 0.
    StreamIdZero,
    /// BEGIN or BEGIN_DIR for a stream already open ("Begin cell for known stream").
    BeginKnownStream,
    /// RESOLVE for a stream already open ("resolve request for known stream").
    ResolveKnownStream,
    /// EXTENDED, EXTENDED2 or TRUNCATED, which only a circuit's origin takes.
    OriginOnlyAtRelay,
    /// CONNECTED or RESOLVED for an exit stream still resolving or connecting (C
    /// `connection_edge_process_relay_cell_not_open`: "unexpected relay command").
    ReplyOnPendingStream,
    /// A relay command C tor does not know (format v0; v1 closes the circuit instead).
    UnknownCommand,
}

impl ProtocolDrop {
    /// Every kind, in the order the line lists them.
    pub const ALL: [ProtocolDrop; 8] = [
        ProtocolDrop::ExtendNonZeroStream,
        ProtocolDrop::ExtendNotEarly,
        ProtocolDrop::StreamIdZero,
        ProtocolDrop::BeginKnownStream,
        ProtocolDrop::ResolveKnownStream,
        ProtocolDrop::OriginOnlyAtRelay,
        ProtocolDrop::ReplyOnPendingStream,
        ProtocolDrop::UnknownCommand,
    ];

    /// The rule in words, for the log line.
    pub const fn rule(self) -> &'static str {
        match self {
            ProtocolDrop::ExtendNonZeroStream => "EXTEND2 with a nonzero stream ID",
            ProtocolDrop::ExtendNotEarly => "EXTEND2 not in a RELAY_EARLY cell",
            ProtocolDrop::StreamIdZero => "stream command with stream ID 0",
            ProtocolDrop::BeginKnownStream => "BEGIN for a known stream",
            ProtocolDrop::ResolveKnownStream => "RESOLVE for a known stream",
            ProtocolDrop::OriginOnlyAtRelay => "EXTENDED or TRUNCATED at a non-origin",
            ProtocolDrop::ReplyOnPendingStream => "CONNECTED or RESOLVED for a pending stream",
            ProtocolDrop::UnknownCommand => "unknown relay command",
        }
    }
}

/// How many relay cells of each [`ProtocolDrop`] kind since the shard last took them: a
/// fixed array, so a peer's flood costs no memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolDrops([u64; ProtocolDrop::ALL.len()]);

impl ProtocolDrops {
    /// Counts one drop of `kind`.
    pub fn note(&mut self, kind: ProtocolDrop) {
        let n = &mut self.0[kind as usize];
        *n = n.saturating_add(1);
    }

    /// How many of `kind`.
    pub fn count(&self, kind: ProtocolDrop) -> u64 {
        self.0[kind as usize]
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
}
