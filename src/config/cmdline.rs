//! The command line, read as C tor reads it (`config_parse_commandline`): a few
//! command-line-only flags (`-f`, `--defaults-torrc`, `--verify-config`...), and every other
//! `--Option value` pair as a configuration line in the highest-priority domain.

use super::error::{ConfigError, ConfigErrorKind, Location};
use super::lexer::{ConfigLine, LineCommand};
use std::path::PathBuf;
use std::sync::Arc;

/// Where Fors looks for its torrc when `-f` is not given.
pub const DEFAULT_TORRC: &str = "/etc/fors/torrc";
/// Where Fors looks for the defaults file when `--defaults-torrc` is not given.
pub const DEFAULT_DEFAULTS_TORRC: &str = "/etc/fors/torrc-defaults";
/// The file name used in locations of command-line options.
pub const COMMAND_LINE: &str = "command line";

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `-f FILE` / `--torrc-file FILE`.
    pub torrc: Option<PathBuf>,
    /// `--defaults-torrc FILE`.
    pub defaults_torrc: Option<PathBuf>,
    /// `--ignore-missing-torrc` / `--allow-missing-torrc`.
    pub allow_missing_torrc: bool,
    pub verify_config: bool,
    /// `--list-fingerprint [rsa|ed25519]`: `Some(None)` without a key type.
    pub list_fingerprint: Option<Option<String>>,
    /// `--quiet` / `--hush`.
    pub quiet: bool,
    /// Option overrides, in order.
    pub overrides: Vec<ConfigLine>,
}

/// Command-line-only flags that take no value.
const FLAGS: &[&str] = &[
    "verify-config",
    "ignore-missing-torrc",
    "allow-missing-torrc",
    "quiet",
    "hush",
];

impl CommandLine {
    /// Parses arguments (without the program name).
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let mut cl = CommandLine::default();
        let file: Arc<str> = COMMAND_LINE.into();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let loc = Location::new(file.clone(), (i + 1) as u32);
            // Like C tor: up to two leading dashes are optional decoration.
            let name = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-'))
                .unwrap_or(arg);
            let value_after = |i: usize| -> Result<String, ConfigError> {
                args.get(i + 1).cloned().ok_or_else(|| {
                    ConfigError::at(
                        &loc,
                        ConfigErrorKind::CommandLine(format!(
                            "command-line option {arg:?} needs a value"
                        )),
                    )
                })
            };
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "f" | "torrc-file" => {
                    cl.torrc = Some(value_after(i)?.into());
                    i += 2;
                }
                "defaults-torrc" => {
                    cl.defaults_torrc = Some(value_after(i)?.into());
                    i += 2;
                }
                "list-fingerprint" => {
                    let kind = args.get(i + 1).filter(|a| !a.starts_with('-')).cloned();
                    i += 1 + usize::from(kind.is_some());
                    cl.list_fingerprint = Some(kind);
                }
                f if FLAGS.contains(&f) => {
                    match f {
                        "verify-config" => cl.verify_config = true,
                        "quiet" | "hush" => cl.quiet = true,
                        _ => cl.allow_missing_torrc = true,
                    }
                    i += 1;
                }
                _ => {
                    if name.is_empty() {
                        return Err(ConfigError::at(
                            &loc,
                            ConfigErrorKind::CommandLine(format!("unexpected argument {arg:?}")),
                        ));
                    }
                    let (key, command) = if let Some(k) = name.strip_prefix('+') {
                        (k, LineCommand::Append)
                    } else if let Some(k) = name.strip_prefix('/') {
                        (k, LineCommand::Clear)
                    } else {
                        (name, LineCommand::Normal)
                    };
                    let value = if command == LineCommand::Clear {
                        i += 1;
                        String::new()
                    } else {
                        let v = value_after(i)?;
                        i += 2;
                        v
                    };
                    cl.overrides.push(ConfigLine {
                        key: key.to_string(),
                        value,
                        command,
                        location: loc,
                    });
                }
            }
        }
        Ok(cl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_files_and_overrides() {
        let cl = CommandLine::parse(&args(&[
            "--verify-config",
            "-f",
            "/x/torrc",
            "--defaults-torrc",
            "/x/d",
            "--ORPort",
            "9001",
            "--+ExitPolicy",
            "accept *:80",
            "--/Log",
            "Nickname",
            "bare",
        ]))
        .unwrap();
        assert!(cl.verify_config);
        assert_eq!(cl.torrc, Some("/x/torrc".into()));
        assert_eq!(cl.defaults_torrc, Some("/x/d".into()));
        let o: Vec<_> = cl
            .overrides
            .iter()
            .map(|l| {
                (
                    l.key.as_str(),
                    l.value.as_str(),
                    l.command,
                    l.location.to_string(),
                )
            })
            .collect();
        assert_eq!(
            o,
            [
                (
                    "ORPort",
                    "9001",
                    LineCommand::Normal,
                    "command line:6".to_string()
                ),
                (
                    "ExitPolicy",
                    "accept *:80",
                    LineCommand::Append,
                    "command line:8".to_string()
                ),
                ("Log", "", LineCommand::Clear, "command line:10".to_string()),
                (
                    "Nickname",
                    "bare",
                    LineCommand::Normal,
                    "command line:11".to_string()
                ),
            ]
        );
    }

    #[test]
    fn list_fingerprint_optional_argument() {
        let cl = CommandLine::parse(&args(&["--list-fingerprint", "-f", "t"])).unwrap();
        assert_eq!(cl.list_fingerprint, Some(None));
        let cl = CommandLine::parse(&args(&["--list-fingerprint", "ed25519", "-f", "t"])).unwrap();
        assert_eq!(cl.list_fingerprint, Some(Some("ed25519".into())));
    }

    #[test]
    fn missing_values() {
        let e = CommandLine::parse(&args(&["-f"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "command line:1: command-line option \"-f\" needs a value"
        );
        assert!(CommandLine::parse(&args(&["--ORPort"])).is_err());
        assert!(CommandLine::parse(&args(&["--"])).is_err());
    }
}
