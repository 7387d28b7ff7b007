//! The cells and circuit steps of `fors-hs-bench` (onion-service relay roles), kept apart
//! from the tool's threads and I/O so `bench/tests/hs_bench.rs` can check them against the
//! `fors` parsers and verifier.
//!
//! Cells are built with `fors::proto::hs::cells` encoders, keyed as a C tor service keys them
//! (rend-spec-v3 §"EST_INTRO"): the ESTABLISH_INTRO MAC is `hs_mac(KH, …)` with the circuit's
//! handshake KH (C tor `rend_circ_nonce`), the signature is ed25519 over
//! `"Tor establish-intro cell v1" | bytes before SIG_LEN`.

use fors::cell::chan::{Create2, Created2};
use fors::cell::{CellError, CELL_BODY_LEN};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::proto::hs::cells::{AuthKey, HsCellError, Introduce1, RendCookie, Rendezvous1};
use fors_testkit::circuit::{ClientCircuit, ClientLayers, Handshake, PendingHandshake};
use rand::{CryptoRng, Rng, RngCore};

/// Room for a relay message in one v0 relay cell (tor-spec §"Relay cells").
pub const RELAY_DATA_LEN: usize = CELL_BODY_LEN - 11;

/// Bytes of the INTRODUCE1 encrypted section. The intro point never reads it (it is the
/// service's); a real one (client pk, encrypted body, MAC) is a few hundred bytes.
pub const INTRO1_ENCRYPTED_LEN: usize = 300;

/// RENDEZVOUS1 `HANDSHAKE_INFO`: SERVER_PK (32) | AUTH (32) (rend-spec-v3 §"JOIN_REND").
pub const REND_HANDSHAKE_INFO_LEN: usize = 64;

/// A one-hop CREATE2 started by the caller so that the handshake's KH is kept: a service
/// needs it to MAC its ESTABLISH_INTRO, and `ClientCircuit` does not hand it out.
pub struct KeptHandshake {
    pending: PendingHandshake,
}

impl KeptHandshake {
    /// The CREATE2 body for `hs` (ntor or ntor-v3; not CREATE_FAST).
    pub fn start(
        rng: &mut (impl RngCore + CryptoRng),
        hs: &Handshake,
    ) -> Result<(KeptHandshake, [u8; CELL_BODY_LEN]), String> {
        let (pending, skin) = PendingHandshake::start(rng, hs).map_err(|e| e.to_string())?;
        let htype = pending.htype().ok_or("CREATE_FAST has no CREATE2 body")?;
        let mut body = [0u8; CELL_BODY_LEN];
        Create2 {
            htype,
            hdata: &skin,
        }
        .encode(&mut body)
        .map_err(|e| e.to_string())?;
        Ok((KeptHandshake { pending }, body))
    }

    /// Finishes with the CREATED2 body: the first hop is pushed on `circ`; returns KH.
    pub fn finish(self, circ: &mut ClientCircuit, created2: &[u8]) -> Result<[u8; 20], String> {
        let c = Created2::parse(created2).map_err(|e| e.to_string())?;
        let (keys, _) = self.pending.finish(c.hdata).map_err(|e| e.to_string())?;
        circ.layers.push(&keys);
        Ok(keys.kh)
    }
}

/// An ESTABLISH_INTRO as a C tor service builds it (the test kit's builder).
pub use fors_testkit::hs::establish_intro;

/// An INTRODUCE1 naming `auth_key`, no extensions, a random encrypted section.
pub fn introduce1(auth_key: &AuthKey, rng: &mut impl RngCore) -> Result<Vec<u8>, HsCellError> {
    let mut enc = [0u8; INTRO1_ENCRYPTED_LEN];
    rng.fill_bytes(&mut enc);
    let mut out = [0u8; RELAY_DATA_LEN];
    let n = Introduce1::encode(auth_key, &[], &enc, &mut out)?;
    Ok(out[..n].to_vec())
}

/// A random rendezvous cookie (rend-spec-v3 §"EST_REND": 20 random bytes).
pub fn cookie(rng: &mut impl RngCore) -> RendCookie {
    let mut c = [0u8; 20];
    rng.fill_bytes(&mut c);
    c
}

/// RENDEZVOUS1 with `cookie` and `info` (the service's handshake reply; random here: only
/// the client reads it, and the rendezvous point forwards it verbatim as RENDEZVOUS2).
pub fn rendezvous1(cookie: &RendCookie, info: &[u8]) -> Result<Vec<u8>, HsCellError> {
    let mut out = [0u8; RELAY_DATA_LEN];
    let n = Rendezvous1::encode(cookie, info, &mut out)?;
    Ok(out[..n].to_vec())
}

/// The end-to-end hop of a joined circuit pair: random tor1 keys for the client, the same
/// keys swapped for the service. The rendezvous point holds neither, so every cell one end
/// originates there is unrecognized at the relay, spliced, and recognized only at the other
/// end — the splice is exercised exactly as real onion-service traffic uses it.
pub fn e2e_keys(rng: &mut impl RngCore) -> (Tor1KeyMaterial, Tor1KeyMaterial) {
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill(&mut k[..]);
    let client = Tor1KeyMaterial::from_kdf_output(&k);
    let mut service = client.clone();
    service.df = client.db;
    service.db = client.df;
    service.kf = client.kb;
    service.kb = client.kf;
    (client, service)
}

/// The payload of spliced cell `n` of a run (checked at the far end): a seeded pattern, so a
/// cell carried to the wrong circuit, reordered or corrupted does not match.
pub fn splice_payload(seed: u64, n: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// A relay message body written into a v0 cell by `ClientCircuit::relay_cell_with`.
pub fn write_bytes(data: &[u8]) -> impl FnOnce(&mut [u8]) -> Result<usize, CellError> + '_ {
    move |o: &mut [u8]| {
        if data.len() > o.len() {
            return Err(CellError::Truncated {
                what: "relay message",
                need: data.len(),
                have: o.len(),
            });
        }
        o[..data.len()].copy_from_slice(data);
        Ok(data.len())
    }
}
