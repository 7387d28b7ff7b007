//! The introduction point (rend-spec-v3 §"The introduction protocol"; C tor
//! `hs_intropoint.c`, `hs_circuitmap.c`, `hs_dos.c`).
//!
//! One [`IntroPoint`] per shard: a bounded table auth key → the service's intro circuit, each
//! with its INTRODUCE2 token bucket. The node calls [`IntroPoint::on_establish_intro`] and
//! [`IntroPoint::on_introduce1`] and carries out what they return.

use std::collections::HashMap;
use std::time::Instant;

use super::cells::{
    AckStatus, AuthKey, DosExtension, DosRate, EstablishIntro, HsCellError, Introduce1,
    AUTH_KEY_TYPE_ED25519,
};
use super::verify::{verify_establish_intro, VerifyError};
use super::{CircFacts, HsCircState, HsRole};
use crate::cell::chan::DestroyReason;

/// The INTRODUCE2 DoS defaults from the consensus (C tor `hs_dos.c`): applied to every intro
/// circuit whose ESTABLISH_INTRO had no DoS extension.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IntroDosParams {
    /// `HiddenServiceEnableIntroDoSDefense`, default 0, in [0, 1].
    pub enabled: bool,
    /// `HiddenServiceEnableIntroDoSRatePerSec`, default 25, in [0, INT32_MAX].
    pub rate_per_sec: u32,
    /// `HiddenServiceEnableIntroDoSBurstPerSec`, default 200, in [0, INT32_MAX].
    pub burst_per_sec: u32,
}

impl Default for IntroDosParams {
    fn default() -> Self {
        IntroDosParams {
            enabled: false,
            rate_per_sec: 25,
            burst_per_sec: 200,
        }
    }
}

impl IntroDosParams {
    /// Reads the three consensus parameters; `param(name)` gives the raw value if the
    /// consensus has it. Out-of-range values are clamped into range, as C tor's
    /// `networkstatus_get_param` does.
    pub fn from_consensus(param: impl Fn(&str) -> Option<i32>) -> Self {
        let d = IntroDosParams::default();
        let get = |name, default: u32, max: i32| -> u32 {
            param(name).map_or(default, |v| v.clamp(0, max) as u32)
        };
        IntroDosParams {
            enabled: get("HiddenServiceEnableIntroDoSDefense", d.enabled as u32, 1) == 1,
            rate_per_sec: get(
                "HiddenServiceEnableIntroDoSRatePerSec",
                d.rate_per_sec,
                i32::MAX,
            ),
            burst_per_sec: get(
                "HiddenServiceEnableIntroDoSBurstPerSec",
                d.burst_per_sec,
                i32::MAX,
            ),
        }
    }
}

/// C tor's `token_bucket_ctr_t` as `hs_dos.c` uses it: whole seconds, refilled by `rate`
/// per elapsed second up to `burst`, starting full.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Intro2Bucket {
    rate: u32,
    burst: u32,
    tokens: i64,
    /// Seconds since the table's epoch (C tor: `monotime_coarse_absolute_sec`, a u32).
    last_refill: u32,
}

impl Intro2Bucket {
    /// `token_bucket_ctr_init`: configure, then fill.
    fn new(rate: u32, burst: u32, now: u32) -> Self {
        let burst = burst.min(i32::MAX as u32);
        Intro2Bucket {
            rate,
            burst,
            tokens: burst.into(),
            last_refill: now,
        }
    }

    /// `token_bucket_ctr_adjust`: new rate and burst; never more tokens than the burst.
    fn adjust(&mut self, rate: u32, burst: u32) {
        self.rate = rate;
        self.burst = burst.min(i32::MAX as u32);
        self.tokens = self.tokens.min(self.burst.into());
    }

    /// `token_bucket_ctr_refill`.
    fn refill(&mut self, now: u32) {
        let elapsed = now.wrapping_sub(self.last_refill);
        // C tor ignores jumps this large as a clock rollover.
        if elapsed <= u32::MAX / 4 && elapsed > 0 {
            let gap = i64::from(self.burst) - self.tokens;
            // A zero rate never refills (C tor would divide by zero here).
            if self.rate != 0 {
                if i64::from(elapsed) > gap / i64::from(self.rate) {
                    self.tokens = self.burst.into();
                } else {
                    self.tokens += i64::from(self.rate) * i64::from(elapsed);
                }
            }
        }
        self.last_refill = now;
    }
}

