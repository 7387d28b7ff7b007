//! Reading one directory request off a connection's bytes, with C tor's bounds and
//! answers (C tor `buf_http.c` `fetch_from_buf_http`, `directory.c` `parse_http_command`,
//! `dircache.c` `directory_handle_command`).
//!
//! HTTP/1.0, one request per connection: the server answers and closes.

use super::compress::{Method, Methods};

/// Longest request head (C tor `MAX_HEADERS_SIZE`); a longer one closes the connection.
pub const MAX_HEADERS_SIZE: usize = 50_000;
/// Longest request body (C tor `MAX_DIR_UL_SIZE`); a longer one closes the connection.
pub const MAX_BODY_SIZE: usize = (1 << 24) - 1;
/// Headers we look at. A request with more gets `400`; C tor's clients send a handful.
const MAX_HEADER_COUNT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Get,
    Post,
}

/// A complete request, its URL already rewritten as C tor does (`parse_http_url`: a URL
/// not under `/tor/` is taken as relative to it, so `GET /` asks for `/tor/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub url: String,
    /// `If-Modified-Since`, as Unix seconds; a malformed date counts as absent (C tor).
    pub if_modified_since: Option<u64>,
    /// `Accept-Encoding`, or identity only when absent.
    pub accept: Methods,
    /// The raw `X-Or-Diff-From-Consensus` value, if sent.
    pub diff_from: Option<String>,
    pub body: Vec<u8>,
}

/// Why C tor would close the connection without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("request head longer than {MAX_HEADERS_SIZE} bytes")]
    HeadTooLarge,
    #[error("request body longer than {MAX_BODY_SIZE} bytes")]
    BodyTooLarge,
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("command is neither GET nor POST")]
    UnknownCommand,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not all here yet: read more.
    Incomplete,
    /// Close without an answer, as C tor.
    Close(CloseReason),
    /// Answer `400 Bad request` (the request line did not parse).
    BadRequest,
    Request(Request),
}

/// Looks for one complete request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEADERS_SIZE {
            Parsed::Close(CloseReason::HeadTooLarge)
        } else {
            Parsed::Incomplete
        };
    };
    if head_end > MAX_HEADERS_SIZE {
        return Parsed::Close(CloseReason::HeadTooLarge);
    }
    let head = &buf[..head_end];
    let mut header_buf = [httparse::EMPTY_HEADER; MAX_HEADER_COUNT];
    let mut req = httparse::Request::new(&mut header_buf);
    let parsed = req.parse(head);

    // The body length is read before the command is looked at, as C tor does.
    let content_length = match parsed {
        Ok(_) => match header(req.headers, "Content-Length") {
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > MAX_BODY_SIZE => return Parsed::Close(CloseReason::BodyTooLarge),
                Ok(n) => n,
                Err(_) => return Parsed::Close(CloseReason::BadContentLength),
            },
            None => 0,
        },
        Err(_) => 0,
    };
    if buf.len() < head_end + content_length {
        return Parsed::Incomplete;
    }
    let command = if starts_with_ignore_case(head, b"GET") {
        Command::Get
    } else if starts_with_ignore_case(head, b"POST") {
        Command::Post
    } else {
        return Parsed::Close(CloseReason::UnknownCommand);
    };
    let (Ok(httparse::Status::Complete(_)), Some(path)) = (parsed, req.path) else {
        return Parsed::BadRequest;
    };

    let if_modified_since = header(req.headers, "If-Modified-Since")
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let accept = header(req.headers, "Accept-Encoding")
        .map(Methods::from_accept_encoding)
        .unwrap_or(Methods::IDENTITY_ONLY);
    let diff_from = header(req.headers, "X-Or-Diff-From-Consensus").map(str::to_owned);

    Parsed::Request(Request {
        command,
        url: rewrite_url(path),
        if_modified_since,
        accept,
        diff_from,
        body: buf[head_end..head_end + content_length].to_vec(),
    })
}

