//! The client side of one circuit, sans-IO: it makes the cells a Tor client sends and takes
//! the cells it receives, and the caller moves them (over a TLS link, a `Channel`, or straight
//! into a `RelayCore` under test).
//!
//! * First hop: CREATE_FAST (tor-spec §"CREATE_FAST/CREATED_FAST cells") or CREATE2 with ntor
//!   or ntor-v3 (§"The ntor handshake", §"The ntor-v3 handshake"); [`ClientCircuit::created`]
//!   takes the answer.
//! * Further hops: EXTEND2 in a relay cell to the last hop (§"EXTEND2 and EXTENDED2"), which
//!   the caller sends as RELAY_EARLY (§"Handling RELAY_EARLY cells");
//!   [`ClientCircuit::extended`] takes the EXTENDED2.
//! * Relay cells (§"Relay cells", format v0) built for a hop and encrypted with tor1, and
//!   received cells decrypted and recognized ([`ClientCircuit::relay_cell`],
//!   [`ClientCircuit::open`]); messages for BEGIN/DATA/END/SENDME in [`msg`].
//! * CGO (proposal 359): an ntor-v3 handshake whose extensions ask for Relay=6
//!   ([`cgo_request`]) makes that hop a CGO hop; cells for it are in relay cell format v1 and
//!   its SENDME tags are 16 bytes ([`ClientCircuit::relay_cell_as`],
//!   [`ClientCircuit::open_as`], [`SendmeTag`]). Only [`NegotiatedLayers`] holds CGO hops.
//!
//! The layers are `fors`'s own `Tor1ClientCircuit` by default; any [`ClientLayers`] (the
//! reference tor1 in [`crate::tor1_ref`]) can stand in to cross-check it.

use crate::tor1_ref::Tor1Dir;
use fors::cell::chan::{
    Create2, CreateFast, Created2, CreatedFast, Destroy, DestroyReason, HandshakeType,
};
use fors::cell::relay::msg::{Extend2, Extended2, LinkSpec, RelayMsg};
use fors::cell::relay::{v0, v1, RelayCmd};
use fors::cell::{CellError, ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::extensions::{PROTOCOL_ID_RELAY, RELAY_CAP_CRYPT_CGO};
use fors::crypto::handshake::{
    CircuitExtension, CircuitKeys, CreateFastClient, HandshakeError, NtorClient, NtorV3Client,
    SubprotoCap,
};
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};
use rand::{CryptoRng, RngCore};
use x25519_dalek::PublicKey;

/// A cell body.
pub type Body = [u8; CELL_BODY_LEN];

/// The relay payload of an EXTEND2 (a relay cell's data, tor-spec §"Relay cells").
const RELAY_DATA_LEN: usize = CELL_BODY_LEN - 11;

/// A SENDME v1 tag (prop 289): the tor1 digest (20 bytes) or the CGO tag (16 bytes) of the
/// cell a SENDME acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendmeTag {
    Tor1([u8; 20]),
    Cgo([u8; 16]),
}

impl SendmeTag {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SendmeTag::Tor1(t) => t,
            SendmeTag::Cgo(t) => t,
        }
    }

    /// The tor1 digest, if this is one.
    pub fn tor1(self) -> Option<[u8; 20]> {
        match self {
            SendmeTag::Tor1(t) => Some(t),
            SendmeTag::Cgo(_) => None,
        }
    }
}

/// The relay crypto a hop's handshake negotiated, and so its relay cell format (tor-spec
/// §"Relay cells": v0 with tor1, v1 with CGO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopCryptoKind {
    Tor1,
    Cgo,
}

impl HopCryptoKind {
    pub fn name(self) -> &'static str {
        match self {
            HopCryptoKind::Tor1 => "tor1",
            HopCryptoKind::Cgo => "cgo",
        }
    }
}

/// The ntor-v3 extensions that ask a hop for CGO: CC_REQUEST and SUBPROTO Relay=6, as C tor
/// 0.4.9 sends them (`client_circ_negotiation_message`: CGO only together with congestion
/// control; relay cell format v1 has no stream ID on SENDME, so flow control of streams
/// needs CC's XON/XOFF).
pub fn cgo_request() -> Vec<CircuitExtension> {
    vec![
        CircuitExtension::CcRequest,
        CircuitExtension::SubprotoRequest(vec![SubprotoCap {
            protocol_id: PROTOCOL_ID_RELAY,
            capability: RELAY_CAP_CRYPT_CGO,
        }]),
    ]
}

/// Whether `exts` ask for CGO (a SUBPROTO request naming Relay=6).
pub fn asks_cgo(exts: &[CircuitExtension]) -> bool {
    exts.iter().any(|e| {
        matches!(e, CircuitExtension::SubprotoRequest(caps) if caps.iter().any(|c| {
            c.protocol_id == PROTOCOL_ID_RELAY && c.capability == RELAY_CAP_CRYPT_CGO
        }))
    })
}

