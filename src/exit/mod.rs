//! Exit-side logic: exit policy and DNS.

pub mod dns;
pub mod policy;
