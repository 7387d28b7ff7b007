//! Issue #15: a channel's buffers are sized by use. Nothing is reserved before the peer
//! sends a byte; a burst grows them up to the old fixed sizes (the cell bound refuses at
//! exactly the same count); `Channel::trim_buffers` gives a passed burst's room back; a
//! channel with steady traffic keeps its buffers (no reallocation).

mod channel_support;

use channel_support::*;
use fors::cell::{ChanCmd, CircId, CELL_LEN};
use fors::proto::channel::{Channel, ChannelConfig, ChannelError};

/// The old fixed sizes: 32 KiB receive buffer, the cell queue at its bound plus 8 KiB of
/// handshake slack, the TLS output buffer at the bound plus 4 KiB.
fn old_fixed_bytes(cfg: &ChannelConfig) -> usize {
    2 * (16 * 1024 + 7) + 2 * cfg.max_output_cells * CELL_LEN + 8 * 1024 + 4096
}

fn send_until_full(ch: &mut Channel, limit: usize) -> usize {
    let body = [9u8; 509];
    (0..limit)
        .take_while(|_| {
            ch.send_cell(CircId(0x8000_0001), ChanCmd::RELAY, &body)
                .is_ok()
        })
        .count()
}

#[test]
fn nothing_is_reserved_before_the_first_byte() {
    let resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    assert_eq!(resp.buffer_capacity(), 0);
    let (init, _, resp, _) = open_pair(relay_a(), relay_b());
    // After the handshake: a few KiB, not the bounds' ~560 KiB.
    for ch in [&init, &resp] {
        println!("after the handshake: {} bytes", ch.buffer_capacity());
        assert!(
            ch.buffer_capacity() <= 64 * 1024,
            "{}",
            ch.buffer_capacity()
        );
    }
}

#[test]
fn a_burst_grows_to_the_old_bound_refuses_at_it_and_gives_the_room_back() {
    let cfg = ChannelConfig::default();
    let (mut init, _, mut resp, mut sr) = open_pair(relay_a(), relay_b());
    assert_eq!(init.queue().free_cells(), cfg.max_output_cells);
    // The bound is in cells, as before: exactly max_output_cells are taken.
    assert_eq!(
        send_until_full(&mut init, 2 * cfg.max_output_cells),
        cfg.max_output_cells
    );
    let body = [0u8; 509];
    assert_eq!(
        init.send_cell(CircId(1), ChanCmd::RELAY, &body),
        Err(ChannelError::OutputFull)
    );
    // Sealed into TLS and not yet taken by the socket: still counted, still full.
    let wire = init.pending_output().to_vec();
    assert!(wire.len() >= cfg.max_output_cells * CELL_LEN);
    assert_eq!(init.queue().free_cells(), 0);
    assert!(!init.wants_read());
    let burst = init.buffer_capacity();
    println!(
        "at the bound: {burst} bytes (old fixed: {})",
        old_fixed_bytes(&cfg)
    );
    assert!(burst <= old_fixed_bytes(&cfg), "{burst}");
    init.consume_output(wire.len());
    assert_eq!(init.queue().free_cells(), cfg.max_output_cells);
    let mut rng = rand::thread_rng();
    resp.handle_input(&wire, now(), &mut rng, &mut sr).unwrap();
    assert_eq!(sr.cells.len(), cfg.max_output_cells);

    // The period that had the burst keeps its room; the next, idle, frees it all.
    assert_eq!(init.trim_buffers(), 0);
    assert_eq!(init.buffer_capacity(), burst);
    assert_eq!(init.trim_buffers(), burst);
    assert_eq!(init.buffer_capacity(), 0);
    resp.trim_buffers();
    resp.trim_buffers();
    assert_eq!(resp.buffer_capacity(), 0);

    // And it grows again, to the same bound.
    assert_eq!(
        send_until_full(&mut init, 2 * cfg.max_output_cells),
        cfg.max_output_cells
    );
    let mut sink = Collect::default();
    let mut wire = Vec::new();
    init.write_output(&mut wire);
    resp.handle_input(&wire, now(), &mut rng, &mut sink)
        .unwrap();
    assert_eq!(sink.cells.len(), cfg.max_output_cells);
}

