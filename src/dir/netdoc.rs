//! The directory document meta-format (dir-spec §1.2 "Document meta-format"): a sequence of
//! items, each a keyword line optionally followed by one PEM-like object. Shared by the
//! descriptor self-check, the authority-certificate parser and the consensus parser.
//!
//! Every item records its byte range in the source so signature checks can hash the exact
//! signed span.

use base64::Engine;
use thiserror::Error;

/// Why a document is not well-formed at the meta-format level.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetdocError {
    #[error("document is not valid UTF-8")]
    NotUtf8,
    #[error("line {line}: bad keyword {keyword:?}")]
    BadKeyword { line: usize, keyword: String },
    #[error("line {line}: object has no matching \"-----END {tag}-----\" line")]
    UnterminatedObject { line: usize, tag: String },
    #[error("line {line}: malformed object BEGIN line")]
    BadObjectBegin { line: usize },
    #[error("line {line}: invalid base64 in {tag} object")]
    BadObjectBase64 { line: usize, tag: String },
    #[error("document does not end with a newline")]
    MissingFinalNewline,
}

/// One PEM-like object after a keyword line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The word(s) after `-----BEGIN `, e.g. `ED25519 CERT`.
    pub tag: String,
    pub data: Vec<u8>,
}

/// One item: keyword, arguments, optional object, and where it sits in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub keyword: &'a str,
    /// The keyword line after the keyword, with surrounding whitespace trimmed
    /// (for CONCAT_ARGS items such as `published` or `contact`).
    pub rest: &'a str,
    pub args: Vec<&'a str>,
    pub object: Option<Object>,
    /// Byte offset of the first character of the keyword line.
    pub start: usize,
    /// Byte offset just after the item (after its object's END line).
    pub end: usize,
    /// 1-based line number of the keyword line (for error messages).
    pub line: usize,
}

impl Item<'_> {
    /// The `i`th argument, if present.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).copied()
    }
}

/// dir-spec §1.2: KeywordChar ::= 'A'..'Z' | 'a'..'z' | '0'..'9' | '-'. C tor also tolerates
/// '_' and '@' (annotations); we accept '_' for robustness but never emit it.
fn is_keyword(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits `text` into items. `text` must end with `\n`. Blank lines are skipped, and the
/// `opt ` prefix (dir-spec §1.2, historical) is dropped as C tor does.
pub fn tokenize(text: &str) -> Result<Vec<Item<'_>>, NetdocError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(NetdocError::MissingFinalNewline);
    }
    let mut items = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let bytes = text.as_bytes();
    while pos < text.len() {
        let line_end = memchr_nl(bytes, pos).unwrap_or(text.len());
        line_no += 1;
        let line = &text[pos..line_end];
        let start = pos;
        pos = line_end + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut body = line.trim_end_matches([' ', '\t', '\r']);
        if let Some(rest) = body.strip_prefix("opt ") {
            body = rest.trim_start_matches([' ', '\t']);
        }
        let (keyword, rest) = match body.find([' ', '\t']) {
            Some(i) => (&body[..i], body[i..].trim_matches([' ', '\t'])),
            None => (body, ""),
        };
        if !is_keyword(keyword) {
            return Err(NetdocError::BadKeyword {
                line: line_no,
                keyword: keyword.chars().take(40).collect(),
            });
        }
        let args = rest.split([' ', '\t']).filter(|a| !a.is_empty()).collect();
        let item_line = line_no;
        let mut object = None;
        if text[pos.min(text.len())..].starts_with("-----BEGIN ") {
            let begin_end = memchr_nl(bytes, pos).unwrap_or(text.len());
            line_no += 1;
            let begin = text[pos..begin_end].trim_end_matches('\r');
            let tag = begin
                .strip_prefix("-----BEGIN ")
                .and_then(|t| t.strip_suffix("-----"))
                .filter(|t| !t.is_empty())
                .ok_or(NetdocError::BadObjectBegin { line: line_no })?
                .to_owned();
            let end_marker = format!("-----END {tag}-----");
            let mut b64 = String::new();
            let mut cursor = begin_end + 1;
            let obj_line = line_no;
            loop {
                if cursor >= text.len() {
                    return Err(NetdocError::UnterminatedObject {
                        line: obj_line,
                        tag,
                    });
                }
                let le = memchr_nl(bytes, cursor).unwrap_or(text.len());
                line_no += 1;
                let l = text[cursor..le].trim_end_matches('\r');
                cursor = le + 1;
                if l == end_marker {
                    break;
                }
                if l.starts_with("-----") {
                    return Err(NetdocError::UnterminatedObject {
                        line: obj_line,
                        tag,
                    });
                }
                b64.push_str(l.trim());
            }
            let data = decode_base64_any(&b64).ok_or_else(|| NetdocError::BadObjectBase64 {
                line: obj_line,
                tag: tag.clone(),
            })?;
            object = Some(Object { tag, data });
            pos = cursor;
        }
        items.push(Item {
            keyword,
            rest,
            args,
            object,
            start,
            end: pos.min(text.len()),
            line: item_line,
        });
    }
    Ok(items)
}

