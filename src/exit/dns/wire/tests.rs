//! Parser edge cases, on hand-built messages.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(1)
}

fn query(name: &str, qtype: QueryType, case: bool) -> QueryBuf {
    let mut q = QueryBuf::default();
    build_query(
        &mut q,
        0x1234,
        name.as_bytes(),
        qtype,
        Some(1232),
        case,
        &mut rng(),
    )
    .unwrap();
    q
}

/// A response builder: header, then the question copied from `q`, then raw records.
struct Msg {
    bytes: Vec<u8>,
}

impl Msg {
    fn answer_to(q: &QueryBuf, rcode: u8, an: u16, ns: u16) -> Msg {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&q.id().to_be_bytes());
        bytes.extend_from_slice(&(0x8180u16 | rcode as u16).to_be_bytes()); // QR RD RA
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&an.to_be_bytes());
        bytes.extend_from_slice(&ns.to_be_bytes());
        bytes.extend_from_slice(&0u16.to_be_bytes());
        let qlen = q.qname_wire().len() + 4;
        bytes.extend_from_slice(&q.as_bytes()[HEADER_LEN..HEADER_LEN + qlen]);
        Msg { bytes }
    }
    /// Record with owner given as raw wire bytes (may be a pointer).
    fn rr(mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Msg {
        self.bytes.extend_from_slice(owner);
        self.bytes.extend_from_slice(&rtype.to_be_bytes());
        self.bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        self.bytes
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(rdata);
        self
    }
}

/// Pointer to the question name (offset 12).
const QPTR: [u8; 2] = [0xc0, 0x0c];

fn wire(name: &str) -> Vec<u8> {
    let mut out = [0u8; 256];
    let n = encode_name(name.as_bytes(), &mut out).unwrap();
    out[..n].to_vec()
}

fn parse(msg: &[u8], q: &QueryBuf, qtype: QueryType) -> Result<Outcome, ParseError> {
    parse_response(msg, &Expected::for_query(q, qtype, false))
}

#[test]
fn query_layout() {
    let q = query("www.example.com", QueryType::Aaaa, false);
    let b = q.as_bytes();
    assert_eq!(&b[..12], &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&b[12..29], b"\x03www\x07example\x03com\x00");
    assert_eq!(&b[29..33], &[0, 28, 0, 1]);
    // OPT: root, type 41, payload 1232, ext-rcode/version/flags 0, rdlength 0.
    assert_eq!(&b[33..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut plain = QueryBuf::default();
    build_query(&mut plain, 1, b"a", QueryType::A, None, false, &mut rng()).unwrap();
    assert_eq!(plain.as_bytes().len(), 12 + 3 + 4);
}

#[test]
fn query_rejects_bad_names() {
    let mut q = QueryBuf::default();
    let r = &mut rng();
    assert_eq!(
        build_query(&mut q, 1, b"a..b", QueryType::A, None, false, r),
        Err(BuildError::BadLabel)
    );
    let long = ["a".repeat(63).as_str(); 4].join(".");
    assert_eq!(
        build_query(&mut q, 1, long.as_bytes(), QueryType::A, None, false, r),
        Err(BuildError::NameTooLong)
    );
}

#[test]
fn randomized_case_keeps_letters_and_needs_exact_echo() {
    let name = "abcdefghijklmnopqrstuvwxyz.example.org";
    let q = query(name, QueryType::A, true);
    let sent = q.qname_wire();
    assert!(sent.eq_ignore_ascii_case(&wire(name)));
    assert_ne!(
        sent,
        wire(name).as_slice(),
        "26+ letters all lower-case: RNG not used"
    );

    let ok = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_A, 60, &[192, 0, 2, 1]);
    let exact = Expected::for_query(&q, QueryType::A, true);
    assert!(matches!(
        parse_response(&ok.bytes, &exact),
        Ok(Outcome::Address { .. })
    ));

    // A resolver that lower-cases the echo fails the 0x20 check, but passes without it.
    let mut lowered = ok.bytes.clone();
    lowered[12..12 + sent.len()].make_ascii_lowercase();
    assert_eq!(
        parse_response(&lowered, &exact),
        Err(ParseError::QuestionMismatch)
    );
    assert!(parse(&lowered, &q, QueryType::A).is_ok());
}

#[test]
fn a_answer_with_compressed_owner() {
    let q = query("relay.fors.test", QueryType::A, false);
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_A, 600, &[127, 0, 0, 1]);
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::Address {
            addr: "127.0.0.1".parse().unwrap(),
            ttl: 600
        })
    );
}

#[test]
fn aaaa_answer() {
    let q = query("v6.fors.test", QueryType::Aaaa, false);
    let addr: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&wire("v6.fors.test"), TYPE_AAAA, 30, &addr.octets());
    assert_eq!(
        parse(&m.bytes, &q, QueryType::Aaaa),
        Ok(Outcome::Address {
            addr: IpAddr::V6(addr),
            ttl: 30
        })
    );
}

