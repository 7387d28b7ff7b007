//! The torrc line syntax (C tor `doc/torrc_format.txt`, `lib/encoding/confline.c`): one
//! `Key Value` entry per line, `#` comments, trailing-backslash continuations, C-style quoted
//! values, and the `+Key` (append) / `/Key` (clear) magic prefixes. Pure text in, entries out;
//! `%include` is expanded by [`super::source`].

use super::error::{ConfigError, ConfigErrorKind, Location};
use std::sync::Arc;

/// How an entry combines with the same option from lower-priority domains
/// (torrc_format.txt §2 "Magic").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineCommand {
    /// Plain `Key Value`: the first such line in a domain replaces lower domains' list.
    Normal,
    /// `+Key Value`: appends to what lower domains set.
    Append,
    /// `/Key`: clears the option (value is ignored).
    Clear,
}

/// One configuration entry with the place it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLine {
    /// The key as written, without the `+`/`/` prefix (case preserved).
    pub key: String,
    pub value: String,
    pub command: LineCommand,
    pub location: Location,
}

/// C tor's ASCII `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits torrc text into entries. `file` names the source in error locations.
pub fn parse_lines(text: &str, file: &Arc<str>) -> Result<Vec<ConfigLine>, ConfigError> {
    let b = text.as_bytes();
    let n = b.len();
    let at = |i: usize| -> u8 {
        if i < n {
            b[i]
        } else {
            0
        }
    };
    let mut i = 0usize;
    let mut line: u32 = 1;
    let mut out = Vec::new();
    if let Some(pos) = b.iter().position(|&c| c == 0) {
        let l = 1 + b[..pos].iter().filter(|&&c| c == b'\n').count() as u32;
        return Err(ConfigError::at(
            &Location::new(file.clone(), l),
            ConfigErrorKind::Syntax("NUL byte in configuration text".into()),
        ));
    }
    loop {
        // Skip blank space and whole-line comments.
        loop {
            while i < n && is_space(b[i]) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            if at(i) == b'#' {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                break;
            }
        }
        if i >= n {
            return Ok(out);
        }
        let location = Location::new(file.clone(), line);
        // The key runs to whitespace, a comment, or an escaped newline.
        let kstart = i;
        while i < n && !is_space(b[i]) && b[i] != b'#' && !(b[i] == b'\\' && at(i + 1) == b'\n') {
            i += 1;
        }
        let raw_key = &text[kstart..i];
        while at(i) == b' ' || at(i) == b'\t' {
            i += 1;
        }
        let value;
        if at(i) == b'"' {
            let (v, next) = unescape_quoted(b, i)
                .ok_or_else(|| syntax(&location, "invalid escape sequence in quoted string"))?;
            value = String::from_utf8(v)
                .map_err(|_| syntax(&location, "quoted string decodes to invalid UTF-8"))?;
            i = next;
            while at(i) == b' ' || at(i) == b'\t' {
                i += 1;
            }
            if at(i) == b'\r' && at(i + 1) == b'\n' {
                i += 1;
            }
            if i < n && b[i] != b'#' && b[i] != b'\n' {
                return Err(syntax(&location, "excess data after quoted string"));
            }
        } else {
            let vstart = i;
            let mut continuation = false;
            while i < n && b[i] != b'\n' && (b[i] != b'#' || continuation) {
                if b[i] == b'\\' && at(i + 1) == b'\n' {
                    continuation = true;
                    i += 2;
                    line += 1;
                } else if b[i] == b'#' {
                    // A comment inside a continued value: it ends at the newline and the value
                    // goes on (torrc_format.txt §4.1, "the really yucky part").
                    while i < n && b[i] != b'\n' {
                        i += 1;
                    }
                    if i < n {
                        i += 1;
                        line += 1;
                    }
                } else {
                    i += 1;
                }
            }
            let mut end = i;
            if at(i) == b'\n' {
                i += 1;
                line += 1;
            }
            while end > vstart && is_space(b[end - 1]) {
                end -= 1;
            }
            let raw = &text[vstart..end];
            value = if continuation {
                strip_continuations(raw)
            } else {
                raw.to_string()
            };
        }
        if at(i) == b'#' {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
        }
        let (key, command) = if let Some(k) = raw_key.strip_prefix('+') {
            (k, LineCommand::Append)
        } else if let Some(k) = raw_key.strip_prefix('/') {
            (k, LineCommand::Clear)
        } else {
            (raw_key, LineCommand::Normal)
        };
        let value = if command == LineCommand::Clear {
            String::new()
        } else {
            value
        };
        out.push(ConfigLine {
            key: key.to_string(),
            value,
            command,
            location,
        });
    }
}

fn syntax(loc: &Location, msg: &str) -> ConfigError {
    ConfigError::at(loc, ConfigErrorKind::Syntax(msg.into()))
}

