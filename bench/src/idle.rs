//! `--idle-circuits`: hold many idle one-hop circuits on one relay, in stages, so a script
//! can read the relay's memory at each stage (issue #13, `scripts/bench/idle_circuits.py`).
//!
//! Why one hop and CREATE2/ntor: a one-hop circuit puts exactly one circuit's state on the
//! relay under test (its circuit-table entry, the tor1 layer keys and digests, its queues)
//! and nothing on any other relay, so the slope of its RSS over the number of circuits is
//! that relay's cost per circuit. ntor (the default `--handshake`) is what clients send for
//! every hop today; `--handshake fast` (CREATE_FAST) is accepted too, but the per-circuit
//! state it leaves is the same, only cheaper to create. A middle's two-sided state (a next
//! hop on another channel) is not measured by this mode.
//!
//! The run goes through the stages in order: every worker issues CREATE2 cells for its share
//! of the stage at its share of `--idle-rate` (with at most [`MAX_IDLE_INFLIGHT`] unanswered
//! per worker), until each has been answered (CREATED2: open; DESTROY: refused by the relay;
//! anything else, or no answer in [`IDLE_BUILD_TIMEOUT`]: failed). Then the main thread
//! prints one JSON line `{"idle_stage": ...}` on stdout, holds the circuits idle for
//! `--settle`, prints `{"idle_hold_end": ...}` and moves on. After the last stage the
//! workers close their links (which frees every circuit on the relay). Refusals, failures
//! and circuits the relay closed while idle are counted in every line and in the summary's
//! `errors`; none is ignored.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fors::cell::CircId;

pub use crate::circ::CircState;
use crate::circ::Circuit;
pub use crate::cli::IdlePlan;

/// CREATE2 cells in flight per worker at once.
pub const MAX_IDLE_INFLIGHT: usize = 512;
/// A CREATE2 unanswered after this is counted as failed.
pub const IDLE_BUILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Worker `i`'s share of `total` over `n` workers (the first `total % n` get one more).
pub fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n.max(1) as u64;
    total / n + u64::from((i as u64) < total % n)
}

/// Counters and commands shared by the main thread and the workers (relaxed atomics: the
/// main thread only needs them to become true eventually).
#[derive(Debug, Default)]
pub struct IdleCtl {
    /// Circuits all workers together are to have issued (the current stage).
    pub target: AtomicU64,
    /// Set after the last hold: the workers close their links.
    pub release: AtomicBool,
    pub issued: AtomicU64,
    /// Circuits open now.
    pub open: AtomicU64,
    /// Circuits that ever opened.
    pub opened: AtomicU64,
    /// Closed by the relay (DESTROY) before CREATED2.
    pub refused: AtomicU64,
    /// Failed while building for another reason (bad CREATED2, no answer in time).
    pub failed: AtomicU64,
    /// Closed by the relay (DESTROY) while open and idle.
    pub killed: AtomicU64,
}

impl IdleCtl {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Circuits whose CREATE2 has been answered one way or another.
    pub fn resolved(&self) -> u64 {
        Self::get(&self.opened) + Self::get(&self.refused) + Self::get(&self.failed)
    }

    /// One JSON object with the counters, under `key`, with the stage and the time.
    pub fn line(&self, key: &str, stage: u32, complete: bool, t_s: f64) -> String {
        serde_json::json!({
            key: {
                "stage": stage,
                "complete": complete,
                "t_s": (t_s * 10.0).round() / 10.0,
                "issued": Self::get(&self.issued),
                "open": Self::get(&self.open),
                "opened": Self::get(&self.opened),
                "refused": Self::get(&self.refused),
                "failed": Self::get(&self.failed),
                "killed": Self::get(&self.killed),
            }
        })
        .to_string()
    }
}

/// What a worker needs of the mode: the shared counters, its rate, how many share the stage.
#[derive(Debug, Clone)]
pub struct IdleShared {
    pub ctl: std::sync::Arc<IdleCtl>,
    /// This worker's circuits per second.
    pub rate: f64,
    pub workers: usize,
}

