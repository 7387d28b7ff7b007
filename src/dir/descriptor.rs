//! Building our server descriptor and extra-info document (dir-spec §2.1.1
//! "server-descriptor-format", §2.1.2 "extra-info-document-format"), laid out item for item
//! as C tor 0.4.9's `router_dump_router_to_string` / `extrainfo_dump_to_string` write them,
//! so the authorities' parser (`router_parse_entry_from_string`) accepts them.
//!
//! Exit policy lines and the `ipv6-policy` summary come in as strings: the exit-policy module
//! renders them.

use std::net::{Ipv4Addr, SocketAddrV6};
use std::time::SystemTime;

use sha1::{Digest, Sha1};
use sha2::Sha256;
use thiserror::Error;

use super::isotime;
use super::netdoc::{base64_nopad, encode_object};
use crate::crypto::ids::RsaIdentity;
use crate::keys::cert::CertError;
use crate::keys::family::verify_family_cert;
use crate::keys::rsa::{self as tor_rsa, RsaError};
use crate::keys::{spaced_fingerprint, Ed25519Cert, RelayKeys};

/// The `proto` line Fors advertises: only what it implements (tor-spec
/// §"subprotocol-versioning"; see docs/tor-relay-protocol §5.5).
///
/// Compared with the authorities' `required-relay-protocols` this knowingly omits
/// `DirCache=2` and `HSDir=2` (added by [`DescriptorParams::advertise_dir_cache`] when the
/// cache, and with it the HSDir cache, serves), `HSIntro=4-5` and `HSRend=2` (the
/// roles work only on a one-shard relay: `proto::circuit` `hs.rs`). Authorities do not reject a relay for that; C relays would only
/// warn about themselves. `Relay=2-6` (C `PR_RELAY_V`): ntor, IPv6 extends, ntor-v3, the
/// ntor-v3 SUBPROTO request (5) and CGO relay crypto (6, `proto::circuit::RelayHop`). `FlowCtrl=1-2`:
/// authenticated SENDMEs (1) and congestion control (2, prop 324): ntor-v3 CC_REQUEST is
/// answered with CC_RESPONSE when the consensus enables CC, and such circuits run TOR_VEGAS
/// with SENDMEs every `cc_sendme_inc` cells and stream XON/XOFF (`proto::flow`,
/// `proto::circuit` `cc`). `Link=4-5`, `LinkAuth=3`: 4-byte circuit IDs,
/// link padding, Ed25519 link authentication. `Desc=2`, `Microdesc=2`, `Cons=2`:
/// cross-certified descriptors with Ed25519 identities. `Padding=2`: the circuit padding
/// machines C tor clients negotiate with the middle hop of onion-service circuits
/// (`proto::circpad`, run by `proto::circuit` `padding.rs`).
pub const DEFAULT_PROTO: &str =
    "Cons=2 Desc=2 FlowCtrl=1-2 Link=4-5 LinkAuth=3 Microdesc=2 Padding=2 Relay=2-6";

/// dir-spec §2.1.1 / C `ED_DESC_SIGNATURE_PREFIX`: prepended before hashing for
/// `router-sig-ed25519` in both descriptors and extra-info documents.
pub const ED_DESC_SIGNATURE_PREFIX: &[u8] = b"Tor router descriptor signature v1";

/// C `MAX_DESCRIPTOR_UPLOAD_SIZE`: authorities refuse larger descriptors.
pub const MAX_DESCRIPTOR_SIZE: usize = 20_000;
/// C `MAX_EXTRAINFO_UPLOAD_SIZE`.
pub const MAX_EXTRA_INFO_SIZE: usize = 50_000;

/// [`DEFAULT_PROTO`] with `DirCache=2` and `HSDir=2`: advertised only while Fors serves
/// directory requests over BEGIN_DIR, onion-service descriptors included (C tor lists
/// both unconditionally; Fors claims only what runs).
pub const DIR_CACHE_PROTO: &str =
    "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 Link=4-5 LinkAuth=3 Microdesc=2 Padding=2 \
     Relay=2-6";

/// C `MIN_BW_TO_ADVERTISE_DIRSERVER`: below this rate a relay does not offer directory
/// service.
pub const MIN_BW_TO_ADVERTISE_DIRSERVER: u64 = 51_200;

