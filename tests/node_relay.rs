//! The relay node without sockets: two shards of one relay on fake shards, a fake clock, and
//! peers played with the crate's own channel code. Each test drives the real link
//! handshake, circuit handshakes and relay crypto, and checks what reaches the other side.

mod channel_support;
mod node_harness;

use std::time::Duration;

use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::CellBody;
use fors::relay::node::fake::Op;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use fors::accounting::Hibernation;
use fors::relay::snapshot::NetworkSnapshot;
use node_harness::*;

#[test]
fn begin_connect_and_data_both_ways() {
    let mut net = Net::new(seed("begin_connect_and_data_both_ways"));
    let mut p = Peer::client(&mut net, 0, 40000);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0001);
    let stream = open_stream(&mut net, &mut p, &mut c, 7);

    // Client → exit socket.
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let data = c.cell(0, RelayCmd::DATA, 7, req);
    p.send(&mut net, c.circ_id, ChanCmd::RELAY, &data);
    assert_eq!(net.shards[0].take_output(stream), req);

    // Exit socket → client: several cells' worth, in order.
    let reply: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    net.data(0, stream, &reply);
    p.pump(&mut net);
    let got = c.open_all(&p.cells());
    assert!(
        got.len() >= 7,
        "3000 bytes need 7 DATA cells: {}",
        got.len()
    );
    assert_eq!(data_of(&got, 0, 7), reply);

    // The exit socket closes: END reaches the client.
    net.peer_closed(0, stream);
    p.pump(&mut net);
    let got = c.open_all(&p.cells());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1, got[0].2), (RelayCmd::END, 7));
}

#[test]
fn extend_to_a_relay_of_the_other_shard_carries_cells_both_ways() {
    let mut net = Net::new(seed("extend_to_a_relay_of_the_other_shard"));
    let mut x = cross_circuit(&mut net, 40010);

    // Forward: crypted by the origin, written as is by the owner.
    for i in 0..5u8 {
        let msg = [b'f', i, 0xaa, 0x55];
        let body = x.c.cell(1, RelayCmd::DATA, 9, &msg);
        net.cross_log.clear();
        x.p.send(&mut net, x.c.circ_id, ChanCmd::RELAY, &body);
        assert_eq!(net.cross_log, vec![(x.origin, x.owner, "Forward")]);
        x.t.pump(&mut net);
        let cells = x.t.cells();
        assert_eq!(cells.len(), 1, "{cells:?}");
        assert_eq!((cells[0].0, cells[0].1), (x.tcid, ChanCmd::RELAY));
        let mut b: CellBody = cells[0].2.as_slice().try_into().unwrap();
        assert!(x.hop.recognize(&mut b), "the target's layer opens cell {i}");
        let m = v0::parse(&b).unwrap();
        assert_eq!((m.cmd, m.stream_id, m.data), (RelayCmd::DATA, 9, &msg[..]));
    }

    // Backward: raw from the owner, crypted by the origin.
    let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
    for i in 0..5u8 {
        let msg = [b'b', i];
        let mut b = [0u8; CELL_BODY_LEN];
        v0::encode_with(&mut b, RelayCmd::DATA, 9, &mut rng, |o| {
            o[..2].copy_from_slice(&msg);
            Ok(2)
        })
        .unwrap();
        x.hop.originate(&mut b);
        net.cross_log.clear();
        x.t.send(&mut net, x.tcid, ChanCmd::RELAY, &b);
        assert_eq!(net.cross_log, vec![(x.owner, x.origin, "Backward")]);
        x.p.pump(&mut net);
        let got = x.c.open_all(&x.p.cells());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0], (1, RelayCmd::DATA, 9, msg.to_vec()));
    }
}

#[test]
fn closing_the_client_channel_sends_destroy_to_the_next_hop_across_shards() {
    let mut net = Net::new(seed("closing_the_client_channel"));
    let mut x = cross_circuit(&mut net, 40020);
    net.cross_log.clear();
    net.peer_closed(x.origin, x.p.conn);
    assert!(net.cross_log.contains(&(x.origin, x.owner, "Forward")));
    x.t.pump(&mut net);
    let cells = x.t.cells();
    assert!(
        cells
            .iter()
            .any(|(id, cmd, _)| *id == x.tcid && *cmd == ChanCmd::DESTROY),
        "the target hears DESTROY for its circuit: {cells:?}"
    );
}

