//! Documents as lists of lines, as C tor's `consensus_split_lines` sees them.

use super::{ConsDiffError, Which};

/// C tor's `CONSENSUS_LINE_MAX_LEN`: a longer line means the input is not a consensus.
const LINE_MAX_LEN: usize = 1 << 20;

/// The NL-terminated lines of `doc`, without their newlines. Refuses a last line without a
/// newline (no ambiguity about a final partial line) and over-long lines.
pub(super) fn split(doc: &str, which: Which) -> Result<Vec<&str>, ConsDiffError> {
    if doc.is_empty() {
        return Ok(Vec::new());
    }
    let body = doc
        .strip_suffix('\n')
        .ok_or(ConsDiffError::MissingFinalNewline(which))?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.iter().any(|l| l.len() > LINE_MAX_LEN) {
        return Err(ConsDiffError::LineTooLong(which));
    }
    Ok(lines)
}

/// Every line followed by a newline.
pub(super) fn join(lines: &[&str]) -> String {
    let n = lines.iter().map(|l| l.len() + 1).sum();
    let mut out = String::with_capacity(n);
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}