#[test]
fn steady_traffic_keeps_its_buffers() {
    let (mut init, _, mut resp, mut sr) = open_pair(relay_a(), relay_b());
    let mut rng = rand::thread_rng();
    let mut wire = Vec::with_capacity(1 << 20);
    let mut period = |init: &mut Channel, resp: &mut Channel| {
        for _ in 0..10 {
            assert_eq!(send_until_full(init, 64), 64);
            wire.clear();
            init.write_output(&mut wire);
            resp.handle_input(&wire, now(), &mut rng, &mut sr).unwrap();
        }
        (init.trim_buffers(), resp.trim_buffers())
    };
    // The first period grows the buffers; the second frees what only the handshake used
    // (the initiator's receive buffer, the responder's output buffers).
    period(&mut init, &mut resp);
    let (a, b) = period(&mut init, &mut resp);
    println!("handshake leftovers given back: {a}, {b} bytes");
    let caps = (init.buffer_capacity(), resp.buffer_capacity());
    println!("steady: {caps:?} bytes");
    assert!(caps.0 > 0 && caps.1 > 0);
    for _ in 0..20 {
        assert_eq!(period(&mut init, &mut resp), (0, 0));
        assert_eq!((init.buffer_capacity(), resp.buffer_capacity()), caps);
    }
}

/// The receive buffer starts empty and grows to hold the largest variable cell (16 KiB of
/// body) during the handshake, then gives the room back.
#[test]
fn the_receive_buffer_grows_for_the_largest_variable_cell() {
    use fors::cell::link::encode_versions_cell;
    use fors::cell::{Framer, MAX_VAR_CELL_BODY_LEN};
    let mut resp = Channel::new_responder(relay_b().ctx.clone(), LOCAL, now()).unwrap();
    let mut sink = Collect::default();
    let mut raw = RawInitiator::new();
    let mut versions = vec![0u8; 9];
    let n = encode_versions_cell(&[4, 5], &mut versions).unwrap();
    versions.truncate(n);
    let body = vec![0x5au8; MAX_VAR_CELL_BODY_LEN];
    let mut vpadding = vec![0u8; 7 + body.len()];
    let n = Framer::negotiated(5)
        .unwrap()
        .encode_var(CircId(0), ChanCmd::VPADDING, &body, &mut vpadding)
        .unwrap();
    vpadding.truncate(n);
    raw.send(&versions);
    raw.send(&vpadding);
    raw.exchange(&mut resp, &mut sink);
    assert!(!resp.is_closed(), "{:?}", sink.events);
    let cap = resp.buffer_capacity();
    println!("after a {} byte VPADDING: {cap} bytes", vpadding.len());
    assert!(cap >= vpadding.len(), "{cap}");
    // The receive buffer's bound (32 KiB) plus the responder's handshake output.
    assert!(cap <= 2 * (MAX_VAR_CELL_BODY_LEN + 7) + 64 * 1024, "{cap}");
    resp.trim_buffers();
    resp.trim_buffers();
    assert_eq!(resp.buffer_capacity(), 0);
    assert!(!resp.is_closed());
}

/// A slow peer takes part of the TLS output at a time while the channel keeps its queue
/// full: the sent prefix is dropped before new records would not fit, so the buffer stays
/// within the old fixed size and stops reallocating once it reached its working size
/// (review finding L1, session 13: it grew past the cap one exact size per flush).
#[test]
fn a_slow_peer_does_not_grow_the_output_past_its_bound() {
    let cfg = ChannelConfig::default();
    let (mut init, _, _resp, _) = open_pair(relay_a(), relay_b());
    let mut caps = Vec::new();
    for round in 0..200 {
        send_until_full(&mut init, 2 * cfg.max_output_cells);
        let pending = init.pending_output().len();
        // The peer takes a third of what is pending, at most 64 KiB.
        init.consume_output((pending / 3).clamp(1, 64 * 1024));
        let cap = init.buffer_capacity();
        assert!(
            cap <= old_fixed_bytes(&cfg),
            "round {round}: {cap} bytes past the old fixed {}",
            old_fixed_bytes(&cfg)
        );
        if caps.last() != Some(&cap) {
            caps.push(cap);
        }
    }
    println!("capacity changes over 200 slow flushes: {caps:?}");
    assert!(caps.len() <= 16, "reallocated {} times", caps.len());
}
