//! The DoS defences (src/dos, after C tor 0.4.9's dos.c) on a live Fors, configured from the
//! torrc: `DoSConnectionEnabled 1`, `DoSConnectionMaxConcurrentCount 3`,
//! `DoSCircuitCreationEnabled 1`, `MinConnections 1`, `Rate 1`, `Burst 5`. The relay runs two
//! shards, so an address's connections land on both and only the shared table sees them all.
//!
//! Clients bind their sockets to other loopback addresses (127.0.0.2, .3, .4) so that each
//! test address has its own DoS state. What C tor does, and so what is expected:
//!
//! * Concurrent connections: C checks `concurrent_count > MaxConcurrentCount` *before* it
//!   counts the new connection (connection.c at accept, test_dos.c `test_dos_conn_creation`),
//!   so with 3 it serves 4 connections and closes the 5th at once (before TLS). A closed
//!   connection frees its place; other addresses are unaffected.
//! * Circuit creation: the bucket starts at Burst and loses one token per CREATE*; the cell
//!   that empties it (the Burst-th within one second) marks the address, and C refuses that
//!   very cell already (`dos_cc_new_create_cell` runs before `dos_cc_get_defense_type`). While
//!   marked every CREATE* gets DESTROY reason RESOURCELIMIT (5) without a handshake, so even a
//!   garbage CREATE2 gets RESOURCELIMIT, not TORPROTOCOL.
//! * Only client channels count for circuit creation (`channel_is_client`): a channel that
//!   authenticates as a relay from a marked address still creates circuits.
//! * MetricsPort: `tor_relay_dos_total{type=…}` counts exactly what the test saw; SIGUSR1
//!   logs C's heartbeat line; SIGHUP applies a changed `DoSCircuitCreationDefenseType` (1:
//!   count only) at once.
//!
//! `connect_rate_marks_an_address` runs a second relay with a small connect bucket for the
//! connect-rate defence (C 0.4.7+).

mod daemon_common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_common::raw_link::{connect_tcp_from, fixed_cell, LinkRead, RawLink};
use daemon_common::{
    free_port, http_get, metric, open_channel_and_create, standalone_torrc, Fors, TempDir,
};
use fors::cell::chan::DestroyReason;
use fors::cell::ChanCmd;
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};

/// Bound on any one step (handshake, answer); the machine is shared and slow.
const LIMIT: Duration = Duration::from_secs(60);

const A_CIRC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B_OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const C_CONN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const D_LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A client link from a chosen local address (TLS, VERSIONS, NETINFO; no AUTHENTICATE).
struct Link(RawLink);

impl Link {
    fn open(from: Ipv4Addr, relay: SocketAddr) -> Result<Link, String> {
        Link::handshake(Link::connect(from, relay)?, relay)
    }

    /// A TCP connection from `from` (accepted by the relay, no TLS yet).
    fn connect(from: Ipv4Addr, relay: SocketAddr) -> Result<TcpStream, String> {
        connect_tcp_from(from.into(), relay, LIMIT)
    }

    /// TLS, VERSIONS and NETINFO over `tcp`: the channel is open as a client's.
    fn handshake(tcp: TcpStream, relay: SocketAddr) -> Result<Link, String> {
        RawLink::over_tcp(tcp, LIMIT)?
            .client_handshake(relay.ip(), LIMIT)
            .map(Link)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.0.send(bytes) {
            Ok(())
        } else {
            Err("send: the relay closed the link".into())
        }
    }

