//! The control plane's side of accounting ([`crate::accounting`]): feeds it the shards'
//! cumulative byte counters once a second, keeps `DataDirectory/state` up to date, logs the
//! transitions as C tor does and publishes what `GETINFO accounting/*` reads.
//!
//! What hibernation does to the network is the caller's: the control plane puts the state
//! into the shards' snapshot and the descriptor (`hibernating 1`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::log::{log_info, log_notice, log_warn};
use crate::accounting::state::{StateError, StateFile, STATE_FILE_NAME};
use crate::accounting::time::format_iso;
use crate::accounting::{
    Accounting, AccountingConfig, AccountingReport, Hibernation, IdentityWakeup, TickOutcome,
};

/// Where the ControlPort reads the accounting values; `None` while accounting is off.
pub type AccountingInfo = Arc<Mutex<Option<AccountingReport>>>;

/// `TorVersion` written into the state file.
fn state_version() -> String {
    format!("Fors {}", env!("CARGO_PKG_VERSION"))
}

/// Accounting as the control plane runs it.
pub struct AccountingDriver {
    core: Accounting,
    path: PathBuf,
    /// The state file as last read or written (other lines are kept).
    file: StateFile,
    wake: IdentityWakeup,
    /// (Unix second, read total, written total) of the last sample.
    last: Option<(u64, u64, u64)>,
    info: AccountingInfo,
    /// The last save failed (warn once per failure streak).
    save_failing: bool,
    /// A save is due but waits for the first sample: start-up runs before the switch to
    /// `User`, and the state file must belong to the user.
    save_pending: bool,
}

impl AccountingDriver {
    /// Reads `DataDirectory/state` (C tor's keys) and configures the interval for `now`.
    /// A malformed state file is an error naming the line: it is never replaced.
    /// `counters_at_start` is what the shards' cumulative counters read now when known
    /// (zero before the shards start), so that the first sample counts every byte since;
    /// `None` (accounting turned on by a reload) starts counting at the first sample.
    pub fn start(
        cfg: AccountingConfig,
        data_dir: &Path,
        identity_digest: [u8; 20],
        now: u64,
        counters_at_start: Option<(u64, u64)>,
        info: AccountingInfo,
    ) -> Result<AccountingDriver, StateError> {
        let path = data_dir.join(STATE_FILE_NAME);
        let file = StateFile::load(&path)?.unwrap_or_default();
        let mut wake = IdentityWakeup(identity_digest);
        let core = Accounting::new(cfg, file.accounting, now, &mut wake);
        let mut d = AccountingDriver {
            core,
            path,
            file,
            wake,
            last: counters_at_start.map(|(r, w)| (now, r, w)),
            info,
            save_failing: false,
            save_pending: false,
        };
        d.log_configured(now);
        let mut out = d.core.tick(now, &mut d.wake);
        d.save_pending = std::mem::take(&mut out.save);
        d.after_tick(now, out);
        Ok(d)
    }

    /// C `accounting_set_wakeup_time`'s notice.
    fn log_configured(&self, now: u64) {
        let c = &self.core;
        if c.expected_usage() == 0 {
            log_notice!(
                "Configured hibernation. This interval begins at {} and ends at {} (UTC). We \
                 have no prior estimate for bandwidth, so we will start out awake and \
                 hibernate when we exhaust our quota.",
                format_iso(c.interval_start()),
                format_iso(c.interval_end())
            );
        } else {
            log_notice!(
                "Configured hibernation. This interval began at {}; the scheduled wake-up time \
                 {} {}; the next interval begins at {} (all times UTC).",
                format_iso(c.interval_start()),
                if now < c.interval_wakeup() {
                    "is"
                } else {
                    "was"
                },
                format_iso(c.interval_wakeup()),
                format_iso(c.interval_end())
            );
        }
    }

    pub fn hibernation(&self) -> Hibernation {
        self.core.hibernation()
    }

    /// One sample of the shards' cumulative socket byte counters at Unix second `now`.
    /// Returns the state before a change, if the hibernation state changed.
    pub fn sample(&mut self, now: u64, read_total: u64, written_total: u64) -> Option<Hibernation> {
        if let Some((t, r, w)) = self.last {
            // Counters that went backwards (a restarted shard) count as nothing new.
            self.core.add_bytes(
                read_total.saturating_sub(r),
                written_total.saturating_sub(w),
                now.saturating_sub(t),
            );
        }
        self.last = Some((now, read_total, written_total));
        let mut out = self.core.tick(now, &mut self.wake);
        out.save |= std::mem::take(&mut self.save_pending);
        self.after_tick(now, out)
    }

