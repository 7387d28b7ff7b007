//! The three paths of the copy map (`docs/architecture.md`, "Copy map"), set up on the fake
//! shards of `node_harness` and driven in rounds of N cells: a middle circuit whose two
//! channels live on one shard (forward and backward), and an exit stream (exit socket →
//! client, client → exit socket). Each round is split so a caller can measure only the
//! node's own work: `prepare_*` builds the peers' bytes, `deliver_*` runs the node on them
//! (nothing else), `collect_*` reads what the node sent and checks it. Shared by
//! `tests/copies_per_cell.rs` and `benches/node_cells.rs`.
#![allow(dead_code)]

use fors::cell::chan::{Create2, Created2};
use fors::cell::relay::msg::Extended2;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::ntor::server_handshake;
use fors::crypto::relay::Tor1ClientLayer;
use fors::proto::circuit::CellBody;
use fors::shard::ConnId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::node_harness::*;

/// One TLS record header: the records in `bytes` (a whole number of them).
pub fn tls_records(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]) as usize;
        i += 5 + len;
        n += 1;
    }
    assert_eq!(i, bytes.len(), "not a whole number of TLS records");
    n
}

/// Takes what the node sent on `conn` without freeing the fake socket's buffer (so the next
/// round's sends do not allocate), and forgets the fake shard's operation log.
fn take_kept(net: &mut Net, shard: usize, conn: ConnId) -> Vec<u8> {
    let s = &mut net.shards[shard];
    s.ops.clear();
    let c = s.conns.get_mut(&conn).expect("live connection");
    let v = c.pending.clone();
    c.pending.clear();
    // Room for the bound, once: the fake socket's growth is not the node's allocation.
    c.pending.reserve(c.bound);
    v
}

/// A client, the node as its first hop, and a target relay as the second hop, whose channel
/// is on the circuit's own shard (the node's owner shard for the target).
pub struct Middle {
    pub net: Net,
    pub shard: usize,
    pub p: Peer,
    pub c: ClientCirc,
    pub t: Peer,
    pub tcid: CircId,
    rng: StdRng,
}

impl Middle {
    pub fn new(seed: u64) -> Middle {
        Middle::with_tls12(seed, false)
    }

