//! The directory worker thread: the blocking HTTP exchanges with the authorities
//! (`fors::dir::client`) run here, so the control-plane thread never waits on the network and
//! stays responsive to reloads and shutdown.
//!
//! Jobs come in over a channel; results go back over another that the control plane polls.
//! On shutdown the worker is not joined: an exchange in progress is bounded by its timeouts,
//! and the process exits anyway.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::SystemTime;

use super::reach::{self, PROBE_TIMEOUT};
use crate::config::{DirAuthority, OutboundKind};
use crate::crypto::ids::RsaIdentity;
use crate::dir::authcert::{parse_certs, AuthorityCert};
use crate::dir::client::{self, ClientError, ClientLimits, DirEndpoint};
use crate::dir::{Consensus, UploadOutcome, UploadRequest};
use crate::dircache::mirror::{AuthoritySource, FetchRequest, Source};
use crate::proto::channel::ExpectedPeer;

/// What the control plane asks for.
pub enum DirJob {
    /// Post `request` to every authority; for those that answer 200, fetch our descriptor
    /// back to confirm they stored `descriptor_text`.
    Upload {
        request: UploadRequest,
        descriptor_text: String,
        our_id: RsaIdentity,
    },
    /// Fetch, parse and verify the microdesc consensus.
    FetchConsensus,
    /// ORPort self-test: open a client link to our advertised `addr`, which must prove
    /// `expected` (our own identities).
    SelfTest {
        addr: SocketAddr,
        expected: ExpectedPeer,
    },
    /// Open a link to an authority's ORPort to read our address from its NETINFO (C
    /// `relay_addr_learn_from_dirauth`).
    LearnAddress,
}

/// One authority's answer to an upload.
#[derive(Debug)]
pub enum UploadAnswer {
    /// 200 and it serves the descriptor we sent.
    Confirmed(UploadOutcome),
    /// 200 "not new": it keeps the descriptor it has for us, which differs from ours only
    /// cosmetically by C's rule (`router_differences_are_cosmetic`: uptime, publication time,
    /// small bandwidth changes), and serves that one.
    Kept(UploadOutcome),
    /// 200 but it does not serve it (its parser dropped it; the reason is only in its log).
    NotStored(UploadOutcome, String),
    /// A refusal (the status line's reason is the authority's explanation).
    Rejected(UploadOutcome),
    /// No answer.
    Failed(ClientError),
}

/// What comes back.
pub enum DirResult {
    Uploaded(Vec<(DirEndpoint, UploadAnswer)>),
    Consensus(Result<Box<Consensus>, String>),
    SelfTest {
        addr: SocketAddr,
        result: Result<(), String>,
    },
    /// A directory authority told us our address (`from`: the authority's address; `how`:
    /// "X-Your-Address-Is" or "NETINFO").
    AddressHint {
        suggested: IpAddr,
        from: IpAddr,
        authority: String,
        how: &'static str,
    },
    /// A [`DirJob::LearnAddress`] found nothing (the reason, for the log).
    NoAddressHint(String),
}

/// An authority's ORPort and the RSA identity it must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrEndpoint {
    pub nickname: String,
    pub or_addr: SocketAddr,
    pub rsa: RsaIdentity,
}

/// The authorities' IPv4 ORPorts (`orport=` on their `DirAuthority` lines).
pub fn or_endpoints(auths: &[DirAuthority]) -> Vec<OrEndpoint> {
    auths
        .iter()
        .filter(|a| !a.bridge)
        .filter_map(|a| {
            Some(OrEndpoint {
                nickname: a.nickname.clone().unwrap_or_else(|| a.fingerprint.to_hex()),
                or_addr: SocketAddr::from((a.address, a.or_port.filter(|p| *p != 0)?)),
                rsa: a.fingerprint,
            })
        })
        .collect()
}

/// The authorities as DirPort endpoints (IPv4 address and DirPort from the `DirAuthority`
/// lines), and the v3 identities trusted to sign consensuses.
pub fn endpoints(auths: &[DirAuthority]) -> (Vec<DirEndpoint>, Vec<RsaIdentity>) {
    let eps = auths
        .iter()
        .filter(|a| !a.bridge && a.dir_port != 0)
        .map(|a| DirEndpoint {
            nickname: a.nickname.clone().unwrap_or_else(|| a.fingerprint.to_hex()),
            dir_addr: std::net::SocketAddr::from((a.address, a.dir_port)),
            v3ident: a.v3ident,
        })
        .collect();
    let trusted = auths.iter().filter_map(|a| a.v3ident).collect();
    (eps, trusted)
}