fn memchr_nl(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| i + from)
}

/// Decodes standard base64 with or without `=` padding (Tor writes both forms).
pub fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Standard base64 without padding (ed25519 keys/signatures, digests in descriptors).
pub fn base64_nopad(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
}

/// An object block as C tor writes it: base64 in 64-column lines, `\n` line ends.
pub fn encode_object(tag: &str, data: &[u8]) -> String {
    crate::keys::pem::encode(tag, data)
}

/// Byte offset just past the first occurrence of `needle` at or after `from`, then through
/// the next `term` character (inclusive): C tor's `router_get_hash_impl_helper` rule for
/// locating the end of a signed span.
pub fn signed_end(text: &str, from: usize, needle: &str, term: char) -> Option<usize> {
    let at = text.get(from..)?.find(needle)? + from;
    let after = at + needle.len();
    let t = text[after..].find(term)? + after;
    Some(t + term.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_objects_and_offsets() {
        let text = "router a 1.2.3.4 9001 0 0\nopt contact me  here \nsig\n-----BEGIN SIGNATURE-----\naGVs\nbG8=\n-----END SIGNATURE-----\n\nlast\n";
        let items = tokenize(text).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].keyword, "router");
        assert_eq!(items[0].args, ["a", "1.2.3.4", "9001", "0", "0"]);
        assert_eq!(items[1].keyword, "contact");
        assert_eq!(items[1].rest, "me  here");
        let obj = items[2].object.as_ref().unwrap();
        assert_eq!(obj.tag, "SIGNATURE");
        assert_eq!(obj.data, b"hello");
        assert_eq!(
            &text[items[2].start..items[2].end],
            "sig\n-----BEGIN SIGNATURE-----\naGVs\nbG8=\n-----END SIGNATURE-----\n"
        );
        assert_eq!(items[3].keyword, "last");
        assert_eq!(items[3].line, 9);
    }

    #[test]
    fn malformed_documents() {
        assert_eq!(tokenize("a\nb"), Err(NetdocError::MissingFinalNewline));
        assert!(matches!(
            tokenize("-bad\n"),
            Err(NetdocError::BadKeyword { .. })
        ));
        assert!(matches!(
            tokenize("k\n-----BEGIN X-----\nAAAA\n"),
            Err(NetdocError::UnterminatedObject { .. })
        ));
        assert!(matches!(
            tokenize("k\n-----BEGIN X-----\nAAAA\n-----END Y-----\n"),
            Err(NetdocError::UnterminatedObject { .. })
        ));
        assert!(matches!(
            tokenize("k\n-----BEGIN X-----\n*!*\n-----END X-----\n"),
            Err(NetdocError::BadObjectBase64 { .. })
        ));
        assert!(matches!(
            tokenize("k\n-----BEGIN -----\n-----END -----\n"),
            Err(NetdocError::BadObjectBegin { .. })
        ));
    }

    #[test]
    fn signed_end_rule() {
        let t = "router x\nfoo\nrouter-sig-ed25519 AAAA\n";
        let e = signed_end(t, 0, "\nrouter-sig-ed25519", ' ').unwrap();
        assert_eq!(&t[..e], "router x\nfoo\nrouter-sig-ed25519 ");
        assert_eq!(signed_end(t, 0, "\nnothing", ' '), None);
    }
}
