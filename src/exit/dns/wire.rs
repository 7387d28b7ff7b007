//! DNS messages on the wire (RFC 1035 §4): building A/AAAA/PTR queries and parsing the
//! answers to them.
//!
//! The parser never trusts a length or a pointer: every read is bounds-checked, compression
//! pointers must point backwards and are counted, and decoded names are limited to 255 octets
//! (RFC 1035 §2.3.4, §4.1.4). It allocates nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand_core::RngCore;

use super::name::DnsName;

/// Header length (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, including the root label.
pub const MAX_WIRE_NAME: usize = 255;
/// EDNS(0) OPT record as we send it: root name, type, class, TTL, RDLENGTH (RFC 6891 §6.1.2).
const OPT_LEN: usize = 11;
/// Longest query we build: header, question, OPT record.
pub const MAX_QUERY_LEN: usize = HEADER_LEN + MAX_WIRE_NAME + 4 + OPT_LEN;
/// How many compression pointers one name may follow. Backward-only pointers already
/// guarantee termination; this bounds the work on hostile input.
const MAX_POINTER_JUMPS: usize = 64;
/// How many CNAME links we follow from the question name.
pub const MAX_CNAME_CHAIN: usize = 8;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;

/// RCODE values we tell apart (RFC 1035 §4.1.1).
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// The record types an exit asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    A,
    Aaaa,
    Ptr,
}

impl QueryType {
    pub fn code(self) -> u16 {
        match self {
            QueryType::A => TYPE_A,
            QueryType::Aaaa => TYPE_AAAA,
            QueryType::Ptr => TYPE_PTR,
        }
    }
}

/// A query datagram held inline.
#[derive(Clone, Copy)]
pub struct QueryBuf {
    bytes: [u8; MAX_QUERY_LEN],
    len: u16,
    qname_len: u16,
}

impl Default for QueryBuf {
    fn default() -> Self {
        QueryBuf {
            bytes: [0; MAX_QUERY_LEN],
            len: 0,
            qname_len: 0,
        }
    }
}

impl QueryBuf {
    /// The whole datagram.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    /// The question name in wire form, exactly as sent (with any 0x20 casing).
    pub fn qname_wire(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.qname_len as usize]
    }
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }
}

/// Why a query could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("name has an empty label or a label over 63 octets")]
    BadLabel,
    #[error("name is longer than 255 octets on the wire")]
    NameTooLong,
}

/// Writes a recursive query for `name` (presentation form, no final dot, no escapes).
///
/// With `randomize_case`, the name's letters get random case (the "0x20" defence against
/// spoofed answers, draft-vixie-dnsext-dns0x20) and the echo must match exactly.
/// `edns_udp_payload` adds an OPT record advertising that many octets (RFC 6891); answers
/// larger than 512 octets are otherwise truncated.
pub fn build_query<R: RngCore + ?Sized>(
    out: &mut QueryBuf,
    id: u16,
    name: &[u8],
    qtype: QueryType,
    edns_udp_payload: Option<u16>,
    randomize_case: bool,
    rng: &mut R,
) -> Result<(), BuildError> {
    let b = &mut out.bytes;
    b[0..2].copy_from_slice(&id.to_be_bytes());
    b[2..4].copy_from_slice(&FLAG_RD.to_be_bytes());
    b[4..6].copy_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    b[6..10].fill(0); // ANCOUNT, NSCOUNT
    let arcount: u16 = edns_udp_payload.is_some().into();
    b[10..12].copy_from_slice(&arcount.to_be_bytes());

    let qname_len = encode_name(name, &mut b[HEADER_LEN..HEADER_LEN + MAX_WIRE_NAME])?;
    if randomize_case {
        let mut bits = 0u32;
        for (i, c) in b[HEADER_LEN..HEADER_LEN + qname_len].iter_mut().enumerate() {
            if i % 32 == 0 {
                bits = rng.next_u32();
            }
            // Length octets are < 64, so they are never letters and are left alone.
            if c.is_ascii_alphabetic() && (bits >> (i % 32)) & 1 == 1 {
                *c ^= 0x20;
            }
        }
    }
    let mut pos = HEADER_LEN + qname_len;
    b[pos..pos + 2].copy_from_slice(&qtype.code().to_be_bytes());
    b[pos + 2..pos + 4].copy_from_slice(&CLASS_IN.to_be_bytes());
    pos += 4;
    if let Some(payload) = edns_udp_payload {
        b[pos] = 0; // root
        b[pos + 1..pos + 3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        b[pos + 3..pos + 5].copy_from_slice(&payload.max(512).to_be_bytes());
        b[pos + 5..pos + 11].fill(0); // extended RCODE, version 0, flags, RDLENGTH 0
        pos += OPT_LEN;
    }
    out.len = pos as u16;
    out.qname_len = qname_len as u16;
    Ok(())
}

/// Presentation form → uncompressed wire form in `out`; returns the length written.
fn encode_name(name: &[u8], out: &mut [u8]) -> Result<usize, BuildError> {
    let mut pos = 0;
    if !name.is_empty() {
        for label in name.split(|&c| c == b'.') {
            if label.is_empty() || label.len() > 63 {
                return Err(BuildError::BadLabel);
            }
            if pos + 1 + label.len() + 1 > MAX_WIRE_NAME {
                return Err(BuildError::NameTooLong);
            }
            out[pos] = label.len() as u8;
            out[pos + 1..pos + 1 + label.len()].copy_from_slice(label);
            pos += 1 + label.len();
        }
    }
    out[pos] = 0;
    Ok(pos + 1)
}

/// What a response must echo to be accepted as the answer to our query.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub id: u16,
    /// Question name in wire form as sent.
    pub qname_wire: &'a [u8],
    pub qtype: QueryType,
    /// Require the exact casing we sent (0x20); otherwise compare case-insensitively.
    pub exact_case: bool,
}

