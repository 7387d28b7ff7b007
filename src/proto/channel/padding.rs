//! Connection-level (netflow) padding on one channel, relay side (padding-spec §2
//! "Connection-level padding"; C tor `channelpadding.c`).
//!
//! A channel that has been idle in our direction for a random timeout gets one PADDING
//! cell, so a router's netflow records cannot split the connection into sessions. What
//! this module decides, as C `channelpadding_decide_to_pad_channel` does:
//! * padding is on for a channel of link protocol ≥ 5 (C sets `padding_enabled` when the
//!   VERSIONS exchange lands on 5) until the peer sends PADDING_NEGOTIATE STOP; START turns
//!   it back on, with the peer's timeouts raised to at least the consensus's (C
//!   `channelpadding_update_padding_for_channel`);
//! * only channels that carry multi-hop circuits are padded ([`ChannelUsage`]; C
//!   `circuit_update_channel_usage`), and with `nf_pad_before_usage=0` only once user
//!   traffic flowed;
//! * only client channels (a peer that did not prove a relay identity, or one the consensus
//!   does not list) unless the consensus sets `nf_pad_relays=1`;
//! * nothing while output is queued: the queue going out is activity;
//! * the timeout is `low + max(X1, X2)` with X uniform on `[0, high - low)` (padding-spec
//!   §2.3), counted from the last cell read or written.
//!
//! Sans-IO: time comes in as `now`, randomness as an RNG; the caller sends the PADDING cell
//! and wakes up at [`ChannelPadding::deadline`].
//!
//! Apart from netflow padding, the same once-a-second check does C tor's keepalive
//! ([`ChannelPadding::housekeeping`], C `run_connection_housekeeping`): an open channel,
//! relay or client, used or not, on which nothing was written for `KeepalivePeriod` (5
//! minutes by default) and nothing waits to go out gets one PADDING cell; one whose output
//! has waited for ten periods with no byte written is stuck and closed. (A channel without
//! circuits is closed by its idle timeout first, `idle.rs`, as C checks that before.)
//!
//! Not here, because a relay does not do them: `ConnectionPadding 1` (forcing padding
//! without negotiation) and `ReducedConnectionPadding` are client options C tor refuses on
//! a relay (the config refuses them too); `nf_pad_single_onion` only matters to a single
//! onion service, which Fors does not run. C tor 0.4.9 reads no `nf_pad_tor2web`.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::cell::chan::{PaddingCommand, PaddingNegotiate};

/// C `MIN_LINK_PROTO_FOR_CHANNEL_PADDING`.
pub const MIN_LINK_VERSION: u16 = 5;

/// Bounds of the consensus timeouts, in ms (C `DFLT_NETFLOW_INACTIVE_KEEPALIVE_MIN/MAX`,
/// the same for the reduced ones).
const ITO_MIN_MS: i32 = 0;
const ITO_MAX_MS: i32 = 60_000;

/// The consensus parameters of channel padding (padding-spec §2.6), with C tor's defaults
/// and bounds (`channelpadding_new_consensus_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddingParams {
    /// `nf_ito_low`: 1500 ms, 0..=60000.
    pub ito_low_ms: u16,
    /// `nf_ito_high`: 9500 ms, `nf_ito_low`..=60000. Both 0 disables padding.
    pub ito_high_ms: u16,
    /// `nf_ito_low_reduced` / `nf_ito_high_reduced`: 9000 / 14000 ms. Only a client that
    /// reduces its own padding uses them; kept for completeness of the parameter set.
    pub ito_low_reduced_ms: u16,
    pub ito_high_reduced_ms: u16,
    /// `nf_conntimeout_relays`: 3600 s, 60..=604800 (idle relay links, `idle.rs`).
    pub conntimeout_relays_secs: u32,
    /// `nf_conntimeout_clients`: 1800 s, 60..=86400 (a client's circuit lifetime).
    pub conntimeout_clients_secs: u32,
    /// `nf_pad_before_usage`: 1 — pad channels used for full circuits before user data.
    pub pad_before_usage: bool,
    /// `nf_pad_relays`: 0 — pad relay-to-relay channels too.
    pub pad_relays: bool,
    /// `nf_pad_single_onion`: 1 — single onion services pad (not applicable to Fors).
    pub pad_single_onion: bool,
}

