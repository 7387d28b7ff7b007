//! Drives the sans-IO exit resolver (`exit::dns::Resolver`) for one shard: owns its UDP
//! sockets (one per nameserver address family), sends what the resolver queues, feeds
//! replies and timeouts back, and hands finished lookups to the relay handler as
//! (stream, resolution) pairs for `RelayCore::dns_result`.
//!
//! The shard's ring wakes the handler when a socket is readable (`Outbox::watch_readable`);
//! the sockets are non-blocking and each read drains them up to a bound, so nothing here
//! ever blocks. Source-port randomness (the Kaminsky defence the resolver leaves to us)
//! comes from binding port 0: Linux picks a random ephemeral port.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::exit::dns::{
    Answer, DnsFailure, DnsMetrics, FailureCause, FamilyWanted, HostRequest, Lookup, Purpose,
    Refusal, Resolution, ResolvConf, ResolvConfError, Resolver, ResolverConfig,
    DEFAULT_RESOLV_CONF,
};
use crate::proto::stream::StreamHandle;
use crate::shard::{OutboxError, ShardIo};

/// Largest datagram read; the resolver advertises a 1232-byte EDNS payload, so anything
/// longer is not an answer of ours.
const RECV_BUF_LEN: usize = 4096;
/// Datagrams read per wake-up (per socket) before yielding to the rest of the shard; the
/// tick drains whatever is left.
const MAX_READS_PER_WAKE: usize = 256;

/// Loads `ServerDNSResolvConfFile` (or the system default) into a resolver configuration.
/// Errors name the file and line.
pub fn load_resolver_config(path: Option<&Path>) -> Result<ResolverConfig, ResolvConfError> {
    let path: PathBuf = path.map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), Path::to_owned);
    let conf = ResolvConf::load(&path)?;
    if conf.nameservers.is_empty() {
        return Err(ResolvConfError::InFile {
            path,
            source: Box::new(ResolvConfError::NoNameserver),
        });
    }
    Ok(ResolverConfig::from_resolv_conf(&conf))
}

/// One shard's exit resolver and its sockets.
pub struct ExitDns {
    resolver: Resolver<StdRng>,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    /// Lookups in flight, by the resolver's handle.
    waiting: HashMap<crate::exit::dns::QueryHandle, StreamHandle>,
    /// The same, by stream, to cancel a lookup when its stream closes.
    by_stream: HashMap<StreamHandle, crate::exit::dns::QueryHandle>,
    buf: Box<[u8; RECV_BUF_LEN]>,
    /// Queries the socket refused (the resolver retransmits them on its timeout).
    pub send_errors: u64,
}