    /// The next non-padding cell (circuit ID, command, body), within `limit`.
    fn read_cell(&mut self, limit: Duration) -> Result<(u32, ChanCmd, Vec<u8>), String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.0.read_cell(left) {
                LinkRead::Cell { cmd, .. }
                    if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
                LinkRead::Cell { circ_id, cmd, body } => return Ok((circ_id.0, cmd, body)),
                LinkRead::Closed(how) => return Err(format!("closed by the relay: {how}")),
                LinkRead::TimedOut => return Err("no cell in time".into()),
            }
        }
    }

    /// CREATE_FAST on `circ`; the answer's command and first body byte.
    fn create_fast(&mut self, circ: u32) -> Result<(ChanCmd, u8), String> {
        self.send(&fixed_cell(circ, ChanCmd::CREATE_FAST, &[7u8; 20]))?;
        let (id, cmd, body) = self.read_cell(LIMIT)?;
        if id != circ {
            return Err(format!("answer {cmd} on {id:#x}, want {circ:#x}"));
        }
        Ok((cmd, body[0]))
    }
}

fn torrc(dir: &Path, or_port: u16, metrics_port: u16) -> String {
    standalone_torrc("ForsDoS", dir, or_port, metrics_port)
        .metrics_port_policy("accept 127.0.0.1")
        .log("info")
        .publish_server_descriptor(true)
        .set("DoSConnectionEnabled", 1)
        .set("DoSConnectionMaxConcurrentCount", 3)
        .set("DoSCircuitCreationEnabled", 1)
        .set("DoSCircuitCreationMinConnections", 1)
        .set("DoSCircuitCreationRate", 1)
        .set("DoSCircuitCreationBurst", 5)
        .render()
}

/// Sends CREATE_FAST on each of `circs` in one write; the circuit IDs answered CREATED_FAST
/// and those answered DESTROY RESOURCELIMIT, each sorted (any other answer fails).
fn create_batch(link: &mut Link, circs: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let batch: Vec<u8> = circs
        .iter()
        .flat_map(|&c| fixed_cell(c, ChanCmd::CREATE_FAST, &[9u8; 20]))
        .collect();
    link.send(&batch).unwrap();
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..circs.len() {
        let (id, cmd, body) = link
            .read_cell(LIMIT)
            .expect("an answer to each CREATE_FAST");
        match cmd {
            ChanCmd::CREATED_FAST => created.push(id),
            ChanCmd::DESTROY => {
                assert_eq!(
                    DestroyReason::from(body[0]),
                    DestroyReason::ResourceLimit,
                    "DESTROY reason {}",
                    body[0]
                );
                refused.push(id)
            }
            other => panic!("unexpected {other} on {id:#x}"),
        }
    }
    created.sort_unstable();
    refused.sort_unstable();
    (created, refused)
}

/// The relay's identities from its DataDirectory.
fn identities(data: &Path) -> (RsaIdentity, Ed25519Identity) {
    let fp = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let rsa = RsaIdentity::from_hex(fp.split_whitespace().nth(1).unwrap()).unwrap();
    let ed = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed.split_whitespace().nth(1).unwrap()).unwrap();
    (rsa, ed)
}

fn dos_metric(text: &str, t: &str) -> u64 {
    metric(text, &format!("tor_relay_dos_total{{type=\"{t}\"}}"))
        .unwrap_or_else(|| panic!("no tor_relay_dos_total{{type=\"{t}\"}} in:\n{text}"))
}

