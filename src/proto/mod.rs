//! Sans-IO channel, circuit, stream and flow-control state machines.

pub mod channel;
pub mod circuit;
pub mod flow;
pub mod stream;