impl Default for PaddingParams {
    fn default() -> Self {
        PaddingParams::from_consensus(|_| None)
    }
}

impl PaddingParams {
    /// Reads the parameters from a consensus's `params` (`get` returns a parameter's value
    /// if present). An out-of-range value is raised or capped to its bound, as C
    /// `networkstatus_get_param` does.
    pub fn from_consensus(get: impl Fn(&str) -> Option<i32>) -> Self {
        let p = |name: &str, default: i32, min: i32, max: i32| -> i32 {
            get(name).unwrap_or(default).clamp(min, max)
        };
        let low = p("nf_ito_low", 1500, ITO_MIN_MS, ITO_MAX_MS);
        // C's lower bound for the high end is the low end; a default below it is raised to it
        // (C would trip an assertion there).
        let high = p("nf_ito_high", 9500.max(low), low, ITO_MAX_MS);
        let low_r = p("nf_ito_low_reduced", 9000, ITO_MIN_MS, ITO_MAX_MS);
        let high_r = p("nf_ito_high_reduced", 14000.max(low_r), low_r, ITO_MAX_MS);
        PaddingParams {
            ito_low_ms: low as u16,
            ito_high_ms: high as u16,
            ito_low_reduced_ms: low_r as u16,
            ito_high_reduced_ms: high_r as u16,
            conntimeout_relays_secs: p("nf_conntimeout_relays", 3600, 60, 7 * 24 * 3600) as u32,
            conntimeout_clients_secs: p("nf_conntimeout_clients", 1800, 60, 24 * 3600) as u32,
            pad_before_usage: p("nf_pad_before_usage", 1, 0, 1) == 1,
            pad_relays: p("nf_pad_relays", 0, 0, 1) == 1,
            pad_single_onion: p("nf_pad_single_onion", 1, 0, 1) == 1,
        }
    }
}

/// What a channel has carried, as far as padding cares (C `channel_usage_info_t`). It only
/// ever goes up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChannelUsage {
    /// No multi-hop circuit yet (e.g. only one-hop directory circuits): never padded.
    #[default]
    NotUsed,
    /// Carries circuits that go on past us (RELAY_EARLY seen).
    FullCircuits,
    /// Carried user traffic (RELAY cells on such circuits).
    UserTraffic,
}

/// A PADDING_NEGOTIATE the channel did not act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiateRefused {
    /// Link protocol below 5 (C drops it: "Received a PADDING_NEGOTIATE cell on v%d").
    OldLink { link_version: u16 },
}

/// What [`ChannelPadding::decide`] concluded (C `channelpadding_decision_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingDecision {
    /// This channel is not padded now.
    WontPad,
    /// Output is queued: ask again later.
    PadLater,
    /// A PADDING cell is due at this time unless the channel is active before.
    PadAt(Instant),
}

/// C tor's default `KeepalivePeriod`.
pub const DEFAULT_KEEPALIVE_PERIOD: Duration = Duration::from_secs(5 * 60);

/// C declares an OR connection stuck when its output waited this many `KeepalivePeriod`s
/// with nothing written (`run_connection_housekeeping`: `KeepalivePeriod*10`).
const STUCK_PERIODS: u32 = 10;

/// What the once-a-second keepalive check asks of the caller (C
/// `run_connection_housekeeping`, after its close-if-idle branches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Housekeeping {
    /// Nothing: go on with the netflow padding decision.
    Nothing,
    /// Nothing written for `KeepalivePeriod` and nothing queued: send one PADDING cell now
    /// (C "Sending keepalive"); no netflow decision this time.
    SendKeepalive,
    /// Output queued, and nothing written, for ten periods: close the channel (C
    /// "Expiring stuck OR connection").
    CloseStuck,
}

