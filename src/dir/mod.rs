//! Directory work on the control plane: our server descriptor and extra-info document,
//! uploading them to the authorities, fetching and verifying the consensus, and deciding
//! when to republish.
//!
//! Everything here is sans-IO except [`client`], the small blocking HTTP/1.0 client the
//! control-plane thread uses to talk to the configured authorities' DirPorts.
//!
//! - [`descriptor`]: build the signed descriptor and extra-info (dir-spec §2.1).
//! - [`descriptor_check`]: verify a descriptor the way an authority does.
//! - [`upload`] + [`http`]: the `POST /tor/` request and the authority's answer.
//! - [`authcert`]: authority key certificates (dir-spec §3.1).
//! - [`consensus`] + [`params`]: the microdesc consensus, its signatures, relay table and
//!   typed consensus parameters (dir-spec §3.4).
//! - [`publish`]: when to rebuild and re-upload (C `router.c` republish rules).

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod authcert;
pub mod client;
pub mod consensus;
pub mod descriptor;
pub mod descriptor_check;
pub mod http;
pub mod isotime;
pub mod netdoc;
pub mod onehop;
pub mod params;
pub mod protover;
pub mod publish;
pub mod upload;

pub use authcert::{AuthCertError, AuthorityCert};
pub use consensus::{Consensus, ConsensusError, RelayFlags, RouterStatus};
pub use descriptor::{
    build_descriptor, build_extra_info, Bandwidth, DescriptorError, DescriptorParams, ExtraInfo,
    ServerDescriptor, DEFAULT_PROTO,
};
pub use descriptor_check::{check_descriptor, check_extra_info, DescriptorCheckError};
pub use params::ConsensusParams;
pub use publish::{PublishDecision, PublishState};
pub use upload::{UploadOutcome, UploadRequest};
