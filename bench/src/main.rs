//! fors-loadgen: the bundled Tor load generator (see bench/README.md).
mod cli;
mod path;
mod pattern;
mod report;
mod sink;
mod stats;
mod svg;

fn main() {
    eprintln!("fors-loadgen: not built yet");
    std::process::exit(2);
}