    /// As `new`; with `tls12`, the client and the target speak only TLS 1.2, so both of the
    /// node's channels stay on rustls.
    pub fn with_tls12(seed: u64, tls12: bool) -> Middle {
        let mut net = Net::new(seed);
        let target = target_ident();
        let shard = owner_of(target);
        let from = std::net::SocketAddr::new(LOCAL, 41000);
        let mut p = if tls12 {
            Peer::client_with(&mut net, shard, from, client_ctx_tls12())
        } else {
            Peer::client(&mut net, shard, 41000)
        };
        let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0020);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let (st, _, body) = extend2_to_target(&mut c, &mut rng);
        let ta = target_addr();
        for s in &mut net.shards {
            s.ops.clear();
        }
        p.send(&mut net, c.circ_id, ChanCmd::RELAY_EARLY, &body);
        // The circuit's shard opens the channel itself: nothing crosses shards.
        let cs = connects(&net.shards[shard]);
        assert_eq!(cs.len(), 1, "{:?}", net.shards[shard].ops);
        let tconn = cs[0].0;
        net.nodes[shard].on_connected(tconn, ta, &mut net.shards[shard]);
        net.settle();
        let mut t = if tls12 {
            Peer::target_with(&mut net, shard, tconn, target_ctx_tls12())
        } else {
            Peer::target(&mut net, shard, tconn)
        };
        t.pump(&mut net);
        assert!(t.sink.opened().is_some(), "{:?}", t.sink.events);
        let cells = t.cells();
        assert_eq!(cells.len(), 1, "{cells:?}");
        let (tcid, cmd, create2) = cells[0].clone();
        assert_eq!(cmd, ChanCmd::CREATE2);
        let cb: CellBody = create2.as_slice().try_into().unwrap();
        let parsed = Create2::parse(&cb).unwrap();
        let (reply, _keys) =
            server_handshake(&mut rng, &target.onion, &target.id.rsa_id(), parsed.hdata).unwrap();
        let mut created = [0u8; CELL_BODY_LEN];
        Created2 { hdata: &reply }.encode(&mut created).unwrap();
        t.send(&mut net, tcid, ChanCmd::CREATED2, &created);
        p.pump(&mut net);
        let got = c.open_all(&p.cells());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (0, RelayCmd::EXTENDED2));
        let hk = st
            .finish(Extended2::parse(&got[0].3).unwrap().hdata)
            .expect("EXTENDED2 carries the target's reply");
        c.layers.push_hop(Tor1ClientLayer::new(&hk));
        assert!(
            net.cross_log.is_empty(),
            "the circuit stays on one shard: {:?}",
            net.cross_log
        );
        Middle {
            net,
            shard,
            p,
            c,
            t,
            tcid,
            rng,
        }
    }

    /// The client's TLS bytes for `n` cells to the second hop (not recognized here).
    pub fn prepare_forward(&mut self, n: usize) -> Vec<u8> {
        for _ in 0..n {
            let len = self.rng.gen_range(1..=498);
            let data: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
            let cell = self.c.cell(1, RelayCmd::DROP, 0, &data);
            self.p
                .chan
                .send_cell(self.c.circ_id, ChanCmd::RELAY, &cell)
                .unwrap();
        }
        let bytes = self.p.chan.pending_output().to_vec();
        self.p.chan.consume_output(bytes.len());
        bytes
    }

    /// The target's TLS bytes for `n` cells toward the client.
    pub fn prepare_backward(&mut self, n: usize) -> Vec<u8> {
        for _ in 0..n {
            let mut cell = [0u8; CELL_BODY_LEN];
            self.rng.fill(&mut cell[..]);
            self.t
                .chan
                .send_cell(self.tcid, ChanCmd::RELAY, &cell)
                .unwrap();
        }
        let bytes = self.t.chan.pending_output().to_vec();
        self.t.chan.consume_output(bytes.len());
        bytes
    }

    /// The node reads `bytes` from the client's (`forward`) or the target's connection, as
    /// one read completion, and ends the batch.
    pub fn deliver(&mut self, forward: bool, bytes: &mut [u8]) {
        self.deliver_in_reads(forward, bytes, usize::MAX);
    }

    /// As [`deliver`](Self::deliver), the bytes cut into reads of `read_len` bytes (as
    /// the shard's receive buffers would cut them), then the batch ends.
    pub fn deliver_in_reads(&mut self, forward: bool, bytes: &mut [u8], read_len: usize) {
        let conn = if forward { self.p.conn } else { self.t.conn };
        let s = self.shard;
        for read in bytes.chunks_mut(read_len.min(bytes.len()).max(1)) {
            self.net.nodes[s].on_data(conn, read, &mut self.net.shards[s]);
        }
        self.net.nodes[s].on_batch_end(&mut self.net.shards[s]);
    }

    /// Hands the node the front of `stream` (a socket's received bytes) in reads as the
    /// shard makes them under bulk traffic: each a whole provided buffer of `buf_size`, or
    /// less where the node capped the read after the read before
    /// (`ShardIo::set_read_cap`; the kernel honours a receive's length). Only full reads
    /// are made, as with a socket that always holds more; the rest stays in `stream` for
    /// the next call. Returns the number of reads.
    pub fn deliver_stream(
        &mut self,
        forward: bool,
        stream: &mut Vec<u8>,
        buf_size: usize,
    ) -> usize {
        let conn = if forward { self.p.conn } else { self.t.conn };
        let s = self.shard;
        let mut pos = 0;
        let mut reads = 0;
        loop {
            let cap = self.net.shards[s].conns[&conn].read_cap.unwrap_or(buf_size);
            let len = cap.min(buf_size);
            if stream.len() - pos < len {
                break;
            }
            self.net.nodes[s].on_data(conn, &mut stream[pos..pos + len], &mut self.net.shards[s]);
            pos += len;
            reads += 1;
        }
        self.net.nodes[s].on_batch_end(&mut self.net.shards[s]);
        stream.drain(..pos);
        reads
    }

    /// What the node sent the target (`forward`) or the client, read by that peer: the TLS
    /// bytes, and how many RELAY cells of the circuit they carried.
    pub fn collect(&mut self, forward: bool) -> (Vec<u8>, usize) {
        let (peer, cid) = if forward {
            (&mut self.t, self.tcid)
        } else {
            (&mut self.p, self.c.circ_id)
        };
        let bytes = take_kept(&mut self.net, self.shard, peer.conn);
        let wall = self.net.shards[self.shard].wall;
        peer.chan
            .handle_input(&bytes, wall, &mut self.rng, &mut peer.sink)
            .unwrap();
        let cells = peer.cells();
        assert!(
            cells
                .iter()
                .all(|(id, cmd, _)| *id == cid && *cmd == ChanCmd::RELAY),
            "only the circuit's RELAY cells"
        );
        (bytes, cells.len())
    }
}

