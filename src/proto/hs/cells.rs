//! Onion-service relay message bodies as an introduction or rendezvous point reads and writes
//! them (rend-spec-v3 §"Introduction protocol" and §"The rendezvous protocol"; C tor
//! `src/trunnel/hs/*.trunnel`, `extension.trunnel`).
//!
//! Parsers borrow from the relay cell: the INTRODUCE1 → INTRODUCE2 path copies nothing.
//! Encoders write into a caller buffer and return the length.

use thiserror::Error;

/// `AUTH_KEY_TYPE` values (rend-spec-v3 §"EST_INTRO"; C tor `TRUNNEL_HS_INTRO_AUTH_KEY_TYPE_*`).
pub const AUTH_KEY_TYPE_LEGACY0: u8 = 0x00;
pub const AUTH_KEY_TYPE_LEGACY1: u8 = 0x01;
pub const AUTH_KEY_TYPE_ED25519: u8 = 0x02;

pub const ED25519_KEY_LEN: usize = 32;
pub const ED25519_SIG_LEN: usize = 64;
/// `HANDSHAKE_AUTH`: a SHA3-256 MAC.
pub const MAC_LEN: usize = 32;
pub const REND_COOKIE_LEN: usize = 20;
/// INTRODUCE1's `LEGACY_KEY_ID`, which must be all zero for v3.
pub const LEGACY_KEY_ID_LEN: usize = 20;

/// ESTABLISH_INTRO extension type of the DoS parameters (prop 305; rend-spec-v3
/// §"EST_INTRO_DOS_EXT").
pub const EXT_TYPE_DOS: u8 = 0x01;
/// DoS-extension parameter types.
pub const DOS_PARAM_INTRO2_RATE_PER_SEC: u8 = 0x01;
pub const DOS_PARAM_INTRO2_BURST_PER_SEC: u8 = 0x02;

/// An introduction point's authentication key (ed25519 public key bytes).
pub type AuthKey = [u8; ED25519_KEY_LEN];
/// A rendezvous cookie.
pub type RendCookie = [u8; REND_COOKIE_LEN];

/// Why an onion-service message body is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum HsCellError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// AUTH_KEY_TYPE 0 or 1: the RSA form of the v2 protocol, which C tor 0.4.6+ refuses.
    #[error("legacy (RSA) auth key type {0} is not supported")]
    LegacyAuthKeyType(u8),
    #[error("unrecognized auth key type {0}")]
    UnknownAuthKeyType(u8),
    #[error("{what} has invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    /// INTRODUCE1's LEGACY_KEY_ID is not all zero (a v2 cell).
    #[error("INTRODUCE1 legacy key ID is not zero")]
    LegacyKeyId,
    /// INTRODUCE1 without an encrypted section.
    #[error("INTRODUCE1 has no encrypted section")]
    NoEncrypted,
    #[error("output buffer too small for {what}: need {need} bytes, have {have}")]
    BufferTooSmall {
        what: &'static str,
        need: usize,
        have: usize,
    },
}

