//! Sans-IO channel, circuit, stream and flow-control state machines.

pub mod circuit;
pub mod flow;
pub mod stream;
