//! The skip rule of `tests/skip_common`: under `CI=true` a missing tool fails the test,
//! elsewhere it prints a `SKIPPED:` line naming the test and the tool.

mod skip_common;

use skip_common::{is_ci, verdict, Verdict};

#[test]
fn ci_true_turns_a_skip_into_a_failure() {
    for ci in ["true", "TRUE", "1", "yes"] {
        match verdict(Some(ci), "some_test", "tor is not available") {
            Verdict::Fail(m) => assert!(m.contains("some_test") && m.contains("tor"), "{m}"),
            v => panic!("CI={ci}: {v:?}"),
        }
    }
}

#[test]
fn without_ci_a_missing_tool_prints_a_skipped_line() {
    for ci in [None, Some(""), Some("0"), Some("false"), Some("False")] {
        assert!(!is_ci(ci));
        assert_eq!(
            verdict(ci, "some_test", "unbound is not available"),
            Verdict::Skip("SKIPPED: some_test: unbound is not available".into())
        );
    }
}

#[test]
#[should_panic(expected = "CI=true")]
fn skip_panics_under_ci() {
    // Only this test's process reads CI here; libtest runs tests on threads of one process,
    // so set it for the call and restore it at once (no other test in this file reads it).
    let old = std::env::var_os("CI");
    std::env::set_var("CI", "true");
    let r = std::panic::catch_unwind(|| skip_common::skip("skip_panics_under_ci", "tor"));
    match old {
        Some(v) => std::env::set_var("CI", v),
        None => std::env::remove_var("CI"),
    }
    std::panic::resume_unwind(r.expect_err("skip did not panic under CI=true"));
}
