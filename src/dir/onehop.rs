//! A directory request over a one-hop circuit, as a C tor relay sends it to a cache that has
//! no DirPort (C `directory_initiate_request` with `DIRIND_ONEHOP`, tor-spec §"Opening a
//! directory stream" / dir-spec §"Directory connections"): CREATE_FAST to the cache's ORPort
//! (tor-spec §"CREATE_FAST/CREATED_FAST cells"), a BEGIN_DIR stream, the HTTP request in
//! RELAY_DATA cells once CONNECTED, and the answer in RELAY_DATA cells until RELAY_END.
//!
//! Sans-IO: [`BeginDirExchange`] takes the circuit's cells (on a link the caller opened and
//! whose peer proved the cache's identity) and returns the cells to send; the caller moves
//! them (`relay::reach::begin_dir_get` over a TLS link). Flow control is tor-spec
//! §"Flow control" with fixed windows (a CREATE_FAST circuit negotiates no congestion
//! control): a stream SENDME every 50 DATA cells and an authenticated (v1) circuit SENDME
//! every 100 (prop 289), so a cache can send answers larger than the initial windows.

use rand::{CryptoRng, RngCore};

use crate::cell::chan::{CreateFast, CreatedFast, Destroy, DestroyReason};
use crate::cell::relay::msg::{End, EndReason, RelayMsg, Sendme};
use crate::cell::relay::{v0, RelayCmd};
use crate::cell::{CellError, ChanCmd, CircId, CELL_BODY_LEN};
use crate::crypto::handshake::{CreateFastClient, HandshakeError};
use crate::crypto::relay::{Tor1ClientCircuit, Tor1ClientLayer};

/// A cell body.
pub type Body = [u8; CELL_BODY_LEN];

/// tor-spec §"Flow control": the client sends a stream-level SENDME after every 50 DATA
/// cells it delivered (C `STREAMWINDOW_INCREMENT`) ...
pub const STREAM_SENDME_EVERY: u32 = 50;
/// ... and a circuit-level SENDME after every 100 (C `CIRCWINDOW_INCREMENT`).
pub const CIRC_SENDME_EVERY: u32 = 100;

/// Why the exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum OneHopError {
    #[error("CREATE_FAST: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("cell: {0}")]
    Cell(#[from] CellError),
    #[error("the cache destroyed the circuit ({0:?})")]
    Destroyed(DestroyReason),
    #[error("the cache ended the directory stream before answering ({0:?})")]
    Refused(EndReason),
    #[error("a relay cell no hop of ours made")]
    Unrecognized,
    #[error("unexpected {0:?} cell")]
    Unexpected(ChanCmd),
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    #[error("the request is empty")]
    EmptyRequest,
}

enum State {
    /// CREATE_FAST sent.
    Creating(CreateFastClient),
    /// BEGIN_DIR sent, waiting for CONNECTED.
    Connecting,
    /// Request sent, the answer coming in.
    Open,
    /// RELAY_END received: the answer is complete.
    Done,
    /// Failed; nothing more is taken.
    Failed,
}

/// The client side of one BEGIN_DIR request on its own one-hop circuit.
pub struct BeginDirExchange {
    circ_id: CircId,
    stream_id: u16,
    state: State,
    layers: Tor1ClientCircuit,
    request: Vec<u8>,
    response: Vec<u8>,
    max_response: usize,
    data_cells: u32,
}

