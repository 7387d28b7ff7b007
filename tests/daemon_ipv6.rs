//! IPv6 on running Fors relays (issue #9 point 7), on loopback (127.0.0.1 and ::1 only).
//!
//! `extend2_by_an_ipv6_link_specifier_alone`, with standalone daemons (fake authorities,
//! `TestingTorNetwork 1`, `PublishServerDescriptor 0`, no consensus): a test client builds a one-hop circuit to Fors
//! relay A (CREATE_FAST) and sends, in a RELAY_EARLY cell, an EXTEND2 toward Fors relay B
//! naming B only by an IPv6 link specifier `[::1]:PORT` (type 01, tor-spec §"EXTEND and
//! EXTENDED messages") plus B's RSA (02) and Ed25519 (03) identities, with an ntor onionskin
//! made from B's onion key (read from B's DataDirectory). A must open the channel to B over
//! IPv6 and answer EXTENDED2, whose handshake the client completes; a relay cell to the new
//! hop then round-trips. A knew B by no other address and B's `[::1]` ORPort is on its own
//! port, so the EXTENDED2 shows the channel was made over IPv6. A has an IPv6 ORPort itself:
//! a relay without one (C) refuses the same EXTEND2 with DESTROY CONNECTFAILED, as C tor.
//!
//! `ipv6_exit_connects_to_an_ipv6_destination_only_with_ipv6exit`: a Fors exit refuses every
//! BEGIN without a consensus (a first hop: END TORPROTOCOL; an unknown previous relay: END
//! MISC, as C `connection_exit_begin_conn`), so this one runs on the private loopback network
//! of scripts/testnet.py (C tor authorities): a Fors middle and two Fors exits whose policies
//! accept `[::1]:*` in front of the testnet's rules, `forsexit1` with `IPv6Exit 1` and
//! `forsexit2` with the testnet's `IPv6Exit 0`. The test client builds client → middle →
//! exit circuits by hand and sends `BEGIN [::1]:PORT` (flag IPv6_OK, tor-spec §"Opening
//! streams and transferring data") toward an echo server on `[::1]`: `forsexit1` answers
//! RELAY_CONNECTED naming `::1` and the stream echoes; `forsexit2` answers END EXITPOLICY
//! carrying `::1` and a TTL (C `connection_exit_connect` → `my_exit_policy_rejects`, "IPv6
//! address without IPv6Exit configured"; C's `policies_parse_exit_policy_internal` also
//! prepends `reject *6:*` without IPv6Exit) and nothing connects.
//!
//! Skipped (the skip rule) when `[::1]` cannot be bound here; the second also without tor,
//! tor-gencert or python3, or with `FORS_SKIP_TESTNET`.

mod daemon_common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_common::private_net::{
    relay_record, start_counting_listener, start_echo_server, testnet, testnet_skip_reason,
};
use daemon_common::raw_link::{fixed_cell, LinkRead, RawLink};
use daemon_common::{
    free_port, free_port_range_base, wait_for_file_line, Fors, TempDir, TestnetGuard,
};
use fors::cell::relay::msg::{
    Begin, BeginFlags, BeginTarget, Connected, End, EndReason, Extended2, LinkSpec,
};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use fors_testkit::torrc::Torrc;
use rand::rngs::StdRng;
use rand::SeedableRng;

const START: Duration = Duration::from_secs(60);
const REPLY: Duration = Duration::from_secs(30);

/// A standalone 2-shard relay's torrc (as `tests/daemon_process.rs`): fake authorities that
/// never answer, so no consensus; `or_ports` are whole `ORPort ...` lines.
fn torrc(dir: &Path, nick: &str, or_ports: &str, extra: &str) -> String {
    Torrc::test_relay(nick, dir)
        .raw(or_ports)
        .num_cpus(2)
        .fake_authorities(2)
        .raw(extra)
        .render()
}

fn start(dir: &Path, text: &str) -> Fors {
    let rc = dir.join("torrc");
    std::fs::write(&rc, text).unwrap();
    Fors::start(&["-f", rc.to_str().unwrap()])
}