/// A bounds-checked cursor; reads borrow from the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HsCellError> {
        let have = self.buf.len() - self.pos;
        if have < n {
            return Err(HsCellError::Truncated {
                what,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<&'a [u8; N], HsCellError> {
        // `take` returned exactly N bytes.
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HsCellError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HsCellError> {
        Ok(u16::from_be_bytes(*self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, HsCellError> {
        Ok(u64::from_be_bytes(*self.array(what)?))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// A cursor over a caller's output buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), HsCellError> {
        let end = self.pos + b.len();
        if end > self.buf.len() {
            return Err(HsCellError::BufferTooSmall {
                what: self.what,
                need: end,
                have: self.buf.len(),
            });
        }
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
}

/// One extension field: `EXT_FIELD_TYPE (1) | EXT_FIELD_LEN (1) | EXT_FIELD`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extension<'a> {
    pub field_type: u8,
    pub field: &'a [u8],
}

/// The extension list shared by these messages (C tor `trn_extension`): `N_EXTENSIONS (1)`
/// then that many fields. Kept as the validated raw bytes; [`Extensions::iter`] walks them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extensions<'a> {
    num: u8,
    /// The fields, without the count byte.
    fields: &'a [u8],
}

impl<'a> Extensions<'a> {
    /// No extensions: what C tor puts in INTRO_ESTABLISHED and INTRODUCE_ACK.
    pub const EMPTY: Extensions<'static> = Extensions {
        num: 0,
        fields: &[],
    };

    fn read(r: &mut Reader<'a>) -> Result<Self, HsCellError> {
        let num = r.u8("N_EXTENSIONS")?;
        let start = r.pos;
        for _ in 0..num {
            r.u8("EXT_FIELD_TYPE")?;
            let len = r.u8("EXT_FIELD_LEN")?;
            r.take(len.into(), "EXT_FIELD")?;
        }
        Ok(Extensions {
            num,
            fields: &r.buf[start..r.pos],
        })
    }

    pub fn len(&self) -> usize {
        self.num.into()
    }

    pub fn is_empty(&self) -> bool {
        self.num == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Extension<'a>> {
        let mut r = Reader::new(self.fields);
        (0..self.num).map(move |_| {
            // `read` checked every field fits.
            let field_type = r.u8("").expect("validated");
            let len = r.u8("").expect("validated");
            let field = r.take(len.into(), "").expect("validated");
            Extension { field_type, field }
        })
    }

    /// Length of the encoding (count byte + fields).
    pub fn encoded_len(&self) -> usize {
        1 + self.fields.len()
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), HsCellError> {
        w.bytes(&[self.num])?;
        w.bytes(self.fields)
    }
}

/// A v3 ESTABLISH_INTRO body (rend-spec-v3 §"EST_INTRO"; C tor `trn_cell_establish_intro`):
///
/// ```text
/// AUTH_KEY_TYPE (1) = 2 | AUTH_KEY_LEN (2) = 32 | AUTH_KEY (32) | extensions
/// | HANDSHAKE_AUTH (32) | SIG_LEN (2) = 64 | SIG (64)
/// ```
///
/// `HANDSHAKE_AUTH` covers every byte before it; `SIG` covers every byte before `SIG_LEN`
/// (C tor's `end_sig_fields` sits before `sig_len`). Bytes after SIG are ignored, as C tor's
/// parser ignores them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EstablishIntro<'a> {
    pub auth_key: &'a AuthKey,
    pub extensions: Extensions<'a>,
    pub handshake_auth: &'a [u8; MAC_LEN],
    pub sig: &'a [u8; ED25519_SIG_LEN],
    /// The bytes HANDSHAKE_AUTH is computed over.
    pub mac_covered: &'a [u8],
    /// The bytes SIG is computed over (after the prefix).
    pub sig_covered: &'a [u8],
}

impl<'a> EstablishIntro<'a> {
    /// Parses as C tor does (`hs_intro_received_establish_intro`, the trunnel parser and the
    /// length checks of `verify_establish_intro_cell`); every error closes the circuit.
    pub fn parse(body: &'a [u8]) -> Result<Self, HsCellError> {
        let mut r = Reader::new(body);
        match r.u8("AUTH_KEY_TYPE")? {
            AUTH_KEY_TYPE_ED25519 => {}
            t @ (AUTH_KEY_TYPE_LEGACY0 | AUTH_KEY_TYPE_LEGACY1) => {
                return Err(HsCellError::LegacyAuthKeyType(t))
            }
            t => return Err(HsCellError::UnknownAuthKeyType(t)),
        }
        let key_len = r.u16("AUTH_KEY_LEN")?;
        let key = r.take(key_len.into(), "AUTH_KEY")?;
        let extensions = Extensions::read(&mut r)?;
        let mac_end = r.pos;
        let handshake_auth = r.array::<MAC_LEN>("HANDSHAKE_AUTH")?;
        let sig_end = r.pos;
        let sig_len = r.u16("SIG_LEN")?;
        let sig = r.take(sig_len.into(), "SIG")?;
        // Trunnel accepts any lengths; C tor's verify step refuses all but ed25519's.
        let auth_key: &AuthKey = key.try_into().map_err(|_| HsCellError::BadLength {
            what: "ESTABLISH_INTRO AUTH_KEY",
            len: key.len(),
        })?;
        let sig: &[u8; ED25519_SIG_LEN] = sig.try_into().map_err(|_| HsCellError::BadLength {
            what: "ESTABLISH_INTRO SIG",
            len: sig.len(),
        })?;
        Ok(EstablishIntro {
            auth_key,
            extensions,
            handshake_auth,
            sig,
            mac_covered: &body[..mac_end],
            sig_covered: &body[..sig_end],
        })
    }

    /// The DoS-parameters extensions, folded in order as C tor applies them.
    pub fn dos_extension(&self) -> DosExtension {
        let mut out = DosExtension::Absent;
        for ext in self.extensions.iter() {
            if ext.field_type == EXT_TYPE_DOS {
                if let Some(p) = DosExtension::parse_field(ext.field) {
                    out = p;
                }
            }
        }
        out
    }
}

/// What an ESTABLISH_INTRO's DoS-parameters extension asks for (prop 305; C tor
/// `handle_establish_intro_cell_dos_extension`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DosExtension {
    /// No usable extension: the consensus defaults apply and follow consensus changes.
    Absent,
    /// The service set the parameters explicitly. `None` means the defense is off on this
    /// circuit (a zero, an out-of-range value, or burst < rate, as C tor decides).
    Explicit(Option<DosRate>),
}

/// INTRODUCE2 rate and burst per second.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DosRate {
    pub rate_per_sec: u32,
    pub burst_per_sec: u32,
}