#[test]
fn cname_chain_takes_the_smallest_ttl() {
    let q = query("www.fors.test", QueryType::A, false);
    // www -> mid -> end, records out of order, chain TTLs 500, 40; A TTL 900.
    let mid = wire("mid.fors.test");
    let end = wire("end.fors.test");
    let m = Msg::answer_to(&q, 0, 4, 0)
        .rr(&end, TYPE_A, 900, &[192, 0, 2, 9])
        .rr(&wire("other.test"), TYPE_A, 1, &[1, 1, 1, 1])
        .rr(&mid, TYPE_CNAME, 40, &end)
        .rr(&QPTR, TYPE_CNAME, 500, &mid);
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::Address {
            addr: "192.0.2.9".parse().unwrap(),
            ttl: 40
        })
    );
}

#[test]
fn cname_loop_and_dangling_cname_are_nodata() {
    let q = query("a.test", QueryType::A, false);
    let b = wire("b.test");
    let m = Msg::answer_to(&q, 0, 2, 0)
        .rr(&QPTR, TYPE_CNAME, 60, &b)
        .rr(&b, TYPE_CNAME, 60, &wire("a.test"));
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::NoData { negative_ttl: None })
    );
    let dangling = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_CNAME, 60, &b);
    assert_eq!(
        parse(&dangling.bytes, &q, QueryType::A),
        Ok(Outcome::NoData { negative_ttl: None })
    );
}

#[test]
fn answer_for_another_name_is_not_taken() {
    let q = query("a.test", QueryType::A, false);
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&wire("b.test"), TYPE_A, 60, &[1, 2, 3, 4]);
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::NoData { negative_ttl: None })
    );
}

fn soa(ttl_min: u32) -> Vec<u8> {
    let mut r = wire("ns.test");
    r.extend_from_slice(&wire("host.test"));
    for v in [1u32, 7200, 3600, 1_209_600, ttl_min] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_negative_ttl() {
    let q = query("nx.test", QueryType::A, false);
    let m = Msg::answer_to(&q, RCODE_NXDOMAIN, 0, 1).rr(&wire("test"), TYPE_SOA, 900, &soa(120));
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::NxDomain {
            negative_ttl: Some(120)
        })
    );
    let m = Msg::answer_to(&q, RCODE_NOERROR, 0, 1).rr(&wire("test"), TYPE_SOA, 50, &soa(120));
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::NoData {
            negative_ttl: Some(50)
        })
    );
    let bare = Msg::answer_to(&q, RCODE_NXDOMAIN, 0, 0);
    assert_eq!(
        parse(&bare.bytes, &q, QueryType::A),
        Ok(Outcome::NxDomain { negative_ttl: None })
    );
}

#[test]
fn server_failures_and_truncation() {
    let q = query("x.test", QueryType::A, false);
    for rcode in [
        RCODE_SERVFAIL,
        RCODE_REFUSED,
        RCODE_NOTIMP,
        RCODE_FORMERR,
        9,
    ] {
        let m = Msg::answer_to(&q, rcode, 0, 0);
        assert_eq!(
            parse(&m.bytes, &q, QueryType::A),
            Ok(Outcome::ServerFailure { rcode })
        );
    }
    let mut m = Msg::answer_to(&q, 0, 1, 0)
        .rr(&QPTR, TYPE_A, 1, &[1, 2, 3, 4])
        .bytes;
    m[2] |= 0x02; // TC
                  // Truncated wins even though an answer is present, and even if the tail is cut off.
    assert_eq!(parse(&m, &q, QueryType::A), Ok(Outcome::Truncated));
    let cut = &m[..m.len() - 3];
    assert_eq!(parse(cut, &q, QueryType::A), Ok(Outcome::Truncated));
}

#[test]
fn ptr_answer() {
    let q = query("4.3.2.192.in-addr.arpa", QueryType::Ptr, false);
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_PTR, 3000, &wire("Host.Fors.test"));
    match parse(&m.bytes, &q, QueryType::Ptr) {
        Ok(Outcome::Hostname { name, ttl }) => {
            assert_eq!(name.as_bytes(), b"Host.Fors.test");
            assert_eq!(ttl, 3000);
        }
        other => panic!("{other:?}"),
    }
    // A PTR target with a space is skipped; nothing else → NODATA.
    let odd = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_PTR, 3000, b"\x03a b\x00");
    assert_eq!(
        parse(&odd.bytes, &q, QueryType::Ptr),
        Ok(Outcome::NoData { negative_ttl: None })
    );
}

