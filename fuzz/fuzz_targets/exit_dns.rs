//! Exit DNS response parser and resolver: arbitrary datagrams must never panic, loop or read
//! out of bounds, and must not complete a lookup unless they echo our query.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use fors::exit::dns::wire::{build_query, parse_response, Expected, QueryBuf, QueryType};
use fors::exit::dns::{FamilyWanted, Lookup, Purpose, Resolver, ResolverConfig};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Makes `data` look enough like an answer to `query` for the parser to go deep: our id and,
/// when asked, our question section right after the header.
fn shape(data: &[u8], query: &[u8], qname_len: usize, with_question: bool) -> Vec<u8> {
    let mut msg = data.to_vec();
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&query[..2]);
    }
    if with_question && msg.len() >= 12 {
        msg[2] |= 0x80; // QR
        msg[2] &= !0x78; // opcode 0
        msg[4..6].copy_from_slice(&[0, 1]);
        let q = &query[12..12 + qname_len + 4];
        msg.splice(12..12, q.iter().copied());
    }
    msg
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let qtype = match ctl & 3 {
        0 => QueryType::A,
        1 => QueryType::Aaaa,
        _ => QueryType::Ptr,
    };
    let name: &[u8] = if qtype == QueryType::Ptr {
        b"10.2.0.192.in-addr.arpa"
    } else {
        b"www.Fors.test"
    };
    let mut rng = StdRng::seed_from_u64(u64::from(ctl));
    let mut q = QueryBuf::default();
    build_query(
        &mut q,
        0xbeef,
        name,
        qtype,
        Some(1232),
        ctl & 8 != 0,
        &mut rng,
    )
    .unwrap();
    let msg = shape(rest, q.as_bytes(), q.qname_wire().len(), ctl & 4 != 0);
    for exact in [false, true] {
        let _ = parse_response(&msg, &Expected::for_query(&q, qtype, exact));
    }

    // The same datagram through the resolver, from the right and a wrong source.
    let ns: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let now = Instant::now();
    let mut config = ResolverConfig::new(vec![ns]);
    config.max_inflight = 2;
    config.cache_entries = 2;
    config.randomize_case = ctl & 8 != 0;
    let mut r = Resolver::new(config, StdRng::seed_from_u64(1), now);
    let (purpose, host): (Purpose, &[u8]) = if qtype == QueryType::Ptr {
        (Purpose::Resolve, name)
    } else {
        (Purpose::Connect, name)
    };
    let family = if qtype == QueryType::Aaaa {
        FamilyWanted::Ipv6
    } else {
        FamilyWanted::Ipv4
    };
    let Ok(Lookup::Pending(_)) = r.resolve(host, purpose, family, now) else {
        panic!("fresh resolver must send a query");
    };
    let (to, sent) = r.poll_transmit().expect("query queued");
    assert_eq!(to, ns);
    let sent = sent.to_vec();
    let qlen = sent[12..].iter().position(|&b| b == 0).map_or(0, |p| p + 1);
    let msg = shape(rest, &sent, qlen, ctl & 4 != 0);
    let wrong: SocketAddr = "127.0.0.2:53".parse().unwrap();
    assert_eq!(r.handle_datagram(wrong, &msg, now).count(), 0);
    let done = r.handle_datagram(ns, &msg, now).count();
    assert!(done <= 1);
    let _ = r.poll_transmit();
    let _ = r
        .handle_timeout(now + std::time::Duration::from_secs(10))
        .count();
});
