//! Interop with the real C tor (Debian's /usr/sbin/tor), on 127.0.0.1 only. Every tor started
//! here has a private torrc whose only DirAuthority is a fake one on 127.0.0.1 that nothing
//! answers, so nothing leaves the machine.
//!
//! (a) Fors initiates to a C tor relay: full authenticated handshake (C verifies our CERTS
//!     and AUTHENTICATE; its debug log must say so), then CREATE_FAST → CREATED_FAST with a
//!     matching KH, then DESTROY.
//! (b) A C tor client uses Fors as its bridge: our responder sees it as a client and receives
//!     its first CREATE_FAST/CREATE2.
//! (c) A C tor relay, asked over (a)'s circuit to EXTEND2 to our responder, connects to it as an
//!     authenticating initiator: our responder checks its CERTS and AUTHENTICATE and receives
//!     the forwarded CREATE2.
//!
//! Without tor installed the tests follow `tests/skip_common`'s rule: fail under `CI=true`,
//! else print `SKIPPED:` and return.

mod channel_support;
mod skip_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use channel_support::*;
use fors::cell::chan::{Destroy, DestroyReason};
use fors::cell::{ChanCmd, CircId};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::proto::channel::{
    Channel, ChannelConfig, ChannelEvent, ExpectedPeer, PeerIdentity, TlsPath,
};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use fors_testkit::torrc::{free_port, DirAuthority, Torrc};

const TOR: &str = "/usr/sbin/tor";

/// Whether C tor is here; if not, applies the skip rule for `test` (panics under CI).
fn tor_available(test: &str) -> bool {
    if Path::new(TOR).exists() {
        return true;
    }
    skip_common::skip(
        test,
        &format!("{TOR} is not installed (apt-get install tor)"),
    );
    false
}

/// A tor process, killed by pid when dropped (also when the test fails).
struct Tor {
    child: Child,
    dir: PathBuf,
}

