//! Builds descriptors and extra-info documents from real relay keys and checks them the way a
//! C tor authority does: token order, key chain, all four signatures, digests.

use std::net::{Ipv4Addr, SocketAddrV6};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use fors::dir::descriptor::{ED_DESC_SIGNATURE_PREFIX, MAX_DESCRIPTOR_SIZE};
use fors::dir::{
    build_descriptor, build_extra_info, check_descriptor, check_extra_info, DescriptorCheckError,
    DescriptorError, DescriptorParams, DEFAULT_PROTO,
};
use fors::keys::{KeyParams, RelayKeys};
use sha1::{Digest, Sha1};
use sha2::Sha256;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fors-dir-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keys(tag: &str, now: SystemTime) -> (RelayKeys, PathBuf) {
    let dir = temp_dir(tag);
    let k = RelayKeys::load_or_create(&dir, now, KeyParams::default()).unwrap();
    (k, dir)
}

fn now() -> SystemTime {
    // Whole seconds, as descriptors carry.
    UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
}

fn params(published: SystemTime) -> DescriptorParams {
    let mut p = DescriptorParams::new("ForsTest1", Ipv4Addr::new(127, 0, 0, 1), 5100, published);
    p.ipv6_or_address = Some("[::1]:5100".parse::<SocketAddrV6>().unwrap());
    p.bandwidth.observed = 123_456;
    p.uptime_secs = 42;
    p.contact = Some("ops <ops@example.org>".into());
    p.family = vec![
        "$0123456789ABCDEF0123456789ABCDEF01234567".into(),
        "friend".into(),
    ];
    p.policy = vec![
        "accept *:80".into(),
        "accept *:443".into(),
        "reject *:*".into(),
    ];
    p.ipv6_policy = Some("accept 80,443".into());
    p
}

