//! The ntor-v3 handshake, CREATE2 HTYPE 3 (proposal 332; tor-spec §"The ntor-v3 handshake").
//!
//! Client → relay: `ID (32, ed25519) | KEYID (32) | X (32) | MSG (encrypted) | MAC (32)`;
//! relay → client: `Y (32) | AUTH (32) | MSG (encrypted)`. Both messages carry
//! [`CircuitExtension`] lists when used for circuits.
//!
//! ```text
//! phase1:  SHAKE256(ENCAP(t_msgkdf) | Bx | ID | X | B | PROTOID | ENCAP(VER)) -> ENC_K1 (32), MAC_K1 (32)
//! MAC    = SHA3-256(ENCAP(t_msgmac) | ENCAP(MAC_K1) | ID | B | X | CMSG_enc)
//! secret = Yx | Bx | ID | B | X | Y | PROTOID | ENCAP(VER)
//! key_seed = SHA3-256(ENCAP(t_key_seed) | secret);  verify = SHA3-256(ENCAP(t_verify) | secret)
//! AUTH   = SHA3-256(ENCAP(t_auth) | verify | ID | B | Y | X | MAC | ENCAP(SMSG_enc) | PROTOID | "Server")
//! final: SHAKE256(ENCAP(t_final) | key_seed) -> ENC_K2 (32), then relay keys
//! ```
//! Messages are AES-256-CTR (zero IV) encrypted. For tor1 the relay keys are
//! `Df | Db | Kf | Kb` (72 bytes) followed by KH (20) — the same order as ntor.

use aes::Aes256;
use cipher::{KeyIvInit, StreamCipher};
use rand_core::{CryptoRng, RngCore};
use sha3::{Digest, Sha3_256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::extensions::{
    decode_extensions, encode_extensions, CircuitExtension, NegotiatedCircParams, NegotiationError,
};
use super::kdf::{encap_len, ShakeKdf, ShakeReader};
use super::x25519::PeerPoint;
use super::{HandshakeError, NtorKeyMap};
use crate::crypto::ids::Ed25519Identity;
use crate::crypto::keymat::Tor1KeyMaterial;
use crate::crypto::relay::cgo::CgoKeyMaterial;

/// Verification string used for circuit extension (C tor `NTOR3_CIRC_VERIFICATION`).
pub const NTOR3_CIRC_VERIFICATION: &[u8] = b"circuit extend";
/// Shortest possible onionskin: ID, KEYID, X and MAC with an empty message.
pub const NTOR3_MIN_ONIONSKIN_LEN: usize = 32 * 4;
/// Shortest possible reply: Y and AUTH with an empty message.
pub const NTOR3_MIN_REPLY_LEN: usize = 32 * 2;

const PROTOID: &[u8] = b"ntor3-curve25519-sha3_256-1";
const T_MSGKDF: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_phase1";
const T_MSGMAC: &[u8] = b"ntor3-curve25519-sha3_256-1:msg_mac";
const T_KEY_SEED: &[u8] = b"ntor3-curve25519-sha3_256-1:key_seed";
const T_VERIFY: &[u8] = b"ntor3-curve25519-sha3_256-1:verify";
const T_FINAL: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_final";
const T_AUTH: &[u8] = b"ntor3-curve25519-sha3_256-1:auth_final";
const SERVER_STR: &[u8] = b"Server";

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// AES-256-CTR with a zero IV, in place (its own inverse).
fn aes256_ctr(key: &[u8; 32], data: &mut [u8]) {
    let mut c = Aes256Ctr::new(key.into(), &[0u8; 16].into());
    c.apply_keystream(data);
}

/// SHA3-256 with ntor-v3's `ENCAP` framing.
struct Sha3(Sha3_256);

impl Sha3 {
    fn tweaked(tweak: &[u8]) -> Self {
        let mut s = Self(Sha3_256::new());
        s.encap(tweak);
        s
    }
    fn add(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }
    fn encap(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(encap_len(data.len()));
        self.0.update(data);
        self
    }
    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// ENC_K1 and MAC_K1 from the first DH output (`Bx` / `xB`).
fn phase1_keys(
    bx: &[u8; 32],
    id: &Ed25519Identity,
    x: &PublicKey,
    b: &PublicKey,
    verification: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut kdf = ShakeKdf::new();
    kdf.absorb_encap(T_MSGKDF)
        .absorb(bx)
        .absorb(&id.0)
        .absorb(x.as_bytes())
        .absorb(b.as_bytes())
        .absorb(PROTOID)
        .absorb_encap(verification);
    let mut r = kdf.finalize();
    let enc = Zeroizing::new(r.read_array::<32>());
    let mac = Zeroizing::new(r.read_array::<32>());
    (enc, mac)
}

/// The client message MAC.
fn msg_mac(
    mac_key: &[u8; 32],
    id: &Ed25519Identity,
    b: &PublicKey,
    x: &PublicKey,
    enc_msg: &[u8],
) -> [u8; 32] {
    let mut h = Sha3::tweaked(T_MSGMAC);
    h.encap(mac_key)
        .add(&id.0)
        .add(b.as_bytes())
        .add(x.as_bytes())
        .add(enc_msg);
    h.finish()
}

/// Everything the second phase hashes; identical on both sides.
struct Phase2<'a> {
    xy: &'a [u8; 32],
    xb: &'a [u8; 32],
    id: &'a Ed25519Identity,
    b: &'a PublicKey,
    x: &'a PublicKey,
    y: &'a PublicKey,
    msg_mac: &'a [u8; 32],
    verification: &'a [u8],
}

impl Phase2<'_> {
    /// `key_seed` and `verify`: two tweaked hashes of the same secret input.
    fn seeds(&self) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        let secret = |h: &mut Sha3| {
            h.add(self.xy)
                .add(self.xb)
                .add(&self.id.0)
                .add(self.b.as_bytes())
                .add(self.x.as_bytes())
                .add(self.y.as_bytes())
                .add(PROTOID)
                .encap(self.verification);
        };
        let mut ks = Sha3::tweaked(T_KEY_SEED);
        secret(&mut ks);
        let mut v = Sha3::tweaked(T_VERIFY);
        secret(&mut v);
        (Zeroizing::new(ks.finish()), Zeroizing::new(v.finish()))
    }

    /// AUTH over the encrypted reply message.
    fn auth(&self, verify: &[u8; 32], enc_reply: &[u8]) -> [u8; 32] {
        let mut a = Sha3::tweaked(T_AUTH);
        a.add(verify)
            .add(&self.id.0)
            .add(self.b.as_bytes())
            .add(self.y.as_bytes())
            .add(self.x.as_bytes())
            .add(self.msg_mac)
            .encap(enc_reply)
            .add(PROTOID)
            .add(SERVER_STR);
        a.finish()
    }
}

