//! A relay's long-term keys made in memory (no files): the RSA identity, the ed25519 master
//! and signing keys and the signing key's certificate, and the link certificates and
//! channel context they give. For channel tests and the channel fuzz targets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::keys::cert::{CertKeyType, CertType, Ed25519Cert};
use fors::keys::link::{LinkCertInputs, LinkCertPolicy, LinkCerts};
use fors::keys::rsa as tor_rsa;
use fors::keys::Ed25519Keypair;
use fors::proto::channel::{ChannelConfig, LinkContext};
use rsa::RsaPrivateKey;

/// The address a test relay's link context claims: loopback.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A relay's long-term keys, made in memory.
pub struct TestIdentity {
    pub rsa: RsaPrivateKey,
    pub master: Ed25519Keypair,
    pub signing: Ed25519Keypair,
    pub signing_cert: Ed25519Cert,
}

impl TestIdentity {
    pub fn generate() -> Self {
        Self::generate_with_signing_cert(SystemTime::now(), 30 * 86400)
    }

    /// The type-4 cert is issued at `issued` and lives `lifetime` seconds.
    pub fn generate_with_signing_cert(issued: SystemTime, lifetime: u64) -> Self {
        let mut rng = rand::thread_rng();
        let rsa = tor_rsa::generate(&mut rng, 1024).unwrap();
        let master = Ed25519Keypair::generate(&mut rng);
        let signing = Ed25519Keypair::generate(&mut rng);
        let signing_cert = Ed25519Cert::sign(
            &master,
            CertType::IDENTITY_V_SIGNING,
            CertKeyType::ED25519,
            &signing.public().to_bytes(),
            issued,
            lifetime,
            true,
        );
        TestIdentity {
            rsa,
            master,
            signing,
            signing_cert,
        }
    }

    pub fn rsa_id(&self) -> RsaIdentity {
        tor_rsa::rsa_identity(&self.rsa.to_public_key()).unwrap()
    }

    pub fn ed_id(&self) -> Ed25519Identity {
        self.master.identity()
    }

    pub fn link_certs(&self) -> LinkCerts {
        let inputs = LinkCertInputs {
            rsa_identity: &self.rsa,
            master: &self.master.identity(),
            signing: &self.signing,
            signing_cert: &self.signing_cert,
        };
        LinkCerts::mint(
            &mut rand::thread_rng(),
            &inputs,
            SystemTime::now(),
            &LinkCertPolicy::default(),
        )
        .unwrap()
    }

    pub fn context(&self, config: ChannelConfig) -> Arc<LinkContext> {
        Arc::new(LinkContext::new(self.link_certs(), &[LOCAL], config).unwrap())
    }
}
