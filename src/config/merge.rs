//! Combining the configuration domains — built-in defaults < `--defaults-torrc` < torrc <
//! command line — into one value per option, following torrc_format.txt §2: a singleton takes
//! its last value; a list takes the entries of the highest domain that sets it, unless that
//! domain's first entry is `+Key` (append); `/Key` clears; an empty value resets a singleton.

use super::error::{ConfigError, ConfigErrorKind, Location, Warning};
use super::lexer::{ConfigLine, LineCommand};
use super::options::{ignored_values, lookup, suggest, Lookup, OptionKind};
use std::collections::{BTreeMap, HashSet};

/// One option value with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    pub value: String,
    pub location: Location,
}

/// The merged, still-untyped options, keyed by canonical option name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawOptions {
    values: BTreeMap<&'static str, Vec<RawValue>>,
}

impl RawOptions {
    /// The value of a singleton option, if set.
    pub fn single(&self, name: &str) -> Option<&RawValue> {
        self.values.get(name).and_then(|v| v.last())
    }
    /// All entries of a list option, in order.
    pub fn list(&self, name: &str) -> &[RawValue] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
    /// Whether the option was set at all.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| !v.is_empty())
    }
}

/// Merges domains given lowest priority first. Warnings about ignored and obsolete options are
/// given once per option name, however often it appears.
pub fn merge(domains: &[Vec<ConfigLine>]) -> Result<(RawOptions, Vec<Warning>), ConfigError> {
    let mut out = RawOptions::default();
    let mut warnings = Vec::new();
    let mut warned: HashSet<&'static str> = HashSet::new();
    for domain in domains {
        let mut seen_single: HashSet<&'static str> = HashSet::new();
        // Lists inherited from lower domains are replaced by this domain's first plain entry.
        let mut fragile: HashSet<&'static str> = out.values.keys().copied().collect();
        for line in domain {
            let loc = &line.location;
            match lookup(&line.key) {
                Lookup::Unknown => {
                    return Err(ConfigError::at(
                        loc,
                        ConfigErrorKind::UnknownOption {
                            name: line.key.clone(),
                            suggestion: suggest(&line.key),
                        },
                    ))
                }
                Lookup::Unsupported(name) => {
                    return Err(ConfigError::at(
                        loc,
                        ConfigErrorKind::UnsupportedOption {
                            name: name.to_string(),
                            reason: "Fors does not implement it and ignoring it could change what \
                                     the relay does (see docs/config.md)",
                        },
                    ))
                }
                Lookup::Obsolete(name) => {
                    if warned.insert(name) {
                        warnings.push(Warning::at(
                            loc,
                            format!("option \"{name}\" is obsolete (in C tor too); ignored"),
                        ));
                    }
                }
                Lookup::Ignored(name, why) => {
                    let value = line.value.trim();
                    if let Some(ok) = ignored_values(name) {
                        if !value.is_empty() && !ok.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                            return Err(ConfigError::at(
                                loc,
                                ConfigErrorKind::BadValue {
                                    option: name,
                                    value: value.to_string(),
                                    reason: format!("Fors does not implement this value: {why}"),
                                },
                            ));
                        }
                    }
                    if warned.insert(name) {
                        warnings.push(Warning::at(
                            loc,
                            format!("option \"{name}\" is ignored by Fors: {why}"),
                        ));
                    }
                }
                Lookup::Supported(name, OptionKind::Single) => {
                    if line.command == LineCommand::Clear || line.value.is_empty() {
                        // An empty value restores the built-in default.
                        out.values.remove(name);
                        continue;
                    }
                    if !seen_single.insert(name) {
                        warnings.push(Warning::at(
                            loc,
                            format!(
                                "option \"{name}\" used more than once; all but the last value \
                                 will be ignored"
                            ),
                        ));
                    }
                    out.values.insert(
                        name,
                        vec![RawValue {
                            value: line.value.clone(),
                            location: loc.clone(),
                        }],
                    );
                }
                Lookup::Supported(name, OptionKind::List) => {
                    let entry = out.values.entry(name).or_default();
                    match line.command {
                        LineCommand::Clear => {
                            entry.clear();
                            fragile.remove(name);
                            continue;
                        }
                        LineCommand::Normal => {
                            if fragile.remove(name) {
                                entry.clear();
                            }
                        }
                        LineCommand::Append => {
                            fragile.remove(name);
                        }
                    }
                    if line.value.is_empty() {
                        warnings.push(Warning::at(
                            loc,
                            format!("list option \"{name}\" has no value; skipping it"),
                        ));
                        continue;
                    }
                    entry.push(RawValue {
                        value: line.value.clone(),
                        location: loc.clone(),
                    });
                }
            }
        }
    }
    out.values.retain(|_, v| !v.is_empty());
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::parse_lines;
    use std::sync::Arc;

    fn lines(name: &str, text: &str) -> Vec<ConfigLine> {
        let f: Arc<str> = name.into();
        parse_lines(text, &f).unwrap()
    }

    fn vals(o: &RawOptions, name: &str) -> Vec<String> {
        o.list(name).iter().map(|v| v.value.clone()).collect()
    }

    #[test]
    fn higher_domain_replaces_lists_and_singletons() {
        let defaults = lines(
            "defaults",
            "Nickname Def\nExitPolicy reject *:25\nORPort 9001\n",
        );
        let torrc = lines("torrc", "ExitPolicy accept *:80\nExitPolicy accept *:443\n");
        let cmd = lines("command line", "Nickname Cmd\n");
        let (o, w) = merge(&[defaults, torrc, cmd]).unwrap();
        assert!(w.is_empty());
        assert_eq!(vals(&o, "ExitPolicy"), ["accept *:80", "accept *:443"]);
        assert_eq!(vals(&o, "ORPort"), ["9001"]);
        assert_eq!(o.single("Nickname").unwrap().value, "Cmd");
        assert_eq!(
            o.single("Nickname").unwrap().location.to_string(),
            "command line:1"
        );
    }

    #[test]
    fn append_and_clear_magic() {
        let defaults = lines(
            "d",
            "ExitPolicy reject *:25\nORPort 9001\nLog notice stdout\n",
        );
        let torrc = lines(
            "t",
            "+ExitPolicy accept *:80\n/ORPort\nLog info stdout\n+Log warn stderr\n",
        );
        let (o, _) = merge(&[defaults, torrc]).unwrap();
        assert_eq!(vals(&o, "ExitPolicy"), ["reject *:25", "accept *:80"]);
        assert!(!o.is_set("ORPort"));
        assert_eq!(vals(&o, "Log"), ["info stdout", "warn stderr"]);
    }

    #[test]
    fn empty_value_resets_singleton_and_warns_on_repeats() {
        let d = lines("d", "Nickname A\n");
        let t = lines("t", "Nickname\nContactInfo x\nContactInfo y\n");
        let (o, w) = merge(&[d, t]).unwrap();
        assert!(o.single("Nickname").is_none());
        assert_eq!(o.single("ContactInfo").unwrap().value, "y");
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "t:3: option \"ContactInfo\" used more than once; all but the last value will be ignored"
        );
    }

    #[test]
    fn ignored_options_warn_once() {
        let t = lines(
            "torrc",
            "HardwareAccel 1\nSandbox 0\nhardwareaccel 0\nTunnelDirConns 1\n",
        );
        let (_, w) = merge(&[t]).unwrap();
        let msgs: Vec<String> = w.iter().map(|w| w.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("torrc:1: option \"HardwareAccel\" is ignored by Fors"));
        assert!(msgs[1].starts_with("torrc:2: option \"Sandbox\" is ignored"));
        assert!(msgs[2].starts_with("torrc:4: option \"TunnelDirConns\" is obsolete"));
    }

    #[test]
    fn unknown_and_unsupported_options_are_errors() {
        let t = lines("torrc", "Nickname a\n\nExitPolcy accept *:*\n");
        let e = merge(&[t]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "torrc:3: unknown option \"ExitPolcy\" (did you mean \"ExitPolicy\"?)"
        );
        let t = lines("torrc", "HiddenServiceDir /x\n");
        let e = merge(&[t]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("torrc:1: C tor option \"HiddenServiceDir\" is not supported by Fors"));
    }
}