/// The authorities the mirror may ask (IPv4 address and DirPort of the `DirAuthority`
/// lines, and their relay identities): v3 authorities only, as C tor's
/// `router_pick_trusteddirserver(V3_DIRINFO, …)` picks for every document a cache fetches.
pub fn authority_sources(auths: &[DirAuthority]) -> Vec<AuthoritySource> {
    auths
        .iter()
        .filter(|a| !a.bridge && a.dir_port != 0 && a.v3ident.is_some())
        .map(|a| AuthoritySource {
            nickname: a.nickname.clone().unwrap_or_else(|| a.fingerprint.to_hex()),
            dir_addr: SocketAddr::from((a.address, a.dir_port)),
            rsa: a.fingerprint,
        })
        .collect()
}

/// Handle to the worker thread.
pub struct DirWorker {
    jobs: Sender<DirJob>,
    results: Receiver<DirResult>,
}

impl DirWorker {
    pub fn spawn(
        authorities: Vec<DirEndpoint>,
        or_authorities: Vec<OrEndpoint>,
        trusted: Vec<RsaIdentity>,
        limits: ClientLimits,
    ) -> std::io::Result<DirWorker> {
        let (jobs, job_rx) = mpsc::channel();
        let (result_tx, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("fors-dir".into())
            .spawn(move || {
                let mut w = Worker {
                    authorities,
                    or_authorities,
                    trusted,
                    limits,
                    certs: Vec::new(),
                    next_source: 0,
                    next_or_source: 0,
                    hints: Vec::new(),
                };
                while let Ok(job) = job_rx.recv() {
                    let r = match job {
                        DirJob::Upload {
                            request,
                            descriptor_text,
                            our_id,
                        } => DirResult::Uploaded(w.upload(&request, &descriptor_text, &our_id)),
                        DirJob::FetchConsensus => {
                            DirResult::Consensus(w.fetch_consensus().map(Box::new))
                        }
                        DirJob::SelfTest { addr, expected } => {
                            let bind = w.limits.outbound.source(OutboundKind::Or, addr.ip());
                            let result = reach::probe(addr, expected, bind, PROBE_TIMEOUT)
                                .map(|_| ())
                                .map_err(|e| e.to_string());
                            DirResult::SelfTest { addr, result }
                        }
                        DirJob::LearnAddress => w.learn_address(),
                    };
                    // Hints first: the control plane may need the address for what follows.
                    for h in w.hints.drain(..) {
                        if result_tx.send(h).is_err() {
                            return;
                        }
                    }
                    if result_tx.send(r).is_err() {
                        return;
                    }
                }
            })?;
        Ok(DirWorker { jobs, results })
    }

    /// Queues a job; false if the worker is gone.
    pub fn submit(&self, job: DirJob) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// A finished job's result, if any.
    pub fn poll(&self) -> Option<DirResult> {
        self.results.try_recv().ok()
    }
}

struct Worker {
    authorities: Vec<DirEndpoint>,
    or_authorities: Vec<OrEndpoint>,
    trusted: Vec<RsaIdentity>,
    limits: ClientLimits,
    certs: Vec<AuthorityCert>,
    /// Authorities are asked for the consensus in turn.
    next_source: usize,
    next_or_source: usize,
    /// Address hints gathered during the current job, sent before its result.
    hints: Vec<DirResult>,
}

impl Worker {
    fn learn_address(&mut self) -> DirResult {
        if self.or_authorities.is_empty() {
            return DirResult::NoAddressHint("no DirAuthority line has an orport=".into());
        }
        let i = self.next_or_source % self.or_authorities.len();
        self.next_or_source = self.next_or_source.wrapping_add(1);
        let a = self.or_authorities[i].clone();
        let expected = ExpectedPeer {
            rsa: a.rsa,
            ed: None,
        };
        let bind = self
            .limits
            .outbound
            .source(OutboundKind::Or, a.or_addr.ip());
        match reach::probe(a.or_addr, expected, bind, PROBE_TIMEOUT) {
            Ok(open) => match open.our_addr_according_to_peer {
                Some(suggested) => DirResult::AddressHint {
                    suggested,
                    from: a.or_addr.ip(),
                    authority: a.nickname,
                    how: "NETINFO",
                },
                None => DirResult::NoAddressHint(format!(
                    "authority {} sent no address for us in NETINFO",
                    a.nickname
                )),
            },
            Err(e) => DirResult::NoAddressHint(format!(
                "authority {} ORPort {}: {e}",
                a.nickname, a.or_addr
            )),
        }
    }

