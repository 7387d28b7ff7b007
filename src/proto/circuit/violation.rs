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
            Self::RelayBeforeCreated => "relay cell before the circuit was created",
            Self::TooManyRelayEarly => "more RELAY_EARLY cells than allowed",
            Self::InboundRelayEarly => "inbound RELAY_EARLY cell",
            Self::UnrecognizedAtLastHop => "unrecognized relay cell at the last hop",
            Self::OnionServiceRole => "onion-service cell refused (a multi-shard relay refuses every one; else see the HS counters)",
        })
    }
}