/// `HS_CONFIG_V3_DOS_DEFENSE_{RATE,BURST}_PER_SEC_MAX` (INT32_MAX); the minima are 0.
pub const DOS_PARAM_MAX: u64 = i32::MAX as u64;

impl DosExtension {
    /// One DoS extension field: `N_PARAMS (1)` then `N_PARAMS` × `TYPE (1) | VALUE (8)`.
    /// `None` when C tor ignores the field entirely: it does not parse, or has a parameter
    /// type C tor does not know (bytes after the parameters are ignored, as trunnel does).
    fn parse_field(field: &[u8]) -> Option<DosExtension> {
        let mut r = Reader::new(field);
        let n = r.u8("N_PARAMS").ok()?;
        let (mut rate, mut burst) = (0u64, 0u64);
        for _ in 0..n {
            let ty = r.u8("PARAM_TYPE").ok()?;
            let value = r.u64("PARAM_VALUE").ok()?;
            match ty {
                DOS_PARAM_INTRO2_RATE_PER_SEC => rate = value,
                DOS_PARAM_INTRO2_BURST_PER_SEC => burst = value,
                _ => return None,
            }
        }
        // Zero disables; so do out-of-range values and burst < rate (C tor
        // `cell_dos_extension_parameters_are_valid`).
        let valid = rate != 0
            && burst != 0
            && rate <= DOS_PARAM_MAX
            && burst <= DOS_PARAM_MAX
            && burst >= rate;
        Some(DosExtension::Explicit(valid.then_some(DosRate {
            rate_per_sec: rate as u32,
            burst_per_sec: burst as u32,
        })))
    }