    fn upload(
        &self,
        request: &UploadRequest,
        text: &str,
        our_id: &RsaIdentity,
    ) -> Vec<(DirEndpoint, UploadAnswer)> {
        client::post_descriptor(&self.authorities, request, &self.limits)
            .into_iter()
            .map(|(a, r)| {
                let answer = match r {
                    Err(e) => UploadAnswer::Failed(e),
                    Ok(o @ UploadOutcome::Rejected { .. }) => UploadAnswer::Rejected(o),
                    Ok(o) => {
                        match client::fetch_server_descriptor(a.dir_addr, our_id, &self.limits) {
                            Ok(served) if served.contains(text) => UploadAnswer::Confirmed(o),
                            Ok(served)
                                if o == UploadOutcome::NotNew
                                    && served.contains("\nrouter-sig-ed25519 ") =>
                            {
                                UploadAnswer::Kept(o)
                            }
                            Ok(_) => UploadAnswer::NotStored(
                                o,
                                "it serves a different descriptor for us".into(),
                            ),
                            Err(e) => UploadAnswer::NotStored(o, e.to_string()),
                        }
                    }
                };
                (a, answer)
            })
            .collect()
    }

    fn fetch_consensus(&mut self) -> Result<Consensus, String> {
        if self.authorities.is_empty() {
            return Err("no authority has a DirPort".into());
        }
        if self.trusted.is_empty() {
            return Err(
                "no DirAuthority line has a v3ident, so no consensus can be verified".into(),
            );
        }
        let i = self.next_source % self.authorities.len();
        self.next_source = self.next_source.wrapping_add(1);
        let a = self.authorities[i].clone();
        let (text, hint) =
            client::fetch_text_and_hint(a.dir_addr, client::CONSENSUS_MICRODESC_PATH, &self.limits)
                .map_err(|e| format!("{}: {e}", a.nickname))?;
        if let Some(suggested) = hint {
            self.hints.push(DirResult::AddressHint {
                suggested,
                from: a.dir_addr.ip(),
                authority: a.nickname.clone(),
                how: "X-Your-Address-Is",
            });
        }
        let consensus =
            Consensus::parse(&text).map_err(|e| format!("{}: consensus: {e}", a.nickname))?;
        let now = SystemTime::now();
        consensus
            .check_reasonably_live(now)
            .map_err(|e| format!("{}: {e}", a.nickname))?;
        // Certificates: fetched the first time, and again when they no longer verify (new
        // signing keys).
        for attempt in 0..2 {
            if self.certs.is_empty() || attempt == 1 {
                let text = client::fetch_authority_certs(a.dir_addr, &self.limits)
                    .map_err(|e| format!("{}: authority certificates: {e}", a.nickname))?;
                self.certs = parse_certs(&text)
                    .into_iter()
                    .filter_map(Result::ok)
                    .collect();
            }
            match consensus.verify_signatures(&self.certs, &self.trusted, Some(now)) {
                Ok(_) => return Ok(consensus),
                Err(e) if attempt == 1 => return Err(format!("{}: {e}", a.nickname)),
                Err(_) => {}
            }
        }
        Err(format!(
            "{}: consensus signatures do not verify",
            a.nickname
        ))
    }
}

/// The directory cache's fetches (`fors-dircache` thread): the mirror's requests
/// ([`crate::dircache::mirror::FetchRequest`]), each to the source the mirror picked
/// ([`crate::dircache::mirror::Source`]): a plain GET to an authority's or a cache's
/// DirPort, or a one-hop BEGIN_DIR circuit to a cache's ORPort ([`reach::begin_dir_get`]).
/// A thread apart from [`DirWorker`], so that fetching thousands of descriptors never
/// delays our own descriptor upload or reachability test.
pub struct MirrorWorker {
    jobs: Sender<(FetchRequest, Source)>,
    results: Receiver<MirrorAnswer>,
}

/// One finished fetch: the request, its source, and the body or why it failed.
pub struct MirrorAnswer {
    pub request: FetchRequest,
    pub source: Source,
    pub answer: Result<Vec<u8>, String>,
    /// No answer came at all (connect, link, circuit, timeout): the source is marked down.
    pub link_failed: bool,
}

impl MirrorWorker {
    /// `store`: the cache's store, read for the consensus to name in a diff request.
    pub fn spawn(
        limits: ClientLimits,
        store: crate::dircache::SharedStore,
    ) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<(FetchRequest, Source)>();
        let (result_tx, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("fors-dircache".into())
            .spawn(move || {
                while let Ok((request, source)) = job_rx.recv() {
                    let extra = consensus_headers(&request, &store, SystemTime::now());
                    let r = fetch_from(&source, &request.path(), &extra, &limits);
                    let link_failed = matches!(
                        r,
                        Err(FetchError::Link { .. })
                            | Err(FetchError::Client(
                                ClientError::Io { .. } | ClientError::Timeout { .. }
                            ))
                    );
                    let answer =
                        r.map_err(|e| format!("{} {}: {e}", source.kind(), source.nickname()));
                    let a = MirrorAnswer {
                        request,
                        source,
                        answer,
                        link_failed,
                    };
                    if result_tx.send(a).is_err() {
                        return;
                    }
                }
            })?;
        Ok(MirrorWorker { jobs, results })
    }

