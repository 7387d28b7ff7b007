//! The Tor link channel: TLS plus the link handshake, then a cell pipe (tor-spec
//! §"Negotiating and initializing channels", §"Cell packet format").
//!
//! Sans-IO: a [`Channel`] takes received bytes, `now` and an RNG, and gives back bytes to
//! send, cells and [`ChannelEvent`]s. Layout:
//! * [`context`]: [`LinkContext`], shared by every channel of a shard;
//! * [`tls`]: rustls configurations, the certificate verifier, SNI (each channel runs on a
//!   per-connection copy that logs its traffic secrets, so an open TLS 1.3 channel can
//!   switch to Fors's own record layer, `proto::tls_record`);
//! * `handshake` (private) / [`certs`] / [`auth`]: the handshake cells, CERTS checks, AUTH0003;
//! * [`state`]: the [`Channel`] itself and the open-channel cell path;
//! * [`output`]: the bounded [`CellQueue`]; [`circid`]: the circuit-ID high-bit rule.
//!
//! Roles: [`Channel::new_responder`] (a connection we accepted), [`Channel::new_initiator`]
//! (a relay extending: proves our identity with CERTS + AUTHENTICATE) and
//! [`Channel::new_client`] (a Tor client, e.g. `fors-loadgen`: checks the responder's
//! identity, proves none, needs no relay keys).
//!
//! How a shard drives one (per connection; `now` is wall-clock time, needed for certificate
//! expiry and NETINFO):
//! ```text
//! on_accept:   ch = Channel::new_responder(ctx.clone(), peer.ip(), now)
//! on_data:     ch.handle_input_mut(data, now, rng, &mut sink) // records opened in `data`
//!                                                           // cells → sink.cell(.., out)
//!              outbox.send_with(conn, |buf| Filled {                     // records in place
//!                  written: ch.write_output_into(buf), more: ch.wants_write_into() })
//!              n = outbox.send_partial(conn, ch.pending_output()); ch.consume_output(n)
//!              if !ch.wants_read() { pause reading until on_writable }
//! on_tick:     ch.check_timeout(now, &mut sink)
//! on_closed:   ch.handle_eof(&mut sink)
//! Err(_) from handle_input: the channel is closed; flush pending_output, then close.
//! ```

pub mod auth;
pub mod certs;
pub mod circid;
pub mod context;
pub mod error;
mod handshake;
pub mod idle;
pub mod output;
pub mod padding;
pub mod state;
pub mod tls;

pub use circid::{CircIdAllocator, CircIdViolation};
pub use context::{ChannelConfig, LinkContext, LinkContextError};
pub use error::{AuthError, CertsError, ChannelError};
pub use idle::ChannelIdleTimer;
pub use output::CellQueue;
pub use state::{
    Channel, ChannelEvent, ChannelSink, ChannelStats, ExpectedPeer, LinkWarnings, OpenInfo,
    PeerIdentity, TlsPath, HINT_PAUSE_READS, LINK_VERSIONS,
};