/// The final SHAKE stream: ENC_K2 first, then relay keys.
fn final_stream(key_seed: &[u8; 32]) -> (Zeroizing<[u8; 32]>, ShakeReader) {
    let mut kdf = ShakeKdf::new();
    kdf.absorb_encap(T_FINAL).absorb(key_seed);
    let mut stream = kdf.finalize();
    let enc_key = Zeroizing::new(stream.read_array::<32>());
    (enc_key, stream)
}

/// Reads tor1 key material (Df | Db | Kf | Kb | KH) from the ntor-v3 key stream.
pub fn tor1_keys_from_stream(stream: &mut ShakeReader) -> Tor1KeyMaterial {
    let mut k = Zeroizing::new([0u8; Tor1KeyMaterial::KDF_LEN]);
    stream.read(&mut k[..]);
    Tor1KeyMaterial::from_kdf_output(&k)
}

/// Relay state after the client's message is authenticated and decrypted, before replying.
pub struct NtorV3ServerState {
    my_id: Ed25519Identity,
    my_key: PublicKey,
    client_key: PublicKey,
    /// X prepared for the second multiplication, by y.
    peer: PeerPoint,
    xb: Zeroizing<[u8; 32]>,
    msg_mac: [u8; 32],
}

impl std::fmt::Debug for NtorV3ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorV3ServerState")
            .field("my_id", &self.my_id)
            .finish_non_exhaustive()
    }
}