/// A client and the node as its exit, with one open stream.
pub struct Exit {
    pub net: Net,
    pub p: Peer,
    pub c: ClientCirc,
    pub stream: ConnId,
    rng: StdRng,
}

/// The stream ID the client opened.
const SID: u16 = 1;

impl Exit {
    pub fn new(seed: u64) -> Exit {
        let mut net = Net::new(seed);
        let mut p = Peer::client(&mut net, 0, 42000);
        let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0030);
        let stream = open_stream(&mut net, &mut p, &mut c, SID);
        Exit {
            net,
            p,
            c,
            stream,
            rng: StdRng::seed_from_u64(seed ^ 0xe417),
        }
    }

    /// Bytes the exit socket will deliver: `n` full DATA cells' worth.
    pub fn prepare_download(&mut self, n: usize) -> Vec<u8> {
        (0..n * 498).map(|_| self.rng.gen()).collect()
    }

    /// The exit socket's bytes, as one read completion; the batch ends (staged DATA is
    /// crypted and sent).
    pub fn deliver_download(&mut self, bytes: &mut [u8]) {
        self.net.nodes[0].on_data(self.stream, bytes, &mut self.net.shards[0]);
        self.net.nodes[0].on_batch_end(&mut self.net.shards[0]);
    }

    /// The client reads what the node sent: the TLS bytes and the DATA bytes they carried.
    pub fn collect_download(&mut self) -> (Vec<u8>, Vec<u8>, usize) {
        let bytes = take_kept(&mut self.net, 0, self.p.conn);
        let wall = self.net.shards[0].wall;
        self.p
            .chan
            .handle_input(&bytes, wall, &mut self.rng, &mut self.p.sink)
            .unwrap();
        let got = self.c.open_all(&self.p.cells());
        let cells = got.len();
        (bytes, data_of(&got, 0, SID), cells)
    }

    /// The client's TLS bytes for `n` full DATA cells on the stream, and their data.
    pub fn prepare_upload(&mut self, n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut all = Vec::new();
        for _ in 0..n {
            let data: Vec<u8> = (0..498).map(|_| self.rng.gen()).collect();
            let cell = self.c.cell(0, RelayCmd::DATA, SID, &data);
            all.extend_from_slice(&data);
            self.p
                .chan
                .send_cell(self.c.circ_id, ChanCmd::RELAY, &cell)
                .unwrap();
        }
        let bytes = self.p.chan.pending_output().to_vec();
        self.p.chan.consume_output(bytes.len());
        (bytes, all)
    }

    /// The client's bytes, as one read completion.
    pub fn deliver_upload(&mut self, bytes: &mut [u8]) {
        self.net.nodes[0].on_data(self.p.conn, bytes, &mut self.net.shards[0]);
        self.net.nodes[0].on_batch_end(&mut self.net.shards[0]);
    }

    /// What the node wrote to the exit socket, and the TLS bytes it sent the client
    /// meanwhile (SENDMEs), read by the client.
    pub fn collect_upload(&mut self) -> (Vec<u8>, Vec<u8>) {
        let to_client = take_kept(&mut self.net, 0, self.p.conn);
        if !to_client.is_empty() {
            let wall = self.net.shards[0].wall;
            self.p
                .chan
                .handle_input(&to_client, wall, &mut self.rng, &mut self.p.sink)
                .unwrap();
            let _ = self.p.cells();
        }
        (take_kept(&mut self.net, 0, self.stream), to_client)
    }
}
