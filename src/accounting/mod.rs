//! Bandwidth accounting and hibernation (tor manual: `AccountingMax`, `AccountingRule`,
//! `AccountingStart`), behaving as C tor 0.4.9's `feature/hibernate/hibernate.c`.
//!
//! Sans-IO: time comes in as Unix seconds, byte counts as deltas, and the randomness of the
//! wake-up time from a [`WakeupSource`]. The caller (the control plane) owns the clock, the
//! `state` file and what hibernation does to the network.
//!
//! How an interval runs (hibernate.c's own description):
//! 1. At the start of an interval we estimate our usage from the previous one and choose a
//!    wake-up time inside the interval so that, at that rate, the quota lasts to its end
//!    (spread at random so that relays do not all wake on the 1st).
//! 2. Until the wake-up time we are dormant ("hard" hibernation).
//! 3. Awake, we serve until the soft limit: then no new circuits or streams ("soft").
//! 4. At the hard limit (`AccountingMax`) we close everything and sleep to the interval end.
//!
//! Interval edges are reckoned in local time as C does (`tor_localtime_r`/`mktime`), or in
//! UTC ([`time::Zone`]) for tests.

// No unsafe here. Sans-IO (docs/architecture.md "Sans-IO rule"): the caller owns clock and
// RNG.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod state;
pub mod time;

use std::fmt;
use std::str::FromStr;

use time::{days_from_civil, Zone};

/// `AccountingRule`: what counts against `AccountingMax` (tor manual).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccountingRule {
    /// The larger of bytes read and bytes written (C's default).
    #[default]
    Max,
    /// Bytes read plus bytes written.
    Sum,
    /// Bytes read only.
    In,
    /// Bytes written only.
    Out,
}

impl AccountingRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountingRule::Max => "max",
            AccountingRule::Sum => "sum",
            AccountingRule::In => "in",
            AccountingRule::Out => "out",
        }
    }
}

impl FromStr for AccountingRule {
    type Err = String;
    /// C compares with `strcmp`: lower case only.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max" => Ok(AccountingRule::Max),
            "sum" => Ok(AccountingRule::Sum),
            "in" => Ok(AccountingRule::In),
            "out" => Ok(AccountingRule::Out),
            _ => Err("AccountingRule must be 'sum', 'max', 'in', or 'out'".into()),
        }
    }
}

/// The unit of an accounting interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntervalUnit {
    Month,
    Week,
    Day,
}

/// `AccountingStart day|week|month [day] HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountingStart {
    pub unit: IntervalUnit,
    /// Day of the month (1..=28) or of the week (1 = Monday … 7 = Sunday); 0 for `day`.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
}

impl Default for AccountingStart {
    /// Without `AccountingStart`, C accounts by month from the 1st at 00:00.
    fn default() -> Self {
        AccountingStart {
            unit: IntervalUnit::Month,
            day: 1,
            hour: 0,
            minute: 0,
        }
    }
}

impl fmt::Display for AccountingStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            IntervalUnit::Month => write!(f, "month {} ", self.day)?,
            IntervalUnit::Week => write!(f, "week {} ", self.day)?,
            IntervalUnit::Day => write!(f, "day ")?,
        }
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A decimal integer in `lo..=hi` (C `tor_parse_long`), followed by `rest`.
fn leading_number(s: &str, lo: u8, hi: u8) -> Option<(u8, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let v: u8 = s[..end].parse().ok()?;
    (lo..=hi).contains(&v).then_some((v, &s[end..]))
}

