//! The `fors` binary: the relay and its subcommands.

use std::process::ExitCode;

/// jemalloc, not glibc's malloc: after a churn of 20,000 connections glibc kept 670 MB of a
/// relay that had started at 215 MB (freed but fragmented arenas), jemalloc went back to 227
/// MB within seconds (bench/RESULTS.md "Memory after connection churn"; issue #15). Only the
/// binary chooses: the library and its tests keep the system allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn usage() -> &'static str {
    "usage: fors -f TORRC [--defaults-torrc FILE]\n       \
     fors --verify-config -f TORRC\n       \
     fors --list-fingerprint [rsa|ed25519] -f TORRC\n       \
     fors --keygen-family NAME\n       \
     fors bench-crypto [--json]\n       \
     fors probe [--json] [--write FILE]\n       \
     fors tune [--profile FILE|NAME] [--only CATEGORY]... [--apply]\n       \
     fors --version"
}

fn main() -> ExitCode {
    // Purge freed pages from a background thread: without it jemalloc only returns memory
    // when the arena that freed it allocates again, and an idle shard's may not for long.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("fors: cannot start jemalloc's background thread: {e}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("bench-crypto") => fors::cli::bench_crypto::run(&args[1..]),
        Some("probe") => fors::cli::probe::run(&args[1..]),
        Some("tune") => fors::cli::tune::run(&args[1..]),
        Some("--version") => {
            println!("Fors {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("-h") | Some("--help") | None => {
            println!("{}", usage());
            0
        }
        _ if args.iter().any(|a| a == "--keygen-family") => fors::cli::keygen_family::run(&args),
        _ if args.iter().any(|a| a == "--list-fingerprint") => fors::cli::fingerprint::run(&args),
        _ if args.iter().any(|a| a == "--verify-config") => fors::config::verify_config_main(&args),
        Some(a) if a.starts_with('-') => fors::relay::run_main(&args),
        _ => {
            eprintln!("{}", usage());
            2
        }
    };
    ExitCode::from(code as u8)
}
