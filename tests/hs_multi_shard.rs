//! Fors as introduction and rendezvous point for C tor, live (issue #11), on relays with
//! two shards (`NumCPUs 2`): the service's and the client's circuits at one Fors relay may
//! sit on different shards, and each key's or cookie's table is on its home shard
//! (`proto::circuit::hs_cross`).
//!
//! The same private loopback network as `hs_single_shard.rs` (scripts/testnet.py; nothing
//! leaves the machine): three authorities, one C tor exit, and three Fors middles, here with
//! `NumCPUs 2`, each with a MetricsPort. The C tor client runs a v3 onion service
//! (ADD_ONION) in front of a local echo server and connects to it with a new SOCKS username
//! per attempt (bounded at 24) until the Fors relays' MetricsPorts show a rendezvous joined
//! (`fors_relay_all_shards_hs_rendezvous1_total{action="success"}`); that stream echoes 64 KiB
//! of seeded random bytes both ways, SHA-256 checked. Printed: the intro points and
//! INTRODUCE1s at Fors, and how many introductions and joins crossed shards
//! (`fors_relay_all_shards_hs_cross_shard_total{kind=...}`; whether one does is the
//! network's choice of channels, so it is printed, not asserted).
//!
//! **Ignored in the suite** (probabilistic, as the single-shard one). Run it with
//! `cargo test --test hs_multi_shard -- --ignored`.
//!
//! Skipped without `tor`, `tor-gencert` or python3, or with `FORS_SKIP_TESTNET` (fails
//! instead under `CI=true`). Every wait is bounded; the whole test stays under 180 s.

mod daemon_common;
mod hs_live;

#[test]
#[ignore = "probabilistic: C tor picks the rendezvous point among all relays (issue #11)"]
fn c_tor_client_meets_its_service_at_a_two_shard_fors_rendezvous_point() {
    hs_live::meet_at_fors_rendezvous(
        "c_tor_client_meets_its_service_at_a_two_shard_fors_rendezvous_point",
        "hs-multi-shard",
        2,
    );
}