impl FromStr for AccountingStart {
    type Err = String;
    /// C `accounting_parse_options`; the messages are C's.
    fn from_str(v: &str) -> Result<Self, String> {
        let items: Vec<&str> = v.split_whitespace().collect();
        if items.len() < 2 {
            return Err("Too few arguments to AccountingStart".into());
        }
        let unit = if items[0].eq_ignore_ascii_case("month") {
            IntervalUnit::Month
        } else if items[0].eq_ignore_ascii_case("week") {
            IntervalUnit::Week
        } else if items[0].eq_ignore_ascii_case("day") {
            IntervalUnit::Day
        } else {
            return Err(format!(
                "Unrecognized accounting unit '{}': only 'month', 'week', and 'day' are supported.",
                items[0]
            ));
        };
        let day = match unit {
            IntervalUnit::Week => {
                match leading_number(items[1], 1, 7) {
                    Some((d, "")) => d,
                    _ => return Err(
                        "Weekly accounting must begin on a day between 1 (Monday) and 7 (Sunday)"
                            .into(),
                    ),
                }
            }
            IntervalUnit::Month => match leading_number(items[1], 1, 28) {
                Some((d, "")) => d,
                _ => return Err("Monthly accounting must begin on a day between 1 and 28".into()),
            },
            IntervalUnit::Day => 0,
        };
        let idx = if unit == IntervalUnit::Day { 1 } else { 2 };
        if items.len() != idx + 1 {
            return Err(format!(
                "Accounting unit '{}' requires {idx} argument{}.",
                items[0],
                if idx > 1 { "s" } else { "" }
            ));
        }
        let (hour, rest) = leading_number(items[idx], 0, 23)
            .ok_or("Accounting start time not parseable: bad hour.")?;
        let rest = rest
            .strip_prefix(':')
            .ok_or("Accounting start time not parseable: not in HH:MM format")?;
        let (minute, rest) =
            leading_number(rest, 0, 59).ok_or("Accounting start time not parseable: bad minute")?;
        if !rest.is_empty() {
            return Err("Accounting start time not parseable: not in HH:MM format".into());
        }
        Ok(AccountingStart {
            unit,
            day,
            hour,
            minute,
        })
    }
}

impl AccountingStart {
    /// C `edge_of_accounting_period_containing`: the start (`end` false) or end of the
    /// interval containing `now`, reckoned in `zone`.
    pub fn edge(&self, zone: Zone, now: u64, end: bool) -> u64 {
        let c = zone.civil(now);
        let (h, m) = (i64::from(self.hour), i64::from(self.minute));
        // Before today's changeover time?
        let before = c.hour < h || (c.hour == h && c.minute < m);
        let days = match self.unit {
            IntervalUnit::Month => {
                let sd = i64::from(self.day);
                let mut month = c.month;
                if c.day < sd || (c.day == sd && before) {
                    month -= 1;
                }
                if end {
                    month += 1;
                }
                // Days 1..=28 exist in every month, so no day overflow.
                days_from_civil(c.year, month, sd)
            }
            IntervalUnit::Week => {
                // The option says Sunday = 7; `weekday` says Sunday = 0.
                let target = i64::from(self.day) % 7;
                let mut delta = (7 + c.weekday - target) % 7;
                if delta == 0 && before {
                    delta = 7;
                }
                c.days - delta + if end { 7 } else { 0 }
            }
            IntervalUnit::Day => c.days - i64::from(before) + i64::from(end),
        };
        zone.unix(days, h, m)
    }

    pub fn start_of_interval_containing(&self, zone: Zone, now: u64) -> u64 {
        self.edge(zone, now, false)
    }

    pub fn start_of_interval_after(&self, zone: Zone, now: u64) -> u64 {
        self.edge(zone, now, true)
    }
}

/// What the accounting core needs from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountingConfig {
    /// `AccountingMax` in bytes; nonzero (zero means accounting is off).
    pub max: u64,
    pub rule: AccountingRule,
    pub start: AccountingStart,
    /// The effective bandwidth rate in bytes/s (`RelayBandwidthRate` if set, else
    /// `BandwidthRate`): caps the expected usage.
    pub bandwidth_rate: u64,
    /// The clock of `start` (local time, as C).
    pub zone: Zone,
}

/// C `hibernate_state_t` without `EXITING` (shutdown is handled by the signal code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hibernation {
    /// C `HIBERNATE_STATE_INITIAL`: not yet decided (reported as awake).
    Initial,
    /// C `HIBERNATE_STATE_LIVE`.
    Awake,
    /// C `HIBERNATE_STATE_LOWBANDWIDTH`: soft limit reached, no new circuits or streams.
    Soft,
    /// C `HIBERNATE_STATE_DORMANT`: hard limit reached or before the wake-up time; every
    /// OR connection is closed.
    Hard,
}

impl Hibernation {
    /// The word `GETINFO accounting/hibernating` answers (C lower-cases its state names).
    pub fn as_str(self) -> &'static str {
        match self {
            Hibernation::Initial | Hibernation::Awake => "awake",
            Hibernation::Soft => "soft",
            Hibernation::Hard => "hard",
        }
    }

    /// C `we_are_hibernating`: anything but live refuses new circuits and streams.
    pub fn refuses_new_work(self) -> bool {
        self != Hibernation::Awake
    }
}