/// The relay's RSA and Ed25519 identities, from its DataDirectory's fingerprint files.
fn identities(data: &Path) -> (RsaIdentity, Ed25519Identity) {
    let fp = std::fs::read_to_string(data.join("fingerprint")).unwrap();
    let rsa = RsaIdentity::from_hex(fp.split_whitespace().nth(1).unwrap()).unwrap();
    let ed_line = std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();
    let ed = Ed25519Identity::from_base64(ed_line.split_whitespace().nth(1).unwrap()).unwrap();
    (rsa, ed)
}

/// The relay's current ntor onion key: `keys/secret_onion_key_ntor` is C tor's format, a
/// 32-byte `== c25519v1: onion ==` header, the secret, then the public key (32 bytes each).
fn ntor_public(data: &Path) -> x25519_dalek::PublicKey {
    let f = std::fs::read(data.join("keys/secret_onion_key_ntor")).unwrap();
    assert_eq!(f.len(), 96, "unexpected ntor key file");
    assert!(f.starts_with(b"== c25519v1: onion =="));
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&f[64..]);
    x25519_dalek::PublicKey::from(pk)
}

/// The client end of one circuit over a raw client link (link protocol 5, 4-byte ids): the
/// test kit's client circuit, its cells carried by the link.
struct ClientCirc {
    link: RawLink,
    circ: ClientCircuit,
    rng: StdRng,
}

impl ClientCirc {
    /// A client link to `addr` and a first hop made with CREATE_FAST (tor-spec §"CREATE_FAST").
    fn create_fast(addr: SocketAddr, seed: u64) -> ClientCirc {
        let link = RawLink::open_as_client(addr, REPLY).unwrap_or_else(|e| panic!("{addr}: {e}"));
        let mut c = ClientCirc {
            link,
            // A client's circuit ids have the high bit set on link protocol 4+ (tor-spec
            // §"Choosing circuit IDs in create cells").
            circ: ClientCircuit::new(CircId(0x8000_0001)),
            rng: StdRng::seed_from_u64(seed),
        };
        let (cmd, body) = c.circ.create(&mut c.rng, &Handshake::Fast).unwrap();
        c.link.send(&fixed_cell(c.circ.id.0, cmd, &body));
        let reply = c.next_cell(ChanCmd::CREATED_FAST);
        c.circ.created(ChanCmd::CREATED_FAST, &reply).unwrap();
        c
    }

