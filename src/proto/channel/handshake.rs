//! The link handshake, both roles, as C tor 0.4.9 runs it (tor-spec §"Negotiating and
//! initializing channels"; C `channeltls.c`, `connection_or.c`, `relay_handshake.c`).
//!
//! ```text
//! initiator                                   responder
//!   VERSIONS(4,5)            ───────────►
//!                            ◄───────────    VERSIONS, CERTS(1,2,4,5,7), AUTH_CHALLENGE(3), NETINFO
//!   CERTS(2,4,6,7)           ───────────►    (sent as soon as VERSIONS arrives)
//!   AUTHENTICATE, NETINFO    ───────────►    (once AUTH_CHALLENGE arrives)
//! ```
//! A client (`Channel::new_client`) sends only VERSIONS and NETINFO (timestamp 0, no
//! addresses), still checks the responder's CERTS, and ignores AUTH_CHALLENGE; the responder
//! then marks the peer as a client.
//!
//! Cells allowed before the handshake ends: a responder's first cell must be VERSIONS,
//! VPADDING or AUTHORIZE; after VERSIONS any variable cell is accepted (unknown ones, VPADDING
//! and AUTHORIZE are ignored but still logged for AUTHENTICATE); the only fixed cell is
//! NETINFO, and any other fixed cell — PADDING included, as in C's
//! `channel_tls_handle_cell` — closes the channel.

use std::time::{Duration, SystemTime};

use rand_core::{CryptoRng, RngCore};
use rustls::Connection;

use super::auth::{AuthFields, HandshakeLog};
use super::certs::{cert_sha256, verify_certs, PeerRole, VerifiedCerts};
use super::context::LinkContext;
use super::error::{AuthError, CertsError, ChannelError};
use super::state::{Channel, ExpectedPeer, OpenInfo, PeerIdentity, LINK_VERSIONS};
use super::tls::AUTH0003_EXPORTER_LABEL;
use crate::cell::chan::{
    AuthChallenge, AuthMethod, Authenticate, Certs, Netinfo, NetinfoAddr, Versions,
};
use crate::cell::link::encode_versions_cell;
use crate::cell::{Cell, ChanCmd, CircId, Framer, VarCell, CELL_BODY_LEN, CELL_LEN};
use crate::keys::time::unix_secs;

/// C only trusts the NETINFO clock if the handshake took less than this
/// (`channel_tls_process_netinfo_cell`).
const SKEW_TRUST_WINDOW: Duration = Duration::from_secs(180);
/// C warns about skew above an hour (`NETINFO_NOTICE_SKEW`).
const SKEW_NOTICE_SECS: i64 = 3600;

/// Handshake progress; dropped once the channel is open.
pub struct Handshake {
    log: HandshakeLog,
    /// Initiator only: who we meant to reach.
    expected: Option<ExpectedPeer>,
    tls_established: bool,
    /// Initiator only: SHA-256 of the responder's TLS certificate.
    peer_tls_cert_sha256: Option<[u8; 32]>,
    versions_sent_at: Option<SystemTime>,
    received_versions: bool,
    peer_certs: Option<VerifiedCerts>,
    received_auth_challenge: bool,
    received_authenticate: bool,
    /// The peer's identity is proven (initiator: CERTS checked; responder: AUTHENTICATE).
    authenticated: bool,
    sent_netinfo: bool,
    authenticated_to_peer: bool,
}

impl Handshake {
    pub(super) fn new(expected: Option<ExpectedPeer>) -> Self {
        Handshake {
            log: HandshakeLog::default(),
            expected,
            tls_established: false,
            peer_tls_cert_sha256: None,
            versions_sent_at: None,
            received_versions: false,
            peer_certs: None,
            received_auth_challenge: false,
            received_authenticate: false,
            authenticated: false,
            sent_netinfo: false,
            authenticated_to_peer: false,
        }
    }

    /// Once TLS is up, an initiator notes the responder's certificate for the type-5 check.
    pub(super) fn on_tls_established(
        &mut self,
        tls: &Connection,
        initiator: bool,
    ) -> Result<(), ChannelError> {
        if self.tls_established {
            return Ok(());
        }
        self.tls_established = true;
        if initiator {
            let der = tls
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or(CertsError::NoTlsCert)?;
            self.peer_tls_cert_sha256 = Some(cert_sha256(der));
        }
        Ok(())
    }
}

/// What the handshake hands back when it finishes: the open info and any clock skew.
pub(super) type Opened = (OpenInfo, Option<i64>);

