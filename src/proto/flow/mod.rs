//! Fixed-window flow control (tor-spec §"Flow control"; C tor `sendme.c`): circuit and stream
//! package/deliver windows and the FIFO of SENDME v1 tags a data sender must remember
//! (prop 289, "authenticated SENDMEs").
//!
//! Only DATA cells count against windows.
//!
//! Congestion control (prop 324) lives in submodules: [`params`] (consensus parameters and
//! C's defaults), [`vegas`] (the sender's congestion window, RTT and BDP: TOR_VEGAS) and
//! [`xon`] (stream XON/XOFF, which replaces stream SENDMEs on CC circuits). On a CC circuit
//! the receiving side still uses [`Windows`], with the negotiated `sendme_inc` as increment.

pub mod params;
pub mod vegas;
pub mod xon;

pub use params::{CcParams, VegasParams};
pub use vegas::{ChanState, CongestionControl};
pub use xon::{FlowMsg, StreamFlow, XonXoffError};

/// Circuit windows start at 1000 cells (consensus `circwindow`, default 1000).
pub const CIRCWINDOW_START: i32 = 1000;
/// A circuit-level SENDME adds 100 cells without congestion control.
pub const CIRCWINDOW_INCREMENT: i32 = 100;
/// Stream windows start at 500 cells.
pub const STREAMWINDOW_START: i32 = 500;
/// A stream-level SENDME adds 50 cells.
pub const STREAMWINDOW_INCREMENT: i32 = 50;
/// tor1 SENDME v1 tag: the full 20-byte running digest.
pub const SENDME_TAG_LEN: usize = 20;
/// Tags outstanding at most: one per increment in a full window.
pub const MAX_OUTSTANDING_TAGS: usize = (CIRCWINDOW_START / CIRCWINDOW_INCREMENT) as usize;

/// Why a window update is a protocol violation; the caller closes the circuit (TORPROTOCOL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// More DATA arrived than the deliver window allowed.
    #[error("deliver window went below zero")]
    DeliverWindowExhausted,
    /// A SENDME would push the package window past its maximum.
    #[error("SENDME would raise the package window above {max}")]
    PackageWindowOverflow { max: i32 },
    /// A circuit SENDME came with no cell outstanding that should have prompted it.
    #[error("unexpected circuit SENDME: no tag recorded")]
    UnexpectedSendme,
    /// A circuit SENDME's tag is not the one recorded (forged or v0 where v1 is required).
    #[error("circuit SENDME tag does not match the recorded digest")]
    SendmeTagMismatch,
}

/// One direction-pair of windows: what we may still send (`package`) and what we still
/// accept before the peer must hear from us (`deliver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub package: i32,
    pub deliver: i32,
    start: i32,
    increment: i32,
}

impl Windows {
    pub const fn circuit() -> Self {
        Windows {
            package: CIRCWINDOW_START,
            deliver: CIRCWINDOW_START,
            start: CIRCWINDOW_START,
            increment: CIRCWINDOW_INCREMENT,
        }
    }

    /// Deliver side of a circuit with congestion control: a SENDME every `sendme_inc` DATA
    /// cells (C `sendme_circuit_consider_sending` with the negotiated increment). The
    /// package side is unused there: [`CongestionControl`] bounds what we send.
    pub fn circuit_cc(sendme_inc: u8) -> Self {
        let inc = i32::from(sendme_inc.max(1));
        Windows {
            increment: inc,
            ..Windows::circuit()
        }
    }

    pub const fn stream() -> Self {
        Windows {
            package: STREAMWINDOW_START,
            deliver: STREAMWINDOW_START,
            start: STREAMWINDOW_START,
            increment: STREAMWINDOW_INCREMENT,
        }
    }

    /// A DATA cell arrived: spend one deliver credit (C `sendme_*_data_received`).
    pub fn data_received(&mut self) -> Result<(), FlowError> {
        self.deliver -= 1;
        if self.deliver < 0 {
            return Err(FlowError::DeliverWindowExhausted);
        }
        Ok(())
    }

