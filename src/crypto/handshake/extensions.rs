//! ntor-v3 circuit extensions: the encrypted message each side sends inside the handshake
//! (proposals 332, 346, 358; tor-spec §"CREATE2 circuit extensions"), and the relay's
//! policy for answering them.
//!
//! Wire format: `N (u8)`, then N times `type (u8) | len (u8) | body (len bytes)`.

/// Extension type: client asks for congestion control (empty body, proposal 324).
pub const EXT_CC_REQUEST: u8 = 1;
/// Extension type: relay accepts congestion control; body = `sendme_inc (u8)`.
pub const EXT_CC_RESPONSE: u8 = 2;
/// Extension type: client asks for subprotocol capabilities (proposal 346).
pub const EXT_SUBPROTO: u8 = 3;

/// Protocol id of "Relay" in SUBPROTO requests (`PRT_RELAY` in C tor's protover.h).
pub const PROTOCOL_ID_RELAY: u8 = 2;
/// Relay capability number for Counter Galois Onion relay crypto (proposal 359).
pub const RELAY_CAP_CRYPT_CGO: u8 = 6;

/// One requested subprotocol capability, e.g. Relay=6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubprotoCap {
    /// Protocol id as numbered in protover (Link=0, LinkAuth=1, Relay=2, ...).
    pub protocol_id: u8,
    /// Capability (version) number within that protocol.
    pub capability: u8,
}

/// One ntor-v3 extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitExtension {
    /// Type 1: client wants congestion control. Any body is ignored, as C tor does.
    CcRequest,
    /// Type 2: relay enables congestion control with this SENDME increment.
    CcResponse {
        /// Cells per circuit-level SENDME.
        sendme_inc: u8,
    },
    /// Type 3: client asks the relay to enable these capabilities (the spec asks for them
    /// sorted and unique; C tor 0.4.9 does not check).
    SubprotoRequest(Vec<SubprotoCap>),
    /// Any other type, or a type 3 whose body is not whole pairs; kept verbatim so callers
    /// may ignore it (unknown types are skipped).
    Unrecognized {
        /// Extension type byte.
        ext_type: u8,
        /// Body bytes.
        body: Vec<u8>,
    },
}

impl CircuitExtension {
    /// The extension's type byte.
    pub fn ext_type(&self) -> u8 {
        match self {
            Self::CcRequest => EXT_CC_REQUEST,
            Self::CcResponse { .. } => EXT_CC_RESPONSE,
            Self::SubprotoRequest(_) => EXT_SUBPROTO,
            Self::Unrecognized { ext_type, .. } => *ext_type,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::CcRequest => {}
            Self::CcResponse { sendme_inc } => out.push(*sendme_inc),
            Self::SubprotoRequest(caps) => {
                for c in caps {
                    out.extend_from_slice(&[c.protocol_id, c.capability]);
                }
            }
            Self::Unrecognized { body, .. } => out.extend_from_slice(body),
        }
    }
}

/// Why an extension list could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// The message ended before the count byte or inside an extension.
    #[error("extension list truncated")]
    Truncated,
    /// A CC_RESPONSE had no `sendme_inc` byte.
    #[error("CC_RESPONSE extension has an empty body")]
    EmptyCcResponse,
    /// More than 255 extensions, or a body over 255 bytes, cannot be encoded.
    #[error("extension list or body too long to encode")]
    TooLong,
}

/// Decodes an extension list. Bytes after the last extension are ignored, as C tor's
/// trunnel parser does; extension order is not checked (receivers must not rely on it).
pub fn decode_extensions(msg: &[u8]) -> Result<Vec<CircuitExtension>, ExtensionError> {
    let (&n, mut rest) = msg.split_first().ok_or(ExtensionError::Truncated)?;
    let mut exts = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let [ext_type, len, ..] = *rest else {
            return Err(ExtensionError::Truncated);
        };
        let body = rest
            .get(2..2 + usize::from(len))
            .ok_or(ExtensionError::Truncated)?;
        rest = &rest[2 + usize::from(len)..];
        exts.push(match ext_type {
            EXT_CC_REQUEST => CircuitExtension::CcRequest,
            EXT_CC_RESPONSE => {
                // C parses a one-byte struct from the body and ignores what follows.
                let &sendme_inc = body.first().ok_or(ExtensionError::EmptyCcResponse)?;
                CircuitExtension::CcResponse { sendme_inc }
            }
            // A body that is not whole (protocol_id, capability) pairs stays undecoded:
            // C tor parses only the first SUBPROTO extension (`trn_extension_find`), so a
            // malformed one fails the handshake only there ([`negotiate_circ_params`]).
            EXT_SUBPROTO if body.len() % 2 != 0 => CircuitExtension::Unrecognized {
                ext_type,
                body: body.to_vec(),
            },
            EXT_SUBPROTO => CircuitExtension::SubprotoRequest(
                body.chunks_exact(2)
                    .map(|p| SubprotoCap {
                        protocol_id: p[0],
                        capability: p[1],
                    })
                    .collect(),
            ),
            _ => CircuitExtension::Unrecognized {
                ext_type,
                body: body.to_vec(),
            },
        });
    }
    Ok(exts)
}

