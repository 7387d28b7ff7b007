//! Onion-service relay roles, sans-IO: the introduction point (HSIntro=4-5) and the
//! rendezvous point (HSRend=2), as rend-spec-v3 and C tor 0.4.9 (`hs_intropoint.c`,
//! `hs_circuitmap.c`, `hs_dos.c`, `rendmid.c`) do them.
//!
//! * [`cells`] parses and builds the message bodies;
//! * [`verify`] checks an ESTABLISH_INTRO's signature and circuit MAC;
//! * [`intro`] holds one shard's auth key → intro circuit table with the INTRODUCE2 DoS
//!   buckets, and decides ESTABLISH_INTRO and INTRODUCE1;
//! * [`rend`] holds one shard's cookie → rendezvous circuit table and decides
//!   ESTABLISH_RENDEZVOUS and RENDEZVOUS1.
//!
//! Nothing here sends a cell or knows about shards: each decision is a returned value that
//! names circuits by the caller's handle type `C` (docs/architecture.md "Onion-service relay
//! roles"). Each decision is split into the half the circuit's own shard takes (checks) and
//! the half the key's or cookie's home shard takes (the table), so a relay with several
//! shards keeps one table per key relay-wide; [`home_shard`] picks that shard.

pub mod cells;
pub mod intro;
pub mod rend;
pub mod verify;

use crate::cell::chan::DestroyReason;
use crate::cell::RelayCmd;
use cells::{AuthKey, RendCookie};

use crate::proto::conflux::{siphash24, HomeKey};

/// What onion-service work a relay circuit does: C tor's relay-side circuit purposes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum HsRole {
    /// `CIRCUIT_PURPOSE_OR`: an ordinary circuit (which may still carry exit streams).
    /// Only such a circuit may become an intro or rendezvous point.
    #[default]
    Plain,
    /// `CIRCUIT_PURPOSE_INTRO_POINT`: a service's introduction circuit for this auth key.
    IntroPoint(AuthKey),
    /// `CIRCUIT_PURPOSE_REND_POINT_WAITING`: a client's rendezvous circuit waiting for the
    /// service's RENDEZVOUS1.
    RendWaiting(RendCookie),
    /// `CIRCUIT_PURPOSE_REND_ESTABLISHED`: spliced to another circuit. `cookie` is set on the
    /// client's side, which keeps its cookie registered until it closes (as C tor's
    /// circuit map does); the service's side has none.
    RendJoined { cookie: Option<RendCookie> },
    /// The service's circuit sent RENDEZVOUS1 and waits for the cookie's table (which may be
    /// on another shard of this relay) to join it. C tor joins at once; a relay with several
    /// shards needs this one step, during which the circuit is no longer plain.
    RendJoining,
}

/// The per-circuit onion-service state the node keeps next to each relay circuit.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HsCircState {
    pub role: HsRole,
    /// C tor `already_received_introduce1`: one INTRODUCE1 per circuit.
    pub introduce1_seen: bool,
}

/// Facts about a circuit that the node knows and these rules need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CircFacts {
    /// No next hop: this relay is the circuit's last hop (C tor `!circ->n_chan`).
    pub is_last_hop: bool,
    /// The previous hop's channel is from a client, not a relay (C tor `channel_is_client`):
    /// the circuit is one hop long.
    pub from_client_channel: bool,
}

/// What the relay does with an onion-service relay command it has no role for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HsDispatch {
    /// Handle with [`intro`] or [`rend`].
    Handle,
    /// INTRODUCE2, INTRODUCE_ACK, RENDEZVOUS2, INTRO_ESTABLISHED, RENDEZVOUS_ESTABLISHED
    /// are for the circuit's origin: at a relay C tor drops them and keeps the circuit
    /// (`rend_process_relay_cell`, "wrong circuit type").
    Drop,
    /// Not an onion-service command.
    NotHs,
}

/// Which onion-service commands a relay (not an origin) handles.
pub fn dispatch(cmd: RelayCmd) -> HsDispatch {
    match cmd {
        RelayCmd::ESTABLISH_INTRO
        | RelayCmd::INTRODUCE1
        | RelayCmd::ESTABLISH_RENDEZVOUS
        | RelayCmd::RENDEZVOUS1 => HsDispatch::Handle,
        RelayCmd::INTRODUCE2
        | RelayCmd::INTRODUCE_ACK
        | RelayCmd::RENDEZVOUS2
        | RelayCmd::INTRO_ESTABLISHED
        | RelayCmd::RENDEZVOUS_ESTABLISHED => HsDispatch::Drop,
        _ => HsDispatch::NotHs,
    }
}

/// The shard, of `shards`, whose table holds `key` (an auth key or a rendezvous cookie):
/// SipHash-2-4 of the key under the relay's secret [`HomeKey`] (the one conflux's homes use),
/// modulo the shard count. A client chooses its cookie and a service its auth key, so an
/// unkeyed function (their first bytes modulo N, as before) let one aim everything at one
/// shard's bounded table and refuse the clients whose cookies land there; keyed, the keys
/// it can choose spread over every shard's table.
pub fn home_shard(key: &[u8], shards: usize, home_key: &HomeKey) -> usize {
    (siphash24(home_key, key) % shards.max(1) as u64) as usize
}

/// When one circuit of a spliced pair closes, the other closes with the same reason
/// (C tor `circuit_mark_for_close_`: `rend_splice` is marked with `reason`, the remote flag
/// removed). A DESTROY from the network has already become DESTROYED in the circuit core.
pub fn splice_close_reason(closed_with: DestroyReason) -> DestroyReason {
    closed_with
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_side_dispatch() {
        let handle: Vec<u8> = (0..=255u8)
            .filter(|&c| dispatch(RelayCmd(c)) == HsDispatch::Handle)
            .collect();
        assert_eq!(handle, vec![32, 33, 34, 36]);
        let drop: Vec<u8> = (0..=255u8)
            .filter(|&c| dispatch(RelayCmd(c)) == HsDispatch::Drop)
            .collect();
        assert_eq!(drop, vec![35, 37, 38, 39, 40]);
    }

    #[test]
    fn home_shard_spreads_and_never_panics() {
        let k = HomeKey::for_tests(0);
        assert_eq!(home_shard(&[0xff; 32], 1, &k), 0);
        assert_eq!(home_shard(&[0xff; 32], 0, &k), 0, "no shards: no panic");
        assert!(home_shard(&[], 3, &k) < 3);
        // Keys a client could pick so that their first eight bytes are 0 modulo 4 (the old
        // unkeyed rule put all of them on shard 0) spread over every shard once keyed.
        let other = HomeKey::new(1, 2);
        for key in [k, other] {
            let mut seen = [0usize; 4];
            for i in 0..4096u64 {
                let mut c = [0u8; 20];
                c[..8].copy_from_slice(&(i * 4).to_be_bytes());
                seen[home_shard(&c, 4, &key)] += 1;
            }
            assert!(seen.iter().all(|&n| (900..1150).contains(&n)), "{seen:?}");
        }
        // Another key homes some keys elsewhere: nobody can precompute the layout.
        let moved = (0..=255u8)
            .filter(|&b| home_shard(&[b; 20], 4, &k) != home_shard(&[b; 20], 4, &other))
            .count();
        assert!(moved > 128, "{moved}");
    }
}
