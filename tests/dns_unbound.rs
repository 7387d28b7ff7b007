//! The sans-IO resolver against a real unbound on 127.0.0.1, through a real UDP socket.
//! Nothing leaves the machine: unbound refuses every name outside its test zones, and each
//! test checks unbound's own count of upstream recursions is zero.

mod dns_common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dns_common::Unbound;
use fors::exit::dns::{
    clip_dns_ttl, Answer, Completion, FailureCause, FamilyWanted, Lookup, Purpose, QueryHandle,
    Resolution, Resolver, ResolverConfig,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The shard's part, in miniature: one socket, send what the resolver wants sent, feed back
/// what arrives, fire timeouts. Bounded by `limit`.
struct Driver {
    resolver: Resolver<StdRng>,
    socket: UdpSocket,
}

impl Driver {
    fn new(config: ResolverConfig) -> Driver {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let resolver = Resolver::new(config, StdRng::seed_from_u64(0xd45), Instant::now());
        Driver { resolver, socket }
    }

    fn flush(&mut self) -> usize {
        let mut sent = 0;
        while let Some((to, bytes)) = self.resolver.poll_transmit() {
            self.socket.send_to(bytes, to).unwrap();
            sent += 1;
        }
        sent
    }

    /// Runs until every handle in `waiting` has completed.
    fn run(&mut self, waiting: &[QueryHandle], limit: Duration) -> Vec<Completion> {
        let start = Instant::now();
        let mut done: Vec<Completion> = Vec::new();
        let mut buf = [0u8; 2048];
        while done.len() < waiting.len() {
            assert!(
                start.elapsed() < limit,
                "lookups did not finish in {limit:?}"
            );
            self.flush();
            let now = Instant::now();
            let wait = self
                .resolver
                .next_timeout()
                .map_or(Duration::from_millis(50), |t| {
                    t.saturating_duration_since(now)
                })
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                done.extend(
                    self.resolver
                        .handle_datagram(from, &buf[..n], Instant::now()),
                );
            }
            done.extend(self.resolver.handle_timeout(Instant::now()));
        }
        for c in &done {
            assert!(waiting.contains(&c.handle), "unexpected completion {c:?}");
        }
        done
    }

    fn lookup(&mut self, host: &str, purpose: Purpose, family: FamilyWanted) -> Resolution {
        match self
            .resolver
            .resolve(host.as_bytes(), purpose, family, Instant::now())
        {
            Ok(Lookup::Ready(r)) => r,
            Ok(Lookup::Pending(h)) => {
                let done = self.run(&[h], Duration::from_secs(10));
                assert_eq!(done.len(), 1);
                done[0].resolution
            }
            Err(e) => panic!("{host}: refused: {e}"),
        }
    }
}

fn config_for(ub: &Unbound) -> ResolverConfig {
    let mut c = ResolverConfig::new(vec![ub.addr]);
    c.timeout = Duration::from_millis(500);
    c.max_inflight = 16;
    c.max_waiters_per_query = 8;
    c.cache_entries = 64;
    c
}

#[test]
fn answers_from_unbound() {
    let ub = Unbound::start_default();
    let mut d = Driver::new(config_for(&ub));
    assert!(
        d.resolver.config().randomize_case,
        "0x20 on by default: unbound echoes case"
    );

    let r = d.lookup("Relay.FORS.test", Purpose::Connect, FamilyWanted::Both);
    assert_eq!(
        r.ipv4,
        Answer::Found {
            value: Ipv4Addr::LOCALHOST,
            ttl: 600
        }
    );
    assert_eq!(
        r.ipv6,
        Answer::Found {
            value: "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            ttl: 600
        }
    );

    // CNAME chains, two links deep.
    for name in ["alias.fors.test", "alias2.fors.test"] {
        let r = d.lookup(name, Purpose::Connect, FamilyWanted::Ipv4);
        assert_eq!(
            r.ipv4.found().map(|(a, _)| *a),
            Some(Ipv4Addr::LOCALHOST),
            "{name}"
        );
    }

    // One family present, the other NODATA (permanent).
    let r = d.lookup("v6only.fors.test", Purpose::Connect, FamilyWanted::Both);
    assert!(r.ipv6.found().is_some());
    match r.ipv4 {
        Answer::Failed(f) => assert_eq!((f.cause, f.resolved_type()), (FailureCause::NoData, 0xF1)),
        other => panic!("{other:?}"),
    }

    // PTR through RESOLVE.
    let r = d.lookup(
        "10.2.0.192.in-addr.arpa",
        Purpose::Resolve,
        FamilyWanted::Ipv4,
    );
    let (host, _) = r.hostname.found().expect("PTR answer");
    assert_eq!(host.as_bytes(), b"host.fors.test");

    // A day-long TTL is capped at three hours; clients would see the 3600 bucket.
    let r = d.lookup("long.fors.test", Purpose::Connect, FamilyWanted::Ipv4);
    let (_, ttl) = r.ipv4.found().unwrap();
    assert_eq!(ttl, 3 * 3600);
    assert_eq!(clip_dns_ttl(ttl), 3600);
    let r = d.lookup("short.fors.test", Purpose::Connect, FamilyWanted::Ipv4);
    assert_eq!(clip_dns_ttl(r.ipv4.found().unwrap().1), 300);

    // Cached: no datagram for a repeat.
    let sent_before = d.resolver.metrics().queries_sent;
    let r = d.lookup("relay.fors.test", Purpose::Connect, FamilyWanted::Both);
    assert!(r.ipv4.found().is_some() && r.ipv6.found().is_some());
    assert_eq!(d.resolver.metrics().queries_sent, sent_before);

    let m = d.resolver.metrics();
    assert_eq!(
        m.ignored_question_mismatch + m.ignored_malformed + m.ignored_wrong_source,
        0
    );
    assert_eq!(m.retransmits, 0);
    assert_eq!(ub.stop_and_count_recursions(), 0);
}

