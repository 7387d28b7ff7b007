//! Consensus diffs: `apply` never panics on any base or diff; the ed-script part is reached
//! by giving it a header with the right base digest; and whatever `generate` accepts
//! applies back to exactly its target.
#![no_main]

use fors::dircache::consdiff::{apply, digest_as_signed, digest_full, generate};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "network-status-version 3 microdesc\nvote-status consensus\n\
valid-after 2026-01-01 00:00:00\nr a AAAA x\nm 1\nr b BBBB x\nm 2\n\
directory-footer\ndirectory-signature sha256 X Y\n-----BEGIN SIGNATURE-----\nsig\n\
-----END SIGNATURE-----\n";

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Arbitrary base and diff, split at the first 0xff byte (never in UTF-8).
        0 => {
            let at = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (Ok(base), Ok(diff)) = (
                std::str::from_utf8(&rest[..at]),
                std::str::from_utf8(rest.get(at + 1..).unwrap_or(&[])),
            ) else {
                return;
            };
            let _ = apply(base, diff);
        }
        // An ed script after a header naming BASE, so the commands are parsed and run.
        1 => {
            let Ok(script) = std::str::from_utf8(rest) else {
                return;
            };
            let diff = format!(
                "network-status-diff-version 1\nhash {} {}\n{script}",
                hex(&digest_as_signed(BASE)),
                hex(&digest_full(BASE))
            );
            if let Ok(out) = apply(BASE, &diff) {
                assert_eq!(out, BASE);
            }
        }
        // Two documents after a consensus preamble: what generate accepts round-trips.
        _ => {
            let at = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (Ok(a), Ok(b)) = (
                std::str::from_utf8(&rest[..at]),
                std::str::from_utf8(rest.get(at + 1..).unwrap_or(&[])),
            ) else {
                return;
            };
            let pre = "network-status-version 3\nvote-status consensus\n";
            let (base, target) = (format!("{pre}{a}"), format!("{pre}{b}"));
            if let Ok(diff) = generate(&base, &target) {
                assert_eq!(apply(&base, &diff).as_deref(), Ok(target.as_str()));
            }
        }
    }
});