/// What decides whether we advertise directory service (C router.c
/// `decide_to_advertise_dir_impl` and `router_should_be_dirserver`, for BEGIN_DIR; since
/// 0.4.7 only authorities advertise a DirPort, so `dir-port` stays 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirAdvertise {
    /// `DirCache 1` (and the server running).
    pub dir_cache: bool,
    /// We publish an IPv4 ORPort.
    pub ipv4_or_port: bool,
    /// `BandwidthRate` and `RelayBandwidthRate` (0 = unset), bytes/s.
    pub bandwidth_rate: u64,
    pub relay_bandwidth_rate: u64,
    /// With accounting on and a rule other than `in`: AccountingMax (halved for `sum`, as
    /// C) and the interval's length in seconds.
    pub accounting: Option<(u64, u64)>,
}

impl DirAdvertise {
    /// True if the descriptor says `tunnelled-dir-server` (and `DirCache=2`).
    pub fn begindir(&self) -> bool {
        if !self.dir_cache || !self.ipv4_or_port {
            return false;
        }
        let effective = if self.relay_bandwidth_rate > 0 {
            self.relay_bandwidth_rate
        } else {
            self.bandwidth_rate
        };
        match self.accounting {
            // Could hibernate: don't spend the bytes on directory traffic.
            Some((bytes, interval)) => effective < bytes / interval.max(1),
            None => {
                self.bandwidth_rate >= MIN_BW_TO_ADVERTISE_DIRSERVER
                    && (self.relay_bandwidth_rate == 0
                        || self.relay_bandwidth_rate >= MIN_BW_TO_ADVERTISE_DIRSERVER)
            }
        }
    }
}

impl DescriptorParams {
    /// Advertises directory service over BEGIN_DIR: `tunnelled-dir-server`,
    /// `hidden-service-dir` (the directory server stores onion-service descriptors), and
    /// `DirCache=2 HSDir=2`.
    pub fn advertise_dir_cache(&mut self) {
        self.tunnelled_dir_server = true;
        self.hidden_service_dir = true;
        self.proto = DIR_CACHE_PROTO.to_owned();
    }

    /// Advertises the introduction- and rendezvous-point roles (`HSIntro=4-5 HSRend=2`),
    /// for a relay that serves them.
    pub fn advertise_onion_service_roles(&mut self) {
        self.proto = with_onion_service_roles(&self.proto);
    }

    /// Advertises conflux at the exit (`Conflux=1`), for a relay that runs it.
    pub fn advertise_conflux(&mut self) {
        self.proto = with_protocols(&self.proto, &["Conflux=1"]);
    }
}

/// `proto` with `HSIntro=4-5 HSRend=2` added (kept in name order, as C tor lists them;
/// nothing added twice).
pub fn with_onion_service_roles(proto: &str) -> String {
    with_protocols(proto, &["HSIntro=4-5", "HSRend=2"])
}

/// `proto` with the `Name=versions` entries of `add` whose names it lacks (kept in name
/// order, as C tor lists them).
pub fn with_protocols(proto: &str, add: &[&str]) -> String {
    let mut words: Vec<&str> = proto.split_whitespace().collect();
    for &add in add {
        let name = add.split('=').next().unwrap_or(add);
        if !words.iter().any(|w| w.split('=').next() == Some(name)) {
            words.push(add);
        }
    }
    words.sort_by_key(|w| w.split('=').next().unwrap_or(w).to_owned());
    words.join(" ")
}

/// `platform` value: our own name, so authorities treat it as non-Tor and do not apply
/// Tor version gating (routerparse.c / process_descs.c only parse versions of "Tor ...").
pub fn platform_string() -> String {
    format!("Fors {} on Linux", env!("CARGO_PKG_VERSION"))
}

/// `bandwidth avg burst observed`, bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Long-term average rate (RelayBandwidthRate / BandwidthRate); must be at least 1.
    pub average: u32,
    pub burst: u32,
    /// Observed capacity: what authorities credit when nothing is measured.
    pub observed: u32,
}