impl Request {
    /// For a GET: strips a `.z` suffix, which asks for zlib (C tor
    /// `directory_handle_command_get`), and returns the methods the client accepts.
    pub fn take_z_suffix(&mut self) -> Methods {
        let mut accept = self.accept;
        if self.url.len() > 2 && self.url.ends_with(".z") {
            self.url.truncate(self.url.len() - 2);
            accept.insert(Method::Deflate);
        }
        accept
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    // Only the first MAX_HEADERS_SIZE (+3 for a terminator straddling it) bytes matter.
    let window = &buf[..buf.len().min(MAX_HEADERS_SIZE + 4)];
    window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The first header called `name`, if its value is UTF-8 (C tor `http_get_header`).
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// C tor `parse_http_command` + `parse_http_url`: drop a proxy-style `http[s]://host`
/// prefix, then put a URL outside `/tor/` under it.
fn rewrite_url(path: &str) -> String {
    let mut url = path;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            if let Some(slash) = rest.find('/') {
                url = &rest[slash..];
            }
            break;
        }
    }
    if url.starts_with("/tor/") {
        url.to_owned()
    } else if url.starts_with('/') {
        format!("/tor{url}")
    } else {
        format!("/tor/{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_get_is_read_with_its_headers() {
        let r = req(
            "GET /tor/micro/d/AAAA.z HTTP/1.0\r\nAccept-Encoding: x-zstd\r\n\
                     If-Modified-Since: Sun, 06 Dec 2026 14:00:00 GMT\r\n\
                     X-Or-Diff-From-Consensus: ab cd\r\n\r\n",
        );
        assert_eq!(r.command, Command::Get);
        assert_eq!(r.url, "/tor/micro/d/AAAA.z");
        assert_eq!(r.if_modified_since, Some(1_796_565_600));
        assert!(r.accept.contains(Method::Zstd));
        assert_eq!(r.diff_from.as_deref(), Some("ab cd"));
        let mut r = r;
        let acc = r.take_z_suffix();
        assert_eq!(r.url, "/tor/micro/d/AAAA");
        assert!(acc.contains(Method::Deflate));
    }

    #[test]
    fn urls_are_rewritten_as_c_tor() {
        assert_eq!(req("GET / HTTP/1.0\r\n\r\n").url, "/tor/");
        assert_eq!(
            req("GET /robots.txt HTTP/1.0\r\n\r\n").url,
            "/tor/robots.txt"
        );
        assert_eq!(
            req("GET http://example.com/tor/keys/all HTTP/1.1\r\nHost: x\r\n\r\n").url,
            "/tor/keys/all"
        );
        assert_eq!(req("get /tor/ HTTP/1.0\r\n\r\n").command, Command::Get);
    }

    #[test]
    fn a_malformed_date_is_ignored() {
        let r = req("GET / HTTP/1.0\r\nIf-Modified-Since: yesterday\r\n\r\n");
        assert_eq!(r.if_modified_since, None);
    }

    #[test]
    fn partial_oversized_and_bad_requests() {
        assert_eq!(parse(b"GET / HTTP/1.0\r\n"), Parsed::Incomplete);
        let mut big = b"GET / HTTP/1.0\r\nX: ".to_vec();
        big.resize(MAX_HEADERS_SIZE + 10, b'a');
        assert_eq!(parse(&big), Parsed::Close(CloseReason::HeadTooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Parsed::Close(CloseReason::HeadTooLarge));
        assert_eq!(
            parse(b"PUT / HTTP/1.0\r\n\r\n"),
            Parsed::Close(CloseReason::UnknownCommand)
        );
        assert_eq!(parse(b"GET /\r\n\r\n"), Parsed::BadRequest);
        assert_eq!(parse(b"GET / FTP/1.0\r\n\r\n"), Parsed::BadRequest);
        let post = format!(
            "POST /tor/ HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_SIZE + 1
        );
        assert_eq!(
            parse(post.as_bytes()),
            Parsed::Close(CloseReason::BodyTooLarge)
        );
        assert_eq!(
            parse(b"POST /tor/ HTTP/1.0\r\nContent-Length: x\r\n\r\n"),
            Parsed::Close(CloseReason::BadContentLength)
        );
    }

    #[test]
    fn a_post_waits_for_its_body() {
        let head = b"POST /tor/hs/3/publish HTTP/1.0\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(parse(head), Parsed::Incomplete);
        let full = b"POST /tor/hs/3/publish HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde";
        let r = req(std::str::from_utf8(full).unwrap());
        assert_eq!(r.command, Command::Post);
        assert_eq!(r.body, b"abcde");
    }
}
