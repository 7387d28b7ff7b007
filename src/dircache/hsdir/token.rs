//! C tor's directory-document tokenizer (`tokenize_string`/`get_next_token` in
//! `feature/dirparse/parsecommon.c`), byte for byte, for a rule table such as the one for the
//! outer layer of a v3 onion-service descriptor.
//!
//! The crate's general netdoc tokenizer (`dir::netdoc`) is tolerant in its own ways; an HSDir
//! must accept exactly what C tor HSDirs accept, or a service sees its descriptor stored on
//! some of its HSDirs and refused on others. The quirks kept here on purpose: `#` starts a
//! comment wherever whitespace may appear, `opt ` is skipped, unknown keywords are kept (and
//! may carry any object), `@` keywords (annotations) are refused, an object's base64 is read
//! by C tor's lenient decoder, and an `RSA PUBLIC KEY` object must be a valid key.

use thiserror::Error;

use super::cstr::base64_decode;

/// Lines and objects at least this big are refused (`MAX_LINE_LENGTH`,
/// `MAX_UNPARSED_OBJECT_SIZE`).
const MAX_LINE_LENGTH: usize = 128 * 1024;
const MAX_UNPARSED_OBJECT_SIZE: usize = 128 * 1024;
/// `MAX_ARGS` in `get_token_arguments`.
const MAX_ARGS: usize = 512;

/// Whether a keyword takes an object (`obj_syntax`; only the cases the HS tables use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjSyntax {
    NoObj,
    NeedObj,
    ObjOk,
}

/// Where a keyword must appear (`AT_START`/`AT_END`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    Any,
    AtStart,
    AtEnd,
}

/// One row of a token table (`token_rule_t`).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub keyword: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    pub obj: ObjSyntax,
    pub min_count: usize,
    pub max_count: usize,
    pub pos: Pos,
}

/// An object after a keyword line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<'a> {
    /// The text between `-----BEGIN ` and `-----`.
    pub tag: &'a [u8],
    pub body: Vec<u8>,
}

/// One token: its rule (index into the table) or `None` for an unknown keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub rule: Option<usize>,
    pub args: Vec<&'a [u8]>,
    pub object: Option<Object<'a>>,
}