/// Where the random part of the wake-up time comes from. C hashes the interval start with
/// the identity key digest so that a restart picks the same time; tests pass a seeded RNG.
pub trait WakeupSource {
    /// A uniformly distributed 32-bit value for the interval starting at `interval_start`.
    fn draw(&mut self, interval_start: u64) -> u32;
}

/// Any RNG as a [`WakeupSource`].
pub struct RngWakeup<R>(pub R);

impl<R: rand::RngCore> WakeupSource for RngWakeup<R> {
    fn draw(&mut self, _interval_start: u64) -> u32 {
        self.0.next_u32()
    }
}

/// C's wake-up source: the first four bytes of SHA-1(ISO interval start ‖ identity digest),
/// read in host byte order as C's `get_uint32` reads them, so that a relay moved from C tor
/// to Fors on the same machine wakes at the same time.
pub struct IdentityWakeup(pub [u8; 20]);

impl WakeupSource for IdentityWakeup {
    fn draw(&mut self, interval_start: u64) -> u32 {
        use sha1::{Digest, Sha1};
        let mut h = Sha1::new();
        h.update(time::format_iso(interval_start).as_bytes());
        h.update(self.0);
        let d = h.finalize();
        u32::from_ne_bytes([d[0], d[1], d[2], d[3]])
    }
}

/// C's soft-limit constants: stop taking new work once all of these hold: at least 95% is
/// used, less than 500 MB is left, and (with an estimate) the rest would last less than
/// three hours at the expected rate.
const SOFT_LIMIT_FRACTION_PERCENT: u64 = 95;
const SOFT_LIMIT_BYTES: u64 = 500 * 1024 * 1024;
const SOFT_LIMIT_MINUTES: u64 = 3 * 60;
/// C `MIN_TIME_FOR_MEASUREMENT`: an interval shorter than this gives no usage estimate.
const MIN_TIME_FOR_MEASUREMENT: u64 = 1800;
/// C `NOTE_INTERVAL` / `NOTE_BYTES`: record usage every 10 minutes or 20 MiB.
const NOTE_INTERVAL: u64 = 600;
const NOTE_BYTES: u64 = 20 * 1024 * 1024;

/// The accounting values kept in the `state` file (C's `or_state_t` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredAccounting {
    pub interval_start: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds_active: u64,
    /// Bytes per minute.
    pub expected_usage: u64,
    pub seconds_to_soft_limit: u64,
    pub soft_limit_hit_at: u64,
    pub bytes_at_soft_limit: u64,
}

/// A copy of the values control-spec `GETINFO accounting/*` answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountingReport {
    pub hibernation: Hibernation,
    /// Bytes (read, written) this interval.
    pub read_written: (u64, u64),
    /// Bytes (read, written) left, as C reports them for the rule.
    pub bytes_left: (u64, u64),
    pub interval_start: u64,
    pub interval_wake: u64,
    pub interval_end: u64,
}

/// What one [`Accounting::tick`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// The usage should be written to the `state` file now.
    pub save: bool,
    /// The hibernation state changed from this one to [`Accounting::hibernation`].
    pub changed_from: Option<Hibernation>,
    /// A new interval started.
    pub new_interval: bool,
}

/// The accounting core (C hibernate.c's static variables and their functions).
#[derive(Clone, Debug)]
pub struct Accounting {
    cfg: AccountingConfig,
    read: u64,
    written: u64,
    seconds_active: u64,
    seconds_to_soft_limit: u64,
    soft_limit_hit_at: u64,
    bytes_at_soft_limit: u64,
    interval_start: u64,
    interval_end: u64,
    wakeup: u64,
    /// Expected usage in bytes per minute (0: no estimate).
    expected: u64,
    state: Hibernation,
    /// When the current hibernation ends (0 when awake).
    hibernate_end: u64,
    /// C `time_to_record_bandwidth_usage`'s memory.
    last_noted: (u64, u64, u64),
}