/// A client's circuit layers: one tor1 layer per hop (and, for layers that can, CGO hops:
/// the `*_as` methods, whose defaults are the tor1 ones).
pub trait ClientLayers {
    /// Adds the layer of the hop just built.
    fn push(&mut self, keys: &Tor1KeyMaterial);
    /// Hops built.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sets the digest of a cell for `hop` and adds the layers of `hop`..=0; the cell's SENDME
    /// tag, or `None` if there is no such hop.
    fn originate(&mut self, hop: usize, body: &mut Body) -> Option<[u8; 20]>;
    /// Strips layers from hop 0 outward until a hop recognizes the cell; that hop.
    fn recognize(&mut self, body: &mut Body) -> Option<usize>;
    /// The SENDME tag of the last cell exchanged with `hop` (as the layers keep it).
    fn last_tag(&self, hop: usize) -> Option<[u8; 20]>;

    /// Adds the layer of the hop just built, whatever its handshake negotiated; layers that
    /// hold only tor1 refuse CGO keys.
    fn push_keys(&mut self, keys: &CircuitKeys) -> Result<(), CircuitError> {
        match keys {
            CircuitKeys::Tor1(k) => {
                self.push(k);
                Ok(())
            }
            CircuitKeys::Cgo(_) => Err(CircuitError::CgoUnsupported),
        }
    }
    /// The crypto of `hop` (tor1 unless the layers hold CGO hops).
    fn kind(&self, _hop: usize) -> HopCryptoKind {
        HopCryptoKind::Tor1
    }
    /// [`ClientLayers::originate`] for a cell sent with channel command `cmd` (CGO tweaks
    /// with it: RELAY or RELAY_EARLY).
    fn originate_as(&mut self, hop: usize, _cmd: ChanCmd, body: &mut Body) -> Option<SendmeTag> {
        self.originate(hop, body).map(SendmeTag::Tor1)
    }
    /// [`ClientLayers::recognize`] for a cell received with channel command `cmd`.
    fn recognize_as(&mut self, _cmd: ChanCmd, body: &mut Body) -> Option<usize> {
        self.recognize(body)
    }
    /// [`ClientLayers::last_tag`] of any length.
    fn sendme_tag(&self, hop: usize) -> Option<SendmeTag> {
        self.last_tag(hop).map(SendmeTag::Tor1)
    }
}

impl ClientLayers for Tor1ClientCircuit {
    fn push(&mut self, keys: &Tor1KeyMaterial) {
        self.push_hop(Tor1ClientLayer::new(keys));
    }
    fn len(&self) -> usize {
        Tor1ClientCircuit::len(self)
    }
    fn originate(&mut self, hop: usize, body: &mut Body) -> Option<[u8; 20]> {
        Tor1ClientCircuit::originate(self, hop, body).ok()
    }
    fn recognize(&mut self, body: &mut Body) -> Option<usize> {
        Tor1ClientCircuit::recognize(self, body)
    }
    fn last_tag(&self, hop: usize) -> Option<[u8; 20]> {
        self.hop(hop).map(|h| *h.sendme_tag())
    }
}

