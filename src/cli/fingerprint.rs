//! `fors --list-fingerprint [rsa|ed25519] -f TORRC`: prints the relay's identity like C tor
//! 0.4.9 (`app/main/main.c: do_list_fingerprint`), creating the keys if absent and writing
//! the `fingerprint` / `fingerprint-ed25519` files.
//!
//! Output is one line: `<Nickname> <RSA fingerprint in groups of 4>` (the default, or `rsa`)
//! or `<Nickname> <base64 ed25519 identity>` (`ed25519`).

use std::time::SystemTime;

use crate::config::cmdline::CommandLine;
use crate::keys::{spaced_fingerprint, KeyParams, RelayKeys};

/// Which identity to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Rsa,
    Ed25519,
}

#[derive(Debug, thiserror::Error)]
enum FingerprintError {
    #[error("If you give a key type, you must specify 'rsa' or 'ed25519' (got {0:?})")]
    BadKeyType(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Keys(#[from] crate::keys::KeyError),
}

/// Runs `--list-fingerprint`; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match list_fingerprint(args) {
        Ok(line) => {
            print!("{line}");
            0
        }
        Err(e) => {
            eprintln!("fors --list-fingerprint: {e}");
            1
        }
    }
}

fn list_fingerprint(args: &[String]) -> Result<String, FingerprintError> {
    // The whole configuration is read and checked, as C tor does before listing.
    let cl = CommandLine::parse(args)?;
    let which = match cl.list_fingerprint.as_ref().and_then(|w| w.as_deref()) {
        None | Some("") | Some("rsa") => Which::Rsa,
        Some("ed25519") => Which::Ed25519,
        Some(other) => return Err(FingerprintError::BadKeyType(other.to_owned())),
    };
    let (config, warnings) = crate::config::load(&cl)?;
    if !cl.quiet {
        for w in &warnings {
            eprintln!("[warn] {w}");
        }
    }
    let nickname = config.nickname.clone();
    let data_dir = config.data_directory.clone();
    let keys = RelayKeys::load_or_create(&data_dir, SystemTime::now(), KeyParams::default())?;
    keys.write_fingerprint_files(&nickname)?;
    Ok(match which {
        Which::Rsa => format!("{nickname} {}\n", spaced_fingerprint(&keys.rsa_identity())),
        Which::Ed25519 => format!("{nickname} {}\n", keys.ed25519_identity().to_base64()),
    })
}
