//! Bandwidth accounting and hibernation on a live Fors (tor manual `AccountingMax`,
//! C tor's hibernate.c): a tiny `AccountingMax` (C has no minimum), rule `sum`, daily
//! intervals. A client link pushes PADDING cells (bytes read by the relay) until the soft
//! limit (95%); then, as C tor:
//!
//! * a new CREATE_FAST on the open link is answered DESTROY reason HIBERNATING (4)
//!   (C `command_process_create_cell`);
//! * a new connection is closed at once (C closes its ORPort listener; Fors closes each new
//!   connection, the listener stays bound);
//! * `GETINFO accounting/hibernating` says `soft`, `accounting/bytes` and `bytes-left` add
//!   up, the interval is today's (UTC);
//! * `DataDirectory/state` holds the counts under C's key names.
//!
//! A fake directory authority records the uploads: the descriptor published after the soft
//! limit carries `hibernating 1` (C router.c), the first one does not.
//!
//! More padding reaches the hard limit: the relay closes the link ("hard"). After a restart
//! the relay reads `state`, keeps the counts and is still hard.

mod daemon_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_common::private_net::TorControl;
use daemon_common::raw_link::{fixed_cell, LinkRead, RawLink};
use daemon_common::{free_port, Fors, TempDir};
use fors::accounting::time::{format_iso, parse_iso};
use fors::cell::chan::DestroyReason;
use fors::cell::ChanCmd;
use fors_testkit::torrc::{DirAuthority, Torrc};

const LIMIT: Duration = Duration::from_secs(60);
/// `AccountingMax 256 KB`: soft limit at 95% (C `SOFT_LIM_PCT`).
const MAX: u64 = 256 * 1024;
const SOFT: u64 = MAX * 95 / 100;
const CELL: u64 = 514;

/// A directory authority that stores every POSTed descriptor and answers 200 (404 to GETs).
fn fake_authority() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let posts = Arc::new(Mutex::new(Vec::new()));
    let store = posts.clone();
    std::thread::spawn(move || {
        for _ in 0..10_000 {
            let Ok((s, _)) = l.accept() else { return };
            serve(s, &store);
        }
    });
    (port, posts)
}

