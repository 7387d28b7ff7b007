//! The sans-IO rule (docs/architecture.md "Sans-IO rule"), enforced without clippy: CI runs
//! only `scripts/test.sh`, so this test reads the non-test source of every sans-IO module and
//! fails on a clock, socket, thread or OS-randomness call, and on a module root that lost its
//! `forbid(unsafe_code)` or its clippy `deny`. It mirrors `clippy.toml`, which gives the same
//! answer (with type resolution) under `cargo clippy --all-targets`.
//!
//! Exemptions are the ones clippy honours: a file whose top says
//! `#![allow(clippy::disallowed_methods, clippy::disallowed_types)]` (an I/O side, such as
//! `dir::client`), an item under `#[allow(clippy::disallowed_..)]`, and `#[cfg(test)]` code.
//! Each exemption found is printed, so the list is visible in the test log.

use std::fs;
use std::path::{Path, PathBuf};

/// Sans-IO module roots under `src/`, and whether they forbid `unsafe` (`crypto` keeps it for
/// SIMD).
const SANS_IO_MODULES: &[(&str, Unsafe)] = &[
    ("cell", Unsafe::Forbid),
    ("proto", Unsafe::Forbid),
    ("exit", Unsafe::Forbid),
    ("dir", Unsafe::Forbid),
    ("dircache", Unsafe::Forbid),
    ("config", Unsafe::Forbid),
    ("keys", Unsafe::Forbid),
    ("dos", Unsafe::Forbid),
    ("accounting", Unsafe::Forbid),
    ("controlport", Unsafe::Forbid),
    ("crypto", Unsafe::Allowed),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unsafe {
    Forbid,
    Allowed,
}

/// What sans-IO code must not name (clippy.toml's `disallowed-methods`/`-types`, by name).
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "clock"),
    ("SystemTime::now", "clock"),
    ("TcpStream", "socket"),
    ("TcpListener", "socket"),
    ("UdpSocket", "socket"),
    ("socket2", "socket"),
    ("thread::spawn", "thread"),
    ("thread::scope", "thread"),
    ("thread::Builder", "thread"),
    ("thread_rng", "OS randomness"),
    ("ThreadRng", "OS randomness"),
    ("OsRng", "OS randomness"),
    ("getrandom", "OS randomness"),
    ("rand::random", "OS randomness"),
];

const CLIPPY_DENY: &str =
    "#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]";