    /// Whether we owe the peer a SENDME: the deliver window has fallen a full increment
    /// below its start (C `sendme_circuit_consider_sending`: `deliver <= start - inc`).
    pub fn should_send_sendme(&self) -> bool {
        self.deliver <= self.start - self.increment
    }

    /// DATA cells that can still arrive before a SENDME is owed (at least 1).
    pub fn cells_until_sendme(&self) -> usize {
        (self.deliver - (self.start - self.increment)).max(1) as usize
    }

    /// Account for one SENDME we sent.
    pub fn sendme_sent(&mut self) {
        self.deliver += self.increment;
    }

    /// Whether the next DATA cell we package should have its tag recorded: it is the one
    /// whose arrival will make the peer send a SENDME (C `circuit_sendme_cell_is_next`,
    /// evaluated before the package window is decremented).
    pub fn next_cell_prompts_sendme(&self) -> bool {
        self.package > 0 && (self.package - 1) % self.increment == 0
    }

    /// Spend one package credit; false if none is left (the caller must not send).
    pub fn take_package(&mut self) -> bool {
        if self.package <= 0 {
            return false;
        }
        self.package -= 1;
        true
    }

    /// A SENDME arrived: add an increment, refusing to exceed the start value (C closes on
    /// `package_window > CIRCWINDOW_START_MAX` / stream equivalent).
    pub fn sendme_received(&mut self) -> Result<(), FlowError> {
        if self.package + self.increment > self.start {
            return Err(FlowError::PackageWindowOverflow { max: self.start });
        }
        self.package += self.increment;
        Ok(())
    }
}

/// The SENDME v1 tags of cells we sent that will each prompt one circuit SENDME, oldest
/// first (C `sendme_record_cell_digest_on_circ`, `sendme_is_valid`). Bounded: the package
/// window allows at most [`MAX_OUTSTANDING_TAGS`] to be outstanding.
#[derive(Debug, Clone)]
pub struct SendmeTags {
    tags: [[u8; SENDME_TAG_LEN]; MAX_OUTSTANDING_TAGS],
    head: u8,
    len: u8,
}

impl Default for SendmeTags {
    fn default() -> Self {
        SendmeTags {
            tags: [[0; SENDME_TAG_LEN]; MAX_OUTSTANDING_TAGS],
            head: 0,
            len: 0,
        }
    }
}

impl SendmeTags {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Remember a tag; the oldest is dropped if full (cannot happen while the package
    /// window is respected).
    pub fn record(&mut self, tag: [u8; SENDME_TAG_LEN]) {
        let cap = MAX_OUTSTANDING_TAGS as u8;
        if self.len == cap {
            self.head = (self.head + 1) % cap;
            self.len -= 1;
        }
        let at = (self.head + self.len) % cap;
        self.tags[at as usize] = tag;
        self.len += 1;
    }

    /// Pops the oldest tag and compares it in constant time with what the SENDME carried.
    pub fn check(&mut self, received: &[u8]) -> Result<(), FlowError> {
        if self.len == 0 {
            return Err(FlowError::UnexpectedSendme);
        }
        let want = self.tags[self.head as usize];
        self.head = (self.head + 1) % MAX_OUTSTANDING_TAGS as u8;
        self.len -= 1;
        use subtle::ConstantTimeEq;
        if received.len() == SENDME_TAG_LEN && bool::from(want.ct_eq(received)) {
            Ok(())
        } else {
            Err(FlowError::SendmeTagMismatch)
        }
    }
}

/// Largest DATA payload that still leaves enough random padding to make the next SENDME
/// unpredictable: 498 − 4 zero bytes − 16 (C `RELAY_PAYLOAD_LENGTH_FOR_RANDOM_SENDMES`).
pub const RANDOM_SENDME_PAYLOAD_LEN: usize = 498 - 4 - 16;

/// Ensures that within every 50..100 DATA cells we package, at least one carries enough
/// random padding (C `connection_edge_get_inbuf_bytes_to_package`): otherwise a client
/// that sees only full cells could predict our digest and forge SENDMEs (prop 289).
#[derive(Debug, Clone, Copy)]
pub struct SendmeRandomness {
    cells_left: u16,
    have_random: bool,
}

impl SendmeRandomness {
    pub fn new(rng: &mut impl rand_core::RngCore) -> Self {
        let mut s = SendmeRandomness {
            cells_left: 0,
            have_random: false,
        };
        s.reset(rng);
        s
    }