impl<L: ClientLayers + ?Sized> ClientLayers for Box<L> {
    fn push(&mut self, keys: &Tor1KeyMaterial) {
        (**self).push(keys)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn originate(&mut self, hop: usize, body: &mut Body) -> Option<[u8; 20]> {
        (**self).originate(hop, body)
    }
    fn recognize(&mut self, body: &mut Body) -> Option<usize> {
        (**self).recognize(body)
    }
    fn last_tag(&self, hop: usize) -> Option<[u8; 20]> {
        (**self).last_tag(hop)
    }
    fn push_keys(&mut self, keys: &CircuitKeys) -> Result<(), CircuitError> {
        (**self).push_keys(keys)
    }
    fn kind(&self, hop: usize) -> HopCryptoKind {
        (**self).kind(hop)
    }
    fn originate_as(&mut self, hop: usize, cmd: ChanCmd, body: &mut Body) -> Option<SendmeTag> {
        (**self).originate_as(hop, cmd, body)
    }
    fn recognize_as(&mut self, cmd: ChanCmd, body: &mut Body) -> Option<usize> {
        (**self).recognize_as(cmd, body)
    }
    fn sendme_tag(&self, hop: usize) -> Option<SendmeTag> {
        (**self).sendme_tag(hop)
    }
}

/// One hop of [`NegotiatedLayers`].
enum NegotiatedHop {
    /// tor1 (the test kit's reference, which can pass a cell through a hop without
    /// digesting it): forward and backward (boxed: ciphers and digests are kilobytes), last
    /// SENDME tag.
    Tor1(Box<(Tor1Dir, Tor1Dir)>, [u8; 20]),
    /// CGO (the test kit's reference client, boxed too) and the last SENDME tag.
    Cgo(Box<crate::cgo_ref::CgoClientHop>, [u8; 16]),
}

/// Client layers where each hop runs what its handshake negotiated: tor1, or CGO when the
/// ntor-v3 handshake asked for it ([`cgo_request`]). Both are the test kit's references
/// ([`crate::tor1_ref`], [`crate::cgo_ref`]), independent of `fors::crypto::relay`.
#[derive(Default)]
pub struct NegotiatedLayers {
    hops: Vec<NegotiatedHop>,
}

impl NegotiatedLayers {
    /// The crypto of every hop, first hop first.
    pub fn kinds(&self) -> Vec<HopCryptoKind> {
        (0..self.hops.len()).map(|h| self.kind(h)).collect()
    }
}

impl ClientLayers for NegotiatedLayers {
    fn push(&mut self, k: &Tor1KeyMaterial) {
        self.hops.push(NegotiatedHop::Tor1(
            Box::new((Tor1Dir::new(&k.kf, &k.df), Tor1Dir::new(&k.kb, &k.db))),
            [0; 20],
        ));
    }
    fn len(&self) -> usize {
        self.hops.len()
    }
    /// A RELAY cell; `None` also when `hop` is a CGO hop (its tag is not 20 bytes: see
    /// [`ClientLayers::originate_as`]).
    fn originate(&mut self, hop: usize, body: &mut Body) -> Option<[u8; 20]> {
        self.originate_as(hop, ChanCmd::RELAY, body)?.tor1()
    }
    fn recognize(&mut self, body: &mut Body) -> Option<usize> {
        self.recognize_as(ChanCmd::RELAY, body)
    }
    fn last_tag(&self, hop: usize) -> Option<[u8; 20]> {
        self.sendme_tag(hop)?.tor1()
    }
    fn push_keys(&mut self, keys: &CircuitKeys) -> Result<(), CircuitError> {
        match keys {
            CircuitKeys::Tor1(k) => self.push(k),
            CircuitKeys::Cgo(k) => self.hops.push(NegotiatedHop::Cgo(
                Box::new(crate::cgo_ref::CgoClientHop::new(k)),
                [0; 16],
            )),
        }
        Ok(())
    }
    fn kind(&self, hop: usize) -> HopCryptoKind {
        match self.hops.get(hop) {
            Some(NegotiatedHop::Cgo(..)) => HopCryptoKind::Cgo,
            _ => HopCryptoKind::Tor1,
        }
    }
    fn originate_as(&mut self, hop: usize, cmd: ChanCmd, body: &mut Body) -> Option<SendmeTag> {
        let c = u8::from(cmd);
        let tag = match self.hops.get_mut(hop)? {
            NegotiatedHop::Tor1(dirs, last) => {
                *last = dirs.0.set_digest(body);
                dirs.0.crypt(body);
                SendmeTag::Tor1(*last)
            }
            NegotiatedHop::Cgo(h, last) => {
                *last = h.originate(c, body);
                SendmeTag::Cgo(*last)
            }
        };
        for h in self.hops[..hop].iter_mut().rev() {
            match h {
                NegotiatedHop::Tor1(dirs, _) => dirs.0.crypt(body),
                NegotiatedHop::Cgo(h, _) => h.forward(c, body),
            }
        }
        Some(tag)
    }
    fn recognize_as(&mut self, cmd: ChanCmd, body: &mut Body) -> Option<usize> {
        let c = u8::from(cmd);
        for (i, h) in self.hops.iter_mut().enumerate() {
            match h {
                NegotiatedHop::Tor1(dirs, last) => {
                    dirs.1.crypt(body);
                    if let Some(d) = dirs.1.check(body) {
                        *last = d;
                        return Some(i);
                    }
                }
                NegotiatedHop::Cgo(h, last) => {
                    if let Some(t) = h.backward(c, body) {
                        *last = t;
                        return Some(i);
                    }
                }
            }
        }
        None
    }
    fn sendme_tag(&self, hop: usize) -> Option<SendmeTag> {
        Some(match self.hops.get(hop)? {
            NegotiatedHop::Tor1(_, t) => SendmeTag::Tor1(*t),
            NegotiatedHop::Cgo(_, t) => SendmeTag::Cgo(*t),
        })
    }
}

/// How to shake hands with a hop, and what the client must know of it for that.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// CREATE_FAST: first hop only, no key of the relay's needed.
    Fast,
    /// ntor: the relay's RSA identity and ntor onion key.
    Ntor { rsa: RsaIdentity, onion: PublicKey },
    /// ntor-v3: the relay's ed25519 identity and ntor onion key, and the extensions to ask
    /// for (e.g. congestion control; CGO with [`cgo_request`]).
    NtorV3 {
        ed: Ed25519Identity,
        onion: PublicKey,
        exts: Vec<CircuitExtension>,
    },
}

/// A handshake sent and not yet answered.
#[derive(Debug)]
pub enum PendingHandshake {
    Fast(CreateFastClient),
    Ntor(NtorClient),
    /// The state, and whether the extensions asked for CGO (the reply does not say: a
    /// relay that cannot run CGO fails the handshake instead).
    NtorV3(NtorV3Client, bool),
}

