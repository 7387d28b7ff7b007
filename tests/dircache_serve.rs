//! The directory server on a live Fors (issue #10): a standalone relay (two fake
//! authorities, loopback only, so its store stays empty) with `DirCache 1`, a `DirPort` and
//! a `DirPortFrontPage`.
//!
//! * real `curl` gets `GET /` = the front page, as `text/html`, and the new page after the
//!   file changes and Fors gets SIGHUP;
//! * a consensus request answers `404 Not found` while the store is empty, as C tor does
//!   without a consensus (plain and `.z`);
//! * a request line that does not parse gets C tor's `400 Bad request`, an unknown command is
//!   closed without an answer, and the daemon lives on;
//! * a client circuit (CREATE_FAST over a client link) sends BEGIN_DIR: CONNECTED comes back
//!   empty and the tunnelled request gets the directory server's HTTP answer.
//!
//! Skipped without `curl` (fails under `CI=true`, see `tests/skip_common`).

mod daemon_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_common::raw_link::{fixed_cell, LinkRead, RawLink};
use daemon_common::{free_port, standalone_torrc, Fors, TempDir};
use fors::cell::relay::msg::RelayMsg;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

const STEP: Duration = Duration::from_secs(60);
const PAGE: &str = "<html><body>This is a Tor exit relay.</body></html>\n";

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-D", "-"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

fn raw_request(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, STEP).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn next_cell(l: &mut RawLink) -> (u32, ChanCmd, Vec<u8>) {
    let end = Instant::now() + STEP;
    loop {
        match l.read_cell(end.saturating_duration_since(Instant::now())) {
            LinkRead::Cell { cmd, .. } if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
            LinkRead::Cell { circ_id, cmd, body } => return (circ_id.0, cmd, body),
            other => panic!("no cell: {other:?}"),
        }
    }
}

/// BEGIN_DIR on a one-hop circuit, then `request` as DATA; returns the CONNECTED body and
/// everything the stream carried back until END.
fn begin_dir(or_addr: SocketAddr, request: &[u8], rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let mut l = RawLink::open_as_client(or_addr, STEP).expect("client link");
    let id = 0x8000_0001u32;
    let mut circ = ClientCircuit::new(CircId(id));
    let (cmd, body) = circ.create(rng, &Handshake::Fast).unwrap();
    assert!(l.send(&fixed_cell(id, cmd, &body)));
    let (got, cmd, body) = next_cell(&mut l);
    assert_eq!((got, cmd), (id, ChanCmd::CREATED_FAST));
    circ.created(cmd, &body).unwrap();

    let (body, _) = circ.relay_cell(rng, 0, &RelayMsg::BeginDir, 5).unwrap();
    assert!(l.send(&fixed_cell(id, ChanCmd::RELAY, &body)));
    let (_, cmd, body) = next_cell(&mut l);
    assert_eq!(cmd, ChanCmd::RELAY);
    let mut body: [u8; CELL_BODY_LEN] = body.try_into().unwrap();
    let r = circ.open(&mut body).unwrap();
    assert_eq!((r.cmd, r.stream_id), (RelayCmd::CONNECTED, 5), "{r:?}");
    let connected = r.data.to_vec();

    let (body, _) = circ
        .relay_cell(rng, 0, &RelayMsg::Data(request), 5)
        .unwrap();
    assert!(l.send(&fixed_cell(id, ChanCmd::RELAY, &body)));
    let mut answer = Vec::new();
    loop {
        let (_, cmd, body) = next_cell(&mut l);
        assert_eq!(
            cmd,
            ChanCmd::RELAY,
            "answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let mut body: [u8; CELL_BODY_LEN] = body.try_into().unwrap();
        let r = circ.open(&mut body).unwrap();
        match r.cmd {
            RelayCmd::DATA => answer.extend_from_slice(r.data),
            RelayCmd::END => return (connected, answer),
            RelayCmd::SENDME => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn dirport_front_page_404s_bad_requests_and_begin_dir() {
    if !daemon_common::skip_common::have("curl", "--version") {
        daemon_common::skip_common::skip(
            "dirport_front_page_404s_bad_requests_and_begin_dir",
            "curl",
        );
        return;
    }
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = TempDir::new("dircache-serve");
    let dir = tmp.path();
    let page = dir.join("exit-notice.html");
    std::fs::write(&page, PAGE).unwrap();
    let (or_port, m_port, dir_port) = (free_port(), free_port(), free_port());
    let rc = dir.join("torrc");
    let text = standalone_torrc("dirserve", dir, or_port, m_port)
        .raw(&format!(
            "DirCache 1\nDirPort 127.0.0.1:{dir_port}\nDirPortFrontPage {}\n",
            page.display()
        ))
        .render();
    std::fs::write(&rc, text).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    f.wait_for("DirPort listening on", STEP);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let base = format!("http://127.0.0.1:{dir_port}");

    let (head, body) = curl(&[&format!("{base}/")]);
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert_eq!(body, PAGE);

    for url in [
        "/tor/status-vote/current/consensus-microdesc",
        "/tor/status-vote/current/consensus-microdesc.z",
        "/tor/status-vote/current/consensus",
    ] {
        let (head, body) = curl(&[&format!("{base}{url}")]);
        assert!(head.starts_with("HTTP/1.0 404 Not found"), "{url}: {head}");
        assert!(body.is_empty());
    }
    let (head, body) = curl(&[&format!("{base}/tor/robots.txt")]);
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert_eq!(body, "User-agent: *\r\nDisallow: /\r\n");

    let addr = SocketAddr::from(([127, 0, 0, 1], dir_port));
    let out = raw_request(addr, b"GET /tor/\r\n\r\n");
    assert!(out.starts_with(b"HTTP/1.0 400 Bad request\r\n"), "{out:?}");
    assert!(raw_request(addr, b"DELETE /tor/ HTTP/1.0\r\n\r\n").is_empty());
    let mut junk = vec![0u8; 4096];
    rng.fill_bytes(&mut junk);
    let _ = raw_request(addr, &junk);

    // SIGHUP reads the page again and serves the new one.
    const PAGE2: &str = "<html><body>Exit notice, second edition.</body></html>\n";
    std::fs::write(&page, PAGE2).unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("Reload: DirPortFrontPage changed; applied.", STEP);
    let (_, body) = curl(&[&format!("{base}/")]);
    assert_eq!(body, PAGE2);

    // BEGIN_DIR through the ORPort reaches the same server.
    let or_addr = SocketAddr::from(([127, 0, 0, 1], or_port));
    let (connected, answer) = begin_dir(or_addr, b"GET /tor/robots.txt HTTP/1.0\r\n\r\n", &mut rng);
    assert!(
        connected.is_empty(),
        "CONNECTED for BEGIN_DIR is empty: {connected:?}"
    );
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(!answer.contains("X-Your-Address-Is"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nUser-agent: *\r\nDisallow: /\r\n"),
        "{answer}"
    );
    let (_, answer) = begin_dir(
        or_addr,
        b"GET /tor/status-vote/current/consensus-microdesc.z HTTP/1.0\r\n\r\n",
        &mut rng,
    );
    assert!(
        answer.starts_with(b"HTTP/1.0 404 Not found\r\n"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Still alive, and nothing panicked.
    assert!(f.child.try_wait().unwrap().is_none());
    f.drain(Duration::from_secs(1));
    let log = f.log.join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("127.0.0.1:") || !log.contains("DirPort: "),
        "no peer addresses"
    );
}