#[test]
fn closing_the_next_hop_channel_sends_destroy_to_the_client_across_shards() {
    let mut net = Net::new(seed("closing_the_next_hop_channel"));
    let mut x = cross_circuit(&mut net, 40030);
    net.cross_log.clear();
    net.peer_closed(x.owner, x.t.conn);
    assert!(net.cross_log.contains(&(x.owner, x.origin, "Backward")));
    x.p.pump(&mut net);
    let cells = x.p.cells();
    assert!(
        cells
            .iter()
            .any(|(id, cmd, _)| *id == x.c.circ_id && *cmd == ChanCmd::DESTROY),
        "the client hears DESTROY for its circuit: {cells:?}"
    );
    // The circuit is gone at the origin: a cell for it is not forwarded anywhere.
    let body = x.c.cell(1, RelayCmd::DATA, 9, b"late");
    net.cross_log.clear();
    x.p.chan
        .send_cell(x.c.circ_id, ChanCmd::RELAY, &body)
        .unwrap();
    x.p.pump(&mut net);
    assert!(!net.cross_log.contains(&(x.origin, x.owner, "Forward")));
}

#[test]
fn a_blocked_client_connection_pauses_the_exit_stream_and_loses_nothing() {
    let mut net = Net::new(seed("a_blocked_client_connection"));
    let mut p = Peer::client(&mut net, 0, 40040);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0002);
    let stream = open_stream(&mut net, &mut p, &mut c, 3);
    let bound = 4096;
    net.shards[0].conns.get_mut(&p.conn).unwrap().bound = bound;
    net.shards[0].ops.clear();

    // 150 KB from the exit socket (under the 500-cell stream window: no SENDME needed),
    // while the client's connection is not drained. The harness reads the socket only
    // while the node wants it read.
    let total: Vec<u8> = {
        let mut r = StdRng::seed_from_u64(net.rng.next_u64());
        (0..150_000).map(|_| r.next_u32() as u8).collect()
    };
    let mut fed = 0;
    while fed < total.len() && !net.shards[0].conns[&stream].read_paused {
        let n = (total.len() - fed).min(16 * 1024);
        net.data(0, stream, &total[fed..fed + n]);
        fed += n;
        assert!(net.shards[0].conns[&p.conn].pending.len() <= bound);
    }
    assert!(
        fed < total.len(),
        "the node kept reading the exit socket while the client was blocked"
    );
    assert!(net.shards[0].ops.contains(&Op::Refused { conn: p.conn }));

    // Drain the client; read the socket again whenever the node resumes it.
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
    assert!(net.shards[0].ops.contains(&Op::ResumeRead { conn: stream }));
    assert_eq!(fed, total.len());
    let data = data_of(&got, 0, 3);
    assert_eq!(data.len(), total.len());
    assert!(data == total, "the client got every byte, in order");
}

#[test]
fn idle_channels_close_on_the_fake_clock_busy_ones_stay() {
    let mut net = Net::new(seed("idle_channels_close"));
    let mut idle = Peer::client(&mut net, 0, 40050);
    let mut busy = Peer::client(&mut net, 0, 40051);
    let _c = ClientCirc::create(&mut net, &mut busy, 0x8000_0003);

    // A relay peer's idle timeout is 45 to 75 minutes (C `channel_check_for_duplicates`
    // neighbourhood: nf_conntimeout_relays 3600 s, 3/4 of it plus up to a half).
    for _ in 0..44 {
        net.tick(Duration::from_secs(60));
    }
    assert!(net.is_open(0, idle.conn), "closed before 44 min");
    // The peer reads what comes (the KeepalivePeriod PADDING cells every 5 minutes): the
    // fake socket forgets a closed connection only once its output was taken.
    for _ in 0..32 {
        net.tick(Duration::from_secs(60));
        idle.pump(&mut net);
    }
    assert!(
        !net.shards[0].conns.contains_key(&idle.conn),
        "idle for 76 min and still open"
    );
    assert!(net.is_open(0, busy.conn), "a channel with a circuit closed");
}

