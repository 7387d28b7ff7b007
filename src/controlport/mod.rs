//! The ControlPort (control-spec): what nyx and stem need to watch a relay. It runs on its
//! own thread off the data path ([`server`]); the protocol itself is sans-IO ([`session`]
//! takes lines, returns reply bytes and actions), with authentication in [`auth`], GETINFO
//! in [`info`], events in [`events`] and the wire text forms in [`quote`] and [`reply`].
//! Operators' view: docs/operating.md "ControlPort and nyx".

// No unsafe here. Sans-IO except `server` (docs/architecture.md "Sans-IO rule").
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod auth;
pub mod dirinfo;
pub mod events;
pub mod info;
pub mod orconn;
pub mod quote;
pub mod reply;
pub mod server;
pub mod session;

pub use auth::{AuthConfig, Cookie, HashedPassword};
pub use events::EventSet;
pub use info::RelayView;
pub use server::{ControlPortServer, RelayState, SelfStatus, ServerError, ServerParams};
pub use session::{Action, ControlSignal, Outcome, Session};