    /// Sends an EXTEND2 by ntor to the relay `rsa`/`onion` named by `specs`, to the last hop.
    /// It must come in a RELAY_EARLY cell (tor-spec §"EXTEND and EXTENDED messages").
    fn send_extend(
        &mut self,
        specs: &[LinkSpec<'_>],
        rsa: RsaIdentity,
        onion: x25519_dalek::PublicKey,
    ) {
        let body = self
            .circ
            .extend(&mut self.rng, specs, &Handshake::Ntor { rsa, onion })
            .unwrap();
        self.link
            .send(&fixed_cell(self.circ.id.0, ChanCmd::RELAY_EARLY, &body));
    }

    /// The next cell on our circuit, which must be a `want` (a DESTROY or the link closing
    /// fails the test with its reason).
    fn next_cell(&mut self, want: ChanCmd) -> Vec<u8> {
        let (cmd, body) = self.next_any();
        assert_ne!(cmd, ChanCmd::DESTROY, "DESTROY, reason {}", body[0]);
        assert_eq!(cmd, want, "{body:?}");
        body
    }

    /// The next cell on our circuit, whatever it is (padding is skipped).
    fn next_any(&mut self) -> (ChanCmd, Vec<u8>) {
        let end = Instant::now() + REPLY;
        // Bounded: every read waits at most the time left, and the loop ends at `end`.
        while Instant::now() < end {
            match self
                .link
                .read_cell(end.saturating_duration_since(Instant::now()))
            {
                LinkRead::Cell { cmd, .. }
                    if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
                LinkRead::Cell { circ_id, cmd, body } => {
                    assert_eq!(circ_id, self.circ.id, "{cmd:?} on another circuit");
                    return (cmd, body);
                }
                LinkRead::Closed(how) => panic!("the relay closed the link: {how}"),
                LinkRead::TimedOut => break,
            }
        }
        panic!("no cell within {REPLY:?}");
    }

    /// Sends a relay message to hop `hop` as `cmd` (RELAY or RELAY_EARLY).
    fn send(
        &mut self,
        hop: usize,
        cmd: ChanCmd,
        rcmd: RelayCmd,
        stream_id: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, fors::cell::CellError>,
    ) {
        let (body, _) = self
            .circ
            .relay_cell_with(&mut self.rng, hop, rcmd, stream_id, write)
            .unwrap();
        self.link.send(&fixed_cell(self.circ.id.0, cmd, &body));
    }

    /// The next relay message: (hop that sent it, command, stream id, data).
    fn recv(&mut self) -> (usize, RelayCmd, u16, Vec<u8>) {
        let b = self.next_cell(ChanCmd::RELAY);
        let mut body = [0u8; CELL_BODY_LEN];
        body.copy_from_slice(&b);
        let r = self
            .circ
            .open(&mut body)
            .expect("a hop of ours recognizes the cell");
        (r.hop, r.cmd, r.stream_id, r.data.to_vec())
    }
}

/// A seed from the clock, printed so a failing run can be repeated.
fn seed(test: &str) -> u64 {
    let s = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {s} (FORS_TEST_SEED={s} repeats it)");
    s
}

#[test]
fn extend2_by_an_ipv6_link_specifier_alone() {
    const TEST: &str = "extend2_by_an_ipv6_link_specifier_alone";
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        daemon_common::skip_common::skip(TEST, "no IPv6 loopback (::1) here");
        return;
    }
    let seed = seed(TEST);
    // B listens on 127.0.0.1 (a relay must advertise an IPv4 ORPort) and on [::1].
    let tmp_b = TempDir::new("ipv6-extend-b");
    let (b_v4, b_v6) = (free_port(), free_port());
    let mut b = start(
        tmp_b.path(),
        &torrc(
            tmp_b.path(),
            "ForsV6B",
            &format!("ORPort 127.0.0.1:{b_v4}\nORPort [::1]:{b_v6}\n"),
            "",
        ),
    );
    // A has an IPv6 ORPort too: C tor extends over IPv6 only when it has one
    // (`router_can_extend_over_ipv6` in `circuit_choose_ip_ap_for_extend`).
    let tmp_a = TempDir::new("ipv6-extend-a");
    let a_v4 = free_port();
    let mut a = start(
        tmp_a.path(),
        &torrc(
            tmp_a.path(),
            "ForsV6A",
            &format!("ORPort 127.0.0.1:{a_v4}\nORPort [::1]:{}\n", free_port()),
            "",
        ),
    );
    b.wait_for(&format!("Opened ORPort on [::1]:{b_v6} too."), START);
    b.wait_for("the relay is running", START);
    a.wait_for("the relay is running", START);
    let b_data = tmp_b.path().join("data");
    let (b_rsa, b_ed) = identities(&b_data);
    let b_onion = ntor_public(&b_data);

    let mut circ = ClientCirc::create_fast(SocketAddr::from(([127, 0, 0, 1], a_v4)), seed);
    let target = SocketAddrV6::new(Ipv6Addr::LOCALHOST, b_v6, 0, 0);
    let specs = [
        LinkSpec::Ipv6(target),
        LinkSpec::RsaId(b_rsa),
        LinkSpec::Ed25519Id(b_ed),
    ];
    circ.send_extend(&specs, b_rsa, b_onion);
    let (hop, cmd, sid, data) = circ.recv();
    assert_eq!((hop, cmd, sid), (0, RelayCmd::EXTENDED2, 0), "{data:?}");
    let reply = Extended2::parse(&data).unwrap();
    circ.circ
        .extended(reply.hdata)
        .expect("B's ntor reply checks out: the channel reached B");

