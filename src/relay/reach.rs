//! Reachability and our address on the network, as C tor 0.4.9 does them for a relay:
//!
//! * the ORPort self-test before publishing (C `selftest.c`, `relay_periodic.c`
//!   `check_for_reachability_bw_callback` / `reachability_warnings_callback`). C tor builds a
//!   circuit to its own ORPort; Fors is not a client, so the control plane opens a Tor link
//!   to the *advertised* address:port as a client and requires the peer to prove our own
//!   RSA and Ed25519 identities (tor-spec §"Negotiating and initializing channels"). That
//!   shows that the address we are about to publish leads to this relay. `AssumeReachable 1`
//!   skips it, as in C;
//! * address suggestions from directory authorities (C `relay_find_addr.c`
//!   `relay_address_new_suggestion`): the `X-Your-Address-Is` header of their DirPort
//!   answers, and the NETINFO "other address" they send on a link we open to their ORPort
//!   (C `relay_addr_learn_from_dirauth` opens one for that purpose when it has no address).
//!
//! The schedule is sans-IO ([`SelfTest`]); [`probe`] is the blocking exchange, run on the
//! directory worker thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;

use crate::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use crate::proto::channel::{
    tls, CellQueue, Channel, ChannelConfig, ChannelError, ChannelEvent, ChannelSink, ExpectedPeer,
    OpenInfo,
};

/// C `EARLY_CHECK_REACHABILITY_INTERVAL`: retry every minute while the test has not passed.
pub const EARLY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// C `TIMEOUT_UNTIL_UNREACHABILITY_COMPLAINT`: warn after 20 minutes without success, and
/// every 20 minutes after that.
pub const COMPLAINT_AFTER: Duration = Duration::from_secs(20 * 60);
/// C `DUMMY_DOWNLOAD_INTERVAL`: how often a relay without an address asks an authority.
pub const LEARN_ADDRESS_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// One probe, connect to open channel. C's circuit build timeout for a test circuit is in
/// the same range; a healthy ORPort answers in milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a probe did not reach a relay with the expected identity.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("no open channel within {0:?}")]
    Timeout(Duration),
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("link handshake: {0}")]
    Channel(#[from] ChannelError),
    #[error("the peer closed the connection during the link handshake")]
    Eof,
}

#[derive(Default)]
struct Events {
    opened: Option<OpenInfo>,
    closed: Option<ChannelError>,
}

impl ChannelSink for Events {
    fn cell(&mut self, _: CircId, _: ChanCmd, _: &mut [u8; CELL_BODY_LEN], _: &mut CellQueue) {}
    fn event(&mut self, event: ChannelEvent) {
        match event {
            ChannelEvent::Open(o) => self.opened = Some(o),
            ChannelEvent::Closed(e) => self.closed = Some(e),
            _ => {}
        }
    }
}

