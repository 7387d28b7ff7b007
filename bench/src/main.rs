//! fors-loadgen: the bundled Tor load generator (see the load-generator issue).
fn main() {
    eprintln!("fors-loadgen: not built yet");
    std::process::exit(2);
}
