//! Exit-side logic: exit policy and DNS.
