//! Configuration: torrc parsing with C tor's syntax and semantics, the typed relay [`Config`],
//! and hardware profiles.
//!
//! Reading goes: files ([`source`], with `%include`) → entries ([`lexer`]) → one value per
//! option across the defaults-torrc / torrc / command-line domains ([`merge`]) → typed
//! [`Config`] ([`relay`]). Nothing here prints: warnings are returned to the caller.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod cmdline;
pub mod dirauth;
pub mod error;
pub mod hwprofile;
pub mod lexer;
pub mod log;
pub mod merge;
pub mod options;
pub mod port;
pub mod relay;
pub mod render;
pub mod source;
pub mod testnet;
pub mod units;

#[cfg(test)]
mod tests;

pub use cmdline::CommandLine;
pub use dirauth::DirAuthority;
pub use error::{ConfigError, ConfigErrorKind, Location, Warning};
pub use hwprofile::{HardwareProfile, HardwareProfileError, ProfileSearchPath};
pub use log::{LogConfig, LogDestination, LogSeverity, SafeLogging};
pub use port::{ListenPort, OrPort, PortNumber};
pub use relay::{
    AddressConfig, BandwidthConfig, Config, ControlConfig, ExitRelay, FamilyId, OutboundBind,
    OutboundKind, PolicyItem,
};
pub use source::{ConfigFs, MemFs, OsFs};
pub use testnet::NetworkTimings;

use source::FileKind;
use std::path::Path;

/// Shards to run: the torrc's `NumCPUs` when nonzero, else the profile's rule
/// ([`HardwareProfile::shard_count`]).
pub fn shard_count(config: &Config, profile: &HardwareProfile, available_cpus: u32) -> u32 {
    if config.num_cpus != 0 {
        config.num_cpus // bounded when read
    } else {
        let auto = profile.shard_count(available_cpus);
        let limit = crate::shard::ShardId::LIMIT as u32;
        if auto > limit {
            crate::relay::log::log_notice!(
                "{auto} shards by the hardware profile; running {limit}, the most one relay \
                 process can address."
            );
        }
        auto.min(limit)
    }
}

/// Loads the configuration the command line describes, through `fs`.
pub fn load_with(
    fs: &dyn ConfigFs,
    cl: &CommandLine,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut warnings = Vec::new();
    let io_missing = |p: &Path| {
        ConfigError::global(ConfigErrorKind::Io {
            path: p.display().to_string(),
            reason: "No such file or directory".into(),
        })
    };

    // A missing defaults file is fine unless it was named explicitly.
    let defaults_path = cl
        .defaults_torrc
        .clone()
        .unwrap_or_else(|| cmdline::DEFAULT_DEFAULTS_TORRC.into());
    let defaults = if fs.kind(&defaults_path) == FileKind::Missing {
        if cl.defaults_torrc.is_some() && !cl.allow_missing_torrc {
            return Err(io_missing(&defaults_path));
        }
        Vec::new()
    } else {
        source::read_config_file(fs, &defaults_path)?
    };

    let torrc_path = cl
        .torrc
        .clone()
        .unwrap_or_else(|| cmdline::DEFAULT_TORRC.into());
    let torrc = if fs.kind(&torrc_path) == FileKind::Missing {
        if cl.torrc.is_some() && !cl.allow_missing_torrc {
            return Err(io_missing(&torrc_path));
        }
        warnings.push(Warning::global(format!(
            "configuration file {:?} not present, using defaults and the command line",
            torrc_path.display().to_string()
        )));
        Vec::new()
    } else {
        source::read_config_file(fs, &torrc_path)?
    };

    let (raw, merge_warnings) = merge::merge(&[defaults, torrc, cl.overrides.clone()])?;
    warnings.extend(merge_warnings);
    let config = Config::from_options(&raw, &mut warnings)?;
    Ok((config, warnings))
}

/// Loads the configuration the command line describes from the real file system.
pub fn load(cl: &CommandLine) -> Result<(Config, Vec<Warning>), ConfigError> {
    load_with(&OsFs, cl)
}

/// Reads and checks a torrc (and optional defaults file) without acting on it.
pub fn verify(
    torrc: &Path,
    defaults_torrc: Option<&Path>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    load(&CommandLine {
        torrc: Some(torrc.to_path_buf()),
        defaults_torrc: defaults_torrc.map(Path::to_path_buf),
        ..CommandLine::default()
    })
}

/// Parses a torrc held in memory (tests, fuzzing); `%include`s resolve through `fs`.
pub fn parse_str(
    fs: &dyn ConfigFs,
    name: &str,
    text: &str,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let lines = source::read_config_text(fs, name, text)?;
    let (raw, mut warnings) = merge::merge(&[lines])?;
    let config = Config::from_options(&raw, &mut warnings)?;
    Ok((config, warnings))
}

/// `fors --verify-config [-f TORRC] [--defaults-torrc FILE] [--Option value...]`: prints the
/// warnings and either "Configuration was valid" (exit 0) or the error (exit 1), like tor.
pub fn verify_config_main(args: &[String]) -> i32 {
    let result = CommandLine::parse(args).and_then(|cl| load(&cl));
    match result {
        Ok((config, warnings)) => {
            for w in &warnings {
                eprintln!("[warn] {w}");
            }
            // The profile is part of the configuration: a bad one is a configuration error.
            if let Err(e) = ProfileSearchPath::default().load(config.hardware_profile.as_deref()) {
                eprintln!("[err] {e}");
                return 1;
            }
            println!("Configuration was valid");
            0
        }
        Err(e) => {
            eprintln!("[err] {e}");
            1
        }
    }
}
