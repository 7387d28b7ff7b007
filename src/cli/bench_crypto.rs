//! `fors bench-crypto [--json]`: per-cell relay-crypto and handshake costs.

/// Runs the crypto benchmark; returns the process exit code.
pub fn run(_args: &[String]) -> i32 {
    eprintln!("fors bench-crypto: not implemented yet");
    2
}