    /// Queues a fetch from `source`; false if the worker is gone.
    pub fn submit(&self, request: FetchRequest, source: Source) -> bool {
        self.jobs.send((request, source)).is_ok()
    }

    /// A finished fetch, if any.
    pub fn poll(&self) -> Option<MirrorAnswer> {
        self.results.try_recv().ok()
    }
}

/// Why a fetch from a source failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("BEGIN_DIR to {addr}: {source}")]
    Link {
        addr: SocketAddr,
        source: reach::BeginDirError,
    },
    #[error("BEGIN_DIR to {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: crate::dir::http::HttpError,
    },
}

/// GETs `path` from `source` (see [`MirrorWorker`]); the decompressed body of a 200 answer.
fn fetch_from(
    source: &Source,
    path: &str,
    extra: &[String],
    limits: &ClientLimits,
) -> Result<Vec<u8>, FetchError> {
    let cache = match source {
        Source::Authority(a) => return Ok(fetch_bytes(a.dir_addr, path, extra, limits)?),
        Source::Cache(c) => c,
    };
    if let Some(dir) = cache.dir_addr {
        return Ok(fetch_bytes(dir, path, extra, limits)?);
    }
    let addr = cache.or_addr;
    let expected = ExpectedPeer {
        rsa: cache.rsa,
        ed: cache.ed,
    };
    let bind = limits.outbound.source(OutboundKind::Or, addr.ip());
    // The request as over a DirPort; C names the cache's address in Host as well.
    let request = get_request(path, &addr.to_string(), extra);
    let raw = reach::begin_dir_get(
        addr,
        expected,
        bind,
        request,
        limits.max_body + crate::dir::http::MAX_HEADERS,
        limits.connect_timeout,
        limits.total_timeout,
    )
    .map_err(|source| FetchError::Link { addr, source })?;
    let resp = crate::dir::http::parse_response(&raw, limits.max_body)
        .map_err(|source| FetchError::Http { addr, source })?;
    if resp.status != 200 {
        return Err(ClientError::Status {
            addr,
            status: resp.status,
            reason: resp.reason,
        }
        .into());
    }
    decoded_body(&resp).map_err(|e| {
        ClientError::Status {
            addr,
            status: resp.status,
            reason: e,
        }
        .into()
    })
}

/// C tor's `Accept-Encoding` for a fetch (dirclient.c `client_meth_pref`): every method,
/// best first, so the server sends what it keeps precompressed.
const ACCEPT_ENCODING: &str = "x-tor-lzma, x-zstd, deflate, gzip, identity";
/// C tor's `DEFAULT_IF_MODIFIED_SINCE_DELAY`.
const IF_MODIFIED_SINCE_DELAY: u64 = 180;
/// Decompressed answers larger than this are refused (a consensus is at most
/// `MAX_CONSENSUS_SIZE`; descriptor batches are far smaller).
const MAX_DECOMPRESSED: usize = 64 << 20;