/// First relay step: checks ID, finds our key by KEYID, verifies the MAC and decrypts the
/// client's message. The caller decides on a reply and calls [`NtorV3ServerState::finish`].
///
/// A wrong ID or unknown KEYID fails at once rather than through a junk key as in C tor:
/// both values are public, so the early exit reveals nothing and saves the curve25519 work.
pub fn server_part1(
    keys: &NtorKeyMap,
    my_id: &Ed25519Identity,
    onionskin: &[u8],
    verification: &[u8],
) -> Result<(NtorV3ServerState, Vec<u8>), HandshakeError> {
    if onionskin.len() < NTOR3_MIN_ONIONSKIN_LEN {
        return Err(HandshakeError::OnionskinLength {
            handshake: "ntor-v3",
            expected: NTOR3_MIN_ONIONSKIN_LEN,
            got: onionskin.len(),
        });
    }
    let (id, rest) = onionskin.split_at(32);
    let (key_id, rest) = rest.split_at(32);
    let (x, rest) = rest.split_at(32);
    let (enc_msg, mac) = rest.split_at(rest.len() - 32);

    if !bool::from(id.ct_eq(&my_id.0)) {
        return Err(HandshakeError::WrongNodeId);
    }
    let mut key_id_arr = [0u8; 32];
    key_id_arr.copy_from_slice(key_id);
    let keypair = keys
        .lookup(&key_id_arr)
        .ok_or(HandshakeError::UnknownKeyId)?;
    let mut x_arr = [0u8; 32];
    x_arr.copy_from_slice(x);
    let client_key = PublicKey::from(x_arr);
    let peer = PeerPoint::new(&client_key);

    let xb = peer.diffie_hellman(keypair.secret());
    // Carry on with zeros for a small-order X so the MAC check still runs; fail after.
    let contributory = xb.is_some();
    let xb = xb.unwrap_or_default();
    let (enc_key, mac_key) = phase1_keys(&xb, my_id, &client_key, keypair.public(), verification);
    let computed = msg_mac(&mac_key, my_id, keypair.public(), &client_key, enc_msg);
    let mac_ok = bool::from(computed.ct_eq(mac));
    if !contributory {
        return Err(HandshakeError::ZeroSharedSecret);
    }
    if !mac_ok {
        return Err(HandshakeError::BadMac);
    }

    let mut msg = enc_msg.to_vec();
    aes256_ctr(&enc_key, &mut msg);
    let mut msg_mac_arr = [0u8; 32];
    msg_mac_arr.copy_from_slice(mac);
    let state = NtorV3ServerState {
        my_id: *my_id,
        my_key: *keypair.public(),
        client_key,
        peer,
        xb,
        msg_mac: msg_mac_arr,
    };
    Ok((state, msg))
}

impl NtorV3ServerState {
    /// Second relay step: encrypts `server_msg` and returns the reply (`Y | AUTH | MSG`) and
    /// the key stream; read tor1 keys with [`tor1_keys_from_stream`] (or more for CGO).
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        verification: &[u8],
        server_msg: &[u8],
    ) -> Result<(Vec<u8>, ShakeReader), HandshakeError> {
        self.finish_with(StaticSecret::random_from_rng(rng), verification, server_msg)
    }

    fn finish_with(
        self,
        y: StaticSecret,
        verification: &[u8],
        server_msg: &[u8],
    ) -> Result<(Vec<u8>, ShakeReader), HandshakeError> {
        let y_pub = PublicKey::from(&y);
        let xy = self
            .peer
            .diffie_hellman(&y)
            .ok_or(HandshakeError::ZeroSharedSecret)?;
        let mut reply = Vec::with_capacity(64 + server_msg.len());
        reply.extend_from_slice(y_pub.as_bytes());
        reply.extend_from_slice(&[0u8; 32]);
        reply.extend_from_slice(server_msg);

        let p = Phase2 {
            xy: &xy,
            xb: &self.xb,
            id: &self.my_id,
            b: &self.my_key,
            x: &self.client_key,
            y: &y_pub,
            msg_mac: &self.msg_mac,
            verification,
        };
        let (key_seed, verify) = p.seeds();
        let (enc_key, stream) = final_stream(&key_seed);
        aes256_ctr(&enc_key, &mut reply[64..]);
        let auth = p.auth(&verify, &reply[64..]);
        reply[32..64].copy_from_slice(&auth);
        Ok((reply, stream))
    }
}

