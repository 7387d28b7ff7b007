//! Configuration: torrc parsing and hardware profiles.
