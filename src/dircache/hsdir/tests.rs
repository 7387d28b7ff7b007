//! HSDir cache tests with real descriptors: signed by the crate's own ed25519 and cert code
//! (the inner layers are opaque bytes, as an HSDir sees them), plus a descriptor from C
//! tor's unit tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::build::{build_outer, OuterSpec};
use super::cache::{max_cache_bytes, max_descriptor_size_from_param, ENTRY_OVERHEAD};
use super::http::{handle_fetch, handle_publish, FETCH_NOT_FOUND, FETCH_SINGLE_HOP};
use super::outer::{decode_outer, HsDescError, HS_DESC_MAX_LEN, SIG_PREFIX};
use super::*;
use crate::dir::netdoc::base64_nopad;
use crate::keys::cert::{CertKeyType, CertType, Ed25519Cert};
use crate::keys::{pem, Ed25519Keypair};

const T0: u64 = 1_780_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn rng(seed: u64) -> StdRng {
    eprintln!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// A service's keys for one time period.
struct Svc {
    blinded: Ed25519Keypair,
    signing: Ed25519Keypair,
}

impl Svc {
    fn new(rng: &mut StdRng) -> Svc {
        Svc {
            blinded: Ed25519Keypair::generate(rng),
            signing: Ed25519Keypair::generate(rng),
        }
    }

    fn key(&self) -> [u8; 32] {
        self.blinded.public().to_bytes()
    }

    fn desc(&self, rng: &mut StdRng, revision: u64, lifetime_minutes: u32, now: u64) -> String {
        let mut blob = vec![0u8; 2000 + rng.gen_range(0..1000)];
        rng.fill_bytes(&mut blob);
        build_outer(
            &OuterSpec {
                blinded: &self.blinded,
                signing: &self.signing,
                cert_lifetime_secs: 54 * 3600,
                lifetime_minutes,
                revision_counter: revision,
                superencrypted: &blob,
            },
            at(now),
        )
    }
}

/// A descriptor around a hand-made cert, signed by `signing`.
fn desc_with_cert(cert: &Ed25519Cert, signing: &Ed25519Keypair) -> String {
    let mut text = format!(
        "hs-descriptor 3\ndescriptor-lifetime 180\ndescriptor-signing-key-cert\n{}\
         revision-counter 1\nsuperencrypted\n{}",
        pem::encode("ED25519 CERT", cert.as_bytes()),
        pem::encode("MESSAGE", &[7u8; 100]),
    );
    let mut signed = SIG_PREFIX.to_vec();
    signed.extend_from_slice(text.as_bytes());
    text.push_str(&format!(
        "signature {}\n",
        base64_nopad(&signing.sign(&signed).to_bytes())
    ));
    text
}

fn cache() -> HsDirCache {
    HsDirCache::new(1 << 30, HS_DESC_MAX_LEN)
}

#[test]
fn store_then_fetch_by_base64_key() {
    let mut rng = rng(0x45d1);
    let svc = Svc::new(&mut rng);
    let text = svc.desc(&mut rng, 5, 180, T0);
    let outer = decode_outer(text.as_bytes(), HS_DESC_MAX_LEN, at(T0)).unwrap();
    assert_eq!(outer.blinded_key, svc.key());
    assert_eq!(outer.signing_key, svc.signing.public().to_bytes());
    assert_eq!(outer.revision_counter, 5);
    assert_eq!(outer.lifetime_secs, 180 * 60);

    let mut c = cache();
    assert_eq!(c.lookup(&svc.key()), None);
    c.publish(text.as_bytes(), at(T0)).unwrap();
    assert_eq!(&*c.lookup(&svc.key()).unwrap(), text.as_bytes());
    assert_eq!(c.len(), 1);
    assert!(c.total_bytes() > ENTRY_OVERHEAD + text.len() as u64);

    // Over HTTP: unpadded (as C tor clients send it) and padded keys both work.
    let b64 = base64_nopad(&svc.key());
    for k in [b64.clone(), format!("{b64}=")] {
        assert_eq!(&*handle_fetch(&c, &k, true).unwrap(), text.as_bytes());
    }
    assert_eq!(handle_fetch(&c, &b64, false), Err(FETCH_SINGLE_HOP));
    assert_eq!(
        handle_fetch(&c, &base64_nopad(&[1; 32]), true),
        Err(FETCH_NOT_FOUND)
    );
    assert_eq!(handle_fetch(&c, "not-a-key", true), Err(FETCH_NOT_FOUND));
    let k = c.counters();
    assert_eq!(k.stored, 1);
    assert_eq!(
        (k.fetch_hit, k.fetch_miss, k.single_hop_rejected),
        (3, 3, 1)
    );
}

#[test]
fn revision_must_increase() {
    let mut rng = rng(0x7e11);
    let svc = Svc::new(&mut rng);
    let mut c = cache();
    let d10 = svc.desc(&mut rng, 10, 180, T0);
    c.publish(d10.as_bytes(), at(T0)).unwrap();
    for rev in [10, 9, 0] {
        let d = svc.desc(&mut rng, rev, 180, T0);
        assert_eq!(
            c.publish(d.as_bytes(), at(T0)),
            Err(HsDirError::NotNewer {
                cached: 10,
                offered: rev
            })
        );
    }
    assert_eq!(&*c.lookup(&svc.key()).unwrap(), d10.as_bytes());
    let bytes_before = c.total_bytes();
    let d11 = svc.desc(&mut rng, 11, 180, T0);
    c.publish(d11.as_bytes(), at(T0)).unwrap();
    assert_eq!(&*c.lookup(&svc.key()).unwrap(), d11.as_bytes());
    assert_eq!(c.len(), 1);
    // The replaced entry's bytes were given back.
    assert!(c.total_bytes() < 2 * bytes_before);
    let k = c.counters();
    assert_eq!(k.stored, 2);
    assert_eq!(k.rejected[5], 3, "old_revision");
}

#[test]
fn size_limit_is_strict_and_follows_the_consensus_param() {
    let mut rng = rng(0x5123);
    let svc = Svc::new(&mut rng);
    let text = svc.desc(&mut rng, 1, 180, T0);
    let len = text.len() as u32;
    // C tor refuses `len >= HSV3MaxDescriptorSize`.
    let mut c = HsDirCache::new(1 << 30, len);
    assert!(matches!(
        c.publish(text.as_bytes(), at(T0)),
        Err(HsDirError::Descriptor(HsDescError::TooBig { .. }))
    ));
    assert_eq!(c.counters().rejected[0], 1, "too_big");
    c.set_limits(1 << 30, len + 1);
    c.publish(text.as_bytes(), at(T0)).unwrap();

    assert_eq!(max_descriptor_size_from_param(None), 50_000);
    assert_eq!(max_descriptor_size_from_param(Some(0)), 1);
    assert_eq!(max_descriptor_size_from_param(Some(-5)), 1);
    assert_eq!(
        max_descriptor_size_from_param(Some(1 << 40)),
        i32::MAX as u32
    );
    assert_eq!(max_descriptor_size_from_param(Some(70_000)), 70_000);
    // An over-50 kB descriptor is refused by default.
    let big = svc.desc(&mut rng, 2, 180, T0).replace(
        "superencrypted\n",
        &format!("x {}\nsuperencrypted\n", "a".repeat(50_000)),
    );
    assert!(matches!(
        decode_outer(big.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::TooBig { .. })
    ));
    assert_eq!(max_cache_bytes(0, 500), 100);
    assert_eq!(max_cache_bytes(7, 500), 7);
}

#[test]
fn bad_certs_are_refused() {
    let mut rng = rng(0xce27);
    let blinded = Ed25519Keypair::generate(&mut rng);
    let signing = Ed25519Keypair::generate(&mut rng);
    let now = at(T0);
    let cert = |signer: &Ed25519Keypair, ty: u8, include: bool| {
        Ed25519Cert::sign(
            signer,
            CertType(ty),
            CertKeyType::ED25519,
            signing.public().as_bytes(),
            now,
            3 * 3600,
            include,
        )
    };
    let good = desc_with_cert(&cert(&blinded, 8, true), &signing);
    decode_outer(good.as_bytes(), HS_DESC_MAX_LEN, now).unwrap();

    let wrong_type = desc_with_cert(&cert(&blinded, 4, true), &signing);
    assert_eq!(
        decode_outer(wrong_type.as_bytes(), HS_DESC_MAX_LEN, now),
        Err(HsDescError::CertType(4))
    );
    let no_key = desc_with_cert(&cert(&blinded, 8, false), &signing);
    assert_eq!(
        decode_outer(no_key.as_bytes(), HS_DESC_MAX_LEN, now),
        Err(HsDescError::CertNoSigningKey)
    );
    // A cert whose embedded key is not the one that signed it.
    let mut forged = cert(&blinded, 8, true).as_bytes().to_vec();
    let other = Ed25519Keypair::generate(&mut rng);
    forged[44..76].copy_from_slice(other.public().as_bytes());
    let forged = Ed25519Cert::parse(&forged).unwrap();
    let d = desc_with_cert(&forged, &signing);
    assert!(matches!(
        decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, now),
        Err(HsDescError::Cert(_))
    ));
    // Expired: valid at its expiry second, refused one second later.
    let c = cert(&blinded, 8, true);
    let d = desc_with_cert(&c, &signing);
    decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(c.expires_at_secs())).unwrap();
    assert_eq!(
        decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(c.expires_at_secs() + 1)),
        Err(HsDescError::CertExpired)
    );
    let mut cache = cache();
    assert!(cache.publish(d.as_bytes(), at(T0 + 86_400)).is_err());
    assert_eq!(cache.counters().rejected[3], 1, "cert_expired");
    assert!(cache.publish(wrong_type.as_bytes(), now).is_err());
    assert_eq!(cache.counters().rejected[2], 1, "bad_cert");
}

