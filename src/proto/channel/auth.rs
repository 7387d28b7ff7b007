//! Link authentication, method 3 "Ed25519-SHA256-RFC5705" (tor-spec §"AUTHENTICATE cells";
//! C `relay_handshake.c: connection_or_compute_authenticate_cell_body`, `connection_or.c:
//! or_handshake_state_record_*`).
//!
//! Both sides keep a running SHA-256 of every handshake cell sent and received, exactly as
//! the bytes went over the wire (VERSIONS in its 2-byte-circuit-ID form, later cells with
//! 4-byte IDs). C stops the *sent* log just before NETINFO goes out and the *received* log
//! once AUTHENTICATE has been checked, and never records AUTHENTICATE itself on receipt. So:
//! * SLOG = responder's sent log = initiator's received log: VERSIONS, CERTS, AUTH_CHALLENGE
//!   (plus any VPADDING/AUTHORIZE the responder sent in between);
//! * CLOG = initiator's sent log = responder's received log: VERSIONS, CERTS.

use sha2::{Digest, Sha256};

use super::error::AuthError;
use crate::cell::chan::{Auth0003, AUTH0003_LEN};
use crate::keys::ed25519::{self, Ed25519Keypair};

/// The running digests of one handshake.
#[derive(Clone, Default)]
pub struct HandshakeLog {
    sent: Sha256,
    received: Sha256,
    sent_done: bool,
    received_done: bool,
}

impl HandshakeLog {
    pub fn record_sent(&mut self, wire: &[u8]) {
        if !self.sent_done {
            self.sent.update(wire);
        }
    }

    pub fn record_received(&mut self, wire: &[u8]) {
        if !self.received_done {
            self.received.update(wire);
        }
    }

    /// Called just before NETINFO is sent.
    pub fn stop_sent(&mut self) {
        self.sent_done = true;
    }

    /// Called once AUTHENTICATE has been accepted.
    pub fn stop_received(&mut self) {
        self.received_done = true;
    }

    pub fn sent_digest(&self) -> [u8; 32] {
        self.sent.clone().finalize().into()
    }

    pub fn received_digest(&self) -> [u8; 32] {
        self.received.clone().finalize().into()
    }
}

/// The 32-byte fields of an AUTH0003 authenticator that both sides compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFields {
    /// SHA-256 of the initiator's DER RSA identity key.
    pub cid: [u8; 32],
    /// SHA-256 of the responder's DER RSA identity key.
    pub sid: [u8; 32],
    pub cid_ed: [u8; 32],
    pub sid_ed: [u8; 32],
    pub slog: [u8; 32],
    pub clog: [u8; 32],
    /// SHA-256 of the responder's TLS certificate.
    pub scert: [u8; 32],
    /// RFC 5705 exporter output, label [`super::tls::AUTH0003_EXPORTER_LABEL`], context CID.
    pub tlssecrets: [u8; 32],
}

const TYPE: &[u8; 8] = b"AUTH0003";
/// Bytes covered by the signature: everything up to and including RAND.
const SIGNED_LEN: usize = AUTH0003_LEN - 64;

impl AuthFields {
    /// Builds the authenticator and signs it with the type-6 link-authentication key.
    pub fn sign(&self, rand: &[u8; 24], key: &Ed25519Keypair) -> [u8; AUTH0003_LEN] {
        let mut out = [0u8; AUTH0003_LEN];
        let mut at = 0;
        for part in [
            &TYPE[..],
            &self.cid,
            &self.sid,
            &self.cid_ed,
            &self.sid_ed,
            &self.slog,
            &self.clog,
            &self.scert,
            &self.tlssecrets,
            rand,
        ] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        debug_assert_eq!(at, SIGNED_LEN);
        let sig = key.sign(&out[..SIGNED_LEN]).to_bytes();
        out[SIGNED_LEN..].copy_from_slice(&sig);
        out
    }

    /// Checks a received authenticator (the AUTHENTICATE body's `auth` bytes) against the
    /// expected fields (RAND is not checked) and its signature against `auth_key`. The first
    /// differing field is named in the error.
    pub fn verify(&self, auth: &[u8], auth_key: &[u8; 32]) -> Result<(), AuthError> {
        let a = Auth0003::parse(auth).map_err(AuthError::Malformed)?;
        let checks: [(&'static str, &[u8], &[u8]); 9] = [
            ("TYPE", a.type_, TYPE),
            ("CID", a.cid, &self.cid),
            ("SID", a.sid, &self.sid),
            ("CID_ED", a.cid_ed, &self.cid_ed),
            ("SID_ED", a.sid_ed, &self.sid_ed),
            ("SLOG", a.slog, &self.slog),
            ("CLOG", a.clog, &self.clog),
            ("SCERT", a.scert, &self.scert),
            ("TLSSECRETS", a.tlssecrets, &self.tlssecrets),
        ];
        for (name, got, want) in checks {
            if got != want {
                return Err(AuthError::FieldMismatch(name));
            }
        }
        if !ed25519::verify(auth_key, &auth[..SIGNED_LEN], a.sig) {
            return Err(AuthError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AuthFields {
        AuthFields {
            cid: [1; 32],
            sid: [2; 32],
            cid_ed: [3; 32],
            sid_ed: [4; 32],
            slog: [5; 32],
            clog: [6; 32],
            scert: [7; 32],
            tlssecrets: [8; 32],
        }
    }

    #[test]
    fn sign_verify_and_layout() {
        let key = Ed25519Keypair::generate(&mut rand::thread_rng());
        let f = fields();
        let auth = f.sign(&[9; 24], &key);
        assert_eq!(&auth[..8], b"AUTH0003");
        for (i, b) in (1u8..=8).enumerate() {
            assert_eq!(auth[8 + 32 * i..8 + 32 * (i + 1)], [b; 32]);
        }
        assert_eq!(auth[264..288], [9; 24]);
        f.verify(&auth, key.public().as_bytes()).unwrap();

        let other = Ed25519Keypair::generate(&mut rand::thread_rng());
        assert_eq!(
            f.verify(&auth, other.public().as_bytes()),
            Err(AuthError::BadSignature)
        );
        // RAND is covered by the signature even though it is not compared.
        let mut bad = auth;
        bad[270] ^= 1;
        assert_eq!(
            f.verify(&bad, key.public().as_bytes()),
            Err(AuthError::BadSignature)
        );
        for (i, name) in [
            "CID",
            "SID",
            "CID_ED",
            "SID_ED",
            "SLOG",
            "CLOG",
            "SCERT",
            "TLSSECRETS",
        ]
        .iter()
        .enumerate()
        {
            let mut bad = auth;
            bad[8 + 32 * i + 5] ^= 0x40;
            assert_eq!(
                f.verify(&bad, key.public().as_bytes()),
                Err(AuthError::FieldMismatch(name))
            );
        }
        assert!(matches!(
            f.verify(&auth[..351], key.public().as_bytes()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn log_stops() {
        let mut log = HandshakeLog::default();
        log.record_sent(b"ab");
        log.stop_sent();
        log.record_sent(b"cd");
        assert_eq!(log.sent_digest(), <[u8; 32]>::from(Sha256::digest(b"ab")));
        log.record_received(b"x");
        log.record_received(b"y");
        log.stop_received();
        log.record_received(b"z");
        assert_eq!(
            log.received_digest(),
            <[u8; 32]>::from(Sha256::digest(b"xy"))
        );
    }
}