impl PendingHandshake {
    /// Starts `hs`: the state and the onionskin (for CREATE_FAST, the 20-byte X).
    pub fn start(
        rng: &mut (impl RngCore + CryptoRng),
        hs: &Handshake,
    ) -> Result<(PendingHandshake, Vec<u8>), CircuitError> {
        Ok(match hs {
            Handshake::Fast => {
                let (st, x) = CreateFastClient::start(rng);
                (PendingHandshake::Fast(st), x.to_vec())
            }
            Handshake::Ntor { rsa, onion } => {
                let (st, skin) = NtorClient::start(rng, rsa, onion);
                (PendingHandshake::Ntor(st), skin.to_vec())
            }
            Handshake::NtorV3 { ed, onion, exts } => {
                let (st, skin) = NtorV3Client::start(rng, ed, onion, exts)?;
                (PendingHandshake::NtorV3(st, asks_cgo(exts)), skin)
            }
        })
    }

    /// The CREATE2 HTYPE (none for CREATE_FAST).
    pub fn htype(&self) -> Option<HandshakeType> {
        match self {
            PendingHandshake::Fast(_) => None,
            PendingHandshake::Ntor(_) => Some(HandshakeType::NTOR),
            PendingHandshake::NtorV3(..) => Some(HandshakeType::NTOR_V3),
        }
    }

    /// Whether this handshake asked for CGO.
    pub fn asks_cgo(&self) -> bool {
        matches!(self, PendingHandshake::NtorV3(_, true))
    }

    /// Checks the relay's reply (CREATED_FAST's `Y | KH`, or CREATED2's HDATA); the hop's
    /// tor1 keys and, for ntor-v3, the extensions the relay answered with. For a handshake
    /// that asked for CGO use [`PendingHandshake::finish_circ`].
    pub fn finish(
        self,
        reply: &[u8],
    ) -> Result<(Tor1KeyMaterial, Vec<CircuitExtension>), HandshakeError> {
        match self {
            PendingHandshake::Fast(st) => st.finish(reply).map(|k| (k, Vec::new())),
            PendingHandshake::Ntor(st) => st.finish(reply).map(|k| (k, Vec::new())),
            PendingHandshake::NtorV3(st, _) => st.finish(reply),
        }
    }

    /// [`PendingHandshake::finish`] for any relay crypto: CGO keys when the handshake asked
    /// for CGO, tor1 keys otherwise.
    pub fn finish_circ(
        self,
        reply: &[u8],
    ) -> Result<(CircuitKeys, Vec<CircuitExtension>), HandshakeError> {
        match self {
            PendingHandshake::NtorV3(st, cgo) => st.finish_circ(reply, cgo),
            other => other.finish(reply).map(|(k, e)| (CircuitKeys::Tor1(k), e)),
        }
    }
}

/// Why the circuit could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("cell: {0}")]
    Cell(#[from] CellError),
    #[error("a CREATED or EXTENDED2 came with no handshake pending")]
    NoHandshakePending,
    #[error("a handshake is already pending")]
    HandshakePending,
    #[error("CREATE_FAST cannot extend a circuit (tor-spec: first hop only)")]
    FastInExtend,
    #[error("the circuit has no hop {0}")]
    NoSuchHop(usize),
    #[error("no hop recognizes the relay cell")]
    Unrecognized,
    #[error("the circuit was destroyed: {0:?}")]
    Destroyed(DestroyReason),
    #[error("unexpected {0:?} cell")]
    UnexpectedCell(ChanCmd),
    #[error("CGO keys for layers that hold only tor1")]
    CgoUnsupported,
    #[error("hop {0} runs CGO: its SENDME tag is 16 bytes (use the *_as calls)")]
    NotTor1(usize),
}

/// A relay message received on the circuit, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// The hop that sent it (0 = first).
    pub hop: usize,
    pub cmd: RelayCmd,
    pub stream_id: u16,
    pub data: &'a [u8],
}

impl<'a> Received<'a> {
    /// The message, parsed.
    pub fn msg(&self) -> Result<RelayMsg<'a>, CellError> {
        RelayMsg::parse(self.cmd, self.data)
    }
}

/// The client side of one circuit.
pub struct ClientCircuit<L: ClientLayers = Tor1ClientCircuit> {
    pub id: CircId,
    pub layers: L,
    pending: Option<PendingHandshake>,
}

impl ClientCircuit {
    /// A circuit `id` with `fors`'s own tor1 layers. A client's circuit IDs have the high
    /// bit set on link protocol 4+ (tor-spec §"Choosing circuit IDs in create cells").
    pub fn new(id: CircId) -> ClientCircuit {
        ClientCircuit::with_layers(id, Tor1ClientCircuit::new())
    }
}

impl<L: ClientLayers> ClientCircuit<L> {
    pub fn with_layers(id: CircId, layers: L) -> ClientCircuit<L> {
        ClientCircuit {
            id,
            layers,
            pending: None,
        }
    }

    /// Hops built.
    pub fn hops(&self) -> usize {
        self.layers.len()
    }

    /// The last hop built (0 before any).
    pub fn last_hop(&self) -> usize {
        self.layers.len().saturating_sub(1)
    }

