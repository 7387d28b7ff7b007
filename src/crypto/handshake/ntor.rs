//! The ntor handshake, CREATE2 HTYPE 2 (tor-spec §"The ntor handshake", proposal 216).
//!
//! Client → relay: `NODEID (20) | KEYID (32) | X (32)`; relay → client: `Y (32) | AUTH (32)`.
//!
//! ```text
//! secret_input = EXP(X,y) | EXP(X,b) | ID | B | X | Y | PROTOID
//! verify       = H(secret_input, t_verify)
//! auth_input   = verify | ID | B | Y | X | PROTOID | "Server"
//! AUTH         = H(auth_input, t_mac)             H(x, t) = HMAC-SHA256(key = t, msg = x)
//! keys         = KDF-RFC5869(secret_input, salt = t_key, info = m_expand)
//!              = Df | Db | Kf | Kb | KH
//! ```

use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::hkdf_sha256;
use super::x25519::PeerPoint;
use super::{HandshakeError, NtorKeyMap};
use crate::crypto::ids::RsaIdentity;
use crate::crypto::keymat::Tor1KeyMaterial;

/// Length of the client's onionskin (`NODEID | KEYID | X`).
pub const NTOR_ONIONSKIN_LEN: usize = 20 + 32 + 32;
/// Length of the relay's reply (`Y | AUTH`).
pub const NTOR_REPLY_LEN: usize = 32 + 32;

const PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:verify";
const M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";
const SERVER_STR: &[u8] = b"Server";

const SECRET_INPUT_LEN: usize = 32 * 2 + 20 + 32 * 3 + PROTOID.len();
const AUTH_INPUT_LEN: usize = 32 + 20 + 32 * 3 + PROTOID.len() + SERVER_STR.len();

/// `H(x, t)`: HMAC-SHA256 keyed with the tweak.
fn h_tweak(msg: &[u8], tweak: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(tweak).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The transcript values both sides agree on; `xy` and `xb` are the two DH outputs.
struct Transcript<'a> {
    xy: &'a [u8; 32],
    xb: &'a [u8; 32],
    id: &'a RsaIdentity,
    b: &'a PublicKey,
    x: &'a PublicKey,
    y: &'a PublicKey,
}

impl Transcript<'_> {
    /// Returns (AUTH, key material).
    fn derive(&self) -> Result<([u8; 32], Tor1KeyMaterial), HandshakeError> {
        let mut si = Zeroizing::new([0u8; SECRET_INPUT_LEN]);
        let parts: [&[u8]; 7] = [
            self.xy,
            self.xb,
            &self.id.0,
            self.b.as_bytes(),
            self.x.as_bytes(),
            self.y.as_bytes(),
            PROTOID,
        ];
        fill(&mut si[..], &parts);

        let verify = Zeroizing::new(h_tweak(&si[..], T_VERIFY));
        let mut ai = Zeroizing::new([0u8; AUTH_INPUT_LEN]);
        let parts: [&[u8]; 7] = [
            &verify[..],
            &self.id.0,
            self.b.as_bytes(),
            self.y.as_bytes(),
            self.x.as_bytes(),
            PROTOID,
            SERVER_STR,
        ];
        fill(&mut ai[..], &parts);
        let auth = h_tweak(&ai[..], T_MAC);

        let mut k = Zeroizing::new([0u8; Tor1KeyMaterial::KDF_LEN]);
        hkdf_sha256(&si[..], T_KEY, M_EXPAND, &mut k[..])?;
        Ok((auth, Tor1KeyMaterial::from_kdf_output(&k)))
    }
}

/// Concatenates `parts` into `out`, whose length is their total (fixed by the constants above).
fn fill(out: &mut [u8], parts: &[&[u8]]) {
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, out.len());
}

/// The fields of a client's ntor onionskin.
struct Onionskin {
    node_id: [u8; 20],
    key_id: [u8; 32],
    x: [u8; 32],
}

