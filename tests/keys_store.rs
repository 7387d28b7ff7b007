//! RelayKeys on disk: creation, reload, renewal, rotation, and corrupt files that must be
//! reported (naming the file) and never replaced.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fors::keys::cert::{CertKeyType, CertType};
use fors::keys::crosscert::{verify_ntor_onion_key_crosscert, verify_tap_onion_key_crosscert};
use fors::keys::x509::X509Cert;
use fors::keys::{KeyError, KeyParams, RelayKeys};
use sha2::{Digest, Sha256};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fors-keys-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const DAY: Duration = Duration::from_secs(86400);

fn keyfile(data: &Path, name: &str) -> PathBuf {
    data.join("keys").join(name)
}

#[test]
fn create_then_reload_is_stable() {
    let base = temp_dir("reload");
    let data = base.join("data");
    let now = SystemTime::now();
    let a = RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    let snapshot: Vec<(String, Vec<u8>)> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let mut names: Vec<_> = snapshot.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ed25519_master_id_public_key",
            "ed25519_master_id_secret_key",
            "ed25519_signing_cert",
            "ed25519_signing_secret_key",
            "secret_id_key",
            "secret_onion_key",
            "secret_onion_key_ntor",
        ]
    );
    let b = RelayKeys::load_or_create(&data, now + DAY, KeyParams::default()).unwrap();
    assert_eq!(a.rsa_identity(), b.rsa_identity());
    assert_eq!(a.ed25519_identity(), b.ed25519_identity());
    assert_eq!(a.signing_cert(), b.signing_cert());
    assert_eq!(a.ntor_key().public, b.ntor_key().public);
    // Reloading writes nothing.
    for (name, bytes) in &snapshot {
        assert_eq!(
            &std::fs::read(keyfile(&data, name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    // The signing cert is a proper type-4 cert with a 30-day lifetime.
    let c = a.signing_cert();
    assert_eq!(c.cert_type, CertType::IDENTITY_V_SIGNING);
    assert_eq!(c.key_type, CertKeyType::ED25519);
    assert_eq!(c.signing_key, Some(a.ed25519_identity().0));
    c.verify(Some(&a.ed25519_identity().0), Some(now)).unwrap();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        c.expires_at_secs(),
        (secs + 30 * 86400).div_ceil(3600) * 3600
    );

    a.write_fingerprint_files("Nick").unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("fingerprint")).unwrap(),
        format!("Nick {}\n", a.rsa_identity().to_hex())
    );
    assert_eq!(
        std::fs::read_to_string(data.join("fingerprint-ed25519")).unwrap(),
        format!("Nick {}\n", a.ed25519_identity().to_base64())
    );
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn corrupt_files_are_errors_and_untouched() {
    let base = temp_dir("corrupt");
    let data = base.join("data");
    let now = SystemTime::now();
    RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    // Provide .old files too so their corruption is detected as well.
    for (cur, old) in [
        ("secret_onion_key", "secret_onion_key.old"),
        ("secret_onion_key_ntor", "secret_onion_key_ntor.old"),
    ] {
        std::fs::copy(keyfile(&data, cur), keyfile(&data, old)).unwrap();
    }
    let files = [
        "secret_id_key",
        "ed25519_master_id_secret_key",
        "ed25519_master_id_public_key",
        "ed25519_signing_secret_key",
        "ed25519_signing_cert",
        "secret_onion_key",
        "secret_onion_key.old",
        "secret_onion_key_ntor",
        "secret_onion_key_ntor.old",
    ];
    for name in files {
        let path = keyfile(&data, name);
        let good = std::fs::read(&path).unwrap();
        let pem = good.starts_with(b"-----BEGIN");
        let mut corruptions: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() * 2 / 3].to_vec()),
            (
                "garbage",
                b"\x00\x01garbage that is no key at all\xff\xfe and some more padding bytes...."
                    .repeat(3),
            ),
        ];
        if pem {
            corruptions.push((
                "wrong PEM label",
                String::from_utf8(good.clone())
                    .unwrap()
                    .replace("RSA PRIVATE", "RSA PUBLIC")
                    .into_bytes(),
            ));
            let mut bad_b64 = good.clone();
            bad_b64[40] = b'*';
            corruptions.push(("garbage PEM", bad_b64));
        } else {
            let mut wrong = good.clone();
            wrong[3] ^= 0x20; // "ed25519v1" -> "Ed25519v1" / "c25519" -> "C25519"
            corruptions.push(("wrong header", wrong));
            let mut tag = good.clone();
            let pos = good.iter().position(|&b| b == b':').unwrap() + 2;
            tag[pos] = b'X';
            corruptions.push(("wrong tag", tag));
        }
        for (what, bytes) in corruptions {
            std::fs::write(&path, &bytes).unwrap();
            let err = RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap_err();
            match &err {
                KeyError::Corrupt { path: p, .. } => assert_eq!(p, &path, "{name}/{what}: {err}"),
                other => panic!("{name}/{what}: expected Corrupt, got {other}"),
            }
            assert!(err.to_string().contains(name), "{err}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{name}/{what} was rewritten"
            );
        }
        std::fs::write(&path, &good).unwrap();
    }
    // Restored files load again.
    RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn mismatched_master_public_key_is_an_error() {
    let base = temp_dir("mismatch");
    let (d1, d2) = (base.join("a"), base.join("b"));
    let now = SystemTime::now();
    RelayKeys::load_or_create(&d1, now, KeyParams::default()).unwrap();
    RelayKeys::load_or_create(&d2, now, KeyParams::default()).unwrap();
    std::fs::copy(
        keyfile(&d2, "ed25519_master_id_public_key"),
        keyfile(&d1, "ed25519_master_id_public_key"),
    )
    .unwrap();
    assert!(matches!(
        RelayKeys::load_or_create(&d1, now, KeyParams::default()),
        Err(KeyError::Mismatch { .. })
    ));
    // A signing cert from another relay (signed by another master) is rejected too.
    std::fs::copy(
        keyfile(&d2, "ed25519_master_id_public_key"),
        keyfile(&d1, "ed25519_master_id_public_key"),
    )
    .unwrap();
    std::fs::remove_file(keyfile(&d1, "ed25519_master_id_public_key")).unwrap();
    for f in ["ed25519_signing_secret_key", "ed25519_signing_cert"] {
        std::fs::copy(keyfile(&d2, f), keyfile(&d1, f)).unwrap();
    }
    assert!(matches!(
        RelayKeys::load_or_create(&d1, now, KeyParams::default()),
        Err(KeyError::Mismatch { .. })
    ));
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn signing_key_renewal_and_offline_master() {
    let base = temp_dir("renew");
    let data = base.join("data");
    let now = SystemTime::now();
    let mut keys = RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    let first = keys.signing_cert().clone();
    // Ten days in: nothing to do.
    assert!(!keys.maintain(now + 10 * DAY).unwrap().signing_key_renewed);
    // Within a day of expiry: renewed from the master key on disk, same identity.
    let later = now + 29 * DAY + DAY / 2;
    let ch = keys.maintain(later).unwrap();
    assert!(ch.signing_key_renewed && ch.descriptor_changed());
    assert_ne!(keys.signing_cert(), &first);
    keys.signing_cert()
        .verify(Some(&keys.ed25519_identity().0), Some(later))
        .unwrap();
    let reloaded = RelayKeys::load_or_create(&data, later, KeyParams::default()).unwrap();
    assert_eq!(reloaded.signing_cert(), keys.signing_cert());

    // Offline master: the public key alone is enough while the signing cert is valid...
    std::fs::rename(
        keyfile(&data, "ed25519_master_id_secret_key"),
        base.join("master_backup"),
    )
    .unwrap();
    let id = keys.ed25519_identity();
    let mut offline = RelayKeys::load_or_create(&data, later, KeyParams::default()).unwrap();
    assert_eq!(offline.ed25519_identity(), id);
    // ...renewal is reported as blocked near expiry...
    let near = later + 29 * DAY + DAY / 2;
    let ch = offline.maintain(near).unwrap();
    assert!(ch.signing_key_renewal_blocked && !ch.signing_key_renewed);
    // ...and after expiry the relay cannot start.
    assert!(matches!(
        RelayKeys::load_or_create(&data, later + 31 * DAY, KeyParams::default()),
        Err(KeyError::MasterKeyOffline { .. })
    ));
    // Without the master public key file, it is inferred from the signing cert.
    std::fs::remove_file(keyfile(&data, "ed25519_master_id_public_key")).unwrap();
    let inferred = RelayKeys::load_or_create(&data, later, KeyParams::default()).unwrap();
    assert_eq!(inferred.ed25519_identity(), id);
    assert!(keyfile(&data, "ed25519_master_id_public_key").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn onion_key_rotation_and_grace() {
    let base = temp_dir("rotate");
    let data = base.join("data");
    let now = SystemTime::now();
    let mut keys = RelayKeys::load_or_create(&data, now, KeyParams::default()).unwrap();
    let first = keys.ntor_key().public;
    assert_eq!(keys.ntor_keys().count(), 1);
    assert!(!keys.maintain(now + 27 * DAY).unwrap().onion_keys.rotated);
    let t1 = now + 28 * DAY;
    let ch = keys.maintain(t1).unwrap();
    assert!(ch.onion_keys.rotated && ch.descriptor_changed());
    assert_ne!(keys.ntor_key().public, first);
    let ids: Vec<_> = keys.ntor_keys().map(|k| k.public).collect();
    assert_eq!(ids, [keys.ntor_key().public, first]);
    for f in ["secret_onion_key.old", "secret_onion_key_ntor.old"] {
        assert!(keyfile(&data, f).exists(), "{f}");
    }
    // The previous keys survive a reload and stay in the key map during the grace period.
    let reloaded = RelayKeys::load_or_create(&data, t1, KeyParams::default()).unwrap();
    assert_eq!(reloaded.ntor_keys().count(), 2);
    assert!(
        !keys
            .maintain(t1 + 6 * DAY)
            .unwrap()
            .onion_keys
            .previous_expired
    );
    let ch = keys.maintain(t1 + 7 * DAY).unwrap();
    assert!(ch.onion_keys.previous_expired && !ch.onion_keys.rotated);
    assert_eq!(keys.ntor_keys().count(), 1);
    for f in ["secret_onion_key.old", "secret_onion_key_ntor.old"] {
        assert!(!keyfile(&data, f).exists(), "{f}");
    }
    // Consensus-driven schedule: 3-day rotation.
    keys.set_params(KeyParams {
        onion: fors::keys::OnionKeyRotation::from_consensus_days(Some(3), Some(1)),
        ..KeyParams::default()
    });
    assert!(keys.maintain(t1 + 3 * DAY).unwrap().onion_keys.rotated);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn descriptor_crosscerts_and_link_certs_verify() {
    let base = temp_dir("link");
    let now = SystemTime::now();
    let keys = RelayKeys::load_or_create(&base.join("d"), now, KeyParams::default()).unwrap();
    let id = keys.ed25519_identity();

    let sig = keys.tap_onion_key_crosscert().unwrap();
    verify_tap_onion_key_crosscert(
        &keys.tap_onion_key().to_public_key(),
        &keys.rsa_identity_public(),
        &id,
        &sig,
    )
    .unwrap();
    let (cc, sign) = keys.ntor_onion_key_crosscert(now);
    verify_ntor_onion_key_crosscert(&cc, sign, keys.ntor_key().public.as_bytes(), &id, Some(now))
        .unwrap();
    assert_eq!(
        cc.expires_at_secs(),
        (now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 28 * 86400)
            .div_ceil(3600)
            * 3600
    );

    let lc = keys.mint_link_certs(now).unwrap();
    // Type 1: RSA-2048 link key signed by the identity key.
    let link = X509Cert::parse(&lc.link_cert_der).unwrap();
    assert_eq!(link.subject_key(), &lc.link_key.to_public_key());
    link.verify_signed_by(&keys.rsa_identity_public()).unwrap();
    link.check_lifetime(now, 0, 0).unwrap();
    use rsa::pkcs8::DecodePrivateKey;
    assert_eq!(
        rsa::RsaPrivateKey::from_pkcs8_der(&lc.link_key_pkcs8_der).unwrap(),
        lc.link_key
    );
    // Type 2: self-signed identity cert.
    let idc = X509Cert::parse(&lc.identity_cert_der).unwrap();
    assert_eq!(
        idc.check_identity_cert(now).unwrap(),
        &keys.rsa_identity_public()
    );
    // Type 5: signing key certifies SHA-256 of the TLS cert.
    lc.tls_cert_cert
        .verify(Some(keys.signing_key().public().as_bytes()), Some(now))
        .unwrap();
    assert_eq!(lc.tls_cert_cert.cert_type, CertType::SIGNING_V_TLS_CERT);
    assert_eq!(lc.tls_cert_cert.key_type, CertKeyType::SHA256_OF_X509);
    assert_eq!(
        lc.tls_cert_cert.certified_key,
        <[u8; 32]>::from(Sha256::digest(&lc.link_cert_der))
    );
    // Type 6: signing key certifies the link-auth key.
    lc.link_auth_cert
        .verify(Some(keys.signing_key().public().as_bytes()), Some(now))
        .unwrap();
    assert_eq!(
        lc.link_auth_cert.certified_key,
        lc.link_auth_key.public().to_bytes()
    );
    // Type 7.
    lc.rsa_crosscert
        .verify(&keys.rsa_identity_public(), &id, now)
        .unwrap();
    assert!(!lc.needs_renewal(now, &keys.params().link));
    // Certs expire on an hour boundary at most an hour after now + 2 days.
    assert!(!lc.needs_renewal(
        now + 2 * DAY - Duration::from_secs(3 * 3600 + 1),
        &keys.params().link
    ));
    assert!(lc.needs_renewal(
        now + 2 * DAY - Duration::from_secs(3600),
        &keys.params().link
    ));
    std::fs::remove_dir_all(&base).unwrap();
}