#[test]
fn dos_defences_from_torrc() {
    let tmp = TempDir::new("dos");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let rc_text = torrc(tmp.path(), or_port, m_port);
    std::fs::write(&rc, &rc_text).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let relay = SocketAddr::from(([127, 0, 0, 1], or_port));
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));

    // ---- circuit creation, address A: one link, twelve CREATE_FASTs in one write.
    let mut a = Link::open(A_CIRC, relay).expect("link from A");
    let circs: Vec<u32> = (1..=12).map(|i| 0x8000_0000 | i).collect();
    let (created, refused) = create_batch(&mut a, &circs);
    // Burst 5: four served, the fifth marks and is refused (one more token if the batch
    // straddled a second boundary at rate 1/s); the served ones are the first ones.
    let k = created.len();
    assert!(
        (4..=5).contains(&k),
        "served {k}: {created:x?}, refused {refused:x?}"
    );
    assert_eq!(created, circs[..k], "the first cells are served");
    assert_eq!(refused, circs[k..], "every later cell is refused");
    // While marked, a garbage CREATE2 is refused without a handshake: RESOURCELIMIT, not
    // the TORPROTOCOL its onionskin would earn.
    let mut c2 = vec![0u8, 2, 0, 84];
    c2.extend_from_slice(&[0x55; 84]);
    a.send(&fixed_cell(0x8000_0100, ChanCmd::CREATE2, &c2))
        .unwrap();
    let (id, cmd, body) = a.read_cell(LIMIT).unwrap();
    assert_eq!((id, cmd), (0x8000_0100, ChanCmd::DESTROY));
    assert_eq!(DestroyReason::from(body[0]), DestroyReason::ResourceLimit);
    let mut circ_refused = refused.len() as u64 + 1;

    // ---- another address is unaffected.
    let mut b = Link::open(B_OTHER, relay).expect("link from B");
    assert_eq!(b.create_fast(0x8000_0001).unwrap().0, ChanCmd::CREATED_FAST);

    // ---- concurrent connections, address C: 4 served (count checked before adding, as in
    // C), the 5th closed at accept.
    let mut c_links: Vec<Link> = (0..4)
        .map(|i| Link::open(C_CONN, relay).unwrap_or_else(|e| panic!("link {i} from C: {e}")))
        .collect();
    let mut conn_refused = 0u64;
    match Link::open(C_CONN, relay) {
        Ok(_) => panic!("a 5th concurrent connection from C was served"),
        Err(e) => {
            eprintln!("5th connection from C: {e}");
            conn_refused += 1;
        }
    }
    // The four still work (4 CREATEs stay under C's Burst of 5).
    for (i, l) in c_links.iter_mut().enumerate() {
        let circ = 0x8000_0010 + i as u32;
        assert_eq!(
            l.create_fast(circ).unwrap().0,
            ChanCmd::CREATED_FAST,
            "link {i} from C"
        );
    }
    // B may still connect while C is at its limit.
    drop(Link::open(B_OTHER, relay).expect("a second link from B"));
    // Closing one of C's links frees a place (once the relay has seen the close).
    drop(c_links.pop());
    let end = Instant::now() + LIMIT;
    let again = loop {
        match Link::open(C_CONN, relay) {
            Ok(l) => break l,
            Err(_) if Instant::now() < end => {
                conn_refused += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("C cannot reconnect after closing a link: {e}"),
        }
    };
    drop(again);

    // ---- only client channels count: mark 127.0.0.1 with a client link, then a channel
    // from the same address that authenticates as a relay still creates.
    let mut d = Link::open(D_LOCAL, relay).expect("client link from 127.0.0.1");
    let d_circs: Vec<u32> = (0x20..0x2c).map(|i| 0x8000_0000 | i).collect();
    let (d_created, d_refused) = create_batch(&mut d, &d_circs);
    assert!((4..=5).contains(&d_created.len()), "{d_created:x?}");
    circ_refused += d_refused.len() as u64;
    let (rsa, ed) = identities(&tmp.path().join("data"));
    let (cmd, _) = open_channel_and_create(relay, rsa, ed, &tmp.path().join("peer"));
    assert_eq!(
        cmd,
        ChanCmd::CREATED_FAST,
        "a relay channel from a marked address"
    );
    let (cmd, reason) = d.create_fast(0x8000_0030).unwrap();
    assert_eq!(
        (cmd, reason),
        (ChanCmd::DESTROY, 5),
        "the client link stays refused"
    );
    circ_refused += 1;

    // ---- the MetricsPort counts what we saw.
    let m = http_get(m_addr, "/metrics");
    assert!(m.starts_with("HTTP/1.0 200 OK\r\n"), "{m}");
    assert_eq!(dos_metric(&m, "circuit_rejected"), circ_refused, "{m}");
    assert_eq!(dos_metric(&m, "marked_address"), 2);
    assert_eq!(dos_metric(&m, "concurrent_conn_rejected"), conn_refused);
    assert_eq!(dos_metric(&m, "conn_rejected"), 0);
    assert!(metric(&m, "fors_relay_dos_table_entries").unwrap() >= 3);
    assert!(metric(&m, "fors_relay_dos_table_slots").unwrap() >= 1024);
    assert_eq!(metric(&m, "fors_relay_dos_table_full_total"), Some(0));

    // ---- SIGUSR1 logs C's heartbeat line with the same numbers.
    f.signal(libc::SIGUSR1);
    let line = f.wait_for("DoS mitigation since startup", Duration::from_secs(30));
    assert!(
        line.contains(&format!(
            "{circ_refused} circuits rejected, 2 marked addresses"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "{conn_refused} same address concurrent connections rejected"
        )),
        "{line}"
    );

    // ---- SIGHUP: defence type 1 (count only) applies without a restart.
    std::fs::write(
        &rc,
        rc_text.replace(
            "DoSCircuitCreationBurst 5\n",
            "DoSCircuitCreationBurst 5\nDoSCircuitCreationDefenseType 1\n",
        ),
    )
    .unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for(
        "DoSCircuitCreation*/DoSConnection* changed; applied",
        Duration::from_secs(30),
    );
    // The shards pick the options up at their next tick (100 ms).
    let end = Instant::now() + Duration::from_secs(30);
    let mut circ = 0x8000_0200;
    loop {
        circ += 1;
        match a.create_fast(circ).unwrap() {
            (ChanCmd::CREATED_FAST, _) => break,
            (ChanCmd::DESTROY, 5) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("after the reload A still gets {other:?}"),
        }
    }
    drop((a, b, c_links, d));
    assert!(f.child.try_wait().unwrap().is_none(), "fors exited");
}