impl Accounting {
    /// C `configure_accounting` at start-up: continue the stored interval if `now` is in
    /// it, else start a new one (estimating usage from the stored one).
    pub fn new(
        cfg: AccountingConfig,
        stored: Option<StoredAccounting>,
        now: u64,
        wake: &mut dyn WakeupSource,
    ) -> Accounting {
        let s = stored.unwrap_or_default();
        // C ignores soft-limit values older than the interval (written by older tors).
        let soft_valid = s.soft_limit_hit_at > s.interval_start;
        let mut a = Accounting {
            cfg,
            read: s.bytes_read,
            written: s.bytes_written,
            seconds_active: s.seconds_active,
            seconds_to_soft_limit: if soft_valid {
                s.seconds_to_soft_limit
            } else {
                0
            },
            soft_limit_hit_at: if soft_valid { s.soft_limit_hit_at } else { 0 },
            bytes_at_soft_limit: if soft_valid { s.bytes_at_soft_limit } else { 0 },
            interval_start: s.interval_start,
            interval_end: 0,
            wakeup: 0,
            expected: s.expected_usage,
            state: Hibernation::Initial,
            hibernate_end: 0,
            last_noted: (0, 0, 0),
        };
        a.configure(now, wake);
        a
    }

    /// C `options_act_relay_accounting` on SIGHUP: new options, same counts.
    pub fn reconfigure(&mut self, cfg: AccountingConfig, now: u64, wake: &mut dyn WakeupSource) {
        self.cfg = cfg;
        self.configure(now, wake);
    }

    /// C `configure_accounting`.
    fn configure(&mut self, now: u64, wake: &mut dyn WakeupSource) -> bool {
        let (start, z) = (self.cfg.start, self.cfg.zone);
        let s_now = start.start_of_interval_containing(z, now);
        let mut new_interval = false;
        if self.interval_start == 0 {
            self.reset(now);
            new_interval = true;
        } else if s_now == self.interval_start {
            self.interval_end = start.start_of_interval_after(z, self.interval_start);
        } else {
            let len = start.start_of_interval_after(z, self.interval_start) as f64
                - start.start_of_interval_containing(z, self.interval_start) as f64;
            let delta = (s_now as f64 - self.interval_start as f64) / len.max(1.0);
            if (-0.5..=0.5).contains(&delta) {
                // The configured start moved a little: keep the counts (C errs on the side
                // of obeying the limit).
                self.interval_end = start.start_of_interval_after(z, now);
            } else {
                self.reset(now);
                new_interval = true;
            }
        }
        self.set_wakeup_time(wake);
        new_interval
    }

    /// C `reset_accounting`: estimate from the interval that ended, then zero the counts.
    fn reset(&mut self, now: u64) {
        self.update_expected_bandwidth();
        let (start, z) = (self.cfg.start, self.cfg.zone);
        self.interval_start = start.start_of_interval_containing(z, now);
        self.interval_end = start.start_of_interval_after(z, self.interval_start);
        self.read = 0;
        self.written = 0;
        self.seconds_active = 0;
        self.bytes_at_soft_limit = 0;
        self.soft_limit_hit_at = 0;
        self.seconds_to_soft_limit = 0;
    }

    /// C `update_expected_bandwidth`: bytes per minute from the last interval (up to the
    /// soft limit if we hit it after at least 30 minutes), capped by the configured rate.
    fn update_expected_bandwidth(&mut self) {
        let mut max_configured = self.cfg.bandwidth_rate.saturating_mul(60);
        if self.cfg.rule == AccountingRule::Sum {
            max_configured = max_configured.saturating_mul(2);
        }
        let expected = if self.soft_limit_hit_at > self.interval_start
            && self.bytes_at_soft_limit != 0
            && self.soft_limit_hit_at - self.interval_start > MIN_TIME_FOR_MEASUREMENT
        {
            self.bytes_at_soft_limit / (self.soft_limit_hit_at - self.interval_start) / 60
        } else if self.seconds_active >= MIN_TIME_FOR_MEASUREMENT {
            self.bytes() / (self.seconds_active / 60)
        } else {
            0
        };
        self.expected = expected.min(max_configured);
    }

