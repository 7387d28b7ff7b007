//! `X-Your-Address-Is` over BEGIN_DIR (issue #10), through the real node and the real
//! directory server: a client channel from a given address builds a circuit on a node (fake
//! shard, real link and circuit crypto) whose BEGIN_DIR target is a running `DirServer`'s
//! internal listener; the bytes the node writes toward it (its preamble, then the stream's
//! request) go to that listener over loopback, and the answer goes back through the node to
//! the client. C tor reports the previous hop channel's address (`connection_exit_begin_conn`,
//! `write_http_response_header_impl`): a public one is told, a private one is not.

mod channel_support;
mod node_harness;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::dircache::{tunnel, DirStore, SharedStore};
use fors::proto::circuit::CircuitConfig;
use fors::relay::dirserver::{DirServer, DirServerInputs};
use node_harness::*;

const REQUEST: &[u8] = b"GET /tor/robots.txt HTTP/1.0\r\n\r\n";
const ROBOTS: &str = "User-agent: *\r\nDisallow: /\r\n";

/// The answer a client on a channel from `from` gets to [`REQUEST`] over BEGIN_DIR.
fn begin_dir_from(from: SocketAddr, test: &str) -> String {
    let store: SharedStore = Arc::new(RwLock::new(DirStore::new()));
    let mut inputs = DirServerInputs::default();
    inputs.set_our_address("198.51.100.1".parse().unwrap());
    let server = DirServer::start(
        vec![],
        Some(TcpListener::bind("127.0.0.1:0").unwrap()),
        store,
        inputs,
    )
    .unwrap();
    let cfg = CircuitConfig {
        dir_server: server.internal_addr(),
        dir_server_anonymous: server.internal_anonymous_addr(),
        ..circuit_config()
    };
    let mut net = Net::with_config(seed(test), cfg);
    let mut p = Peer::client_from(&mut net, 0, from);
    let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0001);
    net.shards[0].ops.clear();
    let begin = c.cell(0, RelayCmd::BEGIN_DIR, 3, &[]);
    p.send(&mut net, c.circ_id, ChanCmd::RELAY, &begin);
    let cs = connects(&net.shards[0]);
    assert_eq!(cs.len(), 1, "{:?}", net.shards[0].ops);
    let (dconn, listener) = cs[0];
    assert!(
        [server.internal_addr(), server.internal_anonymous_addr()].contains(&Some(listener)),
        "BEGIN_DIR goes to an internal listener: {listener}"
    );
    // The preamble is queued with the connect, before anything of the stream.
    let preamble = net.shards[0].take_output(dconn);
    assert_eq!(
        tunnel::decode(&preamble),
        Ok(Some(from.ip())),
        "{preamble:?}"
    );
    net.nodes[0].on_connected(dconn, listener, &mut net.shards[0]);
    net.settle();
    p.pump(&mut net);
    let got = c.open_all(&p.cells());
    assert_eq!(got, vec![(0, RelayCmd::CONNECTED, 3, vec![])]);
    let data = c.cell(0, RelayCmd::DATA, 3, REQUEST);
    p.send(&mut net, c.circ_id, ChanCmd::RELAY, &data);
    assert_eq!(net.shards[0].take_output(dconn), REQUEST);

    // Play the kernel: those bytes to the directory server, its answer back to the node.
    let mut s = TcpStream::connect(listener).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&preamble).unwrap();
    s.write_all(REQUEST).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    server.stop();
    net.data(0, dconn, &answer);
    p.pump(&mut net);
    let got = c.open_all(&p.cells());
    assert_eq!(data_of(&got, 0, 3), answer, "the client gets the answer");
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(&format!("\r\n\r\n{ROBOTS}")), "{answer}");
    answer
}

fn header(answer: &str) -> Option<&str> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("X-Your-Address-Is: "))
}

#[test]
fn begin_dir_answer_tells_a_public_previous_hop_its_address() {
    for ip in ["203.0.113.7", "2001:db8:7::1"] {
        let from = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 40100);
        let answer = begin_dir_from(from, "begin_dir_public_previous_hop");
        assert_eq!(header(&answer), Some(ip), "{answer}");
    }
}

#[test]
fn begin_dir_answer_has_no_address_for_a_private_or_nearby_previous_hop() {
    // Internal addresses, and one in our own /24 (C tor `is_local_to_resolve_addr`).
    for ip in ["10.9.8.7", "192.168.1.5", "127.0.0.1", "198.51.100.20"] {
        let from = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 40200);
        let answer = begin_dir_from(from, "begin_dir_private_previous_hop");
        assert_eq!(header(&answer), None, "{ip}: {answer}");
    }
}