#[test]
fn bad_signatures_are_refused() {
    let mut rng = rng(0x5197);
    let svc = Svc::new(&mut rng);
    let text = svc.desc(&mut rng, 3, 180, T0);
    // Any change to the signed part breaks the signature.
    let changed = text.replace("revision-counter 3\n", "revision-counter 4\n");
    assert_eq!(
        decode_outer(changed.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::BadSignature)
    );
    // Signed by the blinded key instead of the certified signing key.
    let sig_at = text.find("signature ").unwrap();
    let mut signed = SIG_PREFIX.to_vec();
    signed.extend_from_slice(&text.as_bytes()[..sig_at]);
    let wrong_key = format!(
        "{}signature {}\n",
        &text[..sig_at],
        base64_nopad(&svc.blinded.sign(&signed).to_bytes())
    );
    assert_eq!(
        decode_outer(wrong_key.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::BadSignature)
    );
    // Without the prefix.
    let no_prefix = format!(
        "{}signature {}\n",
        &text[..sig_at],
        base64_nopad(&svc.signing.sign(&signed[SIG_PREFIX.len()..]).to_bytes())
    );
    assert_eq!(
        decode_outer(no_prefix.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::BadSignature)
    );
    // Signature of the wrong length.
    let short = format!("{}signature AAAA\n", &text[..sig_at]);
    assert_eq!(
        decode_outer(short.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::SignatureEncoding)
    );
    let mut c = cache();
    assert!(c.publish(changed.as_bytes(), at(T0)).is_err());
    assert_eq!(c.counters().rejected[4], 1, "bad_signature");
}

