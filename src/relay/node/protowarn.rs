//! Peers' protocol violations seen by one shard, for its log line at C tor's protocol-warning
//! severity (`ProtocolWarnings`: warn with 1, info with 0; C `LOG_PROTOCOL_WARN`,
//! `relay::log::protocol_warn_severity`).
//!
//! C tor logs each violation where it finds it. A peer decides how often it breaks a rule,
//! so Fors counts them and each shard logs at most one line a second (with the idle check,
//! `timers.rs`): how many of each kind, and the last one's rule. The line names no address,
//! circuit ID or relay identity (users first: an aggregated line cannot be scrubbed by
//! `SafeLogging` per address, so it never has one).
//!
//! Kinds, each where C tor uses `LOG_PROTOCOL_WARN`:
//! * circuits closed with DESTROY TORPROTOCOL (the circuit core's `ProtocolViolation`: C
//!   `relay.c`, `command.c`, `circuitbuild_relay.c`, `sendme.c`, …);
//! * channels closed for a link-protocol violation: a malformed or unexpected cell, no
//!   common version, a bad CERTS / AUTH_CHALLENGE / AUTHENTICATE / NETINFO cell, another
//!   identity than expected (C `channeltls.c`, `connection_or.c`, `relay_handshake.c`);
//! * PADDING_NEGOTIATE cells the node's padding refuses on a link older than v5 (C
//!   `channeltls.c` `channel_tls_process_padding_negotiate_cell`). The channel layer
//!   (`proto::channel::state`) drops such a cell, and a malformed one, before the node sees
//!   it, so today this count stays at 0; C tor logs both.

use std::fmt::Write as _;

use crate::proto::channel::ChannelError;
use crate::proto::circuit::ProtocolViolation;

/// Violations since the last line.
#[derive(Default)]
pub(super) struct ProtocolWarnings {
    channels: u64,
    last_channel: &'static str,
    padding_old_link: u64,
}

impl ProtocolWarnings {
    /// A channel closed for `why`: counted if it is the peer's protocol violation.
    pub(super) fn channel_closed(&mut self, why: &ChannelError) {
        if let Some(rule) = channel_violation(why) {
            self.channels += 1;
            self.last_channel = rule;
        }
    }

    /// A PADDING_NEGOTIATE cell arrived on a link older than v5 and was dropped.
    pub(super) fn padding_old_link(&mut self) {
        self.padding_old_link += 1;
    }

    /// The line for everything since the last call, with the circuit core's `circuits`
    /// (the last rule and the count), or `None` if there was nothing. Starts over.
    pub(super) fn take_line(
        &mut self,
        shard: usize,
        circuits: Option<(ProtocolViolation, u64)>,
    ) -> Option<String> {
        if self.channels == 0 && self.padding_old_link == 0 && circuits.is_none() {
            return None;
        }
        let mut line = format!("shard {shard}: peers' protocol violations:");
        let mut sep = " ";
        if self.channels > 0 {
            let _ = write!(
                line,
                "{sep}{} channel(s) closed, the last for {}",
                self.channels, self.last_channel
            );
            sep = "; ";
        }
        if self.padding_old_link > 0 {
            let _ = write!(
                line,
                "{sep}{} PADDING_NEGOTIATE cell(s) dropped on a link older than v5",
                self.padding_old_link
            );
            sep = "; ";
        }
        // Last: tools read the rule as the rest of the line after "the last for: ".
        if let Some((why, n)) = circuits {
            let _ = write!(
                line,
                "{sep}{n} circuit(s) closed with DESTROY TORPROTOCOL; the last for: {why}"
            );
        }
        *self = ProtocolWarnings::default();
        Some(line)
    }
}

/// The rule a channel broke if `why` is the peer's protocol violation, in words without
/// an address or identity; `None` for other closes (EOF, TLS failure, timeout, our own).
fn channel_violation(why: &ChannelError) -> Option<&'static str> {
    use ChannelError as E;
    Some(match why {
        E::Cell(_) => "a malformed cell",
        E::UnexpectedCell { .. } => "a cell its state does not allow",
        E::NonZeroCircId(_) => "a link cell with a nonzero circuit ID",
        E::NoCommonVersion => "no link protocol version in common",
        E::Certs(_) => "a bad CERTS cell",
        E::WrongRsaIdentity { .. } | E::WrongEd25519Identity { .. } => {
            "another identity than the expected one"
        }
        E::Auth(_) => "a bad AUTHENTICATE cell",
        E::BadAuthChallenge(_) => "a malformed AUTH_CHALLENGE cell",
        E::BadNetinfo(_) | E::BadNetinfoAddress => "a malformed NETINFO cell",
        E::Tls(_)
        | E::TlsInput(_)
        | E::PeerClosed
        | E::TruncatedCell(_)
        | E::HandshakeTimeout
        | E::OutputFull
        | E::NotOpen
        | E::LocalClose => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::ChanCmd;

    #[test]
    fn one_line_for_everything_since_the_last_then_nothing() {
        let mut w = ProtocolWarnings::default();
        assert_eq!(w.take_line(0, None), None);
        // Not violations: no line.
        w.channel_closed(&ChannelError::PeerClosed);
        w.channel_closed(&ChannelError::HandshakeTimeout);
        assert_eq!(w.take_line(0, None), None);
        w.channel_closed(&ChannelError::NoCommonVersion);
        w.channel_closed(&ChannelError::UnexpectedCell {
            cmd: ChanCmd::CREATE2,
            when: "before the handshake",
        });
        w.padding_old_link();
        let line = w
            .take_line(3, Some((ProtocolViolation::UnrecognizedAtLastHop, 2)))
            .unwrap();
        assert_eq!(
            line,
            format!(
                "shard 3: peers' protocol violations: 2 channel(s) closed, the last for a \
                 cell its state does not allow; 1 PADDING_NEGOTIATE cell(s) dropped on a link \
                 older than v5; 2 circuit(s) closed with DESTROY TORPROTOCOL; the last for: {}",
                ProtocolViolation::UnrecognizedAtLastHop
            )
        );
        assert_eq!(w.take_line(3, None), None, "counts start over");
        let line = w
            .take_line(1, Some((ProtocolViolation::RelayLength, 1)))
            .unwrap();
        assert!(line.ends_with(&format!(
            "violations: 1 circuit(s) closed with DESTROY TORPROTOCOL; the last for: {}",
            ProtocolViolation::RelayLength
        )));
    }
}