    /// Encodes one DoS extension field body (the service side; used by tests and tools).
    pub fn encode_field(params: &[(u8, u64)], out: &mut [u8]) -> Result<usize, HsCellError> {
        let mut w = Writer::new(out, "DoS extension");
        let n = u8::try_from(params.len()).map_err(|_| HsCellError::BadLength {
            what: "DoS extension N_PARAMS",
            len: params.len(),
        })?;
        w.bytes(&[n])?;
        for (ty, v) in params {
            w.bytes(&[*ty])?;
            w.bytes(&v.to_be_bytes())?;
        }
        Ok(w.pos)
    }
}

/// Encodes INTRO_ESTABLISHED as C tor sends it: an empty extension list, one zero byte.
pub fn encode_intro_established(out: &mut [u8]) -> Result<usize, HsCellError> {
    let mut w = Writer::new(out, "INTRO_ESTABLISHED");
    Extensions::EMPTY.write(&mut w)?;
    Ok(w.pos)
}

/// Parses INTRO_ESTABLISHED: an extension list (C tor `trn_cell_intro_established`).
pub fn parse_intro_established(body: &[u8]) -> Result<Extensions<'_>, HsCellError> {
    Extensions::read(&mut Reader::new(body))
}

/// An INTRODUCE1 body (rend-spec-v3 §"SEND_INTRO1"; C tor `trn_cell_introduce1`), as far as
/// an introduction point reads it:
///
/// ```text
/// LEGACY_KEY_ID (20) = 0 | AUTH_KEY_TYPE (1) = 2 | AUTH_KEY_LEN (2) = 32 | AUTH_KEY (32)
/// | extensions | encrypted (rest, non-empty)
/// ```
///
/// The extensions (proof-of-work among them) and the encrypted part are the service's
/// business: they are forwarded untouched in INTRODUCE2, whose body is the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Introduce1<'a> {
    pub auth_key: &'a AuthKey,
    pub extensions: Extensions<'a>,
    pub encrypted: &'a [u8],
    /// The whole body: INTRODUCE2 carries exactly this.
    pub body: &'a [u8],
}

/// INTRODUCE2 has INTRODUCE1's layout (rend-spec-v3 §"PROCESS_INTRO2").
pub type Introduce2<'a> = Introduce1<'a>;

impl<'a> Introduce1<'a> {
    /// Parses and validates as C tor's `handle_introduce1` + `validate_introduce1_parsed_cell`;
    /// every error is answered with INTRODUCE_ACK "bad format".
    pub fn parse(body: &'a [u8]) -> Result<Self, HsCellError> {
        let mut r = Reader::new(body);
        let legacy = r.take(LEGACY_KEY_ID_LEN, "LEGACY_KEY_ID")?;
        let key_type = r.u8("AUTH_KEY_TYPE")?;
        // Trunnel refuses types outside {0, 1, 2} at parse time, the validator all but 2;
        // both answer "bad format".
        if key_type > AUTH_KEY_TYPE_ED25519 {
            return Err(HsCellError::UnknownAuthKeyType(key_type));
        }
        let key_len = r.u16("AUTH_KEY_LEN")?;
        let key = r.take(key_len.into(), "AUTH_KEY")?;
        let extensions = Extensions::read(&mut r)?;
        let encrypted = r.rest();
        if legacy.iter().any(|&b| b != 0) {
            return Err(HsCellError::LegacyKeyId);
        }
        if key_type != AUTH_KEY_TYPE_ED25519 {
            return Err(HsCellError::LegacyAuthKeyType(key_type));
        }
        let auth_key: &AuthKey = key.try_into().map_err(|_| HsCellError::BadLength {
            what: "INTRODUCE1 AUTH_KEY",
            len: key.len(),
        })?;
        if encrypted.is_empty() {
            return Err(HsCellError::NoEncrypted);
        }
        Ok(Introduce1 {
            auth_key,
            extensions,
            encrypted,
            body,
        })
    }

