//! The state machine against a scripted nameserver, with a fake clock.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::{Ipv4Addr, Ipv6Addr};

const NS0: &str = "127.0.0.1:5300";
const NS1: &str = "127.0.0.2:5301";

fn config(nameservers: &[&str]) -> ResolverConfig {
    let mut c = ResolverConfig::new(nameservers.iter().map(|s| s.parse().unwrap()).collect());
    c.max_inflight = 8;
    c.max_waiters_per_query = 4;
    c.cache_entries = 16;
    c
}

fn resolver(c: ResolverConfig) -> (Resolver<StdRng>, Instant) {
    let t0 = Instant::now();
    (Resolver::new(c, StdRng::seed_from_u64(42), t0), t0)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A datagram the resolver sent, decoded enough to answer it.
#[derive(Clone)]
struct Sent {
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Sent {
    fn qtype(&self) -> u16 {
        let n = self.qname_len();
        u16::from_be_bytes([self.bytes[12 + n], self.bytes[13 + n]])
    }
    fn qname_len(&self) -> usize {
        let mut i = 12;
        while self.bytes[i] != 0 {
            i += 1 + self.bytes[i] as usize;
        }
        i + 1 - 12
    }
    /// A response echoing the question; `records` are (type, ttl, rdata) owned by the qname.
    fn reply(&self, rcode: u8, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let n = self.qname_len();
        let mut m = Vec::new();
        m.extend_from_slice(&self.bytes[0..2]);
        m.extend_from_slice(&(0x8180u16 | rcode as u16).to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&(records.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&self.bytes[12..12 + n + 4]);
        for (t, ttl, rdata) in records {
            m.extend_from_slice(&[0xc0, 0x0c]);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }
    fn a(&self, ttl: u32, addr: [u8; 4]) -> Vec<u8> {
        self.reply(0, &[(1, ttl, &addr)])
    }
}

fn drain_tx<R: RngCore>(r: &mut Resolver<R>) -> Vec<Sent> {
    let mut out = Vec::new();
    for _ in 0..100 {
        match r.poll_transmit() {
            Some((to, bytes)) => out.push(Sent {
                to,
                bytes: bytes.to_vec(),
            }),
            None => return out,
        }
    }
    panic!("poll_transmit never ran dry");
}

fn pending(l: Result<Lookup, Refusal>) -> QueryHandle {
    match l {
        Ok(Lookup::Pending(h)) => h,
        other => panic!("expected pending, got {other:?}"),
    }
}

fn ready(l: Result<Lookup, Refusal>) -> Resolution {
    match l {
        Ok(Lookup::Ready(r)) => r,
        other => panic!("expected ready, got {other:?}"),
    }
}

fn feed(r: &mut Resolver<StdRng>, from: &str, bytes: &[u8], now: Instant) -> Vec<Completion> {
    r.handle_datagram(sa(from), bytes, now).collect()
}

const V4: [u8; 4] = [192, 0, 2, 10];

#[test]
fn literal_and_refused_names() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let res = ready(r.resolve(b"198.51.100.7", Purpose::Connect, FamilyWanted::Both, t0));
    assert_eq!(
        res.ipv4,
        Answer::Found {
            value: Ipv4Addr::new(198, 51, 100, 7),
            ttl: 1800
        }
    );
    assert_eq!(res.ipv6, Answer::NotRequested);
    let e = r
        .resolve(b"bad name", Purpose::Connect, FamilyWanted::Ipv4, t0)
        .unwrap_err();
    assert_eq!(e, Refusal::Name(NameError::BadCharacter));
    assert_eq!(e.resolved_type(), 0xF1);
    let e = r
        .resolve(
            b"7.100.51.198.in-addr.arpa",
            Purpose::Connect,
            FamilyWanted::Ipv4,
            t0,
        )
        .unwrap_err();
    assert_eq!(e, Refusal::Name(NameError::ReverseNotAllowed));
    assert!(drain_tx(&mut r).is_empty());
    let m = r.metrics();
    assert_eq!((m.lookups, m.literals, m.refused_name), (3, 1, 2));
}

#[test]
fn both_families_then_cache_hit() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let h = pending(r.resolve(b"Relay.Fors.Test", Purpose::Connect, FamilyWanted::Both, t0));
    let sent = drain_tx(&mut r);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.to == sa(NS0)));
    let a = sent.iter().find(|s| s.qtype() == 1).unwrap();
    let aaaa = sent.iter().find(|s| s.qtype() == 28).unwrap();
    assert_ne!(a.bytes[0..2], aaaa.bytes[0..2], "ids differ");

    assert!(
        feed(&mut r, NS0, &a.a(600, V4), t0).is_empty(),
        "AAAA still pending"
    );
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10);
    let done = feed(&mut r, NS0, &aaaa.reply(0, &[(28, 120, &v6.octets())]), t0);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].handle, h);
    let res = done[0].resolution;
    assert_eq!(
        res.ipv4,
        Answer::Found {
            value: Ipv4Addr::from(V4),
            ttl: 600
        }
    );
    assert_eq!(
        res.ipv6,
        Answer::Found {
            value: v6,
            ttl: 120
        }
    );
    assert_eq!(r.next_timeout(), None);
    assert_eq!(r.metrics().inflight, 0);

    // Within the TTL: answered from cache, with what is left of it.
    let later = t0 + Duration::from_secs(100);
    let res = ready(r.resolve(
        b"relay.fors.test.",
        Purpose::Connect,
        FamilyWanted::Both,
        later,
    ));
    assert_eq!(
        res.ipv4,
        Answer::Found {
            value: Ipv4Addr::from(V4),
            ttl: 500
        }
    );
    assert_eq!(res.ipv6, Answer::Found { value: v6, ttl: 20 });
    // After the AAAA expired only AAAA is asked again.
    let later = t0 + Duration::from_secs(200);
    let h2 = pending(r.resolve(
        b"relay.fors.test",
        Purpose::Connect,
        FamilyWanted::Both,
        later,
    ));
    let sent = drain_tx(&mut r);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].qtype(), 28);
    let done = feed(
        &mut r,
        NS0,
        &sent[0].reply(0, &[(28, 50, &v6.octets())]),
        later,
    );
    assert_eq!(done[0].handle, h2);
    assert_eq!(
        done[0].resolution.ipv4,
        Answer::Found {
            value: Ipv4Addr::from(V4),
            ttl: 400
        }
    );
    let m = r.metrics();
    assert_eq!((m.cache_hits, m.cache_misses, m.queries_sent), (1, 2, 3));
}

