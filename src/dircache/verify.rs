//! Verifying what the mirror fetched before it is stored or served (dir-spec §4 "Directory
//! cache operation": a cache checks a document as a client would).
//!
//! - consensus (either flavour): signatures by more than half of the trusted authorities
//!   (`dir::consensus`), and reasonably live;
//! - authority certificates: self-signed and cross-certified (`dir::authcert`), not expired;
//! - microdescriptors: SHA-256 of each one's text must be a digest the microdesc consensus
//!   lists on an `m` line (C `microdescs_add_to_cache` drops the rest);
//! - server descriptors: SHA-1 of the signed part must be a digest the ns consensus lists on
//!   an `r` line, and the descriptor's signatures must verify (`dir::descriptor_check`).
//!
//! A batch is checked document by document: one bad document is counted and dropped, the
//! others are kept (C does the same when a cache answers with a partly bad batch).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::store::{ConsensusDoc, ConsensusFlavor, Document};
use crate::crypto::ids::RsaIdentity;
use crate::dir::authcert::{parse_cert, AuthorityCert};
use crate::dir::consensus::{Consensus, ConsensusError};
use crate::dir::descriptor_check::check_descriptor;

/// Why a fetched consensus was refused.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    #[error("asked for the {expected} flavour, got {got:?}")]
    WrongFlavor { expected: &'static str, got: String },
    #[error("consensus valid-after {got} is not newer than the one kept ({have})")]
    NotNewer { got: u64, have: u64 },
    #[error("consensus is not UTF-8 text")]
    NotText,
}

/// A consensus that verified, parsed, and ready for the store.
pub struct VerifiedConsensus {
    pub consensus: Consensus,
    pub doc: ConsensusDoc,
}

/// The flavour name on the `network-status-version` line.
fn flavor_word(f: ConsensusFlavor) -> &'static str {
    match f {
        ConsensusFlavor::Ns => "ns",
        ConsensusFlavor::Microdesc => "microdesc",
    }
}

/// Parses and verifies a fetched consensus of `flavor`. `have_valid_after` is the kept one's
/// (an older or equal one is refused, C `networkstatus_set_current_consensus` "not newer").
pub fn verify_consensus(
    body: &[u8],
    flavor: ConsensusFlavor,
    certs: &[AuthorityCert],
    trusted: &[RsaIdentity],
    now: SystemTime,
    have_valid_after: Option<u64>,
) -> Result<VerifiedConsensus, VerifyError> {
    let text = std::str::from_utf8(body).map_err(|_| VerifyError::NotText)?;
    let consensus = Consensus::parse(text)?;
    if consensus.flavor != flavor_word(flavor) {
        return Err(VerifyError::WrongFlavor {
            expected: flavor_word(flavor),
            got: consensus.flavor.clone(),
        });
    }
    if let Some(have) = have_valid_after {
        if consensus.valid_after <= have {
            return Err(VerifyError::NotNewer {
                got: consensus.valid_after,
                have,
            });
        }
    }
    consensus.check_reasonably_live(now)?;
    let summary = consensus.verify_signatures(certs, trusted, Some(now))?;
    let doc = ConsensusDoc {
        body: Arc::from(body),
        flavor,
        valid_after: consensus.valid_after,
        fresh_until: consensus.fresh_until,
        valid_until: consensus.valid_until,
        signers: summary.good,
        sha3_digest: consensus.sha3_as_signed(),
        try_diff_newer_than: try_diff_newer_than(&consensus),
    };
    Ok(VerifiedConsensus { consensus, doc })
}

/// C tor's `try-diff-for-consensus-newer-than` (dirclient.c: hours, default 72, bounds
/// 0..=8192) in seconds.
fn try_diff_newer_than(c: &Consensus) -> u64 {
    let hours = c
        .params
        .get("try-diff-for-consensus-newer-than", 72, 0, 8192);
    u64::try_from(hours).unwrap_or(0) * 3600
}

