//! The twin relay cores of the CGO grouping tests (`tests/cgo_live_batch.rs`,
//! `tests/cgo_stage_batch.rs`): cores built alike and seeded alike, so one cell stream fed to
//! each (one at a time, or grouped) must give byte-identical answers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fors::cell::{ChanCmd, CircId};
use fors::crypto::handshake::NtorKeyMap;
use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use fors::proto::circuit::{
    Action, CellBody, ChanInfo, CoreIo, RelayCore, RelayHop, RelayIdentity,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{policy, test_config, TestNet};

pub fn seed(test: &str) -> u64 {
    let s = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: seed {s} (FORS_TEST_SEED={s} repeats it)");
    s
}

pub fn prev_id() -> RelayIdentity {
    RelayIdentity {
        rsa: RsaIdentity([0x33; 20]),
        ed: Ed25519Identity([0x33; 32]),
    }
}

pub fn next_id() -> RelayIdentity {
    RelayIdentity {
        rsa: RsaIdentity([0x44; 20]),
        ed: Ed25519Identity([0x44; 32]),
    }
}

/// One core of the twins, with its own randomness, seeded alike.
pub struct Twin {
    pub core: RelayCore<RelayHop, TestNet>,
    pub rng: StdRng,
    pub now: Instant,
}

impl Twin {
    pub fn new(seed: u64, keys: Arc<NtorKeyMap>, now: Instant, group_min: Option<usize>) -> Twin {
        let net = TestNet {
            known: vec![prev_id().rsa, next_id().rsa],
            reentry: vec![],
        };
        let mut cfg = test_config();
        cfg.pool_cells = 4096;
        cfg.max_queue_per_circuit = 1024;
        let id = RelayIdentity {
            rsa: RsaIdentity([9; 20]),
            ed: Ed25519Identity([9; 32]),
        };
        let mut core = RelayCore::new(cfg, id, keys, policy("accept 127.0.0.1:*, reject *:*"), net);
        core.set_cgo_group_min(group_min);
        Twin {
            core,
            rng: StdRng::seed_from_u64(seed),
            now,
        }
    }

    /// Runs `f`, then flushes the originate stage (as the shard does at a batch's end).
    pub fn io<T>(
        &mut self,
        f: impl FnOnce(&mut RelayCore<RelayHop, TestNet>, &mut CoreIo<'_>) -> T,
    ) -> (T, Vec<Action>) {
        let mut out = Vec::new();
        let mut io = CoreIo::new(self.now, &mut self.rng, &mut out);
        let r = f(&mut self.core, &mut io);
        self.core.flush_originated(&mut io);
        (r, out)
    }

    /// Handles one cell from `chan` (no output kept but the actions).
    pub fn cell(
        &mut self,
        chan: &ChanInfo,
        id: CircId,
        cmd: ChanCmd,
        mut body: CellBody,
    ) -> Vec<Action> {
        self.io(|c, io| c.handle_cell(chan, id, cmd, &mut body, io))
            .1
    }
}

/// Runs `f` on every twin; the twins must answer alike (setup steps). Returns the answer.
pub fn on_all(twins: &mut [Twin], mut f: impl FnMut(&mut Twin) -> Vec<Action>) -> Vec<Action> {
    let first = f(&mut twins[0]);
    for t in &mut twins[1..] {
        let other = f(t);
        assert_eq!(
            format!("{other:?}"),
            format!("{first:?}"),
            "twins differ in setup"
        );
    }
    first
}
