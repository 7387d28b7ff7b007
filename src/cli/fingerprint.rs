//! `fors --list-fingerprint [rsa|ed25519] -f TORRC`: prints the relay's identity like C tor.

/// Runs `--list-fingerprint`; returns the process exit code.
pub fn run(_args: &[String]) -> i32 {
    eprintln!("fors --list-fingerprint: not implemented yet");
    2
}
