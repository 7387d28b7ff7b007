//! CREATE_FAST / CREATED_FAST (tor-spec §"CREATE_FAST/CREATED_FAST cells").
//!
//! Client sends X (20 random bytes); the relay answers `Y (20) | KH (20)`. Both compute
//! `K = KDF-TOR(X | Y)` = `KH | Df | Db | Kf | Kb` — note KH comes *first* here, unlike ntor.
//! No public-key crypto: only safe on a first hop, whose TLS link already authenticates
//! the relay. Never valid inside EXTEND2.

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::kdf::kdf_tor;
use super::HandshakeError;
use crate::crypto::keymat::Tor1KeyMaterial;

/// CREATE_FAST handshake data length (X).
pub const CREATE_FAST_LEN: usize = 20;
/// CREATED_FAST handshake data length (Y | KH).
pub const CREATED_FAST_LEN: usize = 40;

/// KDF-TOR(X | Y) rearranged from `KH | Df | Db | Kf | Kb` into [`Tor1KeyMaterial`].
fn derive(x: &[u8; 20], y: &[u8; 20]) -> Tor1KeyMaterial {
    let mut seed = Zeroizing::new([0u8; 40]);
    seed[..20].copy_from_slice(x);
    seed[20..].copy_from_slice(y);
    let mut k = Zeroizing::new([0u8; Tor1KeyMaterial::KDF_LEN]);
    // 92 bytes is far below KDF-TOR's 5120-byte limit.
    kdf_tor(&seed[..], &mut k[..]).expect("92 bytes is within KDF-TOR's range");
    // Move KH from the front to the back to get the Df | Db | Kf | Kb | KH layout.
    k.rotate_left(20);
    Tor1KeyMaterial::from_kdf_output(&k)
}

/// Relay side: answers the client's X with `Y | KH` and the circuit's key material.
pub fn create_fast_server<R: RngCore + CryptoRng>(
    rng: &mut R,
    x: &[u8; CREATE_FAST_LEN],
) -> ([u8; CREATED_FAST_LEN], Tor1KeyMaterial) {
    let mut y = [0u8; 20];
    rng.fill_bytes(&mut y);
    create_fast_server_with(x, y)
}

fn create_fast_server_with(
    x: &[u8; 20],
    mut y: [u8; 20],
) -> ([u8; CREATED_FAST_LEN], Tor1KeyMaterial) {
    let keys = derive(x, &y);
    let mut reply = [0u8; CREATED_FAST_LEN];
    reply[..20].copy_from_slice(&y);
    reply[20..].copy_from_slice(&keys.kh);
    y.zeroize();
    (reply, keys)
}

/// [`create_fast_server`] for handshake data of unchecked length (a CREATE_FAST payload
/// slice): anything but exactly 20 bytes is refused, as in C tor.
pub fn server_handshake<R: RngCore + CryptoRng>(
    rng: &mut R,
    onionskin: &[u8],
) -> Result<([u8; CREATED_FAST_LEN], Tor1KeyMaterial), HandshakeError> {
    let x: &[u8; CREATE_FAST_LEN] =
        onionskin
            .try_into()
            .map_err(|_| HandshakeError::OnionskinLength {
                handshake: "CREATE_FAST",
                expected: CREATE_FAST_LEN,
                got: onionskin.len(),
            })?;
    Ok(create_fast_server(rng, x))
}

/// Client side of CREATE_FAST: holds X until CREATED_FAST arrives.
pub struct CreateFastClient {
    x: Zeroizing<[u8; CREATE_FAST_LEN]>,
}

impl std::fmt::Debug for CreateFastClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateFastClient(..)")
    }
}

impl CreateFastClient {
    /// Picks X; returns the state and the 20 bytes to send in CREATE_FAST.
    pub fn start<R: RngCore + CryptoRng>(rng: &mut R) -> (Self, [u8; CREATE_FAST_LEN]) {
        let mut x = [0u8; CREATE_FAST_LEN];
        rng.fill_bytes(&mut x);
        (
            Self {
                x: Zeroizing::new(x),
            },
            x,
        )
    }

