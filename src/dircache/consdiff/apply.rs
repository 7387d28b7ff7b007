//! Applying a diff, with C tor's `consdiff_apply_diff` rules: a client rejects any diff
//! these rules reject, so a cache must never serve one (dir-spec "Consensus diff format").

use super::lines;
use super::{digest_as_signed, digest_full, ConsDiffError, Which, DIFF_VERSION_LINE, HASH_KEYWORD};

/// C tor copies each command line into a 128-byte buffer and refuses longer ones.
const COMMAND_LINE_MAX: usize = 127;

/// Applies `diff` to `base` and returns the target consensus.
///
/// Checks, as C tor: the header lines, that `base`'s signed-part SHA3-256 is the diff's base
/// digest, every ed command (only `a`, `c`, `d`; line numbers strictly descending; `$` only
/// in `N,$d`; no range on `a`; insert blocks ended by `.` and not empty), and that the
/// result's SHA3-256 is the diff's target digest.
pub fn apply(base: &str, diff: &str) -> Result<String, ConsDiffError> {
    let base_lines = lines::split(base, Which::Base)?;
    let diff_lines = lines::split(diff, Which::Diff)?;
    let (base_digest, target_digest) = header_digests(&diff_lines)?;
    if digest_as_signed(base) != base_digest {
        return Err(ConsDiffError::BaseDigestMismatch);
    }
    let out = apply_ed(&base_lines, &diff_lines, 2)?;
    let text = lines::join(&out);
    if digest_full(&text) != target_digest {
        return Err(ConsDiffError::ResultDigestMismatch);
    }
    Ok(text)
}

/// The base and target digests of a diff's two header lines
/// (`network-status-diff-version 1`, `hash <hex base> <hex target>`).
pub fn diff_digests(diff: &str) -> Result<([u8; 32], [u8; 32]), ConsDiffError> {
    let mut it = diff.split('\n');
    let head: Vec<&str> = it.by_ref().take(2).collect();
    if head.len() < 2 || it.next().is_none() {
        return Err(ConsDiffError::TooShort);
    }
    header_digests(&head)
}

fn header_digests(diff: &[&str]) -> Result<([u8; 32], [u8; 32]), ConsDiffError> {
    if diff.len() < 2 {
        return Err(ConsDiffError::TooShort);
    }
    if diff[0] != DIFF_VERSION_LINE {
        return Err(ConsDiffError::UnknownVersion);
    }
    // Exactly three words separated by single spaces (C tor splits on each space and
    // keeps empty words, so doubled or trailing spaces make the count wrong).
    let words: Vec<&str> = diff[1].split(' ').collect();
    match words.as_slice() {
        [kw, base, target] if *kw == HASH_KEYWORD => Ok((
            hex32(base).ok_or(ConsDiffError::BadHashLine)?,
            hex32(target).ok_or(ConsDiffError::BadHashLine)?,
        )),
        _ => Err(ConsDiffError::BadHashLine),
    }
}

/// 64 hex digits, either case (C tor's `base16_decode`).
fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A base-10 line number between 0 and `i32::MAX` at the start of `s` (C tor's
/// `get_linenum`), and what follows it.
fn line_number(s: &[u8]) -> Option<(i64, &[u8])> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: i64 = 0;
    for &c in &s[..digits] {
        n = n * 10 + i64::from(c - b'0');
        if n > i64::from(i32::MAX) {
            return None;
        }
    }
    Some((n, &s[digits..]))
}

/// Runs the ed script `diff[first..]` on `base`. The commands go from the end of the
/// document to its start, so the result is built backwards and reversed at the end; `j` is
/// how many base lines (from the start) are still untouched.
pub(super) fn apply_ed<'a>(
    base: &[&'a str],
    diff: &[&'a str],
    first: usize,
) -> Result<Vec<&'a str>, ConsDiffError> {
    use ConsDiffError as E;
    let base_len = base.len() as i64;
    let mut j = base_len;
    let mut out: Vec<&'a str> = Vec::with_capacity(base.len());
    let mut i = first;
    while i < diff.len() {
        let line = i + 1;
        let cmd = diff[i].as_bytes();
        if cmd.len() > COMMAND_LINE_MAX {
            return Err(E::CommandLineTooLong { line });
        }
        // C tor reads the command as a C string; a NUL would end it early. Refusing it is
        // at least as strict.
        if cmd.contains(&0) {
            return Err(E::UnknownCommand { line });
        }
        let (start, rest) = line_number(cmd).ok_or(E::MissingLineNumber { line })?;
        let mut end = start;
        let mut had_range = false;
        let mut end_was_eof = false;
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix(b",") {
            had_range = true;
            if let Some(r) = r.strip_prefix(b"$") {
                end_was_eof = true;
                end = base_len;
                rest = r;
            } else {
                let (e, r) = line_number(r).ok_or(E::MissingRangeEnd { line })?;
                end = e;
                rest = r;
            }
            if end <= start {
                return Err(E::InvalidRange { line });
            }
        }
        if end > j {
            return Err(E::NotDescending { line });
        }
        let action = match rest {
            [] => return Err(E::MissingCommand { line }),
            [c] => *c,
            _ => return Err(E::CommandTooLong { line }),
        };
        if !matches!(action, b'a' | b'c' | b'd') {
            return Err(E::UnknownCommand { line });
        }
        if end_was_eof && action != b'd' {
            return Err(E::DollarNotDelete { line });
        }
        if had_range && action == b'a' {
            return Err(E::AppendWithRange { line });
        }

        // Untouched lines after the command's range, last first.
        while j > end {
            out.push(base[(j - 1) as usize]);
            j -= 1;
        }
        if action == b'c' || action == b'd' {
            // Lines start..=end are dropped.
            j = start - 1;
        }
        if action == b'a' || action == b'c' {
            let block_start = i + 1;
            let dot = diff[block_start.min(diff.len())..]
                .iter()
                .position(|l| *l == ".")
                .map(|p| p + block_start);
            let Some(dot) = dot else {
                // C tor: a command on the very last line inserts zero lines.
                return Err(if block_start >= diff.len() {
                    E::EmptyInsert { line }
                } else {
                    E::UnterminatedInsert { line }
                });
            };
            if dot == block_start {
                return Err(E::EmptyInsert { line });
            }
            out.extend(diff[block_start..dot].iter().rev());
            i = dot;
        }
        i += 1;
    }
    while j > 0 {
        out.push(base[(j - 1) as usize]);
        j -= 1;
    }
    out.reverse();
    Ok(out)
}