const FILE_ALLOW: &str = "#![allow(clippy::disallowed_methods, clippy::disallowed_types)]";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Blanks comments and string/char literal contents (keeping newlines, so line numbers hold).
fn strip_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string r#"..."#.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = i + 2 + hashes;
                let end = b[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| start + p + close.len());
                blank(&mut out, start, end.saturating_sub(close.len()).max(start));
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let end = b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| i + 2 + p);
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                } else if let Some(len) = text
                    .get(i + 1..)
                    .and_then(|s| s.chars().next())
                    .map(char::len_utf8)
                    .filter(|&l| b.get(i + 1 + l) == Some(&b'\''))
                {
                    blank(&mut out, i + 1, i + 1 + len);
                    i += 2 + len;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Byte range of the item that starts at `from` (after its attributes): up to its `;` or
/// its closing brace at nesting depth 0.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0i32;
    let mut i = from;
    while i < code.len() {
        match code[i] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b';' if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// End of the attribute `#[...]` that starts at `from`, brackets balanced.
fn attr_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0;
    for (j, &c) in code.iter().enumerate().skip(from + 1) {
        match c {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Is this outer attribute an exemption: test-only code or an explicit clippy `allow`?
fn exempting(attr: &str) -> bool {
    let a: String = attr.chars().filter(|c| !c.is_whitespace()).collect();
    a == "#[cfg(test)]"
        || a.starts_with("#[cfg(all(test")
        || (a.starts_with("#[allow(") && a.contains("clippy::disallowed_"))
}

/// Blanks every item under an exempting attribute; returns the exempted items' first lines
/// (for the log) and the names of `#[cfg(test)] mod name;` files.
fn blank_exempt_items(code: &mut String) -> (Vec<usize>, Vec<String>) {
    let mut exempt_lines = Vec::new();
    let mut test_mods = Vec::new();
    let mut search = 0;
    while let Some(p) = code[search..].find("#[").map(|p| p + search) {
        let attr_to = attr_end(code.as_bytes(), p);
        let attr = code[p..attr_to].to_string();
        if !exempting(&attr) {
            search = attr_to;
            continue;
        }
        // Skip further attributes, then the item itself.
        let mut start = attr_to;
        loop {
            let rest = &code[start..];
            let ws = rest.len() - rest.trim_start().len();
            start += ws;
            if code[start..].starts_with("#[") {
                start = attr_end(code.as_bytes(), start);
                continue;
            }
            break;
        }
        let end = item_end(code.as_bytes(), start);
        let item = code[start..end].to_string();
        let header: Vec<&str> = item.split_whitespace().take(3).collect();
        if attr.contains("cfg(") {
            if let Some(name) = match header.as_slice() {
                ["mod", name, ..] | ["pub", "mod", name] | ["pub(crate)", "mod", name] => {
                    Some(name.trim_end_matches(';'))
                }
                _ => None,
            } {
                if item.trim_end().ends_with(';') {
                    test_mods.push(name.to_string());
                }
            }
        } else {
            exempt_lines.push(code[..start].matches('\n').count() + 1);
        }
        let blanked: String = code[p..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        code.replace_range(p..end, &blanked);
        search = end;
    }
    (exempt_lines, test_mods)
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every forbidden name in `code`, as (line, name, kind).
fn violations(code: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut found = Vec::new();
    for &(name, kind) in FORBIDDEN {
        let mut from = 0;
        while let Some(p) = code[from..].find(name).map(|p| p + from) {
            let before_ok = p == 0 || !is_ident_byte(code.as_bytes()[p - 1]);
            let after = p + name.len();
            let after_ok = after >= code.len() || !is_ident_byte(code.as_bytes()[after]);
            if before_ok && after_ok {
                found.push((code[..p].matches('\n').count() + 1, name, kind));
            }
            from = after;
        }
    }
    found.sort();
    found
}

/// The result of checking one file.
#[derive(Default)]
struct Report {
    files: usize,
    violations: Vec<String>,
    exemptions: Vec<String>,
}

/// Checks `path` and the files of the submodules it declares (skipping test-only ones).
fn check_file(path: &Path, report: &mut Report) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    report.files += 1;
    let rel = path
        .strip_prefix(src())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut code = strip_comments_and_literals(&text);
    let whole_file_exempt = code.contains(FILE_ALLOW);
    let (exempt_items, test_mods) = blank_exempt_items(&mut code);
    if whole_file_exempt {
        report.exemptions.push(format!("{rel} (whole file)"));
    } else {
        for line in exempt_items {
            report.exemptions.push(format!("{rel}:{line} (one item)"));
        }
        for (line, name, kind) in violations(&code) {
            report
                .violations
                .push(format!("src/{rel}:{line}: {name} ({kind})"));
        }
    }
    // Submodules: `foo.rs` → `foo/`, `mod.rs` → its own directory.
    let dir = if path.file_name().is_some_and(|n| n == "mod.rs") {
        path.parent().map(Path::to_path_buf)
    } else {
        Some(path.with_extension(""))
    };
    let Some(dir) = dir else { return };
    for name in declared_mods(&code) {
        if test_mods.contains(&name) {
            continue;
        }
        let file = dir.join(format!("{name}.rs"));
        let nested = dir.join(&name).join("mod.rs");
        if file.exists() {
            check_file(&file, report);
        } else if nested.exists() {
            check_file(&nested, report);
        } else {
            report
                .violations
                .push(format!("src/{rel}: cannot find the file of `mod {name};`"));
        }
    }
}

/// Names of `mod name;` declarations left in `code` (test-only ones are blanked already).
fn declared_mods(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ") {
            if let Some(name) = rest.strip_suffix(';') {
                out.push(name.trim().to_string());
            }
        }
    }
    out
}

fn check_module(module: &str) -> Report {
    let mut report = Report::default();
    check_file(&src().join(module).join("mod.rs"), &mut report);
    report
}

#[test]
fn sans_io_modules_call_no_clock_socket_thread_or_os_rng() {
    let mut all = Vec::new();
    for &(module, _) in SANS_IO_MODULES {
        let report = check_module(module);
        println!(
            "sans-IO: src/{module}: {} non-test files checked",
            report.files
        );
        // A module root always has submodules here: if none were found, the walk is broken.
        assert!(report.files > 1, "src/{module}: no submodule files found");
        for e in &report.exemptions {
            println!("sans-IO exemption: src/{e}");
        }
        all.extend(report.violations);
    }
    assert!(
        all.is_empty(),
        "sans-IO modules must take time, sockets, threads and randomness from the caller \
         (docs/architecture.md \"Sans-IO rule\"; exempt an I/O file or item with \
         `allow(clippy::disallowed_methods, clippy::disallowed_types)` and say why):\n{}",
        all.join("\n")
    );
}

#[test]
fn sans_io_module_roots_keep_their_attributes() {
    let mut missing = Vec::new();
    for &(module, unsafe_rule) in SANS_IO_MODULES {
        let path = src().join(module).join("mod.rs");
        let code = strip_comments_and_literals(&fs::read_to_string(&path).unwrap());
        if !code.contains(CLIPPY_DENY) {
            missing.push(format!("src/{module}/mod.rs lacks {CLIPPY_DENY}"));
        }
        let want = match unsafe_rule {
            Unsafe::Forbid => Some("#![forbid(unsafe_code)]"),
            Unsafe::Allowed => None,
        };
        if let Some(want) = want {
            if !code.contains(want) {
                missing.push(format!("src/{module}/mod.rs lacks {want}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The scanner itself: it must see a call in live code and nothing in comments, strings,
/// test modules or exempted items (else the test above could not fail).
#[test]
fn scanner_finds_calls_and_honours_exemptions() {
    let src = r##"
use std::time::Instant;
/// Docs may say Instant::now freely.
fn live() -> Instant { Instant::now() }
const S: &str = "thread_rng";
const R: &str = r#"OsRng"#;
fn lifetimes<'a>(x: &'a u8) -> char { let _ = x; '{' }
fn after_char() { let _ = std::thread::spawn(|| ()); }
#[allow(clippy::disallowed_types)]
fn exempt() { let _ = rand::rngs::OsRng; }
#[cfg(test)]
mod tests { fn t() { let _ = rand::thread_rng(); } }
#[cfg(test)]
mod timing;
mod real;
fn tail() { let _ = std::net::TcpStream::connect("127.0.0.1:1"); }
"##;
    let mut code = strip_comments_and_literals(src);
    let (exempt, test_mods) = blank_exempt_items(&mut code);
    assert_eq!(test_mods, vec!["timing".to_string()]);
    assert_eq!(exempt, vec![10]);
    assert_eq!(declared_mods(&code), vec!["real".to_string()]);
    let found: Vec<(usize, &str)> = violations(&code)
        .into_iter()
        .map(|(l, n, _)| (l, n))
        .collect();
    assert_eq!(
        found,
        vec![(4, "Instant::now"), (8, "thread::spawn"), (16, "TcpStream")]
    );
}