impl<'a> Expected<'a> {
    /// What a response to `query` must echo.
    pub fn for_query(query: &'a QueryBuf, qtype: QueryType, exact_case: bool) -> Self {
        Expected {
            id: query.id(),
            qname_wire: query.qname_wire(),
            qtype,
            exact_case,
        }
    }
}

/// What a valid response to our query says.
// Names are held inline on purpose: no allocation per answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first A/AAAA record at the end of the CNAME chain. `ttl` is the smallest TTL along
    /// the chain, since the answer is only valid while every link is.
    Address { addr: IpAddr, ttl: u32 },
    /// The first usable PTR target.
    Hostname { name: DnsName, ttl: u32 },
    /// NOERROR without a record of the asked type. `negative_ttl` from the SOA, RFC 2308 §5.
    NoData { negative_ttl: Option<u32> },
    /// NXDOMAIN: the name does not exist.
    NxDomain { negative_ttl: Option<u32> },
    /// The server could not answer (SERVFAIL, REFUSED, NOTIMP, FORMERR, or any other RCODE).
    ServerFailure { rcode: u8 },
    /// TC set: the answer did not fit and we do not retry over TCP.
    Truncated,
}

/// Why a datagram is not an acceptable response. The query stays outstanding: a forged or
/// broken datagram must not decide the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message ends inside a field")]
    Truncated,
    #[error("not a response (QR clear) or not a standard query (opcode)")]
    NotResponse,
    #[error("id does not match")]
    IdMismatch,
    #[error("question does not echo ours")]
    QuestionMismatch,
    #[error("compression pointer does not point backwards")]
    BadPointer,
    #[error("too many compression pointers in one name")]
    PointerLoop,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("reserved label type")]
    BadLabelType,
    #[error("record data has the wrong length for its type")]
    BadRecordData,
}

/// The id of a datagram, if it is long enough to have one.
pub fn peek_id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// A name decoded to uncompressed wire form.
struct WireName {
    buf: [u8; MAX_WIRE_NAME],
    len: usize,
}