/// Opens a client link to `addr`, which must prove `expected`; returns what the handshake
/// established (including our address as the peer saw it). Blocking, bounded by `timeout`.
/// `bind`: the source address (`OutboundBindAddressOR`), if any.
pub fn probe(
    addr: SocketAddr,
    expected: ExpectedPeer,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<OpenInfo, ProbeError> {
    let deadline = Instant::now() + timeout;
    let mut s =
        crate::dir::client::connect_from(addr, bind, timeout).map_err(ProbeError::Connect)?;
    s.set_nodelay(true).ok();
    let tls_config = tls::client_config(tls::provider())?;
    // The RNG only picks the SNI name and link nonces here; OS entropy, nothing to replay.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut ch = Channel::new_client(
        tls_config,
        ChannelConfig::default(),
        expected,
        addr.ip(),
        SystemTime::now(),
        &mut rng,
    )?;
    let mut ev = Events::default();
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded by the deadline: every pass either moves bytes or waits on a read timeout.
    loop {
        let out = ch.pending_output();
        if !out.is_empty() {
            let n = out.len();
            s.write_all(out).map_err(ProbeError::Io)?;
            ch.consume_output(n);
        }
        if let Some(o) = ev.opened {
            return Ok(o);
        }
        if let Some(e) = ev.closed.take() {
            return Err(ProbeError::Channel(e));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Timeout(timeout));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .map_err(ProbeError::Io)?;
        match s.read(&mut buf) {
            Ok(0) => return Err(ProbeError::Eof),
            Ok(n) => {
                ch.handle_input(&buf[..n], SystemTime::now(), &mut rng, &mut ev)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(ProbeError::Io(e)),
        }
    }
}

/// Why a one-hop BEGIN_DIR fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum BeginDirError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("link: {0}")]
    Channel(#[from] ChannelError),
    #[error("{0}")]
    Circuit(#[from] crate::dir::onehop::OneHopError),
    #[error("the cache closed the connection before the answer ended")]
    Eof,
}

/// Collects the one-hop circuit's cells and the link's events.
struct OneHopSink<'a, R: rand::RngCore> {
    exchange: Option<crate::dir::onehop::BeginDirExchange>,
    rng: &'a mut R,
    opened: bool,
    closed: Option<ChannelError>,
    error: Option<crate::dir::onehop::OneHopError>,
    out: Vec<(ChanCmd, [u8; CELL_BODY_LEN])>,
}

impl<R: rand::RngCore> ChannelSink for OneHopSink<'_, R> {
    fn cell(
        &mut self,
        circ: CircId,
        cmd: ChanCmd,
        body: &mut [u8; CELL_BODY_LEN],
        out: &mut CellQueue,
    ) {
        let Some(x) = self.exchange.as_mut().filter(|x| x.circ_id() == circ) else {
            return;
        };
        if let Err(e) = x.handle_cell(self.rng, cmd, body, &mut self.out) {
            self.error.get_or_insert(e);
        }
        // The bound is the channel's output queue; a refused cell fails the fetch.
        for (c, b) in self.out.drain(..) {
            if let Err(e) = out.send_cell(circ, c, &b) {
                self.closed.get_or_insert(e);
            }
        }
    }
    fn event(&mut self, event: ChannelEvent) {
        match event {
            ChannelEvent::Open(_) => self.opened = true,
            ChannelEvent::Closed(e) => self.closed = Some(e),
            _ => {}
        }
    }
}

/// Sends `request` (a whole HTTP request) to the directory cache at `addr`, which must prove
/// `expected`, over a one-hop circuit with BEGIN_DIR (`crate::dir::onehop`), and returns the
/// raw HTTP answer (at most `max_response` bytes). Blocking: the TCP connect is bounded by
/// `connect_timeout` (a dead cache costs that, not the whole budget), everything from
/// connect to RELAY_END by `timeout`. `bind`: the source address (`OutboundBindAddressOR`),
/// if any.
pub fn begin_dir_get(
    addr: SocketAddr,
    expected: ExpectedPeer,
    bind: Option<IpAddr>,
    request: Vec<u8>,
    max_response: usize,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Vec<u8>, BeginDirError> {
    use rand::Rng;
    let deadline = Instant::now() + timeout;
    let mut s = crate::dir::client::connect_from(addr, bind, connect_timeout.min(timeout))
        .map_err(BeginDirError::Connect)?;
    s.set_nodelay(true).ok();
    let tls_config = tls::client_config(tls::provider())?;
    // Keys of a one-hop circuit that carries nothing secret; OS entropy, nothing to replay.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut ch = Channel::new_client(
        tls_config,
        ChannelConfig::default(),
        expected,
        addr.ip(),
        SystemTime::now(),
        &mut rng,
    )?;
    // tor-spec: the initiator of a link (protocol 4+) sets the high bit of its circuit IDs.
    let circ = CircId(0x8000_0000 | rng.gen_range(1..0x8000_0000u32));
    let mut crng = rand::rngs::StdRng::from_entropy();
    let (exchange, create) =
        crate::dir::onehop::BeginDirExchange::start(&mut crng, circ, request, max_response)?;
    let mut sink = OneHopSink {
        exchange: Some(exchange),
        rng: &mut crng,
        opened: false,
        closed: None,
        error: None,
        out: Vec::new(),
    };
    let mut create = Some(create);
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded by the deadline: every pass either moves bytes or waits on a read timeout.
    loop {
        if sink.opened {
            if let Some((cmd, body)) = create.take() {
                ch.send_cell(circ, cmd, &body)?;
            }
        }
        let out = ch.pending_output();
        if !out.is_empty() {
            let n = out.len();
            s.write_all(out).map_err(BeginDirError::Io)?;
            ch.consume_output(n);
        }
        if let Some(e) = sink.error.take() {
            return Err(e.into());
        }
        if let Some(e) = sink.closed.take() {
            return Err(e.into());
        }
        if sink.exchange.as_ref().is_some_and(|x| x.is_done()) {
            let x = sink.exchange.take().expect("checked");
            // Close the circuit politely; the link goes with the socket.
            let (cmd, body) = x.destroy_cell();
            if ch.send_cell(circ, cmd, &body).is_ok() {
                let out = ch.pending_output();
                let _ = s.write_all(out);
            }
            return Ok(x.into_response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BeginDirError::Timeout(timeout));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .map_err(BeginDirError::Io)?;
        match s.read(&mut buf) {
            Ok(0) => return Err(BeginDirError::Eof),
            Ok(n) => {
                ch.handle_input(&buf[..n], SystemTime::now(), &mut rng, &mut sink)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(BeginDirError::Io(e)),
        }
    }
}

/// What the control plane should do about the self-test now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTestStep {
    /// Nothing to do.
    Idle,
    /// Launch a probe.
    Probe,
}

/// The ORPort self-test schedule for one advertised IPv4 address:port.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// `AssumeReachable 1`: publish without testing.
    assume: bool,
    reachable: Option<SocketAddr>,
    /// The address:port we told the operator we are checking (C says it once).
    informed: Option<SocketAddr>,
    started: Instant,
    next_probe: Instant,
    next_complaint: Instant,
    in_flight: bool,
    /// The last failure, for the 20-minute warning.
    last_failure: Option<String>,
}