    /// Whether a CREATE or EXTEND2 waits for its answer.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The first hop's CREATE_FAST or CREATE2 (command and body) for `hs`.
    pub fn create(
        &mut self,
        rng: &mut (impl RngCore + CryptoRng),
        hs: &Handshake,
    ) -> Result<(ChanCmd, Body), CircuitError> {
        if self.pending.is_some() {
            return Err(CircuitError::HandshakePending);
        }
        let (st, skin) = PendingHandshake::start(rng, hs)?;
        let mut body = [0u8; CELL_BODY_LEN];
        let cmd = match st.htype() {
            None => {
                let mut x = [0u8; 20];
                x.copy_from_slice(&skin);
                CreateFast { x: &x }.encode(&mut body);
                ChanCmd::CREATE_FAST
            }
            Some(htype) => {
                Create2 {
                    htype,
                    hdata: &skin,
                }
                .encode(&mut body)?;
                ChanCmd::CREATE2
            }
        };
        self.pending = Some(st);
        Ok((cmd, body))
    }

    /// Takes the first hop's answer: CREATED_FAST or CREATED2 adds the hop (and gives the
    /// ntor-v3 reply extensions); DESTROY is [`CircuitError::Destroyed`].
    pub fn created(
        &mut self,
        cmd: ChanCmd,
        body: &[u8],
    ) -> Result<Vec<CircuitExtension>, CircuitError> {
        match cmd {
            ChanCmd::CREATED_FAST => {
                let cf = CreatedFast::parse(body)?;
                let mut reply = [0u8; 40];
                reply[..20].copy_from_slice(cf.y);
                reply[20..].copy_from_slice(cf.kh);
                self.finish(&reply)
            }
            ChanCmd::CREATED2 => {
                let c = Created2::parse(body)?;
                self.finish(c.hdata)
            }
            ChanCmd::DESTROY => {
                self.pending = None;
                Err(CircuitError::Destroyed(Destroy::parse(body)?.reason))
            }
            other => Err(CircuitError::UnexpectedCell(other)),
        }
    }

