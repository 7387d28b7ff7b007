//! The HSDir v3 descriptor cache (protocol `HSDir=2`; rend-spec-v3 §2.2 "Publishing and
//! fetching descriptors"), sans-IO, as a C tor 0.4.9 HSDir behaves.
//!
//! - [`outer`]: decode and verify a descriptor's outer layer (`hs_descriptor.c`), over
//!   [`token`] (C tor's tokenizer) and [`cstr`] (C tor's base64 and integer readers).
//! - [`cache`]: [`HsDirCache`], store/lookup/expiry/eviction and counters (`hs_cache.c`).
//! - [`http`]: the answers to `POST /tor/hs/3/publish` and `GET /tor/hs/3/<key>`
//!   (`dircache.c`), for the directory server.
//! - [`build`]: writes a signed outer layer (tests, fuzz seeds, tools).
//!
//! The cache is control-plane state (the directory worker), never on the per-cell path.

pub mod build;
pub mod cache;
pub mod cstr;
pub mod http;
pub mod outer;
pub mod token;

#[cfg(test)]
mod tests;

pub use cache::{HsDirCache, HsDirCounters, HsDirError};
pub use http::{handle_fetch, handle_publish, HsPublishAnswer};
pub use outer::{decode_outer, HsDescError, OuterLayer};
