//! Generating a diff the way C tor's `consdiff.c` does, so that C tor's applier accepts it
//! and its size matches what a C tor cache serves.
//!
//! A consensus lists router entries sorted by identity, so instead of one quadratic longest
//! common subsequence over the whole document, the two documents are walked identity by
//! identity: each stretch up to the next identity both list is compared on its own
//! (Hirschberg's linear-space LCS), which keeps the cost near-linear for real consensuses.

use super::apply::apply_ed;
use super::lines;
use super::{
    consensus_flavor, digest_as_signed, digest_full, hex_upper, ConsDiffError, Which,
    DIFF_VERSION_LINE, HASH_KEYWORD,
};

/// C tor refuses to compare stretches longer than this between two common identities:
/// real consensuses never have them, and the LCS would be slow.
const MAX_STRETCH_LINES: usize = 10_000;

/// The signatures section starts here; it is not signed, so it is deleted from the base
/// wholesale rather than diffed.
const SIGNATURES_START: &str = "directory-signature ";

/// The diff that turns consensus `base` into consensus `target`, both full documents as
/// served (signatures included).
///
/// Refuses, as C tor does, documents that are not consensuses or not of one flavour,
/// router entries out of identity order, stretches of more than 10000 lines without a
/// common identity, and a target line to insert that is just `.` (it would end the insert
/// block). The diff is applied back to `base` and compared with `target` before it is
/// returned.
pub fn generate(base: &str, target: &str) -> Result<String, ConsDiffError> {
    let fb = consensus_flavor(base).ok_or(ConsDiffError::NotAConsensus(Which::Base))?;
    let ft = consensus_flavor(target).ok_or(ConsDiffError::NotAConsensus(Which::Target))?;
    if fb != ft {
        return Err(ConsDiffError::FlavorMismatch);
    }
    let base_lines = lines::split(base, Which::Base)?;
    let target_lines = lines::split(target, Which::Target)?;
    // Line numbers are C ints on the applying side.
    if base_lines.len() > i32::MAX as usize || target_lines.len() > i32::MAX as usize {
        return Err(ConsDiffError::TooFewCommonRouters);
    }

    let mut commands: Vec<String> = Vec::new();
    let ed = ed_diff(&base_lines, &target_lines, &mut commands)?;

    // Applied back before it is served, as C tor does.
    let check = apply_ed(&base_lines, &ed, 0).map_err(|_| ConsDiffError::SelfCheck)?;
    if check != target_lines {
        return Err(ConsDiffError::SelfCheck);
    }

    let hash_line = format!(
        "{HASH_KEYWORD} {} {}",
        hex_upper(&digest_as_signed(base)),
        hex_upper(&digest_full(target))
    );
    let mut all = Vec::with_capacity(ed.len() + 2);
    all.push(DIFF_VERSION_LINE);
    all.push(hash_line.as_str());
    all.extend_from_slice(&ed);
    Ok(lines::join(&all))
}

/// The ed script (without header) from `base` to `target`. Command lines are kept in
/// `commands`; the returned lines borrow from it and from `target`.
fn ed_diff<'a>(
    base_full: &[&'a str],
    target: &[&'a str],
    commands: &'a mut Vec<String>,
) -> Result<Vec<&'a str>, ConsDiffError> {
    // The base's signatures go with one command; the rest is compared.
    let sig_at = base_full
        .iter()
        .position(|l| l.starts_with(SIGNATURES_START));
    let base = &base_full[..sig_at.unwrap_or(base_full.len())];
    if let Some(at) = sig_at {
        commands.push(format!("{},$d", at + 1));
    }

    let changed = find_changes(base, target)?;

    // Walk both documents from the end; each run of changed lines becomes one command.
    // Emitted as (command index, optional target range) and turned into lines below, since
    // `commands` must stop growing before lines borrow from it.
    let mut script: Vec<(usize, Option<(usize, usize)>)> = Vec::new();
    if sig_at.is_some() {
        script.push((0, None));
    }
    let (c1, c2) = changed;
    let mut i1 = base.len() as isize - 1;
    let mut i2 = target.len() as isize - 1;
    let set = |v: &Vec<bool>, i: isize| i >= 0 && v[i as usize];
    while i1 >= 0 || i2 >= 0 {
        if !set(&c1, i1) && !set(&c2, i2) {
            i1 = (i1 - 1).max(-1);
            i2 = (i2 - 1).max(-1);
            continue;
        }
        let (end1, end2) = (i1, i2);
        while set(&c1, i1) {
            i1 -= 1;
        }
        while set(&c2, i2) {
            i2 -= 1;
        }
        let start1 = i1 + 1;
        let start2 = i2 + 1;
        let added = end2 - i2;
        let deleted = end1 - i1;
        let cmd = match (added, deleted) {
            (0, 1) => format!("{}d", start1 + 1),
            (0, _) => format!("{},{}d", start1 + 1, start1 + deleted),
            (_, 0) => format!("{start1}a"),
            (_, 1) => format!("{}c", start1 + 1),
            (_, _) => format!("{},{}c", start1 + 1, start1 + deleted),
        };
        commands.push(cmd);
        let block = if added > 0 {
            let (s, e) = (start2 as usize, end2 as usize);
            if target[s..=e].contains(&".") {
                return Err(ConsDiffError::DotLine);
            }
            Some((s, e))
        } else {
            None
        };
        script.push((commands.len() - 1, block));
    }

    let commands: &'a Vec<String> = commands;
    let mut out: Vec<&'a str> = Vec::new();
    for (c, block) in script {
        out.push(commands[c].as_str());
        if let Some((s, e)) = block {
            out.extend_from_slice(&target[s..=e]);
            out.push(".");
        }
    }
    Ok(out)
}