/// Encodes an extension list into `out`, sorted by type as the spec asks senders to do
/// (a stable sort, so repeated types keep their order).
pub fn encode_extensions(
    exts: &[CircuitExtension],
    out: &mut Vec<u8>,
) -> Result<(), ExtensionError> {
    let n = u8::try_from(exts.len()).map_err(|_| ExtensionError::TooLong)?;
    let mut sorted: Vec<&CircuitExtension> = exts.iter().collect();
    sorted.sort_by_key(|e| e.ext_type());
    out.push(n);
    for e in sorted {
        out.push(e.ext_type());
        let len_at = out.len();
        out.push(0);
        e.encode_body(out);
        let len = u8::try_from(out.len() - len_at - 1).map_err(|_| ExtensionError::TooLong)?;
        out[len_at] = len;
    }
    Ok(())
}

/// What the relay's consensus and build say about ntor-v3 circuit parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtorV3ServerPolicy {
    /// Congestion control is on in our consensus (`cc_alg` is not SENDME-only).
    pub cc_enabled: bool,
    /// Consensus `cc_sendme_inc` (default 31) to echo in CC_RESPONSE.
    pub sendme_inc: u8,
    /// We run CGO relay crypto (Relay=6) on circuits: the circuit core sets this from its
    /// hop type (`HopCrypto::supports_cgo`) and keys CGO with
    /// `ntor_v3::server_handshake_circ` (`server_handshake` derives tor1 keys only).
    pub cgo_supported: bool,
}

impl Default for NtorV3ServerPolicy {
    fn default() -> Self {
        Self {
            cc_enabled: true,
            sendme_inc: 31,
            cgo_supported: false,
        }
    }
}

/// Circuit parameters agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NegotiatedCircParams {
    /// Congestion control is on, with this `sendme_inc`; `None` means fixed-window SENDMEs.
    pub cc: Option<u8>,
    /// CGO relay crypto (and the v1 relay cell format) is on.
    pub cgo: bool,
}

/// Why the relay refuses a client's ntor-v3 requests; the handshake then fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// SUBPROTO asked for a capability we cannot enable for a circuit.
    #[error("client requested unsupported subprotocol {}={}", .0.protocol_id, .0.capability)]
    UnsupportedSubproto(SubprotoCap),
    /// The first SUBPROTO extension was not whole (protocol_id, capability) pairs.
    #[error("SUBPROTO extension body has odd length")]
    MalformedSubproto,
    /// CGO was requested but we do not implement it.
    #[error("client requested CGO relay crypto, which we do not support")]
    CgoUnsupported,
    /// CGO (v1 cell format) needs congestion control, which will not be on.
    #[error("CGO requested without congestion control")]
    CgoWithoutCc,
}