/// Splits a concatenation of documents at every line that starts with `keyword` followed by
/// a space or newline. Text before the first such line is returned as a leading piece too
/// (so that junk is counted, not silently skipped).
fn split_at_keyword<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    let mut starts = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(keyword) {
            if rest.starts_with(' ') || rest.starts_with('\n') || rest.is_empty() {
                starts.push(at);
            }
        }
        at += line.len();
    }
    let mut out = Vec::with_capacity(starts.len() + 1);
    if starts.first().is_none_or(|&s| s > 0) {
        let end = starts.first().copied().unwrap_or(text.len());
        if !text[..end].trim().is_empty() {
            out.push(&text[..end]);
        }
    }
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        out.push(&text[s..end]);
    }
    out
}

/// What a batch check kept and how many documents it refused.
#[derive(Debug)]
pub struct Batch<K> {
    pub good: Vec<(K, Document)>,
    /// Malformed, or a signature that does not verify.
    pub rejected: usize,
    /// Well-formed but not among the wanted digests. In an answer to a fetch that is as bad
    /// as a refusal (it is not what was asked for); in a file read back it is a document the
    /// consensus in force no longer lists (or one whose bytes changed: the digest is all
    /// that names a microdescriptor).
    pub unlisted: usize,
}

fn doc(text: &str, published: u64) -> Document {
    Document {
        body: Arc::from(text.as_bytes()),
        published,
    }
}

/// A certificate and the key the store files it under.
pub type CertKey = (RsaIdentity, [u8; 20]);

/// Verifies a `/tor/keys/...` body: each certificate's signatures (C
/// `authority_cert_parse_from_string`) and that it has not expired at `now`. Only
/// authorities in `trusted` are kept (C `trusted_dirs_load_certs_from_string` drops the
/// certificates of unknown authorities).
pub fn verify_certs(
    body: &[u8],
    trusted: &[RsaIdentity],
    now: SystemTime,
) -> (Batch<CertKey>, Vec<AuthorityCert>) {
    let Ok(text) = std::str::from_utf8(body) else {
        return (
            Batch {
                good: Vec::new(),
                rejected: 1,
                unlisted: 0,
            },
            Vec::new(),
        );
    };
    let mut batch = Batch {
        good: Vec::new(),
        rejected: 0,
        unlisted: 0,
    };
    let mut parsed = Vec::new();
    for piece in split_at_keyword(text, "dir-key-certificate-version") {
        match parse_cert(piece) {
            Ok(c) if !c.is_expired(now) && trusted.contains(&c.fingerprint) => {
                batch.good.push((
                    (c.fingerprint, c.signing_key_digest),
                    doc(piece, c.published_secs),
                ));
                parsed.push(c);
            }
            _ => batch.rejected += 1,
        }
    }
    (batch, parsed)
}

/// Verifies a `/tor/micro/d/...` body: each microdescriptor (it starts at its `onion-key`
/// line, dir-spec §3.3) is kept only if its SHA-256 is in `wanted` (the microdesc
/// consensus's `m` digests). `published` is the consensus's valid-after (microdescs carry no
/// date; C files them by `last-listed`).
pub fn verify_microdescs(
    body: &[u8],
    wanted: &HashSet<[u8; 32]>,
    published: u64,
) -> Batch<[u8; 32]> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Batch {
            good: Vec::new(),
            rejected: 1,
            unlisted: 0,
        };
    };
    let mut batch = Batch {
        good: Vec::new(),
        rejected: 0,
        unlisted: 0,
    };
    for piece in split_at_keyword(text, "onion-key") {
        let d: [u8; 32] = Sha256::digest(piece.as_bytes()).into();
        if !piece.starts_with("onion-key") {
            batch.rejected += 1;
        } else if wanted.contains(&d) {
            batch.good.push((d, doc(piece, published)));
        } else {
            batch.unlisted += 1;
        }
    }
    batch
}

/// A server descriptor's store key: the relay's identity and the descriptor digest.
pub type ServerKey = (RsaIdentity, [u8; 20]);