    /// C `accounting_set_wakeup_time`: with no estimate, wake at the interval start; else
    /// at a random time early enough for the quota to last, at the expected rate, until
    /// the interval ends.
    fn set_wakeup_time(&mut self, wake: &mut dyn WakeupSource) {
        if self.expected == 0 {
            self.wakeup = self.interval_start;
            return;
        }
        let to_exhaust = (self.cfg.max / self.expected).saturating_mul(60);
        let length = self.interval_end.saturating_sub(self.interval_start);
        let consider = if to_exhaust > i32::MAX as u64 {
            0
        } else {
            length.saturating_sub(to_exhaust)
        };
        self.wakeup = if consider == 0 {
            self.interval_start
        } else {
            self.interval_start + u64::from(wake.draw(self.interval_start)) % consider
        };
    }

    /// C `accounting_add_bytes`: `seconds` since the last call count as active unless the
    /// gap is 10 s or more (the clock jumped).
    pub fn add_bytes(&mut self, read: u64, written: u64, seconds: u64) {
        self.read = self.read.saturating_add(read);
        self.written = self.written.saturating_add(written);
        if seconds < 10 {
            self.seconds_active += seconds;
        }
    }

    /// C `get_accounting_bytes`: the bytes that count under the rule.
    pub fn bytes(&self) -> u64 {
        match self.cfg.rule {
            AccountingRule::Sum => self.read.saturating_add(self.written),
            AccountingRule::In => self.read,
            AccountingRule::Out => self.written,
            AccountingRule::Max => self.read.max(self.written),
        }
    }

    /// C `hibernate_hard_limit_reached`.
    pub fn hard_limit_reached(&self) -> bool {
        self.bytes() >= self.cfg.max
    }

    /// C `hibernate_soft_limit_reached`.
    pub fn soft_limit(&self) -> u64 {
        let max = self.cfg.max;
        let mut soft = (max as u128 * SOFT_LIMIT_FRACTION_PERCENT as u128 / 100) as u64;
        if max > SOFT_LIMIT_BYTES && max - SOFT_LIMIT_BYTES > soft {
            soft = max - SOFT_LIMIT_BYTES;
        }
        if self.expected != 0 {
            let usage = self.expected.saturating_mul(SOFT_LIMIT_MINUTES);
            if max > usage && max - usage > soft {
                soft = max - usage;
            }
        }
        soft
    }

    pub fn soft_limit_reached(&self) -> bool {
        let soft = self.soft_limit();
        soft != 0 && self.bytes() >= soft
    }

    /// Once a second: C `accounting_run_housekeeping` then `consider_hibernation`.
    pub fn tick(&mut self, now: u64, wake: &mut dyn WakeupSource) -> TickOutcome {
        let prev = self.state;
        let mut out = TickOutcome::default();
        self.housekeeping(now, wake, &mut out);
        self.consider(now, wake, &mut out);
        if self.state != prev {
            out.changed_from = Some(prev);
        }
        out
    }

    fn housekeeping(&mut self, now: u64, wake: &mut dyn WakeupSource, out: &mut TickOutcome) {
        if now >= self.interval_end && self.configure(now, wake) {
            out.new_interval = true;
            // C records the zeroed counts within ten minutes; Fors does it at once, so a
            // crash just after the interval change cannot bring back the old counts.
            out.save = true;
        }
        out.save |= self.time_to_record(now);
    }

    /// C `time_to_record_bandwidth_usage`.
    fn time_to_record(&mut self, now: u64) -> bool {
        let (t, r, w) = self.last_noted;
        if t + NOTE_INTERVAL <= now
            || r + NOTE_BYTES <= self.read
            || w + NOTE_BYTES <= self.written
            || (self.interval_end != 0 && self.interval_end <= now)
        {
            self.last_noted = (now, self.read, self.written);
            return true;
        }
        false
    }

    /// C `consider_hibernation` (accounting enabled, not exiting).
    fn consider(&mut self, now: u64, wake: &mut dyn WakeupSource, out: &mut TickOutcome) {
        if self.state == Hibernation::Hard {
            if self.hibernate_end > now {
                return;
            }
            self.end_time_elapsed(now, wake, out);
        }
        if matches!(self.state, Hibernation::Awake | Hibernation::Initial) {
            if self.soft_limit_reached() {
                self.begin_soft(now, out);
            } else if now < self.wakeup {
                self.go_dormant(now, out);
            } else {
                self.state = Hibernation::Awake;
                self.hibernate_end = 0;
            }
        }
        if self.state == Hibernation::Soft {
            if self.hard_limit_reached() {
                self.go_dormant(now, out);
            } else if self.hibernate_end <= now {
                self.end_time_elapsed(now, wake, out);
            }
        }
    }