/// Headers of a consensus fetch, as a C tor cache sends them (dirclient.c
/// `directory_get_from_dirserver`) when it holds a consensus of that flavour:
/// `If-Modified-Since` its valid-after plus 3 minutes (at most half its fresh interval),
/// and `X-Or-Diff-From-Consensus` its digest if it is younger than its `try-diff-for-consensus-newer-than`
/// parameter (72 hours by default), so the
/// server answers a diff (or 304 if it has nothing newer).
fn consensus_headers(
    request: &FetchRequest,
    store: &crate::dircache::SharedStore,
    now: SystemTime,
) -> Vec<String> {
    let FetchRequest::Consensus(flavor) = request else {
        return Vec::new();
    };
    let store = store.read().unwrap_or_else(|p| p.into_inner());
    let Some(c) = store.consensus(*flavor) else {
        return Vec::new();
    };
    let mut delay = IF_MODIFIED_SINCE_DELAY;
    if c.fresh_until > c.valid_after {
        delay = delay.min((c.fresh_until - c.valid_after) / 2);
    }
    let mut h = vec![format!(
        "If-Modified-Since: {}",
        crate::dircache::serve::http_date(c.valid_after + delay)
    )];
    let now = crate::keys::time::unix_secs(now);
    if c.valid_after + c.try_diff_newer_than >= now {
        h.push(format!(
            "X-Or-Diff-From-Consensus: {}",
            crate::util::hex::encode_upper(&c.sha3_digest)
        ));
    }
    h
}

