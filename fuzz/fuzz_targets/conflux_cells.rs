#![no_main]
//! Conflux: the four message parsers (what parses re-encodes to the same bytes), then the
//! exit's set table driven by the same bytes as a sequence of hostile operations on three
//! circuits, checking its bounds hold.
use fors::cell::relay::RelayCmd;
use fors::proto::conflux::{ConfluxSets, Inbound, LegFacts, Limits, Link, Switch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 64];
    if let Ok(l) = Link::parse(data) {
        let n = l.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &data[..n]);
        assert_eq!(Link::parse(&out[..n]).unwrap(), l);
    }
    if let Ok(s) = Switch::parse(data) {
        let n = s.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &data[..n]);
    }

    let limits = Limits {
        max_sets: 2,
        max_legs: 8,
        // Past two OOO pages (64 numbers each), so held cells cross pages and the
        // directory wraps.
        ooo_window: 130,
        ooo_pool_cells: 12,
    };
    let mut sets: ConfluxSets<u8, u8> = ConfluxSets::new(limits);
    let mut it = data.iter().copied();
    let mut now = 1u64;
    while let (Some(op), Some(arg)) = (it.next(), it.next()) {
        let circ = arg % 3;
        let facts = LegFacts {
            enabled: op & 0x80 == 0 || arg & 0x80 == 0,
            has_next_hop: op & 0x40 != 0 && arg & 0x40 != 0,
            has_streams: arg & 0x20 != 0 && op & 0x20 != 0,
            data_in_flight: arg & 0x10 != 0,
        };
        now += u64::from(arg & 7);
        match op % 8 {
            0 => {
                let mut body = [0u8; 50];
                Link {
                    nonce: [arg & 1; 32],
                    last_seqno_sent: u64::from(arg >> 5),
                    last_seqno_recv: u64::from(arg >> 4),
                    desired_ux: fors::proto::conflux::DesiredUx::from_u8(arg % 5).unwrap(),
                }
                .encode(&mut body)
                .unwrap();
                let _ = sets.on_link(circ, facts, &body, now);
            }
            1 => {
                let _ = sets.on_linked_ack(circ, facts, now);
            }
            2 => {
                let _ = sets.on_switch(circ, facts, &[0, 0, 0, arg >> 3]);
            }
            3 | 4 => {
                if let Inbound::Deliver(_) = sets.on_cell(circ, RelayCmd(arg >> 3), facts, arg) {
                    let mut n = 0;
                    while sets.pop_ready(circ).is_some() {
                        n += 1;
                        assert!(n <= limits.ooo_pool_cells);
                    }
                }
            }
            5 => {
                let t = sets.leg_closed(circ, facts.data_in_flight);
                for c in t.circs() {
                    sets.leg_closed(c, false);
                }
            }
            6 => {
                let c = sets.choose_send(circ, RelayCmd(arg >> 4), |c| {
                    fors::proto::conflux::LegSendState {
                        cwnd: 10,
                        inflight: u64::from((c ^ arg) & 15),
                        blocked_on_chan: false,
                    }
                });
                if let fors::proto::conflux::SendChoice::Send { circ, .. } = c {
                    sets.note_sent(circ, RelayCmd(arg >> 4));
                }
            }
            _ => {
                let _ = sets.switch_send_failed(circ);
            }
        }
        let st = sets.stats();
        assert!(st.sets <= limits.max_sets);
        assert!(st.legs <= 3);
        assert!(st.held_cells <= limits.ooo_pool_cells);
    }
});