impl Drop for Tor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("FORS_KEEP_CTOR_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Tor {
    fn start(name: &str, extra: &str) -> Tor {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("fors-ctor-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The only authority is fake: port 9 on loopback, where nothing listens.
        let dead = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        Torrc::new()
            .data_directory(dir.join("data"))
            .testing_tor_network(true)
            .dir_authority(&DirAuthority::fake_at(0, dead, 9))
            .set("ProtocolWarnings", 1)
            .set("SafeLogging", 0)
            .add("Log", format!("notice file {}/notice.log", dir.display()))
            .add("Log", format!("debug file {}/debug.log", dir.display()))
            .raw(extra)
            .write_to(&dir);
        std::fs::write(dir.join("defaults"), "").unwrap();
        let child = Command::new(TOR)
            .arg("-f")
            .arg(dir.join("torrc"))
            .arg("--defaults-torrc")
            .arg(dir.join("defaults"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tor");
        Tor { child, dir }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "tor exited early ({status}); notice log:\n{}",
                self.log("notice.log")
            );
        }
    }
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Drives `ch` over `sock` until `done` says so (or the deadline passes).
fn drive(
    ch: &mut Channel,
    sock: &mut TcpStream,
    sink: &mut Collect,
    secs: u64,
    mut done: impl FnMut(&Collect) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; 64 * 1024];
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !done(sink) {
        assert!(
            Instant::now() < deadline,
            "timed out; events {:?}",
            sink.events
        );
        let out = ch.pending_output().to_vec();
        if !out.is_empty() {
            sock.write_all(&out).unwrap();
            ch.consume_output(out.len());
        }
        if ch.is_closed() {
            panic!("channel closed: {:?}", sink.events);
        }
        match sock.read(&mut buf) {
            Ok(0) => {
                ch.handle_eof(sink);
                panic!("peer closed the TCP connection: {:?}", sink.events);
            }
            Ok(n) => {
                if let Err(e) = ch.handle_input(&buf[..n], now(), &mut rng, sink) {
                    panic!("channel error {e}; events {:?}", sink.events);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let out = ch.pending_output().to_vec();
    if !out.is_empty() {
        sock.write_all(&out).unwrap();
        ch.consume_output(out.len());
    }
}

/// A C tor relay on a free 127.0.0.1 port, with its identities read from its DataDirectory.
struct CRelay {
    tor: Tor,
    port: u16,
    rsa: RsaIdentity,
    ed: Ed25519Identity,
}

fn start_c_relay() -> CRelay {
    let port = free_port();
    let mut tor = Tor::start(
        "relay",
        &Torrc::new()
            .nickname("forsinterop")
            .or_port(port)
            .address("127.0.0.1")
            .assume_reachable(true)
            .publish_server_descriptor(false)
            .socks_port(None)
            .exit_relay(false)
            .render(),
    );
    let data = tor.dir.join("data");
    let (rsa, ed) = wait_for("tor's fingerprint files", 60, || {
        tor.assert_running();
        let fp = std::fs::read_to_string(data.join("fingerprint")).ok()?;
        let fp_ed = std::fs::read_to_string(data.join("fingerprint-ed25519")).ok()?;
        let rsa = RsaIdentity::from_hex(fp.split_whitespace().nth(1)?)?;
        let ed = Ed25519Identity::from_base64(fp_ed.split_whitespace().nth(1)?)?;
        Some((rsa, ed))
    });
    CRelay { tor, port, rsa, ed }
}

/// Our initiator's open channel to a C relay, with a CREATE_FAST circuit on it.
struct FastCircuit {
    ch: Channel,
    sock: TcpStream,
    sink: Collect,
    /// Our end of the one-hop circuit (the test kit's client circuit).
    circ: ClientCircuit,
}

fn open_and_create_fast(relay: &mut CRelay, me: &TestIdentity) -> FastCircuit {
    let port = relay.port;
    let mut sock = wait_for("tor's ORPort", 60, || {
        relay.tor.assert_running();
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let ctx = me.context(ChannelConfig::default());
    let mut rng = rand::thread_rng();
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (rsa, ed) = (relay.rsa, relay.ed);
    let mut ch = Channel::new_initiator(
        ctx,
        ExpectedPeer { rsa, ed: Some(ed) },
        local,
        now(),
        &mut rng,
    )
    .unwrap();
    let mut sink = Collect::default();
    drive(&mut ch, &mut sock, &mut sink, 30, |s| s.opened().is_some());
    let info = *sink.opened().unwrap();
    assert_eq!(info.peer, PeerIdentity::Relay { rsa, ed });
    assert_eq!(info.link_version, 5);
    assert!(info.authenticated_to_peer);
    assert_eq!(info.our_addr_according_to_peer, Some(local));

    // CREATE_FAST on a circuit ID with the high bit set (we opened the connection).
    let circ = ch
        .circ_id_allocator()
        .allocate(&mut rng, |_| false)
        .unwrap();
    assert!(circ.has_high_bit());
    let mut client = ClientCircuit::new(circ);
    let (cmd, body) = client.create(&mut rng, &Handshake::Fast).unwrap();
    assert_eq!(cmd, ChanCmd::CREATE_FAST);
    ch.send_cell(circ, cmd, &body).unwrap();
    drive(&mut ch, &mut sock, &mut sink, 30, |s| {
        s.cells.iter().any(|c| c.0 == circ)
    });
    let (cid, cmd, reply) = sink.cells.iter().find(|c| c.0 == circ).unwrap().clone();
    assert_eq!((cid, cmd), (circ, ChanCmd::CREATED_FAST), "{reply:?}");
    client
        .created(cmd, &reply)
        .expect("KH from C tor matches our KDF");
    // C tor negotiates TLS 1.3: after the link handshake the channel runs on Fors's own
    // record layer, and CREATED_FAST came through it.
    assert_eq!(ch.stats().tls_path, TlsPath::RecordLayer);
    FastCircuit {
        ch,
        sock,
        sink,
        circ: client,
    }
}

fn send_now(fc: &mut FastCircuit, cmd: ChanCmd, body: &[u8; 509]) {
    fc.ch.send_cell(fc.circ.id, cmd, body).unwrap();
    let out = fc.ch.pending_output().to_vec();
    fc.sock.write_all(&out).unwrap();
    fc.ch.consume_output(out.len());
}

#[test]
fn fors_initiator_authenticates_to_c_tor_relay_and_creates_fast_circuit() {
    if !tor_available("fors_initiator_authenticates_to_c_tor_relay_and_creates_fast_circuit") {
        return;
    }
    let mut relay = start_c_relay();
    let me = TestIdentity::generate();
    let mut fc = open_and_create_fast(&mut relay, &me);
    assert_eq!(fc.circ.hops(), 1);

    let mut body = [0u8; 509];
    Destroy {
        reason: DestroyReason::None,
    }
    .encode(&mut body);
    send_now(&mut fc, ChanCmd::DESTROY, &body);

    // C tor logged that our AUTHENTICATE was good and never complained about our cells.
    // The "Looks good" line names the identity C tor now holds us to: ours.
    let our_rsa = format!("RSA_ID={}", me.rsa_id().to_hex());
    let tor = &mut relay.tor;
    let log = wait_for("C tor's verdict in its log", 20, || {
        let log = tor.log("debug.log");
        let good = log.lines().any(|l| {
            l.contains("AUTHENTICATE") && l.contains("Looks good") && l.contains(&our_rsa)
        });
        (good && log.contains("Got good NETINFO cell")).then_some(log)
    });
    for complaint in [
        "Received a bad",
        "Bogus/unrecognized create cell",
        "unexpected circ_id",
        "Invalid certificate chain",
    ] {
        assert!(!log.contains(complaint), "C tor complained: {complaint}");
    }
    // Give tor a moment to process DESTROY; it must not close on it.
    std::thread::sleep(Duration::from_millis(300));
    let log = tor.log("debug.log");
    assert!(!log.contains("Received a bad"));
    tor.assert_running();
    assert!(fc.sink.closed().is_none(), "{:?}", fc.sink.events);
}

type ResponderResult = Result<(Vec<ChannelEvent>, Vec<(CircId, ChanCmd, Vec<u8>)>), String>;

/// Runs our responder on a 127.0.0.1 listener in a thread, for one connection, until a
/// CREATE_FAST or CREATE2 arrives (or 90 s pass).
fn spawn_responder(
    ctx: std::sync::Arc<fors::proto::channel::LinkContext>,
) -> (
    u16,
    std::sync::mpsc::Receiver<ResponderResult>,
    std::thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let (mut sock, peer) = loop {
            match listener.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let _ = tx.send(Err("no connection to our responder".to_string()));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("accept: {e}")));
                    return;
                }
            }
        };
        sock.set_nonblocking(false).unwrap();
        let mut ch = Channel::new_responder(ctx, peer.ip(), now()).unwrap();
        let mut sink = Collect::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive(&mut ch, &mut sock, &mut sink, 60, |s| {
                s.cells
                    .iter()
                    .any(|c| matches!(c.1, ChanCmd::CREATE_FAST | ChanCmd::CREATE2))
            });
        }));
        let _ = tx.send(match r {
            Ok(()) => Ok((sink.events.clone(), sink.cells.clone())),
            Err(_) => Err(format!("driving the channel failed: {:?}", sink.events)),
        });
    });
    (port, rx, handle)
}