    /// Checks CREATED_FAST's KH (in constant time) and returns the key material.
    pub fn finish(self, reply: &[u8]) -> Result<Tor1KeyMaterial, HandshakeError> {
        let reply: &[u8; CREATED_FAST_LEN] =
            reply.try_into().map_err(|_| HandshakeError::ReplyLength {
                handshake: "CREATE_FAST",
                expected: CREATED_FAST_LEN,
                got: reply.len(),
            })?;
        let mut y = [0u8; 20];
        y.copy_from_slice(&reply[..20]);
        let keys = derive(&self.x, &y);
        if bool::from(keys.kh.ct_eq(&reply[20..])) {
            Ok(keys)
        } else {
            Err(HandshakeError::BadAuth)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::hex;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// CREATE_FAST vectors generated from C tor (as in arti's tor-proto `fast.rs` tests):
    /// X, Y | KH, and 100 bytes of KDF-TOR output after KH.
    #[test]
    fn published_vectors() {
        let cases = [
            (
                "080E247DF7C252FCD2DC10F459703480C223E3A6",
                "BA95C0D092335428BF80093BBED0B7A26C49E1E8696FBF9C8D6BE26504219C000D26AFE370FCEF04",
                "AFA89B4FC8CF882335A582C52478B5FCB1E08DAF707E2C2D23B8C27D30BD461F3DF98A3AF82221CB\
                 658AD0AA8680B99067E4F7DBC546970EA9A56B26433C71DA867BDD09C14A1308BC327D6A448D71D2\
                 382B3AB6AF0BB4E19649A8DFF607DB9C57A04AC3",
            ),
            (
                "5F786C724C2F5978474A04FA63772057AD896A03",
                "6210B037001405742FE78B6F5B34E6DB3C9F2F7E24239498613E0ED872E110A00774A3FCB37A7507",
                "D41B65D83FB4B34A322B658BE4D706EDCD8B62813757E719118C394E1F22E1C8EA8959BAB30E856A\
                 914C3054946F547397094DE031F5BCA384C65C8880BF7AAB9CE7BEE33971F9DE8C22A23366F46BF8\
                 B5E5112321E216B0E02C62EEA3ABB72A0E062592",
            ),
        ];
        for (x, reply, keys) in cases {
            let x: [u8; 20] = h(x).try_into().unwrap();
            let reply = h(reply);
            let keys = h(keys);
            let y: [u8; 20] = reply[..20].try_into().unwrap();

            let (out, s) = create_fast_server_with(&x, y);
            assert_eq!(out.to_vec(), reply);
            let flat = [&s.df[..], &s.db[..], &s.kf[..], &s.kb[..]].concat();
            assert_eq!(flat, keys[..72]);
            assert_eq!(s.kh.to_vec(), reply[20..]);

            let c = CreateFastClient {
                x: Zeroizing::new(x),
            }
            .finish(&reply)
            .unwrap();
            assert_eq!(
                (c.df, c.db, c.kf, c.kb, c.kh),
                (s.df, s.db, s.kf, s.kb, s.kh)
            );
        }
    }

    #[test]
    fn round_trip_and_failures() {
        let mut rng = rand::thread_rng();
        let (client, x) = CreateFastClient::start(&mut rng);
        let (reply, s) = server_handshake(&mut rng, &x).unwrap();
        let c = client.finish(&reply).unwrap();
        assert_eq!((c.df, c.kb, c.kh), (s.df, s.kb, s.kh));

        for byte in [0, 19, 20, 39] {
            let (client, x) = CreateFastClient::start(&mut rng);
            let (mut reply, _) = create_fast_server(&mut rng, &x);
            reply[byte] ^= 0x10;
            assert_eq!(client.finish(&reply).unwrap_err(), HandshakeError::BadAuth);
        }

        for len in [0, 19, 21] {
            assert!(matches!(
                server_handshake(&mut rng, &vec![0; len]),
                Err(HandshakeError::OnionskinLength { got, .. }) if got == len
            ));
        }
        let (client, _) = CreateFastClient::start(&mut rng);
        assert!(matches!(
            client.finish(&[0; 39]),
            Err(HandshakeError::ReplyLength { got: 39, .. })
        ));
    }
}