#[test]
fn a_link_handshake_that_never_finishes_times_out() {
    let mut net = Net::new(seed("a_link_handshake_that_never_finishes"));
    let conn = net.accept(1, "127.0.0.1:40060".parse().unwrap());
    // C: 60 s for an OR handshake.
    for _ in 0..58 {
        net.tick(Duration::from_secs(1));
    }
    assert!(net.is_open(1, conn), "closed before its 60 s");
    for _ in 0..62 {
        net.tick(Duration::from_secs(1));
        // The kernel takes whatever the node wrote (a TLS alert at the end).
        net.shards[1].take_output(conn);
        net.settle();
    }
    assert!(
        !net.shards[1].conns.contains_key(&conn),
        "a silent connection is still open after 120 s"
    );
}

#[test]
fn a_stream_backlog_past_its_bound_ends_the_stream_with_resourcelimit() {
    let mut net = Net::new(seed("a_stream_backlog_past_its_bound"));
    let mut p = Peer::client(&mut net, 0, 40070);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0004);
    let stream = open_stream(&mut net, &mut p, &mut c, 5);
    // The client stops reading: its connection blocks, the node pauses the exit socket.
    net.shards[0].conns.get_mut(&p.conn).unwrap().bound = 4096;
    let chunk = vec![0x42u8; 64 * 1024];
    let mut fed = 0;
    while !net.shards[0].conns[&stream].read_paused {
        net.data(0, stream, &chunk);
        fed += chunk.len();
        assert!(fed < 4 << 20, "the socket was never paused");
    }
    // Reads already in flight keep arriving: the backlog takes them up to its bound (16 MiB
    // here: more than the fake's 4 MiB receive ring and 1 MiB), no more.
    assert_eq!(net.nodes[0].bound_counters().stream_backlog_closes, 0);
    for _ in 0..300 {
        if !net.is_open(0, stream) {
            break;
        }
        net.data(0, stream, &chunk);
    }
    let b = net.nodes[0].bound_counters();
    assert_eq!(b.stream_backlog_closes, 1, "{b:?}");
    assert!(b.stream_backlog_peak <= 16 << 20, "{b:?}");
    assert!(b.stream_backlog_peak > 15 << 20, "{b:?}");
    assert!(!net.is_open(0, stream), "the exit socket is closed");

    // The client drains: DATA, then END RESOURCELIMIT (tor-spec reason 11).
    net.shards[0].conns.get_mut(&p.conn).unwrap().bound = 1 << 24;
    let mut got = Vec::new();
    for _ in 0..100 {
        p.pump(&mut net);
        got.extend(c.open_all(&p.cells()));
        if got.last().is_some_and(|g| g.1 == RelayCmd::END) {
            break;
        }
    }
    let last = got.last().expect("cells reached the client");
    assert_eq!(
        (last.1, last.2, last.3[0]),
        (RelayCmd::END, 5, 11),
        "{:?}",
        last
    );
    assert!(got[..got.len() - 1]
        .iter()
        .all(|g| g.1 == RelayCmd::DATA || g.1 == RelayCmd::SENDME));
}

#[test]
fn soft_hibernation_refuses_new_connections_and_circuits_hard_closes_channels() {
    let mut net = Net::new(seed("soft_hibernation"));
    let mut p = Peer::client(&mut net, 0, 40080);
    let _c = ClientCirc::create(&mut net, &mut p, 0x8000_0005);

    // The control plane publishes "soft"; shards pick it up at their next tick.
    net.network.publish(NetworkSnapshot {
        hibernation: Hibernation::Soft,
        ..snapshot()
    });
    net.tick(Duration::from_secs(1));
    let late = net.accept(0, "127.0.0.1:40081".parse().unwrap());
    assert!(!net.is_open(0, late), "a new connection while hibernating");
    // A CREATE2 on the open channel: DESTROY HIBERNATING (tor-spec DESTROY reason 4).
    let mut body = [0u8; CELL_BODY_LEN];
    body[0] = 0; // any CREATE2 body: refused before it is read
    p.send(&mut net, CircId(0x8000_0006), ChanCmd::CREATE2, &body);
    let cells = p.cells();
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(
        (cells[0].0, cells[0].1),
        (CircId(0x8000_0006), ChanCmd::DESTROY)
    );
    assert_eq!(cells[0].2[0], 4, "DESTROY reason HIBERNATING");
    assert!(
        net.is_open(0, p.conn),
        "soft keeps channels that carry circuits"
    );

    // Hard: every OR connection closes (C hibernate_go_dormant).
    net.network.publish(NetworkSnapshot {
        hibernation: Hibernation::Hard,
        ..snapshot()
    });
    net.tick(Duration::from_secs(1));
    net.tick(Duration::from_secs(1));
    net.shards[0].take_output(p.conn);
    net.settle();
    assert!(
        !net.is_open(0, p.conn),
        "hard hibernation left a channel open"
    );
}