/// Splits an onionskin into NODEID, KEYID, X. The length must be exactly 84, as C tor's
/// `check_create_cell` demands of an ntor CREATE2 HLEN.
fn parse_onionskin(onionskin: &[u8]) -> Result<Onionskin, HandshakeError> {
    let skin: &[u8; NTOR_ONIONSKIN_LEN] =
        onionskin
            .try_into()
            .map_err(|_| HandshakeError::OnionskinLength {
                handshake: "ntor",
                expected: NTOR_ONIONSKIN_LEN,
                got: onionskin.len(),
            })?;
    let mut s = Onionskin {
        node_id: [0; 20],
        key_id: [0; 32],
        x: [0; 32],
    };
    s.node_id.copy_from_slice(&skin[..20]);
    s.key_id.copy_from_slice(&skin[20..52]);
    s.x.copy_from_slice(&skin[52..]);
    Ok(s)
}

/// Relay side of ntor: answers `onionskin` with `Y | AUTH` and the circuit's key material.
///
/// An onionskin for another NODEID, or naming a KEYID we do not hold, fails at once. C tor
/// instead finishes with a junk key so the client's AUTH check fails; we refuse plainly
/// because KEYIDs are public (published in our descriptors), so early failure reveals nothing
/// an observer could not already know, and it spares the curve25519 work.
pub fn server_handshake<R: RngCore + CryptoRng>(
    rng: &mut R,
    keys: &NtorKeyMap,
    my_id: &RsaIdentity,
    onionskin: &[u8],
) -> Result<([u8; NTOR_REPLY_LEN], Tor1KeyMaterial), HandshakeError> {
    server_handshake_with(
        || StaticSecret::random_from_rng(rng),
        keys,
        my_id,
        onionskin,
    )
}

/// [`server_handshake`] with the ephemeral `y` supplied (lets tests replay vectors); `make_y`
/// runs only once the onionskin has been checked.
fn server_handshake_with(
    make_y: impl FnOnce() -> StaticSecret,
    keys: &NtorKeyMap,
    my_id: &RsaIdentity,
    onionskin: &[u8],
) -> Result<([u8; NTOR_REPLY_LEN], Tor1KeyMaterial), HandshakeError> {
    let Onionskin { node_id, key_id, x } = parse_onionskin(onionskin)?;
    if !bool::from(node_id.ct_eq(&my_id.0)) {
        return Err(HandshakeError::WrongNodeId);
    }
    let keypair = keys.lookup(&key_id).ok_or(HandshakeError::UnknownKeyId)?;
    let x = PublicKey::from(x);
    let peer = PeerPoint::new(&x);

    let y = make_y();
    let y_pub = PublicKey::from(&y);
    // A small-order X makes the outputs zero; refuse (tor-spec: check for the all-zero
    // output). Both products are computed before looking at either.
    let xy = peer.diffie_hellman(&y);
    let xb = peer.diffie_hellman(keypair.secret());
    let (Some(xy), Some(xb)) = (xy, xb) else {
        return Err(HandshakeError::ZeroSharedSecret);
    };
    let (auth, key_material) = Transcript {
        xy: &xy,
        xb: &xb,
        id: my_id,
        b: keypair.public(),
        x: &x,
        y: &y_pub,
    }
    .derive()?;
    let mut reply = [0u8; NTOR_REPLY_LEN];
    reply[..32].copy_from_slice(y_pub.as_bytes());
    reply[32..].copy_from_slice(&auth);
    Ok((reply, key_material))
}

/// Client side of ntor: the state kept between sending CREATE2 and receiving CREATED2.
pub struct NtorClient {
    x: StaticSecret,
    x_pub: PublicKey,
    relay_id: RsaIdentity,
    relay_key: PublicKey,
}