/// Everything in the descriptor that does not come from the keys. The caller fills it from
/// the configuration, the address finder, the exit policy and bandwidth accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorParams {
    pub nickname: String,
    pub address: Ipv4Addr,
    pub or_port: u16,
    /// Advertised DirPort; 0, as every C tor relay since 0.4.7 (only authorities advertise
    /// one, router.c `router_should_advertise_dirport`).
    pub dir_port: u16,
    /// `or-address`: the IPv6 ORPort, if any.
    pub ipv6_or_address: Option<SocketAddrV6>,
    pub bandwidth: Bandwidth,
    pub platform: String,
    pub proto: String,
    pub published: SystemTime,
    pub uptime_secs: u64,
    pub contact: Option<String>,
    /// Legacy `family` entries (`$HEX` fingerprints or nicknames), joined on one line.
    pub family: Vec<String>,
    /// Happy-family certs (prop 321 `family-cert`), one per family key, each certifying our
    /// Ed25519 identity ([`RelayKeys::family_certs`]).
    pub family_certs: Vec<Ed25519Cert>,
    /// `accept`/`reject` lines, first match wins; empty means `reject *:*`.
    pub policy: Vec<String>,
    /// The `ipv6-policy` summary (e.g. `accept 80,443`); omitted if `None` or reject-all.
    pub ipv6_policy: Option<String>,
    pub tunnelled_dir_server: bool,
    /// `hidden-service-dir`: we store v3 onion-service descriptors (the authorities give
    /// HSDir only to relays that say so).
    pub hidden_service_dir: bool,
    pub caches_extra_info: bool,
    pub hibernating: bool,
}

impl DescriptorParams {
    /// A non-exit relay with the default platform and proto lines.
    pub fn new(nickname: &str, address: Ipv4Addr, or_port: u16, published: SystemTime) -> Self {
        Self {
            nickname: nickname.to_owned(),
            address,
            or_port,
            dir_port: 0,
            ipv6_or_address: None,
            bandwidth: Bandwidth {
                average: 1_073_741_824,
                burst: 1_073_741_824,
                observed: 0,
            },
            platform: platform_string(),
            proto: DEFAULT_PROTO.to_owned(),
            published,
            uptime_secs: 0,
            contact: None,
            family: Vec::new(),
            family_certs: Vec::new(),
            policy: vec!["reject *:*".to_owned()],
            ipv6_policy: None,
            tunnelled_dir_server: false,
            hidden_service_dir: false,
            caches_extra_info: false,
            hibernating: false,
        }
    }
}

/// Why a descriptor could not be built.
#[derive(Debug, Error)]
pub enum DescriptorError {
    #[error("nickname {0:?} is not 1-19 characters of [A-Za-z0-9]")]
    BadNickname(String),
    #[error("ORPort must not be 0")]
    ZeroOrPort,
    #[error("bandwidth rate must be at least 1 byte/s")]
    ZeroBandwidth,
    #[error("{field} must be a single line without control characters")]
    BadText { field: &'static str },
    #[error("exit policy line {0:?} is not an IPv4 accept/reject rule (accept6/reject6 get the descriptor rejected)")]
    BadPolicyLine(String),
    #[error("family entry {0:?} is neither a nickname nor a $fingerprint")]
    BadFamilyEntry(String),
    #[error("family-cert is not a valid family certificate for our identity: {0}")]
    BadFamilyCert(CertError),
    #[error(
        "the signing-key certificate does not carry the master key or certify our signing key"
    )]
    KeyChainMismatch,
    #[error("document is {size} bytes; authorities accept at most {max}")]
    TooLarge { size: usize, max: usize },
    #[error("RSA signing failed: {0}")]
    Rsa(#[from] RsaError),
}

/// A signed server descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDescriptor {
    pub text: String,
    /// SHA-1 of the signed part (`router ` through `router-signature\n`): the descriptor digest
    /// the authorities index it by.
    pub digest: [u8; 20],
}

/// A signed extra-info document and the digests the descriptor's `extra-info-digest` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraInfo {
    pub text: String,
    /// SHA-1 of `extra-info` through `router-signature\n` (C `router_get_extrainfo_hash`).
    pub sha1: [u8; 20],
    /// SHA-256 of the whole document, signature included (C `router.c`, `ei->digest256`).
    pub sha256: [u8; 32],
}

