//! Answering one directory request from the [`DirStore`]: dir-spec's URLs (appendix
//! "Standard URLs", §4.4) routed as C tor's `dircache.c` `url_table`, with C tor's status
//! lines, headers, cache lifetimes and compression choices.
//!
//! Sans-IO: the caller passes the time, the store (read-locked), the front page, our own
//! descriptor and how many bytes it may still write; it gets the bytes to send back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;

use super::compress::{self, Method, Methods, PREF_PRECOMPRESSED, PREF_STREAMING};
use super::hsdir::{http as hsdir_http, HsDirCache};
use super::request::{Command, Request};
use super::store::{ConsensusDoc, ConsensusFlavor, DirStore, Document};
use crate::crypto::ids::RsaIdentity;

// Cache lifetimes C tor puts in `Expires` (dircache.c).
const DIRPORTFRONTPAGE_CACHE_LIFETIME: u64 = 20 * 60;
const FULL_DIR_CACHE_LIFETIME: u64 = 60 * 60;
const ROUTERDESC_BY_DIGEST_CACHE_LIFETIME: u64 = 48 * 60 * 60;
const ROBOTS_CACHE_LIFETIME: u64 = 24 * 60 * 60;
const MICRODESC_CACHE_LIFETIME: u64 = 48 * 60 * 60;
const KEYS_CACHE_LIFETIME: u64 = 60 * 60;
/// A consensus is served from a day before its valid-after to a day after its
/// valid-until (C tor networkstatus.c `REASONABLY_LIVE_TIME`).
const REASONABLY_LIVE_TIME: u64 = 24 * 60 * 60;
/// Descriptors older than this are not served by fingerprint (C tor
/// `ROUTER_MAX_AGE_TO_PUBLISH`).
const ROUTER_MAX_AGE_TO_PUBLISH: u64 = 24 * 60 * 60;

const BUSY: &str = "Directory busy, try again later";
const NOT_FOUND: &str = "Not found";

/// What a request asked for, for the counters (no URL, no address: SafeLogging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    FrontPage,
    Consensus,
    ConsensusDiff,
    Microdesc,
    ServerDescriptor,
    Keys,
    Robots,
    Post,
    /// `GET /tor/hs/3/<key>` (HSDir).
    HsDescriptor,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::FrontPage,
        Kind::Consensus,
        Kind::ConsensusDiff,
        Kind::Microdesc,
        Kind::ServerDescriptor,
        Kind::Keys,
        Kind::Robots,
        Kind::Post,
        Kind::HsDescriptor,
        Kind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::FrontPage => "frontpage",
            Kind::Consensus => "consensus",
            Kind::ConsensusDiff => "consensus_diff",
            Kind::Microdesc => "microdesc",
            Kind::ServerDescriptor => "server_descriptor",
            Kind::Keys => "keys",
            Kind::Robots => "robots",
            Kind::Post => "post",
            Kind::HsDescriptor => "hs_descriptor",
            Kind::Other => "other",
        }
    }
}

/// The answer to one request: the head, then the body as shared chunks (a stored document
/// is sent from its `Arc`, not copied).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub kind: Kind,
    pub head: Vec<u8>,
    pub body: Vec<Arc<[u8]>>,
    pub encoding: Method,
    /// The body is the documents' text, to be compressed with `encoding` as it is sent
    /// ([`compress::StreamCompressor`], as C tor compresses while it spools); false when
    /// the body is already in `encoding`.
    pub streamed: bool,
}

impl Answer {
    pub fn body_len(&self) -> usize {
        self.body.iter().map(|c| c.len()).sum()
    }

    /// Everything to send, in one buffer (for tests and small answers).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        if self.streamed {
            let parts: Vec<&[u8]> = self.body.iter().map(|d| &d[..]).collect();
            // In-memory compression does not fail; an empty body if it ever did.
            v.extend(compress::compress(self.encoding, &parts, false).unwrap_or_default());
            return v;
        }
        for c in &self.body {
            v.extend_from_slice(c);
        }
        v
    }
}

/// What the server knows besides the store.
pub struct Context<'a> {
    /// Unix seconds.
    pub now: u64,
    pub store: &'a DirStore,
    /// `DirPortFrontPage`'s contents, answered to `GET /` (or `/tor/`).
    pub front_page: Option<&'a Arc<[u8]>>,
    /// Our own server descriptor (`/tor/server/authority`), once built.
    pub own_descriptor: Option<&'a Document>,
    /// The address `X-Your-Address-Is` reports: [`your_address`] of the peer, so `None`
    /// for a local one (C tor `write_http_response_header_impl`).
    pub peer_for_header: Option<IpAddr>,
    /// Bytes we may still write now; a bigger answer gets `503` (C tor
    /// `connection_dir_is_global_write_low`).
    pub write_allowance: u64,
}

/// What `X-Your-Address-Is` tells a peer, for the DirPort and BEGIN_DIR alike: its address
/// unless it is local to ours (C tor `write_http_response_header_impl` skips the header when
/// `is_local_to_resolve_addr`): an internal address (`tor_addr_is_internal`: 0/8, 10/8,
/// 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16, fc00::/7, fe80::/10, fec0::/10,
/// ::/127, and IPv4-mapped forms), or, EnforceDistinctSubnets being 1 (C tor's default; Fors
/// has no such option), the /24 (IPv4) or /48 (IPv6) of `ours`, our last resolved address of
/// that family. `peer` is the TCP peer of a DirPort connection; for BEGIN_DIR, C tor uses
/// the address of the channel the circuit arrived on (`connection_exit_begin_conn`,
/// `channel_get_addr_if_possible`) and, without one, none: `None` here.
pub fn your_address(peer: Option<IpAddr>, ours: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if crate::exit::policy::is_internal(peer) || peer.is_unspecified() {
        return None;
    }
    let same_net = ours.iter().any(|o| match (peer, o) {
        (IpAddr::V4(p), IpAddr::V4(o)) => u32::from(p) >> 8 == u32::from(*o) >> 8,
        (IpAddr::V6(p), IpAddr::V6(o)) => u128::from(p) >> 80 == u128::from(*o) >> 80,
        _ => false,
    });
    (!same_net).then_some(peer)
}