/// Connect rate (C tor 0.4.7+ `DoSConnectionConnect*`): with `ConnectBurst 3`, `ConnectRate 1`
/// and `ConnectDefenseTimePeriod 10`, quick connects from one address empty its bucket; the
/// connect that empties it is still served and marks the address, whose next connections are
/// closed at accept for 10 s plus 1..5 s of jitter. Another address is unaffected, and the
/// mark expires.
#[test]
fn connect_rate_marks_an_address() {
    const E_RATE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
    let tmp = TempDir::new("dos-rate");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let text = torrc(tmp.path(), or_port, m_port)
        .replace(
            "DoSConnectionMaxConcurrentCount 3\n",
            "DoSConnectionConnectRate 1\nDoSConnectionConnectBurst 3\n\
             DoSConnectionConnectDefenseTimePeriod 10\n",
        )
        .replace("DoSCircuitCreationEnabled 1\n", "");
    std::fs::write(&rc, text).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let relay = SocketAddr::from(([127, 0, 0, 1], or_port));
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));

    // Connect and close until a connect is refused: at most the burst plus one token per
    // second that passed.
    let start = Instant::now();
    let mut served = 0u64;
    let marked_at = loop {
        match Link::open(E_RATE, relay) {
            Ok(l) => {
                drop(l);
                served += 1;
                let allowed = 3 + start.elapsed().as_secs() + 1;
                assert!(
                    served <= allowed,
                    "{served} connects served, bucket 3 at 1/s"
                );
            }
            Err(e) => {
                eprintln!("refused after {served} connects: {e}");
                break Instant::now();
            }
        }
    };
    assert!(served >= 3, "refused before the burst was used: {served}");
    let mut refused = 1u64;
    // Still marked a few seconds later; another address connects meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert!(Link::open(E_RATE, relay).is_err(), "mark lasts 10 s");
    refused += 1;
    drop(Link::open(B_OTHER, relay).expect("another address is unaffected"));
    // The mark ends after 10..15 s.
    let end = marked_at + Duration::from_secs(40);
    loop {
        match Link::open(E_RATE, relay) {
            Ok(_) => break,
            Err(e) if Instant::now() < end => {
                refused += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("still refused 40 s after the mark: {e}"),
        }
    }
    assert!(
        marked_at.elapsed() >= Duration::from_secs(9),
        "the mark ended after {:?}",
        marked_at.elapsed()
    );
    let m = http_get(m_addr, "/metrics");
    assert_eq!(dos_metric(&m, "conn_rejected"), refused, "{m}");
    assert_eq!(dos_metric(&m, "conn_marked_address"), 1);
    assert_eq!(dos_metric(&m, "concurrent_conn_rejected"), 0);
    assert_eq!(dos_metric(&m, "circuit_rejected"), 0);
}

