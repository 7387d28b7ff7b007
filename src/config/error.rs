//! Errors and warnings produced while reading configuration. Every one that comes from a
//! torrc line carries its [`Location`], so messages read like `torrc:12: reason`.

use std::fmt;
use std::sync::Arc;

/// Where a configuration line came from: a file and 1-based line number, or a command-line
/// argument (then `file` is `"command line"` and `line` is the argument's index).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u32,
}

impl Location {
    pub fn new(file: impl Into<Arc<str>>, line: u32) -> Self {
        Self {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What went wrong; [`ConfigError`] adds the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// A file or directory could not be read.
    #[error("cannot read {path:?}: {reason}")]
    Io { path: String, reason: String },
    /// The torrc text itself is malformed (quoting, escapes).
    #[error("{0}")]
    Syntax(String),
    /// `%include` nested deeper than [`crate::config::lexer::MAX_INCLUDE_DEPTH`] or in a loop.
    #[error("{0}")]
    Include(String),
    /// An option name neither Fors nor C tor knows.
    #[error("unknown option \"{name}\"{}", suggestion_text(suggestion))]
    UnknownOption {
        name: String,
        suggestion: Option<&'static str>,
    },
    /// A C tor option whose behaviour Fors does not implement and cannot safely ignore.
    #[error("C tor option \"{name}\" is not supported by Fors: {reason}")]
    UnsupportedOption { name: String, reason: &'static str },
    /// An option's value is malformed or out of range.
    #[error("bad value {value:?} for {option}: {reason}")]
    BadValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    /// Options that are each fine but do not fit together, or a required one is missing.
    #[error("{0}")]
    Inconsistent(String),
    /// The command line is malformed.
    #[error("{0}")]
    CommandLine(String),
}

fn suggestion_text(s: &Option<&'static str>) -> String {
    match s {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

/// A configuration error, with the line it came from when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Option<Location>,
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    pub fn at(location: &Location, kind: ConfigErrorKind) -> Self {
        Self {
            location: Some(location.clone()),
            kind,
        }
    }
    pub fn global(kind: ConfigErrorKind) -> Self {
        Self {
            location: None,
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A non-fatal remark for the operator (ignored option, obsolete option, repeated option...).
/// The parser never prints; the caller decides where warnings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Option<Location>,
    pub message: String,
}

impl Warning {
    pub fn at(location: &Location, message: impl Into<String>) -> Self {
        Self {
            location: Some(location.clone()),
            message: message.into(),
        }
    }
    pub fn global(message: impl Into<String>) -> Self {
        Self {
            location: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
