//! Exit policy with torrc semantics (first match wins).