/// Answers an onion-service request (`POST /tor/hs/…`, `GET /tor/hs/3/<key>` with a
/// trailing `.z` dropped first, as C tor's `directory_handle_command_get` does for every
/// URL) from `hsdir`; `None` for any other request, which goes to [`answer`].
/// `anonymous` is C tor's `connection_dir_is_anonymous`, decided by the caller. A found
/// descriptor comes back with its blinded key, to count the download once it is sent.
pub fn answer_hs(
    ctx: &Context<'_>,
    hsdir: &mut HsDirCache,
    req: &Request,
    anonymous: bool,
) -> Option<(Answer, Option<[u8; 32]>)> {
    if req.command == Command::Post {
        if !req.url.starts_with(hsdir_http::HS_POST_PREFIX) {
            return None;
        }
        let now = UNIX_EPOCH + Duration::from_secs(ctx.now);
        let a = hsdir_http::handle_publish(hsdir, &req.url, &req.body, anonymous, now);
        return Some((short(ctx, a.status, a.reason, Kind::Post), None));
    }
    let url = match req.url.strip_suffix(".z") {
        Some(u) if req.url.len() > 2 => u,
        _ => req.url.as_str(),
    };
    let key = url.strip_prefix(hsdir_http::HS_FETCH_PREFIX)?;
    Some(match hsdir_http::handle_fetch(hsdir, key, anonymous) {
        // `handle_get_hs_descriptor_v3`: NO_METHOD, a length, no caching lifetime.
        Ok(body) => (
            ok(
                ctx,
                Kind::HsDescriptor,
                "text/plain",
                Method::Identity,
                Some(body.len()),
                None,
                Some(0),
                vec![body],
            ),
            hsdir_http::fetch_key(key),
        ),
        Err((status, reason)) => (short(ctx, status, reason, Kind::HsDescriptor), None),
    })
}

/// Answers `req`. `None` means: close without an answer (C tor writes nothing for
/// `/tor/networkstatus-bridges` on a non-bridge-authority).
pub fn answer(ctx: &Context<'_>, mut req: Request) -> Option<Answer> {
    if req.command == Command::Post {
        return Some(answer_post(ctx, &req));
    }
    let accept = req.take_z_suffix();
    let url = req.url.as_str();
    let a = if url == "/tor/" {
        front_page(ctx)
    } else if url.starts_with("/tor/status-vote/current/consensus") {
        consensus(ctx, &req, accept)
    } else if url.starts_with("/tor/status-vote/current/")
        || url.starts_with("/tor/status-vote/next/")
    {
        // Votes and the bandwidth file exist only on authorities.
        short(ctx, 404, NOT_FOUND, Kind::Other)
    } else if let Some(rest) = url.strip_prefix("/tor/micro/d/") {
        microdescs(ctx, rest, accept)
    } else if let Some(rest) = url.strip_prefix("/tor/server/") {
        server_descriptors(ctx, rest, accept)
    } else if url.starts_with("/tor/extra/") {
        // Extra-info documents are not kept (C tor caches fetch them only with
        // DownloadExtraInfo).
        short(ctx, 404, NOT_FOUND, Kind::ServerDescriptor)
    } else if url.starts_with("/tor/keys/") {
        keys(ctx, url, req.if_modified_since, accept)
    } else if url.starts_with("/tor/hs/3/") {
        // Onion-service descriptors are answered by `answer_hs` before this; a caller
        // without an HSDir cache has none.
        short(ctx, 404, NOT_FOUND, Kind::HsDescriptor)
    } else if url == "/tor/robots.txt" {
        let body: Arc<[u8]> = Arc::from(&b"User-agent: *\r\nDisallow: /\r\n"[..]);
        ok(
            ctx,
            Kind::Robots,
            "text/plain",
            Method::Identity,
            Some(body.len()),
            None,
            Some(ROBOTS_CACHE_LIFETIME),
            vec![body],
        )
    } else if url == "/tor/networkstatus-bridges" {
        return None;
    } else {
        short(ctx, 404, NOT_FOUND, Kind::Other)
    };
    Some(a)
}

fn answer_post(ctx: &Context<'_>, req: &Request) -> Answer {
    if req.url.starts_with("/tor/hs/") {
        // Reached only without an HSDir cache (the directory server calls `answer_hs`
        // first): refuse the descriptor as C tor refuses a bad one.
        return short(ctx, 400, "Invalid HS descriptor. Rejected.", Kind::Post);
    }
    short(
        ctx,
        400,
        "Nonauthoritative directory does not accept posted server descriptors",
        Kind::Post,
    )
}

fn front_page(ctx: &Context<'_>) -> Answer {
    match ctx.front_page {
        Some(page) => ok(
            ctx,
            Kind::FrontPage,
            "text/html",
            Method::Identity,
            Some(page.len()),
            None,
            Some(DIRPORTFRONTPAGE_CACHE_LIFETIME),
            vec![page.clone()],
        ),
        None => short(ctx, 404, NOT_FOUND, Kind::FrontPage),
    }
}

/// A consensus request's parts (C tor `parse_consensus_request`).
struct ConsensusRequest<'u> {
    flavor: ConsensusFlavor,
    want_fps: Option<&'u str>,
    diff_from: Vec<[u8; 32]>,
    diff_only: bool,
}

fn parse_consensus_request<'u>(
    url: &'u str,
    diff_header: Option<&str>,
) -> Option<ConsensusRequest<'u>> {
    let mut flavor = ConsensusFlavor::Ns;
    let mut after_flavor = None;
    if let Some(f) = url.strip_prefix("/tor/status-vote/current/consensus-") {
        let (name, rest) = match f.split_once('/') {
            Some((n, r)) => (n, Some(r)),
            None => (f, None),
        };
        // An unknown flavour name falls back to ns, as C tor.
        if name == "microdesc" {
            flavor = ConsensusFlavor::Microdesc;
        }
        after_flavor = rest;
    } else if let Some(rest) = url.strip_prefix("/tor/status-vote/current/consensus/") {
        after_flavor = Some(rest);
    }
    let mut req = ConsensusRequest {
        flavor,
        want_fps: after_flavor,
        diff_from: Vec::new(),
        diff_only: false,
    };
    if let Some(rest) = after_flavor.and_then(|a| a.strip_prefix("diff/")) {
        let (hash, fps) = match rest.split_once('/') {
            Some((h, f)) => (h, Some(f)),
            None => (rest, None),
        };
        req.want_fps = fps;
        req.diff_only = true;
        req.diff_from.push(parse_sha3_hex(hash)?);
    } else if let Some(h) = diff_header {
        // Bogus digests in the header are ignored (C tor `parse_or_diff_from_header`).
        req.diff_from = h
            .split(' ')
            .filter(|s| !s.is_empty())
            .filter_map(parse_sha3_hex)
            .collect();
    }
    Some(req)
}

