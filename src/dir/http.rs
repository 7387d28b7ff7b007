//! The HTTP/1.0 subset Tor directories speak (dir-spec §"HTTP headers"; C
//! `dirclient.c` `directory_send_command`, `parse_http_response`): requests as bytes,
//! responses parsed from the bytes read until the server closed the connection.

use thiserror::Error;

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    #[error("response ended before the end of its headers")]
    IncompleteHeaders,
    #[error("malformed status line {0:?}")]
    BadStatusLine(String),
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    #[error("response headers are not text")]
    NotText,
    #[error("body is {got} bytes but Content-Length says {want}")]
    Truncated { got: usize, want: usize },
    #[error("body exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("unsupported Content-Encoding {0:?} (Fors asks for identity only)")]
    UnsupportedEncoding(String),
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The reason phrase exactly as sent: authorities put the rejection reason here.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body if it is not compressed. Tor servers send identity unless asked otherwise
    /// (`dircache.c` `parse_accept_encoding_header` defaults to NO_METHOD).
    pub fn identity_body(&self) -> Result<&[u8], HttpError> {
        match self.header("Content-Encoding") {
            None => Ok(&self.body),
            Some(e) if e.eq_ignore_ascii_case("identity") => Ok(&self.body),
            Some(e) => Err(HttpError::UnsupportedEncoding(e.to_owned())),
        }
    }
}

/// Headers longer than this are refused (C `MAX_HEADERS_SIZE` is 50 000).
pub const MAX_HEADERS: usize = 50_000;

/// `GET <path> HTTP/1.0` asking for an uncompressed answer.
pub fn get_request(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n").into_bytes()
}

/// `POST <path> HTTP/1.0` with a body and extra header lines (each without CRLF).
pub fn post_request(path: &str, host: &str, extra_headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in extra_headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete HTTP/1.x response. The body is everything after the headers (HTTP/1.0:
/// the server closes the connection), cut to `Content-Length` when that is given.
pub fn parse_response(bytes: &[u8], max_body: usize) -> Result<HttpResponse, HttpError> {
    let (head_len, sep_len) = match (find(bytes, b"\r\n\r\n"), find(bytes, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => {
            return Err(if bytes.len() > MAX_HEADERS {
                HttpError::TooLarge(MAX_HEADERS)
            } else {
                HttpError::IncompleteHeaders
            })
        }
    };
    if head_len > MAX_HEADERS {
        return Err(HttpError::TooLarge(MAX_HEADERS));
    }
    let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| HttpError::NotText)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let bad_status = || HttpError::BadStatusLine(status_line.chars().take(200).collect());
    let rest = status_line
        .strip_prefix("HTTP/1.")
        .filter(|r| r.starts_with(['0', '1']))
        .map(|r| &r[1..])
        .ok_or_else(bad_status)?;
    let rest = rest.strip_prefix(' ').ok_or_else(bad_status)?;
    let code = rest.get(..3).ok_or_else(bad_status)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_status());
    }
    let status: u16 = code.parse().map_err(|_| bad_status())?;
    let reason = match &rest[3..] {
        "" => String::new(),
        r => r.strip_prefix(' ').ok_or_else(bad_status)?.to_owned(),
    };
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| HttpError::BadHeader(line.chars().take(200).collect()))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut body = &bytes[head_len + sep_len..];
    let mut resp = HttpResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    if let Some(cl) = resp.header("Content-Length") {
        let want: usize = cl
            .parse()
            .map_err(|_| HttpError::BadHeader(format!("Content-Length: {cl}")))?;
        if body.len() < want {
            return Err(HttpError::Truncated {
                got: body.len(),
                want,
            });
        }
        body = &body[..want];
    }
    if body.len() > max_body {
        return Err(HttpError::TooLarge(max_body));
    }
    resp.body = body.to_vec();
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tor_short_response() {
        // The exact shape of C `write_short_http_response`.
        let r = parse_response(
            b"HTTP/1.0 400 Looks like your keypair does not match its older value.\r\nDate: Tue, 24 Nov 2026 21:30:37 GMT\r\n\r\n",
            10,
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(
            r.reason,
            "Looks like your keypair does not match its older value."
        );
        assert_eq!(r.header("date"), Some("Tue, 24 Nov 2026 21:30:37 GMT"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn body_content_length_and_encoding() {
        let r = parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Encoding: identity\r\n\r\nabcdef",
            100,
        )
        .unwrap();
        assert_eq!(r.identity_body().unwrap(), b"abc");
        let r = parse_response(b"HTTP/1.1 200 OK\nContent-Encoding: deflate\n\nxx", 100).unwrap();
        assert_eq!(
            r.identity_body(),
            Err(HttpError::UnsupportedEncoding("deflate".into()))
        );
        let r = parse_response(b"HTTP/1.0 200\r\n\r\nbody", 100).unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), &r.body[..]),
            (200, "", &b"body"[..])
        );
    }

    #[test]
    fn rejects_bad_responses() {
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n", 10),
            Err(HttpError::IncompleteHeaders)
        );
        for bad in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTP/1.0 2x0 OK\r\n\r\n",
            b"HTTP/1.0 200OK\r\n\r\n",
            b"SSH-2.0\r\n\r\n",
        ] {
            assert!(matches!(
                parse_response(bad, 10),
                Err(HttpError::BadStatusLine(_))
            ));
        }
        assert!(matches!(
            parse_response(b"HTTP/1.0 200 OK\r\nnocolon\r\n\r\n", 10),
            Err(HttpError::BadHeader(_))
        ));
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc", 10),
            Err(HttpError::Truncated { got: 3, want: 9 })
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\n0123456789ab", 10),
            Err(HttpError::TooLarge(10))
        );
    }

    #[test]
    fn request_shapes() {
        let r = post_request(
            "/tor/",
            "127.0.0.1:7000",
            &["X-Desc-Gen-Reason: test".into()],
            b"router x\n",
        );
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("POST /tor/ HTTP/1.0\r\n"));
        assert!(s.contains("\r\nContent-Length: 9\r\n"));
        assert!(s.ends_with("X-Desc-Gen-Reason: test\r\n\r\nrouter x\n"));
        let g = String::from_utf8(get_request("/tor/keys/all", "h")).unwrap();
        assert!(g.starts_with("GET /tor/keys/all HTTP/1.0\r\n") && g.ends_with("\r\n\r\n"));
    }
}
