//! Sans-IO channel, circuit, stream and flow-control state machines.

pub mod channel;