/// One registered intro circuit.
#[derive(Clone, Copy, Debug)]
struct IntroEntry<C> {
    circ: C,
    /// C tor `introduce2_dos_defense_enabled`.
    dos_enabled: bool,
    /// C tor `introduce2_dos_defense_explicit`: set by the DoS extension; consensus changes
    /// then leave this circuit alone.
    dos_explicit: bool,
    bucket: Intro2Bucket,
}

/// Counters for the intro point (C tor's `relay_increment_est_intro_action` and
/// `relay_increment_intro1_action` actions, plus this table's own bound).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct IntroCounters {
    pub est_intro_success: u64,
    /// Unparseable, legacy (RSA) or unknown key type, bad lengths.
    pub est_intro_malformed: u64,
    /// Bad signature or MAC.
    pub est_intro_verify_failed: u64,
    /// Not a plain last-hop circuit.
    pub est_intro_unsuitable: u64,
    /// An earlier circuit for the same key was closed in favour of this one.
    pub est_intro_replaced: u64,
    /// The table was full: refused (Fors's bound; C tor's map is unbounded).
    pub est_intro_table_full: u64,
    pub intro1_success: u64,
    pub intro1_malformed: u64,
    pub intro1_unknown_service: u64,
    pub intro1_rate_limited: u64,
    /// A second INTRODUCE1 on one circuit.
    pub intro1_circuit_reused: u64,
    /// From a one-hop client circuit.
    pub intro1_single_hop: u64,
    /// Not a plain last-hop circuit.
    pub intro1_unsuitable: u64,
    /// The INTRODUCE2 could not be sent on the service circuit.
    pub intro1_circuit_dead: u64,
}

/// The answer to an ESTABLISH_INTRO.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EstablishIntroOutcome<C> {
    /// Send INTRO_ESTABLISHED ([`super::cells::encode_intro_established`]) on the circuit,
    /// which is now the key's intro circuit. Close `replaced`, the key's previous intro
    /// circuit, with [`DestroyReason::Finished`] (C tor `hs_circuitmap_register_impl`: the
    /// newest circuit wins so a service can re-establish after losing one).
    Established { replaced: Option<C> },
    /// Close the circuit with this reason and send nothing.
    Close(DestroyReason),
}

/// The answer to an INTRODUCE1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Introduce1Outcome<C> {
    /// Send INTRODUCE2 with the INTRODUCE1's body, byte for byte, on `service`; then call
    /// [`IntroPoint::introduce2_sent`] and send the INTRODUCE_ACK it returns on the
    /// client's circuit.
    Forward { service: C },
    /// Send INTRODUCE_ACK with this status on the client's circuit, which stays open.
    Ack(AckStatus),
    /// Close the client's circuit with this reason and send nothing (C tor sends no NACK
    /// on a circuit that may not carry INTRODUCE1 at all).
    Close(DestroyReason),
}

/// Why an ESTABLISH_INTRO was refused, for logs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EstablishIntroError {
    Unsuitable,
    Malformed(HsCellError),
    Verify(VerifyError),
    TableFull,
}

/// One shard's introduction-point state.
pub struct IntroPoint<C> {
    map: HashMap<AuthKey, IntroEntry<C>>,
    capacity: usize,
    dos: IntroDosParams,
    /// Zero of the bucket clock.
    epoch: Instant,
    pub counters: IntroCounters,
}

