//! Publishing: the `POST /tor/` request carrying our descriptor (and extra-info) and what the
//! authority's answer means (dir-spec §"Publishing server descriptors"; C `dircache.c`
//! `directory_handle_command_post`).

use super::descriptor::{ExtraInfo, ServerDescriptor};
use super::http::{self, HttpResponse};

/// The path descriptors are posted to.
pub const UPLOAD_PATH: &str = "/tor/";

/// One upload: the body sent to every authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    /// Descriptor, then the extra-info document it names.
    pub body: Vec<u8>,
    /// `X-Desc-Gen-Reason` (authorities only log it).
    pub reason: Option<String>,
}

impl UploadRequest {
    pub fn new(desc: &ServerDescriptor, extra_info: Option<&ExtraInfo>) -> Self {
        let mut body = desc.text.clone().into_bytes();
        if let Some(ei) = extra_info {
            body.extend_from_slice(ei.text.as_bytes());
        }
        Self { body, reason: None }
    }

    /// Sets the `X-Desc-Gen-Reason` header (newlines are dropped).
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.chars().filter(|c| !c.is_control()).collect());
        self
    }

    /// The request bytes for one authority.
    pub fn to_http(&self, host: &str) -> Vec<u8> {
        let headers: Vec<String> = self
            .reason
            .iter()
            .map(|r| format!("X-Desc-Gen-Reason: {r}"))
            .collect();
        http::post_request(UPLOAD_PATH, host, &headers, &self.body)
    }
}

/// What one authority said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// HTTP 200; `message` is the authority's reason phrase. Caution: C tor 0.4.9 answers
    /// `200 [None]` both when it stored the descriptor and when its parser dropped it (bad
    /// signature, missing item): parse failures only reach the authority's log
    /// (`dirserv_add_multiple_descriptors`). Confirm with `/tor/server/fp/<HEX>` (see
    /// [`client::fetch_server_descriptor`](super::client::fetch_server_descriptor)), and
    /// self-check with [`check_descriptor`](super::check_descriptor) before uploading.
    Accepted { message: String },
    /// 200 with `X-Descriptor-Not-New: Yes`: a cosmetic duplicate of what it already has.
    NotNew,
    /// Anything else. A 400 carries the authority's rejection reason verbatim: show it to the
    /// operator (e.g. "Rejected: Your clock is set too far in the future, or your timezone is
    /// not correct." or "Ed25519 identity key or RSA identity key has changed.").
    Rejected { status: u16, reason: String },
}

impl UploadOutcome {
    /// Classifies an authority's answer to `POST /tor/`.
    pub fn from_response(resp: &HttpResponse) -> Self {
        if resp.status == 200 {
            let not_new = resp
                .header("X-Descriptor-Not-New")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
            if not_new {
                UploadOutcome::NotNew
            } else {
                UploadOutcome::Accepted {
                    message: resp.reason.clone(),
                }
            }
        } else {
            UploadOutcome::Rejected {
                status: resp.status,
                reason: resp.reason.clone(),
            }
        }
    }

    /// Accepted or already known.
    pub fn is_success(&self) -> bool {
        !matches!(self, UploadOutcome::Rejected { .. })
    }
}

impl std::fmt::Display for UploadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadOutcome::Accepted { message } => write!(f, "accepted ({message})"),
            UploadOutcome::NotNew => f.write_str("accepted (descriptor not new)"),
            UploadOutcome::Rejected { status, reason } => {
                write!(f, "rejected with HTTP {status}: {reason}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::http::parse_response;

    #[test]
    fn classifies_authority_answers() {
        let ok = parse_response(b"HTTP/1.0 200 Descriptor accepted\r\n\r\n", 0).unwrap();
        assert_eq!(
            UploadOutcome::from_response(&ok),
            UploadOutcome::Accepted {
                message: "Descriptor accepted".into()
            }
        );
        let dup = parse_response(
            b"HTTP/1.0 200 OK\r\nDate: x\r\nPragma: no-cache\r\nX-Descriptor-Not-New: Yes\r\n\r\n",
            0,
        )
        .unwrap();
        assert_eq!(UploadOutcome::from_response(&dup), UploadOutcome::NotNew);
        let bad = parse_response(
            b"HTTP/1.0 400 Rejected: Couldn't parse router descriptor.\r\n\r\n",
            0,
        )
        .unwrap();
        let out = UploadOutcome::from_response(&bad);
        assert!(!out.is_success());
        assert_eq!(
            out.to_string(),
            "rejected with HTTP 400: Rejected: Couldn't parse router descriptor."
        );
    }

    #[test]
    fn request_carries_both_documents() {
        let d = ServerDescriptor {
            text: "router a\n".into(),
            digest: [0; 20],
        };
        let e = ExtraInfo {
            text: "extra-info a\n".into(),
            sha1: [0; 20],
            sha256: [0; 32],
        };
        let req = UploadRequest::new(&d, Some(&e)).with_reason("new\nkeys");
        let s = String::from_utf8(req.to_http("127.0.0.1:7000")).unwrap();
        assert!(s.starts_with("POST /tor/ HTTP/1.0\r\n"));
        assert!(s.contains("Content-Length: 22\r\n"));
        assert!(s.contains("X-Desc-Gen-Reason: newkeys\r\n"));
        assert!(s.ends_with("\r\n\r\nrouter a\nextra-info a\n"));
    }
}