/// One channel's padding state.
#[derive(Clone, Copy, Debug)]
pub struct ChannelPadding {
    link_version: u16,
    /// C `padding_enabled`.
    enabled: bool,
    /// Timeouts the peer negotiated (already raised to the consensus low); 0 = none.
    low_ms: u16,
    high_ms: u16,
    usage: ChannelUsage,
    /// Last cell read or written (C `timestamp_xfer`).
    last_xfer: Instant,
    /// When the next PADDING cell is due; cleared by activity (C `next_padding_time`).
    next_pad: Option<Instant>,
    /// Last bytes written to the peer (C `timestamp_last_write_allowed`).
    last_write: Instant,
    /// Last check that found no output waiting (C `timestamp_lastempty`).
    last_empty: Instant,
}

impl ChannelPadding {
    /// A channel that opened at `now` with this link protocol.
    pub fn new(link_version: u16, now: Instant) -> Self {
        ChannelPadding {
            link_version,
            enabled: link_version >= MIN_LINK_VERSION,
            low_ms: 0,
            high_ms: 0,
            usage: ChannelUsage::NotUsed,
            last_xfer: now,
            next_pad: None,
            last_write: now,
            last_empty: now,
        }
    }

    /// Whether padding is on (negotiated or by default at link 5).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The negotiated timeouts (ms), if the peer sent any.
    pub fn negotiated(&self) -> Option<(u16, u16)> {
        (self.low_ms != 0 && self.high_ms != 0).then_some((self.low_ms, self.high_ms))
    }

    pub fn usage(&self) -> ChannelUsage {
        self.usage
    }