fn parse_sha3_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// True if more than half of the authorities named (hex prefixes of v3 identities,
/// `+`-separated) signed (C tor `client_likes_consensus`).
fn signed_by_enough(doc: &ConsensusDoc, want: &str) -> bool {
    let wanted: Vec<&str> = want.split('+').filter(|s| !s.is_empty()).collect();
    let need = wanted.len() / 2 + 1;
    let signers: Vec<String> = doc.signers.iter().map(|s| s.to_hex()).collect();
    let have = wanted
        .iter()
        .filter(|w| {
            signers
                .iter()
                .any(|s| s.len() >= w.len() && s[..w.len()].eq_ignore_ascii_case(w))
        })
        .count();
    have >= need
}

fn consensus(ctx: &Context<'_>, req: &Request, accept: Methods) -> Answer {
    let Some(creq) = parse_consensus_request(&req.url, req.diff_from.as_deref()) else {
        return short(ctx, 404, "Couldn't parse request", Kind::Consensus);
    };
    let current = ctx.store.consensus(creq.flavor);
    if let Some(cur) = current {
        if creq.diff_from.contains(&cur.sha3_digest) {
            return short(ctx, 304, "Not modified", Kind::Consensus);
        }
    }
    let diff = current.and_then(|_| {
        creq.diff_from.iter().find_map(|d| {
            ctx.store
                .consensus_diff(creq.flavor, d)
                .map(|diff| (d, diff))
        })
    });
    if creq.diff_only && diff.is_none() {
        return short(ctx, 404, "No such diff available", Kind::ConsensusDiff);
    }
    let kind = if diff.is_some() {
        Kind::ConsensusDiff
    } else {
        Kind::Consensus
    };
    let Some(cur) = current else {
        return short(ctx, 404, NOT_FOUND, kind);
    };
    if ctx.now + REASONABLY_LIVE_TIME < cur.valid_after {
        return short(ctx, 404, "Consensus is too new", kind);
    }
    if ctx.now > cur.valid_until + REASONABLY_LIVE_TIME {
        return short(ctx, 404, "Consensus is too old", kind);
    }
    if let Some(want) = creq.want_fps {
        if !signed_by_enough(cur, want) {
            return short(
                ctx,
                404,
                "Consensus not signed by sufficient number of requested authorities",
                kind,
            );
        }
    }
    // A consensus "published" at its valid-after (C tor's consensus cache entries).
    if req
        .if_modified_since
        .is_some_and(|ims| cur.valid_after < ims)
    {
        return short(ctx, 304, "Not modified", kind);
    }
    let (from, text) = match diff {
        Some((from, d)) => (Some(from), d),
        None => (None, &cur.body),
    };
    let (method, body) = stored_form(ctx.store, creq.flavor, from, text, accept);
    if body.len() as u64 > ctx.write_allowance {
        return short(ctx, 503, BUSY, kind);
    }
    let lifetime = cur.fresh_until.saturating_sub(ctx.now);
    // No Content-Length: C tor spools consensuses without one.
    ok(
        ctx,
        kind,
        "text/plain",
        method,
        None,
        Some("Vary: X-Or-Diff-From-Consensus\r\n"),
        Some(lifetime),
        vec![body],
    )
}

/// The form of the current consensus (`from` `None`) or of a diff to it to send, and its
/// `Content-Encoding`: the first of C tor's `srv_meth_pref_precompressed` that the client
/// accepts and the store keeps, else the deflate form (C tor `find_best_consensus`,
/// `find_best_diff`, `FALLBACK_COMPRESS_METHOD`), which C tor decompresses as it sends it to
/// a client that takes nothing compressed: that is `text`. Consensus text is not kept as a
/// "form" in C tor, diff text is (`compress_diffs_with` has `NO_METHOD`). Nothing is
/// compressed here; if a form is missing (compressor failure, the store's bound), `text`.
fn stored_form(
    store: &DirStore,
    flavor: ConsensusFlavor,
    from: Option<&[u8; 32]>,
    text: &Arc<[u8]>,
    accept: Methods,
) -> (Method, Arc<[u8]>) {
    for m in PREF_PRECOMPRESSED
        .iter()
        .copied()
        .filter(|m| accept.contains(*m))
    {
        if m == Method::Identity {
            if from.is_some() {
                return (m, text.clone());
            }
        } else if let Some(c) = store.compressed(flavor, from, m) {
            return (m, c.clone());
        }
    }
    match store.compressed(flavor, from, Method::Deflate) {
        Some(c) if accept.best(&PREF_PRECOMPRESSED) != Method::Identity => {
            (Method::Deflate, c.clone())
        }
        _ => (Method::Identity, text.clone()),
    }
}