    /// An EXTEND2 to the hop after the last, reached through `specs` (tor-spec §"EXTEND2":
    /// an IPv4 or IPv6 address and the identities), encrypted for the last hop. The caller
    /// sends it as RELAY_EARLY.
    pub fn extend(
        &mut self,
        rng: &mut (impl RngCore + CryptoRng),
        specs: &[LinkSpec<'_>],
        hs: &Handshake,
    ) -> Result<Body, CircuitError> {
        if matches!(hs, Handshake::Fast) {
            return Err(CircuitError::FastInExtend);
        }
        if self.pending.is_some() {
            return Err(CircuitError::HandshakePending);
        }
        let (st, skin) = PendingHandshake::start(rng, hs)?;
        let create2 = Create2 {
            htype: st.htype().expect("not CREATE_FAST"),
            hdata: &skin,
        };
        // Sent as RELAY_EARLY (tor-spec §"Handling RELAY_EARLY cells"), which CGO's tweak
        // covers.
        let (body, _) = self.relay_cell_as(
            rng,
            self.last_hop(),
            ChanCmd::RELAY_EARLY,
            RelayCmd::EXTEND2,
            0,
            |o| Extend2::encode(specs, &create2, o),
        )?;
        self.pending = Some(st);
        Ok(body)
    }

    /// An EXTEND2 whose CREATE2 carries `hdata` as is (no handshake is kept: for tests of a
    /// relay's extend path that need no answer, or a malformed onionskin).
    pub fn extend_raw(
        &mut self,
        rng: &mut impl RngCore,
        specs: &[LinkSpec<'_>],
        htype: HandshakeType,
        hdata: &[u8],
    ) -> Result<Body, CircuitError> {
        let mut ext = [0u8; RELAY_DATA_LEN];
        let n = Extend2::encode(specs, &Create2 { htype, hdata }, &mut ext)?;
        let msg = RelayMsg::Extend2(Extend2::parse(&ext[..n])?);
        Ok(self.relay_cell(rng, self.last_hop(), &msg, 0)?.0)
    }

    /// Takes an EXTENDED2's HDATA: adds the hop.
    pub fn extended(&mut self, hdata: &[u8]) -> Result<Vec<CircuitExtension>, CircuitError> {
        self.finish(hdata)
    }

    /// Takes a decrypted EXTENDED2 relay message (see [`ClientCircuit::open`]).
    pub fn extended_msg(
        &mut self,
        r: &Received<'_>,
    ) -> Result<Vec<CircuitExtension>, CircuitError> {
        match r.msg()? {
            RelayMsg::Extended2(Extended2 { hdata }) => self.finish(hdata),
            RelayMsg::Truncated(reason) => {
                self.pending = None;
                Err(CircuitError::Destroyed(reason))
            }
            _ => Err(CircuitError::UnexpectedCell(ChanCmd::RELAY)),
        }
    }

    fn finish(&mut self, reply: &[u8]) -> Result<Vec<CircuitExtension>, CircuitError> {
        let st = self
            .pending
            .take()
            .ok_or(CircuitError::NoHandshakePending)?;
        let (keys, exts) = st.finish_circ(reply)?;
        self.layers.push_keys(&keys)?;
        Ok(exts)
    }

    /// A relay cell carrying `msg` on `stream_id` for `hop`, encrypted; the body and its
    /// SENDME tag.
    pub fn relay_cell(
        &mut self,
        rng: &mut impl RngCore,
        hop: usize,
        msg: &RelayMsg<'_>,
        stream_id: u16,
    ) -> Result<(Body, [u8; 20]), CircuitError> {
        self.relay_cell_with(rng, hop, msg.cmd(), stream_id, |o| msg.encode(o))
    }

    /// [`ClientCircuit::relay_cell`] whose data `write` puts straight into the cell (no copy).
    pub fn relay_cell_with(
        &mut self,
        rng: &mut impl RngCore,
        hop: usize,
        cmd: RelayCmd,
        stream_id: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
    ) -> Result<(Body, [u8; 20]), CircuitError> {
        if self.layers.kind(hop) != HopCryptoKind::Tor1 {
            return Err(CircuitError::NotTor1(hop));
        }
        let (body, tag) = self.relay_cell_as(rng, hop, ChanCmd::RELAY, cmd, stream_id, write)?;
        Ok((body, tag.tor1().ok_or(CircuitError::NotTor1(hop))?))
    }

    /// A relay cell for `hop` to be sent with channel command `chan_cmd` (RELAY or
    /// RELAY_EARLY), in the hop's cell format (v0 for tor1, v1 for CGO), whose data `write`
    /// puts straight into the cell (at most [`ClientCircuit::max_data_len`] bytes); the body
    /// and its SENDME tag.
    pub fn relay_cell_as(
        &mut self,
        rng: &mut impl RngCore,
        hop: usize,
        chan_cmd: ChanCmd,
        cmd: RelayCmd,
        stream_id: u16,
        write: impl FnOnce(&mut [u8]) -> Result<usize, CellError>,
    ) -> Result<(Body, SendmeTag), CircuitError> {
        if hop >= self.layers.len() {
            return Err(CircuitError::NoSuchHop(hop));
        }
        let mut body = [0u8; CELL_BODY_LEN];
        match self.layers.kind(hop) {
            HopCryptoKind::Tor1 => v0::encode_with(&mut body, cmd, stream_id, rng, write)?,
            HopCryptoKind::Cgo => v1::encode_with(&mut body, cmd, stream_id, rng, write)?,
        }
        let tag = self
            .layers
            .originate_as(hop, chan_cmd, &mut body)
            .ok_or(CircuitError::NoSuchHop(hop))?;
        Ok((body, tag))
    }

    /// The most data one relay message `cmd` to `hop` carries in the hop's cell format.
    pub fn max_data_len(&self, hop: usize, cmd: RelayCmd) -> usize {
        match self.layers.kind(hop) {
            HopCryptoKind::Tor1 => v0::MAX_DATA_LEN,
            HopCryptoKind::Cgo => v1::max_data_len(cmd),
        }
    }

    /// The crypto `hop` runs.
    pub fn kind(&self, hop: usize) -> HopCryptoKind {
        self.layers.kind(hop)
    }

    /// Decrypts a RELAY (or RELAY_EARLY) cell body in place; the hop that sent it and the
    /// message.
    pub fn open<'b>(&mut self, body: &'b mut Body) -> Result<Received<'b>, CircuitError> {
        self.open_as(ChanCmd::RELAY, body)
    }

    /// [`ClientCircuit::open`] for a cell that came with channel command `cmd`, parsed in
    /// the cell format of the hop that recognized it.
    pub fn open_as<'b>(
        &mut self,
        cmd: ChanCmd,
        body: &'b mut Body,
    ) -> Result<Received<'b>, CircuitError> {
        let hop = self
            .layers
            .recognize_as(cmd, body)
            .ok_or(CircuitError::Unrecognized)?;
        let m = match self.layers.kind(hop) {
            HopCryptoKind::Tor1 => v0::parse(body)?,
            HopCryptoKind::Cgo => v1::parse(body)?,
        };
        Ok(Received {
            hop,
            cmd: m.cmd,
            stream_id: m.stream_id,
            data: m.data,
        })
    }

    /// The SENDME tag of the last cell exchanged with `hop`.
    pub fn last_tag(&self, hop: usize) -> Option<[u8; 20]> {
        self.layers.last_tag(hop)
    }

    /// [`ClientCircuit::last_tag`] of any length (16 bytes on a CGO hop).
    pub fn sendme_tag(&self, hop: usize) -> Option<SendmeTag> {
        self.layers.sendme_tag(hop)
    }
}

/// Relay messages a client sends (tor-spec §"Opening streams", §"Flow control").
pub mod msg {
    use std::net::SocketAddr;

    use fors::cell::relay::msg::{
        Begin, BeginFlags, BeginTarget, End, EndReason, LinkSpec, RelayMsg, Sendme,
    };

