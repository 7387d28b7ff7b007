//! The cell queueing delay histogram (`fors_relay_cell_queue_delay_seconds`) on the relay
//! node, with fake shards and a fake clock: cells that pass through in the read that brought
//! them land in the smallest bucket (the fake clock stands still during a call), cells the
//! core held for a blocked client channel land in the bucket of the time they were held (by
//! their pool stamps), and every relay cell sent is counted once — across shards too.
//! Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use std::sync::Arc;
use std::time::Duration;

use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::metrics::histogram::{ShardLatency, Snapshot, QUEUE_DELAY_BOUNDS_US};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Gives node `shard` of `net` the histograms `latency`.
fn with_latency(net: &mut Net, shard: usize, latency: &Arc<ShardLatency>) {
    let node = net.nodes.remove(shard);
    net.nodes.insert(shard, node.with_latency(latency.clone()));
}

/// Observations per bucket added since `before`.
fn added(now: &Snapshot, before: &Snapshot) -> Vec<u64> {
    now.buckets
        .iter()
        .zip(before.buckets)
        .map(|(a, b)| a - b)
        .take(QUEUE_DELAY_BOUNDS_US.len() + 1)
        .collect()
}

fn bucket(le_us: u64) -> usize {
    QUEUE_DELAY_BOUNDS_US.partition_point(|&b| b < le_us)
}

/// Exit data toward the client, unblocked and then blocked: unblocked, every cell is counted
/// once, in the smallest bucket; blocked, what the exit read goes to the channel's overflow
/// (counted at its read) or, past what the core took, waits in the node's `unread` until
/// the stream resumes — not timed (docs/architecture.md says so): at most one read's worth.
#[test]
fn exit_cells_are_timed_by_their_read_or_their_hold() {
    let mut net = Net::new(seed("qdelay_exit"));
    let latency = Arc::new(ShardLatency::default());
    with_latency(&mut net, 0, &latency);
    let mut p = Peer::client(&mut net, 0, 40060);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0006);
    let stream = open_stream(&mut net, &mut p, &mut c, 3);
    let h = || latency.cell_queue_delay.snapshot();

    // Unblocked: exit data goes out in the batch of the read that brought it.
    let s0 = h();
    net.data(0, stream, &[7u8; 20_000]);
    p.pump(&mut net);
    let sent = c.open_all(&p.cells()).len() as u64;
    assert_eq!(sent, 20_000u64.div_ceil(v0::MAX_DATA_LEN as u64));
    let s1 = h();
    let d = added(&s1, &s0);
    assert_eq!(d[0], sent, "every cell in the smallest bucket: {d:?}");
    assert_eq!(s1.count() - s0.count(), sent, "{d:?}");

    // Blocked: the client's connection takes 4 KB; the rest of what the exit reads waits
    // in the channel's overflow or the core's pool (the node pauses the exit socket once
    // the channel is blocked).
    let bound = 4096;
    net.shards[0].conns.get_mut(&p.conn).unwrap().bound = bound;
    let total: Vec<u8> = {
        let mut r = StdRng::seed_from_u64(net.rng.next_u64());
        (0..150_000).map(|_| r.next_u32() as u8).collect()
    };
    let mut fed = 0;
    while fed < total.len() && !net.shards[0].conns[&stream].read_paused {
        let n = (total.len() - fed).min(16 * 1024);
        net.data(0, stream, &total[fed..fed + n]);
        fed += n;
    }
    assert!(fed < total.len(), "the exit socket was never paused");
    let held = net.nodes[0].census().queued_cells;

    // 30 ms later the client reads again: held cells go out, stamped 30 ms old.
    net.shards[0].advance(Duration::from_millis(30));
    let mut got = Vec::new();
    for _ in 0..10_000 {
        p.pump(&mut net);
        got.extend(c.open_all(&p.cells()));
        if fed < total.len() && !net.shards[0].conns[&stream].read_paused {
            let n = (total.len() - fed).min(16 * 1024);
            net.data(0, stream, &total[fed..fed + n]);
            fed += n;
        } else if fed == total.len() && net.shards[0].conns[&p.conn].pending.is_empty() {
            p.pump(&mut net);
            got.extend(c.open_all(&p.cells()));
            break;
        }
    }
    assert_eq!(
        data_of(&got, 0, 3),
        total,
        "the client got every byte, in order"
    );
    // The pool's counts reach the histogram at the tick.
    net.tick(Duration::from_millis(100));
    let s2 = h();
    let d = added(&s2, &s1);
    eprintln!(
        "{held} cells held; {} cells in all; added per bucket {d:?}",
        got.len()
    );
    // Held 30 ms by the stamps (under 31 ms): the 25–50 ms bucket, all of them.
    assert_eq!(d[bucket(50_000)], held, "{d:?}");
    // Every other cell passed in its read's batch (smallest bucket) or was held and
    // released within the same millisecond (a later block, while the clock stood still:
    // under 1 ms); none twice, nothing elsewhere.
    let counted = d[bucket(10)] + d[bucket(1_000)] + d[bucket(50_000)];
    assert_eq!(counted, s2.count() - s1.count(), "{d:?}");
    let one_read = (16 * 1024u64).div_ceil(v0::MAX_DATA_LEN as u64);
    assert!(
        counted <= got.len() as u64 && got.len() as u64 - counted <= one_read,
        "{counted} of {} cells counted: {d:?}",
        got.len()
    );
    assert!(d[bucket(10)] > 0, "{d:?}");
    // The sum: 30 ms for each cell held that long, nothing for the others.
    assert_eq!(s2.sum_us - s1.sum_us, held * 30_000);
}