#[test]
fn errors_from_unbound() {
    let ub = Unbound::start_default();
    let mut d = Driver::new(config_for(&ub));

    // NXDOMAIN: permanent, and negatively cached (SOA MINIMUM 120 s, capped at 60 s).
    let r = d.lookup("missing.fors.test", Purpose::Resolve, FamilyWanted::Ipv4);
    let f = r.failure().unwrap();
    assert_eq!((f.cause, f.resolved_type()), (FailureCause::NxDomain, 0xF1));
    let sent_before = d.resolver.metrics().queries_sent;
    let r = d.lookup("missing.fors.test", Purpose::Connect, FamilyWanted::Ipv4);
    assert_eq!(r.failure().unwrap().cause, FailureCause::NxDomain);
    assert_eq!(d.resolver.metrics().queries_sent, sent_before);

    // A name outside the test zones: REFUSED at once, transient, and not cached.
    let start = Instant::now();
    let r = d.lookup("www.example.com", Purpose::Connect, FamilyWanted::Ipv4);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "refusal must come without retries"
    );
    let f = r.failure().unwrap();
    assert_eq!(f.cause, FailureCause::ServerFailure { rcode: 5 });
    assert_eq!(f.resolved_type(), 0xF0);
    match d.resolver.resolve(
        b"www.example.com",
        Purpose::Connect,
        FamilyWanted::Ipv4,
        Instant::now(),
    ) {
        Ok(Lookup::Pending(h)) => {
            d.run(&[h], Duration::from_secs(5));
        }
        other => panic!("transient failure was cached: {other:?}"),
    }
    assert_eq!(ub.stop_and_count_recursions(), 0);
}

#[test]
fn concurrent_streams_share_queries() {
    let ub = Unbound::start_default();
    let mut d = Driver::new(config_for(&ub));
    let now = Instant::now();
    let mut handles = Vec::new();
    for host in [
        "relay.fors.test",
        "RELAY.fors.test",
        "relay.fors.test.",
        "v4only.fors.test",
    ] {
        match d
            .resolver
            .resolve(host.as_bytes(), Purpose::Connect, FamilyWanted::Ipv4, now)
        {
            Ok(Lookup::Pending(h)) => handles.push(h),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(d.flush(), 2, "one query per distinct name");
    let done = d.run(&handles, Duration::from_secs(10));
    assert_eq!(done.len(), 4);
    for c in &done {
        assert!(c.resolution.ipv4.found().is_some(), "{c:?}");
    }
    assert_eq!(d.resolver.metrics().coalesced, 2);
    assert_eq!(ub.stop_and_count_recursions(), 0);
}

#[test]
fn silent_nameserver_times_out_transiently() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let mut c = ResolverConfig::new(vec![addr]);
    c.timeout = Duration::from_millis(150);
    c.attempts = 3;
    let mut d = Driver::new(c);
    let start = Instant::now();
    let r = d.lookup("relay.fors.test", Purpose::Connect, FamilyWanted::Ipv4);
    let took = start.elapsed();
    let f = r.failure().unwrap();
    assert_eq!((f.cause, f.resolved_type()), (FailureCause::Timeout, 0xF0));
    assert!(
        took >= Duration::from_millis(450),
        "three tries of 150 ms, took {took:?}"
    );
    let m = d.resolver.metrics();
    assert_eq!((m.queries_sent, m.retransmits, m.timeouts), (3, 2, 1));

    // The silent server did receive exactly those three queries, all identical.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while let Ok((n, _)) = silent.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.len(), 3);
    assert!(got.windows(2).all(|w| w[0] == w[1]));
}