#[test]
fn c_tor_unit_test_descriptor() {
    // HS_DESC_BAD_SIG from C tor's src/test/test_hs_descriptor.inc: a descriptor C tor
    // generated, whose signature line starts with a space. C tor decodes it at
    // 1502661599 (cert valid, type 08, blinded key included) and refuses it only because
    // no "\nsignature " delimits the signed part (test_decode_bad_signature).
    let text = include_bytes!("testdata/ctor_hs_desc_bad_sig.txt");
    assert_eq!(
        decode_outer(text, HS_DESC_MAX_LEN, at(1_502_661_599)),
        Err(HsDescError::SignatureLine)
    );
    // Without that space it is a descriptor signed by C tor's own code, and Fors verifies
    // and stores it.
    let fixed = String::from_utf8(text.to_vec())
        .unwrap()
        .replace("\n signature ", "\nsignature ");
    let outer = decode_outer(fixed.as_bytes(), HS_DESC_MAX_LEN, at(1_502_661_599)).unwrap();
    assert_eq!(outer.revision_counter, 42);
    assert_eq!(outer.lifetime_secs, 180 * 60);
    assert_eq!(outer.cert_expires_at, 1_502_661_600);
    assert_eq!(outer.superencrypted_len, 10_048);
    let mut c = cache();
    let answer = handle_publish(
        &mut c,
        "/tor/hs/3/publish",
        fixed.as_bytes(),
        true,
        at(1_502_661_599),
    );
    assert_eq!(answer.status, 200);
    let key = base64_nopad(&outer.blinded_key);
    assert_eq!(&*handle_fetch(&c, &key, true).unwrap(), fixed.as_bytes());
    assert_eq!(
        decode_outer(fixed.as_bytes(), HS_DESC_MAX_LEN, at(1_502_661_601)),
        Err(HsDescError::CertExpired)
    );
    // Its cert has long expired: checked before the signature, as C tor does.
    assert_eq!(
        decode_outer(text, HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::CertExpired)
    );
    // The cert is the real thing: type 08 with the blinded key in its extension.
    let b64: String = std::str::from_utf8(text)
        .unwrap()
        .split("-----BEGIN ED25519 CERT-----\n")
        .nth(1)
        .unwrap()
        .split("-----END")
        .next()
        .unwrap()
        .replace('\n', "");
    let cert =
        Ed25519Cert::parse(&super::cstr::base64_decode(b64.as_bytes(), 200).unwrap()).unwrap();
    assert_eq!(cert.cert_type, CertType(8));
    cert.verify(None, Some(at(1_502_661_599))).unwrap();
}

