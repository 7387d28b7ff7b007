//! AUTH_CHALLENGE and AUTHENTICATE bodies, and the AUTH0003 authenticator
//! (tor-spec §"AUTH_CHALLENGE cells", §"AUTHENTICATE cells", §"Link authentication type 3").

use crate::cell::bytes::{len_u16, Reader, Writer};
use crate::cell::{named_int, CellError};

named_int! {
    /// Link authentication method (AUTH_CHALLENGE methods / AUTHENTICATE type).
    pub struct AuthMethod(u16) {
        /// Obsolete; LinkAuth=1 is no longer offered or accepted.
        RSA_SHA256_TLSSECRET = 1,
        /// The only method C tor 0.4.9 offers and accepts (LinkAuth=3).
        ED25519_SHA256_RFC5705 = 3,
    }
}

/// A parsed AUTH_CHALLENGE body: challenge(32) | N_METHODS(u16) | METHODS(u16 × N).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AuthChallenge<'a> {
    pub challenge: &'a [u8; 32],
    methods: &'a [u8],
}

impl<'a> AuthChallenge<'a> {
    /// Bytes after the method list are ignored (trunnel parser semantics).
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let challenge = r.array::<32>("AUTH_CHALLENGE challenge")?;
        let n = r.u16("AUTH_CHALLENGE method count")? as usize;
        let methods = r.take(2 * n, "AUTH_CHALLENGE methods")?;
        Ok(AuthChallenge { challenge, methods })
    }

    pub fn methods(&self) -> impl Iterator<Item = AuthMethod> + 'a {
        self.methods
            .chunks_exact(2)
            .map(|c| AuthMethod(u16::from_be_bytes([c[0], c[1]])))
    }

    pub fn supports(&self, m: AuthMethod) -> bool {
        self.methods().any(|x| x == m)
    }

    /// Writes an AUTH_CHALLENGE body; returns its length.
    pub fn encode(
        challenge: &[u8; 32],
        methods: &[AuthMethod],
        out: &mut [u8],
    ) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "AUTH_CHALLENGE body");
        w.bytes(challenge)?;
        w.u16(len_u16(
            "AUTH_CHALLENGE methods",
            methods.len(),
            u16::MAX as usize,
        )?)?;
        for m in methods {
            w.u16(m.0)?;
        }
        Ok(w.len())
    }
}

/// A parsed AUTHENTICATE body: AUTH_TYPE(u16) | AUTH_LEN(u16) | AUTH.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Authenticate<'a> {
    pub auth_type: AuthMethod,
    pub auth: &'a [u8],
}

impl<'a> Authenticate<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let auth_type = AuthMethod(r.u16("AUTHENTICATE type")?);
        let len = r.u16("AUTHENTICATE length")? as usize;
        let auth = r.take(len, "AUTHENTICATE authenticator")?;
        Ok(Authenticate { auth_type, auth })
    }

    /// Writes an AUTHENTICATE body; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CellError> {
        let mut w = Writer::new(out, "AUTHENTICATE body");
        w.u16(self.auth_type.0)?;
        w.u16(len_u16(
            "AUTHENTICATE authenticator",
            self.auth.len(),
            u16::MAX as usize,
        )?)?;
        w.bytes(self.auth)?;
        Ok(w.len())
    }
}

/// Length of an AUTH0003 authenticator: 8 + 8×32 + 24 + 64.
pub const AUTH0003_LEN: usize = 352;

/// The fields of an Ed25519-SHA256-RFC5705 (type 3) authenticator, borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Auth0003<'a> {
    /// The literal `"AUTH0003"`.
    pub type_: &'a [u8; 8],
    pub cid: &'a [u8; 32],
    pub sid: &'a [u8; 32],
    pub cid_ed: &'a [u8; 32],
    pub sid_ed: &'a [u8; 32],
    pub slog: &'a [u8; 32],
    pub clog: &'a [u8; 32],
    pub scert: &'a [u8; 32],
    pub tlssecrets: &'a [u8; 32],
    pub rand: &'a [u8; 24],
    pub sig: &'a [u8; 64],
}

impl<'a> Auth0003<'a> {
    /// Splits an authenticator into its fields; only the length is checked here; the
    /// handshake recomputes and compares every field.
    pub fn parse(auth: &'a [u8]) -> Result<Self, CellError> {
        if auth.len() != AUTH0003_LEN {
            return Err(CellError::BadLength {
                what: "AUTH0003 authenticator",
                len: auth.len(),
            });
        }
        let mut r = Reader::new(auth);
        Ok(Auth0003 {
            type_: r.array("AUTH0003 TYPE")?,
            cid: r.array("AUTH0003 CID")?,
            sid: r.array("AUTH0003 SID")?,
            cid_ed: r.array("AUTH0003 CID_ED")?,
            sid_ed: r.array("AUTH0003 SID_ED")?,
            slog: r.array("AUTH0003 SLOG")?,
            clog: r.array("AUTH0003 CLOG")?,
            scert: r.array("AUTH0003 SCERT")?,
            tlssecrets: r.array("AUTH0003 TLSSECRETS")?,
            rand: r.array("AUTH0003 RAND")?,
            sig: r.array("AUTH0003 SIG")?,
        })
    }

    /// The signed part of an authenticator: everything before SIG.
    pub fn signed_part(auth: &[u8]) -> Option<&[u8]> {
        (auth.len() == AUTH0003_LEN).then(|| &auth[..AUTH0003_LEN - 64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_challenge_known_encoding_and_round_trip() {
        let ch = [0x11u8; 32];
        let mut buf = [0u8; 64];
        let n =
            AuthChallenge::encode(&ch, &[AuthMethod::ED25519_SHA256_RFC5705], &mut buf).unwrap();
        assert_eq!(n, 36);
        assert_eq!(&buf[32..36], &[0, 1, 0, 3]);
        let p = AuthChallenge::parse(&buf[..n]).unwrap();
        assert_eq!(p.challenge, &ch);
        assert!(p.supports(AuthMethod::ED25519_SHA256_RFC5705));
        assert!(!p.supports(AuthMethod::RSA_SHA256_TLSSECRET));
    }

    #[test]
    fn auth_challenge_truncated_methods() {
        let mut body = [0u8; 37];
        body[33] = 2; // two methods claimed, three bytes present
        assert!(matches!(
            AuthChallenge::parse(&body),
            Err(CellError::Truncated {
                what: "AUTH_CHALLENGE methods",
                need: 4,
                have: 3
            })
        ));
    }

    #[test]
    fn authenticate_round_trip() {
        let mut auth = [0u8; AUTH0003_LEN];
        auth[..8].copy_from_slice(b"AUTH0003");
        auth[AUTH0003_LEN - 64..].fill(0x5A);
        let a = Authenticate {
            auth_type: AuthMethod::ED25519_SHA256_RFC5705,
            auth: &auth,
        };
        let mut buf = [0u8; 400];
        let n = a.encode(&mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 3, 0x01, 0x60]);
        let p = Authenticate::parse(&buf[..n]).unwrap();
        assert_eq!(p, a);
        let f = Auth0003::parse(p.auth).unwrap();
        assert_eq!(f.type_, b"AUTH0003");
        assert_eq!(f.sig, &[0x5A; 64]);
        assert_eq!(Auth0003::signed_part(p.auth).unwrap().len(), 288);
        assert!(Auth0003::parse(&auth[..351]).is_err());
        assert!(Authenticate::parse(&buf[..n - 1]).is_err());
    }
}
