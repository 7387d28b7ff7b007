//! Fors's TLS 1.3 record layer after the handover (`proto::tls_record`, RFC 8446 §5–6), fed
//! what a peer holding the keys can send: records sealed with the peer's real key, of any
//! content type and content (application data, handshake messages — KeyUpdate,
//! NewSessionTicket, anything else, split across records at any point — alerts, empty
//! records), mixed with raw bytes (bad headers, forged or truncated records), delivered in
//! chunks the input chooses. The layer runs as responder or initiator (the first byte's
//! bit 0), and reads each record whole or with its header apart from its body
//! (`read_split`, as a channel does when a read ended right after a header; bit 1).
//! Must never panic or loop; a failed read stays failed; data ranges lie in the buffer.
//!
//! One real TLS 1.3 handshake (rustls on both sides, ChaCha20-Poly1305, so the keys fit
//! rustls's public key type) is made before fuzzing; each input builds fresh layers from
//! its keys and logged secrets.
#![no_main]

use std::sync::OnceLock;

use fors::proto::channel::tls::{self, rustls};
use fors::proto::tls_record::testing::{link_credentials, provider_with_suite};
use fors::proto::tls_record::{
    with_traffic_secret_log_client, with_traffic_secret_log_server, ContentType, ReadEvent,
    Sealer, TlsRecordLayer, TrafficSecrets, HEADER_LEN, MAX_PLAINTEXT_LEN, SEAL_TRAILER_LEN,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// One direction's key, IV and next sequence number, as bytes.
#[derive(Clone, Copy)]
struct Dir {
    seq: u64,
    key: [u8; 32],
    iv: [u8; 12],
}

impl Dir {
    fn of((seq, s): &(u64, ConnectionTrafficSecrets)) -> Dir {
        let ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } = s else {
            panic!("the handshake was forced to ChaCha20-Poly1305");
        };
        Dir {
            seq: *seq,
            key: key.as_ref().try_into().expect("32-byte key"),
            iv: iv.as_ref().try_into().expect("12-byte IV"),
        }
    }
    fn secrets(&self) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from(self.key),
            iv: Iv::from(self.iv),
        }
    }
}

/// Both ends of one handshake: (tx, rx) of the responder and of the initiator, and the
/// logged application traffic secrets.
struct Keys {
    server: (Dir, Dir),
    client: (Dir, Dir),
    logged: TrafficSecrets,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (cert, key) = link_credentials(&mut rand::rngs::StdRng::seed_from_u64(14));
        let provider = provider_with_suite(TLS13_CHACHA20_POLY1305_SHA256);
        let server = tls::server_config(provider.clone(), &cert, &key).expect("server config");
        let client = tls::client_config(provider).expect("client config");
        let (scfg, slog) = with_traffic_secret_log_server(&server);
        let (ccfg, clog) = with_traffic_secret_log_client(&client);
        let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
        let mut s = rustls::ServerConnection::new(scfg).unwrap();
        let mut c = rustls::ClientConnection::new(ccfg, name).unwrap();
        for _ in 0..64 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
            if !s.is_handshaking() && !c.is_handshaking() && !s.wants_write() && !c.wants_write()
            {
                break;
            }
        }
        let logged = slog.take().expect("the responder logged both secrets");
        assert!(clog.has_both());
        let st = s.dangerous_extract_secrets().unwrap();
        let ct = c.dangerous_extract_secrets().unwrap();
        Keys {
            server: (Dir::of(&st.tx), Dir::of(&st.rx)),
            client: (Dir::of(&ct.tx), Dir::of(&ct.rx)),
            logged,
        }
    })
}

