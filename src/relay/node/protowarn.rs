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
//! * link cells an open channel drops and C logs (`proto::channel::LinkWarnings`, taken
//!   after each read): a repeated VERSIONS, a NETINFO on an open channel, a
//!   PADDING_NEGOTIATE on a link older than v5 or a malformed one (C `channeltls.c`);
//! * relay cells the circuit core drops and C logs, by kind (`proto::circuit::ProtocolDrop`:
//!   EXTEND2 on a stream or not via RELAY_EARLY, a stream command with stream ID 0, BEGIN or
//!   RESOLVE for a known stream, EXTENDED / TRUNCATED at a non-origin, CONNECTED / RESOLVED
//!   for a stream still resolving or connecting, an unknown command;
//!   C `relay.c` `handle_relay_msg`, `connection_edge_process_relay_cell`).

use std::fmt::Write as _;

use crate::proto::channel::{ChannelError, LinkWarnings};
use crate::proto::circuit::{ProtocolDrop, ProtocolDrops, ProtocolViolation};

/// Violations since the last line.
#[derive(Default)]
pub(super) struct ProtocolWarnings {
    channels: u64,
    last_channel: &'static str,
    link: LinkWarnings,
}

impl ProtocolWarnings {
    /// A channel closed for `why`: counted if it is the peer's protocol violation.
    pub(super) fn channel_closed(&mut self, why: &ChannelError) {
        if let Some(rule) = channel_violation(why) {
            self.channels += 1;
            self.last_channel = rule;
        }
    }

    /// A PADDING_NEGOTIATE cell arrived on a link older than v5 and was dropped (the
    /// node's padding refused it; the channel layer counts the same case first).
    pub(super) fn padding_old_link(&mut self) {
        self.link.padding_negotiate_old_link += 1;
    }

    /// Link cells a channel dropped for a peer's violation (`Channel::take_link_warnings`).
    pub(super) fn link_cells(&mut self, w: &LinkWarnings) {
        self.link.add(w);
    }

    /// The line for everything since the last call, with the circuit core's `circuits`
    /// (the last rule and the count) and `drops` (relay cells dropped, by kind), or `None`
    /// if there was nothing. Starts over.
    pub(super) fn take_line(
        &mut self,
        shard: usize,
        drops: &ProtocolDrops,
        circuits: Option<(ProtocolViolation, u64)>,
    ) -> Option<String> {
        if self.channels == 0 && self.link.is_empty() && drops.is_empty() && circuits.is_none() {
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
        let l = &self.link;
        for (n, what) in [
            (l.versions_repeated, "repeated VERSIONS"),
            (l.netinfo_late, "NETINFO on an open channel"),
            (
                l.padding_negotiate_old_link,
                "PADDING_NEGOTIATE on a link older than v5",
            ),
            (l.padding_negotiate_malformed, "malformed PADDING_NEGOTIATE"),
        ] {
            if n > 0 {
                let _ = write!(line, "{sep}{n} link cell(s) dropped: {what}");
                sep = "; ";
            }
        }
        for kind in ProtocolDrop::ALL {
            let n = drops.count(kind);
            if n > 0 {
                let _ = write!(line, "{sep}{n} relay cell(s) dropped: {}", kind.rule());
                sep = "; ";
            }
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
        | E::TlsRecord(_)
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
        let none = ProtocolDrops::default();
        assert_eq!(w.take_line(0, &none, None), None);
        // Not violations: no line.
        w.channel_closed(&ChannelError::PeerClosed);
        w.channel_closed(&ChannelError::HandshakeTimeout);
        assert_eq!(w.take_line(0, &none, None), None);
        w.channel_closed(&ChannelError::NoCommonVersion);
        w.channel_closed(&ChannelError::UnexpectedCell {
            cmd: ChanCmd::CREATE2,
            when: "before the handshake",
        });
        w.padding_old_link();
        let line = w
            .take_line(
                3,
                &none,
                Some((ProtocolViolation::UnrecognizedAtLastHop, 2)),
            )
            .unwrap();
        assert_eq!(
            line,
            format!(
                "shard 3: peers' protocol violations: 2 channel(s) closed, the last for a \
                 cell its state does not allow; 1 link cell(s) dropped: PADDING_NEGOTIATE on a \
                 link older than v5; 2 circuit(s) closed with DESTROY TORPROTOCOL; the last for: {}",
                ProtocolViolation::UnrecognizedAtLastHop
            )
        );
        assert_eq!(w.take_line(3, &none, None), None, "counts start over");
        let line = w
            .take_line(1, &none, Some((ProtocolViolation::RelayLength, 1)))
            .unwrap();
        assert!(line.ends_with(&format!(
            "violations: 1 circuit(s) closed with DESTROY TORPROTOCOL; the last for: {}",
            ProtocolViolation::RelayLength
        )));
    }

    #[test]
    fn every_link_and_relay_drop_kind_is_named_with_its_count() {
        let mut w = ProtocolWarnings::default();
        let none = ProtocolDrops::default();
        w.link_cells(&LinkWarnings {
            versions_repeated: 2,
            netinfo_late: 1,
            padding_negotiate_old_link: 0,
            padding_negotiate_malformed: 3,
        });
        // Nothing new from a channel: still nothing to add.
        w.link_cells(&LinkWarnings::default());
        let mut drops = ProtocolDrops::default();
        for (i, kind) in ProtocolDrop::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                drops.note(kind);
            }
        }
        let line = w.take_line(0, &drops, None).unwrap();
        let mut want = String::from(
            "shard 0: peers' protocol violations: 2 link cell(s) dropped: repeated VERSIONS; \
             1 link cell(s) dropped: NETINFO on an open channel; 3 link cell(s) dropped: \
             malformed PADDING_NEGOTIATE",
        );
        for (i, kind) in ProtocolDrop::ALL.into_iter().enumerate() {
            let _ = write!(want, "; {} relay cell(s) dropped: {}", i + 1, kind.rule());
        }
        assert_eq!(line, want);
        assert_eq!(w.take_line(0, &none, None), None, "counts start over");
        // Drops alone make a line too.
        let mut one = ProtocolDrops::default();
        one.note(ProtocolDrop::UnknownCommand);
        assert_eq!(
            w.take_line(2, &one, None).as_deref(),
            Some("shard 2: peers' protocol violations: 1 relay cell(s) dropped: unknown relay command")
        );
    }
}
