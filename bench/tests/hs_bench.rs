//! `fors-hs-bench`'s cells against the relay's own parsers and verifier: a benchmark whose
//! ESTABLISH_INTRO a relay refused, or whose spliced cells nobody could read, would measure
//! nothing. Seeded (`FORS_TEST_SEED`), seed printed.

#[allow(dead_code)]
#[path = "../src/hsbench.rs"]
mod hsbench;

use ed25519_dalek::SigningKey;
use fors::cell::chan::Created2;
use fors::cell::relay::RelayCmd;
use fors::cell::{CircId, CELL_BODY_LEN};
use fors::crypto::handshake::{ntor, NtorKeyMap, NtorKeyPair};
use fors::crypto::ids::RsaIdentity;
use fors::proto::hs::cells::{EstablishIntro, Introduce1, Rendezvous1};
use fors::proto::hs::verify::{verify_establish_intro, VerifyError};
use fors_testkit::circuit::{ClientCircuit, ClientLayers, Handshake};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeded(test: &str) -> StdRng {
    StdRng::seed_from_u64(fors_testkit::test_seed(test))
}

/// The KH the tool keeps from its CREATE2 is the relay's (the ESTABLISH_INTRO MAC key), and
/// the ESTABLISH_INTRO it builds passes the relay's signature and MAC checks — and fails
/// them with another circuit's KH or a flipped signature bit.
#[test]
fn establish_intro_verifies_with_the_circuits_kh() {
    let mut rng = seeded("establish_intro_verifies_with_the_circuits_kh");
    let relay_keys = NtorKeyMap::new(NtorKeyPair::generate(&mut rng), None);
    let relay_id = RsaIdentity(rng.gen());
    let hs = Handshake::Ntor {
        rsa: relay_id,
        onion: *relay_keys.current().public(),
    };
    let (kept, create2) = hsbench::KeptHandshake::start(&mut rng, &hs).unwrap();
    let skin = fors::cell::chan::Create2::parse(&create2).unwrap();
    let (reply, relay_side) = ntor::server_handshake(&mut rng, &relay_keys, &relay_id, skin.hdata)
        .expect("the relay accepts the onionskin");
    let mut created2 = [0u8; CELL_BODY_LEN];
    Created2 { hdata: &reply }.encode(&mut created2).unwrap();
    let mut circ = ClientCircuit::new(CircId(0x8000_0001));
    let kh = kept.finish(&mut circ, &created2).unwrap();
    assert_eq!(kh, relay_side.kh);
    assert_eq!(circ.hops(), 1);

    let sk = SigningKey::from_bytes(&rng.gen());
    let body = hsbench::establish_intro(&sk, &kh).unwrap();
    let cell = EstablishIntro::parse(&body).unwrap();
    assert_eq!(cell.auth_key, sk.verifying_key().as_bytes());
    assert_eq!(cell.extensions.len(), 0);
    verify_establish_intro(&cell, &kh).expect("signature and MAC as the relay checks them");

    let mut other_kh = kh;
    other_kh[rng.gen_range(0..20)] ^= 1;
    assert_eq!(
        verify_establish_intro(&cell, &other_kh),
        Err(VerifyError::BadMac)
    );
    let mut bad = body.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40; // inside SIG
    let cell = EstablishIntro::parse(&bad).unwrap();
    assert!(verify_establish_intro(&cell, &kh).is_err());
}

#[test]
fn introduce1_and_rendezvous1_parse_as_the_relay_parses_them() {
    let mut rng = seeded("introduce1_and_rendezvous1_parse_as_the_relay_parses_them");
    let key: [u8; 32] = rng.gen();
    let body = hsbench::introduce1(&key, &mut rng).unwrap();
    let c = Introduce1::parse(&body).expect("a well-formed INTRODUCE1");
    assert_eq!(c.auth_key, &key);
    assert_eq!(c.encrypted.len(), hsbench::INTRO1_ENCRYPTED_LEN);
    assert_eq!(c.body, &body[..]);
    assert!(body.len() <= hsbench::RELAY_DATA_LEN);

    let cookie = hsbench::cookie(&mut rng);
    let mut info = [0u8; hsbench::REND_HANDSHAKE_INFO_LEN];
    rng.fill(&mut info[..]);
    let body = hsbench::rendezvous1(&cookie, &info).unwrap();
    let r = Rendezvous1::parse(&body).unwrap();
    assert_eq!(r.cookie, &cookie);
    assert_eq!(r.handshake_info, &info[..]);
}

/// The end-to-end hop: what one end originates there is recognized by the other end only,
/// with its payload intact, in both directions; a party without the keys does not
/// recognize it (so a rendezvous point must splice it, never consume it).
#[test]
fn e2e_hop_carries_cells_between_the_two_ends_only() {
    let mut rng = seeded("e2e_hop_carries_cells_between_the_two_ends_only");
    let (ck, sk) = hsbench::e2e_keys(&mut rng);
    let mut client = ClientCircuit::new(CircId(1));
    let mut service = ClientCircuit::new(CircId(2));
    let mut stranger = ClientCircuit::new(CircId(3));
    client.layers.push(&ck);
    service.layers.push(&sk);
    let (other, _) = hsbench::e2e_keys(&mut rng);
    stranger.layers.push(&other);
    let seed: u64 = rng.gen();
    for n in 0..20u64 {
        let p = hsbench::splice_payload(seed, n, hsbench::RELAY_DATA_LEN);
        let (from, to) = if n % 3 == 2 {
            (&mut service, &mut client)
        } else {
            (&mut client, &mut service)
        };
        let (mut body, _) = from
            .relay_cell_with(&mut rng, 0, RelayCmd::DROP, 0, hsbench::write_bytes(&p))
            .unwrap();
        let mut copy = body;
        assert!(stranger.open(&mut copy).is_err(), "cell {n}");
        let r = to.open(&mut body).unwrap();
        assert_eq!((r.hop, r.cmd), (0, RelayCmd::DROP), "cell {n}");
        assert_eq!(r.data, &p[..], "cell {n}");
    }
    // Payloads differ per cell: a reordered or misrouted cell does not pass the check.
    assert_ne!(
        hsbench::splice_payload(seed, 0, 64),
        hsbench::splice_payload(seed, 1, 64)
    );
}