/// Why the tokenizer refused a document (C tor's `parse error` messages).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("line far too long")]
    LineTooLong,
    #[error("unexpected end of document")]
    UnexpectedEof,
    #[error("far too many arguments to {0}")]
    FarTooManyArgs(&'static str),
    #[error("too few arguments to {0}")]
    TooFewArgs(&'static str),
    #[error("too many arguments to {0}")]
    TooManyArgs(&'static str),
    #[error("malformed object: bad begin line")]
    BadBeginLine,
    #[error("malformed object: missing object end line")]
    MissingEndLine,
    #[error("malformed object: mismatched end tag")]
    MismatchedEndTag,
    #[error("object much too big")]
    ObjectTooBig,
    #[error("malformed object: bad base64-encoded data")]
    BadBase64,
    #[error("unexpected public key")]
    UnexpectedKey,
    #[error("couldn't parse public key")]
    BadKey,
    #[error("unexpected object for {0}")]
    UnexpectedObject(&'static str),
    #[error("missing object for {0}")]
    MissingObject(&'static str),
    #[error("no annotations allowed")]
    Annotation,
    #[error("missing {0} element")]
    Missing(&'static str),
    #[error("too many {0} elements")]
    TooMany(&'static str),
    #[error("first item is not {0}")]
    NotFirst(&'static str),
    #[error("last item is not {0}")]
    NotLast(&'static str),
}

/// `eat_whitespace_eos`: spaces, tabs, CR, LF and `#` comments up to (not past) a newline.
fn eat_whitespace(t: &[u8], mut i: usize) -> usize {
    while i < t.len() {
        match t[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'#' => {
                i += 1;
                while i < t.len() && t[i] != b'\n' {
                    i += 1;
                }
            }
            _ => return i,
        }
    }
    i
}

/// `eat_whitespace_eos_no_nl`.
fn eat_whitespace_no_nl(t: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && matches!(t[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// `find_whitespace_eos`: the first space, tab, CR, LF or `#` at or after `i`.
fn find_whitespace(t: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && !matches!(t[i], b' ' | b'\t' | b'\r' | b'\n' | b'#') {
        i += 1;
    }
    i
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn memchr_nl(t: &[u8], from: usize) -> Option<usize> {
    t[from..].iter().position(|&b| b == b'\n').map(|i| i + from)
}

/// `get_token_arguments`: splits `line` as C does. A `#` right after an argument only
/// separates it from the next one (C overwrites it with the terminating NUL); a `#` after
/// whitespace starts a comment to the end of the line.
fn arguments<'a>(line: &'a [u8], kw: &'static str) -> Result<Vec<&'a [u8]>, TokenError> {
    let mut args = Vec::new();
    let mut cp = 0;
    while cp < line.len() {
        if args.len() == MAX_ARGS {
            return Err(TokenError::FarTooManyArgs(kw));
        }
        let ws = find_whitespace(line, cp, line.len());
        args.push(&line[cp..ws]);
        if ws >= line.len() {
            break;
        }
        // C overwrites the separator with NUL and steps past it, then eats whitespace.
        cp = eat_whitespace(line, ws + 1);
    }
    Ok(args)
}

/// Reads the token at `*pos` (`get_next_token`) and moves `*pos` past it.
fn next_token<'a>(t: &'a [u8], pos: &mut usize, table: &[Rule]) -> Result<Token<'a>, TokenError> {
    let eos = t.len();
    let mut s = eat_whitespace(t, *pos);
    let eol = memchr_nl(t, s).unwrap_or(eos);
    if eol - s > MAX_LINE_LENGTH {
        return Err(TokenError::LineTooLong);
    }
    let mut next = find_whitespace(t, s, eol);
    if &t[s..next] == b"opt" {
        s = eat_whitespace_no_nl(t, next, eol);
        next = find_whitespace(t, s, eol);
    } else if s == eos {
        return Err(TokenError::UnexpectedEof);
    }
    let word = &t[s..next];
    let found = table.iter().position(|r| r.keyword.as_bytes() == word);
    let (rule, args, o_syn, kw) = match found {
        Some(i) => {
            let r = &table[i];
            let a = eat_whitespace_no_nl(t, next, eol);
            let args = arguments(&t[a..eol], r.keyword)?;
            if args.len() < r.min_args {
                return Err(TokenError::TooFewArgs(r.keyword));
            }
            if args.len() > r.max_args {
                return Err(TokenError::TooManyArgs(r.keyword));
            }
            (Some(i), args, r.obj, r.keyword)
        }
        None => {
            if s < eol && t[s] == b'@' {
                return Err(TokenError::Annotation);
            }
            (None, vec![&t[s..eol]], ObjSyntax::ObjOk, "")
        }
    };

    // Is an object next?
    let s = eat_whitespace(t, eol);
    *pos = s;
    let mut object = None;
    if let Some(eol) = memchr_nl(t, s) {
        if eol - s >= 11 && t[s..].starts_with(b"-----BEGIN ") {
            if eol - s <= 16 || &t[eol - 5..eol] != b"-----" || eol - s > MAX_UNPARSED_OBJECT_SIZE {
                return Err(TokenError::BadBeginLine);
            }
            let tag = &t[s + 11..eol - 5];
            let body_start = eol + 1;
            let end_at = find(&t[body_start..], b"-----END ")
                .map(|i| i + body_start)
                .ok_or(TokenError::MissingEndLine)?;
            let end_eol = memchr_nl(t, end_at).unwrap_or(eos);
            if end_eol - end_at != 9 + tag.len() + 5
                || &t[end_at + 9..end_at + 9 + tag.len()] != tag
                || &t[end_eol - 5..end_eol] != b"-----"
            {
                return Err(TokenError::MismatchedEndTag);
            }
            if end_at - body_start > MAX_UNPARSED_OBJECT_SIZE {
                return Err(TokenError::ObjectTooBig);
            }
            let b64 = &t[body_start..end_at];
            let body =
                base64_decode(b64, (b64.len() * 3).div_ceil(4)).ok_or(TokenError::BadBase64)?;
            if tag == b"RSA PUBLIC KEY" {
                // Only keywords taking a key (or anything) may carry one, and it must parse.
                if o_syn != ObjSyntax::ObjOk {
                    return Err(TokenError::UnexpectedKey);
                }
                crate::keys::rsa::public_key_from_der(&body).map_err(|_| TokenError::BadKey)?;
            }
            object = Some(Object { tag, body });
            *pos = end_eol;
        }
    }
    match (o_syn, &object) {
        (ObjSyntax::NoObj, Some(_)) => return Err(TokenError::UnexpectedObject(kw)),
        (ObjSyntax::NeedObj, None) => return Err(TokenError::MissingObject(kw)),
        _ => {}
    }
    Ok(Token { rule, args, object })
}

/// Tokenizes `text` against `table` and checks counts and positions (`tokenize_string` with
/// no flags: annotations refused).
pub fn tokenize<'a>(text: &'a [u8], table: &[Rule]) -> Result<Vec<Token<'a>>, TokenError> {
    let mut tokens = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        tokens.push(next_token(text, &mut pos, table)?);
        pos = eat_whitespace(text, pos);
    }
    for (i, r) in table.iter().enumerate() {
        let n = tokens.iter().filter(|t| t.rule == Some(i)).count();
        if n < r.min_count {
            return Err(TokenError::Missing(r.keyword));
        }
        if n > r.max_count {
            return Err(TokenError::TooMany(r.keyword));
        }
        match r.pos {
            Pos::AtStart if tokens.first().map(|t| t.rule) != Some(Some(i)) => {
                return Err(TokenError::NotFirst(r.keyword))
            }
            Pos::AtEnd if tokens.last().map(|t| t.rule) != Some(Some(i)) => {
                return Err(TokenError::NotLast(r.keyword))
            }
            _ => {}
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Rule] = &[
        Rule {
            keyword: "first",
            min_args: 1,
            max_args: 1,
            obj: ObjSyntax::NoObj,
            min_count: 1,
            max_count: 1,
            pos: Pos::AtStart,
        },
        Rule {
            keyword: "blob",
            min_args: 0,
            max_args: 0,
            obj: ObjSyntax::NeedObj,
            min_count: 1,
            max_count: 1,
            pos: Pos::Any,
        },
        Rule {
            keyword: "last",
            min_args: 1,
            max_args: 1,
            obj: ObjSyntax::NoObj,
            min_count: 1,
            max_count: 1,
            pos: Pos::AtEnd,
        },
    ];

    const OK: &str = "first 1\nblob\n-----BEGIN X-----\naGVsbG8=\n-----END X-----\nlast z\n";

    #[test]
    fn accepts_c_quirks() {
        let toks = tokenize(OK.as_bytes(), TABLE).unwrap();
        assert_eq!(toks.len(), 3);
        assert_eq!(toks[1].object.as_ref().unwrap().body, b"hello");
        // Comments, blank lines, `opt`, unknown keywords with objects, trailing '\r',
        // no final newline.
        let doc = "# c\n\nopt first 1\r\nunknown a b\n-----BEGIN Y-----\nAA==\n-----END Y-----\n\
                   blob\n  -----BEGIN X-----\naGVs bG8=\n-----END X-----\nlast z # tail";
        let toks = tokenize(doc.as_bytes(), TABLE).unwrap();
        assert_eq!(toks.len(), 4);
        assert_eq!(toks[0].args, [b"1"]);
        assert_eq!(toks[1].rule, None);
        assert_eq!(toks[3].args, [b"z"]);
        // '#' splits arguments the way C's get_token_arguments does.
        assert_eq!(arguments(b"a#b c", "k").unwrap(), [&b"a"[..], b"b", b"c"]);
        assert_eq!(arguments(b"a #b c", "k").unwrap(), [&b"a"[..]]);
    }

    #[test]
    fn refuses_what_c_refuses() {
        let cases: &[(&str, TokenError)] = &[
            ("", TokenError::Missing("first")),
            ("  \n", TokenError::UnexpectedEof),
            (
                "blob\n-----BEGIN X-----\nAA==\n-----END X-----\nfirst 1\nlast z\n",
                TokenError::NotFirst("first"),
            ),
            (
                "first 1\nlast z\nblob\n-----BEGIN X-----\nAA==\n-----END X-----\n",
                TokenError::NotLast("last"),
            ),
            ("first 1 2\n", TokenError::TooManyArgs("first")),
            ("first\n", TokenError::TooFewArgs("first")),
            ("first 1\nblob\nlast z\n", TokenError::MissingObject("blob")),
            (
                "first 1\n-----BEGIN X-----\nAA==\n-----END X-----\n",
                TokenError::UnexpectedObject("first"),
            ),
            (
                "first 1\nblob\n-----BEGIN X-----\nAA==\n-----END Y-----\nlast z\n",
                TokenError::MismatchedEndTag,
            ),
            (
                "first 1\nblob\n-----BEGIN X-----\nAA==\nlast z\n",
                TokenError::MissingEndLine,
            ),
            (
                "first 1\nblob\n-----BEGIN -----\n-----END -----\nlast z\n",
                TokenError::BadBeginLine,
            ),
            (
                "first 1\nblob\n-----BEGIN X-----\nA*==\n-----END X-----\nlast z\n",
                TokenError::BadBase64,
            ),
            ("@ann x\nfirst 1\n", TokenError::Annotation),
            ("first 1\nfirst 2\n", TokenError::TooMany("first")),
            (
                "first 1\nx\n-----BEGIN RSA PUBLIC KEY-----\nAA==\n-----END RSA PUBLIC KEY-----\n",
                TokenError::BadKey,
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(
                tokenize(doc.as_bytes(), TABLE).as_ref().err(),
                Some(want),
                "{doc:?}"
            );
        }
        let many = format!("first 1\nunk{}\n", " a".repeat(600));
        // Unknown keywords take the line as one argument, so no limit applies to them.
        assert!(matches!(
            tokenize(many.as_bytes(), TABLE),
            Err(TokenError::Missing("blob"))
        ));
        let many = format!("first{}\n", " a".repeat(513));
        assert_eq!(
            tokenize(many.as_bytes(), TABLE),
            Err(TokenError::FarTooManyArgs("first"))
        );
    }
}