    /// BEGIN to `target:port`, no flags.
    pub fn begin(target: BeginTarget<'_>, port: u16) -> RelayMsg<'_> {
        RelayMsg::Begin(Begin {
            target,
            port,
            flags: BeginFlags(0),
        })
    }

    pub fn data(bytes: &[u8]) -> RelayMsg<'_> {
        RelayMsg::Data(bytes)
    }

    /// END with `reason` and no address.
    pub fn end(reason: EndReason) -> RelayMsg<'static> {
        RelayMsg::End(End {
            reason,
            addr: None,
            ttl: None,
        })
    }

    /// A stream SENDME (always version 0), or a circuit SENDME v0.
    pub fn sendme() -> RelayMsg<'static> {
        RelayMsg::Sendme(Sendme::V0)
    }

    /// A circuit SENDME v1 carrying `tag` (prop 289).
    pub fn sendme_v1(tag: &[u8]) -> RelayMsg<'_> {
        RelayMsg::Sendme(Sendme::V1 { tag })
    }

    /// The link specifiers for a relay at `addr` with these identities (EXTEND2).
    pub fn link_specs<'a>(
        addr: SocketAddr,
        rsa: &'a fors::crypto::ids::RsaIdentity,
        ed: Option<&'a fors::crypto::ids::Ed25519Identity>,
    ) -> Vec<LinkSpec<'a>> {
        let mut v = vec![match addr {
            SocketAddr::V4(a) => LinkSpec::Ipv4(a),
            SocketAddr::V6(a) => LinkSpec::Ipv6(a),
        }];
        v.push(LinkSpec::RsaId(*rsa));
        if let Some(ed) = ed {
            v.push(LinkSpec::Ed25519Id(*ed));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tor1_ref::RefClientLayers;
    use fors::crypto::handshake::fast;
    use rand::SeedableRng;

    /// A relay end of a one-hop circuit made with the reference tor1 on the relay side.
    fn one_hop<L: ClientLayers>(
        c: &mut ClientCircuit<L>,
        rng: &mut rand::rngs::StdRng,
    ) -> crate::tor1_ref::RefRelayCrypto {
        use fors::proto::circuit::HopCrypto;
        let (cmd, body) = c.create(rng, &Handshake::Fast).unwrap();
        assert_eq!(cmd, ChanCmd::CREATE_FAST);
        let x = CreateFast::parse(&body).unwrap().x.to_vec();
        let (reply, keys) = fast::server_handshake(rng, &x).unwrap();
        let mut created = [0u8; CELL_BODY_LEN];
        CreatedFast {
            y: reply[..20].try_into().unwrap(),
            kh: reply[20..].try_into().unwrap(),
        }
        .encode(&mut created);
        assert!(c
            .created(ChanCmd::CREATED_FAST, &created)
            .unwrap()
            .is_empty());
        crate::tor1_ref::RefRelayCrypto::from_keys(&keys)
    }

    fn round_trip<L: ClientLayers>(layers: L) {
        use fors::proto::circuit::HopCrypto;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut c = ClientCircuit::with_layers(CircId(0x8000_0001), layers);
        let mut relay = one_hop(&mut c, &mut rng);
        assert_eq!(c.hops(), 1);
        let (mut body, tag) = c.relay_cell(&mut rng, 0, &msg::data(b"hi"), 3).unwrap();
        assert!(relay.recognize(&mut body));
        assert_eq!(relay.sendme_tag(), &tag);
        let m = v0::parse(&body).unwrap();
        assert_eq!(
            (m.cmd, m.stream_id, m.data),
            (RelayCmd::DATA, 3, &b"hi"[..])
        );
        let mut back = [0u8; CELL_BODY_LEN];
        v0::encode(&mut back, RelayCmd::SENDME, 0, &[], &mut rng).unwrap();
        relay.originate(&mut back);
        let r = c.open(&mut back).unwrap();
        assert_eq!((r.hop, r.cmd), (0, RelayCmd::SENDME));
        // A cell no hop made is refused, not misread.
        let mut junk = [0x55u8; CELL_BODY_LEN];
        assert!(matches!(c.open(&mut junk), Err(CircuitError::Unrecognized)));
        assert!(matches!(
            c.relay_cell(&mut rng, 1, &msg::sendme(), 0),
            Err(CircuitError::NoSuchHop(1))
        ));
    }

    #[test]
    fn fors_and_reference_layers_round_trip() {
        round_trip(Tor1ClientCircuit::new());
        round_trip(RefClientLayers::default());
    }

    /// A two-hop circuit of [`NegotiatedLayers`]: hop 0 tor1 (the relay side is the kit's
    /// reference), hop 1 CGO (the relay side is `fors`'s own CGO, independent of the kit's
    /// client): v0 cells for hop 0, v1 cells for hop 1 through hop 0 both ways, RELAY_EARLY
    /// in the tweak, and 16-byte SENDME tags.
    #[test]
    fn negotiated_layers_mix_tor1_and_cgo_hops() {
        use fors::crypto::handshake::CircuitKeys;
        use fors::crypto::relay::cgo::{CgoKeyMaterial, CgoRelayCrypto128};
        use fors::proto::circuit::HopCrypto;
        use rand::RngCore;
        let seed = crate::test_seed("negotiated_layers_mix_tor1_and_cgo_hops");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut c = ClientCircuit::with_layers(CircId(0x8000_0003), NegotiatedLayers::default());
        let mut hop0 = one_hop(&mut c, &mut rng);
        let mut k = [0u8; CgoKeyMaterial::STREAM_LEN];
        rng.fill_bytes(&mut k);
        let keys = CgoKeyMaterial::from_bytes(&k);
        let mut hop1 = CgoRelayCrypto128::new(&keys);
        c.layers
            .push_keys(&CircuitKeys::Cgo(Box::new(keys)))
            .unwrap();
        assert_eq!(c.layers.kinds(), [HopCryptoKind::Tor1, HopCryptoKind::Cgo]);
        assert_eq!(c.max_data_len(0, RelayCmd::DATA), v0::MAX_DATA_LEN);
        assert_eq!(
            c.max_data_len(1, RelayCmd::DATA),
            v1::MAX_DATA_LEN_WITH_STREAM
        );
        let early = u8::from(ChanCmd::RELAY_EARLY);
        let relay = u8::from(ChanCmd::RELAY);
        for round in 0..3u8 {
            // Forward to hop 1 as RELAY_EARLY: hop 0 only strips its layer.
            let (mut body, tag) = c
                .relay_cell_as(&mut rng, 1, ChanCmd::RELAY_EARLY, RelayCmd::DATA, 5, |o| {
                    o[..3].copy_from_slice(&[round; 3]);
                    Ok(3)
                })
                .unwrap();
            assert!(!hop0.recognize(&mut body));
            assert!(hop1.recognize(early, &mut body));
            assert_eq!(tag, SendmeTag::Cgo(*hop1.sendme_tag()));
            let m = v1::parse(&body).unwrap();
            assert_eq!(
                (m.cmd, m.stream_id, m.data),
                (RelayCmd::DATA, 5, &[round; 3][..])
            );
            // Backward from hop 1, through hop 0.
            let mut back = [0u8; CELL_BODY_LEN];
            v1::encode(&mut back, RelayCmd::DATA, 5, &[round, 9], &mut rng).unwrap();
            let t = hop1.originate(relay, &mut back);
            hop0.backward_relay(&mut back);
            let r = c.open_as(ChanCmd::RELAY, &mut back).unwrap();
            assert_eq!((r.hop, r.cmd, r.data), (1, RelayCmd::DATA, &[round, 9][..]));
            assert_eq!(c.sendme_tag(1), Some(SendmeTag::Cgo(t)));
            // A tor1 cell for hop 0 is v0 and keeps its 20-byte tag.
            let (mut b0, t0) = c.relay_cell(&mut rng, 0, &msg::sendme(), 0).unwrap();
            assert!(hop0.recognize(&mut b0));
            assert_eq!(hop0.sendme_tag(), &t0);
        }
        // A forward cell with the wrong command in the tweak is not recognized.
        let (mut body, _) = c
            .relay_cell_as(&mut rng, 1, ChanCmd::RELAY, RelayCmd::DATA, 5, |_| Ok(0))
            .unwrap();
        assert!(!hop0.recognize(&mut body));
        assert!(!hop1.recognize(early, &mut body));
        // The tor1-only calls refuse the CGO hop rather than hand out a wrong tag.
        assert!(matches!(
            c.relay_cell(&mut rng, 1, &msg::sendme(), 0),
            Err(CircuitError::NotTor1(1))
        ));
        // Layers that hold only tor1 refuse CGO keys.
        let mut t1 = Tor1ClientCircuit::new();
        assert!(matches!(
            t1.push_keys(&CircuitKeys::Cgo(Box::new(CgoKeyMaterial::from_bytes(&k)))),
            Err(CircuitError::CgoUnsupported)
        ));
    }

    #[test]
    fn cgo_request_is_recognized() {
        assert!(asks_cgo(&cgo_request()));
        assert!(!asks_cgo(&[CircuitExtension::CcRequest]));
    }

    #[test]
    fn a_second_create_while_pending_and_a_stray_created_are_errors() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut c = ClientCircuit::new(CircId(0x8000_0002));
        assert!(matches!(
            c.created(ChanCmd::CREATED_FAST, &[0u8; CELL_BODY_LEN]),
            Err(CircuitError::NoHandshakePending)
        ));
        c.create(&mut rng, &Handshake::Fast).unwrap();
        assert!(matches!(
            c.create(&mut rng, &Handshake::Fast),
            Err(CircuitError::HandshakePending)
        ));
        // A bad KH fails the handshake.
        assert!(matches!(
            c.created(ChanCmd::CREATED_FAST, &[0u8; CELL_BODY_LEN]),
            Err(CircuitError::Handshake(_))
        ));
        assert!(matches!(
            c.extend(&mut rng, &[], &Handshake::Fast),
            Err(CircuitError::FastInExtend)
        ));
    }
}
