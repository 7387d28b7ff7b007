//! `fors --list-fingerprint [rsa|ed25519] -f TORRC`: prints the relay's identity like C tor
//! 0.4.9 (`app/main/main.c: do_list_fingerprint`), creating the keys if absent and writing
//! the `fingerprint` / `fingerprint-ed25519` files.
//!
//! Output is one line: `<Nickname> <RSA fingerprint in groups of 4>` (the default, or `rsa`)
//! or `<Nickname> <base64 ed25519 identity>` (`ed25519`).

use std::path::PathBuf;
use std::time::SystemTime;

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
    #[error("command-line option {0} needs a value")]
    MissingValue(String),
    #[error("cannot read configuration file {}: {source}", path.display())]
    Torrc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no DataDirectory configured (set it in the torrc or pass --DataDirectory)")]
    NoDataDirectory,
    #[error("invalid Nickname {0:?}: must be 1-19 characters of [A-Za-z0-9]")]
    BadNickname(String),
    #[error("{0}")]
    Keys(#[from] crate::keys::KeyError),
}

/// The few options `--list-fingerprint` needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct FingerprintOptions {
    which: Option<Which>,
    data_directory: Option<PathBuf>,
    nickname: Option<String>,
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
    let opts = parse_args(args)?;
    let data_dir = opts
        .data_directory
        .ok_or(FingerprintError::NoDataDirectory)?;
    let nickname = opts.nickname.unwrap_or_else(|| "Unnamed".to_owned());
    if nickname.is_empty()
        || nickname.len() > 19
        || !nickname.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(FingerprintError::BadNickname(nickname));
    }
    let keys = RelayKeys::load_or_create(&data_dir, SystemTime::now(), KeyParams::default())?;
    keys.write_fingerprint_files(&nickname)?;
    Ok(match opts.which.unwrap_or(Which::Rsa) {
        Which::Rsa => format!("{nickname} {}\n", spaced_fingerprint(&keys.rsa_identity())),
        Which::Ed25519 => format!("{nickname} {}\n", keys.ed25519_identity().to_base64()),
    })
}

/// Command-line flags that take no value.
const FLAGS: &[&str] = &["--quiet", "--hush", "--ignore-missing-torrc"];

/// Parses the command line like C tor's `config_parse_commandline`: `--list-fingerprint`
/// takes an optional argument that never starts with '-', `-f` names the torrc, and
/// `--Option value` pairs override torrc lines.
fn parse_args(args: &[String]) -> Result<FingerprintOptions, FingerprintError> {
    let mut which = None;
    let mut torrc = None;
    let mut defaults = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1);
        match a {
            "--list-fingerprint" => {
                if let Some(v) = next.filter(|v| !v.starts_with('-')) {
                    which = Some(match v.as_str() {
                        "" | "rsa" => Which::Rsa,
                        "ed25519" => Which::Ed25519,
                        other => return Err(FingerprintError::BadKeyType(other.to_owned())),
                    });
                    i += 1;
                }
            }
            _ if FLAGS.contains(&a) => {}
            _ => {
                let v = next
                    .ok_or_else(|| FingerprintError::MissingValue(a.to_owned()))?
                    .clone();
                match a {
                    "-f" | "--torrc-file" => torrc = Some(PathBuf::from(v)),
                    "--defaults-torrc" => defaults = Some(PathBuf::from(v)),
                    _ => overrides.push((a.trim_start_matches('-').to_owned(), v)),
                }
                i += 1;
            }
        }
        i += 1;
    }
    let mut opts = FingerprintOptions {
        which,
        ..Default::default()
    };
    // Later sources override earlier ones: defaults-torrc, torrc, command line.
    for path in [defaults, torrc].into_iter().flatten() {
        let text = std::fs::read_to_string(&path).map_err(|source| FingerprintError::Torrc {
            path: path.clone(),
            source,
        })?;
        for (k, v) in torrc_lines(&text) {
            apply(&mut opts, k, v);
        }
    }
    for (k, v) in &overrides {
        apply(&mut opts, k, v);
    }
    Ok(opts)
}

// TODO(config): replace with crate::config — a minimal torrc reader for the two options
// `--list-fingerprint` needs (keyword, whitespace, value; `#` comments).
fn torrc_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            return None;
        }
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        Some((k, v.trim()))
    })
}

fn apply(opts: &mut FingerprintOptions, key: &str, value: &str) {
    if key.eq_ignore_ascii_case("DataDirectory") {
        opts.data_directory = Some(PathBuf::from(value));
    } else if key.eq_ignore_ascii_case("Nickname") {
        opts.nickname = Some(value.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_command_line_like_c_tor() {
        let o = parse_args(&args(&[
            "--list-fingerprint",
            "--DataDirectory",
            "/d",
            "--ORPort",
            "9999",
            "--Nickname",
            "X",
        ]))
        .unwrap();
        assert_eq!(o.which, None);
        assert_eq!(o.data_directory, Some(PathBuf::from("/d")));
        assert_eq!(o.nickname.as_deref(), Some("X"));
        let o = parse_args(&args(&[
            "--list-fingerprint",
            "ed25519",
            "--quiet",
            "--datadirectory",
            "/e",
        ]))
        .unwrap();
        assert_eq!(o.which, Some(Which::Ed25519));
        assert_eq!(o.data_directory, Some(PathBuf::from("/e")));
        assert!(matches!(
            parse_args(&args(&["--list-fingerprint", "dsa"])),
            Err(FingerprintError::BadKeyType(_))
        ));
        assert!(matches!(
            parse_args(&args(&["--list-fingerprint", "-f"])),
            Err(FingerprintError::MissingValue(_))
        ));
    }

    #[test]
    fn torrc_lines_and_overrides() {
        let dir = std::env::temp_dir().join(format!(
            "fors-fp-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let torrc = dir.join("torrc");
        std::fs::write(
            &torrc,
            "# comment\nNickname   Alpha # trailing\n\ndatadirectory /var/x\nORPort 9001\n",
        )
        .unwrap();
        let t = torrc.to_str().unwrap();
        let o = parse_args(&args(&["--list-fingerprint", "-f", t])).unwrap();
        assert_eq!(o.nickname.as_deref(), Some("Alpha"));
        assert_eq!(o.data_directory, Some(PathBuf::from("/var/x")));
        let o = parse_args(&args(&[
            "--list-fingerprint",
            "-f",
            t,
            "--Nickname",
            "Beta",
        ]))
        .unwrap();
        assert_eq!(o.nickname.as_deref(), Some("Beta"));
        assert!(matches!(
            parse_args(&args(&[
                "--list-fingerprint",
                "-f",
                dir.join("none").to_str().unwrap()
            ])),
            Err(FingerprintError::Torrc { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