impl ExtraInfo {
    /// The `extra-info-digest` arguments: upper-case hex SHA-1, unpadded base64 SHA-256.
    pub fn digest_line_args(&self) -> String {
        format!(
            "{} {}",
            crate::util::hex::encode_upper(&self.sha1),
            base64_nopad(&self.sha256)
        )
    }
}

/// dir-spec §2.1.1 nickname rule.
pub fn is_legal_nickname(s: &str) -> bool {
    (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn single_line(field: &'static str, s: &str) -> Result<(), DescriptorError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(DescriptorError::BadText { field });
    }
    Ok(())
}

fn check_policy_line(line: &str) -> Result<(), DescriptorError> {
    let ok = (line.starts_with("accept ") || line.starts_with("reject "))
        && !line.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(DescriptorError::BadPolicyLine(line.to_owned()))
    }
}

fn check_family_entry(e: &str) -> Result<(), DescriptorError> {
    let ok = is_legal_nickname(e)
        || RsaIdentity::from_hex(e.split(['=', '~']).next().unwrap_or(""))
            .is_some_and(|_| e.starts_with('$'));
    if ok {
        Ok(())
    } else {
        Err(DescriptorError::BadFamilyEntry(e.to_owned()))
    }
}

/// The `identity-ed25519` item (cert object) and, for descriptors, `master-key-ed25519`.
fn ed_cert_block(keys: &RelayKeys) -> Result<String, DescriptorError> {
    let cert = keys.signing_cert();
    let master = keys.ed25519_identity();
    if cert.signing_key != Some(master.0) || cert.certified_key != keys.signing_key().identity().0 {
        return Err(DescriptorError::KeyChainMismatch);
    }
    Ok(format!(
        "identity-ed25519\n{}",
        encode_object("ED25519 CERT", cert.as_bytes())
    ))
}

