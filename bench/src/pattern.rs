//! The seeded byte pattern both ends of a transfer agree on, and its verifier.
//!
//! Byte `o` of the stream for seed `s` is byte `o % 8` (little-endian) of
//! `mix(s, o / 8)`, where `mix` is the SplitMix64 finaliser of `s + (w + 1) * φ`. Any offset can
//! be produced without generating what comes before it, so a verifier can start anywhere and a
//! reordered, dropped or altered byte shows up at its exact offset.

/// SplitMix64's golden-ratio increment.
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

/// The pattern word for 8-byte word index `w`.
#[inline(always)]
fn word(seed: u64, w: u64) -> u64 {
    let mut z = seed.wrapping_add(w.wrapping_add(1).wrapping_mul(PHI));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the pattern bytes `offset .. offset + out.len()` of stream `seed` into `out`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut o = offset;
    let mut i = 0;
    // Leading partial word.
    while i < out.len() && !o.is_multiple_of(8) {
        out[i] = word(seed, o / 8).to_le_bytes()[(o % 8) as usize];
        i += 1;
        o += 1;
    }
    let mut chunks = out[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(seed, o / 8).to_le_bytes());
        o += 8;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = word(seed, o / 8).to_le_bytes();
        rest.copy_from_slice(&w[..rest.len()]);
    }
}

/// The index in `data` of the first byte that differs from the pattern at `offset`, if any.
pub fn first_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    let mut o = offset;
    let mut i = 0;
    while i < data.len() && !o.is_multiple_of(8) {
        if data[i] != word(seed, o / 8).to_le_bytes()[(o % 8) as usize] {
            return Some(i);
        }
        i += 1;
        o += 1;
    }
    while i + 8 <= data.len() {
        let want = word(seed, o / 8).to_le_bytes();
        if data[i..i + 8] != want {
            let k = (0..8).find(|&k| data[i + k] != want[k]).unwrap_or(0);
            return Some(i + k);
        }
        i += 8;
        o += 8;
    }
    if i < data.len() {
        let want = word(seed, o / 8).to_le_bytes();
        let n = data.len() - i;
        if let Some(k) = (0..n).find(|&k| data[i + k] != want[k]) {
            return Some(i + k);
        }
    }
    None
}

/// Why a received stream did not match its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// A byte differs from the pattern (corrupted, reordered or dropped data).
    #[error("byte at offset {offset} differs from the pattern")]
    Mismatch { offset: u64 },
    /// More bytes arrived than were asked for.
    #[error("{got} bytes arrived, {expected} were asked for")]
    TooLong { expected: u64, got: u64 },
}

/// Checks a stream, chunk by chunk, against the pattern of `seed`; stops at the first error.
#[derive(Debug, Clone)]
pub struct Verifier {
    seed: u64,
    expected: u64,
    offset: u64,
    error: Option<IntegrityError>,
}

impl Verifier {
    /// A verifier for a stream of `expected` bytes of seed `seed`.
    pub fn new(seed: u64, expected: u64) -> Self {
        Verifier {
            seed,
            expected,
            offset: 0,
            error: None,
        }
    }

    /// Checks the next chunk. Returns the error (also kept) once the stream has gone wrong;
    /// later chunks are not checked.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), IntegrityError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let end = self.offset + data.len() as u64;
        let within = (self.expected.saturating_sub(self.offset) as usize).min(data.len());
        if let Some(i) = first_mismatch(self.seed, self.offset, &data[..within]) {
            let e = IntegrityError::Mismatch {
                offset: self.offset + i as u64,
            };
            self.error = Some(e);
            return Err(e);
        }
        if end > self.expected {
            let e = IntegrityError::TooLong {
                expected: self.expected,
                got: end,
            };
            self.error = Some(e);
            return Err(e);
        }
        self.offset = end;
        Ok(())
    }

    /// Bytes verified so far.
    pub fn verified(&self) -> u64 {
        self.offset
    }

    /// Whether every expected byte has arrived intact.
    pub fn is_complete(&self) -> bool {
        self.error.is_none() && self.offset == self.expected
    }

    pub fn error(&self) -> Option<IntegrityError> {
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(seed: u64, offset: u64, len: usize) -> Vec<u8> {
        (offset..offset + len as u64)
            .map(|o| word(seed, o / 8).to_le_bytes()[(o % 8) as usize])
            .collect()
    }

    #[test]
    fn fill_matches_bytewise_reference_at_any_alignment() {
        for off in 0..17u64 {
            for len in [0usize, 1, 7, 8, 9, 31, 100] {
                let mut out = vec![0u8; len];
                fill(42, off, &mut out);
                assert_eq!(out, reference(42, off, len), "off {off} len {len}");
            }
        }
    }

    #[test]
    fn seeds_and_offsets_give_different_bytes() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        fill(1, 0, &mut a);
        fill(2, 0, &mut b);
        assert_ne!(a, b);
        fill(1, 8, &mut b);
        assert_ne!(a, b);
        assert_eq!(a[8..], {
            let mut c = [0u8; 56];
            fill(1, 8, &mut c);
            c
        });
    }

    #[test]
    fn verifier_accepts_pattern_in_odd_chunks() {
        let mut data = vec![0u8; 10_000];
        fill(7, 0, &mut data);
        let mut v = Verifier::new(7, 10_000);
        for c in data.chunks(498) {
            v.feed(c).unwrap();
        }
        assert!(v.is_complete());
        assert_eq!(v.verified(), 10_000);
    }

    #[test]
    fn verifier_finds_every_single_flipped_bit_position() {
        let mut data = vec![0u8; 300];
        fill(9, 0, &mut data);
        for pos in 0..data.len() {
            let mut bad = data.clone();
            bad[pos] ^= 0x10;
            let mut v = Verifier::new(9, 300);
            let r = bad.chunks(37).try_for_each(|c| v.feed(c));
            assert_eq!(
                r,
                Err(IntegrityError::Mismatch { offset: pos as u64 }),
                "pos {pos}"
            );
            assert!(!v.is_complete());
        }
    }

    #[test]
    fn verifier_catches_dropped_and_reordered_cells() {
        let mut data = vec![0u8; 2000];
        fill(3, 0, &mut data);
        let cells: Vec<&[u8]> = data.chunks(498).collect();
        let mut v = Verifier::new(3, 2000);
        v.feed(cells[0]).unwrap();
        assert!(v.feed(cells[2]).is_err(), "dropped cell");
        let mut v = Verifier::new(3, 2000);
        v.feed(cells[0]).unwrap();
        v.feed(cells[1]).unwrap();
        assert!(v.feed(cells[3]).is_err(), "reordered cell");
    }

    #[test]
    fn verifier_rejects_excess_bytes() {
        let mut data = vec![0u8; 20];
        fill(5, 0, &mut data);
        let mut v = Verifier::new(5, 10);
        assert_eq!(
            v.feed(&data),
            Err(IntegrityError::TooLong {
                expected: 10,
                got: 20
            })
        );
    }
}