    /// Encodes an INTRODUCE1 (the client side; for tests and tools).
    pub fn encode(
        auth_key: &AuthKey,
        extensions: &[Extension<'_>],
        encrypted: &[u8],
        out: &mut [u8],
    ) -> Result<usize, HsCellError> {
        let mut w = Writer::new(out, "INTRODUCE1");
        w.bytes(&[0; LEGACY_KEY_ID_LEN])?;
        w.bytes(&[AUTH_KEY_TYPE_ED25519])?;
        w.bytes(&(ED25519_KEY_LEN as u16).to_be_bytes())?;
        w.bytes(auth_key)?;
        write_extension_list(&mut w, extensions)?;
        w.bytes(encrypted)?;
        Ok(w.pos)
    }
}

fn write_extension_list(w: &mut Writer<'_>, exts: &[Extension<'_>]) -> Result<(), HsCellError> {
    let too_long = |what, len| HsCellError::BadLength { what, len };
    let n = u8::try_from(exts.len()).map_err(|_| too_long("N_EXTENSIONS", exts.len()))?;
    w.bytes(&[n])?;
    for e in exts {
        let len = u8::try_from(e.field.len()).map_err(|_| too_long("EXT_FIELD", e.field.len()))?;
        w.bytes(&[e.field_type, len])?;
        w.bytes(e.field)?;
    }
    Ok(())
}

/// INTRODUCE_ACK status (rend-spec-v3 §"INTRO_ACK").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AckStatus(pub u16);

impl AckStatus {
    pub const SUCCESS: AckStatus = AckStatus(0x0000);
    /// "Service ID not recognized". C tor also sends it when the DoS bucket is empty and when
    /// the INTRODUCE2 cannot be sent.
    pub const UNKNOWN_ID: AckStatus = AckStatus(0x0001);
    /// "Bad message format".
    pub const BAD_FORMAT: AckStatus = AckStatus(0x0002);
    /// "Can't relay message to service": in rend-spec, but C tor 0.4.9 never sends it (it
    /// uses UNKNOWN_ID); defined so that it parses by name.
    pub const CANT_RELAY: AckStatus = AckStatus(0x0003);
}

/// INTRODUCE_ACK: `STATUS (2) | extensions`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IntroduceAck<'a> {
    pub status: AckStatus,
    pub extensions: Extensions<'a>,
}

impl<'a> IntroduceAck<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, HsCellError> {
        let mut r = Reader::new(body);
        let status = AckStatus(r.u16("INTRODUCE_ACK STATUS")?);
        let extensions = Extensions::read(&mut r)?;
        Ok(IntroduceAck { status, extensions })
    }

    /// Encodes as C tor's `send_introduce_ack_cell`: the status and no extensions.
    pub fn encode(status: AckStatus, out: &mut [u8]) -> Result<usize, HsCellError> {
        let mut w = Writer::new(out, "INTRODUCE_ACK");
        w.bytes(&status.0.to_be_bytes())?;
        Extensions::EMPTY.write(&mut w)?;
        Ok(w.pos)
    }
}

/// ESTABLISH_RENDEZVOUS: exactly the 20-byte cookie (rend-spec-v3 §"EST_REND"; C tor
/// `rend_mid_establish_rendezvous` refuses any other length).
pub fn parse_establish_rendezvous(body: &[u8]) -> Result<&RendCookie, HsCellError> {
    body.try_into().map_err(|_| HsCellError::BadLength {
        what: "ESTABLISH_RENDEZVOUS cookie",
        len: body.len(),
    })
}

/// RENDEZVOUS_ESTABLISHED has an empty body (C tor sends `""`, length 0).
pub const RENDEZVOUS_ESTABLISHED_BODY: &[u8] = &[];

/// RENDEZVOUS1: `RENDEZVOUS_COOKIE (20) | HANDSHAKE_INFO (rest)` (rend-spec-v3 §"JOIN_REND").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rendezvous1<'a> {
    pub cookie: &'a RendCookie,
    /// Everything after the cookie. C tor forwards all of it, whatever its length, as the
    /// RENDEZVOUS2 body (`rend_mid_rendezvous`); nothing is checked here.
    pub handshake_info: &'a [u8],
}

