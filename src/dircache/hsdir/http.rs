//! What the directory server answers for the HSDir URLs (C tor `feature/dircache/dircache.c`:
//! `directory_handle_command_post` / `handle_post_hs_descriptor` and
//! `handle_get_hs_descriptor_v3`). The server parses HTTP and calls these for URLs under
//! [`HS_POST_PREFIX`] (POST) and [`HS_FETCH_PREFIX`] (GET).
//!
//! C tor serves both only over anonymous connections: a BEGIN_DIR stream on a circuit whose
//! previous hop is a relay, never a client's one-hop circuit nor the DirPort
//! (`connection_dir_is_anonymous`). The server decides that and passes `anonymous`.
//! A found descriptor is sent as-is (C tor answers with `NO_METHOD` and no caching lifetime).

use std::sync::Arc;
use std::time::SystemTime;

use super::cache::HsDirCache;
use super::cstr::base64_decode;
use super::outer::c_string;

/// POST URLs starting with this are onion-service uploads (any version; C tor answers 400
/// for versions other than 3).
pub const HS_POST_PREFIX: &str = "/tor/hs/";
/// GET URLs starting with this are v3 descriptor fetches; the rest is the blinded key.
pub const HS_FETCH_PREFIX: &str = "/tor/hs/3/";

/// Status line of an answer to a descriptor upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsPublishAnswer {
    pub status: u16,
    pub reason: &'static str,
}

const PUBLISH_OK: HsPublishAnswer = HsPublishAnswer {
    status: 200,
    reason: "HS descriptor stored successfully.",
};
const PUBLISH_BAD: HsPublishAnswer = HsPublishAnswer {
    status: 400,
    reason: "Invalid HS descriptor. Rejected.",
};
const PUBLISH_SINGLE_HOP: HsPublishAnswer = HsPublishAnswer {
    status: 503,
    reason: "Rejecting single hop HS descriptor post",
};
/// Answer to a fetch over a non-anonymous connection.
pub const FETCH_SINGLE_HOP: (u16, &str) = (503, "Rejecting single hop HS v3 descriptor request");
/// Answer to a fetch for a key we do not hold (or that does not decode).
pub const FETCH_NOT_FOUND: (u16, &str) = (404, "Not found");

/// Handles `POST <url>` with `body` where `url` starts with [`HS_POST_PREFIX`].
pub fn handle_publish(
    cache: &mut HsDirCache,
    url: &str,
    body: &[u8],
    anonymous: bool,
    now: SystemTime,
) -> HsPublishAnswer {
    if !anonymous {
        cache.note_single_hop();
        return PUBLISH_SINGLE_HOP;
    }
    // `parse_hs_version_from_post`, then the command must start with "/publish".
    let Some(rest) = url.strip_prefix(HS_POST_PREFIX) else {
        return PUBLISH_BAD;
    };
    let Some((version, after)) = parse_version(rest.as_bytes()) else {
        return PUBLISH_BAD;
    };
    if version != 3 || !after.starts_with(b"/publish") {
        return PUBLISH_BAD;
    }
    match cache.publish(body, now) {
        Ok(()) => PUBLISH_OK,
        Err(_) => PUBLISH_BAD,
    }
}

/// `tor_parse_long(s, 10, 0, INT_MAX, &ok, &end)`: strtol (leading space, a sign, at least
/// one digit), in range; returns the value and what follows the digits.
fn parse_version(s: &[u8]) -> Option<(i64, &[u8])> {
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(s.len());
    let s = &s[start..];
    let (neg, s) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in &s[..n] {
        // Overflow is ERANGE in strtol: refused.
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    if neg {
        v = -v;
    }
    (0..=i64::from(i32::MAX))
        .contains(&v)
        .then_some((v, &s[n..]))
}

/// The blinded key a fetch URL names (after [`HS_FETCH_PREFIX`]), as C tor's
/// `ed25519_public_from_base64` reads it; `None` if it does not decode to 32 bytes.
pub fn fetch_key(key: &str) -> Option<[u8; 32]> {
    base64_decode(c_string(key.as_bytes()), 32).and_then(|v| <[u8; 32]>::try_from(v).ok())
}

/// Handles `GET /tor/hs/3/<key>`: `key` is the URL after [`HS_FETCH_PREFIX`], the blinded key
/// in base64 as C tor's `ed25519_public_from_base64` reads it (padding optional, whitespace
/// skipped, exactly 32 bytes).
pub fn handle_fetch(
    cache: &HsDirCache,
    key: &str,
    anonymous: bool,
) -> Result<Arc<[u8]>, (u16, &'static str)> {
    if !anonymous {
        cache.note_single_hop();
        return Err(FETCH_SINGLE_HOP);
    }
    let Some(blinded) = fetch_key(key) else {
        cache.note_bad_key();
        return Err(FETCH_NOT_FOUND);
    };
    cache.lookup(&blinded).ok_or(FETCH_NOT_FOUND)
}