impl BeginDirExchange {
    /// Starts an exchange on circuit `circ_id` (the caller picks it by the link's rule:
    /// high bit set on link protocol 4+), sending `request` (a whole HTTP request) and
    /// taking at most `max_response` bytes back. Returns the CREATE_FAST cell to send.
    pub fn start(
        rng: &mut (impl RngCore + CryptoRng),
        circ_id: CircId,
        request: Vec<u8>,
        max_response: usize,
    ) -> Result<(BeginDirExchange, (ChanCmd, Body)), OneHopError> {
        if request.is_empty() {
            return Err(OneHopError::EmptyRequest);
        }
        let (st, x) = CreateFastClient::start(rng);
        let mut body = [0u8; CELL_BODY_LEN];
        CreateFast { x: &x }.encode(&mut body);
        // Any stream ID but 0 will do on a fresh circuit.
        let stream_id = (rng.next_u32() as u16).max(1);
        Ok((
            BeginDirExchange {
                circ_id,
                stream_id,
                state: State::Creating(st),
                layers: Tor1ClientCircuit::new(),
                request,
                response: Vec::new(),
                max_response,
                data_cells: 0,
            },
            (ChanCmd::CREATE_FAST, body),
        ))
    }

    pub fn circ_id(&self) -> CircId {
        self.circ_id
    }

    /// RELAY_END came: [`BeginDirExchange::response`] is the whole answer.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The answer's bytes (an HTTP response) received so far.
    pub fn response(&self) -> &[u8] {
        &self.response
    }

    pub fn into_response(self) -> Vec<u8> {
        self.response
    }

    /// A DESTROY to close the circuit when done (or given up).
    pub fn destroy_cell(&self) -> (ChanCmd, Body) {
        let mut body = [0u8; CELL_BODY_LEN];
        Destroy {
            reason: DestroyReason::Finished,
        }
        .encode(&mut body);
        (ChanCmd::DESTROY, body)
    }

