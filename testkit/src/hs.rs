//! Onion-service cells as a C tor service builds them, for the tests and `fors-hs-bench`.

use ed25519_dalek::{Signer, SigningKey};
use fors::proto::hs::cells::{encode_establish_intro, HsCellError};
use fors::proto::hs::verify::{hs_mac, ESTABLISH_INTRO_SIG_PREFIX};

/// Room for a relay message in one v0 relay cell (tor-spec §"Relay cells").
const RELAY_DATA_LEN: usize = fors::cell::CELL_BODY_LEN - 11;

/// An ESTABLISH_INTRO with no extensions, as a C tor service builds it
/// (`hs_cell_build_establish_intro`): the MAC keyed with the circuit's handshake `kh` (C tor
/// `rend_circ_nonce`), the ed25519 signature over `"Tor establish-intro cell v1"` and the
/// bytes before it (rend-spec-v3 §"EST_INTRO").
pub fn establish_intro(sk: &SigningKey, kh: &[u8; 20]) -> Result<Vec<u8>, HsCellError> {
    let mut out = [0u8; RELAY_DATA_LEN];
    let n = encode_establish_intro(
        sk.verifying_key().as_bytes(),
        &[],
        |m| hs_mac(kh, m),
        |m| {
            let signed = [ESTABLISH_INTRO_SIG_PREFIX, m].concat();
            sk.sign(&signed).to_bytes()
        },
        &mut out,
    )?;
    Ok(out[..n].to_vec())
}