/// A middle whose client channel is blocked while the next hop keeps sending: the cells
/// the core holds in its pool for 30 ms (fake clock) land in the 25–50 ms bucket, those
/// that went straight to the channel in the smallest; each counted once, on the shard that
/// writes them to the client.
#[test]
fn cells_held_for_a_blocked_channel_are_timed_by_their_stamps() {
    let mut net = Net::new(seed("qdelay_held_middle"));
    let lat: Vec<Arc<ShardLatency>> = (0..2).map(|_| Arc::new(ShardLatency::default())).collect();
    for (s, l) in lat.iter().enumerate() {
        with_latency(&mut net, s, l);
    }
    let mut x = cross_circuit(&mut net, 40062);
    let (origin, owner) = (x.origin, x.owner);
    let h = |s: usize| lat[s].cell_queue_delay.snapshot();
    let (s1, o1) = (h(origin), h(owner));
    // The client stops reading: its connection takes 4 KB.
    net.shards[origin].conns.get_mut(&x.p.conn).unwrap().bound = 4096;
    // The next hop sends 600 backward cells (in pushes of 50, without reading).
    const N: usize = 600;
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    let mut backward = |x: &mut CrossCircuit, i: usize| {
        let mut b = [0u8; CELL_BODY_LEN];
        v0::encode_with(&mut b, RelayCmd::DATA, 9, &mut rng, |o| {
            o[..2].copy_from_slice(&(i as u16).to_be_bytes());
            Ok(2)
        })
        .unwrap();
        x.hop.originate(&mut b);
        x.t.chan.send_cell(x.tcid, ChanCmd::RELAY, &b).unwrap();
    };
    for i in 0..N - 1 {
        backward(&mut x, i);
        if i % 50 == 49 {
            x.t.push(&mut net);
        }
    }
    x.t.push(&mut net);
    let held = net.nodes[origin].census().queued_cells;
    assert!(held > 0, "nothing held for the blocked client channel");

    // 30 ms later the client's socket drains (its bytes taken here, read below) and the
    // client sends a PADDING cell: the node's flush at the end of that read unblocks the
    // channel, so the held cells go out inside the read's window — they must be counted
    // by their stamps only, not by the window too. Then the last cell from the next hop.
    net.shards[origin].advance(Duration::from_millis(30));
    let early = net.shards[origin].take_output(x.p.conn);
    net.shards[origin].conns.get_mut(&x.p.conn).unwrap().bound = 1 << 20;
    assert!(!net.shards[origin].conns[&x.p.conn].read_paused);
    x.p.chan
        .send_cell(CircId(0), ChanCmd::PADDING, &[0; CELL_BODY_LEN])
        .unwrap();
    x.p.push(&mut net);
    backward(&mut x, N - 1);
    x.t.push(&mut net);
    let wall = net.shards[origin].wall;
    let mut client_rng = StdRng::seed_from_u64(net.rng.next_u64());
    let _ =
        x.p.chan
            .handle_input(&early, wall, &mut client_rng, &mut x.p.sink);
    x.p.pump(&mut net);
    let got = x.c.open_all(&x.p.cells());
    assert_eq!(got.len(), N, "every cell reached the client");
    for (i, (hop, cmd, _, data)) in got.iter().enumerate() {
        assert_eq!((*hop, *cmd), (1, RelayCmd::DATA));
        assert_eq!(data[..], (i as u16).to_be_bytes(), "in order");
    }
    net.tick(Duration::from_millis(100));
    let d = added(&h(origin), &s1);
    eprintln!("{held} of {N} cells held; added per bucket {d:?}");
    assert_eq!(
        d[bucket(50_000)],
        held,
        "held 30 ms: the 25–50 ms bucket; {d:?}"
    );
    assert_eq!(
        d[bucket(10)] + d[bucket(50_000)],
        N as u64,
        "the rest in the smallest bucket, nothing elsewhere: {d:?}"
    );
    assert_eq!(h(origin).sum_us - s1.sum_us, held * 30_000);
    // The owner shard only passed them on.
    assert_eq!(h(owner).count(), o1.count());
}