/// What a finished probe means for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfTestNews {
    /// First success for this address: C's "Excellent" line.
    Reachable,
    /// A failure; `first` is true the first time (to say it once at notice level).
    Failed { first: bool },
    /// A result for an address we no longer advertise, or nothing new.
    Nothing,
}

impl SelfTest {
    pub fn new(assume_reachable: bool, now: Instant) -> SelfTest {
        SelfTest {
            assume: assume_reachable,
            reachable: None,
            informed: None,
            started: now,
            next_probe: now,
            next_complaint: now + COMPLAINT_AFTER,
            in_flight: false,
            last_failure: None,
        }
    }

    /// Whether a descriptor advertising `addr` may be published (C `ready_to_publish`).
    pub fn allows_publishing(&self, addr: SocketAddr) -> bool {
        self.assume || self.reachable == Some(addr)
    }

    pub fn set_assume_reachable(&mut self, assume: bool) {
        self.assume = assume;
    }

    /// The address to publish changed (C `router_reset_reachability` on an address change):
    /// test again at once.
    pub fn address_changed(&mut self, now: Instant) {
        self.reachable = None;
        self.informed = None;
        self.next_probe = now;
    }

    /// Whether to probe `addr` now.
    pub fn step(&mut self, addr: SocketAddr, now: Instant) -> SelfTestStep {
        if self.assume || self.in_flight || self.reachable == Some(addr) || now < self.next_probe {
            return SelfTestStep::Idle;
        }
        self.in_flight = true;
        // C re-tests every minute during its first 20 minutes of uptime and then stops until
        // something changes; Fors keeps testing at the complaint interval after that, so a
        // firewall fixed later is noticed without a restart.
        let every = if now.duration_since(self.started) < COMPLAINT_AFTER {
            EARLY_CHECK_INTERVAL
        } else {
            COMPLAINT_AFTER
        };
        self.next_probe = now + every;
        SelfTestStep::Probe
    }

    /// First probe of `addr`: C's "Now checking whether ..." line is due (once per address).
    pub fn should_inform(&mut self, addr: SocketAddr) -> bool {
        if self.informed == Some(addr) {
            return false;
        }
        self.informed = Some(addr);
        true
    }

    /// A probe of `addr` finished.
    pub fn finished(
        &mut self,
        addr: SocketAddr,
        current: Option<SocketAddr>,
        result: Result<(), String>,
    ) -> SelfTestNews {
        self.in_flight = false;
        if current != Some(addr) {
            return SelfTestNews::Nothing;
        }
        match result {
            Ok(()) if self.reachable != Some(addr) => {
                self.reachable = Some(addr);
                self.last_failure = None;
                SelfTestNews::Reachable
            }
            Ok(()) => SelfTestNews::Nothing,
            Err(e) => {
                let first = self.last_failure.is_none();
                self.last_failure = Some(e);
                SelfTestNews::Failed { first }
            }
        }
    }

    /// C's 20-minute warning: `Some(last failure)` when it is due now.
    pub fn complaint_due(&mut self, addr: SocketAddr, now: Instant) -> Option<String> {
        if self.assume || self.reachable == Some(addr) || now < self.next_complaint {
            return None;
        }
        self.next_complaint = now + COMPLAINT_AFTER;
        Some(
            self.last_failure
                .clone()
                .unwrap_or_else(|| "no probe has finished".into()),
        )
    }