/// C tor runs the DoS defences only on a public relay (`public_server_mode`): with
/// `PublishServerDescriptor 0` they stay off even though the torrc enables them.
#[test]
fn defences_are_off_when_not_publishing() {
    const F_PRIVATE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
    let tmp = TempDir::new("dos-private");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let text = torrc(tmp.path(), or_port, m_port)
        .replace("PublishServerDescriptor 1\n", "PublishServerDescriptor 0\n");
    std::fs::write(&rc, text).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let relay = SocketAddr::from(([127, 0, 0, 1], or_port));
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));
    // MaxConcurrentCount 3 would refuse the fifth; all six are served.
    let mut links: Vec<Link> = (0..6)
        .map(|i| Link::open(F_PRIVATE, relay).unwrap_or_else(|e| panic!("link {i}: {e}")))
        .collect();
    // Burst 5 would refuse from the fifth CREATE_FAST on; all twelve are served.
    let circs: Vec<u32> = (1..=12).map(|i| 0x8000_0000 | i).collect();
    let (created, refused) = create_batch(&mut links[0], &circs);
    assert_eq!((created.len(), refused.len()), (12, 0));
    let m = http_get(m_addr, "/metrics");
    assert_eq!(dos_metric(&m, "circuit_rejected"), 0, "{m}");
    assert_eq!(dos_metric(&m, "concurrent_conn_rejected"), 0, "{m}");
    assert_eq!(metric(&m, "fors_relay_dos_tracked_connections"), Some(0));
}

/// C `channel_do_open_actions`: a client connection accepted while the defences were off
/// (as they are before the first consensus) is counted when its channel opens, so its
/// CREATE cells meet the circuit defence turned on meanwhile.
#[test]
fn connection_accepted_before_the_defences_is_caught_up_at_open() {
    const G_EARLY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
    let tmp = TempDir::new("dos-early");
    let (or_port, m_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let on = torrc(tmp.path(), or_port, m_port).replace("DoSConnectionEnabled 1\n", "");
    let off = on.replace(
        "DoSCircuitCreationEnabled 1\n",
        "DoSCircuitCreationEnabled 0\n",
    );
    std::fs::write(&rc, &off).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let relay = SocketAddr::from(([127, 0, 0, 1], or_port));
    let m_addr = SocketAddr::from(([127, 0, 0, 1], m_port));

    // Accepted with every defence off: not tracked.
    let tcp = Link::connect(G_EARLY, relay).expect("connect");
    std::thread::sleep(Duration::from_millis(500));
    let m = http_get(m_addr, "/metrics");
    assert_eq!(
        metric(&m, "fors_relay_dos_tracked_connections"),
        Some(0),
        "{m}"
    );

    // The circuit defence comes on (as with the first consensus); then the channel opens.
    std::fs::write(&rc, &on).unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for(
        "Reload: DoSCircuitCreation*/DoSConnection* changed; applied.",
        LIMIT,
    );
    // The shards pick the new options up at their next tick (100 ms).
    std::thread::sleep(Duration::from_secs(2));
    let mut g = Link::handshake(tcp, relay).expect("handshake");
    let circs: Vec<u32> = (1..=12).map(|i| 0x8000_0000 | i).collect();
    let (created, refused) = create_batch(&mut g, &circs);
    assert!(
        (4..=5).contains(&created.len()),
        "burst 5 applies to the early connection: served {created:x?}, refused {refused:x?}"
    );
    let m = http_get(m_addr, "/metrics");
    assert_eq!(
        dos_metric(&m, "circuit_rejected"),
        refused.len() as u64,
        "{m}"
    );
}