#[test]
fn descriptor_and_extra_info_verify_like_an_authority() {
    let t = now();
    let (k, dir) = keys("full", t);
    let p = params(t);
    let ei = build_extra_info(&k, &p.nickname, t).unwrap();
    let d = build_descriptor(&k, &p, Some(&ei)).unwrap();
    assert!(d.text.len() <= MAX_DESCRIPTOR_SIZE);

    let c = check_descriptor(&d.text, Some(t)).unwrap();
    assert_eq!(c.nickname, "ForsTest1");
    assert_eq!(c.address, Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!(c.or_port, 5100);
    assert_eq!(c.rsa_identity, k.rsa_identity());
    assert_eq!(c.ed25519_identity, k.ed25519_identity());
    assert_eq!(&c.ntor_onion_key, k.ntor_key().public.as_bytes());
    assert_eq!(c.proto, DEFAULT_PROTO);
    assert_eq!(
        c.platform.as_deref(),
        Some(&*format!("Fors {} on Linux", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(c.digest, d.digest);
    assert_eq!(c.policy, ["accept *:80", "accept *:443", "reject *:*"]);
    assert_eq!(c.extra_info_digest, Some((ei.sha1, Some(ei.sha256))));

    // Item order as router.c writes it.
    let order: Vec<&str> = c.keywords.iter().map(String::as_str).collect();
    assert_eq!(
        order,
        [
            "router",
            "identity-ed25519",
            "master-key-ed25519",
            "or-address",
            "platform",
            "proto",
            "published",
            "fingerprint",
            "uptime",
            "bandwidth",
            "extra-info-digest",
            "onion-key",
            "signing-key",
            "onion-key-crosscert",
            "ntor-onion-key-crosscert",
            "family",
            "contact",
            "ntor-onion-key",
            "accept",
            "accept",
            "reject",
            "ipv6-policy",
            "router-sig-ed25519",
            "router-signature",
        ]
    );
    assert!(d.text.contains("\nor-address [::1]:5100\n"));
    assert!(d
        .text
        .contains("\nbandwidth 1073741824 1073741824 123456\n"));
    assert!(d
        .text
        .contains("\nfamily $0123456789ABCDEF0123456789ABCDEF01234567 friend\n"));
    // ntor key: 43 characters of unpadded base64.
    let ntor_line = d
        .text
        .lines()
        .find(|l| l.starts_with("ntor-onion-key "))
        .unwrap();
    assert_eq!(ntor_line.len(), "ntor-onion-key ".len() + 43);

    // Recompute both descriptor signatures independently of the checker.
    let sig_at = d.text.find("\nrouter-sig-ed25519 ").unwrap() + "\nrouter-sig-ed25519 ".len();
    let mut h = Sha256::new();
    h.update(ED_DESC_SIGNATURE_PREFIX);
    h.update(&d.text.as_bytes()[..sig_at]);
    let ed_digest = h.finalize();
    let sig_b64 = d.text[sig_at..].lines().next().unwrap();
    assert_eq!(sig_b64.len(), 86);
    let sig = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(sig_b64)
        .unwrap();
    assert!(fors::keys::ed25519::verify(
        &k.signing_key().identity().0,
        &ed_digest,
        &sig.try_into().unwrap()
    ));
    let rsa_end = d.text.find("\nrouter-signature\n").unwrap() + "\nrouter-signature\n".len();
    let sha1: [u8; 20] = Sha1::digest(&d.text.as_bytes()[..rsa_end]).into();
    assert_eq!(sha1, d.digest);
    let pem = &d.text[rsa_end..];
    let rsa_sig = fors::keys::pem::decode("SIGNATURE", pem.as_bytes()).unwrap();
    fors::keys::rsa::verify_unprefixed(&k.rsa_identity_public(), &sha1, &rsa_sig).unwrap();

    // Extra-info: signatures, and the digests the descriptor names.
    let e = check_extra_info(&ei.text, &k.rsa_identity_public(), Some(t)).unwrap();
    assert_eq!(e.rsa_identity, k.rsa_identity());
    assert_eq!(e.ed25519_identity, k.ed25519_identity());
    assert_eq!((e.sha1, e.sha256), (ei.sha1, ei.sha256));
    let whole: [u8; 32] = Sha256::digest(ei.text.as_bytes()).into();
    assert_eq!(whole, ei.sha256);
    let ei_end = ei.text.find("\nrouter-signature\n").unwrap() + "\nrouter-signature\n".len();
    let ei_sha1: [u8; 20] = Sha1::digest(&ei.text.as_bytes()[..ei_end]).into();
    assert_eq!(ei_sha1, ei.sha1);
    assert!(ei.text.starts_with(&format!(
        "extra-info ForsTest1 {}\nidentity-ed25519\n",
        k.rsa_identity().to_hex()
    )));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tampering_is_detected() {
    let t = now();
    let (k, dir) = keys("tamper", t);
    let d = build_descriptor(&k, &params(t), None).unwrap();
    check_descriptor(&d.text, Some(t)).unwrap();

    // Any change under the signatures breaks the Ed25519 signature first.
    let changed = d.text.replace("uptime 42", "uptime 43");
    assert!(matches!(
        check_descriptor(&changed, Some(t)),
        Err(DescriptorCheckError::BadEd25519Signature)
    ));
    // Replacing the RSA signature object breaks only the RSA check.
    let at = d.text.find("-----BEGIN SIGNATURE-----\n").unwrap() + 26;
    let mut bad = d.text.clone();
    let c = if &bad[at..at + 1] == "A" { "B" } else { "A" };
    bad.replace_range(at..at + 1, c);
    assert!(matches!(
        check_descriptor(&bad, Some(t)),
        Err(DescriptorCheckError::BadRsaSignature)
    ));
    // Missing ntor key.
    let no_ntor: String = d
        .text
        .lines()
        .filter(|l| !l.starts_with("ntor-onion-key "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(matches!(
        check_descriptor(&no_ntor, Some(t)),
        Err(DescriptorCheckError::Count {
            keyword: "ntor-onion-key",
            count: 0
        })
    ));
    // Published too far in the past or future for the authorities.
    assert!(matches!(
        check_descriptor(&d.text, Some(t + Duration::from_secs(25 * 3600))),
        Err(DescriptorCheckError::PublishedSkew { .. })
    ));
    assert!(matches!(
        check_descriptor(&d.text, Some(t - Duration::from_secs(13 * 3600))),
        Err(DescriptorCheckError::PublishedSkew { .. })
    ));
    // Another relay's keys cannot have signed it.
    let (k2, dir2) = keys("tamper2", t);
    let other = build_descriptor(&k2, &params(t), None).unwrap();
    let sk_start = |s: &str| s.find("signing-key\n").unwrap();
    let sk_end = |s: &str| s.find("onion-key-crosscert\n").unwrap();
    let mut spliced = d.text.clone();
    spliced.replace_range(
        sk_start(&d.text)..sk_end(&d.text),
        &other.text[sk_start(&other.text)..sk_end(&other.text)],
    );
    assert!(check_descriptor(&spliced, Some(t)).is_err());
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(dir2).unwrap();
}

#[test]
fn builder_refuses_bad_input() {
    let t = now();
    let (k, dir) = keys("refuse", t);
    let mut p = params(t);
    p.nickname = "has space".into();
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::BadNickname(_))
    ));
    let mut p = params(t);
    p.or_port = 0;
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::ZeroOrPort)
    ));
    let mut p = params(t);
    p.policy = vec!["accept6 *:80".into()];
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::BadPolicyLine(_))
    ));
    let mut p = params(t);
    p.contact = Some("a\nrouter-signature".into());
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::BadText { .. })
    ));
    let mut p = params(t);
    p.family = vec!["$nothex".into()];
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::BadFamilyEntry(_))
    ));
    let mut p = params(t);
    p.contact = Some("x".repeat(MAX_DESCRIPTOR_SIZE));
    assert!(matches!(
        build_descriptor(&k, &p, None),
        Err(DescriptorError::TooLarge { .. })
    ));
    // Empty policy means reject *:*, as in C.
    let mut p = params(t);
    p.policy.clear();
    p.ipv6_policy = Some("reject 1-65535".into());
    let d = build_descriptor(&k, &p, None).unwrap();
    let c = check_descriptor(&d.text, Some(t)).unwrap();
    assert_eq!(c.policy, ["reject *:*"]);
    assert!(!d.text.contains("ipv6-policy"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Proposal 321: one `family-cert` per family key, each a type-0x0c cert of our Ed25519
/// identity signed by the family key, placed as C 0.4.9 writes it (before `contact`), and
/// verified by the authority-side checker; a cert for another relay is refused.
#[test]
fn family_certs_are_written_and_verified() {
    use fors::config::FamilyId;
    use fors::keys::family::{generate_family_key, FAMILY_CERT_LIFETIME_SECS};
    use fors::keys::{CertType, Ed25519Cert};
    use rand::SeedableRng;

    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = now();
    let (mut k, dir) = keys("family", t);
    let fam_dir = dir.join("keys");
    let a = generate_family_key(&fam_dir.join("alpha"), &mut rng).unwrap();
    let b = generate_family_key(&fam_dir.join("beta"), &mut rng).unwrap();
    k.load_family_keys(&[FamilyId::All], &fam_dir).unwrap();
    assert_eq!(k.family_ids(), [a, b]);

    let mut p = params(t);
    p.family_certs = k.family_certs(t);
    let d = build_descriptor(&k, &p, None).unwrap();
    let c = check_descriptor(&d.text, Some(t)).unwrap();
    assert_eq!(c.family_ids, [a, b]);
    // Position: after the ntor crosscert and `family`, before `contact`.
    let kw = |w: &str| c.keywords.iter().position(|k| k == w).unwrap();
    let first = kw("family-cert");
    assert_eq!(c.keywords[first + 1], "family-cert");
    assert!(
        kw("family") < first && first < kw("contact"),
        "{:?}",
        c.keywords
    );
    // The object is a PEM "FAMILY CERT" block holding the cert.
    let block = d.text.split("family-cert\n").nth(1).unwrap();
    assert!(
        block.starts_with("-----BEGIN FAMILY CERT-----\n"),
        "{block}"
    );
    let b64: String = block
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let cert = Ed25519Cert::parse(&raw).unwrap();
    assert_eq!(cert.cert_type, CertType::FAMILY_V_IDENTITY);
    assert_eq!(cert.certified_key, k.ed25519_identity().0);
    assert_eq!(cert.signing_key, Some(a.0));
    assert!(cert.expires_at_secs() >= c.published_secs + FAMILY_CERT_LIFETIME_SECS);

    // Only the listed key is used with `FamilyId <id>`; the other is reported as unlisted.
    // An unchanged configuration (a SIGHUP) does not re-read the directory; a changed one does.
    assert!(!k.refresh_family_keys(&[FamilyId::All], &fam_dir).unwrap());
    assert!(k
        .refresh_family_keys(&[FamilyId::Key(b)], &fam_dir)
        .unwrap());
    assert_eq!(k.family_ids(), [b]);
    let unlisted = k.load_family_keys(&[FamilyId::Key(b)], &fam_dir).unwrap();
    assert_eq!(unlisted.len(), 1);
    assert_eq!(unlisted[0].1, a);
    assert!(unlisted[0].0.ends_with("alpha.secret_family_key"));
    let mut p = params(t);
    p.family_certs = k.family_certs(t);
    let d = build_descriptor(&k, &p, None).unwrap();
    assert_eq!(check_descriptor(&d.text, Some(t)).unwrap().family_ids, [b]);

    // A family cert for another relay's identity is refused by the builder...
    let (other, other_dir) = keys("family-other", t);
    let mut p = params(t);
    p.family_certs = k.family_certs(t);
    assert!(matches!(
        build_descriptor(&other, &p, None),
        Err(DescriptorError::BadFamilyCert(_))
    ));
    // ...and by the checker if it is spliced into a descriptor.
    let good = build_descriptor(&k, &p, None).unwrap().text;
    let block_start = good.find("family-cert\n").unwrap();
    let block_end = good[block_start..]
        .find("-----END FAMILY CERT-----\n")
        .unwrap()
        + block_start
        + "-----END FAMILY CERT-----\n".len();
    let plain = build_descriptor(&other, &params(t), None).unwrap().text;
    let at = plain.find("contact ").unwrap();
    let spliced = format!(
        "{}{}{}",
        &plain[..at],
        &good[block_start..block_end],
        &plain[at..]
    );
    assert!(matches!(
        check_descriptor(&spliced, Some(t)),
        Err(DescriptorCheckError::Cert {
            what: "family-cert",
            ..
        })
    ));
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(other_dir).unwrap();
}
