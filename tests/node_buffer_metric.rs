//! `fors_relay_channel_buffer_bytes_released_total` (issue #15): the buffer room a channel
//! grew for a burst is given back by the node's once-a-second housekeeping once the burst
//! has passed (`Channel::trim_buffers`), and the bytes given back reach the shard's published
//! counters, which the MetricsPort renders. Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use node_harness::*;

const BURST: u32 = 200;

#[test]
fn a_burst_s_buffer_room_is_given_back_and_counted() {
    let seed = seed("a_burst_s_buffer_room_is_given_back_and_counted");
    let mut net = Net::with_config(
        seed,
        fors::proto::circuit::CircuitConfig {
            max_circuits: 2 * BURST as usize,
            ..circuit_config()
        },
    );
    let mut p = Peer::client(&mut net, 0, 40300);
    let released = |net: &Net| {
        net.stats[0]
            .handler
            .channel_buffer_bytes_released
            .load(Ordering::Relaxed)
    };
    // Steady state before the burst: a few ticks give nothing back worth counting later.
    for _ in 0..3 {
        net.tick(Duration::from_secs(1));
    }
    p.pump(&mut net);
    let before = released(&net);

    // A burst: BURST CREATE_FASTs arrive in one read, and their CREATED_FASTs are queued on
    // the channel (~100 KB of cells) before they go out.
    let mut body = [0u8; CELL_BODY_LEN];
    for i in 0..BURST {
        body[..4].copy_from_slice(&i.to_be_bytes());
        p.chan
            .send_cell(CircId(0x8000_2000 + i), ChanCmd::CREATE_FAST, &body)
            .unwrap();
    }
    p.push(&mut net);
    p.pump(&mut net);
    // The node answers a batch of handshakes per turn; the rest at the next ticks.
    let mut created = 0;
    for _ in 0..20 {
        created += p
            .cells()
            .iter()
            .filter(|(_, cmd, _)| *cmd == ChanCmd::CREATED_FAST)
            .count();
        if created == BURST as usize {
            break;
        }
        net.tick(Duration::from_millis(10));
        p.pump(&mut net);
    }
    assert_eq!(created, BURST as usize);
    assert_eq!(
        released(&net),
        before,
        "nothing is given back before a tick"
    );

    // Quiet seconds: the housekeeping sees the burst's room unused and gives it back.
    for _ in 0..3 {
        net.tick(Duration::from_secs(1));
    }
    let after = released(&net);
    let given_back = after - before;
    // The cell queue alone held BURST cells' worth of room (514 bytes each).
    assert!(
        given_back >= 64 * 1024,
        "{given_back} bytes given back after a burst of {BURST} cells"
    );
    // Busy or not, a channel at rest gives nothing more back: the counter stays.
    for _ in 0..3 {
        net.tick(Duration::from_secs(1));
    }
    assert_eq!(released(&net), after);
    println!("burst of {BURST} cells: {given_back} bytes of channel buffer room given back");
}
