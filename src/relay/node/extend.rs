//! Extend routing: a circuit's next hop (ours, or another shard's through
//! [`super::proxy`]) is reached over an open channel to the target on this shard, one in its
//! handshake here, or through the identity's owner shard ([`route_extend`]), which reuses or
//! opens the channel; CREATE2 goes out with a circuit ID allocated on that channel and the
//! CREATED2 (or DESTROY) that answers it is routed back to the circuit.

use super::*;

impl RelayNode {
    /// Carries out an extend for one of our circuits or for another shard's: over an open
    /// channel to the target on this shard if there is one, else through the identity's
    /// owner shard, which reuses or opens the channel ([`route_extend`]).
    pub(super) fn extend(
        &mut self,
        who: ExtendFor,
        target: ExtendTarget,
        create2: [u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let open = self.relay_chans.get(&target.rsa).copied();
        let opening = self
            .opening
            .get(&target.rsa)
            .copied()
            .filter(|&id| matches!(self.conns.get(id.slot() as usize), Some(Some(c)) if c.id == id && !c.closing));
        let owner = owner_shard_id(&target.rsa, self.shards);
        let remote_request = matches!(who, ExtendFor::Remote { .. });
        match route_extend(open, opening, owner, self.shard, remote_request) {
            ExtendRoute::Reuse(id) => self.send_create2(id, who, &create2, now, out),
            ExtendRoute::Join(id) => {
                if let Some(Conn {
                    kind: Kind::Channel(c),
                    ..
                }) = self.conn(id)
                {
                    c.waiting_extends.push((who, Box::new(create2)));
                }
            }
            ExtendRoute::Remote(to) => {
                let ExtendFor::Local(circ) = who else {
                    return; // unreachable: remote requests are served here
                };
                let msg = RelayMsg::ExtendRequest {
                    origin: circ,
                    target,
                    create2,
                };
                // The link's uncharged cap refuses it: the extend fails here, as for a
                // channel we could not open (counted with the overflow's kills, not as sent).
                if self.cross_send(to, msg, out).is_some() {
                    self.cross.overflow_kills += 1;
                    self.extend_failed(who, DestroyReason::ResourceLimit, now, out);
                } else {
                    self.cross.extends_sent += 1;
                }
            }
            ExtendRoute::Open => self.open_channel(who, target, create2, now, out),
        }
    }

    /// Opens an outbound channel to `target` for an extend.
    pub(super) fn open_channel(
        &mut self,
        who: ExtendFor,
        target: ExtendTarget,
        create2: [u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        // An IPv6-only extend without an IPv6 ORPort of ours fails with CONNECTFAILED below,
        // as C `circuit_open_connection_for_extend`.
        let can_ipv6 = self.network.get().extend_over_ipv6;
        let addr = target.choose_addr(can_ipv6, &mut self.chan_rng);
        let ctx = self.network.get().link.clone();
        let started = addr.and_then(|addr| {
            let ch = Channel::new_initiator(
                ctx,
                ExpectedPeer {
                    rsa: target.rsa,
                    ed: target.ed,
                },
                addr.ip(),
                out.wall(),
                &mut self.chan_rng,
            )
            .ok()?;
            let from = self
                .network
                .get()
                .outbound
                .source(OutboundKind::Or, addr.ip());
            let id = out.connect_from(addr, from, true).ok()?;
            Some((id, ch))
        });
        let Some((id, channel)) = started else {
            self.extend_failed(who, DestroyReason::ConnectFailed, now, out);
            return;
        };
        if let Some(a) = addr {
            let _ = out.set_bw_class(id, self.bw_class(a.ip(), true));
            // As for accepted channels: the handshake is not held back by the buckets.
            let _ = out.set_bw_read_ungated(id, true);
        }
        if let Some(slot) = self.conns.get_mut(id.slot() as usize) {
            *slot = Some(Conn {
                id,
                kind: Kind::Channel(Box::new(ChanConn {
                    channel,
                    open: false,
                    peer: PeerIdentity::Client,
                    waiting_extends: vec![(who, Box::new(create2))],
                    cross_paused: false,
                    blocked: false,
                    overflow: VecDeque::new(),
                    idle: None,
                    padding: None,
                    dos_slot: None,
                })),
                read_paused: false,
                closing: false,
            });
            self.opening.insert(target.rsa, id);
            if let Some(a) = addr {
                crate::relay::ctlevents::launched(self.shard, id, target.rsa, a);
            }
            self.mark_dirty(id);
        }
    }

    /// An extend failed: close our circuit, or tell its origin shard.
    pub(super) fn extend_failed(
        &mut self,
        who: ExtendFor,
        reason: DestroyReason,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        match who {
            ExtendFor::Local(circ) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let _ = self.core.extend_result(circ, Err(reason), &mut io);
            }
            ExtendFor::Remote { shard, circ } => {
                let msg = RelayMsg::ExtendReply {
                    origin: circ,
                    result: Err(reason),
                    body: [0; CELL_BODY_LEN],
                };
                self.cross_send(shard, msg, out);
            }
        }
    }

    /// CREATED2 came back on channel `id` for circuit ID `circ_id`.
    pub(super) fn extend_done(
        &mut self,
        who: ExtendFor,
        id: ConnId,
        circ_id: CircId,
        created2: &CellBody,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let chan = self.chan(id);
        match who {
            ExtendFor::Local(circ) => {
                let mut io = CoreIo::new(now, &mut self.core_rng, &mut self.actions);
                let done = ExtendDone {
                    next: NextHop {
                        chan,
                        shard: ShardIdx(self.shard.0 as u16),
                        circ_id,
                    },
                    created2: &created2[..],
                };
                let _ = self.core.extend_result(circ, Ok(done), &mut io);
            }
            ExtendFor::Remote { shard, circ } => {
                if !self.proxy.insert(id, circ_id, shard, circ) {
                    let destroy = crate::proto::circuit::destroy_body(DestroyReason::ResourceLimit);
                    self.send_local(chan, circ_id, ChanCmd::DESTROY, &destroy, out);
                    self.extend_failed(who, DestroyReason::ResourceLimit, now, out);
                    return;
                }
                self.proxy_attached.insert(chan);
                self.cross.circuits_total += 1;
                let msg = RelayMsg::ExtendReply {
                    origin: circ,
                    result: Ok((chan, circ_id)),
                    body: *created2,
                };
                self.cross_send(shard, msg, out);
            }
        }
    }

    pub(super) fn send_create2(
        &mut self,
        id: ConnId,
        who: ExtendFor,
        create2: &[u8; CELL_BODY_LEN],
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let pending = &self.pending_extends;
        let proxy = &self.proxy;
        let chan = chan_id(self.shard, id);
        let mut sent = None;
        if let Some(Some(Conn {
            kind: Kind::Channel(c),
            ..
        })) = self.conns.get_mut(id.slot() as usize)
        {
            let alloc = c.channel.circ_id_allocator();
            let core = &self.core;
            let circ_id = alloc.allocate(&mut self.chan_rng, |cid| {
                pending.contains_key(&(id, cid))
                    || proxy.contains(id, cid)
                    || core.circ_id_in_use(chan, cid)
            });
            if let Some(cid) = circ_id {
                if c.channel.send_cell(cid, ChanCmd::CREATE2, create2).is_ok() {
                    sent = Some(cid);
                }
            }
        }
        match sent {
            Some(cid) => {
                self.pending_extends.insert((id, cid), who);
                self.mark_dirty(id);
            }
            None => self.extend_failed(who, DestroyReason::ResourceLimit, now, out),
        }
    }

    /// Routes CREATED2/DESTROY answers to our extends on channel `id`.
    pub(super) fn route_answers(
        &mut self,
        id: ConnId,
        now: Instant,
        out: &mut impl ShardIo<RelayMsg>,
    ) {
        let mut answers = std::mem::take(&mut self.answers);
        for (circ_id, cmd, body) in &answers {
            let Some(who) = self.pending_extends.remove(&(id, *circ_id)) else {
                continue;
            };
            if *cmd == ChanCmd::CREATED2 {
                self.extend_done(who, id, *circ_id, body, now, out);
            } else {
                self.extend_failed(who, DestroyReason::Destroyed, now, out);
            }
        }
        answers.clear();
        self.answers = answers;
    }
}