#[test]
fn onion_skin_batches_and_exit_connects_are_timed_into_their_histograms() {
    use fors::metrics::histogram::ShardLatency;
    use std::sync::Arc;
    let mut net = Net::new(seed("latency_histograms"));
    let latency = Arc::new(ShardLatency::default());
    let node = net.nodes.remove(0);
    net.nodes.insert(0, node.with_latency(latency.clone()));
    let mut p = Peer::client(&mut net, 0, 40010);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0003);
    assert!(
        latency.onionskin_batch.snapshot().count() >= 1,
        "the CREATE2 batch was not timed"
    );

    // BEGIN, then the connect completes 30 ms later on the shard's clock.
    let begin = c.cell(0, RelayCmd::BEGIN, 9, &begin_data("127.0.0.1:8080"));
    p.send(&mut net, c.circ_id, ChanCmd::RELAY, &begin);
    let cs = connects(&net.shards[0]);
    assert_eq!(cs.len(), 1);
    assert_eq!(latency.exit_connect.snapshot().count(), 0);
    net.shards[0].advance(Duration::from_millis(30));
    net.nodes[0].on_connected(cs[0].0, cs[0].1, &mut net.shards[0]);
    let s = latency.exit_connect.snapshot();
    assert_eq!(s.count(), 1);
    assert_eq!(s.sum_us, 30_000, "{s:?}");

    // A connect that fails after 2 s is timed too.
    let begin = c.cell(0, RelayCmd::BEGIN, 10, &begin_data("127.0.0.1:8081"));
    net.shards[0].ops.clear();
    p.send(&mut net, c.circ_id, ChanCmd::RELAY, &begin);
    let cs = connects(&net.shards[0]);
    assert_eq!(cs.len(), 1);
    net.shards[0].advance(Duration::from_secs(2));
    net.peer_closed(0, cs[0].0);
    let s = latency.exit_connect.snapshot();
    assert_eq!(s.count(), 2);
    assert_eq!(s.sum_us, 2_030_000, "{s:?}");
}

/// Found by the soak: a peer whose circuits are created and destroyed between two idle checks
/// never had a circuit when the node looked, and its link was closed as idle. C tor stamps a
/// channel whenever a circuit is attached to it (`timestamp_last_had_circuits`).
#[test]
fn a_channel_whose_circuits_come_and_go_between_idle_checks_is_not_idle() {
    let mut net = Net::new(seed("churning_channel_not_idle"));
    let mut idle = Peer::client(&mut net, 0, 40060);
    let mut churn = Peer::client(&mut net, 0, 40061);
    for i in 0..80u32 {
        let c = ClientCirc::create(&mut net, &mut churn, 0x8000_1000 + i);
        let destroy = [0u8; CELL_BODY_LEN];
        churn.send(&mut net, c.circ_id, ChanCmd::DESTROY, &destroy);
        churn.pump(&mut net);
        net.tick(Duration::from_secs(60));
        // Reads its KeepalivePeriod PADDING cells, so its close can complete in the fake.
        idle.pump(&mut net);
    }
    assert!(
        !net.shards[0].conns.contains_key(&idle.conn),
        "the control: idle for 80 min and still open"
    );
    assert!(
        net.is_open(0, churn.conn),
        "a channel that built a circuit every minute was closed as idle"
    );
}