#[test]
fn cross_shard_cells_are_counted_once_on_the_shard_that_sends_them() {
    let mut net = Net::new(seed("qdelay_cross_shard"));
    let lat: Vec<Arc<ShardLatency>> = (0..2).map(|_| Arc::new(ShardLatency::default())).collect();
    for (s, l) in lat.iter().enumerate() {
        with_latency(&mut net, s, l);
    }
    let mut x = cross_circuit(&mut net, 40061);
    let count = |s: usize| lat[s].cell_queue_delay.snapshot().count();
    let (origin0, owner0) = (count(x.origin), count(x.owner));

    // Forward: read on the origin shard, written by the owner shard (timed from the
    // cross-shard batch's arrival there).
    const N: u64 = 7;
    for i in 0..N as u8 {
        let body = x.c.cell(1, RelayCmd::DATA, 9, &[b'f', i]);
        x.p.send(&mut net, x.c.circ_id, ChanCmd::RELAY, &body);
    }
    x.t.pump(&mut net);
    assert_eq!(x.t.cells().len() as u64, N);
    assert_eq!(count(x.owner) - owner0, N, "the owner sent them");
    assert_eq!(
        count(x.origin) - origin0,
        0,
        "the origin only passed them on"
    );

    // Backward: read on the owner shard, written by the origin shard.
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    for i in 0..N as u8 {
        let mut b = [0u8; CELL_BODY_LEN];
        v0::encode_with(&mut b, RelayCmd::DATA, 9, &mut rng, |o| {
            o[0] = i;
            Ok(1)
        })
        .unwrap();
        x.hop.originate(&mut b);
        x.t.send(&mut net, x.tcid, ChanCmd::RELAY, &b);
    }
    x.p.pump(&mut net);
    assert_eq!(x.c.open_all(&x.p.cells()).len() as u64, N);
    assert_eq!(count(x.origin) - origin0, N, "the origin sent them");
    assert_eq!(count(x.owner) - owner0, N, "the owner's count did not move");
    // Nothing was held: all in the smallest bucket on both shards.
    for l in &lat {
        let s = l.cell_queue_delay.snapshot();
        assert_eq!(s.buckets[0], s.count(), "{s:?}");
    }
}

#[test]
fn cells_held_for_another_shards_channel_are_counted_once() {
    let mut net = Net::new(seed("qdelay_held_cross"));
    let lat: Vec<Arc<ShardLatency>> = (0..2).map(|_| Arc::new(ShardLatency::default())).collect();
    for (s, l) in lat.iter().enumerate() {
        with_latency(&mut net, s, l);
    }
    let mut x = cross_circuit(&mut net, 40063);
    let (origin, owner) = (x.origin, x.owner);
    let count = |s: usize| lat[s].cell_queue_delay.snapshot().count();
    let before = count(origin) + count(owner);
    // The next hop (on the other shard) stops reading: its connection takes 4 KB, so its
    // channel blocks and the circuit's shard holds the client's cells for it.
    net.shards[owner].conns.get_mut(&x.t.conn).unwrap().bound = 4096;
    const N: usize = 600;
    for i in 0..N {
        let body = x.c.cell(1, RelayCmd::DATA, 9, &(i as u16).to_be_bytes());
        x.p.chan
            .send_cell(x.c.circ_id, ChanCmd::RELAY, &body)
            .unwrap();
        if i % 50 == 49 {
            x.p.push(&mut net);
        }
    }
    x.p.push(&mut net);
    let held = net.nodes[origin].census().queued_cells;
    assert!(held > 0, "nothing held for the blocked next hop");

    // 30 ms later the next hop drains and reads again: the held cells cross to its shard.
    net.shards[owner].advance(Duration::from_millis(30));
    let early = net.shards[owner].take_output(x.t.conn);
    net.shards[owner].conns.get_mut(&x.t.conn).unwrap().bound = 1 << 20;
    x.t.chan
        .send_cell(CircId(0), ChanCmd::PADDING, &[0; CELL_BODY_LEN])
        .unwrap();
    x.t.push(&mut net);
    let wall = net.shards[owner].wall;
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    let _ = x.t.chan.handle_input(&early, wall, &mut rng, &mut x.t.sink);
    x.t.pump(&mut net);
    let relayed =
        x.t.cells()
            .iter()
            .filter(|(_, cmd, _)| *cmd == ChanCmd::RELAY)
            .count();
    assert_eq!(relayed, N, "every cell reached the next hop");
    net.tick(Duration::from_millis(100));
    eprintln!("{held} of {N} held for the other shard's channel");
    assert_eq!(
        count(origin) + count(owner) - before,
        N as u64,
        "each cell counted once over both shards"
    );
}