    /// When a PADDING cell is due, if one is scheduled.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_pad
    }

    /// The channel carried more than before (never less: C only raises the usage).
    pub fn note_usage(&mut self, usage: ChannelUsage) {
        self.usage = self.usage.max(usage);
    }

    /// A cell was read or written at `now`: the idle clock restarts and any scheduled
    /// padding is off until the next decision (C `channel_timestamp_active`).
    pub fn on_activity(&mut self, now: Instant) {
        self.last_xfer = now;
        self.next_pad = None;
    }

    /// Bytes went out to the peer at `now`: activity, and the keepalive clock restarts (C
    /// `connection_handle_write` sets `timestamp_last_write_allowed`).
    pub fn on_written(&mut self, now: Instant) {
        self.on_activity(now);
        self.last_write = now;
    }

    /// The once-a-second keepalive check (C `run_connection_housekeeping`), before the
    /// netflow decision, on every open channel that is not being closed. `period` is
    /// `KeepalivePeriod`; `output_queued`: cells or bytes wait to go out.
    pub fn housekeeping(
        &mut self,
        now: Instant,
        period: Duration,
        output_queued: bool,
    ) -> Housekeeping {
        if !output_queued {
            self.last_empty = now;
        }
        let since_write = now.saturating_duration_since(self.last_write);
        let stuck = period.saturating_mul(STUCK_PERIODS);
        if now.saturating_duration_since(self.last_empty) >= stuck && since_write >= stuck {
            Housekeeping::CloseStuck
        } else if since_write >= period && !output_queued {
            Housekeeping::SendKeepalive
        } else {
            Housekeeping::Nothing
        }
    }

    /// The peer's PADDING_NEGOTIATE (C `channelpadding_update_padding_for_channel`): START
    /// or STOP, the low timeout raised to the consensus `nf_ito_low`, the high one to at
    /// least the low. A relay takes it from any peer (only clients and bridges refuse it
    /// from relays, padding-spec §2.5).
    pub fn negotiate(
        &mut self,
        cell: &PaddingNegotiate,
        params: &PaddingParams,
    ) -> Result<(), NegotiateRefused> {
        if self.link_version < MIN_LINK_VERSION {
            return Err(NegotiateRefused::OldLink {
                link_version: self.link_version,
            });
        }
        self.enabled = cell.command == PaddingCommand::Start;
        self.low_ms = params.ito_low_ms.max(cell.ito_low_ms);
        self.high_ms = self.low_ms.max(cell.ito_high_ms);
        // The old deadline was drawn from the old range (or padding is now off).
        self.next_pad = None;
        Ok(())
    }

    /// A fresh idle timeout in ms, 0 when the consensus disables padding (C
    /// `channelpadding_get_netflow_inactive_timeout_ms`).
    pub fn timeout_ms(&self, params: &PaddingParams, rng: &mut impl Rng) -> u32 {
        let (mut low, mut high) = (params.ito_low_ms, params.ito_high_ms);
        if low == 0 && high == 0 {
            return 0;
        }
        // Negotiated timeouts may lengthen the consensus's, never shorten them.
        if let Some((l, h)) = self.negotiated() {
            low = low.max(l);
            high = high.max(h);
        }
        if low >= high {
            return u32::from(low);
        }
        // max(X, X): with both ends padding, the combined rate min(Y, Y) averages near the
        // middle of the range (padding-spec §2.3).
        let range = u32::from(high - low);
        let x1 = rng.gen_range(0..range);
        let x2 = rng.gen_range(0..range);
        u32::from(low) + x1.max(x2)
    }

    /// The periodic decision for this channel (C `channelpadding_decide_to_pad_channel`,
    /// run once a second): whether it is padded, and when the next PADDING cell is due.
    /// `is_client`: the peer is a client (or a relay the consensus does not list).
    /// `output_queued`: cells are waiting to go out on it.
    pub fn decide(
        &mut self,
        params: &PaddingParams,
        is_client: bool,
        output_queued: bool,
        rng: &mut impl Rng,
    ) -> PaddingDecision {
        let used = match self.usage {
            ChannelUsage::NotUsed => false,
            ChannelUsage::FullCircuits => params.pad_before_usage,
            ChannelUsage::UserTraffic => true,
        };
        if !used || !self.enabled || !(is_client || params.pad_relays) {
            self.next_pad = None;
            return PaddingDecision::WontPad;
        }
        if output_queued {
            return PaddingDecision::PadLater;
        }
        if let Some(at) = self.next_pad {
            return PaddingDecision::PadAt(at);
        }
        let ms = self.timeout_ms(params, rng);
        if ms == 0 {
            return PaddingDecision::WontPad;
        }
        let at = self.last_xfer + Duration::from_millis(u64::from(ms));
        self.next_pad = Some(at);
        PaddingDecision::PadAt(at)
    }

    /// Called at or after the deadline: true if a PADDING cell should be sent now. The
    /// deadline is consumed either way; a channel with queued output was not idle (C
    /// `channelpadding_send_padding_cell_for_callback`). Sending the cell is activity.
    pub fn poll(&mut self, now: Instant, output_queued: bool) -> bool {
        match self.next_pad {
            Some(at) if now >= at => {
                self.next_pad = None;
                !output_queued
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// `FORS_TEST_SEED` if set (to replay a failure), else a fresh seed; printed.
    fn seeded() -> StdRng {
        let seed = std::env::var("FORS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        println!("seed {seed} (rerun with FORS_TEST_SEED={seed})");
        StdRng::seed_from_u64(seed)
    }

    fn params(kv: &[(&str, i32)]) -> PaddingParams {
        PaddingParams::from_consensus(|n| kv.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
    }

    fn start(low: u16, high: u16) -> PaddingNegotiate {
        PaddingNegotiate {
            command: PaddingCommand::Start,
            ito_low_ms: low,
            ito_high_ms: high,
        }
    }

    fn stop() -> PaddingNegotiate {
        PaddingNegotiate {
            command: PaddingCommand::Stop,
            ito_low_ms: 0,
            ito_high_ms: 0,
        }
    }

    /// A link-5 client channel that carries a multi-hop circuit.
    fn used_channel(now: Instant) -> ChannelPadding {
        let mut p = ChannelPadding::new(5, now);
        p.note_usage(ChannelUsage::UserTraffic);
        p
    }

    #[test]
    fn consensus_defaults_and_bounds_are_c_tors() {
        let d = PaddingParams::default();
        assert_eq!((d.ito_low_ms, d.ito_high_ms), (1500, 9500));
        assert_eq!((d.ito_low_reduced_ms, d.ito_high_reduced_ms), (9000, 14000));
        assert_eq!(
            (d.conntimeout_relays_secs, d.conntimeout_clients_secs),
            (3600, 1800)
        );
        assert!(d.pad_before_usage && !d.pad_relays && d.pad_single_onion);
        // Out of range: raised or capped, as C does.
        let p = params(&[
            ("nf_ito_low", 70_000),
            ("nf_conntimeout_relays", 1),
            ("nf_conntimeout_clients", 1 << 30),
            ("nf_pad_relays", 7),
            ("nf_pad_before_usage", -3),
        ]);
        assert_eq!((p.ito_low_ms, p.ito_high_ms), (60_000, 60_000));
        assert_eq!(p.conntimeout_relays_secs, 60);
        assert_eq!(p.conntimeout_clients_secs, 86_400);
        assert!(p.pad_relays && !p.pad_before_usage);
        // nf_ito_high is at least nf_ito_low, even when only the low one is set.
        let p = params(&[("nf_ito_low", 12_000)]);
        assert_eq!((p.ito_low_ms, p.ito_high_ms), (12_000, 12_000));
        let p = params(&[("nf_ito_low", 3000), ("nf_ito_high", 2000)]);
        assert_eq!((p.ito_low_ms, p.ito_high_ms), (3000, 3000));
    }

    #[test]
    fn timeouts_follow_max_of_two_uniforms_within_the_range() {
        let mut rng = seeded();
        let p = PaddingParams::default();
        let c = ChannelPadding::new(5, Instant::now());
        let n = 20_000;
        let (mut lo, mut hi, mut sum) = (u32::MAX, 0, 0u64);
        for _ in 0..n {
            let t = c.timeout_ms(&p, &mut rng);
            assert!((1500..9500).contains(&t), "{t}");
            lo = lo.min(t);
            hi = hi.max(t);
            sum += u64::from(t);
        }
        // Exp[max(X, X)] for R = 8000 is 5332.8 ms above the low end (padding-spec §2.3);
        // a single uniform would average 4000.
        let mean = sum as f64 / n as f64 - 1500.0;
        assert!((mean - 5332.8).abs() < 80.0, "mean {mean}");
        assert!(lo < 1700 && hi > 9300, "{lo}..{hi}");
        // Equal ends: no randomness; both 0: padding off.
        let eq = params(&[("nf_ito_low", 4000), ("nf_ito_high", 4000)]);
        assert_eq!(c.timeout_ms(&eq, &mut rng), 4000);
        let off = params(&[("nf_ito_low", 0), ("nf_ito_high", 0)]);
        assert_eq!(c.timeout_ms(&off, &mut rng), 0);
    }

    #[test]
    fn negotiated_timeouts_only_lengthen_the_consensus_ones() {
        let mut rng = seeded();
        let p = PaddingParams::default();
        let mut c = ChannelPadding::new(5, Instant::now());
        // Lower than the consensus: raised to it.
        c.negotiate(&start(100, 200), &p).unwrap();
        assert_eq!(c.negotiated(), Some((1500, 1500)));
        for _ in 0..1000 {
            let t = c.timeout_ms(&p, &mut rng);
            assert!((1500..9500).contains(&t), "{t}");
        }
        // Longer: used.
        c.negotiate(&start(20_000, 30_000), &p).unwrap();
        assert_eq!(c.negotiated(), Some((20_000, 30_000)));
        for _ in 0..1000 {
            let t = c.timeout_ms(&p, &mut rng);
            assert!((20_000..30_000).contains(&t), "{t}");
        }
        // High below low: the high end is raised to the low one.
        c.negotiate(&start(20_000, 10), &p).unwrap();
        assert_eq!(c.negotiated(), Some((20_000, 20_000)));
        assert_eq!(c.timeout_ms(&p, &mut rng), 20_000);
        // START with zeroes (padding-spec §2.5): back to the consensus range.
        c.negotiate(&start(0, 0), &p).unwrap();
        for _ in 0..1000 {
            let t = c.timeout_ms(&p, &mut rng);
            assert!((1500..9500).contains(&t), "{t}");
        }
    }

    #[test]
    fn stop_and_start_turn_padding_off_and_on() {
        let mut rng = seeded();
        let p = PaddingParams::default();
        let t0 = Instant::now();
        let mut c = used_channel(t0);
        assert!(c.enabled());
        assert!(matches!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::PadAt(_)
        ));
        c.negotiate(&stop(), &p).unwrap();
        assert!(!c.enabled());
        assert_eq!(c.deadline(), None);
        assert_eq!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::WontPad
        );
        assert!(!c.poll(t0 + Duration::from_secs(60), false));
        c.negotiate(&start(0, 0), &p).unwrap();
        assert!(matches!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::PadAt(_)
        ));
        // Below link 5 padding is off and negotiation refused.
        let mut old = ChannelPadding::new(4, t0);
        assert!(!old.enabled());
        assert_eq!(
            old.negotiate(&start(0, 0), &p),
            Err(NegotiateRefused::OldLink { link_version: 4 })
        );
        assert!(!old.enabled());
    }

    #[test]
    fn which_channels_are_padded() {
        let mut rng = seeded();
        let t0 = Instant::now();
        let p = PaddingParams::default();
        // Unused (e.g. one-hop directory circuits only): never.
        let mut c = ChannelPadding::new(5, t0);
        assert_eq!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::WontPad
        );
        // Full circuits: padded by default, not with nf_pad_before_usage=0.
        c.note_usage(ChannelUsage::FullCircuits);
        let late = params(&[("nf_pad_before_usage", 0)]);
        assert_eq!(
            c.decide(&late, true, false, &mut rng),
            PaddingDecision::WontPad
        );
        assert!(matches!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::PadAt(_)
        ));
        c.note_usage(ChannelUsage::UserTraffic);
        assert!(matches!(
            c.decide(&late, true, false, &mut rng),
            PaddingDecision::PadAt(_)
        ));
        // Usage never goes down.
        c.note_usage(ChannelUsage::NotUsed);
        assert_eq!(c.usage(), ChannelUsage::UserTraffic);
        // Relay peers: only with nf_pad_relays=1.
        let mut r = used_channel(t0);
        assert_eq!(
            r.decide(&p, false, false, &mut rng),
            PaddingDecision::WontPad
        );
        let relays = params(&[("nf_pad_relays", 1)]);
        assert!(matches!(
            r.decide(&relays, false, false, &mut rng),
            PaddingDecision::PadAt(_)
        ));
        // Queued output: later.
        let mut q = used_channel(t0);
        assert_eq!(
            q.decide(&p, true, true, &mut rng),
            PaddingDecision::PadLater
        );
        // Consensus disables padding.
        let off = params(&[("nf_ito_low", 0), ("nf_ito_high", 0)]);
        assert_eq!(
            q.decide(&off, true, false, &mut rng),
            PaddingDecision::WontPad
        );
    }

    #[test]
    fn keepalive_after_a_period_without_writes_on_any_channel() {
        let t0 = Instant::now();
        let period = Duration::from_secs(300);
        let s = Duration::from_secs;
        // A relay channel at link 4 that never carried a circuit: no netflow padding, but a
        // keepalive all the same (C pads every open OR connection this way).
        let mut c = ChannelPadding::new(4, t0);
        assert_eq!(
            c.housekeeping(t0 + s(299), period, false),
            Housekeeping::Nothing
        );
        // Reads do not count: C looks at writes only.
        c.on_activity(t0 + s(200));
        assert_eq!(
            c.housekeeping(t0 + s(300), period, false),
            Housekeeping::SendKeepalive
        );
        // The keepalive went out: the next one a whole period later.
        c.on_written(t0 + s(300));
        assert_eq!(
            c.housekeeping(t0 + s(599), period, false),
            Housekeeping::Nothing
        );
        assert_eq!(
            c.housekeeping(t0 + s(600), period, false),
            Housekeeping::SendKeepalive
        );
        // Output waiting: no keepalive (it will be written anyway).
        c.on_written(t0 + s(600));
        assert_eq!(
            c.housekeeping(t0 + s(901), period, true),
            Housekeeping::Nothing
        );
        // A configured period.
        let mut short = ChannelPadding::new(5, t0);
        assert_eq!(
            short.housekeeping(t0 + s(9), s(10), false),
            Housekeeping::Nothing
        );
        assert_eq!(
            short.housekeeping(t0 + s(10), s(10), false),
            Housekeeping::SendKeepalive
        );
    }

    #[test]
    fn a_channel_whose_output_waits_ten_periods_unwritten_is_stuck() {
        let t0 = Instant::now();
        let period = Duration::from_secs(300);
        let s = Duration::from_secs;
        let mut c = ChannelPadding::new(5, t0);
        // Output queued from the start, nothing written: stuck at 10 periods, not before.
        for t in (1..3000).step_by(60) {
            assert_eq!(
                c.housekeeping(t0 + s(t), period, true),
                Housekeeping::Nothing,
                "{t}"
            );
        }
        assert_eq!(
            c.housekeeping(t0 + s(3000), period, true),
            Housekeeping::CloseStuck
        );
        // Writing some of it keeps a slow channel alive, though output never drains.
        let mut slow = ChannelPadding::new(5, t0);
        for t in (0..=6000).step_by(60) {
            if t % 600 == 0 {
                slow.on_written(t0 + s(t));
            }
            assert_eq!(
                slow.housekeeping(t0 + s(t), period, true),
                Housekeeping::Nothing,
                "{t}"
            );
        }
        // An empty output at any check restarts that clock too.
        let mut drained = ChannelPadding::new(5, t0);
        assert_eq!(
            drained.housekeeping(t0 + s(2999), period, false),
            Housekeeping::SendKeepalive
        );
        assert_eq!(
            drained.housekeeping(t0 + s(3000), period, true),
            Housekeeping::Nothing
        );
        assert_eq!(
            drained.housekeeping(t0 + s(5999), period, true),
            Housekeeping::CloseStuck
        );
    }

    #[test]
    fn idle_timer_sends_once_and_activity_resets_it() {
        let mut rng = seeded();
        let t0 = Instant::now();
        let p = PaddingParams::default();
        let mut c = used_channel(t0);
        let PaddingDecision::PadAt(at) = c.decide(&p, true, false, &mut rng) else {
            panic!("not scheduled");
        };
        let wait = at - t0;
        assert!(
            (Duration::from_millis(1500)..Duration::from_millis(9500)).contains(&wait),
            "{wait:?}"
        );
        // The decision is stable until something happens.
        assert_eq!(
            c.decide(&p, true, false, &mut rng),
            PaddingDecision::PadAt(at)
        );
        assert!(!c.poll(at - Duration::from_millis(1), false));
        assert!(c.poll(at, false));
        // Consumed: not twice.
        assert!(!c.poll(at + Duration::from_secs(1), false));
        // The PADDING cell went out: a new timeout counted from then.
        c.on_activity(at);
        let PaddingDecision::PadAt(next) = c.decide(&p, true, false, &mut rng) else {
            panic!("not rescheduled");
        };
        assert!(next >= at + Duration::from_millis(1500), "{next:?} {at:?}");
        // Activity before the deadline: no padding then; the next one counts from it.
        let busy = at + Duration::from_millis(1000);
        c.on_activity(busy);
        assert!(!c.poll(next, false));
        let PaddingDecision::PadAt(after) = c.decide(&p, true, false, &mut rng) else {
            panic!("not rescheduled");
        };
        assert!(after >= busy + Duration::from_millis(1500));
        // Output queued when the deadline comes: skipped (the queue is activity).
        assert!(!c.poll(after, true));
        assert_eq!(c.deadline(), None);
        // A consensus change applies from the next draw.
        let slow = params(&[("nf_ito_low", 30_000), ("nf_ito_high", 40_000)]);
        let now = after + Duration::from_secs(1);
        c.on_activity(now);
        let PaddingDecision::PadAt(s) = c.decide(&slow, true, false, &mut rng) else {
            panic!("not rescheduled");
        };
        assert!(
            (now + Duration::from_secs(30)..now + Duration::from_secs(40)).contains(&s),
            "{:?}",
            s - now
        );
    }
}