#[test]
fn lifetime_expiry_and_clean() {
    let mut rng = rng(0x11fe);
    let svc = Svc::new(&mut rng);
    let other = Svc::new(&mut rng);
    let mut c = cache();
    c.publish(svc.desc(&mut rng, 1, 60, T0).as_bytes(), at(T0))
        .unwrap();
    c.publish(other.desc(&mut rng, 1, 720, T0).as_bytes(), at(T0))
        .unwrap();
    // Lives `descriptor-lifetime` from when it was stored; served until the sweep drops it,
    // as C tor does.
    assert_eq!(c.clean(at(T0 + 3599)), 0);
    assert!(c.lookup(&svc.key()).is_some());
    assert_eq!(c.len(), 2);
    let before = c.total_bytes();
    let freed = c.clean(at(T0 + 3600));
    assert!(freed > 0);
    assert_eq!(c.total_bytes(), before - freed);
    assert_eq!(c.len(), 1);
    assert!(c.lookup(&svc.key()).is_none());
    assert!(c.lookup(&other.key()).is_some());
    c.clean(at(T0 + 720 * 60));
    assert!(c.is_empty());
    assert_eq!(c.total_bytes(), 0);
    assert_eq!(c.counters().expired_entries, 2);
}

#[test]
fn lifetime_rules_match_c() {
    let mut rng = rng(0x1f0);
    let svc = Svc::new(&mut rng);
    for (minutes, ok) in [(720, true), (721, false), (0, true)] {
        let d = svc.desc(&mut rng, 1, minutes, T0);
        assert_eq!(
            decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(T0)).is_ok(),
            ok,
            "{minutes}"
        );
    }
    // 71582789 * 60 wraps to 44 in C's uint32_t: accepted with a 44-second lifetime there,
    // and so here.
    let d = svc.desc(&mut rng, 1, 71_582_789, T0);
    assert_eq!(
        decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(T0))
            .unwrap()
            .lifetime_secs,
        44
    );
    // C tor's "huge lifetime" case.
    let d = svc.desc(&mut rng, 1, 7_181_615, T0);
    assert_eq!(
        decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::Lifetime)
    );
}

#[test]
fn byte_bound_prunes_least_downloaded_first() {
    let mut rng = rng(0xb0b0);
    let svcs: Vec<Svc> = (0..12).map(|_| Svc::new(&mut rng)).collect();
    let descs: Vec<String> = svcs.iter().map(|s| s.desc(&mut rng, 1, 180, T0)).collect();
    let entry = |d: &String| {
        let o = decode_outer(d.as_bytes(), HS_DESC_MAX_LEN, at(T0)).unwrap();
        ENTRY_OVERHEAD + o.superencrypted_len as u64 + d.len() as u64
    };
    let first10: u64 = descs[..10].iter().map(entry).sum();
    // A bound below PRUNE_SPARE_ROOM: C tor prunes half of the cache.
    let bound = first10 - 1;
    let mut c = HsDirCache::new(bound, HS_DESC_MAX_LEN);
    for (i, d) in descs[..10].iter().enumerate() {
        c.publish(d.as_bytes(), at(T0 + i as u64)).unwrap();
    }
    // Stores do not prune until the cache is found above the bound.
    assert_eq!(c.len(), 10);
    assert!(c.total_bytes() > bound);
    // The oldest five are popular; the newer five never fetched.
    for s in &svcs[..5] {
        c.note_downloaded(&s.key());
    }
    c.note_downloaded(&svcs[0].key());
    c.publish(descs[10].as_bytes(), at(T0 + 20)).unwrap();
    let k = c.counters();
    assert!(k.evicted_entries >= 5, "{k:?}");
    // At least half was freed, then the new descriptor went in.
    assert!(c.total_bytes() <= first10 / 2 + entry(&descs[10]) + entry(&descs[9]));
    // The never-downloaded ones went first; every downloaded one and the new one stayed.
    for s in svcs[..5].iter().chain(std::iter::once(&svcs[10])) {
        assert!(c.lookup(&s.key()).is_some());
    }
    assert!(c.lookup(&svcs[5].key()).is_none());
    assert_eq!(
        k.evicted_bytes,
        first10 - (c.total_bytes() - entry(&descs[10]))
    );

    // The relay's memory-pressure path: the least downloaded of what is left goes first,
    // and the twice-downloaded one last.
    let freed = c.handle_oom(1);
    assert!(freed > 0);
    assert!(c.lookup(&svcs[0].key()).is_some());
    let all = c.handle_oom(u64::MAX);
    assert!(all > 0);
    assert!(c.is_empty());
    assert_eq!(c.total_bytes(), 0);
    assert_eq!(c.handle_oom(5), 0);
}