impl NtorClient {
    /// Starts a handshake with the relay `relay_id` whose ntor onion key is `relay_ntor_key`;
    /// returns the state and the 84-byte onionskin to put in CREATE2.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        relay_id: &RsaIdentity,
        relay_ntor_key: &PublicKey,
    ) -> (Self, [u8; NTOR_ONIONSKIN_LEN]) {
        Self::start_with(StaticSecret::random_from_rng(rng), relay_id, relay_ntor_key)
    }

    fn start_with(
        x: StaticSecret,
        relay_id: &RsaIdentity,
        relay_ntor_key: &PublicKey,
    ) -> (Self, [u8; NTOR_ONIONSKIN_LEN]) {
        let x_pub = PublicKey::from(&x);
        let mut skin = [0u8; NTOR_ONIONSKIN_LEN];
        fill(
            &mut skin,
            &[&relay_id.0, relay_ntor_key.as_bytes(), x_pub.as_bytes()],
        );
        (
            Self {
                x,
                x_pub,
                relay_id: *relay_id,
                relay_key: *relay_ntor_key,
            },
            skin,
        )
    }

    /// Checks the relay's `Y | AUTH` (in constant time) and returns the key material.
    /// Like C tor, a longer reply is accepted and the excess ignored.
    pub fn finish(self, reply: &[u8]) -> Result<Tor1KeyMaterial, HandshakeError> {
        let reply = reply
            .get(..NTOR_REPLY_LEN)
            .ok_or(HandshakeError::ReplyLength {
                handshake: "ntor",
                expected: NTOR_REPLY_LEN,
                got: reply.len(),
            })?;
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let y = PublicKey::from(y);
        let auth_candidate = &reply[32..];

        let xy = self.x.diffie_hellman(&y);
        let xb = self.x.diffie_hellman(&self.relay_key);
        let contributory = xy.was_contributory() & xb.was_contributory();
        let (auth, key_material) = Transcript {
            xy: xy.as_bytes(),
            xb: xb.as_bytes(),
            id: &self.relay_id,
            b: &self.relay_key,
            x: &self.x_pub,
            y: &y,
        }
        .derive()?;
        let auth_ok = bool::from(auth.ct_eq(auth_candidate));
        if !contributory {
            return Err(HandshakeError::ZeroSharedSecret);
        }
        if !auth_ok {
            return Err(HandshakeError::BadAuth);
        }
        Ok(key_material)
    }
}

