//! CPU time of each shard thread, read from procfs when the MetricsPort is scraped (never
//! on a shard): the shard threads are named `fors-shard-N` (`shard::runtime`), and
//! `/proc/self/task/TID/schedstat` gives the nanoseconds a thread has run on a CPU.
//! Where procfs or schedstat (CONFIG_SCHED_INFO) is missing, nothing is reported.

use std::path::Path;

/// Thread name prefix of the shards (`shard::runtime` names them `fors-shard-{i}`).
const SHARD_THREAD_PREFIX: &str = "fors-shard-";

/// The shard index a thread name belongs to, if it is a shard's.
pub fn shard_of(comm: &str) -> Option<usize> {
    comm.trim_end()
        .strip_prefix(SHARD_THREAD_PREFIX)?
        .parse()
        .ok()
}

/// Nanoseconds on CPU from the text of a `schedstat` file (its first field).
pub fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// `(shard, nanoseconds on CPU)` for every shard thread of `tasks` (a process's
/// `/proc/PID/task` directory), sorted by shard; unreadable threads are left out.
pub fn shard_cpu_ns(tasks: &Path) -> Vec<(usize, u64)> {
    let Ok(dir) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, u64)> = dir
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let shard = shard_of(&comm)?;
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((shard, schedstat_ns(&stat)?))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The same for this process.
pub fn own_shard_cpu_ns() -> Vec<(usize, u64)> {
    shard_cpu_ns(Path::new("/proc/self/task"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_schedstat() {
        assert_eq!(shard_of("fors-shard-3\n"), Some(3));
        assert_eq!(shard_of("fors-shard-12"), Some(12));
        assert_eq!(shard_of("fors-shard-"), None);
        assert_eq!(shard_of("fors-metrics"), None);
        assert_eq!(schedstat_ns("191104 654437 2\n"), Some(191_104));
        assert_eq!(schedstat_ns(""), None);
        assert_eq!(schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn reads_a_named_thread_of_this_process() {
        // A thread named like a shard that burns some CPU shows up with a non-zero time.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("fors-shard-977".into())
            .spawn(move || {
                // Burn until procfs reports 20 ms of this thread's CPU (bounded by 10 s of
                // wall time): on a loaded machine 30 ms of wall time can be 5 ms of CPU.
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_secs(10)
                    && !own_shard_cpu_ns()
                        .iter()
                        .any(|&(s, ns)| s == 977 && ns >= 20_000_000)
                {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                }
                std::hint::black_box(x);
                tx.send(()).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        rx.recv().unwrap();
        if !Path::new("/proc/self/task").exists() {
            eprintln!("SKIPPED: no procfs");
        } else {
            let all = own_shard_cpu_ns();
            // schedstat may be compiled out; then nothing is reported at all.
            if Path::new("/proc/self/schedstat").exists() {
                let ns = all.iter().find(|(s, _)| *s == 977).map(|(_, ns)| *ns);
                assert!(ns.is_some_and(|ns| ns >= 10_000_000), "{all:?}");
            }
        }
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