/// Decides the circuit parameters for a client's extensions and builds our reply, following
/// C tor's `negotiate_v3_ntor_server_circ_params`:
///
/// * CC is on only if the client sent CC_REQUEST *and* our consensus enables CC; then we
///   reply CC_RESPONSE with our `sendme_inc`. Otherwise the reply is an empty list.
/// * SUBPROTO may only name Relay=6 (CGO); anything else fails the handshake, since the
///   client would assume a capability we did not enable. Order and repeats are not checked:
///   the spec asks clients to send the list sorted and unique, but C tor 0.4.9's
///   `relay_process_subproto_ext` never advances its `prev` pointer, so its order check never
///   runs and it accepts `Relay=6` twice; refusing that would fail handshakes C tor completes.
/// * CGO without CC fails: the v1 cell format cannot carry stream-level SENDMEs.
/// * While `cgo_supported` is false, a CGO request fails the handshake. C tor 0.4.9 always
///   accepts it; refusing is the only safe answer for a relay that cannot run CGO. The
///   production circuit core runs CGO, so it accepts (only test cores with tor1-only hops
///   refuse).
///
/// As in C, only the first extension of each type counts and unknown types are ignored.
pub fn negotiate_circ_params(
    client_exts: &[CircuitExtension],
    policy: &NtorV3ServerPolicy,
) -> Result<(Vec<CircuitExtension>, NegotiatedCircParams), NegotiationError> {
    let cc_requested = client_exts
        .iter()
        .any(|e| matches!(e, CircuitExtension::CcRequest));
    let cc_on = cc_requested && policy.cc_enabled;

    let mut cgo = false;
    let first_subproto = match client_exts.iter().find(|e| e.ext_type() == EXT_SUBPROTO) {
        Some(CircuitExtension::SubprotoRequest(caps)) => Some(caps),
        Some(_) => return Err(NegotiationError::MalformedSubproto),
        None => None,
    };
    if let Some(caps) = first_subproto {
        for cap in caps {
            if cap.protocol_id == PROTOCOL_ID_RELAY && cap.capability == RELAY_CAP_CRYPT_CGO {
                if !policy.cgo_supported {
                    return Err(NegotiationError::CgoUnsupported);
                }
                cgo = true;
            } else {
                return Err(NegotiationError::UnsupportedSubproto(*cap));
            }
        }
    }
    if cgo && !cc_on {
        return Err(NegotiationError::CgoWithoutCc);
    }

    let cc = cc_on.then_some(policy.sendme_inc);
    let reply = cc
        .map(|sendme_inc| CircuitExtension::CcResponse { sendme_inc })
        .into_iter()
        .collect();
    Ok((reply, NegotiatedCircParams { cc, cgo }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGO: SubprotoCap = SubprotoCap {
        protocol_id: PROTOCOL_ID_RELAY,
        capability: RELAY_CAP_CRYPT_CGO,
    };

    fn enc(exts: &[CircuitExtension]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_extensions(exts, &mut v).unwrap();
        v
    }

    #[test]
    fn encode_known_layouts() {
        assert_eq!(enc(&[]), [0]);
        // C tor's client CC request: N=1, type 1, len 0.
        assert_eq!(enc(&[CircuitExtension::CcRequest]), [1, 1, 0]);
        assert_eq!(
            enc(&[CircuitExtension::CcResponse { sendme_inc: 31 }]),
            [1, 2, 1, 31]
        );
        // Sorted by type on output.
        assert_eq!(
            enc(&[
                CircuitExtension::SubprotoRequest(vec![CGO]),
                CircuitExtension::CcRequest
            ]),
            [2, 1, 0, 3, 2, 2, 6]
        );
    }

    #[test]
    fn round_trip() {
        let exts = vec![
            CircuitExtension::CcRequest,
            CircuitExtension::CcResponse { sendme_inc: 7 },
            CircuitExtension::SubprotoRequest(vec![
                SubprotoCap {
                    protocol_id: 1,
                    capability: 3,
                },
                CGO,
            ]),
            CircuitExtension::Unrecognized {
                ext_type: 200,
                body: vec![1, 2, 3],
            },
        ];
        assert_eq!(decode_extensions(&enc(&exts)).unwrap(), exts);
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode_extensions(&[]), Err(ExtensionError::Truncated));
        assert_eq!(decode_extensions(&[1]), Err(ExtensionError::Truncated));
        assert_eq!(decode_extensions(&[1, 9]), Err(ExtensionError::Truncated));
        assert_eq!(
            decode_extensions(&[1, 9, 3, 0, 0]),
            Err(ExtensionError::Truncated)
        );
        assert_eq!(
            decode_extensions(&[1, 2, 0]),
            Err(ExtensionError::EmptyCcResponse)
        );
        // An odd SUBPROTO body stays undecoded (refused by negotiation if it is the first).
        assert_eq!(
            decode_extensions(&[1, 3, 3, 2, 6, 1]).unwrap(),
            vec![CircuitExtension::Unrecognized {
                ext_type: EXT_SUBPROTO,
                body: vec![2, 6, 1]
            }]
        );
        // Trailing bytes are ignored; CC_REQUEST bodies are ignored.
        assert_eq!(decode_extensions(&[0, 0xff]).unwrap(), vec![]);
        assert_eq!(
            decode_extensions(&[1, 1, 2, 9, 9]).unwrap(),
            vec![CircuitExtension::CcRequest]
        );
    }

    #[test]
    fn encode_limits() {
        let big = CircuitExtension::Unrecognized {
            ext_type: 9,
            body: vec![0; 256],
        };
        assert_eq!(
            encode_extensions(&[big], &mut Vec::new()),
            Err(ExtensionError::TooLong)
        );
        let many = vec![CircuitExtension::CcRequest; 256];
        assert_eq!(
            encode_extensions(&many, &mut Vec::new()),
            Err(ExtensionError::TooLong)
        );
    }

    #[test]
    fn cc_negotiation() {
        let on = NtorV3ServerPolicy {
            cc_enabled: true,
            sendme_inc: 31,
            cgo_supported: false,
        };
        let off = NtorV3ServerPolicy {
            cc_enabled: false,
            ..on
        };
        let req = [CircuitExtension::CcRequest];

        let (reply, p) = negotiate_circ_params(&req, &on).unwrap();
        assert_eq!(reply, vec![CircuitExtension::CcResponse { sendme_inc: 31 }]);
        assert_eq!(
            p,
            NegotiatedCircParams {
                cc: Some(31),
                cgo: false
            }
        );

        // CC disabled in our consensus: empty reply, no CC.
        let (reply, p) = negotiate_circ_params(&req, &off).unwrap();
        assert!(reply.is_empty());
        assert_eq!(p.cc, None);

        // No request: empty reply. Unknown extensions are ignored.
        let unknown = [CircuitExtension::Unrecognized {
            ext_type: 77,
            body: vec![],
        }];
        let (reply, p) = negotiate_circ_params(&unknown, &on).unwrap();
        assert!(reply.is_empty());
        assert_eq!(p, NegotiatedCircParams::default());
    }

    #[test]
    fn subproto_negotiation() {
        let no_cgo = NtorV3ServerPolicy::default();
        let cgo_ok = NtorV3ServerPolicy {
            cgo_supported: true,
            ..no_cgo
        };
        let cc = CircuitExtension::CcRequest;
        let sub = |caps: Vec<SubprotoCap>| CircuitExtension::SubprotoRequest(caps);

        assert_eq!(
            negotiate_circ_params(&[cc.clone(), sub(vec![CGO])], &no_cgo).unwrap_err(),
            NegotiationError::CgoUnsupported
        );
        let (reply, p) = negotiate_circ_params(&[cc.clone(), sub(vec![CGO])], &cgo_ok).unwrap();
        assert_eq!(
            p,
            NegotiatedCircParams {
                cc: Some(31),
                cgo: true
            }
        );
        assert_eq!(reply, vec![CircuitExtension::CcResponse { sendme_inc: 31 }]);
        assert_eq!(
            negotiate_circ_params(&[sub(vec![CGO])], &cgo_ok).unwrap_err(),
            NegotiationError::CgoWithoutCc
        );
        let cc_off = NtorV3ServerPolicy {
            cc_enabled: false,
            ..cgo_ok
        };
        assert_eq!(
            negotiate_circ_params(&[cc.clone(), sub(vec![CGO])], &cc_off).unwrap_err(),
            NegotiationError::CgoWithoutCc
        );

        let other = SubprotoCap {
            protocol_id: PROTOCOL_ID_RELAY,
            capability: 5,
        };
        assert_eq!(
            negotiate_circ_params(&[cc.clone(), sub(vec![other])], &cgo_ok).unwrap_err(),
            NegotiationError::UnsupportedSubproto(other)
        );
        // A repeated Relay=6 is accepted, as C tor 0.4.9 accepts it (see the function's docs).
        let (_, p) = negotiate_circ_params(&[cc.clone(), sub(vec![CGO, CGO])], &cgo_ok).unwrap();
        assert!(p.cgo);
        // ... but still not by a relay without CGO, nor beside another capability.
        assert_eq!(
            negotiate_circ_params(&[cc.clone(), sub(vec![CGO, CGO])], &no_cgo).unwrap_err(),
            NegotiationError::CgoUnsupported
        );
        assert_eq!(
            negotiate_circ_params(&[cc.clone(), sub(vec![CGO, other])], &cgo_ok).unwrap_err(),
            NegotiationError::UnsupportedSubproto(other)
        );
        // A malformed first SUBPROTO fails, a malformed later one is never parsed (C tor).
        let odd = CircuitExtension::Unrecognized {
            ext_type: EXT_SUBPROTO,
            body: vec![2, 6, 1],
        };
        assert_eq!(
            negotiate_circ_params(&[cc.clone(), odd.clone(), sub(vec![CGO])], &cgo_ok).unwrap_err(),
            NegotiationError::MalformedSubproto
        );
        let (_, p) = negotiate_circ_params(&[cc.clone(), sub(vec![CGO]), odd], &cgo_ok).unwrap();
        assert!(p.cgo);
        // Only the first SUBPROTO extension counts, as C's `trn_extension_find`.
        let (_, p) =
            negotiate_circ_params(&[cc.clone(), sub(vec![CGO]), sub(vec![other])], &cgo_ok)
                .unwrap();
        assert!(p.cgo);
        // An empty SUBPROTO request asks for nothing.
        assert!(negotiate_circ_params(&[cc, sub(vec![])], &no_cgo).is_ok());
    }
}