fn serve(mut s: TcpStream, store: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Headers, then Content-Length bytes of body (bounded: 1 MiB).
    while req.len() < 1 << 20 {
        let text = String::from_utf8_lossy(&req).to_string();
        if let Some(h) = text.find("\r\n\r\n") {
            let len = text[..h]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
            if req.len() >= h + 4 + len {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req).to_string();
    let reply: &[u8] = if text.starts_with("POST") {
        store.lock().unwrap().push(text);
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    } else {
        b"HTTP/1.0 404 Not found\r\nContent-Length: 0\r\n\r\n"
    };
    let _ = s.write_all(reply);
}

/// Waits for an upload for which `pred` holds.
fn wait_upload(posts: &Mutex<Vec<String>>, what: &str, pred: impl Fn(&str) -> bool) {
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if posts.lock().unwrap().iter().any(|p| pred(p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no upload {what}; got {:?}", posts.lock().unwrap());
}

fn torrc(dir: &Path, or_port: u16, ctl_port: u16, auth: Option<u16>) -> String {
    let t = Torrc::test_relay("ForsAcct", dir)
        .or_port(or_port)
        .log("info")
        .num_cpus(1);
    let t = match auth {
        None => t.unset("TestingTorNetwork"),
        Some(p) => t
            .assume_reachable(true)
            .publish_server_descriptor(true)
            .dir_authority(&DirAuthority::fake_at(
                0,
                SocketAddr::from(([127, 0, 0, 1], p)),
                p,
            )),
    };
    t.control_port(ctl_port)
        .cookie_authentication(true)
        .set("AccountingMax", "256 KB")
        .set("AccountingRule", "sum")
        .set("AccountingStart", "day 00:00")
        .render()
}

fn getinfo(c: &mut TorControl, key: &str) -> String {
    let r = c
        .command(&format!("GETINFO {key}"))
        .unwrap_or_else(|e| panic!("GETINFO {key}: {e:?}"));
    r[0].strip_prefix(&format!("{key}="))
        .unwrap_or_else(|| panic!("GETINFO {key}: {r:?}"))
        .to_string()
}

fn pair(s: &str) -> (u64, u64) {
    let mut it = s.split(' ').map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The next non-padding cell.
fn read_cell(link: &mut RawLink) -> Result<(u32, ChanCmd, Vec<u8>), String> {
    let end = Instant::now() + LIMIT;
    loop {
        match link.read_cell(end.saturating_duration_since(Instant::now())) {
            LinkRead::Cell { cmd, .. } if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
            LinkRead::Cell { circ_id, cmd, body } => return Ok((circ_id.0, cmd, body)),
            LinkRead::Closed(how) => return Err(format!("closed: {how}")),
            LinkRead::TimedOut => return Err("no cell in time".into()),
        }
    }
}

fn create_fast(link: &mut RawLink, circ: u32) -> (ChanCmd, u8) {
    assert!(link.send(&fixed_cell(circ, ChanCmd::CREATE_FAST, &[7u8; 20])));
    let (id, cmd, body) = read_cell(link).expect("an answer to CREATE_FAST");
    assert_eq!(id, circ);
    (cmd, body[0])
}

/// Sends about `bytes` of PADDING cells.
fn pad(link: &mut RawLink, bytes: u64) -> bool {
    let n = (bytes / CELL).max(1) as usize;
    let batch: Vec<u8> = (0..n)
        .flat_map(|_| fixed_cell(0, ChanCmd::PADDING, &[]))
        .collect();
    link.send(&batch)
}

/// Pads until `GETINFO accounting/hibernating` leaves `from`, in steps that cannot jump
/// past the next limit (the relay samples its counters once a second).
fn pad_until_not(c: &mut TorControl, link: &mut RawLink, from: &str, target: u64) -> String {
    for _ in 0..300 {
        let h = getinfo(c, "accounting/hibernating");
        if h != from {
            return h;
        }
        let (r, w) = pair(&getinfo(c, "accounting/bytes"));
        let left = target.saturating_sub(r + w);
        let step = if left > 8 * 1024 {
            left - 6 * 1024
        } else {
            1024
        };
        if !pad(link, step) {
            return getinfo(c, "accounting/hibernating");
        }
        std::thread::sleep(Duration::from_millis(1300));
    }
    panic!("still {from} after 300 rounds");
}

/// The accounting values in `state` by key.
fn state_value(data: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(data.join("state")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

#[test]
fn soft_then_hard_hibernation_and_state_across_restart() {
    let tmp = TempDir::new("acct");
    let (or_port, ctl_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let (auth, posts) = fake_authority();
    std::fs::write(&rc, torrc(tmp.path(), or_port, ctl_port, Some(auth))).unwrap();
    let data = tmp.path().join("data");
    let relay = SocketAddr::from(([127, 0, 0, 1], or_port));

    // Intervals are in local time, as C: a UTC machine for this test.
    let mut f = Fors::start_with_env(&["-f", rc.to_str().unwrap()], &[("TZ", "UTC")]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    f.wait_for("Configured hibernation.", LIMIT);
    wait_upload(&posts, "while awake", |p| {
        p.contains("\nrouter ForsAcct ") && !p.contains("\nhibernating 1\n")
    });
    let mut c = TorControl::connect(ctl_port);
    c.command("SETEVENTS STATUS_SERVER").unwrap();
    assert_eq!(getinfo(&mut c, "accounting/enabled"), "1");
    assert_eq!(getinfo(&mut c, "accounting/hibernating"), "awake");
    // Daily interval from 00:00 UTC; no estimate yet, so awake from the interval start.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = now - now % 86_400;
    let start = getinfo(&mut c, "accounting/interval-start");
    if start != format_iso(day) {
        // The test straddled midnight UTC.
        assert_eq!(start, format_iso(day + 86_400));
    }
    assert_eq!(getinfo(&mut c, "accounting/interval-wake"), start);
    let conf = c
        .command("GETCONF AccountingMax AccountingRule AccountingStart")
        .unwrap();
    assert_eq!(
        conf[..3],
        [
            "AccountingMax=262144",
            "AccountingRule=sum",
            "AccountingStart=day 00:00"
        ]
    );

    // A client link with one circuit, then padding up to the soft limit.
    let mut link = RawLink::open_as_client(relay, LIMIT).expect("client link");
    assert_eq!(create_fast(&mut link, 0x8000_0001).0, ChanCmd::CREATED_FAST);
    let h = pad_until_not(&mut c, &mut link, "awake", SOFT);
    assert_eq!(h, "soft", "the soft limit comes first");
    f.wait_for("Bandwidth soft limit reached", LIMIT);
    // ...with no observed bandwidth, as C ("bandwidth RATE BURST 0").
    wait_upload(&posts, "with hibernating 1", |p| {
        p.contains("\nhibernating 1\n")
            && p.lines()
                .any(|l| l.starts_with("bandwidth ") && l.ends_with(" 0"))
    });
    wait_event(
        &mut c,
        "650 STATUS_SERVER NOTICE HIBERNATION_STATUS STATUS=SOFT",
    );
    let (r, w) = pair(&getinfo(&mut c, "accounting/bytes"));
    assert!(r + w >= SOFT && r + w < MAX, "read {r} written {w}");
    let left = MAX - (r + w);
    assert_eq!(
        pair(&getinfo(&mut c, "accounting/bytes-left")),
        (left, left),
        "sum: both numbers are what is left of the sum"
    );

    // No new circuits: DESTROY HIBERNATING on the open link.
    let (cmd, reason) = create_fast(&mut link, 0x8000_0002);
    assert_eq!(cmd, ChanCmd::DESTROY);
    assert_eq!(DestroyReason::from(reason), DestroyReason::Hibernating);
    // No new connections.
    match RawLink::open_as_client(relay, Duration::from_secs(10)) {
        Ok(_) => panic!("a new link was served while hibernating"),
        Err(e) => println!("new link while soft: {e}"),
    }

    // The state file was written on entering soft hibernation, under C's keys.
    let read: u64 = state_value(&data, "AccountingBytesReadInInterval")
        .expect("state has AccountingBytesReadInInterval")
        .parse()
        .unwrap();
    let written: u64 = state_value(&data, "AccountingBytesWrittenInInterval")
        .unwrap()
        .parse()
        .unwrap();
    assert!(read + written >= SOFT, "state: {read} + {written}");
    assert_eq!(read % 1024, 0, "rounded up to 1 KB as C does");
    assert_eq!(
        state_value(&data, "AccountingIntervalStart"),
        Some(start.clone())
    );
    assert!(state_value(&data, "AccountingSoftLimitHitAt").is_some());

    // On to the hard limit: the relay closes the link.
    let h = pad_until_not(&mut c, &mut link, "soft", MAX);
    assert_eq!(h, "hard");
    f.wait_for("Going dormant", LIMIT);
    wait_event(
        &mut c,
        "650 STATUS_SERVER NOTICE HIBERNATION_STATUS STATUS=HARD",
    );
    match link.wait_closed(LIMIT) {
        Ok(closed) => println!("link closed after {:?}: {}", closed.after, closed.how),
        Err(cells) => panic!("link still open in hard hibernation: {cells:?}"),
    }
    let (r, w) = pair(&getinfo(&mut c, "accounting/bytes"));
    assert!(r + w >= MAX);
    assert_eq!(pair(&getinfo(&mut c, "accounting/bytes-left")), (0, 0));
    drop(c);

    // Restart: the counts come back from `state`, and with them the hard hibernation.
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(LIMIT), Some(0));
    let saved_read: u64 = state_value(&data, "AccountingBytesReadInInterval")
        .unwrap()
        .parse()
        .unwrap();
    assert!(saved_read >= r, "saved at shutdown: {saved_read} < {r}");
    let mut f = Fors::start_with_env(&["-f", rc.to_str().unwrap()], &[("TZ", "UTC")]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let mut c = TorControl::connect(ctl_port);
    let (r2, w2) = pair(&getinfo(&mut c, "accounting/bytes"));
    assert!(
        r2 >= saved_read && r2 + w2 >= MAX,
        "after restart: {r2} {w2}"
    );
    assert_eq!(getinfo(&mut c, "accounting/hibernating"), "hard");
    assert_eq!(getinfo(&mut c, "accounting/interval-start"), start);
    assert!(RawLink::open_as_client(relay, Duration::from_secs(10)).is_err());
}

#[test]
fn a_corrupt_state_file_stops_start_up_naming_the_line() {
    let tmp = TempDir::new("acct-bad");
    let (or_port, ctl_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    std::fs::write(&rc, torrc(tmp.path(), or_port, ctl_port, None)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let bad =
        "# Tor state file\nAccountingBytesReadInInterval 1024\nAccountingIntervalStart soon\n";
    std::fs::write(data.join("state"), bad).unwrap();
    let mut f = Fors::start(&["-f", rc.to_str().unwrap()]);
    let line = f.wait_for("AccountingIntervalStart", LIMIT);
    assert!(line.contains("state:3:"), "{line}");
    assert_ne!(f.wait_exit(LIMIT), Some(0));
    // Never silently replaced.
    assert_eq!(std::fs::read_to_string(data.join("state")).unwrap(), bad);
}

/// Waits for the controller event `line` (C `on_hibernate_state_change`).
fn wait_event(c: &mut TorControl, line: &str) {
    let end = Instant::now() + LIMIT;
    while !c.events.iter().any(|e| e == line) {
        assert!(
            Instant::now() < end,
            "no event {line:?}; got {:?}",
            c.events
        );
        // Events arrive with the replies to other commands.
        c.command("GETINFO version").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `GETINFO key` until it says `want`.
fn wait_getinfo(c: &mut TorControl, key: &str, want: &str) {
    let end = Instant::now() + LIMIT;
    loop {
        let v = getinfo(c, key);
        if v == want {
            return;
        }
        assert!(Instant::now() < end, "GETINFO {key} is {v}, want {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sighup_turns_accounting_on_and_off_and_refuses_a_corrupt_state_file() {
    let tmp = TempDir::new("acct-hup");
    let (or_port, ctl_port) = (free_port(), free_port());
    let rc = tmp.path().join("torrc");
    let base = torrc(tmp.path(), or_port, ctl_port, None);
    let off = base.replace("AccountingMax 256 KB\n", "");
    std::fs::write(&rc, &off).unwrap();
    let data = tmp.path().join("data");
    // A zone three hours east of UTC (POSIX TZ): the daily interval starts at local midnight.
    let mut f = Fors::start_with_env(&["-f", rc.to_str().unwrap()], &[("TZ", "FRS-3")]);
    f.wait_for("the relay is running", Duration::from_secs(120));
    let mut c = TorControl::connect(ctl_port);
    assert_eq!(getinfo(&mut c, "accounting/enabled"), "0");
    assert!(!data.join("state").exists());

    // On at SIGHUP (C options_act_relay_accounting).
    std::fs::write(&rc, &base).unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("Reload: AccountingMax changed; applied.", LIMIT);
    wait_getinfo(&mut c, "accounting/enabled", "1");
    assert_eq!(getinfo(&mut c, "accounting/hibernating"), "awake");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let local = now + 3 * 3600;
    let midnight = local - local % 86_400 - 3 * 3600;
    let start = getinfo(&mut c, "accounting/interval-start");
    assert!(
        start == format_iso(midnight) || start == format_iso(midnight + 86_400),
        "interval start {start}, local midnight {}",
        format_iso(midnight)
    );
    assert_eq!(
        getinfo(&mut c, "accounting/interval-end"),
        format_iso(parse_iso(&start).unwrap() + 86_400)
    );
    wait_for_state(&data);

    // Off again: the counts are saved, GETINFO says off.
    std::fs::write(&rc, &off).unwrap();
    f.signal(libc::SIGHUP);
    f.wait_for("accounting and hibernation are off", LIMIT);
    wait_getinfo(&mut c, "accounting/enabled", "0");

    // A state file that cannot be read refuses the reload that would need it.
    let bad = "AccountingBytesReadInInterval many\n";
    std::fs::write(data.join("state"), bad).unwrap();
    std::fs::write(&rc, &base).unwrap();
    f.signal(libc::SIGHUP);
    let line = f.wait_for("Reloading the configuration failed", LIMIT);
    assert!(
        line.contains("state:1:") && line.contains("AccountingBytesReadInInterval"),
        "{line}"
    );
    assert_eq!(getinfo(&mut c, "accounting/enabled"), "0");
    assert_eq!(std::fs::read_to_string(data.join("state")).unwrap(), bad);
}

fn wait_for_state(data: &Path) {
    let end = Instant::now() + LIMIT;
    while state_value(data, "AccountingIntervalStart").is_none() {
        assert!(Instant::now() < end, "no state file written");
        std::thread::sleep(Duration::from_millis(200));
    }
}
