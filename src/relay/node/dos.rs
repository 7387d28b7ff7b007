//! The DoS gate (C `dos.c`): connections are checked at accept against the per-address
//! table all shards share, and a client channel's CREATE cells against the
//! circuit-creation defence, before the circuit core sees them.

use super::*;

/// What every shard shares for the DoS defences: the per-address table and the torrc's DoS
/// options (republished on SIGHUP).
#[derive(Clone)]
pub struct DosShared {
    pub table: Arc<ClientAddrTable>,
    pub options: Arc<SnapshotCell<DosOptions>>,
}

/// What a channel's CREATE cells are checked against (C `dos_cc_new_create_cell` and
/// `dos_cc_get_defense_type` in `command_process_create_cell`).
pub(super) struct DosCheck<'a> {
    pub(super) table: &'a ClientAddrTable,
    pub(super) slot: AddrSlot,
    pub(super) cfg: DosConfig,
    /// Seconds on the table's clock.
    pub(super) now: u32,
}

impl channel::CellSink<'_> {
    /// The circuit-creation defence for one CREATE* cell; true if it was answered with
    /// DESTROY (RESOURCELIMIT) and must not reach the core.
    pub(super) fn dos_refuses(&mut self, circ_id: CircId, out: &mut CellQueue) -> bool {
        let Some(d) = &self.dos else { return false };
        // Only channels from clients (peers that did not authenticate as relays) count.
        if self.info.peer != PeerIdentity::Client || self.info.we_initiated {
            return false;
        }
        // C counts the cell before validating it...
        d.table.note_create_cell(d.slot, &d.cfg, d.now, self.rng);
        // ...and drops a zero or in-use circuit ID before the defence (the core does).
        if circ_id.is_zero() || self.core.circ_id_in_use(self.info.id, circ_id) {
            return false;
        }
        if d.table.create_defense(d.slot, &d.cfg, d.now) == CircCreateDecision::Refuse {
            let body = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
            // A full queue drops the answer: the client times the circuit out instead.
            let _ = out.send_cell(circ_id, ChanCmd::DESTROY, &body);
            return true;
        }
        false
    }
}

impl RelayNode {
    /// A new connection from `peer`: C tor starts counting it at once (connection.c,
    /// channeltls.c). `None`: refused and closed; else its table entry, if tracked.
    pub(super) fn dos_admit(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        out: &mut impl ShardIo<RelayMsg>,
    ) -> Option<Option<AddrSlot>> {
        let decision = self.dos.on_accept(
            peer.ip(),
            &self.dos_cfg,
            self.dos.secs(out.now()),
            &mut self.core_rng,
        );
        match decision {
            ConnDecision::Track(slot) => Some(Some(slot)),
            ConnDecision::Untracked => Some(None),
            ConnDecision::Refuse(why) => {
                log_debug!(
                    "shard {}: DoS defence closed a new connection ({why:?})",
                    self.shard.0
                );
                self.stats
                    .handler
                    .connections_closed_unserved
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out.close(conn);
                None
            }
        }
    }
}

/// The DoS thresholds: the torrc's options over the snapshot's consensus parameters. Runs
/// once per new snapshot, not per cell.
pub fn dos_config(snap: &NetworkSnapshot, torrc: &DosOptions) -> DosConfig {
    DosConfig::from_raw_params(torrc, &snap.consensus_params)
}