/// What a cell did to an idle circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Refused,
    Failed,
    Killed,
}

/// How a circuit moved from `was_open` to its `state` now.
pub fn classify(was_open: bool, state: &CircState) -> Change {
    match (was_open, state) {
        (false, CircState::Open) => Change::Opened,
        (true, CircState::Closed(_)) => Change::Killed,
        (false, CircState::Closed(r)) if r.starts_with("destroy") => Change::Refused,
        (false, CircState::Closed(_)) => Change::Failed,
        _ => Change::None,
    }
}

/// One worker's idle circuits.
#[derive(Default)]
pub struct IdleSet {
    pub circuits: HashMap<CircId, Circuit>,
    /// (sent at, id) of CREATE2 cells in send order, for the build timeout.
    pending: VecDeque<(Instant, CircId)>,
    /// Circuits still waiting for their answer.
    building: usize,
    issued: u64,
    /// The rate's origin: (when, issued then), reset whenever the target changes.
    origin: Option<(Instant, u64)>,
    last_target: u64,
}

impl IdleSet {
    /// How many CREATE2 cells may be sent now toward `target` (this worker's share) at
    /// `rate` per second, with at most [`MAX_IDLE_INFLIGHT`] unanswered.
    pub fn due(&mut self, now: Instant, target: u64, rate: f64) -> u64 {
        if self.origin.is_none() || target != self.last_target {
            self.origin = Some((now, self.issued));
            self.last_target = target;
        }
        let (t0, base) = self.origin.unwrap_or((now, self.issued));
        // One at once, then the rate.
        let allowed = base + 1 + (now.saturating_duration_since(t0).as_secs_f64() * rate) as u64;
        let room = MAX_IDLE_INFLIGHT.saturating_sub(self.building) as u64;
        allowed.min(target).saturating_sub(self.issued).min(room)
    }