impl ExitDns {
    /// Binds a non-blocking UDP socket for each address family among the nameservers.
    pub fn new(config: ResolverConfig, now: Instant) -> io::Result<ExitDns> {
        let bind = |any: SocketAddr| -> io::Result<UdpSocket> {
            let s = UdpSocket::bind(any)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let has = |v4: bool| config.nameservers.iter().any(|a| a.is_ipv4() == v4);
        let v4 = if has(true) {
            Some(bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?)
        } else {
            None
        };
        let v6 = if has(false) {
            Some(bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?)
        } else {
            None
        };
        let waiting = HashMap::with_capacity(config.max_inflight);
        let by_stream = HashMap::with_capacity(config.max_inflight);
        Ok(ExitDns {
            resolver: Resolver::new(config, StdRng::from_entropy(), now),
            v4,
            v6,
            waiting,
            by_stream,
            buf: Box::new([0; RECV_BUF_LEN]),
            send_errors: 0,
        })
    }

    /// Asks the shard to wake us when a reply arrives.
    pub fn watch<M>(&self, out: &mut impl ShardIo<M>) -> Result<(), OutboxError> {
        for s in [&self.v4, &self.v6].into_iter().flatten() {
            out.watch_readable(s.as_fd())?;
        }
        Ok(())
    }

    /// The resolver's counters.
    pub fn metrics(&self) -> DnsMetrics {
        self.resolver.metrics()
    }

    /// Starts a lookup for `stream`. `Some` is the answer now (literal, cache, refusal);
    /// `None` means it comes later out of [`ExitDns::read`] or [`ExitDns::on_tick`].
    pub fn resolve(
        &mut self,
        stream: StreamHandle,
        request: &HostRequest,
        want_ipv6: bool,
        now: Instant,
    ) -> Option<Resolution> {
        let (host, purpose) = match request {
            HostRequest::Literal(ip) => return Some(Resolution::literal(*ip)),
            HostRequest::Forward(name) => (name.as_bytes(), Purpose::Connect),
            // The PTR name re-classifies as the same reverse request.
            HostRequest::Reverse { name, .. } => (name.as_bytes(), Purpose::Resolve),
        };
        let family = if want_ipv6 {
            FamilyWanted::Both
        } else {
            FamilyWanted::Ipv4
        };
        match self.resolver.resolve(host, purpose, family, now) {
            Ok(Lookup::Ready(r)) => Some(r),
            Ok(Lookup::Pending(h)) => {
                self.waiting.insert(h, stream);
                self.by_stream.insert(stream, h);
                None
            }
            Err(refusal) => Some(refused(refusal)),
        }
    }

    /// The stream closed (client END, circuit DESTROY): stop waiting for its lookup. The
    /// resolver drops the query if nobody else waits on the name, so its slot is free at
    /// once and a late answer reaches no stream. `false` if nothing was pending for it.
    pub fn cancel(&mut self, stream: StreamHandle) -> bool {
        let Some(h) = self.by_stream.remove(&stream) else {
            return false;
        };
        self.waiting.remove(&h);
        self.resolver.cancel(h)
    }

    /// Lookups waiting on an answer, by stream (the handler's view; for tests and checks).
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Sends every query the resolver has queued.
    pub fn transmit(&mut self) {
        while let Some((to, bytes)) = self.resolver.poll_transmit() {
            let sock = if to.is_ipv4() { &self.v4 } else { &self.v6 };
            let sent = sock.as_ref().map(|s| s.send_to(bytes, to));
            if !matches!(sent, Some(Ok(_))) {
                // Lost like a dropped datagram: the resolver's timeout retries it.
                self.send_errors += 1;
            }
        }
    }

    /// Reads pending replies (bounded) and appends finished lookups to `done`.
    pub fn read(&mut self, now: Instant, done: &mut Vec<(StreamHandle, Resolution)>) {
        for v6 in [false, true] {
            for _ in 0..MAX_READS_PER_WAKE {
                let sock = if v6 { &self.v6 } else { &self.v4 };
                let Some(sock) = sock else { break };
                let (n, from) = match sock.recv_from(&mut self.buf[..]) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // WouldBlock, or an ICMP error (ECONNREFUSED) queued on the socket: the
                    // resolver's timeout deals with the lost query.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                for c in self.resolver.handle_datagram(from, &self.buf[..n], now) {
                    if let Some(stream) = self.waiting.remove(&c.handle) {
                        self.by_stream.remove(&stream);
                        done.push((stream, c.resolution));
                    }
                }
            }
        }
        // A SERVFAIL may have queued a retry at another nameserver.
        self.transmit();
    }

    /// Retries and gives up on queries whose time has come; reads anything a bounded read
    /// left behind.
    pub fn on_tick(&mut self, now: Instant, done: &mut Vec<(StreamHandle, Resolution)>) {
        if self.resolver.next_timeout().is_some_and(|t| t <= now) {
            for c in self.resolver.handle_timeout(now) {
                if let Some(stream) = self.waiting.remove(&c.handle) {
                    self.by_stream.remove(&stream);
                    done.push((stream, c.resolution));
                }
            }
        }
        self.read(now, done);
    }
}

