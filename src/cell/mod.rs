//! Cell codec: fixed and variable-length link cells, relay cells (formats v0 and v1) and the
//! bodies of every cell and relay message a middle or exit relay sees (tor-spec §"Cell packet
//! format", §"Relay cells").
//!
//! Everything here is sans-IO and parses from borrowed buffers: the framer and the relay
//! header accessors return views into the caller's bytes and never allocate, because they run
//! once per cell. Encoders write into caller-provided buffers.
//!
//! Layout:
//! * [`link`]: `CircId`, `ChanCmd`, the framer and fixed/variable cell encoders;
//! * [`chan`]: bodies of channel-level cells (VERSIONS, CERTS, NETINFO, CREATE2, DESTROY...);
//! * [`relay`]: relay cell formats v0/v1, `RelayCmd`, and relay message bodies.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

mod bytes;
pub mod chan;
mod error;
pub mod link;
pub mod relay;

pub use error::CellError;
pub use link::{
    Cell, CellMut, ChanCmd, CircId, FixedCell, FixedCellMut, Framer, VarCell, CELL_BODY_LEN,
    CELL_LEN, MAX_VAR_CELL_BODY_LEN,
};
pub use relay::RelayCmd;

/// Defines a `u8`/`u16` newtype with named constants, as Tor numbers its commands and types:
/// unknown values stay representable (forward compatibility) and `Debug` prints the name.
macro_rules! named_int {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($int:ty) {
            $( $(#[$cmeta:meta])* $cname:ident = $val:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$cmeta])* pub const $cname: $name = $name($val); )*

            /// The spec name of this value, or `None` if it has no name here.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($cname)), )*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $int {
            fn from(v: $name) -> Self {
                v.0
            }
        }
    };
}
pub(crate) use named_int;