    // The second hop is live: a DROP would prove nothing back, so ask B to open a stream. B
    // has no consensus, so A is an unknown relay to it and B refuses the BEGIN with END MISC
    // (C `connection_exit_begin_conn`, RefuseUnknownExits), sent from hop 1: only B's layer
    // can have made that cell.
    circ.send(1, ChanCmd::RELAY, RelayCmd::BEGIN, 7, |o| {
        fors::cell::relay::msg::Begin {
            target: fors::cell::relay::msg::BeginTarget::Ipv4(std::net::Ipv4Addr::LOCALHOST),
            port: 80,
            flags: fors::cell::relay::msg::BeginFlags(0),
        }
        .encode(o)
    });
    let (hop, cmd, sid, data) = circ.recv();
    assert_eq!((hop, cmd, sid), (1, RelayCmd::END, 7), "{data:?}");
    assert_eq!(data.first(), Some(&1), "END MISC: {data:?}");

    // Relay C has no IPv6 ORPort: like C tor (`router_can_extend_over_ipv6` false in
    // `circuit_choose_ip_ap_for_extend`), it does not extend over IPv6, and an IPv6-only
    // EXTEND2 closes the circuit (C `circuit_open_connection_for_extend`: CONNECTFAILED).
    let tmp_c = TempDir::new("ipv6-extend-c");
    let c_v4 = free_port();
    let mut c = start(
        tmp_c.path(),
        &torrc(
            tmp_c.path(),
            "ForsV4C",
            &format!("ORPort 127.0.0.1:{c_v4}\n"),
            "",
        ),
    );
    c.wait_for("the relay is running", START);
    let mut circ = ClientCirc::create_fast(SocketAddr::from(([127, 0, 0, 1], c_v4)), seed ^ 0xc);
    circ.send_extend(&specs, b_rsa, b_onion);
    let (cmd, body) = circ.next_any();
    assert_eq!(cmd, ChanCmd::DESTROY, "{body:?}");
    assert_eq!(
        fors::cell::chan::DestroyReason::from(body[0]),
        fors::cell::chan::DestroyReason::ConnectFailed,
        "{body:?}"
    );

    a.signal(libc::SIGTERM);
    b.signal(libc::SIGTERM);
    c.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(START), Some(0));
    assert_eq!(b.wait_exit(START), Some(0));
    assert_eq!(c.wait_exit(START), Some(0));
    for f in [&a, &b, &c] {
        assert!(
            !f.log
                .iter()
                .any(|l| l.contains("panicked")
                    || !daemon_common::unexpected_err_lines(l).is_empty()),
            "{:#?}",
            f.log
        );
    }
}

/// Extends `circ` (whose last hop is `hop`) by ntor to the relay with data directory `data`,
/// named by the address specifier `spec`, and adds its layer.
fn extend(circ: &mut ClientCirc, hop: usize, spec: LinkSpec<'_>, data: &Path) {
    let (rsa, ed) = identities(data);
    let onion = ntor_public(data);
    assert_eq!(circ.circ.last_hop(), hop);
    circ.send_extend(
        &[spec, LinkSpec::RsaId(rsa), LinkSpec::Ed25519Id(ed)],
        rsa,
        onion,
    );
    let (from, cmd, sid, reply) = circ.recv();
    assert_eq!((from, cmd, sid), (hop, RelayCmd::EXTENDED2, 0), "{reply:?}");
    circ.circ
        .extended(Extended2::parse(&reply).unwrap().hdata)
        .expect("the new hop's ntor reply checks out");
}

/// `BEGIN [::1]:port` with IPv6_OK to hop `hop` as stream `sid`.
fn begin_ipv6_loopback(circ: &mut ClientCirc, hop: usize, sid: u16, port: u16) {
    circ.send(hop, ChanCmd::RELAY, RelayCmd::BEGIN, sid, |o| {
        Begin {
            target: BeginTarget::Ipv6(Ipv6Addr::LOCALHOST),
            port,
            flags: BeginFlags(BeginFlags::IPV6_OK),
        }
        .encode(o)
    });
}