impl WireName {
    fn new() -> Self {
        WireName {
            buf: [0; MAX_WIRE_NAME],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn set(&mut self, wire: &[u8]) {
        self.buf[..wire.len()].copy_from_slice(wire);
        self.len = wire.len();
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, ParseError> {
    let b = msg.get(pos..pos + 2).ok_or(ParseError::Truncated)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_at(msg: &[u8], pos: usize) -> Result<u32, ParseError> {
    let b = msg.get(pos..pos + 4).ok_or(ParseError::Truncated)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes the (possibly compressed) name at `pos` into `out`; returns the offset just after
/// the name's bytes at `pos` (after the first pointer, if any).
fn read_name(msg: &[u8], mut pos: usize, out: &mut WireName) -> Result<usize, ParseError> {
    out.len = 0;
    let mut after: Option<usize> = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or(ParseError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                let l = len as usize;
                if out.len + 1 + l > MAX_WIRE_NAME {
                    return Err(ParseError::NameTooLong);
                }
                let label = msg.get(pos..pos + 1 + l).ok_or(ParseError::Truncated)?;
                out.buf[out.len..out.len + 1 + l].copy_from_slice(label);
                out.len += 1 + l;
                pos += 1 + l;
                if l == 0 {
                    return Ok(after.unwrap_or(pos));
                }
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(ParseError::Truncated)?;
                let target = (((len & 0x3f) as usize) << 8) | low as usize;
                // Strictly backwards: with the length cap this rules out loops.
                if target >= pos {
                    return Err(ParseError::BadPointer);
                }
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS {
                    return Err(ParseError::PointerLoop);
                }
                after.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(ParseError::BadLabelType),
        }
    }
}

/// One resource record's fixed fields; `rdata` is an offset range into the message.
struct Record {
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: (usize, usize),
}

/// Reads the record at `pos` (owner into `owner`); returns it and the offset after it.
fn read_record(
    msg: &[u8],
    pos: usize,
    owner: &mut WireName,
) -> Result<(Record, usize), ParseError> {
    let pos = read_name(msg, pos, owner)?;
    let rtype = u16_at(msg, pos)?;
    let class = u16_at(msg, pos + 2)?;
    // RFC 2181 §8: the top bit makes a TTL invalid; treat such TTLs as zero.
    let ttl = u32_at(msg, pos + 4)?;
    let ttl = if ttl & 0x8000_0000 != 0 { 0 } else { ttl };
    let rdlen = u16_at(msg, pos + 8)? as usize;
    let start = pos + 10;
    let end = start + rdlen;
    if end > msg.len() {
        return Err(ParseError::Truncated);
    }
    Ok((
        Record {
            rtype,
            class,
            ttl,
            rdata: (start, end),
        },
        end,
    ))
}

/// Checks `msg` against `expected` and says what it answers.
pub fn parse_response(msg: &[u8], expected: &Expected<'_>) -> Result<Outcome, ParseError> {
    if msg.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let qdcount = u16_at(msg, 4)?;
    let ancount = u16_at(msg, 6)?;
    let nscount = u16_at(msg, 8)?;
    let arcount = u16_at(msg, 10)?;
    if id != expected.id {
        return Err(ParseError::IdMismatch);
    }
    if flags & FLAG_QR == 0 || flags & OPCODE_MASK != 0 {
        return Err(ParseError::NotResponse);
    }
    // RFC 5452 §9.1: the question must be echoed, so a reply to some other query that happens
    // to share our id is not taken as ours.
    if qdcount != 1 {
        return Err(ParseError::QuestionMismatch);
    }
    let mut name = WireName::new();
    let mut pos = read_name(msg, HEADER_LEN, &mut name)?;
    let qtype = u16_at(msg, pos)?;
    let qclass = u16_at(msg, pos + 2)?;
    pos += 4;
    let name_ok = if expected.exact_case {
        name.as_bytes() == expected.qname_wire
    } else {
        name.as_bytes().eq_ignore_ascii_case(expected.qname_wire)
    };
    if !name_ok || qtype != expected.qtype.code() || qclass != CLASS_IN {
        return Err(ParseError::QuestionMismatch);
    }

    if flags & FLAG_TC != 0 {
        return Ok(Outcome::Truncated);
    }
    let rcode = (flags & 0x000f) as u8;
    let answers_at = pos;

    // Walk every section once so that a message cut short anywhere is rejected, and find
    // where the authority section starts.
    let mut owner = WireName::new();
    let mut authority_at = pos;
    for i in 0..ancount as usize + nscount as usize + arcount as usize {
        let (_, next) = read_record(msg, pos, &mut owner)?;
        pos = next;
        if i + 1 == ancount as usize {
            authority_at = pos;
        }
    }

    match rcode {
        RCODE_NOERROR => {}
        RCODE_NXDOMAIN => {
            let negative_ttl = negative_ttl(msg, authority_at, nscount)?;
            return Ok(Outcome::NxDomain { negative_ttl });
        }
        other => return Ok(Outcome::ServerFailure { rcode: other }),
    }

    // Follow the CNAME chain from the question name (RFC 1034 §3.6.2, RFC 2181 §10.1.1).
    let mut target = WireName::new();
    target.set(expected.qname_wire);
    let mut chain_ttl = u32::MAX;
    let mut ptr_name = WireName::new();
    'chain: for _ in 0..=MAX_CNAME_CHAIN {
        let mut pos = answers_at;
        let mut cname: Option<(usize, u32)> = None;
        for _ in 0..ancount {
            let (rr, next) = read_record(msg, pos, &mut owner)?;
            pos = next;
            if rr.class != CLASS_IN || !owner.as_bytes().eq_ignore_ascii_case(target.as_bytes()) {
                continue;
            }
            let rdata = &msg[rr.rdata.0..rr.rdata.1];
            let ttl = chain_ttl.min(rr.ttl);
            match (expected.qtype, rr.rtype) {
                (QueryType::A, TYPE_A) => {
                    let o: [u8; 4] = rdata.try_into().map_err(|_| ParseError::BadRecordData)?;
                    let addr = IpAddr::V4(Ipv4Addr::from(o));
                    return Ok(Outcome::Address { addr, ttl });
                }
                (QueryType::Aaaa, TYPE_AAAA) => {
                    let o: [u8; 16] = rdata.try_into().map_err(|_| ParseError::BadRecordData)?;
                    let addr = IpAddr::V6(Ipv6Addr::from(o));
                    return Ok(Outcome::Address { addr, ttl });
                }
                (QueryType::Ptr, TYPE_PTR) => {
                    let end = read_name(msg, rr.rdata.0, &mut ptr_name)?;
                    if end != rr.rdata.1 {
                        return Err(ParseError::BadRecordData);
                    }
                    // A target we could not put in a RESOLVED cell is skipped, not fatal.
                    if let Some(name) = presentation_hostname(ptr_name.as_bytes()) {
                        return Ok(Outcome::Hostname { name, ttl });
                    }
                }
                (_, TYPE_CNAME) if cname.is_none() => {
                    cname = Some((rr.rdata.0, ttl));
                    let end = read_name(msg, rr.rdata.0, &mut ptr_name)?;
                    if end != rr.rdata.1 {
                        return Err(ParseError::BadRecordData);
                    }
                }
                _ => {}
            }
        }
        match cname {
            Some((rdata_at, ttl)) => {
                read_name(msg, rdata_at, &mut target)?;
                chain_ttl = ttl;
            }
            None => break 'chain,
        }
    }
    // No record of the asked type (or a chain that ends elsewhere or is too long): NODATA.
    let negative_ttl = negative_ttl(msg, authority_at, nscount)?;
    Ok(Outcome::NoData { negative_ttl })
}

/// RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM).
fn negative_ttl(msg: &[u8], mut pos: usize, nscount: u16) -> Result<Option<u32>, ParseError> {
    let mut owner = WireName::new();
    for _ in 0..nscount {
        let (rr, next) = read_record(msg, pos, &mut owner)?;
        pos = next;
        if rr.rtype == TYPE_SOA && rr.class == CLASS_IN {
            // MNAME, RNAME, then five 32-bit fields; MINIMUM is the last.
            let (start, end) = rr.rdata;
            if end - start < 22 {
                return Err(ParseError::BadRecordData);
            }
            let minimum = u32_at(msg, end - 4)?;
            return Ok(Some(rr.ttl.min(minimum)));
        }
    }
    Ok(None)
}

/// Uncompressed wire name → `a.b.c`, if every label is a plain hostname label.
fn presentation_hostname(wire: &[u8]) -> Option<DnsName> {
    let mut buf = [0u8; super::name::MAX_NAME_LEN];
    let mut len = 0;
    let mut pos = 0;
    while let Some(&l) = wire.get(pos) {
        let l = l as usize;
        if l == 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + l)?;
        if !label
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return None;
        }
        if len != 0 {
            *buf.get_mut(len)? = b'.';
            len += 1;
        }
        buf.get_mut(len..len + l)?.copy_from_slice(label);
        len += l;
        pos += 1 + l;
    }
    if len == 0 {
        return None;
    }
    DnsName::from_bytes(&buf[..len])
}

#[cfg(test)]
mod tests;