impl Channel {
    pub(super) fn on_handshake_cell<R: RngCore + CryptoRng>(
        &mut self,
        hs: &mut Handshake,
        cell: Cell<'_>,
        wire: &[u8],
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Option<Opened>, ChannelError> {
        match cell {
            Cell::Var(v) => {
                if !hs.received_versions {
                    let allowed = match v.cmd {
                        ChanCmd::VERSIONS | ChanCmd::VPADDING | ChanCmd::AUTHORIZE => true,
                        // C's initiator is already in its v3 state and only the handlers of
                        // these refuse to run before VERSIONS; other variable cells are ignored.
                        ChanCmd::CERTS | ChanCmd::AUTH_CHALLENGE | ChanCmd::AUTHENTICATE => false,
                        _ => self.initiator,
                    };
                    if !allowed {
                        return Err(ChannelError::UnexpectedCell {
                            cmd: v.cmd,
                            when: "before VERSIONS",
                        });
                    }
                }
                // Every variable cell but AUTHENTICATE goes into the received log, before it
                // is processed (so SLOG on the initiator includes AUTH_CHALLENGE).
                if v.cmd != ChanCmd::AUTHENTICATE {
                    hs.log.record_received(wire);
                }
                match v.cmd {
                    ChanCmd::VERSIONS => self.on_versions(hs, v.body, now, rng)?,
                    ChanCmd::CERTS => self.on_certs(hs, v, now)?,
                    ChanCmd::AUTH_CHALLENGE => self.on_auth_challenge(hs, v, now, rng)?,
                    ChanCmd::AUTHENTICATE => self.on_authenticate(hs, v)?,
                    _ => {}
                }
                Ok(None)
            }
            Cell::Fixed(f) => match f.cmd {
                ChanCmd::NETINFO if hs.received_versions => {
                    self.on_netinfo(hs, f.body, now).map(Some)
                }
                // C drops a NETINFO that arrives before VERSIONS.
                ChanCmd::NETINFO => Ok(None),
                cmd => Err(ChannelError::UnexpectedCell {
                    cmd,
                    when: "during the handshake",
                }),
            },
        }
    }

    /// Queues our VERSIONS in its 2-byte-circuit-ID form, logged.
    pub(super) fn queue_versions(&mut self, hs: &mut Handshake, now: SystemTime) {
        let mut wire = [0u8; 5 + 2 * LINK_VERSIONS.len()];
        // Cannot fail: the buffer is sized for the list.
        if let Ok(n) = encode_versions_cell(&LINK_VERSIONS, &mut wire) {
            hs.log.record_sent(&wire[..n]);
            self.out.push_raw(&wire[..n]);
        }
        hs.versions_sent_at = Some(now);
    }

    /// Queues a variable cell on the negotiated link, logged.
    fn queue_var(
        &mut self,
        hs: &mut Handshake,
        cmd: ChanCmd,
        body: &[u8],
    ) -> Result<(), ChannelError> {
        let mut wire = vec![0u8; self.framer.circ_id_len() + 3 + body.len()];
        let n = self.framer.encode_var(CircId(0), cmd, body, &mut wire)?;
        hs.log.record_sent(&wire[..n]);
        self.out.push_raw(&wire[..n]);
        Ok(())
    }

    /// Queues NETINFO: the real time, the peer's address as we see it, our addresses. The
    /// sent log stops before it, as in C. A client sends timestamp 0 and no addresses of its
    /// own (tor-spec §"NETINFO cells": clients SHOULD NOT reveal their clock or address).
    fn queue_netinfo(&mut self, hs: &mut Handshake, now: SystemTime) -> Result<(), ChannelError> {
        hs.log.stop_sent();
        let mut body = [0u8; CELL_BODY_LEN];
        let (time, my_addrs) = match &self.ctx {
            Some(ctx) => (
                u32::try_from(unix_secs(now)).unwrap_or(u32::MAX),
                &ctx.my_addrs[..],
            ),
            None => (0, &[][..]),
        };
        Netinfo::encode(
            time,
            &NetinfoAddr::from(self.peer_addr),
            my_addrs,
            &mut body,
        )?;
        let mut wire = [0u8; CELL_LEN];
        let n = self
            .framer
            .encode_fixed(CircId(0), ChanCmd::NETINFO, &body, &mut wire)?;
        self.out.push_raw(&wire[..n]);
        hs.sent_netinfo = true;
        Ok(())
    }

    /// VERSIONS (C `channel_tls_process_versions_cell`).
    fn on_versions<R: RngCore + CryptoRng>(
        &mut self,
        hs: &mut Handshake,
        body: &[u8],
        now: SystemTime,
        rng: &mut R,
    ) -> Result<(), ChannelError> {
        let versions = Versions::parse(body)?;
        if hs.received_versions {
            return Ok(()); // C drops a second VERSIONS
        }
        let v = versions
            .highest_common(&LINK_VERSIONS)
            .ok_or(ChannelError::NoCommonVersion)?;
        hs.received_versions = true;
        if self.initiator {
            self.framer = Framer::negotiated(v)?;
            // A client proves nothing: no CERTS, no AUTHENTICATE.
            if let Some(ctx) = self.ctx.clone() {
                self.queue_var(hs, ChanCmd::CERTS, &ctx.initiator_certs)?;
            }
        } else {
            let ctx = self.relay_ctx(ChanCmd::VERSIONS)?;
            // Our VERSIONS goes out in the unnegotiated form, everything after on link v.
            self.queue_versions(hs, now);
            self.framer = Framer::negotiated(v)?;
            let certs = &ctx.responder_certs;
            self.queue_var(hs, ChanCmd::CERTS, certs)?;
            let mut challenge = [0u8; 32];
            rng.fill_bytes(&mut challenge);
            let mut ac = [0u8; 36];
            let n =
                AuthChallenge::encode(&challenge, &[AuthMethod::ED25519_SHA256_RFC5705], &mut ac)?;
            self.queue_var(hs, ChanCmd::AUTH_CHALLENGE, &ac[..n])?;
            self.queue_netinfo(hs, now)?;
        }
        Ok(())
    }

    /// CERTS (C `channel_tls_process_certs_cell`).
    fn on_certs(
        &mut self,
        hs: &mut Handshake,
        v: VarCell<'_>,
        now: SystemTime,
    ) -> Result<(), ChannelError> {
        if !v.circ_id.is_zero() {
            return Err(ChannelError::NonZeroCircId(v.cmd));
        }
        if hs.peer_certs.is_some() {
            return Err(ChannelError::UnexpectedCell {
                cmd: v.cmd,
                when: "twice",
            });
        }
        let certs = Certs::parse(v.body)?;
        if self.initiator {
            let tls_cert_sha256 = hs.peer_tls_cert_sha256.ok_or(CertsError::NoTlsCert)?;
            let vc = verify_certs(
                &certs,
                PeerRole::Responder {
                    tls_cert_sha256: &tls_cert_sha256,
                },
                now,
            )?;
            // C `connection_or_client_learned_peer_id`.
            if let Some(exp) = hs.expected {
                if vc.rsa_identity != exp.rsa {
                    return Err(ChannelError::WrongRsaIdentity {
                        expected: exp.rsa,
                        got: vc.rsa_identity,
                    });
                }
                if let Some(ed) = exp.ed {
                    if vc.ed_identity != ed {
                        return Err(ChannelError::WrongEd25519Identity {
                            expected: ed,
                            got: vc.ed_identity,
                        });
                    }
                }
            }
            hs.authenticated = true;
            hs.peer_certs = Some(vc);
        } else {
            hs.peer_certs = Some(verify_certs(&certs, PeerRole::Initiator, now)?);
        }
        Ok(())
    }

    /// Our relay context, which every responder has (only `new_client` channels lack one,
    /// and they are initiators); `cmd` names the cell that needed it.
    fn relay_ctx(&self, cmd: ChanCmd) -> Result<std::sync::Arc<LinkContext>, ChannelError> {
        self.ctx.clone().ok_or(ChannelError::UnexpectedCell {
            cmd,
            when: "on a client channel",
        })
    }

    /// The RFC 5705 exporter value for AUTH0003, context = CID.
    fn tls_secrets(&self, cid: &[u8; 32]) -> Result<[u8; 32], ChannelError> {
        // The link handshake always runs on rustls (the switch to the record layer comes
        // after the channel opens), so its exporter is there.
        self.rustls()
            .ok_or(ChannelError::NotOpen)?
            .export_keying_material([0u8; 32], AUTH0003_EXPORTER_LABEL, Some(&cid[..]))
            .map_err(|e| AuthError::Exporter(e.to_string()).into())
    }

    /// AUTH_CHALLENGE (C `channel_tls_process_auth_challenge_cell`): answer with
    /// AUTHENTICATE if method 3 is offered, then NETINFO.
    fn on_auth_challenge<R: RngCore + CryptoRng>(
        &mut self,
        hs: &mut Handshake,
        v: VarCell<'_>,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<(), ChannelError> {
        let unexpected = |when| ChannelError::UnexpectedCell { cmd: v.cmd, when };
        if !self.initiator {
            return Err(unexpected("from the initiator"));
        }
        if hs.received_auth_challenge {
            return Err(unexpected("twice"));
        }
        let Some(peer) = hs.peer_certs.clone() else {
            return Err(unexpected("before CERTS"));
        };
        if !v.circ_id.is_zero() {
            return Err(ChannelError::NonZeroCircId(v.cmd));
        }
        let ac = AuthChallenge::parse(v.body).map_err(ChannelError::BadAuthChallenge)?;
        hs.received_auth_challenge = true;
        // A client channel (no relay keys) does not authenticate: it only sends NETINFO.
        let ctx = self
            .ctx
            .clone()
            .filter(|_| ac.supports(AuthMethod::ED25519_SHA256_RFC5705));
        if let Some(ctx) = ctx {
            let cid = ctx.rsa_id_sha256;
            let fields = AuthFields {
                cid,
                sid: peer.rsa_id_sha256,
                cid_ed: ctx.ed_identity.0,
                sid_ed: peer.ed_identity.0,
                slog: hs.log.received_digest(),
                clog: hs.log.sent_digest(),
                scert: hs.peer_tls_cert_sha256.ok_or(CertsError::NoTlsCert)?,
                tlssecrets: self.tls_secrets(&cid)?,
            };
            let mut rand = [0u8; 24];
            rng.fill_bytes(&mut rand);
            let auth = fields.sign(&rand, &ctx.certs.link_auth_key);
            let mut body = [0u8; 4 + crate::cell::chan::AUTH0003_LEN];
            let n = Authenticate {
                auth_type: AuthMethod::ED25519_SHA256_RFC5705,
                auth: &auth,
            }
            .encode(&mut body)?;
            self.queue_var(hs, ChanCmd::AUTHENTICATE, &body[..n])?;
            hs.authenticated_to_peer = true;
        }
        // Without method 3 we stay unauthenticated, as C does, and the peer sees a client.
        if !hs.sent_netinfo {
            self.queue_netinfo(hs, now)?;
        }
        Ok(())
    }

    /// AUTHENTICATE (C `channel_tls_process_authenticate_cell`): recompute every field but
    /// RAND, compare, and check the signature with the type-6 key.
    fn on_authenticate(&mut self, hs: &mut Handshake, v: VarCell<'_>) -> Result<(), ChannelError> {
        if self.initiator {
            return Err(ChannelError::UnexpectedCell {
                cmd: v.cmd,
                when: "on a channel we initiated",
            });
        }
        if hs.received_authenticate {
            return Err(AuthError::Duplicate.into());
        }
        let ctx = self.relay_ctx(v.cmd)?;
        let peer = hs.peer_certs.clone().ok_or(AuthError::NoCerts)?;
        let a = Authenticate::parse(v.body).map_err(AuthError::Malformed)?;
        if a.auth_type != AuthMethod::ED25519_SHA256_RFC5705 {
            return Err(AuthError::UnsupportedMethod(a.auth_type.0).into());
        }
        let auth_key = peer.link_auth_key.ok_or(AuthError::NoCerts)?;
        let fields = AuthFields {
            cid: peer.rsa_id_sha256,
            sid: ctx.rsa_id_sha256,
            cid_ed: peer.ed_identity.0,
            sid_ed: ctx.ed_identity.0,
            slog: hs.log.sent_digest(),
            clog: hs.log.received_digest(),
            scert: ctx.tls_cert_sha256,
            tlssecrets: self.tls_secrets(&peer.rsa_id_sha256)?,
        };
        fields.verify(a.auth, &auth_key)?;
        hs.received_authenticate = true;
        hs.authenticated = true;
        hs.log.stop_received();
        Ok(())
    }

    /// NETINFO (C `channel_tls_process_netinfo_cell`): the last handshake cell.
    fn on_netinfo(
        &mut self,
        hs: &mut Handshake,
        body: &[u8; CELL_BODY_LEN],
        now: SystemTime,
    ) -> Result<Opened, ChannelError> {
        if self.initiator && !hs.authenticated {
            return Err(ChannelError::UnexpectedCell {
                cmd: ChanCmd::NETINFO,
                when: "before the responder's CERTS",
            });
        }
        let peer = match (&hs.peer_certs, hs.authenticated) {
            (Some(c), true) => PeerIdentity::Relay {
                rsa: c.rsa_identity,
                ed: c.ed_identity,
            },
            _ => PeerIdentity::Client,
        };
        let ni = Netinfo::parse(&body[..]).map_err(ChannelError::BadNetinfo)?;
        let ours = ni.other_addr.ip().ok_or(ChannelError::BadNetinfoAddress)?;
        let canonical = ni.my_addrs().any(|a| a.ip() == Some(self.peer_addr));

        let mut skew = None;
        if let Some(at) = hs.versions_sent_at {
            let quick = now.duration_since(at).unwrap_or_default() < SKEW_TRUST_WINDOW;
            let s = unix_secs(now) as i64 - i64::from(ni.timestamp);
            // C only warns about relays (or peers we chose to connect to).
            if quick && s.abs() > SKEW_NOTICE_SECS && (self.initiator || hs.authenticated) {
                skew = Some(s);
            }
        }
        if !hs.sent_netinfo {
            self.queue_netinfo(hs, now)?;
        }
        Ok((
            OpenInfo {
                peer,
                link_version: self.framer.link_version(),
                our_addr_according_to_peer: Some(ours),
                canonical,
                authenticated_to_peer: hs.authenticated_to_peer,
            },
            skew,
        ))
    }
}