/// Relay side of ntor-v3 for circuits: verifies the onionskin, hands the client's decoded
/// extensions to `negotiate` (e.g. a closure calling [`negotiate_circ_params`]), and
/// replies with the extensions it returns. Returns the CREATED2 HDATA, tor1 keys and
/// whatever `negotiate` decided.
///
/// The keys are tor1's; a caller that may negotiate CGO uses [`server_handshake_circ`].
///
/// [`negotiate_circ_params`]: super::negotiate_circ_params
pub fn server_handshake<R, T, F>(
    rng: &mut R,
    keys: &NtorKeyMap,
    my_id: &Ed25519Identity,
    onionskin: &[u8],
    negotiate: F,
) -> Result<(Vec<u8>, Tor1KeyMaterial, T), HandshakeError>
where
    R: RngCore + CryptoRng,
    F: FnOnce(&[CircuitExtension]) -> Result<(Vec<CircuitExtension>, T), NegotiationError>,
{
    let (state, mut client_msg) = server_part1(keys, my_id, onionskin, NTOR3_CIRC_VERIFICATION)?;
    let client_exts = decode_extensions(&client_msg);
    client_msg.zeroize();
    let (reply_exts, decided) = negotiate(&client_exts?)?;
    let mut reply_msg = Vec::with_capacity(8);
    encode_extensions(&reply_exts, &mut reply_msg)?;
    let (reply, mut stream) = state.finish(rng, NTOR3_CIRC_VERIFICATION, &reply_msg)?;
    Ok((reply, tor1_keys_from_stream(&mut stream), decided))
}

/// The relay keys a circuit handshake produced: tor1's, or CGO's when the client asked for
/// it (tor-spec §"Relay cryptography": the algorithm decides how much key stream is read).
#[derive(Debug)]
pub enum CircuitKeys {
    /// `Df | Db | Kf | Kb | KH`.
    Tor1(Tor1KeyMaterial),
    /// CGO with AES-128: two `J | S | N` of 80 bytes, then KH (C tor `relay_crypto_init`).
    Cgo(Box<CgoKeyMaterial>),
}

impl CircuitKeys {
    /// KH, the 20 bytes after the relay keys (C tor's `rend_circ_nonce`), whichever
    /// algorithm the circuit uses: rend-spec-v3 binds ESTABLISH_INTRO to it.
    pub fn kh(&self) -> &[u8; 20] {
        match self {
            CircuitKeys::Tor1(k) => &k.kh,
            CircuitKeys::Cgo(k) => &k.kh,
        }
    }
}

/// [`server_handshake`] for a circuit whose extensions `negotiate` decides as
/// [`negotiate_circ_params`] does: the key stream is read as CGO keys when CGO was
/// negotiated, as tor1 keys otherwise.
///
/// [`negotiate_circ_params`]: super::negotiate_circ_params
pub fn server_handshake_circ<R, F>(
    rng: &mut R,
    keys: &NtorKeyMap,
    my_id: &Ed25519Identity,
    onionskin: &[u8],
    negotiate: F,
) -> Result<(Vec<u8>, CircuitKeys, NegotiatedCircParams), HandshakeError>
where
    R: RngCore + CryptoRng,
    F: FnOnce(
        &[CircuitExtension],
    ) -> Result<(Vec<CircuitExtension>, NegotiatedCircParams), NegotiationError>,
{
    let (state, mut client_msg) = server_part1(keys, my_id, onionskin, NTOR3_CIRC_VERIFICATION)?;
    let client_exts = decode_extensions(&client_msg);
    client_msg.zeroize();
    let (reply_exts, params) = negotiate(&client_exts?)?;
    let mut reply_msg = Vec::with_capacity(8);
    encode_extensions(&reply_exts, &mut reply_msg)?;
    let (reply, mut stream) = state.finish(rng, NTOR3_CIRC_VERIFICATION, &reply_msg)?;
    let keys = if params.cgo {
        CircuitKeys::Cgo(Box::new(CgoKeyMaterial::from_stream(&mut stream)))
    } else {
        CircuitKeys::Tor1(tor1_keys_from_stream(&mut stream))
    };
    Ok((reply, keys, params))
}

/// Client side of ntor-v3: the state kept between sending CREATE2 and receiving CREATED2.
pub struct NtorV3Client {
    x: StaticSecret,
    x_pub: PublicKey,
    relay_id: Ed25519Identity,
    relay_key: PublicKey,
    bx: Zeroizing<[u8; 32]>,
    msg_mac: [u8; 32],
}

impl std::fmt::Debug for NtorV3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorV3Client")
            .field("relay_id", &self.relay_id)
            .finish_non_exhaustive()
    }
}