/// Reads the input as a little program: ops that append sealed records or raw bytes to the
/// wire, then the wire is fed to the layer in chunks.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(init: { keys(); }, |data: &[u8]| {
    let k = keys();
    let mut inp = Input(data);
    let Some(mode) = inp.byte() else { return };
    let is_client = mode & 1 == 1;
    let split = mode & 2 == 2;
    let ((our_tx, our_rx), peer_tx) = if is_client {
        (k.client, k.server.0)
    } else {
        (k.server, k.client.0)
    };
    let extracted = ExtractedSecrets {
        tx: (our_tx.seq, our_tx.secrets()),
        rx: (our_rx.seq, our_rx.secrets()),
    };
    let mut layer = TlsRecordLayer::from_secrets(
        TLS13_CHACHA20_POLY1305_SHA256,
        extracted,
        &k.logged,
        is_client,
        0,
    )
    .expect("the handshake's own keys");
    let mut peer = Sealer::new(&peer_tx.secrets(), peer_tx.seq, u64::MAX).unwrap();

    // Build the wire: at most 64 ops.
    let mut wire = Vec::new();
    let mut chunks = Vec::new();
    for _ in 0..64 {
        let Some(op) = inp.byte() else { break };
        let len = usize::from(inp.byte().unwrap_or(0)) | usize::from(op >> 4) << 8;
        match op & 7 {
            0..=4 => {
                let ct = match op & 7 {
                    0 | 1 => ContentType::ApplicationData,
                    2 | 3 => ContentType::Handshake,
                    _ => ContentType::Alert,
                };
                let content = inp.take(len.min(MAX_PLAINTEXT_LEN));
                let start = wire.len();
                wire.resize(start + HEADER_LEN + content.len() + SEAL_TRAILER_LEN, 0);
                wire[start + HEADER_LEN..start + HEADER_LEN + content.len()]
                    .copy_from_slice(content);
                let n = peer
                    .seal(ct, &mut wire[start..], content.len())
                    .expect("room was made");
                wire.truncate(start + n);
            }
            5 => wire.extend_from_slice(inp.take(len)),
            6 => {
                // Flip a bit in what was sealed so far.
                if !wire.is_empty() {
                    let at = len % wire.len();
                    wire[at] ^= 1 << (op >> 5);
                }
            }
            _ => chunks.push(len.max(1)),
        }
    }

    // Feed it as a channel does: append each chunk to a receive buffer and read records
    // from its start until one is incomplete.
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut ci = 0;
    let mut failed = false;
    let mut out = vec![0u8; 4096];
    while fed < wire.len() && !failed {
        let n = chunks.get(ci).copied().unwrap_or(usize::MAX).min(wire.len() - fed);
        ci += 1;
        buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        // Each read consumes at least one record or says NeedMore: bounded by the bytes.
        for _ in 0..=buf.len() {
            // Split: the header as a channel keeps it, the body where it lies; the event
            // then counts from the body.
            let (r, off) = if split && buf.len() >= HEADER_LEN {
                let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
                (layer.read_split(header, &mut buf[HEADER_LEN..]), HEADER_LEN)
            } else {
                (layer.read(&mut buf), 0)
            };
            match r {
                Ok(ReadEvent::NeedMore { needed }) => {
                    assert!(needed > 0);
                    break;
                }
                Ok(ev) => {
                    let used = ev.consumed() + off;
                    assert!(
                        used > 0 && used <= buf.len(),
                        "{ev:?} of {}",
                        buf.len()
                    );
                    if let ReadEvent::Data { plaintext, .. } = &ev {
                        assert!(
                            plaintext.end <= ev.consumed() && plaintext.start <= plaintext.end
                        );
                    }
                    buf.drain(..used);
                    // Answer as a channel would: a KeyUpdate owed goes before data.
                    if layer.key_update_due() {
                        let _ = layer.seal_key_update(&mut out, false);
                    }
                    out[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"ack");
                    let _ = layer.seal_app_data(&mut out, 3);
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
        }
    }
    if failed {
        // An error is final.
        assert!(layer.read(&mut [0u8; 8]).is_err());
    }
    let _ = layer.seal_close_notify(&mut out);
});