    /// Takes one cell of our circuit (the caller drops cells of other circuits); appends the
    /// cells to send to `out`. After an error the exchange takes nothing more.
    pub fn handle_cell(
        &mut self,
        rng: &mut impl RngCore,
        cmd: ChanCmd,
        body: &mut Body,
        out: &mut Vec<(ChanCmd, Body)>,
    ) -> Result<(), OneHopError> {
        let r = self.handle_inner(rng, cmd, body, out);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn handle_inner(
        &mut self,
        rng: &mut impl RngCore,
        cmd: ChanCmd,
        body: &mut Body,
        out: &mut Vec<(ChanCmd, Body)>,
    ) -> Result<(), OneHopError> {
        if matches!(self.state, State::Failed | State::Done) {
            return Ok(());
        }
        match cmd {
            ChanCmd::DESTROY => Err(OneHopError::Destroyed(Destroy::parse(body)?.reason)),
            ChanCmd::CREATED_FAST => {
                let State::Creating(_) = self.state else {
                    return Err(OneHopError::Unexpected(cmd));
                };
                let State::Creating(st) = std::mem::replace(&mut self.state, State::Connecting)
                else {
                    unreachable!("checked above");
                };
                let cf = CreatedFast::parse(body)?;
                let mut reply = [0u8; 40];
                reply[..20].copy_from_slice(cf.y);
                reply[20..].copy_from_slice(cf.kh);
                let keys = st.finish(&reply)?;
                self.layers.push_hop(Tor1ClientLayer::new(&keys));
                let stream = self.stream_id;
                out.push(self.relay(rng, RelayCmd::BEGIN_DIR, stream, &[])?);
                Ok(())
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                if matches!(self.state, State::Creating(_)) {
                    return Err(OneHopError::Unexpected(cmd));
                }
                self.layers
                    .recognize(body)
                    .ok_or(OneHopError::Unrecognized)?;
                let m = v0::parse(body)?;
                self.relay_msg(rng, m.cmd, m.stream_id, m.data, out)
            }
            other => Err(OneHopError::Unexpected(other)),
        }
    }

    fn relay_msg(
        &mut self,
        rng: &mut impl RngCore,
        cmd: RelayCmd,
        stream_id: u16,
        data: &[u8],
        out: &mut Vec<(ChanCmd, Body)>,
    ) -> Result<(), OneHopError> {
        // Circuit-level cells (SENDME, DROP padding) and unknown commands: nothing to do
        // (we send a few cells only; v0 drops unknown commands).
        if stream_id != self.stream_id {
            return Ok(());
        }
        match RelayMsg::parse(cmd, data)? {
            RelayMsg::Connected(_) => {
                if !matches!(self.state, State::Connecting) {
                    return Err(OneHopError::Unexpected(ChanCmd::RELAY));
                }
                self.state = State::Open;
                let req = std::mem::take(&mut self.request);
                for chunk in req.chunks(v0::MAX_DATA_LEN) {
                    out.push(self.relay(rng, RelayCmd::DATA, self.stream_id, chunk)?);
                }
                Ok(())
            }
            RelayMsg::Data(d) => {
                if !matches!(self.state, State::Open) {
                    return Err(OneHopError::Unexpected(ChanCmd::RELAY));
                }
                if self.response.len() + d.len() > self.max_response {
                    return Err(OneHopError::TooLarge(self.max_response));
                }
                self.response.extend_from_slice(d);
                self.data_cells += 1;
                // The digest of the cell that completed the circuit window (prop 289), taken
                // before a cell we send replaces the layer's last tag.
                let tag = *self
                    .layers
                    .hop(0)
                    .ok_or(OneHopError::Unrecognized)?
                    .sendme_tag();
                if self.data_cells.is_multiple_of(STREAM_SENDME_EVERY) {
                    let mut b = [0u8; 3];
                    let n = RelayMsg::Sendme(Sendme::V0).encode(&mut b)?;
                    out.push(self.relay(rng, RelayCmd::SENDME, self.stream_id, &b[..n])?);
                }
                if self.data_cells.is_multiple_of(CIRC_SENDME_EVERY) {
                    let mut b = [0u8; 32];
                    let n = RelayMsg::Sendme(Sendme::V1 { tag: &tag }).encode(&mut b)?;
                    out.push(self.relay(rng, RelayCmd::SENDME, 0, &b[..n])?);
                }
                Ok(())
            }
            RelayMsg::End(End { reason, .. }) => {
                if matches!(self.state, State::Connecting) {
                    // C answers END NOTDIRECTORY when it is not a cache.
                    return Err(OneHopError::Refused(reason));
                }
                self.state = State::Done;
                Ok(())
            }
            // Stream SENDMEs and the rest: we send too little to need them.
            _ => Ok(()),
        }
    }

    /// A relay cell to hop 0, encrypted.
    fn relay(
        &mut self,
        rng: &mut impl RngCore,
        cmd: RelayCmd,
        stream_id: u16,
        data: &[u8],
    ) -> Result<(ChanCmd, Body), OneHopError> {
        let mut body = [0u8; CELL_BODY_LEN];
        v0::encode(&mut body, cmd, stream_id, data, rng)?;
        self.layers
            .originate(0, &mut body)
            .map_err(|_| OneHopError::Unrecognized)?;
        Ok((ChanCmd::RELAY, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::handshake::fast;
    use crate::crypto::relay::Tor1RelayCrypto;
    use rand::SeedableRng;

    /// The cache's end of the circuit, with the relay-side tor1 crypto.
    struct Cache {
        crypto: Tor1RelayCrypto,
        /// The SENDME tag of every 100th DATA cell sent (what a v1 SENDME must carry).
        tags: Vec<[u8; 20]>,
        sent_data: u32,
    }

    impl Cache {
        fn answer_create(rng: &mut rand::rngs::StdRng, create: &Body) -> (Cache, Body) {
            let x = CreateFast::parse(create).unwrap().x.to_vec();
            let (reply, keys) = fast::server_handshake(rng, &x).unwrap();
            let mut created = [0u8; CELL_BODY_LEN];
            CreatedFast {
                y: reply[..20].try_into().unwrap(),
                kh: reply[20..].try_into().unwrap(),
            }
            .encode(&mut created);
            let c = Cache {
                crypto: Tor1RelayCrypto::new(&keys),
                tags: Vec::new(),
                sent_data: 0,
            };
            (c, created)
        }

        /// Decrypts a cell from the client: (command, stream, data).
        fn take(&mut self, cell: &(ChanCmd, Body)) -> (RelayCmd, u16, Vec<u8>) {
            assert_eq!(cell.0, ChanCmd::RELAY);
            let mut b = cell.1;
            assert!(self.crypto.recognize(&mut b), "cell not for the cache");
            let m = v0::parse(&b).unwrap();
            (m.cmd, m.stream_id, m.data.to_vec())
        }

        fn send(
            &mut self,
            rng: &mut rand::rngs::StdRng,
            cmd: RelayCmd,
            stream: u16,
            data: &[u8],
        ) -> Body {
            let mut b = [0u8; CELL_BODY_LEN];
            v0::encode(&mut b, cmd, stream, data, rng).unwrap();
            let tag = self.crypto.originate(&mut b);
            if cmd == RelayCmd::DATA {
                self.sent_data += 1;
                if self.sent_data.is_multiple_of(CIRC_SENDME_EVERY) {
                    self.tags.push(tag);
                }
            }
            b
        }
    }

    fn seeded() -> rand::rngs::StdRng {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    /// Opens the circuit and the stream; returns the exchange, the cache and the stream ID,
    /// with the request as the cache received it.
    fn open(
        rng: &mut rand::rngs::StdRng,
        request: &[u8],
        max: usize,
    ) -> (BeginDirExchange, Cache, u16) {
        let (mut x, create) =
            BeginDirExchange::start(rng, CircId(0x8000_0042), request.to_vec(), max).unwrap();
        assert_eq!(create.0, ChanCmd::CREATE_FAST);
        let (mut cache, mut created) = Cache::answer_create(rng, &create.1);
        let mut out = Vec::new();
        x.handle_cell(rng, ChanCmd::CREATED_FAST, &mut created, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        let (cmd, stream, data) = cache.take(&out[0]);
        assert_eq!(cmd, RelayCmd::BEGIN_DIR);
        assert_ne!(stream, 0);
        assert!(data.is_empty());
        let mut connected = cache.send(rng, RelayCmd::CONNECTED, stream, &[]);
        out.clear();
        x.handle_cell(rng, ChanCmd::RELAY, &mut connected, &mut out)
            .unwrap();
        let mut got = Vec::new();
        for c in &out {
            let (cmd, s, d) = cache.take(c);
            assert_eq!((cmd, s), (RelayCmd::DATA, stream));
            got.extend(d);
        }
        assert_eq!(got, request);
        (x, cache, stream)
    }

    #[test]
    fn fetches_a_large_answer_with_stream_and_authenticated_circuit_sendmes() {
        let mut rng = seeded();
        // A request longer than one cell, as a batch of 96 descriptor digests is.
        let request = format!("GET /tor/server/d/{} HTTP/1.0\r\n\r\n", "AB".repeat(2000));
        let (mut x, mut cache, stream) = open(&mut rng, request.as_bytes(), 1 << 20);
        // 250 full cells: more than the stream window's first 50-cell increments, and two
        // circuit windows' worth of SENDME points.
        let mut answer = Vec::new();
        let (mut stream_sendmes, mut circ_tags) = (0, Vec::new());
        for i in 0..250u32 {
            let chunk: Vec<u8> = (0..v0::MAX_DATA_LEN)
                .map(|j| (i as usize + j) as u8)
                .collect();
            answer.extend_from_slice(&chunk);
            let mut b = cache.send(&mut rng, RelayCmd::DATA, stream, &chunk);
            let mut out = Vec::new();
            x.handle_cell(&mut rng, ChanCmd::RELAY, &mut b, &mut out)
                .unwrap();
            for c in &out {
                let (cmd, s, d) = cache.take(c);
                assert_eq!(cmd, RelayCmd::SENDME);
                match Sendme::parse(&d).unwrap() {
                    Sendme::V0 => {
                        assert_eq!(s, stream);
                        stream_sendmes += 1;
                    }
                    Sendme::V1 { tag } => {
                        assert_eq!(s, 0, "circuit SENDME on stream 0");
                        circ_tags.push(<[u8; 20]>::try_from(tag).unwrap());
                    }
                }
            }
        }
        assert_eq!(stream_sendmes, 5);
        assert_eq!(
            circ_tags, cache.tags,
            "v1 SENDMEs carry the cache's digests"
        );
        assert_eq!(circ_tags.len(), 2);
        assert!(!x.is_done());
        let mut end = cache.send(&mut rng, RelayCmd::END, stream, &[6]);
        let mut out = Vec::new();
        x.handle_cell(&mut rng, ChanCmd::RELAY, &mut end, &mut out)
            .unwrap();
        assert!(x.is_done() && out.is_empty());
        assert_eq!(x.destroy_cell().0, ChanCmd::DESTROY);
        assert_eq!(x.into_response(), answer);
    }

    #[test]
    fn refusals_and_bad_cells_are_errors() {
        let mut rng = seeded();
        // END NOTDIRECTORY before CONNECTED: a relay that is no cache.
        let (mut x, create) = BeginDirExchange::start(
            &mut rng,
            CircId(0x8000_0001),
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            100,
        )
        .unwrap();
        let (mut cache, mut created) = Cache::answer_create(&mut rng, &create.1);
        let mut out = Vec::new();
        x.handle_cell(&mut rng, ChanCmd::CREATED_FAST, &mut created, &mut out)
            .unwrap();
        let (_, stream, _) = cache.take(&out[0]);
        let mut end = cache.send(&mut rng, RelayCmd::END, stream, &[14]);
        let e = x
            .handle_cell(&mut rng, ChanCmd::RELAY, &mut end, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(e, OneHopError::Refused(EndReason::NotDirectory)),
            "{e}"
        );

        // An answer over the bound.
        let (mut x, mut cache, stream) = open(&mut rng, b"GET /x HTTP/1.0\r\n\r\n", 600);
        let mut b = cache.send(&mut rng, RelayCmd::DATA, stream, &[1; 400]);
        x.handle_cell(&mut rng, ChanCmd::RELAY, &mut b, &mut Vec::new())
            .unwrap();
        let mut b = cache.send(&mut rng, RelayCmd::DATA, stream, &[1; 400]);
        let e = x
            .handle_cell(&mut rng, ChanCmd::RELAY, &mut b, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, OneHopError::TooLarge(600)), "{e}");
        // Failed: later cells change nothing.
        let mut end = cache.send(&mut rng, RelayCmd::END, stream, &[6]);
        x.handle_cell(&mut rng, ChanCmd::RELAY, &mut end, &mut Vec::new())
            .unwrap();
        assert!(!x.is_done());

        // A cell the cache did not encrypt, a DESTROY, a bad CREATED_FAST.
        let (mut x, _, _) = open(&mut rng, b"GET /x HTTP/1.0\r\n\r\n", 600);
        let mut junk = [0x55u8; CELL_BODY_LEN];
        let e = x
            .handle_cell(&mut rng, ChanCmd::RELAY, &mut junk, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, OneHopError::Unrecognized), "{e}");
        let (mut x, _, _) = open(&mut rng, b"GET /x HTTP/1.0\r\n\r\n", 600);
        let mut d = [0u8; CELL_BODY_LEN];
        d[0] = 1;
        let e = x
            .handle_cell(&mut rng, ChanCmd::DESTROY, &mut d, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(e, OneHopError::Destroyed(DestroyReason::TorProtocol)),
            "{e}"
        );
        let (mut x, _) =
            BeginDirExchange::start(&mut rng, CircId(0x8000_0003), b"G".to_vec(), 10).unwrap();
        let e = x
            .handle_cell(
                &mut rng,
                ChanCmd::CREATED_FAST,
                &mut [0u8; CELL_BODY_LEN],
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(matches!(e, OneHopError::Handshake(_)), "{e}");
        assert!(matches!(
            BeginDirExchange::start(&mut rng, CircId(0x8000_0004), Vec::new(), 10),
            Err(OneHopError::EmptyRequest)
        ));
    }
}