impl<C: Copy + Eq> IntroPoint<C> {
    /// A table for at most `capacity` intro circuits; its memory is reserved here, so
    /// registering never allocates.
    pub fn new(capacity: usize, dos: IntroDosParams, epoch: Instant) -> Self {
        IntroPoint {
            map: HashMap::with_capacity(capacity),
            capacity,
            dos,
            epoch,
            counters: IntroCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The intro circuit registered here for `key`.
    pub fn lookup(&self, key: &AuthKey) -> Option<C> {
        self.map.get(key).map(|e| e.circ)
    }

    fn secs(&self, now: Instant) -> u32 {
        // Whole seconds, wrapping like C tor's u32 clock.
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    /// A new consensus: new defaults, applied at once to every intro circuit that did not set
    /// its own (C tor `update_intro_circuits`). Walks the table; consensuses are hourly.
    pub fn set_consensus_params(&mut self, dos: IntroDosParams) {
        self.dos = dos;
        for e in self.map.values_mut().filter(|e| !e.dos_explicit) {
            e.dos_enabled = dos.enabled;
            e.bucket.adjust(dos.rate_per_sec, dos.burst_per_sec);
        }
    }

    /// ESTABLISH_INTRO on `circ`, whose handshake gave it `kh` (C tor
    /// `hs_intro_received_establish_intro`), when the key's table is this one: the checks of
    /// [`IntroPoint::check_establish_intro`], then [`IntroPoint::register`]. On success
    /// `state` becomes [`HsRole::IntroPoint`].
    pub fn on_establish_intro(
        &mut self,
        circ: C,
        state: &mut HsCircState,
        facts: CircFacts,
        body: &[u8],
        kh: &[u8],
        now: Instant,
    ) -> EstablishIntroOutcome<C> {
        let (key, dos) = match self.check_establish_intro(state, facts, body, kh) {
            Ok(k) => k,
            Err(r) => return EstablishIntroOutcome::Close(r),
        };
        match self.register(circ, key, dos, now) {
            Ok(replaced) => {
                state.role = HsRole::IntroPoint(key);
                EstablishIntroOutcome::Established { replaced }
            }
            Err(r) => EstablishIntroOutcome::Close(r),
        }
    }

    /// The circuit half of ESTABLISH_INTRO, run on the circuit's own shard (it holds the
    /// KH): key type, suitability, parse, signature and MAC, in C tor's order. Returns the
    /// auth key and the DoS extension to register with, or the reason to close the circuit
    /// (counted).
    pub fn check_establish_intro(
        &mut self,
        state: &HsCircState,
        facts: CircFacts,
        body: &[u8],
        kh: &[u8],
    ) -> Result<(AuthKey, DosExtension), DestroyReason> {
        let e = match Self::verify_establish_intro(state, facts, body, kh) {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        let c = &mut self.counters;
        match e {
            EstablishIntroError::Unsuitable => c.est_intro_unsuitable += 1,
            EstablishIntroError::Malformed(_) => c.est_intro_malformed += 1,
            EstablishIntroError::Verify(_) => c.est_intro_verify_failed += 1,
            EstablishIntroError::TableFull => {
                c.est_intro_table_full += 1;
                return Err(DestroyReason::ResourceLimit);
            }
        }
        Err(DestroyReason::TorProtocol)
    }

    fn verify_establish_intro(
        state: &HsCircState,
        facts: CircFacts,
        body: &[u8],
        kh: &[u8],
    ) -> Result<(AuthKey, DosExtension), EstablishIntroError> {
        // C tor looks at the key type byte (empty, legacy RSA, unknown) before it asks
        // whether the circuit is suitable, and parses the rest after.
        let parsed = EstablishIntro::parse(body);
        if body.first() != Some(&AUTH_KEY_TYPE_ED25519) {
            if let Err(e) = parsed {
                return Err(EstablishIntroError::Malformed(e));
            }
        }
        if state.role != HsRole::Plain || !facts.is_last_hop {
            return Err(EstablishIntroError::Unsuitable);
        }
        let cell = parsed.map_err(EstablishIntroError::Malformed)?;
        verify_establish_intro(&cell, kh).map_err(EstablishIntroError::Verify)?;
        Ok((*cell.auth_key, cell.dos_extension()))
    }

    /// The table half of ESTABLISH_INTRO, run on the key's home shard: `circ` becomes the
    /// key's intro circuit with the DoS settings `dos` asked for. Returns the circuit it
    /// replaced (C tor `hs_circuitmap_register_impl`: the newest wins), or RESOURCELIMIT
    /// when the table is full (counted).
    pub fn register(
        &mut self,
        circ: C,
        key: AuthKey,
        dos: DosExtension,
        now: Instant,
    ) -> Result<Option<C>, DestroyReason> {
        let old = self.map.get(&key).map(|e| e.circ);
        if old.is_none() && self.map.len() >= self.capacity {
            self.counters.est_intro_table_full += 1;
            return Err(DestroyReason::ResourceLimit);
        }
        // Defaults first, then the extension may override them (C tor
        // `handle_verified_establish_intro_cell`).
        let t = self.secs(now);
        let mut entry = IntroEntry {
            circ,
            dos_enabled: self.dos.enabled,
            dos_explicit: false,
            bucket: Intro2Bucket::new(self.dos.rate_per_sec, self.dos.burst_per_sec, t),
        };
        if let DosExtension::Explicit(rate) = dos {
            entry.dos_explicit = true;
            entry.dos_enabled = rate.is_some();
            if let Some(DosRate {
                rate_per_sec,
                burst_per_sec,
            }) = rate
            {
                entry.bucket = Intro2Bucket::new(rate_per_sec, burst_per_sec, t);
            }
        }
        self.map.insert(key, entry);
        self.counters.est_intro_success += 1;
        if old.is_some() {
            self.counters.est_intro_replaced += 1;
        }
        Ok(old)
    }

    /// `circ` no longer serves `key` (it closed): forget the key if `circ` is still its
    /// circuit (a newer circuit may have replaced it).
    pub fn unregister(&mut self, key: &AuthKey, circ: C) {
        if self.map.get(key).is_some_and(|e| e.circ == circ) {
            self.map.remove(key);
        }
    }

    /// The client-circuit half of INTRODUCE1 (C tor `hs_intro_received_introduce1` up to the
    /// map lookup): may this circuit introduce, and is the cell well formed? Marks the
    /// circuit as having introduced. `Err` is the outcome to carry out.
    pub fn check_introduce1<'a>(
        &mut self,
        state: &mut HsCircState,
        facts: CircFacts,
        body: &'a [u8],
    ) -> Result<Introduce1<'a>, Introduce1Outcome<C>> {
        let c = &mut self.counters;
        let close = Err(Introduce1Outcome::Close(DestroyReason::TorProtocol));
        // Too short to hold LEGACY_KEY_ID: C tor closes rather than NACKs.
        if body.len() < super::cells::LEGACY_KEY_ID_LEN {
            c.intro1_malformed += 1;
            return close;
        }
        if state.role != HsRole::Plain || !facts.is_last_hop {
            c.intro1_unsuitable += 1;
            return close;
        }
        if state.introduce1_seen {
            c.intro1_circuit_reused += 1;
            return close;
        }
        if facts.from_client_channel {
            c.intro1_single_hop += 1;
            return close;
        }
        state.introduce1_seen = true;
        // C tor `handle_introduce1`: an INTRODUCE1 that would not fit as INTRODUCE2 on a
        // relay-cell-v1 (CGO) circuit is NACKed BAD_FORMAT before the lookup, whatever
        // format the service's circuit uses, so the answer never tells the client which
        // one the service made, and the service's intro circuit is not torn down for it.
        if body.len()
            > crate::cell::relay::v1::max_data_len(crate::cell::relay::RelayCmd::INTRODUCE2)
        {
            c.intro1_malformed += 1;
            return Err(Introduce1Outcome::Ack(AckStatus::BAD_FORMAT));
        }
        Introduce1::parse(body).map_err(|_| {
            c.intro1_malformed += 1;
            Introduce1Outcome::Ack(AckStatus::BAD_FORMAT)
        })
    }

    /// The service half (C tor `handle_introduce1` after parsing), run on the shard that
    /// holds `key`: the intro circuit, if its INTRODUCE2 bucket allows one more.
    pub fn route_introduce1(&mut self, key: &AuthKey, now: Instant) -> Result<C, AckStatus> {
        let t = self.secs(now);
        let Some(e) = self.map.get_mut(key) else {
            self.counters.intro1_unknown_service += 1;
            return Err(AckStatus::UNKNOWN_ID);
        };
        if e.dos_enabled {
            // C tor `hs_dos_can_send_intro2`: refill, take a token for this cell, then allow
            // only if one is still left (so a full bucket of `burst` lets `burst - 1` through).
            e.bucket.refill(t);
            if e.bucket.tokens > 0 {
                e.bucket.tokens -= 1;
            }
            if e.bucket.tokens <= 0 {
                self.counters.intro1_rate_limited += 1;
                return Err(AckStatus::UNKNOWN_ID);
            }
        }
        Ok(e.circ)
    }

    /// INTRODUCE1 on a client circuit when the service's circuit, if any, is on this shard.
    pub fn on_introduce1(
        &mut self,
        state: &mut HsCircState,
        facts: CircFacts,
        body: &[u8],
        now: Instant,
    ) -> Introduce1Outcome<C> {
        let cell = match self.check_introduce1(state, facts, body) {
            Ok(c) => c,
            Err(o) => return o,
        };
        match self.route_introduce1(cell.auth_key, now) {
            Ok(service) => Introduce1Outcome::Forward { service },
            Err(status) => Introduce1Outcome::Ack(status),
        }
    }

    /// After [`Introduce1Outcome::Forward`]: whether the INTRODUCE2 went out. Returns the
    /// INTRODUCE_ACK status for the client: success, or "unknown ID" when it could not be
    /// sent, as C tor answers.
    pub fn introduce2_sent(&mut self, sent: bool) -> AckStatus {
        if sent {
            self.counters.intro1_success += 1;
            AckStatus::SUCCESS
        } else {
            self.counters.intro1_circuit_dead += 1;
            AckStatus::UNKNOWN_ID
        }
    }

    /// `circ` is closing: forget its key if it is still the key's circuit.
    pub fn on_circuit_closed(&mut self, circ: C, state: &HsCircState) {
        if let HsRole::IntroPoint(key) = state.role {
            self.unregister(&key, circ);
        }
    }

    /// Drops `key`'s entry and returns its circuit, for the node to close with
    /// [`DestroyReason::Finished`] when another shard registered the same key (C tor keeps one
    /// circuit per key relay-wide).
    pub fn remove_key(&mut self, key: &AuthKey) -> Option<C> {
        self.map.remove(key).map(|e| e.circ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hs::cells::{Introduce1, IntroduceAck};
    use crate::proto::hs::verify::tests::{build, seeded};
    use ed25519_dalek::SigningKey;
    use rand::Rng;
    use std::time::Duration;

    const EDGE: CircFacts = CircFacts {
        is_last_hop: true,
        from_client_channel: false,
    };

    struct Svc {
        sk: SigningKey,
        kh: [u8; 20],
    }

    impl Svc {
        fn new(rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Self {
            let mut kh = [0u8; 20];
            rng.fill_bytes(&mut kh);
            Svc {
                sk: SigningKey::generate(rng),
                kh,
            }
        }
        fn key(&self) -> AuthKey {
            self.sk.verifying_key().to_bytes()
        }
        fn cell(&self, dos: Option<(u64, u64)>) -> Vec<u8> {
            let mut b = [0u8; 498];
            let n = build(&self.sk, &self.kh, dos, &mut b);
            b[..n].to_vec()
        }
    }

    fn intro1(key: &AuthKey) -> Vec<u8> {
        let mut b = [0u8; 498];
        let n = Introduce1::encode(key, &[], &[0xee; 200], &mut b).unwrap();
        b[..n].to_vec()
    }

    fn establish(
        ip: &mut IntroPoint<u32>,
        circ: u32,
        svc: &Svc,
        dos: Option<(u64, u64)>,
        now: Instant,
    ) -> (EstablishIntroOutcome<u32>, HsCircState) {
        let mut st = HsCircState::default();
        let o = ip.on_establish_intro(circ, &mut st, EDGE, &svc.cell(dos), &svc.kh, now);
        (o, st)
    }

    fn introduce(ip: &mut IntroPoint<u32>, key: &AuthKey, now: Instant) -> Introduce1Outcome<u32> {
        ip.on_introduce1(&mut HsCircState::default(), EDGE, &intro1(key), now)
    }

    #[test]
    fn establish_then_introduce() {
        let mut rng = seeded("establish_then_introduce");
        let t0 = Instant::now();
        let mut ip = IntroPoint::new(8, IntroDosParams::default(), t0);
        let svc = Svc::new(&mut rng);
        let (o, st) = establish(&mut ip, 1, &svc, None, t0);
        assert_eq!(o, EstablishIntroOutcome::Established { replaced: None });
        assert_eq!(st.role, HsRole::IntroPoint(svc.key()));
        assert_eq!(ip.lookup(&svc.key()), Some(1));

        let mut client = HsCircState::default();
        let body = intro1(&svc.key());
        let o = ip.on_introduce1(&mut client, EDGE, &body, t0);
        assert_eq!(o, Introduce1Outcome::Forward { service: 1 });
        assert_eq!(ip.introduce2_sent(true), AckStatus::SUCCESS);
        assert_eq!(ip.counters.intro1_success, 1);
        // The INTRODUCE2 body is the INTRODUCE1 body.
        assert_eq!(Introduce1::parse(&body).unwrap().body, &body[..]);

        // One introduction per circuit: the second closes it, no NACK.
        let o = ip.on_introduce1(&mut client, EDGE, &body, t0);
        assert_eq!(o, Introduce1Outcome::Close(DestroyReason::TorProtocol));
        assert_eq!(ip.counters.intro1_circuit_reused, 1);

        // A failed send answers "unknown ID".
        assert_eq!(ip.introduce2_sent(false), AckStatus::UNKNOWN_ID);
        let mut b = [0u8; 3];
        let n = IntroduceAck::encode(ip.introduce2_sent(true), &mut b).unwrap();
        assert_eq!(&b[..n], &[0, 0, 0]);
    }

    #[test]
    fn establish_refusals() {
        let mut rng = seeded("establish_refusals");
        let t0 = Instant::now();
        let mut ip = IntroPoint::new(8, IntroDosParams::default(), t0);
        let svc = Svc::new(&mut rng);
        let cell = svc.cell(None);
        let close = EstablishIntroOutcome::Close(DestroyReason::TorProtocol);

        // Not the last hop.
        let mut st = HsCircState::default();
        let mid = CircFacts {
            is_last_hop: false,
            ..EDGE
        };
        assert_eq!(
            ip.on_establish_intro(1, &mut st, mid, &cell, &svc.kh, t0),
            close
        );
        // Already a rendezvous point, or already an intro point.
        for role in [
            HsRole::RendWaiting([1; 20]),
            HsRole::RendJoined { cookie: None },
            HsRole::IntroPoint([3; 32]),
        ] {
            let mut st = HsCircState {
                role,
                introduce1_seen: false,
            };
            assert_eq!(
                ip.on_establish_intro(1, &mut st, EDGE, &cell, &svc.kh, t0),
                close
            );
            assert_eq!(st.role, role);
        }
        assert_eq!(ip.counters.est_intro_unsuitable, 4);

        // Bad MAC: another circuit's KH.
        let mut st = HsCircState::default();
        let mut kh = svc.kh;
        kh[5] ^= 1;
        assert_eq!(
            ip.on_establish_intro(1, &mut st, EDGE, &cell, &kh, t0),
            close
        );
        // Bad signature.
        let mut bad = cell.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            ip.on_establish_intro(1, &mut st, EDGE, &bad, &svc.kh, t0),
            close
        );
        assert_eq!(ip.counters.est_intro_verify_failed, 2);
        // Legacy RSA form, garbage, empty.
        let mut legacy = cell.clone();
        legacy[0] = 1;
        for b in [&legacy[..], &[9, 9, 9], &[]] {
            assert_eq!(
                ip.on_establish_intro(1, &mut st, EDGE, b, &svc.kh, t0),
                close
            );
        }
        assert_eq!(ip.counters.est_intro_malformed, 3);
        // The key type is judged before the circuit: a legacy cell mid-circuit is malformed.
        assert_eq!(
            ip.on_establish_intro(1, &mut st, mid, &legacy, &svc.kh, t0),
            close
        );
        assert_eq!(ip.counters.est_intro_malformed, 4);
        assert_eq!(ip.counters.est_intro_unsuitable, 4);
        assert_eq!(st.role, HsRole::Plain);
        assert!(ip.is_empty());
        // Introducing on an intro circuit is not allowed either.
        let mut st = HsCircState {
            role: HsRole::IntroPoint(svc.key()),
            introduce1_seen: false,
        };
        assert_eq!(
            ip.on_introduce1(&mut st, EDGE, &intro1(&svc.key()), t0),
            Introduce1Outcome::Close(DestroyReason::TorProtocol)
        );
    }

    #[test]
    fn newest_circuit_replaces_older() {
        let mut rng = seeded("newest_circuit_replaces_older");
        let t0 = Instant::now();
        let mut ip = IntroPoint::new(1, IntroDosParams::default(), t0);
        let svc = Svc::new(&mut rng);
        let (_, st1) = establish(&mut ip, 1, &svc, None, t0);
        let (o, _) = establish(&mut ip, 2, &svc, None, t0);
        // Replacing does not need a free slot.
        assert_eq!(o, EstablishIntroOutcome::Established { replaced: Some(1) });
        assert_eq!(ip.lookup(&svc.key()), Some(2));
        assert_eq!(ip.counters.est_intro_replaced, 1);
        // The old circuit's close must not unregister the new one.
        ip.on_circuit_closed(1, &st1);
        assert_eq!(ip.lookup(&svc.key()), Some(2));
        assert_eq!(
            introduce(&mut ip, &svc.key(), t0),
            Introduce1Outcome::Forward { service: 2 }
        );
    }

    #[test]
    fn unknown_key_and_malformed_introduce1() {
        let mut rng = seeded("unknown_key_and_malformed_introduce1");
        let t0 = Instant::now();
        let mut ip = IntroPoint::<u32>::new(4, IntroDosParams::default(), t0);
        let key: AuthKey = rng.gen();
        assert_eq!(
            introduce(&mut ip, &key, t0),
            Introduce1Outcome::Ack(AckStatus::UNKNOWN_ID)
        );
        assert_eq!(ip.counters.intro1_unknown_service, 1);

        let mut bad = intro1(&key);
        bad[0] = 1; // legacy key ID
        let o = ip.on_introduce1(&mut HsCircState::default(), EDGE, &bad, t0);
        assert_eq!(o, Introduce1Outcome::Ack(AckStatus::BAD_FORMAT));
        let o = ip.on_introduce1(&mut HsCircState::default(), EDGE, &bad[..30], t0);
        assert_eq!(o, Introduce1Outcome::Ack(AckStatus::BAD_FORMAT));
        assert_eq!(ip.counters.intro1_malformed, 2);
        // Shorter than LEGACY_KEY_ID: closed.
        let o = ip.on_introduce1(&mut HsCircState::default(), EDGE, &bad[..19], t0);
        assert_eq!(o, Introduce1Outcome::Close(DestroyReason::TorProtocol));
        // From a one-hop client, and from the middle of a circuit: closed, no NACK.
        let one_hop = CircFacts {
            from_client_channel: true,
            ..EDGE
        };
        let mid = CircFacts {
            is_last_hop: false,
            ..EDGE
        };
        for f in [one_hop, mid] {
            let o = ip.on_introduce1(&mut HsCircState::default(), f, &intro1(&key), t0);
            assert_eq!(o, Introduce1Outcome::Close(DestroyReason::TorProtocol));
        }
        assert_eq!(ip.counters.intro1_single_hop, 1);
    }

    #[test]
    fn table_full_and_close() {
        let mut rng = seeded("table_full_and_close");
        let t0 = Instant::now();
        let mut ip = IntroPoint::new(2, IntroDosParams::default(), t0);
        let svcs: Vec<Svc> = (0..3).map(|_| Svc::new(&mut rng)).collect();
        let (_, s0) = establish(&mut ip, 10, &svcs[0], None, t0);
        establish(&mut ip, 11, &svcs[1], None, t0);
        let (o, st) = establish(&mut ip, 12, &svcs[2], None, t0);
        assert_eq!(
            o,
            EstablishIntroOutcome::Close(DestroyReason::ResourceLimit)
        );
        assert_eq!(st.role, HsRole::Plain);
        assert_eq!(ip.counters.est_intro_table_full, 1);
        assert_eq!(ip.len(), 2);
        ip.on_circuit_closed(10, &s0);
        assert_eq!(ip.lookup(&svcs[0].key()), None);
        let (o, _) = establish(&mut ip, 12, &svcs[2], None, t0);
        assert_eq!(o, EstablishIntroOutcome::Established { replaced: None });
        assert_eq!(ip.remove_key(&svcs[2].key()), Some(12));
        assert_eq!(ip.len(), 1);
    }

    /// Counts the INTRODUCE1s forwarded out of `n` at time `now`.
    fn forwarded(ip: &mut IntroPoint<u32>, key: &AuthKey, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| matches!(introduce(ip, key, now), Introduce1Outcome::Forward { .. }))
            .count()
    }

    #[test]
    fn dos_bucket_from_extension_refills_per_second() {
        let mut rng = seeded("dos_bucket_from_extension_refills_per_second");
        let t0 = Instant::now();
        let mut ip = IntroPoint::new(4, IntroDosParams::default(), t0);
        let svc = Svc::new(&mut rng);
        establish(&mut ip, 1, &svc, Some((3, 10)), t0);
        // A full bucket of 10 lets 9 through: C tor takes the token, then needs one left.
        assert_eq!(forwarded(&mut ip, &svc.key(), 20, t0), 9);
        assert_eq!(ip.counters.intro1_rate_limited, 11);
        assert_eq!(
            introduce(&mut ip, &svc.key(), t0),
            Introduce1Outcome::Ack(AckStatus::UNKNOWN_ID)
        );
        // Within the same second: nothing new.
        let t = t0 + Duration::from_millis(999);
        assert_eq!(forwarded(&mut ip, &svc.key(), 5, t), 0);
        // One second: +3 tokens, 0 + 3 → 3 cells would leave 2, 1, 0: 2 pass.
        let t = t0 + Duration::from_secs(1);
        assert_eq!(forwarded(&mut ip, &svc.key(), 5, t), 2);
        // A long pause refills only up to the burst.
        let t = t0 + Duration::from_secs(100);
        assert_eq!(forwarded(&mut ip, &svc.key(), 20, t), 9);
    }

    #[test]
    fn dos_defaults_from_consensus_and_explicit_off() {
        let mut rng = seeded("dos_defaults_from_consensus_and_explicit_off");
        let t0 = Instant::now();
        // Off by default: unlimited.
        let mut ip = IntroPoint::new(4, IntroDosParams::default(), t0);
        let a = Svc::new(&mut rng);
        let b = Svc::new(&mut rng);
        let c = Svc::new(&mut rng);
        establish(&mut ip, 1, &a, None, t0);
        // Explicitly off (rate 0) and explicitly invalid (burst < rate).
        establish(&mut ip, 2, &b, Some((0, 0)), t0);
        establish(&mut ip, 3, &c, Some((5, 1)), t0);
        assert_eq!(forwarded(&mut ip, &a.key(), 300, t0), 300);

        // The consensus turns the defense on at 1/s burst 4: only circuit 1 follows it.
        let p = IntroDosParams::from_consensus(|n| match n {
            "HiddenServiceEnableIntroDoSDefense" => Some(1),
            "HiddenServiceEnableIntroDoSRatePerSec" => Some(1),
            "HiddenServiceEnableIntroDoSBurstPerSec" => Some(4),
            _ => None,
        });
        assert_eq!(
            p,
            IntroDosParams {
                enabled: true,
                rate_per_sec: 1,
                burst_per_sec: 4
            }
        );
        ip.set_consensus_params(p);
        // Bucket was full at 200; adjusted down to the new burst 4 → 3 pass.
        assert_eq!(forwarded(&mut ip, &a.key(), 10, t0), 3);
        assert_eq!(forwarded(&mut ip, &b.key(), 300, t0), 300);
        assert_eq!(forwarded(&mut ip, &c.key(), 300, t0), 300);
        // New circuits take the new defaults.
        let d = Svc::new(&mut rng);
        establish(&mut ip, 4, &d, None, t0);
        assert_eq!(forwarded(&mut ip, &d.key(), 10, t0), 3);
    }

    #[test]
    fn consensus_params_defaults_and_clamping() {
        assert_eq!(
            IntroDosParams::from_consensus(|_| None),
            IntroDosParams::default()
        );
        let p = IntroDosParams::from_consensus(|n| match n {
            "HiddenServiceEnableIntroDoSDefense" => Some(7),
            "HiddenServiceEnableIntroDoSRatePerSec" => Some(-3),
            _ => Some(i32::MAX),
        });
        assert_eq!(
            p,
            IntroDosParams {
                enabled: true,
                rate_per_sec: 0,
                burst_per_sec: i32::MAX as u32
            }
        );
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut rng = seeded("zero_rate_never_refills");
        let t0 = Instant::now();
        let p = IntroDosParams {
            enabled: true,
            rate_per_sec: 0,
            burst_per_sec: 3,
        };
        let mut ip = IntroPoint::new(4, p, t0);
        let a = Svc::new(&mut rng);
        establish(&mut ip, 1, &a, None, t0);
        assert_eq!(forwarded(&mut ip, &a.key(), 10, t0), 2);
        assert_eq!(
            forwarded(&mut ip, &a.key(), 10, t0 + Duration::from_secs(60)),
            0
        );
    }
}
