//! The relay-side machines C tor 0.4.9 registers (`circuitpadding_machines.c`), in C's
//! registration order: a machine's number is its place in the relay list, so
//! "relay_ip_circ" is 0 and "relay_rp_circ" is 1 — the numbers C tor clients send
//! (their own "client_ip_circ" and "client_rp_circ" are 0 and 1 on the origin list).
//!
//! Both have two states, START and OBFUSCATE_CIRC_SETUP, and go START → OBFUSCATE on the
//! first non-padding cell sent towards the client — the PADDING_NEGOTIATED answer itself.

use super::spec::{
    Histogram, LengthDist, MachineSpec, Next, StateSpec, TokenRemoval, NUM_EVENTS, STATE_START,
};

/// C `INTRO_MACHINE_MINIMUM_PADDING` / `INTRO_MACHINE_MAXIMUM_PADDING`.
pub const INTRO_MACHINE_MINIMUM_PADDING: u16 = 7;
pub const INTRO_MACHINE_MAXIMUM_PADDING: u16 = 10;

/// The second state of both machines.
pub const STATE_OBFUSCATE_CIRC_SETUP: u16 = 1;

const OBF: Next = Next::State(STATE_OBFUSCATE_CIRC_SETUP);

const fn next(pairs: &[(usize, Next)]) -> [Next; NUM_EVENTS] {
    let mut n = [Next::Ignore; NUM_EVENTS];
    let mut i = 0;
    while i < pairs.len() {
        n[pairs[i].0] = pairs[i].1;
        i += 1;
    }
    n
}

const NONPADDING_SENT: usize = super::spec::Event::NonPaddingSent as usize;
const PADDING_SENT: usize = super::spec::Event::PaddingSent as usize;
const LENGTH_COUNT: usize = super::spec::Event::LengthCount as usize;

/// START: to OBFUSCATE_CIRC_SETUP on the first non-padding cell sent.
const START: StateSpec = StateSpec {
    next: next(&[(NONPADDING_SENT, OBF)]),
    ..StateSpec::IDLE
};

/// "relay_ip_circ" (C `circpad_machine_relay_hide_intro_circuits`): after the
/// introduction, 7 to 10 DROP cells towards the client, 1–10 ms apart, as if a small
/// download followed; then END, and a PADDING_NEGOTIATED STOP tells the client so it can
/// close the circuit.
pub static RELAY_IP_CIRC: MachineSpec = MachineSpec {
    name: "relay_ip_circ",
    machine_num: 0,
    machine_index: 0,
    should_negotiate_end: true,
    allowed_padding_count: INTRO_MACHINE_MAXIMUM_PADDING,
    max_padding_percent: 1,
    states: &[
        START,
        StateSpec {
            // One bin of 1000 tokens on [1 ms, 10 ms), then the (empty) infinity bin.
            histogram: Some(Histogram {
                edges_usec: &[1000, 10_000],
                tokens: &[1000, 0],
                total_tokens: 1000,
            }),
            length_dist: LengthDist::Uniform {
                low: INTRO_MACHINE_MINIMUM_PADDING as f64,
                high: INTRO_MACHINE_MAXIMUM_PADDING as f64,
            },
            start_length: 0,
            max_length: 0,
            length_includes_nonpadding: false,
            token_removal: TokenRemoval::None,
            // Padding or non-padding sent: stay (and draw a new delay), so padding goes on
            // on an otherwise silent circuit; length used up: END.
            next: next(&[
                (PADDING_SENT, OBF),
                (NONPADDING_SENT, OBF),
                (LENGTH_COUNT, Next::End),
            ]),
        },
    ],
};