/// Removes `\`-newline pairs and embedded `# ...\n` comments from a continued value.
fn strip_continuations(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            i += 1;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII bytes were removed, so the rest is still valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Decodes a C-style quoted string starting at `b[start] == '"'`; returns the bytes and the
/// index just past the closing quote. Escapes as C tor's `unescape_string`.
fn unescape_quoted(b: &[u8], start: usize) -> Option<(Vec<u8>, usize)> {
    let at = |i: usize| -> u8 { b.get(i).copied().unwrap_or(0) };
    let is_odigit = |c: u8| (b'0'..=b'7').contains(&c);
    let mut out = Vec::new();
    let mut i = start + 1;
    loop {
        match at(i) {
            0 | b'\n' => return None,
            b'"' => return Some((out, i + 1)),
            b'\\' => match at(i + 1) {
                b'x' | b'X' => {
                    let hi = (at(i + 2) as char).to_digit(16)?;
                    let lo = (at(i + 3) as char).to_digit(16)?;
                    out.push((hi * 16 + lo) as u8);
                    i += 4;
                }
                c if is_odigit(c) => {
                    let mut v = u32::from(c - b'0');
                    i += 2;
                    for _ in 0..2 {
                        if is_odigit(at(i)) {
                            v = v * 8 + u32::from(at(i) - b'0');
                            i += 1;
                        }
                    }
                    out.push(u8::try_from(v).ok()?);
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                }
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                }
                c @ (b'"' | b'\\' | b'\'') => {
                    out.push(c);
                    i += 2;
                }
                _ => return None,
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String, u32)> {
        let f: Arc<str> = "t".into();
        parse_lines(text, &f)
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.value, l.location.line))
            .collect()
    }

    fn one(k: &str, v: &str, line: u32) -> (String, String, u32) {
        (k.to_string(), v.to_string(), line)
    }

    // The examples of torrc_format.txt §4.1, each checked against the decoding it documents.
    #[test]
    fn torrc_format_examples() {
        assert_eq!(kv("Foo Bar\n"), vec![one("Foo", "Bar", 1)]);
        assert_eq!(
            kv("Foo    Bar    Baz    \n"),
            vec![one("Foo", "Bar    Baz", 1)]
        );
        assert_eq!(kv("Hello\\\nWorld\n"), vec![one("Hello", "World", 1)]);
        assert_eq!(kv("Hello World   #today\n"), vec![one("Hello", "World", 1)]);
        assert_eq!(kv("Hello World#tomorrow\n"), vec![one("Hello", "World", 1)]);
        assert_eq!(kv("Hello \"World!\"\n"), vec![one("Hello", "World!", 1)]);
        assert_eq!(
            kv("Hello \"\\\"World\\\"\\nand\\nuniverse\"\n"),
            vec![one("Hello", "\"World\"\nand\nuniverse", 1)]
        );
        assert_eq!(
            kv("Hello\\\nWorld\\\nand\\\nfriends\n"),
            vec![one("Hello", "Worldandfriends", 1)]
        );
        assert_eq!(
            kv("Too \\\nMany\\\\\\\nBacksl\\ashes \\\\\nhere\n"),
            vec![one("Too", "Many\\\\Backsl\\ashes \\here", 1)]
        );
        let silly = vec![one("This", "entry        and some        are  silly", 1)];
        assert_eq!(
            kv("This entry      \\\n # has comments \\\n and some       \\\n are # generally \\\n silly\n"),
            silly
        );
        assert_eq!(
            kv("This entry      \\\n # has comments\n and some       \\\n are # generally\n silly\n"),
            silly
        );
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let t = "# header\n\n  Nickname  Foo  \n\t# indented comment\nORPort 9001 # trailing\n\
                 ContactInfo a \\\n  b\nLog notice stdout";
        assert_eq!(
            kv(t),
            vec![
                one("Nickname", "Foo", 3),
                one("ORPort", "9001", 5),
                one("ContactInfo", "a   b", 6),
                one("Log", "notice stdout", 8),
            ]
        );
    }

    #[test]
    fn magic_prefixes_and_empty_values() {
        let f: Arc<str> = "t".into();
        let l = parse_lines("+ExitPolicy accept *:80\n/ORPort 9001\nNickname\n", &f).unwrap();
        assert_eq!(l[0].command, LineCommand::Append);
        assert_eq!(l[0].key, "ExitPolicy");
        assert_eq!(l[1].command, LineCommand::Clear);
        assert_eq!(l[1].value, "");
        assert_eq!((l[2].key.as_str(), l[2].value.as_str()), ("Nickname", ""));
    }

    #[test]
    fn quoted_escapes_and_errors() {
        assert_eq!(kv("A \"\\x41\\101\\t\"\n"), vec![one("A", "AA\t", 1)]);
        let f: Arc<str> = "torrc".into();
        let e = parse_lines("A 1\nB \"bad\\q\"\n", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "torrc:2: invalid escape sequence in quoted string"
        );
        let e = parse_lines("B \"x\" y\n", &f).unwrap_err();
        assert_eq!(e.to_string(), "torrc:1: excess data after quoted string");
        let e = parse_lines("B \"unterminated\n", &f).unwrap_err();
        assert!(e.to_string().starts_with("torrc:1:"));
        let e = parse_lines("A 1\n\nB \0\n", &f).unwrap_err();
        assert_eq!(e.to_string(), "torrc:3: NUL byte in configuration text");
    }
}