#[test]
fn rejects_wrong_id_question_and_flags() {
    let q = query("a.test", QueryType::A, false);
    let good = Msg::answer_to(&q, 0, 1, 0)
        .rr(&QPTR, TYPE_A, 1, &[1, 2, 3, 4])
        .bytes;
    assert!(parse(&good, &q, QueryType::A).is_ok());

    let mut m = good.clone();
    m[1] ^= 1;
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::IdMismatch));

    let mut m = good.clone();
    m[2] &= 0x7f; // QR clear: a query, not a response
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::NotResponse));

    // Same name, different type.
    assert_eq!(
        parse(&good, &q, QueryType::Aaaa),
        Err(ParseError::QuestionMismatch)
    );
    // Different name of the same length.
    let mut m = good.clone();
    m[13] = b'b';
    assert_eq!(
        parse(&m, &q, QueryType::A),
        Err(ParseError::QuestionMismatch)
    );
    // Case differs: fine without 0x20.
    let mut m = good.clone();
    m[13] = b'A';
    assert!(parse(&m, &q, QueryType::A).is_ok());
    // QDCOUNT 0.
    let mut m = good.clone();
    m[5] = 0;
    assert_eq!(
        parse(&m, &q, QueryType::A),
        Err(ParseError::QuestionMismatch)
    );
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let q = query("www.fors.test", QueryType::A, false);
    let m = Msg::answer_to(&q, 0, 2, 1)
        .rr(&QPTR, TYPE_CNAME, 60, &wire("x.test"))
        .rr(&wire("x.test"), TYPE_A, 60, &[1, 2, 3, 4])
        .rr(&wire("test"), TYPE_SOA, 60, &soa(5))
        .bytes;
    assert!(parse(&m, &q, QueryType::A).is_ok());
    for cut in 0..m.len() {
        assert!(parse(&m[..cut], &q, QueryType::A).is_err(), "cut at {cut}");
    }
}

#[test]
fn compression_pointer_loops_and_forward_pointers() {
    let q = query("a.test", QueryType::A, false);
    let base = Msg::answer_to(&q, 0, 1, 0).bytes;
    let here = base.len();

    // Owner is a pointer to itself.
    let mut m = base.clone();
    m.extend_from_slice(&[0xc0 | (here >> 8) as u8, here as u8]);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::BadPointer));

    // Pointer forwards.
    let mut m = base.clone();
    m.extend_from_slice(&[0xc0, (here + 2) as u8, 0]);
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::BadPointer));

    // A label then a pointer back to that label: each pointer is backwards, yet it loops; the
    // jump counter or the length cap (whichever comes first) stops it.
    let mut m = base.clone();
    m.extend_from_slice(&[1, b'x', 0xc0 | (here >> 8) as u8, here as u8]);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::PointerLoop));
    let mut m = base.clone();
    m.push(20);
    m.extend_from_slice(&[b'x'; 20]);
    m.extend_from_slice(&[0xc0 | (here >> 8) as u8, here as u8]);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::NameTooLong));

    // Pointer into the header (offset 0) is backwards and decodes the header as labels: that
    // owner is not our name, so at most NODATA, and no panic.
    let mut m = base.clone();
    m.extend_from_slice(&[0xc0, 0x00]);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert!(!matches!(
        parse(&m, &q, QueryType::A),
        Ok(Outcome::Address { .. })
    ));

    // Reserved label types 0x40 / 0x80.
    let mut m = base.clone();
    m.extend_from_slice(&[0x40, 0]);
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::BadLabelType));
}

#[test]
fn pointer_chain_is_bounded() {
    // 100 pointers each pointing to the previous one: backwards, no labels, so only the jump
    // counter stops it.
    let q = query("a.test", QueryType::A, false);
    let mut m = Msg::answer_to(&q, 0, 1, 0).bytes;
    let start = m.len();
    m.extend_from_slice(&[0]); // a root name at `start`
    for i in 0..100 {
        let target = start + 2 * i;
        let target = if i == 0 { start } else { target - 1 };
        m.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8]);
    }
    let mut out = WireName::new();
    let last = m.len() - 2;
    assert_eq!(read_name(&m, last, &mut out), Err(ParseError::PointerLoop));
    // A short chain is fine.
    assert_eq!(read_name(&m, start + 1, &mut out), Ok(start + 3));
    assert_eq!(out.as_bytes(), &[0]);
}

#[test]
fn wrong_rdata_length_is_an_error() {
    let q = query("a.test", QueryType::A, false);
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_A, 60, &[1, 2, 3]);
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Err(ParseError::BadRecordData)
    );
    // A record whose RDLENGTH runs past the end.
    let mut m = Msg::answer_to(&q, 0, 1, 0)
        .rr(&QPTR, TYPE_A, 60, &[1, 2, 3, 4])
        .bytes;
    let n = m.len();
    m[n - 5] = 200;
    assert_eq!(parse(&m, &q, QueryType::A), Err(ParseError::Truncated));
}

#[test]
fn ttl_with_top_bit_is_zero() {
    let q = query("a.test", QueryType::A, false);
    let m = Msg::answer_to(&q, 0, 1, 0).rr(&QPTR, TYPE_A, 0x8000_0001, &[1, 2, 3, 4]);
    assert_eq!(
        parse(&m.bytes, &q, QueryType::A),
        Ok(Outcome::Address {
            addr: "1.2.3.4".parse().unwrap(),
            ttl: 0
        })
    );
}