/// A wrapper for `--fors-bin`: Fors exits (nickname `forsexit*`) get `accept [::1]:*` in
/// front of the torrc's exit policy, and `forsexit1` gets `IPv6Exit 1` (command-line options
/// override the torrc's; a list option given there replaces the torrc's list, so the
/// torrc's rules are repeated after ours). testnet.py checks only the torrc it writes.
fn ipv6_exit_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("fors-ipv6-exits");
    let script = format!(
        "#!/bin/sh\n\
         # Fors with an IPv6 loopback exit rule; forsexit1 also with IPv6Exit 1 (test wrapper).\n\
         torrc=\"\"\n\
         prev=\"\"\n\
         for a in \"$@\"; do\n\
         \x20 if [ \"$prev\" = \"-f\" ]; then torrc=\"$a\"; fi\n\
         \x20 prev=\"$a\"\n\
         done\n\
         nick=$(awk '/^Nickname /{{print $2}}' \"$torrc\")\n\
         rules=$(awk '/^ExitPolicy /{{sub(/^ExitPolicy /, \"\"); printf \",%s\", $0}}' \"$torrc\")\n\
         case \"$nick\" in\n\
         \x20 forsexit1) exec \"{bin}\" \"$@\" --ExitPolicy \"accept [::1]:*$rules\" --IPv6Exit 1 ;;\n\
         \x20 forsexit*) exec \"{bin}\" \"$@\" --ExitPolicy \"accept [::1]:*$rules\" ;;\n\
         \x20 *) exec \"{bin}\" \"$@\" ;;\n\
         esac\n",
        bin = env!("CARGO_BIN_EXE_fors"),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn ipv6_exit_connects_to_an_ipv6_destination_only_with_ipv6exit() {
    const TEST: &str = "ipv6_exit_connects_to_an_ipv6_destination_only_with_ipv6exit";
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        daemon_common::skip_common::skip(TEST, "no IPv6 loopback (::1) here");
        return;
    }
    if let Some(why) = testnet_skip_reason(&[]) {
        daemon_common::skip_common::skip(TEST, &why);
        return;
    }
    let seed = seed(TEST);
    let tmp = TempDir::new("ipv6-exit-net");
    let dir = tmp.path().join("net");
    let _net = TestnetGuard { dir: &dir };
    let echo = start_echo_server("::1");
    // If the exit without IPv6Exit wrongly connected, it would connect here (a port that
    // was free a moment ago, as `free_port`).
    let refused_port = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused_hits_v6 =
        start_counting_listener(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), refused_port));
    let wrapper = ipv6_exit_wrapper(tmp.path());
    let base = free_port_range_base().to_string();
    testnet(
        &dir,
        &[
            "up",
            "--fors",
            "middle",
            "--fors",
            "exit",
            "--fors",
            "exit",
            "--middles",
            "1",
            "--exits",
            "1",
            "--base-port",
            &base,
            "--fors-bin",
            wrapper.to_str().unwrap(),
        ],
    );
    testnet(&dir, &["wait", "--pluggable-only", "--timeout", "240"]);
    // An exit serves streams once its consensus lists the previous hop (RefuseUnknownExits).
    for nick in ["forsexit1", "forsexit2"] {
        let l = wait_for_file_line(
            &dir.join(nick).join("stdout.log"),
            "Fors is listed in the consensus",
            Duration::from_secs(240),
        );
        assert!(l.contains("Exit") || l.contains("Running"), "{nick}: {l}");
    }
    // The exits run with the wrapper's options (it execs Fors, so the recorded pid's command
    // line shows them): both accept [::1], only forsexit1 has IPv6Exit 1. Without this, a
    // refusal from forsexit2 could come from the testnet's policy alone.
    for (nick, v6exit) in [("forsexit1", true), ("forsexit2", false)] {
        let pid = relay_record(&dir, nick)["pid"].as_u64().expect("pid");
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv: Vec<String> = argv
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let policy = argv
            .iter()
            .position(|a| a == "--ExitPolicy")
            .and_then(|i| argv.get(i + 1))
            .unwrap_or_else(|| panic!("{nick}: no --ExitPolicy in {argv:?}"));
        assert!(policy.starts_with("accept [::1]:*,"), "{nick}: {argv:?}");
        assert_eq!(
            argv.windows(2).any(|w| w[0] == "--IPv6Exit" && w[1] == "1"),
            v6exit,
            "{nick}: {argv:?}"
        );
    }
    let middle = relay_record(&dir, "forsmiddle1");
    let middle_addr = SocketAddr::from((
        [127, 0, 0, 1],
        middle["orport"].as_u64().expect("orport") as u16,
    ));
    let data_of =
        |nick: &str| PathBuf::from(relay_record(&dir, nick)["data_dir"].as_str().unwrap());
    let v4_spec = |nick: &str| {
        let port = relay_record(&dir, nick)["orport"].as_u64().unwrap() as u16;
        LinkSpec::Ipv4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            port,
        ))
    };

    // forsexit1, IPv6Exit 1: CONNECTED naming ::1, then an echo round trip.
    let mut circ = ClientCirc::create_fast(middle_addr, seed);
    extend(&mut circ, 0, v4_spec("forsexit1"), &data_of("forsexit1"));
    begin_ipv6_loopback(&mut circ, 1, 1, echo.port());
    let (hop, cmd, sid, data) = circ.recv();
    assert_eq!(
        (hop, cmd, sid),
        (1, RelayCmd::CONNECTED, 1),
        "IPv6Exit 1 exit did not connect to [::1]: {:?} {data:?}",
        End::parse(&data)
    );
    let connected = Connected::parse(&data).unwrap();
    assert_eq!(
        connected.addr,
        Some(Ipv6Addr::LOCALHOST.into()),
        "{connected:?}"
    );
    let msg = b"over IPv6 through a Fors exit";
    circ.send(1, ChanCmd::RELAY, RelayCmd::DATA, 1, |o| {
        o[..msg.len()].copy_from_slice(msg);
        Ok(msg.len())
    });
    let mut back = Vec::new();
    // Bounded: at most one cell per byte sent, each read bounded by REPLY.
    for _ in 0..msg.len() {
        if back.len() >= msg.len() {
            break;
        }
        let (hop, cmd, sid, data) = circ.recv();
        assert_eq!((hop, cmd, sid), (1, RelayCmd::DATA, 1), "{data:?}");
        back.extend_from_slice(&data);
    }
    assert_eq!(back, msg);

    // forsexit2, IPv6Exit 0: END EXITPOLICY with the address and a TTL; nothing connects.
    let mut circ = ClientCirc::create_fast(middle_addr, seed.wrapping_add(1));
    extend(&mut circ, 0, v4_spec("forsexit2"), &data_of("forsexit2"));
    begin_ipv6_loopback(&mut circ, 1, 1, refused_port);
    let (hop, cmd, sid, data) = circ.recv();
    assert_eq!((hop, cmd, sid), (1, RelayCmd::END, 1), "{data:?}");
    let end = End::parse(&data).unwrap();
    assert_eq!(end.reason, EndReason::ExitPolicy, "{end:?}");
    assert_eq!(end.addr, Some(Ipv6Addr::LOCALHOST.into()), "{end:?}");
    assert!(end.ttl.is_some(), "{end:?}");
    // The same exit still exits over IPv4 (the policy's accept 127.0.0.0/8): the refusal is
    // about IPv6, not a broken exit.
    let echo4 = start_echo_server("127.0.0.2");
    circ.send(1, ChanCmd::RELAY, RelayCmd::BEGIN, 2, |o| {
        Begin {
            target: BeginTarget::Ipv4("127.0.0.2".parse().unwrap()),
            port: echo4.port(),
            flags: BeginFlags(BeginFlags::IPV6_OK),
        }
        .encode(o)
    });
    let (hop, cmd, sid, data) = circ.recv();
    assert_eq!((hop, cmd, sid), (1, RelayCmd::CONNECTED, 2), "{data:?}");
    assert_eq!(
        refused_hits_v6.load(Ordering::Relaxed),
        0,
        "the exit without IPv6Exit connected to [::1]"
    );
    for nick in ["forsmiddle1", "forsexit1", "forsexit2"] {
        let log = std::fs::read_to_string(dir.join(nick).join("stdout.log")).unwrap();
        assert!(!log.contains("panicked"), "{nick}:\n{log}");
        assert!(
            daemon_common::unexpected_err_lines(&log).is_empty(),
            "{nick}:\n{log}"
        );
    }
}