/// "relay_rp_circ" (C `circpad_machine_relay_hide_rend_circuits`): one DROP towards the
/// client within 1 ms of the PADDING_NEGOTIATED, so a rendezvous circuit's setup looks like
/// a general circuit's; then END, silently (the client's own machine ends on that DROP).
pub static RELAY_RP_CIRC: MachineSpec = MachineSpec {
    name: "relay_rp_circ",
    machine_num: 1,
    machine_index: 0,
    should_negotiate_end: false,
    allowed_padding_count: 1,
    max_padding_percent: 1,
    states: &[
        START,
        StateSpec {
            histogram: Some(Histogram {
                edges_usec: &[0, 1000],
                tokens: &[1, 0],
                total_tokens: 1,
            }),
            // Uniform on [1, 2] truncated: 1 (2 only if the draw lands exactly on 2).
            length_dist: LengthDist::Uniform {
                low: 1.0,
                high: 2.0,
            },
            start_length: 0,
            max_length: 0,
            length_includes_nonpadding: false,
            token_removal: TokenRemoval::None,
            next: next(&[(PADDING_SENT, Next::End), (LENGTH_COUNT, Next::End)]),
        },
    ],
};

/// The relay machine list, indexed by machine number (C `relay_padding_machines`).
pub static RELAY_MACHINES: [&MachineSpec; 2] = [&RELAY_IP_CIRC, &RELAY_RP_CIRC];

/// The machine a client names, if this relay has it.
pub fn by_number(n: u8) -> Option<(u8, &'static MachineSpec)> {
    RELAY_MACHINES
        .iter()
        .position(|m| m.machine_num == n)
        .map(|i| (i as u8, RELAY_MACHINES[i]))
}

// The first state of every machine is START.
const _: () = assert!(STATE_START == 0);

#[cfg(test)]
mod tests {
    use super::super::spec::{Event, StateNum};
    use super::*;

    #[test]
    fn machines_are_valid_and_numbered_as_c_registers_them() {
        for (i, m) in RELAY_MACHINES.iter().enumerate() {
            m.validate().unwrap();
            assert_eq!(usize::from(m.machine_num), i, "{}", m.name);
            // Every relay machine C defines sits in slot 0.
            assert_eq!(m.machine_index, 0);
            assert_eq!(m.states.len(), 2);
        }
        assert_eq!(by_number(0).unwrap().1.name, "relay_ip_circ");
        assert_eq!(by_number(1).unwrap().1.name, "relay_rp_circ");
        assert!(by_number(2).is_none());
    }

    #[test]
    fn definitions_match_c_tor() {
        let ip = &RELAY_IP_CIRC;
        assert!(ip.should_negotiate_end);
        assert_eq!((ip.allowed_padding_count, ip.max_padding_percent), (10, 1));
        let s0 = ip.state(StateNum::State(0)).unwrap();
        assert_eq!(s0.next[Event::NonPaddingSent as usize], OBF);
        assert_eq!(
            s0.next.iter().filter(|n| **n != Next::Ignore).count(),
            1,
            "START reacts to one event"
        );
        let s1 = ip.state(StateNum::State(1)).unwrap();
        let h = s1.histogram.unwrap();
        assert_eq!(
            (h.edges_usec, h.tokens, h.total_tokens),
            (&[1000, 10_000][..], &[1000, 0][..], 1000)
        );
        assert_eq!(
            s1.length_dist,
            LengthDist::Uniform {
                low: 7.0,
                high: 10.0
            }
        );
        assert_eq!(s1.next[Event::PaddingSent as usize], OBF);
        assert_eq!(s1.next[Event::NonPaddingSent as usize], OBF);
        assert_eq!(s1.next[Event::LengthCount as usize], Next::End);
        assert_eq!(s1.next[Event::NonPaddingRecv as usize], Next::Ignore);

        let rp = &RELAY_RP_CIRC;
        assert!(!rp.should_negotiate_end);
        assert_eq!((rp.allowed_padding_count, rp.max_padding_percent), (1, 1));
        let s1 = rp.state(StateNum::State(1)).unwrap();
        let h = s1.histogram.unwrap();
        assert_eq!(
            (h.edges_usec, h.tokens, h.total_tokens),
            (&[0, 1000][..], &[1, 0][..], 1)
        );
        assert_eq!(
            s1.length_dist,
            LengthDist::Uniform {
                low: 1.0,
                high: 2.0
            }
        );
        assert_eq!(s1.next[Event::PaddingSent as usize], Next::End);
        assert_eq!(s1.next[Event::LengthCount as usize], Next::End);
        assert_eq!(s1.next[Event::NonPaddingSent as usize], Next::Ignore);
    }
}
