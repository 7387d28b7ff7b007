//! Authority certificates made by C tor's own `tor-gencert` (offline; it never touches the
//! network), and a microdesc consensus signed with those authorities' signing keys: parsing,
//! majority signature verification, and relay lookups. Without tor-gencert the test follows
//! `tests/skip_common`'s rule (fails under `CI=true`, else prints `SKIPPED:`).

mod skip_common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use fors::crypto::ids::RsaIdentity;
use fors::dir::authcert::{parse_cert, parse_certs, AuthorityCert};
use fors::dir::consensus::{Consensus, ConsensusError, RelayFlags};
use fors::dir::isotime;
use fors::dir::AuthCertError;
use fors::keys::{pem, rsa as tor_rsa};
use rsa::RsaPrivateKey;
use sha1::Sha1;
use sha2::{Digest, Sha256};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fors-dircons-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Authority {
    cert_text: String,
    signing_key: RsaPrivateKey,
}

/// One authority's certificate and signing key from tor-gencert, or None if it is missing.
fn gencert(dir: &Path, n: u16) -> Option<Authority> {
    let mut child = Command::new("tor-gencert")
        .current_dir(dir)
        .args([
            "--create-identity-key",
            "-i",
            &format!("id{n}"),
            "-s",
            &format!("sk{n}"),
            "-c",
            &format!("cert{n}"),
            "-m",
            "12",
            "-a",
            &format!("127.0.0.1:{}", 7000 + n),
            "--passphrase-fd",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(b"\n").ok()?;
    if !child.wait().ok()?.success() {
        return None;
    }
    let cert_text = std::fs::read_to_string(dir.join(format!("cert{n}"))).ok()?;
    let sk_pem = std::fs::read(dir.join(format!("sk{n}"))).ok()?;
    let der = pem::decode(tor_rsa::PRIVATE_KEY_PEM_TAG, &sk_pem).unwrap();
    let signing_key = tor_rsa::private_key_from_der(&der).unwrap();
    Some(Authority {
        cert_text,
        signing_key,
    })
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
}

/// A microdesc consensus body (everything before the signatures), dir-spec §3.4.1.
fn consensus_body(now: u64, certs: &[AuthorityCert]) -> String {
    let t = |s| isotime::format_secs(s);
    let mut s = String::new();
    s += "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 34\n";
    s += &format!(
        "valid-after {}\nfresh-until {}\nvalid-until {}\n",
        t(now - 60),
        t(now + 240),
        t(now + 540)
    );
    s += "voting-delay 20 20\nclient-versions \nserver-versions \n";
    s += "known-flags Authority Exit Fast Guard HSDir Running Stable V2Dir Valid\n";
    s += "recommended-relay-protocols Cons=2 Desc=2 Link=4-5 Relay=2-4\n";
    s += "required-relay-protocols Cons=2 Desc=2 Link=4-5 Relay=2\n";
    s += "params cc_alg=2 refuseunknownexits=0 sendme_accept_min_version=1 ExtendByEd25519ID=1\n";
    for (i, c) in certs.iter().enumerate() {
        s += &format!(
            "dir-source auth{i} {} 127.0.0.1 127.0.0.1 {} {}\ncontact auth{i}@example\nvote-digest {}\n",
            c.fingerprint.to_hex(),
            7000 + i,
            5000 + i,
            "0".repeat(40)
        );
    }
    for (i, flags) in [
        "Fast Running Stable V2Dir Valid",
        "Exit Fast Running Valid",
        "Fast Valid",
    ]
    .iter()
    .enumerate()
    {
        s += &format!(
            "r relay{i} {} {} 127.0.0.1 {} 0\n",
            b64(&[i as u8 + 1; 20]),
            t(now - 3600),
            5100 + i
        );
        if i == 1 {
            s += "a [::1]:6101\n";
        }
        s += &format!(
            "m {}\ns {flags}\nv Tor 0.4.9.11\npr Relay=2-4\nw Bandwidth=20\n",
            b64(&[7; 32])
        );
    }
    s += "directory-footer\nbandwidth-weights Wbd=0 Wbe=0\n";
    s
}

/// A `directory-signature` keyword line.
fn signature_line(alg: &str, cert: &AuthorityCert) -> String {
    format!(
        "directory-signature {alg} {} {}\n",
        cert.fingerprint.to_hex(),
        fors::util::hex::encode_upper(&cert.signing_key_digest)
    )
}

/// Appends signature lines; each signs body ‖ "directory-signature " (dir-spec §3.4.1).
fn signed_consensus(body: &str, signers: &[(&str, &Authority, &AuthorityCert)]) -> String {
    let signed = format!("{body}directory-signature ");
    let mut out = body.to_owned();
    for (alg, a, cert) in signers {
        let digest: Vec<u8> = match *alg {
            "sha1" => Sha1::digest(signed.as_bytes()).to_vec(),
            _ => Sha256::digest(signed.as_bytes()).to_vec(),
        };
        let sig = tor_rsa::sign_unprefixed(&a.signing_key, &digest).unwrap();
        out += &signature_line(alg, cert);
        out += &pem::encode("SIGNATURE", &sig);
    }
    out
}

#[test]
fn gencert_certs_and_signed_consensus() {
    let dir = temp_dir("auth");
    if !skip_common::have("tor-gencert", "--help") {
        skip_common::skip(
            "gencert_certs_and_signed_consensus",
            "tor-gencert is not installed (apt-get install tor)",
        );
        return;
    }
    // tor-gencert is here, so a certificate it fails to make is a failure, not a skip.
    let auths: Vec<Authority> = (1..=3)
        .map(|n| gencert(&dir, n))
        .collect::<Option<_>>()
        .expect("tor-gencert failed to make an authority certificate");
    // /tor/keys/all is the certificates back to back.
    let all: String = auths.iter().map(|a| a.cert_text.clone()).collect();
    let certs: Vec<AuthorityCert> = parse_certs(&all).into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(certs.len(), 3);
    for (c, a) in certs.iter().zip(&auths) {
        let fp_line = a
            .cert_text
            .lines()
            .find(|l| l.starts_with("fingerprint "))
            .unwrap();
        assert_eq!(RsaIdentity::from_hex(&fp_line[12..]), Some(c.fingerprint));
        assert_eq!(c.signing_key, a.signing_key.to_public_key());
        assert_eq!(c.dir_address.unwrap().ip(), &Ipv4Addr::LOCALHOST);
        assert!(c.expires_secs > c.published_secs + 300 * 86400);
        c.check_time(SystemTime::now()).unwrap();
    }

    // A flipped bit in the certified part or the crosscert is caught.
    let tampered = auths[0].cert_text.replacen(
        "dir-address 127.0.0.1:7001",
        "dir-address 127.0.0.1:7009",
        1,
    );
    assert!(matches!(
        parse_cert(&tampered),
        Err(AuthCertError::BadCertification)
    ));
    let cc_at = auths[0]
        .cert_text
        .find("-----BEGIN ID SIGNATURE-----\n")
        .unwrap()
        + 30;
    let mut bad_cc = auths[0].cert_text.clone();
    let ch = if &bad_cc[cc_at..cc_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad_cc.replace_range(cc_at..cc_at + 1, ch);
    assert!(parse_cert(&bad_cc).is_err());
    // The cert's own fingerprint line must match its identity key.
    let wrong_fp = auths[0].cert_text.replacen(
        &certs[0].fingerprint.to_hex(),
        &certs[1].fingerprint.to_hex(),
        1,
    );
    assert!(matches!(
        parse_cert(&wrong_fp),
        Err(AuthCertError::FingerprintMismatch)
    ));

    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = UNIX_EPOCH + Duration::from_secs(now_s);
    let body = consensus_body(now_s, &certs);
    let trusted: Vec<RsaIdentity> = certs.iter().map(|c| c.fingerprint).collect();

    // Two of three authorities, one per digest algorithm: a majority.
    let text = signed_consensus(
        &body,
        &[
            ("sha256", &auths[0], &certs[0]),
            ("sha1", &auths[2], &certs[2]),
        ],
    );
    let c = Consensus::parse(&text).unwrap();
    assert_eq!(c.flavor, "microdesc");
    assert_eq!(c.consensus_method, Some(34));
    assert!(c.is_live(now));
    c.check_reasonably_live(now).unwrap();
    assert!(c
        .check_reasonably_live(now + Duration::from_secs(2 * 86400))
        .is_err());
    assert_eq!(c.dir_sources.len(), 3);
    let summary = c.verify_signatures(&certs, &trusted, Some(now)).unwrap();
    assert_eq!(summary.good.len(), 2);
    assert_eq!(summary.missing, vec![certs[1].fingerprint]);

    // A footer item a later consensus method might add is skipped, as C tor's tokenizer does,
    // and the signatures over it still verify.
    let future = signed_consensus(
        &format!("{body}future-footer-item 1 2\n"),
        &[
            ("sha256", &auths[0], &certs[0]),
            ("sha256", &auths[1], &certs[1]),
        ],
    );
    let f = Consensus::parse(&future).unwrap();
    assert_eq!(f.relays.len(), 3);
    assert_eq!(
        f.verify_signatures(&certs, &trusted, Some(now))
            .unwrap()
            .good
            .len(),
        2
    );

    // Parameters and the relay table.
    assert!(!c.params.refuse_unknown_exits);
    assert_eq!(c.params.sendme_accept_min_version, 1);
    assert!(c.params.extend_by_ed25519_id);
    assert_eq!(c.params.circwindow, 1000);
    assert_eq!(c.relays.len(), 3);
    let r1 = c.is_listed(&RsaIdentity([2; 20])).unwrap();
    assert_eq!(r1.nickname, "relay1");
    assert!(r1.flags.contains(RelayFlags::EXIT) && r1.flags.contains(RelayFlags::RUNNING));
    assert!(!r1.flags.contains(RelayFlags::GUARD));
    assert_eq!(r1.bandwidth, Some(20));
    assert_eq!(r1.microdesc_digest, Some([7; 32]));
    assert_eq!(r1.protocols.as_deref(), Some("Relay=2-4"));
    // The ControlPort's `ns/id` form: the microdesc entry plus our descriptor digest.
    let published = isotime::format_secs(now_s - 3600);
    assert_eq!(
        r1.ns_entry(&[0xAB; 20]),
        format!(
            "r relay1 {} {} {published} 127.0.0.1 5101 0\na [::1]:6101\n\
             s Exit Fast Running Valid\nv Tor 0.4.9.11\nw Bandwidth=20\n",
            b64(&[2; 20]),
            b64(&[0xAB; 20])
        )
    );
    let r2 = c.is_listed(&RsaIdentity([3; 20])).unwrap();
    assert!(!r2.flags.contains(RelayFlags::RUNNING));
    assert!(c.is_listed(&RsaIdentity([9; 20])).is_none());
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(c.is_relay_addr_port(lo, 5101));
    assert!(!c.is_relay_addr_port(lo, 80));
    assert!(c.is_relay_addr_port("::1".parse().unwrap(), 6101));
    assert!(c.is_relay_address(lo));

    // One signature of three is not enough.
    let one = signed_consensus(&body, &[("sha256", &auths[1], &certs[1])]);
    let c1 = Consensus::parse(&one).unwrap();
    assert!(matches!(
        c1.verify_signatures(&certs, &trusted, Some(now)),
        Err(ConsensusError::NotEnoughSignatures {
            good: 1,
            needed: 2,
            known: 3
        })
    ));
    // Signatures by an unknown authority don't count even if valid.
    assert!(c
        .verify_signatures(&certs, &trusted[..1], Some(now))
        .is_ok());
    assert!(c
        .verify_signatures(&certs, &trusted[1..2], Some(now))
        .is_err());
    // Any change to the signed text invalidates every signature.
    let tampered = text.replacen("w Bandwidth=20", "w Bandwidth=99", 1);
    let ct = Consensus::parse(&tampered).unwrap();
    assert!(matches!(
        ct.verify_signatures(&certs, &trusted, Some(now)),
        Err(ConsensusError::NotEnoughSignatures { good: 0, .. })
    ));
    // Without the certificates nothing verifies.
    assert!(c.verify_signatures(&[], &trusted, Some(now)).is_err());
    // Expired certificates are not used.
    let far = now + Duration::from_secs(400 * 86400);
    assert!(c.verify_signatures(&certs, &trusted, Some(far)).is_err());

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_consensus_is_refused() {
    let base = "network-status-version 3 microdesc\nvote-status consensus\nvalid-after 2026-01-01 00:00:00\nfresh-until 2026-01-01 01:00:00\nvalid-until 2026-01-01 03:00:00\nknown-flags Running\n";
    assert!(matches!(
        Consensus::parse(&format!(
            "{base}r a AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-01-01 00:00:00 1.2.3.4 1 0\n"
        )),
        Err(ConsensusError::NoSignatures)
    ));
    assert!(matches!(
        Consensus::parse(&format!(
            "{base}r a notbase64 2026-01-01 00:00:00 1.2.3.4 1 0\n"
        )),
        Err(ConsensusError::Malformed { .. })
    ));
    assert!(matches!(
        Consensus::parse(&base.replace("vote-status consensus", "vote-status vote")),
        Err(ConsensusError::NotConsensus(_))
    ));
    assert!(matches!(
        Consensus::parse(&base.replace("valid-until 2026-01-01 03:00:00\n", "")),
        Err(ConsensusError::Missing("valid-until"))
    ));
    assert!(matches!(
        Consensus::parse(&format!("{base}params a=b\n")),
        Err(ConsensusError::Params(_))
    ));
    assert!(Consensus::parse("router x\n").is_err());
}