impl NtorV3Client {
    /// Starts a circuit handshake asking for `exts`; returns the state and the onionskin.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        relay_id: &Ed25519Identity,
        relay_ntor_key: &PublicKey,
        exts: &[CircuitExtension],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut msg = Vec::new();
        encode_extensions(exts, &mut msg)?;
        Self::start_with_message(rng, relay_id, relay_ntor_key, NTOR3_CIRC_VERIFICATION, &msg)
    }

    /// Starts a handshake carrying an arbitrary `message` under `verification`.
    pub fn start_with_message<R: RngCore + CryptoRng>(
        rng: &mut R,
        relay_id: &Ed25519Identity,
        relay_ntor_key: &PublicKey,
        verification: &[u8],
        message: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_with(
            StaticSecret::random_from_rng(rng),
            relay_id,
            relay_ntor_key,
            verification,
            message,
        )
    }

    fn start_with(
        x: StaticSecret,
        relay_id: &Ed25519Identity,
        relay_key: &PublicKey,
        verification: &[u8],
        message: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let x_pub = PublicKey::from(&x);
        let shared = x.diffie_hellman(relay_key);
        if !shared.was_contributory() {
            return Err(HandshakeError::ZeroSharedSecret);
        }
        let bx = Zeroizing::new(*shared.as_bytes());
        let (enc_key, mac_key) = phase1_keys(&bx, relay_id, &x_pub, relay_key, verification);

        let mut skin = Vec::with_capacity(NTOR3_MIN_ONIONSKIN_LEN + message.len());
        skin.extend_from_slice(&relay_id.0);
        skin.extend_from_slice(relay_key.as_bytes());
        skin.extend_from_slice(x_pub.as_bytes());
        skin.extend_from_slice(message);
        aes256_ctr(&enc_key, &mut skin[96..]);
        let mac = msg_mac(&mac_key, relay_id, relay_key, &x_pub, &skin[96..]);
        skin.extend_from_slice(&mac);
        let state = Self {
            x,
            x_pub,
            relay_id: *relay_id,
            relay_key: *relay_key,
            bx,
            msg_mac: mac,
        };
        Ok((state, skin))
    }

    /// Checks the relay's reply; returns tor1 keys and the relay's extensions.
    pub fn finish(
        self,
        reply: &[u8],
    ) -> Result<(Tor1KeyMaterial, Vec<CircuitExtension>), HandshakeError> {
        let (mut msg, mut stream) = self.finish_with_message(reply, NTOR3_CIRC_VERIFICATION)?;
        let exts = decode_extensions(&msg);
        msg.zeroize();
        Ok((tor1_keys_from_stream(&mut stream), exts?))
    }

    /// [`NtorV3Client::finish`] for a client that asked for CGO when `cgo` (the relay's
    /// reply does not confirm it: a relay that cannot do CGO fails the handshake instead).
    pub fn finish_circ(
        self,
        reply: &[u8],
        cgo: bool,
    ) -> Result<(CircuitKeys, Vec<CircuitExtension>), HandshakeError> {
        let (mut msg, mut stream) = self.finish_with_message(reply, NTOR3_CIRC_VERIFICATION)?;
        let exts = decode_extensions(&msg);
        msg.zeroize();
        let keys = if cgo {
            CircuitKeys::Cgo(Box::new(CgoKeyMaterial::from_stream(&mut stream)))
        } else {
            CircuitKeys::Tor1(tor1_keys_from_stream(&mut stream))
        };
        Ok((keys, exts?))
    }

    /// Checks the relay's reply (AUTH in constant time); returns its decrypted message and
    /// the key stream.
    pub fn finish_with_message(
        self,
        reply: &[u8],
        verification: &[u8],
    ) -> Result<(Vec<u8>, ShakeReader), HandshakeError> {
        if reply.len() < NTOR3_MIN_REPLY_LEN {
            return Err(HandshakeError::ReplyLength {
                handshake: "ntor-v3",
                expected: NTOR3_MIN_REPLY_LEN,
                got: reply.len(),
            });
        }
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let y = PublicKey::from(y);
        let (auth_candidate, enc_msg) = reply[32..].split_at(32);

        let shared = self.x.diffie_hellman(&y);
        let contributory = shared.was_contributory();
        let p = Phase2 {
            xy: shared.as_bytes(),
            xb: &self.bx,
            id: &self.relay_id,
            b: &self.relay_key,
            x: &self.x_pub,
            y: &y,
            msg_mac: &self.msg_mac,
            verification,
        };
        let (key_seed, verify) = p.seeds();
        let auth = p.auth(&verify, enc_msg);
        let (enc_key, stream) = final_stream(&key_seed);
        let auth_ok = bool::from(auth.ct_eq(auth_candidate));
        if !contributory {
            return Err(HandshakeError::ZeroSharedSecret);
        }
        if !auth_ok {
            return Err(HandshakeError::BadAuth);
        }
        let mut msg = enc_msg.to_vec();
        aes256_ctr(&enc_key, &mut msg);
        Ok((msg, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::handshake::{
        negotiate_circ_params, NegotiatedCircParams, NtorKeyPair, NtorV3ServerPolicy,
    };
    use crate::util::hex;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().expect("32 bytes")
    }
    fn key_bytes(k: &Tor1KeyMaterial) -> Vec<u8> {
        [&k.df[..], &k.db[..], &k.kf[..], &k.kb[..], &k.kh[..]].concat()
    }

    /// Vector from C tor's `test_ntor_v3.c` (`test_ntor3_testvecs`), also used by arti.
    #[test]
    fn published_vector() {
        let b = NtorKeyPair::from_secret_bytes(h32(
            "4051daa5921cfa2a1c27b08451324919538e79e788a81b38cbed097a5dff454a",
        ));
        assert_eq!(
            b.public().as_bytes(),
            &h32("f8307a2bc1870b00b828bb74dbb8fd88e632a6375ab3bcd1ae706aaa8b6cdd1d")
        );
        let id = Ed25519Identity(h32(
            "9fad2af287ef942632833d21f946c6260c33fae6172b60006e86e4a6911753a2",
        ));
        let x = StaticSecret::from(h32(
            "b825a3719147bcbe5fb1d0b0fcb9c09e51948048e2e3283d2ab7b45b5ef38b49",
        ));
        let y = StaticSecret::from(h32(
            "4865a5b7689dafd978f529291c7171bc159be076b92186405d13220b80e2a053",
        ));
        let client_message = h("68656c6c6f20776f726c64");
        let verification = h("78797a7a79");
        let server_message = h("486f6c61204d756e646f");
        let expect_skin = h("9fad2af287ef942632833d21f946c6260c33fae6172b60006e86e4a6911753a2\
             f8307a2bc1870b00b828bb74dbb8fd88e632a6375ab3bcd1ae706aaa8b6cdd1d\
             252fe9ae91264c91d4ecb8501f79d0387e34ad8ca0f7c995184f7d11d5da4f46\
             3bebd9151fd3b47c180abc9e044d53565f04d82bbb3bebed3d06cea65db8be9c72b68cd461942088502f67");
        let expect_reply = h(
            "4bf4814326fdab45ad5184f5518bd7fae25dc59374062698201a50a22954246d\
             2fc5f8773ca824542bc6cf6f57c7c29bbf4e5476461ab130c5b18ab0a9127665\
             1202c3e1e87c0d32054c",
        );
        let expect_keys = h("9c19b631fd94ed86a817e01f6c80b0743a43f5faebd39cfaa8b00f\
             a8bcc65c3bfeaa403d91acbd68a821bf6ee8504602b094a254392a07737d5662768\
             c7a9fb1b2814bb34780eaee6e867c773e28c212ead563e98a1cd5d5b4576f5ee61c\
             59bde025ff2851bb19b721421694f263818e3531e43a9e4e3e2c661e2ad547d8984\
             caa28ebecd3e4525452299be26b9185a20a90ce1eac20a91f2832d731b54502b097\
             49b5a2a2949292f8cfcbeffb790c7790ed935a9d251e7e336148ea83b063a5618fc\
             ff674a44581585fd22077ca0e52c59a24347a38d1a1ceebddbf238541f226b8f88d\
             0fb9c07a1bcd2ea764bbbb5dacdaf5312a14c0b9e4f06309b0333b4a");

        let (client, skin) =
            NtorV3Client::start_with(x, &id, b.public(), &verification, &client_message).unwrap();
        assert_eq!(skin, expect_skin);

        let map = NtorKeyMap::new(b, None);
        let (state, cm) = server_part1(&map, &id, &skin, &verification).unwrap();
        assert_eq!(cm, client_message);
        let (reply, mut s_stream) = state
            .finish_with(y, &verification, &server_message)
            .unwrap();
        assert_eq!(reply, expect_reply);
        let mut s_keys = [0u8; 256];
        s_stream.read(&mut s_keys);
        assert_eq!(s_keys.to_vec(), expect_keys);

        let (sm, mut c_stream) = client.finish_with_message(&reply, &verification).unwrap();
        assert_eq!(sm, server_message);
        let c_tor1 = tor1_keys_from_stream(&mut c_stream);
        // tor1 keys are the first 92 bytes of the stream, in Df|Db|Kf|Kb|KH order.
        assert_eq!(key_bytes(&c_tor1), expect_keys[..92]);
    }

    fn setup() -> (rand::rngs::ThreadRng, NtorKeyMap, Ed25519Identity) {
        let mut rng = rand::thread_rng();
        let cur = NtorKeyPair::generate(&mut rng);
        let prev = NtorKeyPair::generate(&mut rng);
        (
            rng,
            NtorKeyMap::new(cur, Some(prev)),
            Ed25519Identity([0x17; 32]),
        )
    }

    fn policy_negotiate(
        policy: NtorV3ServerPolicy,
    ) -> impl FnOnce(
        &[CircuitExtension],
    ) -> Result<(Vec<CircuitExtension>, NegotiatedCircParams), NegotiationError> {
        move |exts| negotiate_circ_params(exts, &policy)
    }

    #[test]
    fn circuit_round_trip_with_cc() {
        let (mut rng, map, id) = setup();
        for key in [map.current().public(), map.previous().unwrap().public()] {
            let (client, skin) =
                NtorV3Client::start(&mut rng, &id, key, &[CircuitExtension::CcRequest]).unwrap();
            let (reply, s_keys, params) = server_handshake(
                &mut rng,
                &map,
                &id,
                &skin,
                policy_negotiate(NtorV3ServerPolicy::default()),
            )
            .unwrap();
            assert_eq!(
                params,
                NegotiatedCircParams {
                    cc: Some(31),
                    cgo: false
                }
            );
            let (c_keys, server_exts) = client.finish(&reply).unwrap();
            assert_eq!(
                server_exts,
                vec![CircuitExtension::CcResponse { sendme_inc: 31 }]
            );
            assert_eq!(key_bytes(&c_keys), key_bytes(&s_keys));
        }
    }

    #[test]
    fn circuit_round_trip_with_cgo() {
        let (mut rng, map, id) = setup();
        let cgo = CircuitExtension::SubprotoRequest(vec![crate::crypto::handshake::SubprotoCap {
            protocol_id: 2,
            capability: 6,
        }]);
        let (client, skin) = NtorV3Client::start(
            &mut rng,
            &id,
            map.current().public(),
            &[CircuitExtension::CcRequest, cgo],
        )
        .unwrap();
        let policy = NtorV3ServerPolicy {
            cgo_supported: true,
            ..NtorV3ServerPolicy::default()
        };
        let (reply, s_keys, params) =
            server_handshake_circ(&mut rng, &map, &id, &skin, policy_negotiate(policy)).unwrap();
        assert!(params.cgo);
        let (c_keys, _) = client.finish_circ(&reply, true).unwrap();
        let (CircuitKeys::Cgo(s), CircuitKeys::Cgo(c)) = (s_keys, c_keys) else {
            panic!("CGO keys expected on both sides");
        };
        assert_eq!(s.forward, c.forward);
        assert_eq!(s.backward, c.backward);
        assert_eq!(s.kh, c.kh);
        assert_ne!(s.forward, s.backward);
    }

    #[test]
    fn circuit_round_trip_without_cc() {
        let (mut rng, map, id) = setup();
        let (client, skin) =
            NtorV3Client::start(&mut rng, &id, map.current().public(), &[]).unwrap();
        let (reply, s_keys, params) = server_handshake(
            &mut rng,
            &map,
            &id,
            &skin,
            policy_negotiate(NtorV3ServerPolicy::default()),
        )
        .unwrap();
        assert_eq!(params, NegotiatedCircParams::default());
        // Empty extension list: Y | AUTH | one encrypted count byte.
        assert_eq!(reply.len(), 65);
        let (c_keys, server_exts) = client.finish(&reply).unwrap();
        assert!(server_exts.is_empty());
        assert_eq!(key_bytes(&c_keys), key_bytes(&s_keys));
    }

    #[test]
    fn negotiation_refusal_fails_handshake() {
        let (mut rng, map, id) = setup();
        let cgo = CircuitExtension::SubprotoRequest(vec![crate::crypto::handshake::SubprotoCap {
            protocol_id: 2,
            capability: 6,
        }]);
        let (_, skin) = NtorV3Client::start(
            &mut rng,
            &id,
            map.current().public(),
            &[CircuitExtension::CcRequest, cgo],
        )
        .unwrap();
        let err = server_handshake(
            &mut rng,
            &map,
            &id,
            &skin,
            policy_negotiate(NtorV3ServerPolicy::default()),
        )
        .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Negotiation(NegotiationError::CgoUnsupported)
        );
    }

    #[test]
    fn undecodable_client_message_fails() {
        let (mut rng, map, id) = setup();
        // An authenticated but empty message has no extension count.
        let (_, skin) = NtorV3Client::start_with_message(
            &mut rng,
            &id,
            map.current().public(),
            NTOR3_CIRC_VERIFICATION,
            &[],
        )
        .unwrap();
        assert!(matches!(
            server_handshake(
                &mut rng,
                &map,
                &id,
                &skin,
                policy_negotiate(NtorV3ServerPolicy::default())
            ),
            Err(HandshakeError::Extensions(_))
        ));
    }

    #[test]
    fn server_rejections() {
        let (mut rng, map, id) = setup();
        let (_, skin) = NtorV3Client::start(
            &mut rng,
            &id,
            map.current().public(),
            &[CircuitExtension::CcRequest],
        )
        .unwrap();

        // Wrong identity, unknown key, other verification string.
        assert_eq!(
            server_part1(
                &map,
                &Ed25519Identity([0; 32]),
                &skin,
                NTOR3_CIRC_VERIFICATION
            )
            .unwrap_err(),
            HandshakeError::WrongNodeId
        );
        let stranger = NtorKeyPair::generate(&mut rng);
        let (_, skin2) = NtorV3Client::start(&mut rng, &id, stranger.public(), &[]).unwrap();
        assert_eq!(
            server_part1(&map, &id, &skin2, NTOR3_CIRC_VERIFICATION).unwrap_err(),
            HandshakeError::UnknownKeyId
        );
        assert_eq!(
            server_part1(&map, &id, &skin, b"something else").unwrap_err(),
            HandshakeError::BadMac
        );

        // Any flipped bit in X, the message or the MAC breaks the MAC.
        for byte in [64, 95, 96, skin.len() - 33, skin.len() - 1] {
            let mut bad = skin.clone();
            bad[byte] ^= 0x80;
            assert!(
                server_part1(&map, &id, &bad, NTOR3_CIRC_VERIFICATION).is_err(),
                "byte {byte}"
            );
        }
        // Truncations.
        for len in [0, 31, 96, 127] {
            assert!(matches!(
                server_part1(&map, &id, &skin[..len], NTOR3_CIRC_VERIFICATION),
                Err(HandshakeError::OnionskinLength { got, .. }) if got == len
            ));
        }
        // Dropping a byte of the message shifts the MAC: fails cleanly.
        assert_eq!(
            server_part1(&map, &id, &skin[..skin.len() - 1], NTOR3_CIRC_VERIFICATION).unwrap_err(),
            HandshakeError::BadMac
        );
        // A small-order X is refused.
        let mut zero_x = skin.clone();
        zero_x[64..96].fill(0);
        assert_eq!(
            server_part1(&map, &id, &zero_x, NTOR3_CIRC_VERIFICATION).unwrap_err(),
            HandshakeError::ZeroSharedSecret
        );
    }

    #[test]
    fn client_rejections() {
        let (mut rng, map, id) = setup();
        let negotiate = || policy_negotiate(NtorV3ServerPolicy::default());
        for byte in [0, 32, 63, 64] {
            let (client, skin) =
                NtorV3Client::start(&mut rng, &id, map.current().public(), &[]).unwrap();
            let (mut reply, _, _) =
                server_handshake(&mut rng, &map, &id, &skin, negotiate()).unwrap();
            reply[byte] ^= 1;
            assert!(client.finish(&reply).is_err(), "byte {byte}");
        }
        let (client, skin) =
            NtorV3Client::start(&mut rng, &id, map.current().public(), &[]).unwrap();
        let (reply, _, _) = server_handshake(&mut rng, &map, &id, &skin, negotiate()).unwrap();
        assert!(matches!(
            client.finish(&reply[..63]),
            Err(HandshakeError::ReplyLength { got: 63, .. })
        ));
        // A relay key of zero is refused before anything is sent.
        assert_eq!(
            NtorV3Client::start(&mut rng, &id, &PublicKey::from([0u8; 32]), &[]).unwrap_err(),
            HandshakeError::ZeroSharedSecret
        );
    }
}