    /// C `hibernate_begin(HIBERNATE_STATE_LOWBANDWIDTH)`.
    fn begin_soft(&mut self, now: u64, out: &mut TickOutcome) {
        if self.state == Hibernation::Awake {
            self.soft_limit_hit_at = now;
            self.seconds_to_soft_limit = self.seconds_active;
            self.bytes_at_soft_limit = self.bytes();
        }
        self.hibernate_end = self.interval_end;
        self.state = Hibernation::Soft;
        out.save = true;
    }

    /// C `hibernate_go_dormant`: sleep until the wake-up time if it is still ahead, else
    /// until the interval ends.
    fn go_dormant(&mut self, now: u64, out: &mut TickOutcome) {
        if self.state == Hibernation::Hard {
            return;
        }
        // Unlike the soft limit, going dormant records nothing about the usage so far.
        self.state = Hibernation::Hard;
        self.hibernate_end = if now < self.wakeup {
            self.wakeup
        } else {
            self.interval_end
        };
        out.save = true;
    }

    /// C `hibernate_end_time_elapsed`: the interval ended or it is wake-up time.
    fn end_time_elapsed(&mut self, now: u64, wake: &mut dyn WakeupSource, out: &mut TickOutcome) {
        self.housekeeping(now, wake, out);
        if self.wakeup <= now {
            self.state = Hibernation::Awake;
            self.hibernate_end = 0;
        } else {
            self.hibernate_end = self.wakeup;
            if self.state != Hibernation::Hard {
                self.go_dormant(now, out);
            }
        }
    }

    pub fn hibernation(&self) -> Hibernation {
        self.state
    }

    pub fn config(&self) -> &AccountingConfig {
        &self.cfg
    }

    /// (read, written) this interval: `GETINFO accounting/bytes`.
    pub fn read_written(&self) -> (u64, u64) {
        (self.read, self.written)
    }

    /// `GETINFO accounting/bytes-left`: (read left, write left) as C reports them per rule.
    pub fn bytes_left(&self) -> (u64, u64) {
        let limit = self.cfg.max;
        match self.cfg.rule {
            AccountingRule::Sum => {
                let left = limit.saturating_sub(self.bytes());
                (left, left)
            }
            AccountingRule::In => (limit.saturating_sub(self.read), limit),
            AccountingRule::Out => (limit, limit.saturating_sub(self.written)),
            AccountingRule::Max => (
                limit.saturating_sub(self.read),
                limit.saturating_sub(self.written),
            ),
        }
    }

    pub fn interval_start(&self) -> u64 {
        self.interval_start
    }
    pub fn interval_end(&self) -> u64 {
        self.interval_end
    }
    pub fn interval_wakeup(&self) -> u64 {
        self.wakeup
    }
    /// Bytes per minute expected this interval.
    pub fn expected_usage(&self) -> u64 {
        self.expected
    }
    /// When the current hibernation ends (0 when awake).
    pub fn hibernate_end(&self) -> u64 {
        self.hibernate_end
    }

    /// What `GETINFO accounting/*` reports.
    pub fn report(&self) -> AccountingReport {
        AccountingReport {
            hibernation: self.state,
            read_written: self.read_written(),
            bytes_left: self.bytes_left(),
            interval_start: self.interval_start,
            interval_wake: self.wakeup,
            interval_end: self.interval_end,
        }
    }

    /// C `accounting_record_bandwidth_usage`: the values for the `state` file, byte counts
    /// rounded up to a multiple of 1024 as C rounds them.
    pub fn stored(&self) -> StoredAccounting {
        let round = |x: u64| x.saturating_add(0x3ff) & !0x3ff;
        StoredAccounting {
            interval_start: self.interval_start,
            bytes_read: round(self.read),
            bytes_written: round(self.written),
            seconds_active: self.seconds_active,
            expected_usage: self.expected,
            seconds_to_soft_limit: self.seconds_to_soft_limit,
            soft_limit_hit_at: self.soft_limit_hit_at,
            bytes_at_soft_limit: self.bytes_at_soft_limit,
        }
    }
}

#[cfg(test)]
mod tests;