/// Which base lines are gone (first) and which target lines are new (second), compared
/// stretch by stretch between router entries of the same identity.
fn find_changes(base: &[&str], target: &[&str]) -> Result<(Vec<bool>, Vec<bool>), ConsDiffError> {
    let (len1, len2) = (base.len(), target.len());
    let mut changed1 = vec![false; len1];
    let mut changed2 = vec![false; len2];
    let mut it1 = RouterIter::new(base, Which::Base);
    let mut it2 = RouterIter::new(target, Which::Target);
    let (mut start1, mut start2) = (0usize, 0usize);

    // it1.pos / it2.pos reach len1 / len2 and never pass them; each round moves at least one
    // of them forward until both are at the end.
    while it1.pos < len1 || it2.pos < len2 {
        if it1.pos < len1 {
            it1.advance()?;
        }
        if it2.pos < len2 {
            it2.advance()?;
        }
        if it1.pos < len1 || it2.pos < len2 {
            // Move the side with the lower identity until both stand on the same one; when
            // one side runs out, the rest of both documents is one last stretch.
            let mut cmp = id_cmp(it1.hash, it2.hash);
            while cmp != std::cmp::Ordering::Equal {
                if it1.pos < len1 && cmp.is_lt() {
                    it1.advance()?;
                    if it1.pos == len1 {
                        it2.pos = len2;
                        break;
                    }
                } else if it2.pos < len2 && cmp.is_gt() {
                    it2.advance()?;
                    if it2.pos == len2 {
                        it1.pos = len1;
                        break;
                    }
                } else {
                    it1.pos = len1;
                    it2.pos = len2;
                    break;
                }
                cmp = id_cmp(it1.hash, it2.hash);
            }
        }
        if it1.pos - start1 > MAX_STRETCH_LINES || it2.pos - start2 > MAX_STRETCH_LINES {
            return Err(ConsDiffError::TooFewCommonRouters);
        }
        let mut lcs = Lcs::default();
        lcs.changes(
            Slice::new(base, start1, it1.pos),
            Slice::new(target, start2, it2.pos),
            &mut changed1,
            &mut changed2,
        );
        start1 = it1.pos;
        start2 = it2.pos;
    }
    Ok((changed1, changed2))
}

/// Walks the `r ` lines of one document, checking identities strictly increase.
struct RouterIter<'d, 'a> {
    lines: &'d [&'a str],
    which: Which,
    /// Index of the current router line; starts "before the first line" and ends at
    /// `lines.len()`. Kept one past the start so it fits a `usize`.
    pos: usize,
    started: bool,
    hash: Option<&'a [u8]>,
}

impl<'d, 'a> RouterIter<'d, 'a> {
    fn new(lines: &'d [&'a str], which: Which) -> Self {
        RouterIter {
            lines,
            which,
            pos: 0,
            started: false,
            hash: None,
        }
    }

    /// To the next router line (or the end). C tor's `find_next_router_line`.
    fn advance(&mut self) -> Result<(), ConsDiffError> {
        let from = if self.started { self.pos + 1 } else { 0 };
        self.started = true;
        let next = self.lines[from.min(self.lines.len())..]
            .iter()
            .position(|l| router_id(l).is_some())
            .map_or(self.lines.len(), |p| p + from);
        self.pos = next;
        if next < self.lines.len() {
            let h = router_id(self.lines[next]);
            if h.is_none() || id_cmp(h, self.hash).is_le() {
                return Err(ConsDiffError::UnsortedRouters(self.which));
            }
            self.hash = h;
        }
        Ok(())
    }
}

/// The value of a base64 digit; `None` for anything else (padding and spaces included).
fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// The identity of a router entry line (`r <nickname> <identity> ...`), as the run of base64
/// digits after the nickname; `None` if the line is not one.
fn router_id(line: &str) -> Option<&[u8]> {
    let b = line.as_bytes();
    let rest = b.strip_prefix(b"r ")?;
    let sp = rest.iter().position(|&c| c == b' ')?;
    let id = &rest[sp + 1..];
    let n = id.iter().take_while(|&&c| b64_value(c).is_some()).count();
    (n > 0).then_some(&id[..n])
}