impl std::fmt::Debug for NtorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorClient")
            .field("relay_id", &self.relay_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::handshake::NtorKeyPair;
    use crate::util::hex;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).expect("hex").try_into().expect("length")
    }

    fn key_bytes(k: &Tor1KeyMaterial) -> Vec<u8> {
        [&k.df[..], &k.db[..], &k.kf[..], &k.kb[..], &k.kh[..]].concat()
    }

    // Vector from C tor's ntor_ref.py, as used in arti's tor-proto ntor tests.
    #[test]
    fn published_vector() {
        let b_sk: [u8; 32] = h("4820544f4c4420594f5520444f474954204b454550532048415050454e494e47");
        let b_pk: [u8; 32] = h("ccbc8541904d18af08753eae967874749e6149f873de937f57f8fd903a21c471");
        let x_sk: [u8; 32] = h("706f6461792069207075742e2e2e2e2e2e2e2e4a454c4c59206f6e2074686973");
        let x_pk: [u8; 32] = h("e65dfdbef8b2635837fe2cebc086a8096eae3213e6830dc407516083d412b078");
        let y_sk: [u8; 32] = h("70686520737175697272656c2e2e2e2e2e2e2e2e686173206869732067616d65");
        let y_pk: [u8; 32] = h("390480a14362761d6aec1fea840f6e9e928fb2adb7b25c670be1045e35133a37");
        let id = RsaIdentity(h("69546f6c64596f7541626f75745374616972732e"));
        let client_skin: [u8; 84] = h("69546f6c64596f7541626f75745374616972732eccbc8541904d18af08753eae96787474\
             9e6149f873de937f57f8fd903a21c471e65dfdbef8b2635837fe2cebc086a8096eae3213e6830dc407516083d412b078");
        let server_reply: [u8; 64] = h(
            "390480a14362761d6aec1fea840f6e9e928fb2adb7b25c670be1045e35133a37\
             1cbdf68b89923e1f85e8e18ee6e805ea333fe4849c790ffd2670bd80fec95cc8",
        );
        let keys72: [u8; 72] = h(
            "0c62dee7f48893370d0ef896758d35729867beef1a5121df80e00f79ed349af3\
             9b51cae125719182f19d932a667dae1afbf2e336e6910e7822223e763afad0a13342157969dc6b79",
        );

        let relay = NtorKeyPair::from_secret_bytes(b_sk);
        assert_eq!(relay.public().as_bytes(), &b_pk);
        let map = NtorKeyMap::new(relay.clone(), None);

        let (client, skin) = NtorClient::start_with(StaticSecret::from(x_sk), &id, relay.public());
        assert_eq!(client.x_pub.as_bytes(), &x_pk);
        assert_eq!(skin, client_skin);

        let (reply, server_keys) =
            server_handshake_with(|| StaticSecret::from(y_sk), &map, &id, &skin).unwrap();
        assert_eq!(&reply[..32], &y_pk);
        assert_eq!(reply, server_reply);
        assert_eq!(&key_bytes(&server_keys)[..72], &keys72[..]);

        let client_keys = client.finish(&reply).unwrap();
        assert_eq!(key_bytes(&client_keys), key_bytes(&server_keys));
    }

    fn setup() -> (rand::rngs::ThreadRng, NtorKeyMap, RsaIdentity) {
        let mut rng = rand::thread_rng();
        let cur = NtorKeyPair::generate(&mut rng);
        let prev = NtorKeyPair::generate(&mut rng);
        (
            rng,
            NtorKeyMap::new(cur, Some(prev)),
            RsaIdentity([0x42; 20]),
        )
    }

    #[test]
    fn round_trip_current_and_previous_key() {
        let (mut rng, map, id) = setup();
        for key in [map.current().public(), map.previous().unwrap().public()] {
            let (client, skin) = NtorClient::start(&mut rng, &id, key);
            let (reply, s) = server_handshake(&mut rng, &map, &id, &skin).unwrap();
            let c = client.finish(&reply).unwrap();
            assert_eq!(key_bytes(&c), key_bytes(&s));
        }
    }

    #[test]
    fn unknown_key_and_wrong_node_rejected() {
        let (mut rng, map, id) = setup();
        let stranger = NtorKeyPair::generate(&mut rng);
        let (_, skin) = NtorClient::start(&mut rng, &id, stranger.public());
        assert_eq!(
            server_handshake(&mut rng, &map, &id, &skin).unwrap_err(),
            HandshakeError::UnknownKeyId
        );

        let (_, skin) = NtorClient::start(&mut rng, &RsaIdentity([1; 20]), map.current().public());
        assert_eq!(
            server_handshake(&mut rng, &map, &id, &skin).unwrap_err(),
            HandshakeError::WrongNodeId
        );

        // Without a previous key, a skin for the old key is refused.
        let only_current = NtorKeyMap::new(map.current().clone(), None);
        let (_, skin) = NtorClient::start(&mut rng, &id, map.previous().unwrap().public());
        assert_eq!(
            server_handshake(&mut rng, &only_current, &id, &skin).unwrap_err(),
            HandshakeError::UnknownKeyId
        );
    }

    #[test]
    fn truncated_inputs_rejected() {
        let (mut rng, map, id) = setup();
        let (client, skin) = NtorClient::start(&mut rng, &id, map.current().public());
        let long = [&skin[..], &[0]].concat();
        assert!(matches!(
            server_handshake(&mut rng, &map, &id, &long),
            Err(HandshakeError::OnionskinLength { got: 85, .. })
        ));
        for len in [0, 1, 20, 52, 83] {
            assert!(matches!(
                server_handshake(&mut rng, &map, &id, &skin[..len]),
                Err(HandshakeError::OnionskinLength { got, .. }) if got == len
            ));
        }
        let (reply, _) = server_handshake(&mut rng, &map, &id, &skin).unwrap();
        assert!(matches!(
            client.finish(&reply[..63]),
            Err(HandshakeError::ReplyLength { got: 63, .. })
        ));
    }

    #[test]
    fn tampered_reply_fails_auth() {
        let (mut rng, map, id) = setup();
        for byte in [0, 31, 32, 63] {
            let (client, skin) = NtorClient::start(&mut rng, &id, map.current().public());
            let (mut reply, _) = server_handshake(&mut rng, &map, &id, &skin).unwrap();
            reply[byte] ^= 0x01;
            assert!(client.finish(&reply).is_err(), "flipped byte {byte}");
        }
    }

    #[test]
    fn small_order_x_rejected() {
        let (mut rng, map, id) = setup();
        let mut skin = [0u8; NTOR_ONIONSKIN_LEN];
        skin[..20].copy_from_slice(&id.0);
        skin[20..52].copy_from_slice(map.current().public().as_bytes());
        // X = 0 (the identity, small order): every DH output is zero.
        assert_eq!(
            server_handshake(&mut rng, &map, &id, &skin).unwrap_err(),
            HandshakeError::ZeroSharedSecret
        );
    }
}