    fn reset(&mut self, rng: &mut impl rand_core::RngCore) {
        let half = (CIRCWINDOW_INCREMENT / 2) as u32;
        self.cells_left = (half + rng.next_u32() % half) as u16;
        self.have_random = false;
    }

    /// The most bytes the next DATA cell may carry, given `available` bytes (≤ 498).
    pub fn limit(&self, available: usize) -> usize {
        if self.cells_left == 0 && !self.have_random {
            available.min(RANDOM_SENDME_PAYLOAD_LEN)
        } else {
            available
        }
    }

    /// Record that a DATA cell of `len` bytes was packaged.
    pub fn packaged(&mut self, len: usize, rng: &mut impl rand_core::RngCore) {
        if len <= RANDOM_SENDME_PAYLOAD_LEN {
            self.have_random = true;
        }
        if self.cells_left == 0 {
            self.reset(rng);
        }
        self.cells_left -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_window_and_sendme_threshold() {
        let mut w = Windows::circuit();
        for _ in 0..99 {
            w.data_received().unwrap();
            assert!(!w.should_send_sendme());
        }
        assert_eq!(w.cells_until_sendme(), 1);
        w.data_received().unwrap();
        assert!(w.should_send_sendme());
        w.sendme_sent();
        assert_eq!(w.deliver, 1000);
        let mut s = Windows::stream();
        for _ in 0..500 {
            s.data_received().unwrap();
        }
        assert_eq!(s.data_received(), Err(FlowError::DeliverWindowExhausted));
    }

    #[test]
    fn tag_recorded_on_every_hundredth_cell() {
        let mut w = Windows::circuit();
        let mut prompting = vec![];
        for n in 1..=1000 {
            if w.next_cell_prompts_sendme() {
                prompting.push(n);
            }
            assert!(w.take_package());
        }
        assert!(!w.take_package());
        assert_eq!(prompting, (1..=10).map(|k| k * 100).collect::<Vec<_>>());
        w.sendme_received().unwrap();
        assert_eq!(w.package, 100);
        let mut full = Windows::circuit();
        assert!(full.sendme_received().is_err());
    }

    #[test]
    fn tags_fifo_and_forgery() {
        let mut t = SendmeTags::default();
        assert_eq!(t.check(&[0; 20]), Err(FlowError::UnexpectedSendme));
        t.record([1; 20]);
        t.record([2; 20]);
        assert_eq!(t.check(&[1; 20]), Ok(()));
        assert_eq!(t.check(&[9; 20]), Err(FlowError::SendmeTagMismatch));
        assert!(t.is_empty());
        for i in 0..12u8 {
            t.record([i; 20]);
        }
        assert_eq!(t.len(), MAX_OUTSTANDING_TAGS);
        assert_eq!(t.check(&[2; 20]), Ok(()));
        t.record([7; 20]);
        assert_eq!(t.check(&[3; 20][..19]), Err(FlowError::SendmeTagMismatch));
    }

    #[test]
    fn randomness_forces_a_short_cell() {
        let mut rng = rand::rngs::mock::StepRng::new(7, 13);
        let mut r = SendmeRandomness::new(&mut rng);
        let mut short = 0;
        for _ in 0..300 {
            let n = r.limit(498);
            if n < 498 {
                short += 1;
                assert_eq!(n, RANDOM_SENDME_PAYLOAD_LEN);
            }
            r.packaged(n, &mut rng);
        }
        assert!((3..=6).contains(&short), "{short}");
    }
}