    /// A CREATE2 for `id` was sent at `now`.
    pub fn started(&mut self, id: CircId, circ: Circuit, now: Instant, ctl: &IdleCtl) {
        self.circuits.insert(id, circ);
        self.pending.push_back((now, id));
        self.building += 1;
        self.issued += 1;
        ctl.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// Books `change` of circuit `id` (and forgets it if it closed).
    pub fn apply(&mut self, id: CircId, change: Change, ctl: &IdleCtl) {
        let add = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match change {
            Change::None => return,
            Change::Opened => {
                add(&ctl.opened);
                add(&ctl.open);
            }
            Change::Refused => add(&ctl.refused),
            Change::Failed => add(&ctl.failed),
            Change::Killed => {
                add(&ctl.killed);
                ctl.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if matches!(change, Change::Opened | Change::Refused | Change::Failed) {
            self.building = self.building.saturating_sub(1);
        }
        if change != Change::Opened {
            self.circuits.remove(&id);
        }
    }

    /// Circuits sent before `now - IDLE_BUILD_TIMEOUT` and still building: their ids, to be
    /// failed by the caller (which has the channel to send their DESTROY on).
    pub fn overdue(&mut self, now: Instant) -> Vec<CircId> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.pending.front() {
            if now.saturating_duration_since(at) < IDLE_BUILD_TIMEOUT {
                break;
            }
            self.pending.pop_front();
            if self
                .circuits
                .get(&id)
                .is_some_and(|c| !c.is_open() && !c.is_closed())
            {
                out.push(id);
            }
        }
        // Answered circuits leave the queue lazily, when they reach its front: it holds at
        // most the circuits sent in the last IDLE_BUILD_TIMEOUT (rate × 30 s).
        out
    }
}

/// The main thread's side: walks the stages, prints a line at each, holds, then releases.
/// `running` is false once every worker finished (e.g. its link died). Returns whether
/// every stage was reached with every circuit answered.
pub fn control(plan: &IdlePlan, ctl: &IdleCtl, running: &dyn Fn() -> bool, start: Instant) -> bool {
    use std::io::Write;
    let say = |line: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let mut prev = 0u32;
    let mut all = true;
    for &stage in &plan.stages {
        ctl.target.store(u64::from(stage), Ordering::Relaxed);
        let limit = Instant::now() + plan.stage_limit(prev, stage);
        let mut next_progress = Instant::now() + Duration::from_secs(5);
        let reached = loop {
            if ctl.resolved() >= u64::from(stage) {
                break true;
            }
            if !running() || Instant::now() >= limit {
                break false;
            }
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(5);
                eprintln!(
                    "{}",
                    ctl.line("idle_progress", stage, false, start.elapsed().as_secs_f64())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        say(ctl.line("idle_stage", stage, reached, start.elapsed().as_secs_f64()));
        if !reached {
            all = false;
            break;
        }
        let hold_end = Instant::now() + plan.settle;
        while Instant::now() < hold_end && running() {
            std::thread::sleep(Duration::from_millis(50));
        }
        say(ctl.line(
            "idle_hold_end",
            stage,
            running(),
            start.elapsed().as_secs_f64(),
        ));
        prev = stage;
    }
    ctl.release.store(true, Ordering::Relaxed);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, n) in [(10u64, 3usize), (100_000, 7), (1, 4), (0, 2)] {
            let sum: u64 = (0..n).map(|i| share(total, n, i)).sum();
            assert_eq!(sum, total, "{total} over {n}");
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn due_follows_the_rate_the_target_and_the_inflight_bound() {
        let t0 = Instant::now();
        let mut s = IdleSet::default();
        // One at once.
        assert_eq!(s.due(t0, 100, 10.0), 1);
        s.issued = 1;
        s.building = 1;
        // 1 s later: 1 + 10 allowed, 1 issued.
        assert_eq!(s.due(t0 + Duration::from_secs(1), 100, 10.0), 10);
        // Never past the target.
        assert_eq!(s.due(t0 + Duration::from_secs(100), 100, 10.0), 99);
        // The in-flight bound.
        s.building = MAX_IDLE_INFLIGHT;
        assert_eq!(s.due(t0 + Duration::from_secs(100), 100, 10.0), 0);
        s.building = MAX_IDLE_INFLIGHT - 3;
        assert_eq!(s.due(t0 + Duration::from_secs(100), 100, 10.0), 3);
        // A new target restarts the rate from now: the next stage does not burst.
        s.building = 0;
        s.issued = 100;
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(s.due(t1, 1000, 10.0), 1);
        assert_eq!(s.due(t1 + Duration::from_millis(500), 1000, 10.0), 6);
    }

    #[test]
    fn changes_are_classified_and_counted() {
        assert_eq!(classify(false, &CircState::Open), Change::Opened);
        assert_eq!(classify(true, &CircState::Open), Change::None);
        assert_eq!(classify(false, &CircState::Building(0)), Change::None);
        assert_eq!(
            classify(false, &CircState::Closed("destroy_resourcelimit".into())),
            Change::Refused
        );
        assert_eq!(
            classify(false, &CircState::Closed("handshake_failed".into())),
            Change::Failed
        );
        assert_eq!(
            classify(true, &CircState::Closed("destroy_finished".into())),
            Change::Killed
        );
        let ctl = IdleCtl::default();
        let mut s = IdleSet {
            building: 3,
            ..Default::default()
        };
        s.apply(CircId(1), Change::Opened, &ctl);
        s.apply(CircId(2), Change::Refused, &ctl);
        s.apply(CircId(3), Change::Failed, &ctl);
        assert_eq!(s.building, 0);
        assert_eq!(ctl.resolved(), 3);
        s.apply(CircId(1), Change::Killed, &ctl);
        assert_eq!(IdleCtl::get(&ctl.open), 0);
        assert_eq!(IdleCtl::get(&ctl.killed), 1);
        let line: serde_json::Value =
            serde_json::from_str(&ctl.line("idle_stage", 3, true, 1.25)).unwrap();
        assert_eq!(line["idle_stage"]["refused"], 1);
        assert_eq!(line["idle_stage"]["opened"], 1);
        assert_eq!(line["idle_stage"]["complete"], true);
    }
}