#[test]
fn concurrent_lookups_share_one_query() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let h1 = pending(r.resolve(b"a.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let h2 = pending(r.resolve(b"A.TEST", Purpose::Connect, FamilyWanted::Ipv4, t0));
    // A third wants both: only the AAAA query is added.
    let h3 = pending(r.resolve(b"a.test", Purpose::Connect, FamilyWanted::Both, t0));
    let sent = drain_tx(&mut r);
    assert_eq!(sent.len(), 2);
    let a = sent.iter().find(|s| s.qtype() == 1).unwrap();
    let aaaa = sent.iter().find(|s| s.qtype() == 28).unwrap();
    // The A answer completes the two IPv4-only waiters at once.
    let done = feed(&mut r, NS0, &a.a(60, V4), t0);
    let handles: Vec<_> = done.iter().map(|c| c.handle).collect();
    assert_eq!(handles.len(), 2);
    assert!(handles.contains(&h1) && handles.contains(&h2));
    assert!(done
        .iter()
        .all(|c| c.resolution.ipv6 == Answer::NotRequested));
    // NODATA for AAAA completes the third with the A answer and a permanent AAAA failure.
    let done = feed(&mut r, NS0, &aaaa.reply(0, &[]), t0);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].handle, h3);
    assert!(done[0].resolution.ipv4.found().is_some());
    assert_eq!(
        done[0].resolution.ipv6,
        Answer::Failed(DnsFailure {
            cause: FailureCause::NoData
        })
    );
    assert_eq!(done[0].resolution.failure(), None, "one family found");
    assert_eq!(r.metrics().coalesced, 2);
}