fn open_info(events: &[ChannelEvent]) -> fors::proto::channel::OpenInfo {
    events
        .iter()
        .find_map(|e| match e {
            ChannelEvent::Open(i) => Some(*i),
            _ => None,
        })
        .expect("an Open event")
}

#[test]
fn c_tor_client_uses_fors_responder_as_bridge() {
    if !tor_available("c_tor_client_uses_fors_responder_as_bridge") {
        return;
    }
    let me = TestIdentity::generate();
    let (port, rx, server) = spawn_responder(me.context(ChannelConfig::default()));
    let socks = free_port();
    let tor = Tor::start(
        "client",
        &Torrc::new()
            .socks_port(Some(socks))
            .set("UseBridges", 1)
            .add(
                "Bridge",
                format!("127.0.0.1:{port} {}", me.rsa_id().to_hex()),
            )
            .render(),
    );
    let result = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("responder thread reported");
    let _ = server.join();
    let (events, cells) = match result {
        Ok(x) => x,
        Err(e) => panic!("{e}\ntor notice log:\n{}", tor.log("notice.log")),
    };
    let open = open_info(&events);
    assert_eq!(open.peer, PeerIdentity::Client);
    assert!(open.link_version >= 4);
    let create = cells
        .iter()
        .find(|c| matches!(c.1, ChanCmd::CREATE_FAST | ChanCmd::CREATE2))
        .unwrap();
    // The client opened the TLS connection, so its circuit IDs have the high bit set.
    assert!(create.0.has_high_bit(), "{:?}", create.0);
    assert_ne!(create.0, CircId(0));
    let log = tor.log("debug.log");
    assert!(!log.contains("Received a bad"), "C tor client complained");
}

