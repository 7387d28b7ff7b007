//! `fors --keygen-family NAME`: makes a happy-family key (proposal 321) the way C tor 0.4.9's
//! `tor --keygen-family NAME` does: `NAME.secret_family_key` (ed25519 secret key, tag
//! `fmly-id`) and `NAME.public_family_id`, replacing existing files, then prints
//!
//! ```text
//! # Generated NAME.secret_family_key
//! FamilyId <base64 family ID>
//! ```
//!
//! on stdout, ready to paste into every family member's torrc. The key file goes into each
//! member's family key directory (`FamilyKeyDirectory`, default `DataDirectory/keys`).
//! Unlike C tor, no torrc is read: nothing in it affects the key.

use std::path::Path;

use crate::keys::family::{generate_family_key, SECRET_KEY_SUFFIX};

#[derive(Debug, thiserror::Error)]
enum KeygenError {
    #[error("--keygen-family needs a file name prefix (usage: fors --keygen-family NAME)")]
    MissingName,
    #[error("{0}")]
    Keys(#[from] crate::keys::KeyError),
}

/// Runs `--keygen-family`; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match keygen(args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("fors --keygen-family: {e}");
            1
        }
    }
}

fn keygen(args: &[String]) -> Result<String, KeygenError> {
    let name = args
        .iter()
        .position(|a| a == "--keygen-family")
        .and_then(|i| args.get(i + 1))
        .filter(|n| !n.is_empty() && !n.starts_with('-'))
        .ok_or(KeygenError::MissingName)?;
    let id = generate_family_key(Path::new(name), &mut rand::rngs::OsRng)?;
    Ok(format!(
        "# Generated {name}{SECRET_KEY_SUFFIX}\nFamilyId {}\n",
        id.to_base64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_name() {
        for args in [vec!["--keygen-family"], vec!["--keygen-family", "-f"]] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            assert!(matches!(keygen(&args), Err(KeygenError::MissingName)));
        }
    }
}