#[test]
fn bounds_refuse_and_count() {
    let mut c = config(&[NS0]);
    c.max_inflight = 2;
    c.max_waiters_per_query = 2;
    let (mut r, t0) = resolver(c);
    pending(r.resolve(b"a.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    pending(r.resolve(b"a.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let e = r
        .resolve(b"a.test", Purpose::Connect, FamilyWanted::Ipv4, t0)
        .unwrap_err();
    assert_eq!(e, Refusal::TooManyWaiters);
    assert_eq!(e.resolved_type(), 0xF0);
    pending(r.resolve(b"b.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let e = r
        .resolve(b"c.test", Purpose::Connect, FamilyWanted::Ipv4, t0)
        .unwrap_err();
    assert_eq!(e, Refusal::TooManyInFlight);
    let m = r.metrics();
    assert_eq!(
        (m.refused_waiters_full, m.refused_inflight_full, m.inflight),
        (1, 1, 2)
    );

    // Once a.test is answered its slot is free again.
    let sent = drain_tx(&mut r);
    let a = sent
        .iter()
        .find(|s| s.bytes[13] == b'a' || s.bytes[13] == b'A')
        .unwrap();
    assert_eq!(feed(&mut r, NS0, &a.a(60, V4), t0).len(), 2);
    pending(r.resolve(b"c.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
}

#[test]
fn retries_rotate_nameservers_then_time_out() {
    let mut c = config(&[NS0, NS1]);
    c.timeout = Duration::from_millis(500);
    c.attempts = 2;
    let (mut r, t0) = resolver(c);
    let h = pending(r.resolve(b"slow.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let mut now = t0;
    let mut destinations = Vec::new();
    for round in 0..4 {
        let sent = drain_tx(&mut r);
        assert_eq!(sent.len(), 1, "round {round}");
        destinations.push(sent[0].to);
        assert_eq!(r.next_timeout(), Some(now + Duration::from_millis(500)));
        // Nothing happens before the deadline.
        assert_eq!(
            r.handle_timeout(now + Duration::from_millis(499)).count(),
            0
        );
        assert!(drain_tx(&mut r).is_empty());
        now += Duration::from_millis(500);
        let done: Vec<_> = r.handle_timeout(now).collect();
        if round < 3 {
            assert!(done.is_empty());
        } else {
            assert_eq!(done.len(), 1);
            assert_eq!(done[0].handle, h);
            let f = done[0].resolution.failure().unwrap();
            assert_eq!(f.cause, FailureCause::Timeout);
            assert_eq!(f.resolved_type(), 0xF0);
        }
    }
    assert_eq!(destinations, [sa(NS0), sa(NS1), sa(NS0), sa(NS1)]);
    assert_eq!(r.next_timeout(), None);
    let m = r.metrics();
    assert_eq!((m.queries_sent, m.retransmits, m.timeouts), (4, 3, 1));
    // Timeouts are not cached.
    pending(r.resolve(b"slow.test", Purpose::Connect, FamilyWanted::Ipv4, now));
}

#[test]
fn late_reply_to_an_earlier_try_is_accepted() {
    let (mut r, t0) = resolver(config(&[NS0, NS1]));
    let h = pending(r.resolve(b"late.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let first = drain_tx(&mut r).remove(0);
    let now = t0 + Duration::from_secs(1);
    assert_eq!(r.handle_timeout(now).count(), 0);
    let second = drain_tx(&mut r).remove(0);
    assert_eq!((first.to, second.to), (sa(NS0), sa(NS1)));
    let done = feed(&mut r, NS0, &first.a(60, V4), now);
    assert_eq!(done[0].handle, h);
    // The duplicate from NS1 now matches nothing.
    assert!(feed(&mut r, NS1, &second.a(60, V4), now).is_empty());
    assert_eq!(r.metrics().ignored_unknown_id, 1);
}

#[test]
fn spoof_checks() {
    let (mut r, t0) = resolver(config(&[NS0, NS1]));
    let h = pending(r.resolve(b"spoof.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    let good = q.a(60, V4);

    // From a nameserver we did not send to, or from elsewhere.
    assert!(feed(&mut r, NS1, &good, t0).is_empty());
    assert!(feed(&mut r, "127.0.0.1:5399", &good, t0).is_empty());
    // Wrong id.
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    assert!(feed(&mut r, NS0, &bad, t0).is_empty());
    // Question changed (another name of the same length).
    let mut bad = good.clone();
    bad[13] = if bad[13] == b'x' { b'y' } else { b'x' };
    assert!(feed(&mut r, NS0, &bad, t0).is_empty());
    // 0x20 is on by default: a lower-cased echo does not match exactly (unless the RNG left
    // every letter lower-case, which this seed does not).
    let mut lowered = good.clone();
    lowered[12..12 + q.qname_len()].make_ascii_lowercase();
    assert_ne!(lowered, good);
    assert!(feed(&mut r, NS0, &lowered, t0).is_empty());
    // Garbage.
    assert!(feed(&mut r, NS0, &[0x12], t0).is_empty());
    assert!(feed(&mut r, NS0, &good[..good.len() - 1], t0).is_empty());

    let m = r.metrics();
    assert_eq!(m.ignored_wrong_source, 2);
    assert_eq!(m.ignored_unknown_id, 1);
    assert_eq!(m.ignored_question_mismatch, 2);
    assert_eq!(m.ignored_malformed, 2);
    assert_eq!(m.responses_accepted, 0);

    // The real answer still gets through; a v4-mapped source address also matches.
    let done = feed(&mut r, "[::ffff:127.0.0.1]:5300", &good, t0);
    assert_eq!(done[0].handle, h);
}

#[test]
fn nxdomain_is_permanent_and_negatively_cached() {
    let mut c = config(&[NS0]);
    c.negative_ttl = 30;
    let (mut r, t0) = resolver(c);
    let h = pending(r.resolve(b"nx.test", Purpose::Resolve, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    let done = feed(&mut r, NS0, &q.reply(3, &[]), t0);
    assert_eq!(done[0].handle, h);
    let f = done[0].resolution.failure().unwrap();
    assert_eq!(f.cause, FailureCause::NxDomain);
    assert_eq!(f.resolved_type(), 0xF1);

    let res = ready(r.resolve(
        b"nx.test",
        Purpose::Connect,
        FamilyWanted::Ipv4,
        t0 + Duration::from_secs(29),
    ));
    assert_eq!(res.failure().unwrap().cause, FailureCause::NxDomain);
    pending(r.resolve(
        b"nx.test",
        Purpose::Connect,
        FamilyWanted::Ipv4,
        t0 + Duration::from_secs(30),
    ));
    assert_eq!(r.metrics().failures_permanent, 1);
    assert_eq!(r.metrics().failed_nxdomain, 1);
    assert_eq!(r.metrics().failed_nodata, 0);
}

#[test]
fn failures_are_counted_by_cause() {
    let (mut r, t0) = resolver(config(&[NS0]));
    // NOERROR without a record of the type: NODATA.
    pending(r.resolve(b"empty.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    assert_eq!(feed(&mut r, NS0, &q.reply(0, &[]), t0).len(), 1);
    // SERVFAIL from the only nameserver: final at once.
    pending(r.resolve(b"sf.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    assert_eq!(feed(&mut r, NS0, &q.reply(2, &[]), t0).len(), 1);
    let m = r.metrics();
    assert_eq!(
        (m.failed_nodata, m.failed_servfail, m.failed_nxdomain),
        (1, 1, 0)
    );
    assert_eq!((m.failures_permanent, m.failures_transient), (1, 1));
    assert_eq!((m.inflight, m.inflight_limit, m.cache_limit), (0, 8, 16));
}

#[test]
fn servfail_tries_the_next_nameserver_then_fails_transiently() {
    let (mut r, t0) = resolver(config(&[NS0, NS1]));
    let h = pending(r.resolve(b"broken.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q0 = drain_tx(&mut r).remove(0);
    assert!(feed(&mut r, NS0, &q0.reply(2, &[]), t0).is_empty());
    let q1 = drain_tx(&mut r).remove(0);
    assert_eq!(q1.to, sa(NS1));
    let done = feed(&mut r, NS1, &q1.reply(5, &[]), t0);
    assert_eq!(done[0].handle, h);
    let f = done[0].resolution.failure().unwrap();
    assert_eq!(f.cause, FailureCause::ServerFailure { rcode: 5 });
    assert!(f.is_transient());
    // Not cached.
    pending(r.resolve(b"broken.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
}

#[test]
fn truncated_answer_is_transient() {
    let (mut r, t0) = resolver(config(&[NS0]));
    pending(r.resolve(b"big.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    let mut m = q.a(60, V4);
    m[2] |= 0x02;
    let done = feed(&mut r, NS0, &m, t0);
    let f = done[0].resolution.failure().unwrap();
    assert_eq!(f.cause, FailureCause::Truncated);
    assert_eq!(f.resolved_type(), 0xF0);
    assert_eq!(r.metrics().truncated, 1);
}

#[test]
fn ttl_is_capped_at_three_hours() {
    let (mut r, t0) = resolver(config(&[NS0]));
    pending(r.resolve(b"long.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let q = drain_tx(&mut r).remove(0);
    let done = feed(&mut r, NS0, &q.a(86_400, V4), t0);
    assert_eq!(done[0].resolution.ipv4.found().unwrap().1, 10_800);
    let hit = t0 + Duration::from_secs(10_799);
    let res = ready(r.resolve(b"long.test", Purpose::Connect, FamilyWanted::Ipv4, hit));
    assert_eq!(res.ipv4.found().unwrap().1, 1);
    let expired = t0 + Duration::from_secs(10_800);
    pending(r.resolve(b"long.test", Purpose::Connect, FamilyWanted::Ipv4, expired));
}

#[test]
fn cancelled_waiters_get_nothing_but_the_answer_is_cached() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let h1 = pending(r.resolve(b"c.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    let h2 = pending(r.resolve(b"c.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    assert!(r.cancel(h1));
    assert!(!r.cancel(h1));
    let q = drain_tx(&mut r).remove(0);
    let done = feed(&mut r, NS0, &q.a(60, V4), t0);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].handle, h2);
    ready(r.resolve(b"c.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    assert_eq!((r.metrics().cancelled, r.metrics().abandoned), (1, 0));
}

#[test]
fn cancelling_the_last_waiter_frees_the_slot_and_drops_the_late_answer() {
    let mut c = config(&[NS0]);
    c.max_inflight = 1;
    let (mut r, t0) = resolver(c);
    let h = pending(r.resolve(b"slow.test", Purpose::Connect, FamilyWanted::Both, t0));
    let sent = drain_tx(&mut r);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        r.resolve(b"other.test", Purpose::Connect, FamilyWanted::Ipv4, t0),
        Err(Refusal::TooManyInFlight)
    );
    assert!(r.cancel(h));
    assert!(!r.cancel(h));
    let m = r.metrics();
    assert_eq!((m.cancelled, m.abandoned, m.inflight), (1, 1, 0));
    assert_eq!(r.next_timeout(), None);
    // The slot is free again at once, not after the timeout.
    pending(r.resolve(b"other.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    assert_eq!(drain_tx(&mut r).len(), 1);
    // Late answers to the abandoned queries: dropped, nothing completes, nothing cached.
    for q in &sent {
        let late = if q.qtype() == 1 {
            q.a(60, V4)
        } else {
            q.reply(0, &[])
        };
        assert!(feed(&mut r, NS0, &late, t0).is_empty());
    }
    assert_eq!(r.metrics().ignored_unknown_id, 2);
    assert_eq!(r.metrics().responses_accepted, 0);
    // No retry of the dropped queries either.
    assert_eq!(r.handle_timeout(t0 + Duration::from_secs(60)).count(), 0);
    assert_eq!(r.metrics().retransmits, 1); // other.test's only
    assert_eq!(drain_tx(&mut r).len(), 1);
    assert_eq!(r.metrics().cache_len, 0);
}

#[test]
fn cancelling_before_the_query_is_sent_sends_nothing() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let h = pending(r.resolve(b"never.test", Purpose::Connect, FamilyWanted::Ipv4, t0));
    assert!(r.cancel(h));
    assert!(drain_tx(&mut r).is_empty());
    assert_eq!(r.metrics().queries_sent, 0);
    assert_eq!(r.metrics().inflight, 0);
}

#[test]
fn ptr_lookup_via_resolve() {
    let (mut r, t0) = resolver(config(&[NS0]));
    let h = pending(r.resolve(
        b"10.2.0.192.in-addr.arpa",
        Purpose::Resolve,
        FamilyWanted::Both,
        t0,
    ));
    let q = drain_tx(&mut r).remove(0);
    assert_eq!(q.qtype(), 12);
    let target = b"\x04host\x04fors\x04test\x00";
    let done = feed(&mut r, NS0, &q.reply(0, &[(12, 300, target)]), t0);
    assert_eq!(done[0].handle, h);
    let (name, ttl) = done[0].resolution.hostname.found().unwrap();
    assert_eq!((name.as_bytes(), ttl), (&b"host.fors.test"[..], 300));
    assert_eq!(done[0].resolution.ipv4, Answer::NotRequested);
}

#[test]
fn no_nameservers_is_a_transient_refusal() {
    let (mut r, t0) = resolver(config(&[]));
    let e = r
        .resolve(b"a.test", Purpose::Connect, FamilyWanted::Ipv4, t0)
        .unwrap_err();
    assert_eq!(e, Refusal::NoNameservers);
    assert!(e.is_transient());
}

#[test]
fn many_names_stay_within_bounds() {
    // Fill, answer, refill repeatedly; the tables must not leak slots or ids.
    let (mut r, t0) = resolver(config(&[NS0]));
    for round in 0..20u32 {
        let mut handles = Vec::new();
        for i in 0..8 {
            let name = format!("n{round}-{i}.test");
            handles.push(pending(r.resolve(
                name.as_bytes(),
                Purpose::Connect,
                FamilyWanted::Ipv4,
                t0,
            )));
        }
        let sent = drain_tx(&mut r);
        assert_eq!(sent.len(), 8);
        let mut done = 0;
        for q in &sent {
            done += feed(&mut r, NS0, &q.a(60, V4), t0).len();
        }
        assert_eq!(done, 8);
        assert_eq!(r.metrics().inflight, 0);
    }
    assert_eq!(r.metrics().cache_len, 16);
    assert!(r.metrics().cache_evictions >= 160 - 16);
}
