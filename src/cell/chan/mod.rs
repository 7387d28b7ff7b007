//! Bodies of channel-level cells (tor-spec §"Negotiating and initializing channels",
//! §"CREATE and CREATED cells", §"Tearing down circuits"; padding-spec).
//!
//! Parsers borrow from the cell body. Encoders of fixed-cell bodies fill a whole
//! `[u8; CELL_BODY_LEN]` (zeroing the rest, as C tor does); encoders of variable-cell bodies
//! write into a caller buffer and return the length.

mod auth;
mod certs;
mod create;
mod destroy;
mod netinfo;
mod padding;
mod versions;

pub use auth::{Auth0003, AuthChallenge, AuthMethod, Authenticate, AUTH0003_LEN};
pub use certs::{CertEntry, CertType, Certs};
pub use create::{
    Create2, CreateFast, Created2, CreatedFast, HandshakeType, CREATE2_MAX_HLEN, CREATED2_MAX_HLEN,
    FAST_KEY_LEN,
};
pub use destroy::{Destroy, DestroyReason};
pub use netinfo::{Netinfo, NetinfoAddr};
pub use padding::{PaddingCommand, PaddingNegotiate};
pub use versions::Versions;

use super::CELL_BODY_LEN;

/// Zero-fills a fixed-cell body after `used` bytes: fixed cells are padded with zeros.
fn zero_tail(out: &mut [u8; CELL_BODY_LEN], used: usize) {
    out[used..].fill(0);
}
