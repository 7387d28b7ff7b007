//! Building replies (control-spec §2.3 and §4): `CODE-text` mid lines, `CODE+text` data
//! lines followed by dot-encoded data, and the final `CODE text` line, each ending in CRLF.

/// Control-spec §4 status codes Fors uses.
pub mod code {
    pub const OK: u16 = 250;
    pub const UNNECESSARY: u16 = 251;
    pub const UNRECOGNIZED_COMMAND: u16 = 510;
    pub const UNIMPLEMENTED: u16 = 511;
    pub const SYNTAX: u16 = 512;
    pub const UNRECOGNIZED_ARG: u16 = 513;
    pub const AUTH_REQUIRED: u16 = 514;
    pub const BAD_AUTH: u16 = 515;
    pub const INTERNAL: u16 = 551;
    pub const UNRECOGNIZED_ENTITY: u16 = 552;
    pub const EVENT: u16 = 650;
}

/// A reply being built. Text lines are written as given except that CR and LF (which
/// would end the line early) become spaces.
#[derive(Debug, Default)]
pub struct Reply {
    buf: Vec<u8>,
}

fn push_line(buf: &mut Vec<u8>, code: u16, sep: u8, text: &str) {
    buf.extend_from_slice(format!("{code:03}").as_bytes());
    buf.push(sep);
    buf.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    buf.extend_from_slice(b"\r\n");
}

/// Appends `body` in the data encoding (§2.3): each line ends in CRLF, a line starting with
/// `.` gets a second `.`, and a line holding only `.` ends the data.
pub fn push_data(buf: &mut Vec<u8>, body: &str) {
    let body = body.strip_suffix('\n').unwrap_or(body);
    if !body.is_empty() {
        for line in body.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('.') {
                buf.push(b'.');
            }
            buf.extend_from_slice(line.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }
    buf.extend_from_slice(b".\r\n");
}

impl Reply {
    pub fn new() -> Reply {
        Reply::default()
    }

    /// `CODE-text`.
    pub fn mid(&mut self, code: u16, text: &str) -> &mut Self {
        push_line(&mut self.buf, code, b'-', text);
        self
    }

    /// `CODE+head` and then `body` as data.
    pub fn data(&mut self, code: u16, head: &str, body: &str) -> &mut Self {
        push_line(&mut self.buf, code, b'+', head);
        push_data(&mut self.buf, body);
        self
    }

    /// `key=value` as a mid line, or as a data line when the value spans lines (the form
    /// C tor uses for GETINFO and GETCONF answers).
    pub fn key_value(&mut self, code: u16, key: &str, value: &str) -> &mut Self {
        if value.contains('\n') {
            self.data(code, &format!("{key}="), value)
        } else {
            self.mid(code, &format!("{key}={value}"))
        }
    }

    /// The final `CODE text` line; the finished reply.
    pub fn end(&mut self, code: u16, text: &str) -> Vec<u8> {
        push_line(&mut self.buf, code, b' ', text);
        std::mem::take(&mut self.buf)
    }
}

/// A one-line reply.
pub fn single(code: u16, text: &str) -> Vec<u8> {
    Reply::new().end(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_data_encoding() {
        let r = Reply::new()
            .mid(250, "a=1")
            .key_value(250, "k", "line one\n.dot\n..two\n")
            .key_value(250, "v", "x y")
            .end(250, "OK");
        assert_eq!(
            r,
            b"250-a=1\r\n250+k=\r\nline one\r\n..dot\r\n...two\r\n.\r\n250-v=x y\r\n250 OK\r\n"
        );
        assert_eq!(single(552, "bad\r\nline"), b"552 bad  line\r\n");
        let mut b = Vec::new();
        push_data(&mut b, "");
        assert_eq!(b, b".\r\n");
    }
}
