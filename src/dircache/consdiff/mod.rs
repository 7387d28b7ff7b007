//! Consensus diffs (dir-spec "Consensus diff format", proposal 140): a small ed script that
//! turns one consensus into a later one, so a client holding the older document downloads
//! only what changed.
//!
//! - [`generate`]: the diff from a base consensus to a target consensus, built the way C
//!   tor's `consdiff.c` builds it (router entries matched by identity, a longest common
//!   subsequence only between matched entries), and checked by applying it back before it
//!   is returned.
//! - [`apply`]: the diff applied with the strictness of C tor's `consdiff_apply_diff`, the
//!   code every C tor client runs on what a cache serves.
//!
//! Digests (dir-spec "Consensus diff format"): the `hash` line names the base by the
//! SHA3-256 of its signed part (from `network-status-version` through the space after the
//! first `directory-signature`, the digest clients send in `X-Or-Diff-From-Consensus`) and
//! the target by the SHA3-256 of its whole text, signatures included.

mod apply;
mod generate;
mod lines;
#[cfg(test)]
mod tests;

use sha3::{Digest, Sha3_256};
use thiserror::Error;

use crate::dircache::store::ConsensusFlavor;

pub use apply::{apply, diff_digests};
pub use generate::generate;

/// First line of every diff.
const DIFF_VERSION_LINE: &str = "network-status-diff-version 1";
/// How a diff starts, to tell one from a whole consensus in a fetched answer.
pub const DIFF_HEADER: &[u8] = b"network-status-diff-version 1\n";
/// Keyword of the second line.
const HASH_KEYWORD: &str = "hash";

/// Which of the two input documents an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Base,
    Target,
    Diff,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Base => "base consensus",
            Which::Target => "target consensus",
            Which::Diff => "diff",
        })
    }
}

/// Why a diff could not be generated or applied. Line numbers are 1-based lines of the diff.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsDiffError {
    // Both directions.
    #[error("the {0} does not end with a newline")]
    MissingFinalNewline(Which),
    #[error("the {0} has a line longer than 1 MiB")]
    LineTooLong(Which),

    // Generating.
    #[error("the {0} is not a v3 consensus")]
    NotAConsensus(Which),
    #[error("the base and target consensuses are of different flavours")]
    FlavorMismatch,
    #[error("the {0}'s router entries are not sorted by identity")]
    UnsortedRouters(Which),
    #[error("too few router identities in common (more than 10000 lines between two)")]
    TooFewCommonRouters,
    #[error("a line of the target to be added is \".\"")]
    DotLine,
    #[error("the generated diff does not reproduce the target (a bug)")]
    SelfCheck,

    // Applying.
    #[error("the diff is shorter than its two header lines")]
    TooShort,
    #[error("unknown diff format (first line is not \"network-status-diff-version 1\")")]
    UnknownVersion,
    #[error("malformed \"hash\" line")]
    BadHashLine,
    #[error("the base consensus does not match the diff's base digest")]
    BaseDigestMismatch,
    #[error("the result does not match the diff's target digest")]
    ResultDigestMismatch,
    #[error("diff line {line}: ed command longer than 127 bytes")]
    CommandLineTooLong { line: usize },
    #[error("diff line {line}: ed command without a valid line number")]
    MissingLineNumber { line: usize },
    #[error("diff line {line}: range without a valid end")]
    MissingRangeEnd { line: usize },
    #[error("diff line {line}: range end not after its start")]
    InvalidRange { line: usize },
    #[error("diff line {line}: commands not in descending order, or past the end")]
    NotDescending { line: usize },
    #[error("diff line {line}: line number without a command")]
    MissingCommand { line: usize },
    #[error("diff line {line}: command longer than one character")]
    CommandTooLong { line: usize },
    #[error("diff line {line}: unknown ed command")]
    UnknownCommand { line: usize },
    #[error("diff line {line}: \"$\" with a command other than d")]
    DollarNotDelete { line: usize },
    #[error("diff line {line}: a with a range")]
    AppendWithRange { line: usize },
    #[error("diff line {line}: lines to insert not ended by \".\"")]
    UnterminatedInsert { line: usize },
    #[error("diff line {line}: command inserts zero lines")]
    EmptyInsert { line: usize },
}

/// SHA3-256 of the whole document: how a diff names its target.
pub fn digest_full(doc: &str) -> [u8; 32] {
    Sha3_256::digest(doc.as_bytes()).into()
}

/// SHA3-256 of the signed part of a consensus, as C tor's
/// `router_get_networkstatus_v3_sha3_as_signed` computes it: from the first
/// `network-status-version` (which must start a line) through the first space after the
/// next `\ndirectory-signature`; the whole text when those cannot be found. This is how a
/// diff names its base and how a client names what it has (`X-Or-Diff-From-Consensus`).
pub fn digest_as_signed(doc: &str) -> [u8; 32] {
    let b = doc.as_bytes();
    let signed = signed_part(b).unwrap_or(b);
    Sha3_256::digest(signed).into()
}

fn signed_part(b: &[u8]) -> Option<&[u8]> {
    const START: &[u8] = b"network-status-version";
    const END: &[u8] = b"\ndirectory-signature";
    let start = find(b, START)?;
    if start != 0 && b[start - 1] != b'\n' {
        return None;
    }
    let after_start = start + START.len();
    let end = find(&b[after_start..], END)? + after_start + END.len();
    let space = b[end..].iter().position(|&c| c == b' ')? + end;
    Some(&b[start..=space])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The flavour named by a consensus's first line (dir-spec §3.4.1:
/// `network-status-version 3 [flavor]`), if the document is a consensus (its preamble has
/// `vote-status consensus`). Votes and other documents give `None`.
pub fn consensus_flavor(doc: &str) -> Option<ConsensusFlavor> {
    let mut lines = doc.split('\n');
    let first = lines.next()?;
    let flavor = match first.strip_prefix("network-status-version 3")? {
        "" | " ns" => ConsensusFlavor::Ns,
        " microdesc" => ConsensusFlavor::Microdesc,
        _ => return None,
    };
    // The preamble ends at the first router entry or directory-footer.
    for line in lines {
        if line == "vote-status consensus" {
            return Some(flavor);
        }
        if line.starts_with("r ") || line == "directory-footer" {
            break;
        }
    }
    None
}

fn hex_upper(d: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02X}");
    }
    s
}