#[test]
fn download_count_survives_a_new_revision() {
    let mut rng = rng(0xd0c);
    let a = Svc::new(&mut rng);
    let b = Svc::new(&mut rng);
    let mut c = cache();
    c.publish(a.desc(&mut rng, 1, 180, T0).as_bytes(), at(T0))
        .unwrap();
    c.publish(b.desc(&mut rng, 1, 180, T0).as_bytes(), at(T0 + 1))
        .unwrap();
    c.note_downloaded(&a.key());
    c.publish(a.desc(&mut rng, 2, 180, T0).as_bytes(), at(T0 + 2))
        .unwrap();
    // `a` is newer but was downloaded: `b` goes first.
    c.handle_oom(1);
    assert!(c.lookup(&a.key()).is_some());
    assert!(c.lookup(&b.key()).is_none());
}

#[test]
fn publish_over_http() {
    let mut rng = rng(0x9057);
    let svc = Svc::new(&mut rng);
    let mut c = cache();
    let d1 = svc.desc(&mut rng, 1, 180, T0);
    let ok = handle_publish(&mut c, "/tor/hs/3/publish", d1.as_bytes(), true, at(T0));
    assert_eq!(
        (ok.status, ok.reason),
        (200, "HS descriptor stored successfully.")
    );
    let again = handle_publish(&mut c, "/tor/hs/3/publish", d1.as_bytes(), true, at(T0));
    assert_eq!(
        (again.status, again.reason),
        (400, "Invalid HS descriptor. Rejected.")
    );
    let d2 = svc.desc(&mut rng, 2, 180, T0);
    let single = handle_publish(&mut c, "/tor/hs/3/publish", d2.as_bytes(), false, at(T0));
    assert_eq!(
        (single.status, single.reason),
        (503, "Rejecting single hop HS descriptor post")
    );
    for (url, status) in [
        ("/tor/hs/2/publish", 400),
        ("/tor/hs/3/fetch", 400),
        ("/tor/hs/x/publish", 400),
        ("/tor/hs/-3/publish", 400),
        ("/tor/hs/99999999999/publish", 400),
        // C tor only checks that the command starts with "/publish" and reads the version
        // with strtol.
        ("/tor/hs/+3/publish", 200),
    ] {
        let d = svc.desc(&mut rng, 3 + status as u64, 180, T0);
        let a = handle_publish(&mut c, url, d.as_bytes(), true, at(T0));
        assert_eq!(a.status, status, "{url}");
    }
    let d = svc.desc(&mut rng, 1000, 180, T0);
    assert_eq!(
        handle_publish(&mut c, "/tor/hs/3/publishing", d.as_bytes(), true, at(T0)).status,
        200
    );
    // The body ends at its first NUL, as a C string.
    let d = svc.desc(&mut rng, 1001, 180, T0);
    let mut body = d.clone().into_bytes();
    body.extend_from_slice(b"\0trailing junk");
    assert_eq!(
        handle_publish(&mut c, "/tor/hs/3/publish", &body, true, at(T0)).status,
        200
    );
    assert_eq!(&*c.lookup(&svc.key()).unwrap(), d.as_bytes());
}