impl<'a> Rendezvous1<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, HsCellError> {
        let mut r = Reader::new(body);
        let cookie = r.array::<REND_COOKIE_LEN>("RENDEZVOUS1 cookie")?;
        Ok(Rendezvous1 {
            cookie,
            handshake_info: r.rest(),
        })
    }

    pub fn encode(cookie: &RendCookie, info: &[u8], out: &mut [u8]) -> Result<usize, HsCellError> {
        let mut w = Writer::new(out, "RENDEZVOUS1");
        w.bytes(cookie)?;
        w.bytes(info)?;
        Ok(w.pos)
    }
}

/// Encodes RENDEZVOUS2: the RENDEZVOUS1's `HANDSHAKE_INFO`, verbatim.
pub fn encode_rendezvous2(handshake_info: &[u8], out: &mut [u8]) -> Result<usize, HsCellError> {
    let mut w = Writer::new(out, "RENDEZVOUS2");
    w.bytes(handshake_info)?;
    Ok(w.pos)
}

/// Builds an ESTABLISH_INTRO the way a C tor service does (`hs_cell_build_establish_intro`),
/// up to the MAC and signature, which `sign` fills: for tests, tools and fuzz seeds.
///
/// `sign(mac_covered) -> mac` and `sign(sig_covered) -> sig` are passed in so that this
/// module stays free of keys.
pub fn encode_establish_intro(
    auth_key: &AuthKey,
    extensions: &[Extension<'_>],
    mac: impl FnOnce(&[u8]) -> [u8; MAC_LEN],
    sig: impl FnOnce(&[u8]) -> [u8; ED25519_SIG_LEN],
    out: &mut [u8],
) -> Result<usize, HsCellError> {
    let mut w = Writer::new(out, "ESTABLISH_INTRO");
    w.bytes(&[AUTH_KEY_TYPE_ED25519])?;
    w.bytes(&(ED25519_KEY_LEN as u16).to_be_bytes())?;
    w.bytes(auth_key)?;
    write_extension_list(&mut w, extensions)?;
    let mac_end = w.pos;
    let m = mac(&w.buf[..mac_end]);
    w.bytes(&m)?;
    let sig_end = w.pos;
    let s = sig(&w.buf[..sig_end]);
    w.bytes(&(ED25519_SIG_LEN as u16).to_be_bytes())?;
    w.bytes(&s)?;
    Ok(w.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est_intro(key_type: u8, key_len: u16, exts: &[u8], sig_len: u16) -> Vec<u8> {
        let mut v = vec![key_type];
        v.extend(key_len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, key_len.into()));
        v.extend(exts);
        v.extend([0xaa; MAC_LEN]);
        v.extend(sig_len.to_be_bytes());
        v.extend(std::iter::repeat_n(0x55u8, sig_len.into()));
        v
    }

    #[test]
    fn establish_intro_layout() {
        let body = est_intro(2, 32, &[1, 9, 2, 0xde, 0xad], 64);
        let c = EstablishIntro::parse(&body).unwrap();
        assert_eq!(c.auth_key, &[7; 32]);
        assert_eq!(c.extensions.len(), 1);
        let e: Vec<_> = c.extensions.iter().collect();
        assert_eq!(e[0].field_type, 9);
        assert_eq!(e[0].field, &[0xde, 0xad]);
        assert_eq!(c.mac_covered.len(), 1 + 2 + 32 + 5);
        // SIG covers through HANDSHAKE_AUTH, not SIG_LEN.
        assert_eq!(c.sig_covered.len(), c.mac_covered.len() + 32);
        assert_eq!(c.handshake_auth, &[0xaa; 32]);
        assert_eq!(c.sig, &[0x55; 64]);
        // Trailing bytes are ignored, as trunnel's parser ignores them.
        let mut long = body.clone();
        long.push(1);
        assert_eq!(EstablishIntro::parse(&long).unwrap(), c);
    }

    #[test]
    fn establish_intro_refusals() {
        assert!(matches!(
            EstablishIntro::parse(&[]),
            Err(HsCellError::Truncated { .. })
        ));
        for t in [0u8, 1] {
            assert_eq!(
                EstablishIntro::parse(&est_intro(t, 32, &[0], 64)),
                Err(HsCellError::LegacyAuthKeyType(t))
            );
        }
        assert_eq!(
            EstablishIntro::parse(&est_intro(3, 32, &[0], 64)),
            Err(HsCellError::UnknownAuthKeyType(3))
        );
        assert!(matches!(
            EstablishIntro::parse(&est_intro(2, 31, &[0], 64)),
            Err(HsCellError::BadLength { len: 31, .. })
        ));
        assert!(matches!(
            EstablishIntro::parse(&est_intro(2, 32, &[0], 63)),
            Err(HsCellError::BadLength { len: 63, .. })
        ));
        let body = est_intro(2, 32, &[0], 64);
        for cut in 0..body.len() {
            assert!(EstablishIntro::parse(&body[..cut]).is_err(), "cut {cut}");
        }
        // An extension that claims more bytes than there are.
        assert!(EstablishIntro::parse(&est_intro(2, 32, &[1, 1, 200, 0], 64)).is_err());
    }

    fn dos(params: &[(u8, u64)]) -> Option<DosExtension> {
        let mut b = [0u8; 255];
        let n = DosExtension::encode_field(params, &mut b).unwrap();
        DosExtension::parse_field(&b[..n])
    }

    #[test]
    fn dos_extension_as_c_tor_validates() {
        let on = |r, b| {
            Some(DosExtension::Explicit(Some(DosRate {
                rate_per_sec: r,
                burst_per_sec: b,
            })))
        };
        let off = Some(DosExtension::Explicit(None));
        assert_eq!(dos(&[(1, 10), (2, 20)]), on(10, 20));
        assert_eq!(dos(&[(2, 20), (1, 20)]), on(20, 20));
        assert_eq!(dos(&[(1, 0), (2, 20)]), off);
        assert_eq!(dos(&[(1, 10)]), off, "missing burst counts as 0");
        assert_eq!(dos(&[(1, 30), (2, 20)]), off, "burst < rate");
        assert_eq!(dos(&[(1, 10), (2, DOS_PARAM_MAX + 1)]), off);
        assert_eq!(
            dos(&[(1, DOS_PARAM_MAX), (2, DOS_PARAM_MAX)]),
            on(i32::MAX as u32, i32::MAX as u32)
        );
        assert_eq!(dos(&[(1, 10), (3, 20)]), None, "unknown param: ignored");
        assert_eq!(DosExtension::parse_field(&[2, 1, 0, 0]), None, "truncated");
        assert_eq!(DosExtension::parse_field(&[]), None);
        let many = [(1u8, 1u64); 256];
        assert!(DosExtension::encode_field(&many, &mut [0u8; 4096]).is_err());
    }

    #[test]
    fn dos_extension_folded_in_order() {
        let mut f = [0u8; 64];
        let n = DosExtension::encode_field(&[(1, 5), (2, 9)], &mut f).unwrap();
        let good = Extension {
            field_type: EXT_TYPE_DOS,
            field: &f[..n],
        };
        let bad = Extension {
            field_type: EXT_TYPE_DOS,
            field: &[1, 7],
        };
        let other = Extension {
            field_type: 0x42,
            field: b"x",
        };
        let mut buf = [0u8; 400];
        let n = encode_establish_intro(
            &[1; 32],
            &[good, bad, other],
            |_| [0; 32],
            |_| [0; 64],
            &mut buf,
        )
        .unwrap();
        let c = EstablishIntro::parse(&buf[..n]).unwrap();
        assert_eq!(
            c.dos_extension(),
            DosExtension::Explicit(Some(DosRate {
                rate_per_sec: 5,
                burst_per_sec: 9
            }))
        );
        let n =
            encode_establish_intro(&[1; 32], &[other], |_| [0; 32], |_| [0; 64], &mut buf).unwrap();
        let c = EstablishIntro::parse(&buf[..n]).unwrap();
        assert_eq!(c.dos_extension(), DosExtension::Absent);
    }

    #[test]
    fn introduce1_layout_and_refusals() {
        let mut buf = [0u8; 498];
        let pow = Extension {
            field_type: 0x02,
            field: &[1; 40],
        };
        let n = Introduce1::encode(&[9; 32], &[pow], b"encrypted!", &mut buf).unwrap();
        let c = Introduce1::parse(&buf[..n]).unwrap();
        assert_eq!(c.auth_key, &[9; 32]);
        assert_eq!(c.extensions.iter().next(), Some(pow));
        assert_eq!(c.encrypted, b"encrypted!");
        assert_eq!(c.body, &buf[..n]);

        let mut legacy = buf;
        legacy[3] = 1;
        assert_eq!(
            Introduce1::parse(&legacy[..n]),
            Err(HsCellError::LegacyKeyId)
        );
        for (t, e) in [
            (0, HsCellError::LegacyAuthKeyType(0)),
            (1, HsCellError::LegacyAuthKeyType(1)),
            (3, HsCellError::UnknownAuthKeyType(3)),
        ] {
            let mut b = buf;
            b[20] = t;
            assert_eq!(Introduce1::parse(&b[..n]), Err(e));
        }
        // No encrypted section.
        let n0 = Introduce1::encode(&[9; 32], &[], b"", &mut buf).unwrap();
        assert_eq!(Introduce1::parse(&buf[..n0]), Err(HsCellError::NoEncrypted));
        // A 33-byte key.
        let mut b = vec![0u8; 20];
        b.push(2);
        b.extend(33u16.to_be_bytes());
        b.extend([1; 33]);
        b.extend([0, 5]);
        assert!(matches!(
            Introduce1::parse(&b),
            Err(HsCellError::BadLength { len: 33, .. })
        ));
        assert!(Introduce1::parse(&[0; 19]).is_err());
    }

    #[test]
    fn acks_and_small_messages() {
        let mut b = [0u8; 8];
        assert_eq!(encode_intro_established(&mut b).unwrap(), 1);
        assert_eq!(b[0], 0);
        assert!(parse_intro_established(&b[..1]).unwrap().is_empty());
        for s in [
            AckStatus::SUCCESS,
            AckStatus::UNKNOWN_ID,
            AckStatus::BAD_FORMAT,
            AckStatus::CANT_RELAY,
        ] {
            let n = IntroduceAck::encode(s, &mut b).unwrap();
            assert_eq!(&b[..n], &[0, s.0 as u8, 0]);
            assert_eq!(IntroduceAck::parse(&b[..n]).unwrap().status, s);
        }
        assert!(IntroduceAck::encode(AckStatus::SUCCESS, &mut b[..2]).is_err());
        assert_eq!(parse_establish_rendezvous(&[4; 20]).unwrap(), &[4; 20]);
        assert!(parse_establish_rendezvous(&[4; 19]).is_err());
        assert!(parse_establish_rendezvous(&[4; 21]).is_err());
        let r = Rendezvous1::parse(&[[3u8; 20].as_slice(), &[8; 64]].concat())
            .unwrap()
            .handshake_info
            .len();
        assert_eq!(r, 64);
        assert!(Rendezvous1::parse(&[3; 19]).is_err());
        assert_eq!(Rendezvous1::parse(&[3; 20]).unwrap().handshake_info, b"");
        let mut out = [0u8; 100];
        assert_eq!(encode_rendezvous2(&[8; 64], &mut out).unwrap(), 64);
    }
}
