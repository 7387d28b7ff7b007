//! The one rule for a test that cannot run here because a tool it needs (tor, tor-gencert,
//! python3-stem, unshare, unbound, root, ...) is missing, or because an opt-out such as
//! `FORS_SKIP_TESTNET` is set: a skip is not a pass.
//!
//! * With `CI` set to a true value (`CI=true`, as CI systems set it) the test FAILS, naming
//!   what is missing: CI installs everything (`scripts/setup-debian.sh`), so a missing tool
//!   there is a broken environment, not a reason to report green.
//! * Otherwise it prints one line `SKIPPED: <test>: <what is missing>` to stderr and the
//!   caller returns (libtest still counts it as passed, so the line is what tells them apart;
//!   run with `--nocapture` to see it).
//!
//! Included by path from every test crate that can skip (`mod skip_common;`, or
//! `#[path = ...]` from the bench crate); `tests/skip_rule.rs` tests the decision.

#![allow(dead_code)]

/// What a test that cannot run here must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print this line (it starts with `SKIPPED:`) and return.
    Skip(String),
    /// Fail with this message.
    Fail(String),
}

/// Whether the value of `CI` means "running under CI": set and not empty, `0` or `false`.
pub fn is_ci(ci: Option<&str>) -> bool {
    match ci.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// The decision for `test`, which cannot run because of `missing`, given `CI`'s value.
pub fn verdict(ci: Option<&str>, test: &str, missing: &str) -> Verdict {
    if is_ci(ci) {
        Verdict::Fail(format!(
            "{test} cannot run: {missing}; CI=true, so this is a failure, not a skip \
             (scripts/setup-debian.sh installs what the tests need)"
        ))
    } else {
        Verdict::Skip(format!("SKIPPED: {test}: {missing}"))
    }
}

/// Applies the rule for `test` now: panics under CI, else prints the `SKIPPED:` line. The
/// caller returns right after.
pub fn skip(test: &str, missing: &str) {
    let ci = std::env::var("CI").ok();
    match verdict(ci.as_deref(), test, missing) {
        Verdict::Skip(line) => eprintln!("{line}"),
        Verdict::Fail(msg) => panic!("{msg}"),
    }
}

/// Whether `cmd arg` can be started here (the program exists on PATH).
pub fn have(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