/// The third direction: C tor as an *authenticating initiator*. We ask a C relay (over our
/// CREATE_FAST circuit) to EXTEND2 to our responder; it connects, proves its identity with
/// CERTS + AUTHENTICATE, and forwards our CREATE2.
#[test]
fn c_tor_relay_extends_to_fors_responder() {
    if !tor_available("c_tor_relay_extends_to_fors_responder") {
        return;
    }
    use fors::cell::chan::{Create2, HandshakeType};
    use fors::cell::relay::msg::LinkSpec;

    let target = TestIdentity::generate();
    let (port, rx, server) = spawn_responder(target.context(ChannelConfig::default()));
    let mut relay = start_c_relay();
    let me = TestIdentity::generate();
    let mut fc = open_and_create_fast(&mut relay, &me);

    let onionskin = [0x5Au8; 84];
    let specs = [
        LinkSpec::Ipv4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
        LinkSpec::RsaId(target.rsa_id()),
        LinkSpec::Ed25519Id(target.ed_id()),
    ];
    let body = fc
        .circ
        .extend_raw(
            &mut rand::thread_rng(),
            &specs,
            HandshakeType::NTOR,
            &onionskin,
        )
        .unwrap();
    // EXTEND2 must travel in RELAY_EARLY.
    send_now(&mut fc, ChanCmd::RELAY_EARLY, &body);

    let result = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("responder thread reported");
    let _ = server.join();
    let (events, cells) = match result {
        Ok(x) => x,
        Err(e) => panic!("{e}\ntor notice log:\n{}", relay.tor.log("notice.log")),
    };
    let open = open_info(&events);
    assert_eq!(
        open.peer,
        PeerIdentity::Relay {
            rsa: relay.rsa,
            ed: relay.ed
        },
        "the C relay authenticated to us"
    );
    let (cid, _, cbody) = cells
        .iter()
        .find(|c| c.1 == ChanCmd::CREATE2)
        .expect("CREATE2 forwarded");
    // The C relay opened this TLS connection: its circuit IDs have the high bit set.
    assert!(cid.has_high_bit());
    let got = Create2::parse(cbody).unwrap();
    assert_eq!(
        (got.htype, got.hdata),
        (HandshakeType::NTOR, &onionskin[..])
    );
    let log = relay.tor.log("debug.log");
    assert!(!log.contains("Received a bad"), "C tor complained");
    relay.tor.assert_running();
}