    /// Next time [`step`](Self::step) or [`complaint_due`](Self::complaint_due) may act.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.assume && self.reachable.is_none()).then(|| self.next_probe.min(self.next_complaint))
    }
}

/// Why an address suggestion was not taken (C `relay_address_new_suggestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuggestionRefused {
    /// Only IPv4 addresses are published from discovery.
    NotIpv4,
    /// "Do not believe anyone who says our address is internal."
    Internal,
    /// "Do not believe anyone who says our address is their address."
    PeersOwn,
}

/// Whether an authority's suggestion of our address can be used (the caller only passes
/// suggestions that came from a configured directory authority's address).
pub fn accept_suggestion(suggested: IpAddr, peer: IpAddr) -> Result<Ipv4Addr, SuggestionRefused> {
    let IpAddr::V4(v4) = suggested else {
        return Err(SuggestionRefused::NotIpv4);
    };
    if crate::exit::policy::is_internal(suggested) {
        return Err(SuggestionRefused::Internal);
    }
    if suggested == peer {
        return Err(SuggestionRefused::PeersOwn);
    }
    Ok(v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn self_test_schedule_as_c_tor() {
        let t0 = Instant::now();
        let me = a("127.0.0.1:9001");
        let mut s = SelfTest::new(false, t0);
        assert!(!s.allows_publishing(me));
        assert_eq!(s.step(me, t0), SelfTestStep::Probe);
        assert!(s.should_inform(me) && !s.should_inform(me));
        // One probe at a time.
        assert_eq!(s.step(me, t0), SelfTestStep::Idle);
        assert_eq!(
            s.finished(me, Some(me), Err("refused".into())),
            SelfTestNews::Failed { first: true }
        );
        // Next try a minute later during the first 20 minutes.
        assert_eq!(s.step(me, t0 + Duration::from_secs(59)), SelfTestStep::Idle);
        assert_eq!(
            s.step(me, t0 + Duration::from_secs(60)),
            SelfTestStep::Probe
        );
        assert_eq!(
            s.finished(me, Some(me), Err("refused".into())),
            SelfTestNews::Failed { first: false }
        );
        // The warning at 20 minutes, then every 20 minutes.
        assert_eq!(s.complaint_due(me, t0 + Duration::from_secs(1199)), None);
        assert_eq!(
            s.complaint_due(me, t0 + COMPLAINT_AFTER).as_deref(),
            Some("refused")
        );
        assert_eq!(s.complaint_due(me, t0 + COMPLAINT_AFTER), None);
        // After 20 minutes the retries slow down to the complaint interval.
        let late = t0 + COMPLAINT_AFTER + Duration::from_secs(1);
        assert_eq!(s.step(me, late), SelfTestStep::Probe);
        assert_eq!(s.finished(me, Some(me), Ok(())), SelfTestNews::Reachable);
        assert!(s.allows_publishing(me));
        assert_eq!(s.next_due(), None);
        // A new address is tested again; the old result does not carry over.
        let other = a("127.0.0.2:9001");
        assert!(!s.allows_publishing(other));
        s.address_changed(late);
        assert_eq!(s.step(other, late), SelfTestStep::Probe);
        // A late answer about the old address changes nothing.
        assert_eq!(s.finished(me, Some(other), Ok(())), SelfTestNews::Nothing);
        assert!(!s.allows_publishing(other));
    }

    #[test]
    fn assume_reachable_skips_the_test() {
        let t0 = Instant::now();
        let me = a("127.0.0.1:9001");
        let mut s = SelfTest::new(true, t0);
        assert!(s.allows_publishing(me));
        assert_eq!(s.step(me, t0), SelfTestStep::Idle);
        assert_eq!(s.complaint_due(me, t0 + COMPLAINT_AFTER * 2), None);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn suggestions_filtered_as_c_tor() {
        let auth: IpAddr = "198.51.100.1".parse().unwrap();
        let ok: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            accept_suggestion(ok, auth),
            Ok("198.51.100.7".parse().unwrap())
        );
        for internal in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "0.0.0.0"] {
            assert_eq!(
                accept_suggestion(internal.parse().unwrap(), auth),
                Err(SuggestionRefused::Internal)
            );
        }
        assert_eq!(
            accept_suggestion(auth, auth),
            Err(SuggestionRefused::PeersOwn)
        );
        assert_eq!(
            accept_suggestion("2001:db8::1".parse().unwrap(), auth),
            Err(SuggestionRefused::NotIpv4)
        );
    }
}