/// The resolution reported for a lookup that was never started: a bad name is a permanent
/// failure (END RESOLVEFAILED / RESOLVED 0xF1); being out of room is transient (0xF0).
fn refused(r: Refusal) -> Resolution {
    let cause = if r.is_transient() {
        FailureCause::Timeout
    } else {
        FailureCause::NxDomain
    };
    Resolution {
        ipv4: Answer::Failed(DnsFailure { cause }),
        ..Resolution::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::dns::NameError;

    #[test]
    fn refusals_map_to_permanence() {
        let bad = refused(Refusal::Name(NameError::Empty));
        assert!(!bad.failure().expect("a failure").is_transient());
        let full = refused(Refusal::TooManyInFlight);
        assert!(full.failure().expect("a failure").is_transient());
    }

    #[test]
    fn resolv_conf_errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("fors-exitdns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, "search x\nnameserver not-an-ip\n").unwrap();
        let msg = load_resolver_config(Some(&bad)).unwrap_err().to_string();
        assert!(msg.contains("bad.conf") && msg.contains("line 2"), "{msg}");
        let empty = dir.join("empty.conf");
        std::fs::write(&empty, "# nothing\n").unwrap();
        let msg = load_resolver_config(Some(&empty)).unwrap_err().to_string();
        assert!(msg.contains("empty.conf"), "{msg}");
        let good = dir.join("good.conf");
        std::fs::write(&good, "nameserver 127.0.0.1:5353\noptions timeout:2\n").unwrap();
        let c = load_resolver_config(Some(&good)).unwrap();
        assert_eq!(c.nameservers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.timeout, std::time::Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A UDP socket on loopback standing in for the nameserver (5 s read timeout), and a
    /// resolver config aimed at it with deterministic queries.
    fn fake_nameserver() -> (UdpSocket, ResolverConfig) {
        let ns = UdpSocket::bind("127.0.0.1:0").unwrap();
        ns.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut config = ResolverConfig::new(vec![ns.local_addr().unwrap()]);
        config.randomize_case = false;
        config.edns_udp_payload = None;
        (ns, config)
    }

    /// The answer to `query`: its header and question with QR|RA set, and one A record
    /// 127.0.0.2 (TTL 60).
    fn answer_127_0_0_2(query: &[u8]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // ANCOUNT
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
        r
    }

    /// A query goes out over the real socket to a fake nameserver on loopback, whose reply
    /// comes back through `read` as a completion for the stream.
    #[test]
    fn round_trip_over_loopback() {
        let (ns, config) = fake_nameserver();
        let now = Instant::now();
        let mut dns = ExitDns::new(config, now).unwrap();
        let name = crate::exit::dns::DnsName::from_bytes(b"relay.fors.test").unwrap();
        let stream = StreamHandle { idx: 7, gen: 1 };
        assert!(dns
            .resolve(stream, &HostRequest::Forward(name), false, now)
            .is_none());
        dns.transmit();
        let mut q = [0u8; 512];
        let (n, client) = ns.recv_from(&mut q).unwrap();
        let r = answer_127_0_0_2(&q[..n]);
        ns.send_to(&r, client).unwrap();
        let mut done = Vec::new();
        for _ in 0..500 {
            dns.read(now, &mut done);
            if !done.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, stream);
        assert_eq!(
            done[0].1.ipv4.found().map(|(a, _)| *a),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(dns.pending(), 0);
        assert!(!dns.cancel(stream));
    }

    /// A stream that closes mid-lookup frees the resolver's slot at once; the nameserver's
    /// late answer is read and dropped without a completion.
    #[test]
    fn cancelled_stream_gets_no_late_answer() {
        let (ns, mut config) = fake_nameserver();
        let now = Instant::now();
        config.max_inflight = 1;
        let mut dns = ExitDns::new(config, now).unwrap();
        let name = crate::exit::dns::DnsName::from_bytes(b"gone.fors.test").unwrap();
        let stream = StreamHandle { idx: 3, gen: 2 };
        assert!(dns
            .resolve(stream, &HostRequest::Forward(name), false, now)
            .is_none());
        dns.transmit();
        let mut q = [0u8; 512];
        let (n, client) = ns.recv_from(&mut q).unwrap();
        assert_eq!((dns.pending(), dns.metrics().inflight), (1, 1));
        assert!(dns.cancel(stream));
        assert!(!dns.cancel(stream));
        assert_eq!((dns.pending(), dns.metrics().inflight), (0, 0));
        assert_eq!(dns.metrics().abandoned, 1);

        ns.send_to(&answer_127_0_0_2(&q[..n]), client).unwrap();
        let mut done = Vec::new();
        for _ in 0..500 {
            dns.read(now, &mut done);
            if dns.metrics().ignored_unknown_id > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(dns.metrics().ignored_unknown_id, 1);
        assert!(done.is_empty());
    }
}
