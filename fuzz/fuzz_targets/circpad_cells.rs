//! Circuit padding: both message parsers on any body (re-encoding what parses), and one
//! circuit's padding machine driven by a sequence of negotiations, cell events and timer
//! ticks, checking that it never panics, never has a deadline in the past when asked, and
//! keeps its counters consistent.
#![no_main]
use std::time::{Duration, Instant};

use fors::proto::circpad::{
    CellKind, CircPadding, CircpadParams, Negotiate, Negotiated, ShardPadding,
};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn parsers(body: &[u8]) {
    if let Ok(n) = Negotiate::parse(body) {
        assert_eq!(&n.encode()[..], &body[..8]);
    }
    if let Ok(n) = Negotiated::parse(body) {
        assert_eq!(&n.encode()[..], &body[..8]);
    }
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    if data.len() < 2 {
        return;
    }
    // The first bytes choose the parameters and the RNG seed.
    let params = CircpadParams::from_consensus(|name| match name {
        "circpad_padding_disabled" => Some(i32::from(data[0] & 1)),
        "circpad_global_allowed_cells" => Some(i32::from(data[0] >> 4)),
        "circpad_global_max_padding_pct" => Some(i32::from(data[1] % 101)),
        "circpad_max_circ_queued_cells" => Some(i32::from(data[1])),
        _ => None,
    });
    let mut g = ShardPadding::new(params, true);
    let mut rng = StdRng::seed_from_u64(u64::from(data[0]) << 8 | u64::from(data[1]));
    let mut c = CircPadding::new();
    let mut now = Instant::now();
    let mut rest = &data[2..];
    // Bounded by the input length: each step eats at least one byte.
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0 | 1 => {
                // A PADDING_NEGOTIATE from the next 8 bytes (or fewer).
                let n = rest.len().min(8);
                let (body, tail) = rest.split_at(n);
                rest = tail;
                let out = c.on_negotiate(&mut g, body, now, &mut rng);
                if let Some(r) = out.reply {
                    c.on_cell_sent(&mut g, CellKind::NonPadding, now, &mut rng);
                    let _ = r.encode();
                }
            }
            2 => {
                c.on_cell_sent(&mut g, CellKind::NonPadding, now, &mut rng);
            }
            3 => {
                c.on_cell_received(&mut g, CellKind::NonPadding, now, &mut rng);
            }
            4 => {
                c.on_cell_received(&mut g, CellKind::Padding, now, &mut rng);
            }
            5 | 6 => {
                // Time passes (op's high bits, in 0.5 ms steps), then the timer if due.
                now += Duration::from_micros(u64::from(op >> 3) * 500);
                if let Some(at) = c.next_wakeup() {
                    if at <= now {
                        let w = c.on_wakeup(&mut g, now, u32::from(op), &mut rng);
                        if let Some(n) = w.negotiated {
                            c.on_cell_sent(&mut g, CellKind::NonPadding, now, &mut rng);
                            let _ = n.encode();
                        }
                    }
                }
            }
            _ => c.on_close(&mut g),
        }
        let s = g.stats();
        assert!(s.machines_running <= 1);
        assert_eq!(s.machines_running, u64::from(c.machine().is_some()));
        assert!(s.machines_started >= s.machines_running);
    }
});