/// Splits a `+`-separated list of hex digests (C tor `DSR_HEX|DSR_SORT_UNIQ`): bad items
/// are dropped, the rest sorted without duplicates.
fn hex_list<const N: usize>(s: &str) -> Vec<[u8; N]> {
    let mut v: Vec<[u8; N]> = s
        .split('+')
        .filter_map(|h| {
            if h.len() != 2 * N {
                return None;
            }
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn microdescs(ctx: &Context<'_>, list: &str, accept: Methods) -> Answer {
    // Base64 digests are separated by '-' (C tor `dir_split_resource_into_fingerprints`
    // with DSR_BASE64), without padding.
    let mut digests: Vec<[u8; 32]> = list
        .split('-')
        .filter_map(|b| {
            let raw = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b)
                .ok()?;
            raw.try_into().ok()
        })
        .collect();
    digests.sort_unstable();
    digests.dedup();
    let docs: Vec<Arc<[u8]>> = digests
        .iter()
        .filter_map(|d| ctx.store.microdesc(d))
        .map(|d| d.body.clone())
        .collect();
    if docs.is_empty() {
        return short(ctx, 404, NOT_FOUND, Kind::Microdesc);
    }
    streamed(
        ctx,
        Kind::Microdesc,
        accept,
        docs,
        Some(MICRODESC_CACHE_LIFETIME),
        false,
    )
}

fn server_descriptors(ctx: &Context<'_>, key: &str, accept: Methods) -> Answer {
    let kind = Kind::ServerDescriptor;
    let cutoff = ctx.now.saturating_sub(ROUTER_MAX_AGE_TO_PUBLISH);
    // C tor's `handle_get_descriptor` applies the publish cutoff to every key but `d/`.
    let docs: Vec<&Document> = if key == "all" {
        ctx.store
            .server_descriptors()
            .filter(|d| d.published >= cutoff)
            .collect()
    } else if key == "authority" {
        ctx.own_descriptor
            .into_iter()
            .filter(|d| d.published >= cutoff)
            .collect()
    } else if let Some(list) = key.strip_prefix("d/") {
        hex_list::<20>(list)
            .iter()
            .filter_map(|d| ctx.store.server_descriptor_by_digest(d))
            .collect()
    } else if let Some(list) = key.strip_prefix("fp/") {
        // By fingerprint only descriptors recent enough to publish (C tor's cutoff).
        hex_list::<20>(list)
            .iter()
            .filter_map(|d| ctx.store.server_descriptor_by_id(&RsaIdentity(*d)))
            .filter(|d| d.published >= cutoff)
            .collect()
    } else {
        return short(ctx, 404, NOT_FOUND, kind);
    };
    let lifetime = if key == "all" {
        FULL_DIR_CACHE_LIFETIME
    } else if docs.len() == 1 {
        ROUTERDESC_BY_DIGEST_CACHE_LIFETIME
    } else {
        0
    };
    let bodies: Vec<Arc<[u8]>> = docs.iter().map(|d| d.body.clone()).collect();
    if bodies.iter().all(|b| b.is_empty()) {
        return short(ctx, 404, NOT_FOUND, kind);
    }
    streamed(ctx, kind, accept, bodies, Some(lifetime), false)
}

fn keys(ctx: &Context<'_>, url: &str, ims: Option<u64>, accept: Methods) -> Answer {
    let kind = Kind::Keys;
    let store = ctx.store;
    // (Declared first: the store ties the certificates' lifetime to the identities asked.)
    let fp_ids: Vec<RsaIdentity> = url
        .strip_prefix("/tor/keys/fp/")
        .map(|l| hex_list::<20>(l).into_iter().map(RsaIdentity).collect())
        .unwrap_or_default();
    let mut certs: Vec<&Document> = if url == "/tor/keys/all" {
        store.certs().collect()
    } else if url == "/tor/keys/authority" {
        // We are not an authority: no certificate of our own.
        Vec::new()
    } else if url.starts_with("/tor/keys/fp/") {
        let mut found = Vec::with_capacity(fp_ids.len());
        for id in &fp_ids {
            if let Some(c) = store.certs_by_id(id).max_by_key(|d| d.published) {
                found.push(c);
            }
        }
        found
    } else if let Some(list) = url.strip_prefix("/tor/keys/sk/") {
        hex_list::<20>(list)
            .iter()
            .filter_map(|sk| store.cert_by_signing_key(sk))
            .collect()
    } else if let Some(list) = url.strip_prefix("/tor/keys/fp-sk/") {
        let mut pairs: Vec<([u8; 20], [u8; 20])> = list
            .split('+')
            .filter_map(|p| {
                let (a, b) = p.split_once('-')?;
                let a = hex_list::<20>(a).pop()?;
                let b = hex_list::<20>(b).pop()?;
                Some((a, b))
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
            .iter()
            .filter_map(|(id, sk)| store.cert(&RsaIdentity(*id), sk))
            .collect()
    } else {
        return short(ctx, 400, "Bad request", kind);
    };
    if certs.is_empty() {
        return short(ctx, 404, NOT_FOUND, kind);
    }
    if let Some(ims) = ims {
        certs.retain(|c| c.published >= ims);
        if certs.is_empty() {
            return short(ctx, 304, "Not modified", kind);
        }
    }
    let bodies = certs.iter().map(|c| c.body.clone()).collect();
    streamed(ctx, kind, accept, bodies, Some(KEYS_CACHE_LIFETIME), true)
}

/// An answer compressed per request, while it is sent (C tor compresses these as it spools
/// them): the documents are shared, not copied.
fn streamed(
    ctx: &Context<'_>,
    kind: Kind,
    accept: Methods,
    docs: Vec<Arc<[u8]>>,
    lifetime: Option<u64>,
    length_if_identity: bool,
) -> Answer {
    let method = accept.best(&PREF_STREAMING);
    let total: usize = docs.iter().map(|d| d.len()).sum();
    // C tor guesses half the size for a compressed answer.
    let guess = if method == Method::Identity {
        total
    } else {
        total / 2
    };
    if guess as u64 > ctx.write_allowance {
        return short(ctx, 503, BUSY, kind);
    }
    let length = (length_if_identity && method == Method::Identity).then_some(total);
    let mut a = ok(
        ctx,
        kind,
        "text/plain",
        method,
        length,
        None,
        lifetime,
        docs,
    );
    // Compressed by the server as it sends the documents, not here.
    a.streamed = method != Method::Identity;
    a
}

/// RFC 1123 date as C tor writes it (`format_rfc1123_time`).
pub fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

/// `HTTP/1.0 <status> <reason>` with a Date and an empty body (C tor
/// `write_short_http_response`).
pub fn short(ctx: &Context<'_>, status: u16, reason: &str, kind: Kind) -> Answer {
    short_at(ctx.now, status, reason, kind)
}

/// As [`short`], for answers given before a [`Context`] exists.
pub fn short_at(now: u64, status: u16, reason: &str, kind: Kind) -> Answer {
    Answer {
        status,
        kind,
        head: format!(
            "HTTP/1.0 {status} {reason}\r\nDate: {}\r\n\r\n",
            http_date(now)
        )
        .into_bytes(),
        body: Vec::new(),
        encoding: Method::Identity,
        streamed: false,
    }
}

/// A `200 OK` (C tor `write_http_response_header_impl`): `lifetime` `Some(0)` sends
/// `Pragma: no-cache`, `Some(n)` an `Expires`.
#[allow(clippy::too_many_arguments)]
fn ok(
    ctx: &Context<'_>,
    kind: Kind,
    content_type: &str,
    method: Method,
    length: Option<usize>,
    extra: Option<&str>,
    lifetime: Option<u64>,
    body: Vec<Arc<[u8]>>,
) -> Answer {
    use std::fmt::Write;
    let mut h = String::with_capacity(256);
    let _ = write!(h, "HTTP/1.0 200 OK\r\nDate: {}\r\n", http_date(ctx.now));
    let _ = write!(h, "Content-Type: {content_type}\r\n");
    if let Some(addr) = ctx.peer_for_header {
        let _ = write!(h, "X-Your-Address-Is: {addr}\r\n");
    }
    let _ = write!(h, "Content-Encoding: {}\r\n", method.name());
    if let Some(len) = length {
        let _ = write!(h, "Content-Length: {len}\r\n");
    }
    match lifetime {
        Some(0) => h.push_str("Pragma: no-cache\r\n"),
        Some(n) => {
            let _ = write!(h, "Expires: {}\r\n", http_date(ctx.now + n));
        }
        None => {}
    }
    if let Some(e) = extra {
        h.push_str(e);
    }
    h.push_str("\r\n");
    Answer {
        status: 200,
        kind,
        head: h.into_bytes(),
        body,
        encoding: method,
        streamed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dircache::request::{parse, Parsed};
    use std::io::Read;

    const NOW: u64 = 1_796_565_600; // 2026-12-06 14:00:00 UTC
    const AUTH_A: [u8; 20] = [0xAA; 20];
    const AUTH_B: [u8; 20] = [0xBB; 20];

    fn consensus_text(flavor: &str) -> Vec<u8> {
        let mut v =
            format!("network-status-version 3 {flavor}\nvote-status consensus\n").into_bytes();
        for i in 0..500 {
            v.extend_from_slice(
                format!(
                    "r relay{i} AAAA 2026-12-06 12:00:00 10.0.0.1 9001 0\ns Fast Running Valid\n"
                )
                .as_bytes(),
            );
        }
        v
    }

    fn store() -> DirStore {
        let mut s = DirStore::new();
        for (flavor, name) in [
            (ConsensusFlavor::Ns, "ns"),
            (ConsensusFlavor::Microdesc, "microdesc"),
        ] {
            s.set_consensus(ConsensusDoc {
                body: Arc::from(consensus_text(name)),
                flavor,
                valid_after: NOW - 600,
                fresh_until: NOW + 3000,
                valid_until: NOW + 10200,
                signers: vec![RsaIdentity(AUTH_A), RsaIdentity(AUTH_B)],
                sha3_digest: [3; 32],
                try_diff_newer_than: crate::dircache::store::TRY_DIFF_DEFAULT_SECS,
            });
        }
        s.insert_diff(
            ConsensusFlavor::Microdesc,
            [9; 32],
            Arc::from(&b"network-status-diff-version 1\n"[..]),
        );
        s.insert_microdesc([1; 32], doc("onion-key\nmd one\n", NOW));
        s.insert_microdesc([2; 32], doc("onion-key\nmd two\n", NOW));
        s.insert_server_descriptor(
            RsaIdentity([5; 20]),
            [6; 20],
            doc("router five\n", NOW - 3600),
        );
        s.insert_server_descriptor(
            RsaIdentity([7; 20]),
            [8; 20],
            doc("router seven\n", NOW - 3 * 86400),
        );
        s.insert_cert(
            RsaIdentity(AUTH_A),
            [0x11; 20],
            doc("dir-key-certificate-version 3\nA\n", NOW - 86400),
        );
        s
    }

    fn doc(t: &str, published: u64) -> Document {
        Document {
            body: Arc::from(t.as_bytes()),
            published,
        }
    }

    struct Env {
        store: DirStore,
        page: Arc<[u8]>,
        own: Document,
        allowance: u64,
        page_on: bool,
    }

    impl Env {
        fn new() -> Env {
            let mut store = store();
            precompress_all(&mut store);
            Env {
                store,
                page: Arc::from(&b"<html>exit notice</html>"[..]),
                own: doc("router me\n", NOW),
                allowance: u64::MAX,
                page_on: true,
            }
        }

        fn get(&mut self, text: &str) -> (String, Vec<u8>) {
            let Parsed::Request(req) = parse(text.as_bytes()) else {
                panic!("{text}")
            };
            let ctx = Context {
                now: NOW,
                store: &self.store,
                front_page: self.page_on.then_some(&self.page),
                own_descriptor: Some(&self.own),
                peer_for_header: None,
                write_allowance: self.allowance,
            };
            let a = answer(&ctx, req).expect("an answer");
            let head = String::from_utf8(a.head.clone()).unwrap();
            let body = a.to_bytes()[a.head.len()..].to_vec();
            // The head always matches the status, and ends once.
            assert!(
                head.starts_with(&format!("HTTP/1.0 {} ", a.status)),
                "{head}"
            );
            assert!(head.ends_with("\r\n\r\n"));
            (head, body)
        }
    }

    fn status(head: &str) -> &str {
        head.lines().next().unwrap()
    }

    #[test]
    fn front_page_is_html_or_404() {
        let mut e = Env::new();
        let (h, b) = e.get("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert!(h.contains("Content-Type: text/html\r\n"));
        assert!(h.contains("Content-Encoding: identity\r\n"));
        assert!(h.contains("Content-Length: 24\r\n"));
        assert!(h.contains(&format!("Expires: {}\r\n", http_date(NOW + 1200))));
        assert_eq!(b, b"<html>exit notice</html>");
        e.page_on = false;
        let (h, b) = e.get("GET /tor/ HTTP/1.0\r\n\r\n");
        assert_eq!(
            h,
            format!("HTTP/1.0 404 Not found\r\nDate: {}\r\n\r\n", http_date(NOW))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn consensus_plain_z_and_flavours() {
        let mut e = Env::new();
        let (h, b) = e.get("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert!(h.contains("Content-Encoding: identity\r\n"));
        assert!(h.contains("Vary: X-Or-Diff-From-Consensus\r\n"));
        assert!(!h.contains("Content-Length"));
        assert!(h.contains(&format!("Expires: {}\r\n", http_date(NOW + 3000))));
        assert_eq!(b, consensus_text("microdesc"));

        let (h, b) = e.get("GET /tor/status-vote/current/consensus.z HTTP/1.0\r\n\r\n");
        assert!(h.contains("Content-Encoding: deflate\r\n"));
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&b[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, consensus_text("ns"));

        let (h, _) = e.get("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\nAccept-Encoding: deflate, x-zstd, x-tor-lzma\r\n\r\n");
        assert!(h.contains("Content-Encoding: x-tor-lzma\r\n"));
        let (h, b) = e.get("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\nAccept-Encoding: x-zstd\r\n\r\n");
        assert!(h.contains("Content-Encoding: x-zstd\r\n"));
        assert_eq!(
            zstd::decode_all(&b[..]).unwrap(),
            consensus_text("microdesc")
        );
        // An unknown flavour is served as ns, as C tor.
        let (_, b) = e.get("GET /tor/status-vote/current/consensus-bogus HTTP/1.0\r\n\r\n");
        assert_eq!(b, consensus_text("ns"));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02X}")).collect()
    }

    #[test]
    fn consensus_signer_rule() {
        let mut e = Env::new();
        let a = hex(&AUTH_A);
        let b = hex(&AUTH_B);
        let ok1 = format!(
            "GET /tor/status-vote/current/consensus/{}+{}+CCCC HTTP/1.0\r\n\r\n",
            &a[..10],
            b.to_lowercase()
        );
        assert_eq!(status(&e.get(&ok1).0), "HTTP/1.0 200 OK");
        let bad = format!(
            "GET /tor/status-vote/current/consensus/{}+CCCC+DDDD HTTP/1.0\r\n\r\n",
            &a[..10]
        );
        assert_eq!(
            status(&e.get(&bad).0),
            "HTTP/1.0 404 Consensus not signed by sufficient number of requested authorities"
        );
    }

    #[test]
    fn consensus_diffs_and_not_modified() {
        let mut e = Env::new();
        let nine = hex(&[9; 32]);
        let (h, b) = e.get(&format!("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\nX-Or-Diff-From-Consensus: zz {nine}\r\n\r\n"));
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert_eq!(b, b"network-status-diff-version 1\n");
        // The diff form of the URL demands a diff.
        let (h, _) = e.get(&format!(
            "GET /tor/status-vote/current/consensus-microdesc/diff/{nine} HTTP/1.0\r\n\r\n"
        ));
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        let other = hex(&[4; 32]);
        let (h, _) = e.get(&format!(
            "GET /tor/status-vote/current/consensus/diff/{other} HTTP/1.0\r\n\r\n"
        ));
        assert_eq!(status(&h), "HTTP/1.0 404 No such diff available");
        let (h, _) = e.get("GET /tor/status-vote/current/consensus/diff/xyz HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "HTTP/1.0 404 Couldn't parse request");
        // Asking for a diff from the current one: not modified.
        let cur = hex(&[3; 32]);
        let (h, _) = e.get(&format!("GET /tor/status-vote/current/consensus HTTP/1.0\r\nX-Or-Diff-From-Consensus: {cur}\r\n\r\n"));
        assert_eq!(status(&h), "HTTP/1.0 304 Not modified");
        // If-Modified-Since after valid-after: 304; before: the document.
        let (h, _) = e.get(&format!(
            "GET /tor/status-vote/current/consensus HTTP/1.0\r\nIf-Modified-Since: {}\r\n\r\n",
            http_date(NOW)
        ));
        assert_eq!(status(&h), "HTTP/1.0 304 Not modified");
        let (h, _) = e.get(&format!(
            "GET /tor/status-vote/current/consensus HTTP/1.0\r\nIf-Modified-Since: {}\r\n\r\n",
            http_date(NOW - 3600)
        ));
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
    }

    #[test]
    fn consensus_missing_stale_or_busy() {
        let mut e = Env::new();
        e.store = DirStore::new();
        let (h, _) = e.get("GET /tor/status-vote/current/consensus-microdesc.z HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "HTTP/1.0 404 Not found");
        let mut e = Env::new();
        let mut c = e.store.consensus(ConsensusFlavor::Ns).unwrap().clone();
        c.valid_until = NOW - REASONABLY_LIVE_TIME - 1;
        e.store.set_consensus(c.clone());
        assert_eq!(
            status(
                &e.get("GET /tor/status-vote/current/consensus HTTP/1.0\r\n\r\n")
                    .0
            ),
            "HTTP/1.0 404 Consensus is too old"
        );
        c.valid_after = NOW + REASONABLY_LIVE_TIME + 1;
        c.valid_until = NOW + REASONABLY_LIVE_TIME * 2;
        e.store.set_consensus(c);
        assert_eq!(
            status(
                &e.get("GET /tor/status-vote/current/consensus HTTP/1.0\r\n\r\n")
                    .0
            ),
            "HTTP/1.0 404 Consensus is too new"
        );
        e.allowance = 100;
        assert_eq!(
            status(
                &e.get("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\n\r\n")
                    .0
            ),
            "HTTP/1.0 503 Directory busy, try again later"
        );
    }

    #[test]
    fn microdescs_by_base64_digest() {
        let mut e = Env::new();
        let b64 = |d: [u8; 32]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(d);
        let url = format!(
            "GET /tor/micro/d/{}-{}-{}-!!bad HTTP/1.0\r\n\r\n",
            b64([2; 32]),
            b64([1; 32]),
            b64([2; 32])
        );
        let (h, b) = e.get(&url);
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert!(h.contains(&format!(
            "Expires: {}\r\n",
            http_date(NOW + MICRODESC_CACHE_LIFETIME)
        )));
        // Sorted by digest, duplicates dropped.
        assert_eq!(b, b"onion-key\nmd one\nonion-key\nmd two\n");
        let (h, b) = e.get(&format!(
            "GET /tor/micro/d/{}.z HTTP/1.0\r\n\r\n",
            b64([1; 32])
        ));
        assert!(h.contains("Content-Encoding: deflate\r\n"));
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&b[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"onion-key\nmd one\n");
        let (h, _) = e.get(&format!(
            "GET /tor/micro/d/{} HTTP/1.0\r\n\r\n",
            b64([9; 32])
        ));
        assert_eq!(status(&h), "HTTP/1.0 404 Not found");
    }

    #[test]
    fn server_descriptors_by_digest_fp_all_authority() {
        let mut e = Env::new();
        let (h, b) = e.get(&format!(
            "GET /tor/server/d/{}+{} HTTP/1.0\r\n\r\n",
            hex(&[6; 20]),
            hex(&[8; 20])
        ));
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert!(h.contains("Pragma: no-cache\r\n"));
        assert_eq!(b, b"router five\nrouter seven\n");
        // By fingerprint, a descriptor older than a day is not served.
        let (_, b) = e.get(&format!(
            "GET /tor/server/fp/{}+{} HTTP/1.0\r\n\r\n",
            hex(&[5; 20]),
            hex(&[7; 20])
        ));
        assert_eq!(b, b"router five\n");
        let (h, _) = e.get(&format!(
            "GET /tor/server/fp/{} HTTP/1.0\r\n\r\n",
            hex(&[7; 20])
        ));
        assert_eq!(status(&h), "HTTP/1.0 404 Not found");
        let (h, b) = e.get("GET /tor/server/all HTTP/1.0\r\n\r\n");
        assert!(h.contains(&format!(
            "Expires: {}\r\n",
            http_date(NOW + FULL_DIR_CACHE_LIFETIME)
        )));
        // `all` has the same publish cutoff as `fp/` (C tor `handle_get_descriptor`).
        assert_eq!(b, b"router five\n");
        let (_, b) = e.get("GET /tor/server/authority HTTP/1.0\r\n\r\n");
        assert_eq!(b, b"router me\n");
        assert_eq!(
            status(&e.get("GET /tor/server/bogus HTTP/1.0\r\n\r\n").0),
            "HTTP/1.0 404 Not found"
        );
        assert_eq!(
            status(&e.get("GET /tor/extra/all HTTP/1.0\r\n\r\n").0),
            "HTTP/1.0 404 Not found"
        );
    }

    #[test]
    fn keys_all_fp_fpsk_and_if_modified_since() {
        let mut e = Env::new();
        let cert = b"dir-key-certificate-version 3\nA\n";
        let (h, b) = e.get("GET /tor/keys/all HTTP/1.0\r\n\r\n");
        assert!(h.contains(&format!("Content-Length: {}\r\n", cert.len())));
        assert_eq!(b, cert);
        let (_, b) = e.get(&format!(
            "GET /tor/keys/fp/{} HTTP/1.0\r\n\r\n",
            hex(&AUTH_A)
        ));
        assert_eq!(b, cert);
        let (_, b) = e.get(&format!(
            "GET /tor/keys/fp-sk/{}-{} HTTP/1.0\r\n\r\n",
            hex(&AUTH_A),
            hex(&[0x11; 20])
        ));
        assert_eq!(b, cert);
        let (h, _) = e.get(&format!(
            "GET /tor/keys/fp-sk/{}-{} HTTP/1.0\r\n\r\n",
            hex(&AUTH_A),
            hex(&[0x12; 20])
        ));
        assert_eq!(status(&h), "HTTP/1.0 404 Not found");
        let (h, _) = e.get(&format!(
            "GET /tor/keys/all HTTP/1.0\r\nIf-Modified-Since: {}\r\n\r\n",
            http_date(NOW)
        ));
        assert_eq!(status(&h), "HTTP/1.0 304 Not modified");
        assert_eq!(
            status(&e.get("GET /tor/keys/what HTTP/1.0\r\n\r\n").0),
            "HTTP/1.0 400 Bad request"
        );
        let (h, b) = e.get("GET /tor/keys/all HTTP/1.0\r\nAccept-Encoding: x-zstd\r\n\r\n");
        assert!(!h.contains("Content-Length"));
        assert_eq!(zstd::decode_all(&b[..]).unwrap(), cert);
        // By signing-key digest alone (C tor `authority_cert_get_by_sk_digest`); bad hex
        // items dropped, duplicates merged.
        let cert_b = b"dir-key-certificate-version 3\nB\n";
        e.store.insert_cert(
            RsaIdentity(AUTH_B),
            [0x22; 20],
            doc(std::str::from_utf8(cert_b).unwrap(), NOW - 86400),
        );
        let (h, b) = e.get(&format!(
            "GET /tor/keys/sk/{}+{}+zz+{} HTTP/1.0\r\n\r\n",
            hex(&[0x22; 20]),
            hex(&[0x11; 20]),
            hex(&[0x22; 20])
        ));
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        // Sorted by signing-key digest, as C tor's DSR_SORT_UNIQ.
        assert_eq!(b, [&cert[..], &cert_b[..]].concat());
        let (_, b) = e.get(&format!(
            "GET /tor/keys/sk/{} HTTP/1.0\r\n\r\n",
            hex(&[0x22; 20])
        ));
        assert_eq!(b, cert_b);
        let (h, _) = e.get(&format!(
            "GET /tor/keys/sk/{} HTTP/1.0\r\n\r\n",
            hex(&[0x33; 20])
        ));
        assert_eq!(status(&h), "HTTP/1.0 404 Not found");
    }

    #[test]
    fn robots_posts_unknown_and_bridges() {
        let mut e = Env::new();
        let (h, b) = e.get("GET /robots.txt HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "HTTP/1.0 200 OK");
        assert_eq!(b, b"User-agent: *\r\nDisallow: /\r\n");
        assert_eq!(
            status(&e.get("GET /tor/nothing HTTP/1.0\r\n\r\n").0),
            "HTTP/1.0 404 Not found"
        );
        assert_eq!(
            status(
                &e.get("GET /tor/status-vote/next/consensus HTTP/1.0\r\n\r\n")
                    .0
            ),
            "HTTP/1.0 404 Not found"
        );
        assert_eq!(
            status(
                &e.get("POST /tor/ HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
                    .0
            ),
            "HTTP/1.0 400 Nonauthoritative directory does not accept posted server descriptors"
        );
        let Parsed::Request(req) = parse(b"GET /tor/networkstatus-bridges HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        let ctx = Context {
            now: NOW,
            store: &e.store,
            front_page: None,
            own_descriptor: None,
            peer_for_header: None,
            write_allowance: 0,
        };
        assert!(answer(&ctx, req).is_none());
    }

    #[test]
    fn your_address_as_c_tors_is_local_to_resolve_addr() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // Private and local peers are never told (tor_addr_is_internal), IPv4 or IPv6.
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "100.64.0.1",
            "172.16.5.5",
            "192.168.0.9",
            "169.254.1.1",
            "0.0.0.0",
            "::",
            "::1",
            "fe80::1",
            "fd00::5",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(your_address(Some(ip(local)), &[]), None, "{local}");
        }
        // A peer with a public-looking address is told it, IPv4 and IPv6.
        for public in [
            "198.51.100.4",
            "100.128.0.1",
            "2001:db8:5::9",
            "2a01:4f8::1",
        ] {
            let p = ip(public);
            assert_eq!(your_address(Some(p), &[]), Some(p), "{public}");
        }
        // No address known (a BEGIN_DIR stream whose channel address is unknown): none.
        assert_eq!(your_address(None, &[ip("198.51.100.200")]), None);
        // Our /24 (IPv4) and /48 (IPv6) count as local; the next network does not, and an
        // address of the other family never matches.
        let ours = [ip("198.51.100.200"), ip("2001:db8:1:ff::1")];
        assert_eq!(your_address(Some(ip("198.51.100.4")), &ours), None);
        let q = ip("198.51.101.4");
        assert_eq!(your_address(Some(q), &ours), Some(q));
        assert_eq!(your_address(Some(ip("2001:db8:1:7::9")), &ours), None);
        let r = ip("2001:db8:2::9");
        assert_eq!(your_address(Some(r), &ours), Some(r));
        let v6only = [ip("2001:db8:1::1")];
        let p = ip("198.51.100.4");
        assert_eq!(your_address(Some(p), &v6only), Some(p));
    }

    #[test]
    fn x_your_address_is_only_when_given() {
        let e = Env::new();
        let ctx = Context {
            now: NOW,
            store: &e.store,
            front_page: Some(&e.page),
            own_descriptor: None,
            peer_for_header: Some("203.0.113.7".parse().unwrap()),
            write_allowance: u64::MAX,
        };
        let Parsed::Request(req) = parse(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        let a = answer(&ctx, req).unwrap();
        assert!(String::from_utf8(a.head)
            .unwrap()
            .contains("X-Your-Address-Is: 203.0.113.7\r\n"));
    }

    /// Every compressed form the mirror keeps (as `Mirror::install` makes them).
    fn precompress_all(s: &mut DirStore) {
        for flavor in [ConsensusFlavor::Ns, ConsensusFlavor::Microdesc] {
            let Some(c) = s.consensus(flavor) else {
                continue;
            };
            let body = c.body.clone();
            for m in compress::CONSENSUS_FORMS {
                let z = compress::compress(m, &[&body], true).unwrap();
                assert!(s.insert_compressed(flavor, None, m, Arc::from(z)));
            }
        }
        let d: Arc<[u8]> = s
            .consensus_diff(ConsensusFlavor::Microdesc, &[9; 32])
            .unwrap()
            .clone();
        for m in compress::DIFF_FORMS {
            let z = compress::compress(m, &[&d], true).unwrap();
            assert!(s.insert_compressed(
                ConsensusFlavor::Microdesc,
                Some([9; 32]),
                m,
                Arc::from(z)
            ));
        }
    }

    fn decompress(m: Method, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match m {
            Method::Identity => out.extend_from_slice(b),
            Method::Deflate => {
                flate2::read::ZlibDecoder::new(b)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Method::Gzip => {
                flate2::read::GzDecoder::new(b)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Method::Zstd => out = zstd::decode_all(b).unwrap(),
            Method::Lzma => {
                let st = liblzma::stream::Stream::new_lzma_decoder(u64::MAX).unwrap();
                liblzma::read::XzDecoder::new_stream(b, st)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    /// C tor's choice of stored form for each Accept-Encoding (dircache.c
    /// `find_best_consensus`, `find_best_diff`, `FALLBACK_COMPRESS_METHOD`), and nothing is
    /// compressed per request: the bytes sent are the stored ones.
    #[test]
    fn consensus_and_diff_forms_are_c_tors_and_precompressed() {
        let mut e = Env::new();
        let nine = hex(&[9; 32]);
        let cons = |enc: &str| {
            format!("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\nAccept-Encoding: {enc}\r\n\r\n")
        };
        let diff = |enc: &str| {
            format!("GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\nAccept-Encoding: {enc}\r\nX-Or-Diff-From-Consensus: {nine}\r\n\r\n")
        };
        let want_cons = consensus_text("microdesc");
        let want_diff = b"network-status-diff-version 1\n".to_vec();
        for (req, want, enc) in [
            (cons("identity"), &want_cons, Method::Identity),
            (cons("gzip"), &want_cons, Method::Deflate),
            (cons("deflate, gzip"), &want_cons, Method::Deflate),
            (cons("x-zstd, deflate"), &want_cons, Method::Zstd),
            (cons("x-zstd, x-tor-lzma"), &want_cons, Method::Lzma),
            (diff("identity"), &want_diff, Method::Identity),
            (diff("deflate"), &want_diff, Method::Identity),
            (diff("deflate, gzip"), &want_diff, Method::Gzip),
            (diff("gzip, x-zstd"), &want_diff, Method::Zstd),
            (diff("x-zstd, x-tor-lzma"), &want_diff, Method::Lzma),
        ] {
            let Parsed::Request(r) = parse(req.as_bytes()) else {
                panic!()
            };
            let ctx = Context {
                now: NOW,
                store: &e.store,
                front_page: None,
                own_descriptor: None,
                peer_for_header: None,
                write_allowance: u64::MAX,
            };
            let a = answer(&ctx, r).unwrap();
            assert_eq!(a.encoding, enc, "{req}");
            let h = String::from_utf8(a.head.clone()).unwrap();
            assert!(
                h.contains(&format!("Content-Encoding: {}\r\n", enc.name())),
                "{h}"
            );
            assert_eq!(a.body.len(), 1);
            assert_eq!(&decompress(enc, &a.body[0]), want, "{req}");
            if enc != Method::Identity {
                let from = (want == &want_diff).then_some([9; 32]);
                let kept = e
                    .store
                    .compressed(ConsensusFlavor::Microdesc, from.as_ref(), enc)
                    .unwrap();
                assert!(Arc::ptr_eq(kept, &a.body[0]), "sent from the store: {req}");
            }
        }
        // A form the store lacks (bound, failure) is never made here: the text is sent.
        e.store = store();
        let Parsed::Request(r) = parse(cons("x-zstd").as_bytes()) else {
            panic!()
        };
        let ctx = Context {
            now: NOW,
            store: &e.store,
            front_page: None,
            own_descriptor: None,
            peer_for_header: None,
            write_allowance: u64::MAX,
        };
        assert_eq!(answer(&ctx, r).unwrap().encoding, Method::Identity);
    }
}