/// The GET a C tor cache sends: compressed answers welcome, plus `extra` header lines.
fn get_request(path: &str, host: &str, extra: &[String]) -> Vec<u8> {
    let mut r =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept-Encoding: {ACCEPT_ENCODING}\r\n");
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// GETs `path` and returns the decompressed body; a non-200 answer is an error (C caches
/// treat a 404 for a batch as "none of these", and retry them later; a 304 for a consensus
/// means the server has nothing newer).
fn fetch_bytes(
    addr: SocketAddr,
    path: &str,
    extra: &[String],
    limits: &ClientLimits,
) -> Result<Vec<u8>, ClientError> {
    let resp = client::exchange(addr, &get_request(path, &addr.to_string(), extra), limits)?;
    if resp.status != 200 {
        return Err(ClientError::Status {
            addr,
            status: resp.status,
            reason: resp.reason,
        });
    }
    decoded_body(&resp).map_err(|e| ClientError::Status {
        addr,
        status: resp.status,
        reason: e,
    })
}

/// The body of `resp`, decompressed as its `Content-Encoding` says.
fn decoded_body(resp: &crate::dir::http::HttpResponse) -> Result<Vec<u8>, String> {
    use crate::dircache::compress::{self, Method};
    let method = match resp.header("Content-Encoding") {
        None => Method::Identity,
        Some(name) => Method::from_name(name.trim())
            .ok_or_else(|| format!("unknown Content-Encoding {name:?}"))?,
    };
    compress::decompress(method, &resp.body, MAX_DECOMPRESSED).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dircache::mirror::FetchRequest;
    use crate::dircache::store::{ConsensusDoc, ConsensusFlavor, DirStore};
    use crate::relay::dirserver::{DirServer, DirServerInputs};
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, UNIX_EPOCH};

    fn doc(body: &[u8], valid_after: u64, sha3: u8) -> ConsensusDoc {
        ConsensusDoc {
            body: Arc::from(body),
            flavor: ConsensusFlavor::Microdesc,
            valid_after,
            fresh_until: valid_after + 3600,
            valid_until: valid_after + 3 * 3600,
            signers: vec![],
            sha3_digest: [sha3; 32],
            try_diff_newer_than: crate::dircache::store::TRY_DIFF_DEFAULT_SECS,
        }
    }

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn consensus_requests_name_the_consensus_held_as_c_tor() {
        let now = SystemTime::now();
        let store: crate::dircache::SharedStore = Arc::new(RwLock::new(DirStore::new()));
        let req = FetchRequest::Consensus(ConsensusFlavor::Microdesc);
        assert!(consensus_headers(&req, &store, now).is_empty());
        let va = unix(now) - 600;
        store.write().unwrap().set_consensus(doc(b"x", va, 0xab));
        let h = consensus_headers(&req, &store, now);
        assert_eq!(
            h,
            vec![
                format!(
                    "If-Modified-Since: {}",
                    crate::dircache::serve::http_date(va + 180)
                ),
                format!("X-Or-Diff-From-Consensus: {}", "AB".repeat(32)),
            ]
        );
        // Other fetches carry neither; a consensus older than 72 h is not diffed from.
        assert!(consensus_headers(&FetchRequest::Certs, &store, now).is_empty());
        let old = unix(now) - 73 * 3600;
        store.write().unwrap().set_consensus(doc(b"x", old, 1));
        assert_eq!(consensus_headers(&req, &store, now).len(), 1);
        // The consensus parameter sets the age: 0 hours asks for no diff even from a
        // consensus 10 minutes old; 100 hours asks for one from a 73-hour-old one.
        let mut d = doc(b"x", old, 1);
        d.try_diff_newer_than = 100 * 3600;
        store.write().unwrap().set_consensus(d);
        assert_eq!(consensus_headers(&req, &store, now).len(), 2);
        let mut d = doc(b"x", va, 1);
        d.try_diff_newer_than = 0;
        store.write().unwrap().set_consensus(d);
        assert_eq!(consensus_headers(&req, &store, now).len(), 1);
        let r = String::from_utf8(get_request("/p", "h", &h)).unwrap();
        assert!(r.contains("Accept-Encoding: x-tor-lzma, x-zstd, deflate, gzip, identity\r\n"));
        assert!(r.ends_with("X-Or-Diff-From-Consensus: ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\r\n\r\n"));
    }

    /// The mirror's worker against Fors's own directory server: it asks for a diff from the
    /// consensus it holds, accepts every compression, and gets the diff's text back; and
    /// once it holds the newest, the server's 304 is a failed fetch.
    #[test]
    fn the_worker_fetches_a_compressed_diff_and_sees_not_modified() {
        let now = unix(SystemTime::now());
        // The server: the current consensus (digest 3) and a diff to it from digest 9,
        // precompressed as the mirror keeps them.
        let mut served = DirStore::new();
        served.set_consensus(doc(
            b"network-status-version 3 microdesc\nnew\n",
            now - 60,
            3,
        ));
        let diff: Arc<[u8]> = Arc::from(&b"network-status-diff-version 1\nhash 09 03\n"[..]);
        served.insert_diff(ConsensusFlavor::Microdesc, [9; 32], diff.clone());
        for m in crate::dircache::compress::DIFF_FORMS {
            let z = crate::dircache::compress::compress(m, &[&diff], true).unwrap();
            served.insert_compressed(ConsensusFlavor::Microdesc, Some([9; 32]), m, Arc::from(z));
        }
        let server = DirServer::start(
            vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
            None,
            Arc::new(RwLock::new(served)),
            DirServerInputs::default(),
        )
        .unwrap();
        let src = Source::Authority(AuthoritySource {
            nickname: "fors".into(),
            dir_addr: server.local_addrs()[0],
            rsa: RsaIdentity([7; 20]),
        });
        // The cache holds the consensus with digest 9, an hour older.
        let held: crate::dircache::SharedStore = Arc::new(RwLock::new(DirStore::new()));
        held.write()
            .unwrap()
            .set_consensus(doc(b"old", now - 3600, 9));
        let limits = ClientLimits {
            total_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        let w = MirrorWorker::spawn(limits, held.clone()).unwrap();
        let wait = |w: &MirrorWorker| {
            let end = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(a) = w.poll() {
                    return a;
                }
                assert!(std::time::Instant::now() < end, "no answer");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        assert!(w.submit(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            src.clone()
        ));
        let a = wait(&w);
        assert_eq!(a.answer.unwrap(), &diff[..]);
        // Holding the newest (valid-after + 3 min is after the server's): 304, an error.
        held.write()
            .unwrap()
            .set_consensus(doc(b"new", now - 60, 3));
        assert!(w.submit(
            FetchRequest::Consensus(ConsensusFlavor::Microdesc),
            src.clone()
        ));
        let a = wait(&w);
        let e = a.answer.unwrap_err();
        assert!(e.contains("304") && e.starts_with("authority fors"), "{e}");
        // An HTTP answer is no link failure: the source is not marked down for it.
        assert!(!a.link_failed);
        server.stop();
    }
}