/// Orders identities by their base64 digit values (the order of the decoded bytes); no
/// identity sorts before any.
fn id_cmp(a: Option<&[u8]>, b: Option<&[u8]>) -> std::cmp::Ordering {
    match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => a
            .iter()
            .map(|&c| b64_value(c))
            .cmp(b.iter().map(|&c| b64_value(c))),
    }
}

/// A range of a document's lines.
#[derive(Clone, Copy)]
struct Slice<'d, 'a> {
    lines: &'d [&'a str],
    off: usize,
    len: usize,
}

impl<'d, 'a> Slice<'d, 'a> {
    fn new(lines: &'d [&'a str], start: usize, end: usize) -> Self {
        Slice {
            lines,
            off: start,
            len: end - start,
        }
    }
    fn get(&self, i: usize) -> &'a str {
        self.lines[self.off + i]
    }
    fn sub(&self, from: usize, to: usize) -> Self {
        Slice {
            lines: self.lines,
            off: self.off + from,
            len: to - from,
        }
    }
}

/// Hirschberg's divide and conquer on one stretch, with its two row buffers reused.
#[derive(Default)]
struct Lcs {
    row: Vec<u32>,
    prev: Vec<u32>,
    top: Vec<u32>,
}

impl Lcs {
    /// Marks in `changed1` the lines of `s1` not in a longest common subsequence with `s2`,
    /// and in `changed2` those of `s2`.
    fn changes(&mut self, s1: Slice, s2: Slice, changed1: &mut [bool], changed2: &mut [bool]) {
        let (s1, s2) = trim(s1, s2);
        if s1.len <= 1 {
            mark(changed1, changed2, s1, s2);
        } else if s2.len <= 1 {
            mark(changed2, changed1, s2, s1);
        } else {
            let mid = s1.len / 2;
            let top = s1.sub(0, mid);
            let bot = s1.sub(mid, s1.len);
            let col = self.split_column(top, bot, s2);
            self.changes(top, s2.sub(0, col), changed1, changed2);
            self.changes(bot, s2.sub(col, s2.len), changed1, changed2);
        }
    }

    /// Where to cut `s2` so that the LCS of (top, left) plus that of (bot, right) is a
    /// longest one: the first column with the largest sum.
    fn split_column(&mut self, top: Slice, bot: Slice, s2: Slice) -> usize {
        self.lengths(top, s2, false);
        std::mem::swap(&mut self.top, &mut self.row);
        self.lengths(bot, s2, true);
        let mut best = 0;
        let mut best_sum = None;
        for i in 0..=s2.len {
            let sum = self.top[i] + self.row[s2.len - i];
            if best_sum.is_none_or(|b| sum > b) {
                best = i;
                best_sum = Some(sum);
            }
        }
        best
    }

    /// Last row of the LCS length table of `s1` against `s2` (both walked backwards if
    /// `reverse`), left in `self.row`.
    fn lengths(&mut self, s1: Slice, s2: Slice, reverse: bool) {
        let n = s2.len + 1;
        self.row.clear();
        self.row.resize(n, 0);
        self.prev.clear();
        self.prev.resize(n, 0);
        for i in 0..s1.len {
            std::mem::swap(&mut self.row, &mut self.prev);
            let a = s1.get(if reverse { s1.len - 1 - i } else { i });
            self.row[0] = 0;
            for j in 0..s2.len {
                let b = s2.get(if reverse { s2.len - 1 - j } else { j });
                self.row[j + 1] = if a == b {
                    self.prev[j] + 1
                } else {
                    self.row[j].max(self.prev[j + 1])
                };
            }
        }
    }
}

/// Drops the lines both slices share at their start and at their end.
fn trim<'d, 'a>(mut s1: Slice<'d, 'a>, mut s2: Slice<'d, 'a>) -> (Slice<'d, 'a>, Slice<'d, 'a>) {
    while s1.len > 0 && s2.len > 0 && s1.get(0) == s2.get(0) {
        s1.off += 1;
        s1.len -= 1;
        s2.off += 1;
        s2.len -= 1;
    }
    while s1.len > 0 && s2.len > 0 && s1.get(s1.len - 1) == s2.get(s2.len - 1) {
        s1.len -= 1;
        s2.len -= 1;
    }
    (s1, s2)
}

/// The base case: `s1` has at most one line. It is kept if `s2` has it (its first
/// occurrence); every other line of `s2` is new.
fn mark(changed1: &mut [bool], changed2: &mut [bool], s1: Slice, s2: Slice) {
    let mut keep = None;
    if s1.len == 1 {
        let line = s1.get(0);
        keep = (0..s2.len).find(|&i| s2.get(i) == line);
        if keep.is_none() {
            changed1[s1.off] = true;
        }
    }
    for i in 0..s2.len {
        if Some(i) != keep {
            changed2[s2.off + i] = true;
        }
    }
}