/// Verifies a `/tor/server/d/...` body: each descriptor must check as an authority checks
/// it (signatures, cross-certificates) and its digest must be the one `wanted` lists for
/// its relay (the ns consensus's `r` lines). No time window: the consensus vouches for it.
pub fn verify_server_descriptors(
    body: &[u8],
    wanted: &HashMap<[u8; 20], RsaIdentity>,
) -> Batch<ServerKey> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Batch {
            good: Vec::new(),
            rejected: 1,
            unlisted: 0,
        };
    };
    let mut batch = Batch {
        good: Vec::new(),
        rejected: 0,
        unlisted: 0,
    };
    for piece in split_at_keyword(text, "router") {
        match check_descriptor(piece, None) {
            Ok(c) if wanted.get(&c.digest) == Some(&c.rsa_identity) => {
                batch
                    .good
                    .push(((c.rsa_identity, c.digest), doc(piece, c.published_secs)));
            }
            Ok(_) => batch.unlisted += 1,
            Err(_) => batch.rejected += 1,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diff age is the consensus's own parameter, in C tor's bounds, 72 h without it.
    #[test]
    fn diff_age_comes_from_the_consensus_parameter() {
        let md = include_str!("testdata/consensus-microdesc.txt");
        let with = |v: &str| {
            let t = md.replace(
                "sendme_accept_min_version=1\n",
                &format!("sendme_accept_min_version=1 try-diff-for-consensus-newer-than={v}\n"),
            );
            try_diff_newer_than(&Consensus::parse(&t).unwrap())
        };
        assert_eq!(
            try_diff_newer_than(&Consensus::parse(md).unwrap()),
            72 * 3600
        );
        assert_eq!(with("5"), 5 * 3600);
        assert_eq!(with("0"), 0);
        // Out of bounds: C tor's `networkstatus_get_param` clips to 0..=8192.
        assert_eq!(with("9000"), 8192 * 3600);
    }

    #[test]
    fn splitting_keeps_every_byte_and_leading_junk() {
        let t = "junk\nonion-key\nA\nid x\nonion-key\nB\n";
        let p = split_at_keyword(t, "onion-key");
        assert_eq!(p, ["junk\n", "onion-key\nA\nid x\n", "onion-key\nB\n"]);
        assert_eq!(p.concat(), t);
        // A keyword that is only a prefix of the line's keyword does not split.
        let t = "router a\nrouter-signature\nx\nrouter b\n";
        assert_eq!(
            split_at_keyword(t, "router"),
            ["router a\nrouter-signature\nx\n", "router b\n"]
        );
        assert!(split_at_keyword("", "router").is_empty());
    }

    #[test]
    fn microdescs_are_kept_only_when_listed() {
        let a = "onion-key\nntor-onion-key AAAA\nid ed25519 x\n";
        let b = "onion-key\nntor-onion-key BBBB\n";
        let da: [u8; 32] = Sha256::digest(a.as_bytes()).into();
        let wanted: HashSet<_> = [da].into();
        let body = format!("{a}{b}");
        let batch = verify_microdescs(body.as_bytes(), &wanted, 7);
        assert_eq!(batch.good.len(), 1);
        assert_eq!(batch.good[0].0, da);
        assert_eq!(&*batch.good[0].1.body, a.as_bytes());
        assert_eq!((batch.rejected, batch.unlisted), (0, 1));
        // One byte changed: the digest no longer matches, nothing is kept.
        let tampered = a.replace("AAAA", "AAAB");
        let batch = verify_microdescs(tampered.as_bytes(), &wanted, 7);
        assert!(batch.good.is_empty());
        assert_eq!(batch.unlisted, 1);
        // Leading text that is no microdescriptor: refused.
        let batch = verify_microdescs(format!("junk\n{a}").as_bytes(), &wanted, 7);
        assert_eq!((batch.good.len(), batch.rejected), (1, 1));
        // Not UTF-8: refused, counted.
        assert_eq!(verify_microdescs(&[0xff, 0xfe], &wanted, 7).rejected, 1);
    }
}