#[test]
fn malformed_descriptors_from_c_tests() {
    let mut rng = rng(0xba5e);
    let svc = Svc::new(&mut rng);
    let good = svc.desc(&mut rng, 42, 180, T0);
    let cases: Vec<(String, &str)> = vec![
        ("hs-descriptor 3\n".into(), "missing fields"),
        ("hs-descriptor 3\nJUNK".into(), "junk"),
        ("a".repeat(63_999), "max length"),
        (
            good.replace("hs-descriptor 3", "hs-descriptor unicorn"),
            "version",
        ),
        (
            good.replace("hs-descriptor 3", "hs-descriptor 2"),
            "version 2",
        ),
        (
            good.replace("descriptor-lifetime 180", "descriptor-lifetime unicorn"),
            "lifetime",
        ),
        (
            good.replace("revision-counter 42", "revision-counter unicorn"),
            "revision",
        ),
        (
            good.replace("BEGIN MESSAGE", "BEGIN UNICORN")
                .replace("END MESSAGE", "END UNICORN"),
            "section type",
        ),
        (
            good.replace(
                "superencrypted\n",
                "superencrypted\n-----BEGIN MESSAGE-----\nAAAA\n-----END MESSAGE-----\nx\n",
            ),
            "two objects",
        ),
        (format!("{good}revision-counter 43\n"), "signature not last"),
        (format!("x y\n{good}"), "hs-descriptor not first"),
        (
            good.replace(
                "descriptor-signing-key-cert\n",
                "descriptor-signing-key-cert\nrevision-counter 1\n",
            ),
            "cert without object",
        ),
        (
            good.replace("BEGIN ED25519 CERT", "BEGIN ED25519 KERT")
                .replace("END ED25519 CERT", "END ED25519 KERT"),
            "cert type",
        ),
    ];
    for (text, what) in &cases {
        let r = decode_outer(text.as_bytes(), HS_DESC_MAX_LEN, at(T0));
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // A short superencrypted blob (48 bytes or fewer).
    let short = build_outer(
        &OuterSpec {
            blinded: &svc.blinded,
            signing: &svc.signing,
            cert_lifetime_secs: 3600,
            lifetime_minutes: 180,
            revision_counter: 1,
            superencrypted: &[1; 48],
        },
        at(T0),
    );
    assert_eq!(
        decode_outer(short.as_bytes(), HS_DESC_MAX_LEN, at(T0)),
        Err(HsDescError::Superencrypted)
    );
    // Unknown keywords and comments are tolerated, as in C tor (the signature covers them).
    let sig_at = good.find("signature ").unwrap();
    let with_extra = format!("{}# note\nfuture-item a b\n", &good[..sig_at]);
    let mut signed = SIG_PREFIX.to_vec();
    signed.extend_from_slice(with_extra.as_bytes());
    let with_extra = format!(
        "{with_extra}signature {}\n",
        base64_nopad(&svc.signing.sign(&signed).to_bytes())
    );
    decode_outer(with_extra.as_bytes(), HS_DESC_MAX_LEN, at(T0)).unwrap();
}

#[test]
fn mutated_descriptors_never_panic() {
    let seed = 0x3117_5eed;
    let mut rng = rng(seed);
    let svc = Svc::new(&mut rng);
    let good = svc.desc(&mut rng, 1, 180, T0).into_bytes();
    let mut c = HsDirCache::new(64 * 1024, HS_DESC_MAX_LEN);
    let mut accepted = 0;
    // Bounded: 3000 mutants.
    for i in 0..3000u64 {
        let mut m = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..4) {
                0 => {
                    let p = rng.gen_range(0..m.len());
                    m[p] = rng.gen();
                }
                1 => {
                    let p = rng.gen_range(0..m.len());
                    m.truncate(p);
                }
                2 => {
                    let p = rng.gen_range(0..=m.len());
                    let b = *b" \n#-=A\r\0".get(rng.gen_range(0..8)).unwrap();
                    m.insert(p, b);
                }
                _ => {
                    let p = rng.gen_range(0..m.len());
                    m.remove(p);
                    if m.is_empty() {
                        m.push(b'\n');
                    }
                }
            }
            if m.is_empty() {
                m.push(b'h');
            }
        }
        if c.publish(&m, at(T0 + i)).is_ok() {
            accepted += 1;
        }
    }
    // Almost every mutant breaks the signature; whatever is stored, the cache stays within
    // its bound plus the descriptors stored after the last prune.
    eprintln!("accepted {accepted} of 3000 mutants");
    assert!(c.total_bytes() <= 64 * 1024 + 2 * HS_DESC_MAX_LEN as u64);
}