    fn after_tick(&mut self, now: u64, out: TickOutcome) -> Option<Hibernation> {
        if out.new_interval {
            log_info!("Starting new accounting interval.");
            self.log_configured(now);
        }
        if let Some(prev) = out.changed_from {
            self.log_change(prev, now);
        }
        if out.save {
            self.save(now);
        }
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.core.report());
        out.changed_from
    }

    /// C's notices for each transition (hibernate.c).
    fn log_change(&self, prev: Hibernation, now: u64) {
        let c = &self.core;
        match c.hibernation() {
            Hibernation::Soft => log_notice!(
                "Bandwidth soft limit reached; commencing hibernation. No new connections will \
                 be accepted."
            ),
            Hibernation::Hard if now < c.interval_wakeup() => log_notice!(
                "Commencing hibernation. We will wake up at {} UTC.",
                format_iso(c.interval_wakeup())
            ),
            Hibernation::Hard => log_notice!(
                "Going dormant until {} UTC. Blowing away remaining connections.",
                format_iso(c.hibernate_end())
            ),
            Hibernation::Awake if prev != Hibernation::Initial => {
                log_notice!("Hibernation period ended. Resuming normal activity.")
            }
            Hibernation::Awake | Hibernation::Initial => {}
        }
    }

    /// Writes the usage into the state file (atomically); a failure is logged, as in C, and
    /// retried at the next save.
    pub fn save(&mut self, now: u64) {
        self.file.accounting = Some(self.core.stored());
        match self.file.save(&self.path, now, &state_version()) {
            Ok(()) => self.save_failing = false,
            Err(e) => {
                if !self.save_failing {
                    log_warn!("Couldn't record bandwidth usage to disk: {e}");
                }
                self.save_failing = true;
            }
        }
    }

    /// SIGHUP with accounting still on: C `configure_accounting` with the new options.
    pub fn reconfigure(&mut self, cfg: AccountingConfig, now: u64) -> Option<Hibernation> {
        if *self.core.config() == cfg {
            return None;
        }
        self.core.reconfigure(cfg, now, &mut self.wake);
        self.log_configured(now);
        let out = self.core.tick(now, &mut self.wake);
        self.after_tick(now, out)
    }

    /// Accounting was turned off: save the counts and stop reporting.
    pub fn stop(mut self, now: u64) {
        self.save(now);
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::time::{parse_iso, Zone};
    use crate::accounting::{AccountingRule, AccountingStart};

    #[test]
    fn samples_drive_the_core_the_state_file_and_getinfo() {
        let dir = std::env::temp_dir().join(format!("fors-hibernate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = AccountingConfig {
            max: 10_000,
            rule: AccountingRule::Sum,
            start: "day 00:00".parse::<AccountingStart>().unwrap(),
            bandwidth_rate: 1 << 20,
            zone: Zone::Utc,
        };
        let t0 = parse_iso("2026-12-06 08:00:00").unwrap();
        let info = AccountingInfo::default();
        let mut d =
            AccountingDriver::start(cfg, &dir, [1; 20], t0, Some((0, 0)), info.clone()).unwrap();
        assert_eq!(d.hibernation(), Hibernation::Awake);
        // The first save waits for the first sample (after the switch to User).
        assert!(!dir.join(STATE_FILE_NAME).exists());
        assert_eq!(
            info.lock().unwrap().unwrap().hibernation,
            Hibernation::Awake
        );

        // Bytes since start count; 95% of the sum is the soft limit.
        assert_eq!(d.sample(t0 + 1, 5000, 4500), Some(Hibernation::Awake));
        assert_eq!(d.hibernation(), Hibernation::Soft);
        let r = info.lock().unwrap().unwrap();
        assert_eq!((r.read_written, r.bytes_left), ((5000, 4500), (500, 500)));
        let saved = StateFile::load(&dir.join(STATE_FILE_NAME))
            .unwrap()
            .unwrap()
            .accounting
            .unwrap();
        assert_eq!((saved.bytes_read, saved.bytes_written), (5120, 5120));
        assert_eq!(saved.soft_limit_hit_at, t0 + 1);

        // Counters that go backwards (a restarted shard) add nothing.
        assert_eq!(d.sample(t0 + 2, 10, 10), None);
        assert_eq!(d.sample(t0 + 3, 310, 510), Some(Hibernation::Soft));
        assert_eq!(d.hibernation(), Hibernation::Hard);

        // Turned off: the counts are saved and GETINFO says off.
        d.stop(t0 + 4);
        assert!(info.lock().unwrap().is_none());
        let saved = StateFile::load(&dir.join(STATE_FILE_NAME))
            .unwrap()
            .unwrap()
            .accounting
            .unwrap();
        assert_eq!((saved.bytes_read, saved.bytes_written), (6144, 5120));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
