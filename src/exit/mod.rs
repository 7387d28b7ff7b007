//! Exit-side logic: exit policy and DNS.

pub mod policy;
