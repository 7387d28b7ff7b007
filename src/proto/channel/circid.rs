//! Circuit-ID allocation on a link ≥ 4 channel (tor-spec §"Choosing circuit IDs"; C
//! `channel.c: channel_set_circid_type`, `circuitbuild.c: get_unique_circ_id_by_chan`).
//!
//! The side that opened the TLS connection allocates IDs with the most significant bit set;
//! the side that accepted it allocates IDs with it clear. The rule is per channel: a relay
//! that initiated a channel still receives CREATE2 on it from the peer, with the MSB clear.

use rand_core::RngCore;

use crate::cell::CircId;

const HIGH_BIT: u32 = 0x8000_0000;
/// C tries 64 random IDs before deciding the channel is full.
const MAX_ATTEMPTS: usize = 64;

/// Hands out fresh circuit IDs for circuits we create on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircIdAllocator {
    we_initiated: bool,
}

impl CircIdAllocator {
    /// `we_initiated`: whether we opened this channel's TLS connection.
    pub fn new(we_initiated: bool) -> Self {
        CircIdAllocator { we_initiated }
    }

    /// A random nonzero ID on our side of the ID space that `in_use` says is free; `None`
    /// after 64 taken candidates (the channel is effectively full, as in C).
    pub fn allocate<R: RngCore>(
        &self,
        rng: &mut R,
        mut in_use: impl FnMut(CircId) -> bool,
    ) -> Option<CircId> {
        for _ in 0..MAX_ATTEMPTS {
            let low = rng.next_u32() & !HIGH_BIT;
            if low == 0 {
                continue;
            }
            let id = CircId(if self.we_initiated {
                low | HIGH_BIT
            } else {
                low
            });
            if !in_use(id) {
                return Some(id);
            }
        }
        None
    }

    /// Whether `id` lies in our half of the ID space (so the peer must not choose it).
    pub fn is_ours(&self, id: CircId) -> bool {
        id.has_high_bit() == self.we_initiated
    }

    /// Checks the circuit ID of a CREATE/CREATE2/CREATE_FAST the peer sent.
    pub fn check_peer_create(&self, id: CircId) -> Result<(), CircIdViolation> {
        if id.is_zero() {
            Err(CircIdViolation::Zero)
        } else if self.is_ours(id) {
            Err(CircIdViolation::WrongHighBit)
        } else {
            Ok(())
        }
    }
}

/// Why a peer's CREATE has an unacceptable circuit ID (C `command_process_create_cell`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CircIdViolation {
    /// Circuit ID 0 is never a circuit: drop the cell.
    #[error("CREATE on circuit ID 0")]
    Zero,
    /// The ID is from our half of the space: answer with DESTROY (TORPROTOCOL).
    #[error("CREATE with a circuit ID from the wrong half of the ID space")]
    WrongHighBit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_of_the_space() {
        let mut rng = rand::thread_rng();
        let init = CircIdAllocator::new(true);
        let resp = CircIdAllocator::new(false);
        for _ in 0..200 {
            let a = init.allocate(&mut rng, |_| false).unwrap();
            let b = resp.allocate(&mut rng, |_| false).unwrap();
            assert!(a.has_high_bit() && !a.is_zero());
            assert!(!b.has_high_bit() && !b.is_zero());
            // What one side allocates, the other accepts, and vice versa.
            assert_eq!(resp.check_peer_create(a), Ok(()));
            assert_eq!(init.check_peer_create(b), Ok(()));
            assert_eq!(
                init.check_peer_create(a),
                Err(CircIdViolation::WrongHighBit)
            );
            assert_eq!(
                resp.check_peer_create(b),
                Err(CircIdViolation::WrongHighBit)
            );
        }
        assert_eq!(
            resp.check_peer_create(CircId(0)),
            Err(CircIdViolation::Zero)
        );
    }

    #[test]
    fn skips_used_and_gives_up() {
        let mut rng = rand::thread_rng();
        let a = CircIdAllocator::new(true);
        let mut calls = 0;
        let got = a.allocate(&mut rng, |_| {
            calls += 1;
            calls < 3
        });
        assert!(got.is_some());
        assert_eq!(calls, 3);
        assert_eq!(a.allocate(&mut rng, |_| true), None);
    }
}