/// Appends `router-sig-ed25519 <sig>\n` over prefix ‖ `text` (which must end with the
/// `router-sig-ed25519 ` token), then `router-signature\n` and the RSA signature over SHA-1 of
/// everything so far.
fn sign_document(keys: &RelayKeys, text: &mut String) -> Result<[u8; 20], DescriptorError> {
    text.push_str("router-sig-ed25519 ");
    let mut h = Sha256::new();
    h.update(ED_DESC_SIGNATURE_PREFIX);
    h.update(text.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let sig = keys.signing_key().sign(&digest);
    text.push_str(&base64_nopad(&sig.to_bytes()));
    text.push('\n');
    text.push_str("router-signature\n");
    let sha1: [u8; 20] = Sha1::digest(text.as_bytes()).into();
    let rsa_sig = tor_rsa::sign_unprefixed(keys.rsa_identity_key(), &sha1)?;
    text.push_str(&encode_object("SIGNATURE", &rsa_sig));
    Ok(sha1)
}

/// Builds the extra-info document: `extra-info`, `identity-ed25519`, `published`, and the two
/// signatures (no statistics yet).
pub fn build_extra_info(
    keys: &RelayKeys,
    nickname: &str,
    published: SystemTime,
) -> Result<ExtraInfo, DescriptorError> {
    if !is_legal_nickname(nickname) {
        return Err(DescriptorError::BadNickname(nickname.to_owned()));
    }
    let mut text = format!(
        "extra-info {nickname} {}\n{}published {}\n",
        keys.rsa_identity().to_hex(),
        ed_cert_block(keys)?,
        isotime::format(published)
    );
    let sha1 = sign_document(keys, &mut text)?;
    if text.len() > MAX_EXTRA_INFO_SIZE {
        return Err(DescriptorError::TooLarge {
            size: text.len(),
            max: MAX_EXTRA_INFO_SIZE,
        });
    }
    let sha256 = Sha256::digest(text.as_bytes()).into();
    Ok(ExtraInfo { text, sha1, sha256 })
}

/// Builds and signs the server descriptor. With `extra_info`, an `extra-info-digest` line
/// names it (upload both together).
pub fn build_descriptor(
    keys: &RelayKeys,
    p: &DescriptorParams,
    extra_info: Option<&ExtraInfo>,
) -> Result<ServerDescriptor, DescriptorError> {
    use std::fmt::Write;

    if !is_legal_nickname(&p.nickname) {
        return Err(DescriptorError::BadNickname(p.nickname.clone()));
    }
    if p.or_port == 0 {
        return Err(DescriptorError::ZeroOrPort);
    }
    if p.bandwidth.average == 0 {
        return Err(DescriptorError::ZeroBandwidth);
    }
    single_line("platform", &p.platform)?;
    single_line("proto", &p.proto)?;
    if let Some(c) = &p.contact {
        single_line("contact", c)?;
    }
    if let Some(v6) = &p.ipv6_policy {
        single_line("ipv6-policy", v6)?;
    }
    for l in &p.policy {
        check_policy_line(l)?;
    }
    for f in &p.family {
        check_family_entry(f)?;
    }
    for c in &p.family_certs {
        verify_family_cert(c, &keys.ed25519_identity(), Some(p.published))
            .map_err(DescriptorError::BadFamilyCert)?;
    }

    let published = isotime::format(p.published);
    let identity_pem = tor_rsa::public_key_to_pem(&keys.rsa_identity_public())?;
    let onion_pem = tor_rsa::public_key_to_pem(&keys.tap_onion_key().to_public_key())?;
    let tap_cc = keys.tap_onion_key_crosscert()?;
    let (ntor_cc, sign_bit) = keys.ntor_onion_key_crosscert(p.published);

    // Item order follows router.c so that the authorities' position checks hold:
    // identity-ed25519 right after router, router-sig-ed25519 second to last.
    let mut t = String::with_capacity(4096);
    let _ = writeln!(
        t,
        "router {} {} {} 0 {}",
        p.nickname, p.address, p.or_port, p.dir_port
    );
    t.push_str(&ed_cert_block(keys)?);
    let _ = writeln!(
        t,
        "master-key-ed25519 {}",
        keys.ed25519_identity().to_base64()
    );
    if let Some(v6) = &p.ipv6_or_address {
        let _ = writeln!(t, "or-address [{}]:{}", v6.ip(), v6.port());
    }
    let _ = writeln!(t, "platform {}", p.platform);
    let _ = writeln!(t, "proto {}", p.proto);
    let _ = writeln!(t, "published {published}");
    let _ = writeln!(
        t,
        "fingerprint {}",
        spaced_fingerprint(&keys.rsa_identity())
    );
    let _ = writeln!(t, "uptime {}", p.uptime_secs);
    let _ = writeln!(
        t,
        "bandwidth {} {} {}",
        p.bandwidth.average, p.bandwidth.burst, p.bandwidth.observed
    );
    if let Some(ei) = extra_info {
        let _ = writeln!(t, "extra-info-digest {}", ei.digest_line_args());
    }
    if p.caches_extra_info {
        t.push_str("caches-extra-info\n");
    }
    t.push_str("onion-key\n");
    t.push_str(&onion_pem);
    t.push_str("signing-key\n");
    t.push_str(&identity_pem);
    t.push_str("onion-key-crosscert\n");
    t.push_str(&encode_object("CROSSCERT", &tap_cc));
    let _ = writeln!(t, "ntor-onion-key-crosscert {sign_bit}");
    t.push_str(&encode_object("ED25519 CERT", ntor_cc.as_bytes()));
    if !p.family.is_empty() {
        let _ = writeln!(t, "family {}", p.family.join(" "));
    }
    if p.hibernating {
        t.push_str("hibernating 1\n");
    }
    // C 0.4.9 router.c writes it unconditionally, here; Fors only when it serves them.
    if p.hidden_service_dir {
        t.push_str("hidden-service-dir\n");
    }
    // C 0.4.9 router.c writes the family certs here, after `hibernating`/`hidden-service-dir`
    // and before `contact`; dir-spec places no constraint on their position.
    for c in &p.family_certs {
        t.push_str("family-cert\n");
        t.push_str(&encode_object("FAMILY CERT", c.as_bytes()));
    }
    if let Some(c) = p.contact.as_deref().filter(|c| !c.is_empty()) {
        let _ = writeln!(t, "contact {c}");
    }
    // C ≥ 0.4.8 writes the ntor key unpadded; parsers accept either form.
    let _ = writeln!(
        t,
        "ntor-onion-key {}",
        base64_nopad(keys.ntor_key().public.as_bytes())
    );
    if p.policy.is_empty() {
        t.push_str("reject *:*\n");
    }
    for l in &p.policy {
        t.push_str(l);
        t.push('\n');
    }
    if let Some(v6) = p.ipv6_policy.as_deref() {
        if v6 != "reject 1-65535" && !v6.is_empty() {
            let _ = writeln!(t, "ipv6-policy {v6}");
        }
    }
    if p.tunnelled_dir_server {
        t.push_str("tunnelled-dir-server\n");
    }
    let digest = sign_document(keys, &mut t)?;
    if t.len() > MAX_DESCRIPTOR_SIZE {
        return Err(DescriptorError::TooLarge {
            size: t.len(),
            max: MAX_DESCRIPTOR_SIZE,
        });
    }
    Ok(ServerDescriptor { text: t, digest })
}

#[cfg(test)]
mod dir_advertise_tests {
    use super::*;

    fn base() -> DirAdvertise {
        DirAdvertise {
            dir_cache: true,
            ipv4_or_port: true,
            bandwidth_rate: 1 << 30,
            relay_bandwidth_rate: 0,
            accounting: None,
        }
    }

    #[test]
    fn begindir_follows_c_tor_rules() {
        assert!(base().begindir());
        assert!(!DirAdvertise {
            dir_cache: false,
            ..base()
        }
        .begindir());
        assert!(!DirAdvertise {
            ipv4_or_port: false,
            ..base()
        }
        .begindir());
        // "BandwidthRate under 50KB".
        assert!(!DirAdvertise {
            bandwidth_rate: 51_199,
            ..base()
        }
        .begindir());
        assert!(!DirAdvertise {
            relay_bandwidth_rate: 40_000,
            ..base()
        }
        .begindir());
        assert!(DirAdvertise {
            relay_bandwidth_rate: 51_200,
            ..base()
        }
        .begindir());
        // "AccountingMax enabled": the rate could spend the allowance before the interval
        // ends.
        let day = 86_400;
        assert!(!DirAdvertise {
            relay_bandwidth_rate: 100_000,
            accounting: Some((100_000 * day, day)),
            ..base()
        }
        .begindir());
        assert!(DirAdvertise {
            relay_bandwidth_rate: 100_000,
            accounting: Some((100_001 * day, day)),
            ..base()
        }
        .begindir());
    }

    #[test]
    fn advertising_adds_the_line_and_the_protocol() {
        let mut p = DescriptorParams::new(
            "n",
            std::net::Ipv4Addr::LOCALHOST,
            9001,
            SystemTime::UNIX_EPOCH,
        );
        assert!(!p.proto.contains("DirCache") && !p.tunnelled_dir_server);
        assert!(!p.proto.contains("HSDir") && !p.hidden_service_dir);
        p.advertise_dir_cache();
        assert!(p.tunnelled_dir_server && p.hidden_service_dir);
        assert!(p.proto.contains("DirCache=2"));
        assert!(p.proto.split(' ').any(|w| w == "HSDir=2"));
        // protover order (sorted by name), as C tor writes and authorities expect.
        let names: Vec<&str> = p
            .proto
            .split(' ')
            .map(|w| w.split('=').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        // Every other protocol is still there.
        for word in DEFAULT_PROTO.split(' ') {
            assert!(p.proto.split(' ').any(|w| w == word), "{word}");
        }
    }

    #[test]
    fn onion_service_roles_are_added_once_in_name_order() {
        assert_eq!(
            super::with_onion_service_roles(DIR_CACHE_PROTO),
            "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 Link=4-5 \
             LinkAuth=3 Microdesc=2 Padding=2 Relay=2-6"
        );
        let twice =
            super::with_onion_service_roles(&super::with_onion_service_roles(DEFAULT_PROTO));
        assert_eq!(twice, super::with_onion_service_roles(DEFAULT_PROTO));
        assert!(
            twice.contains("FlowCtrl=1-2 HSIntro=4-5 HSRend=2 Link=4-5"),
            "{twice}"
        );
    }
}
