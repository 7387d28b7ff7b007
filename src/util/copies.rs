//! Counters of cell copies on the data path, one per site of the copy map
//! (`docs/architecture.md`, "Copy map"), so a test can check the map against the code and
//! fails when a copy is added (`tests/copies_per_cell.rs`).
//!
//! They count bytes, per thread (a shard is one thread; tests run in parallel threads), and
//! exist only in debug builds and with the `copy-count` feature: in a release build
//! [`note`] is empty and [`ENABLED`] is false, so the data path pays nothing.
//!
//! Sites inside rustls (TLS 1.2 links, and every link until it switches to Fors's record
//! layer) cannot be instrumented; they are counted at the call into rustls, from what rustls
//! 0.23's buffered API is documented and read to do with the bytes passed (see the map).

/// One copy site of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(usize)]
pub enum CopySite {
    /// Receive buffer → rustls's record buffer (`read_tls`, inside rustls).
    TlsDeframe,
    /// Decrypted record → rustls's plaintext queue (`process_new_packets`, inside rustls).
    TlsPlaintext,
    /// rustls's plaintext → the channel's receive buffer (`reader().read`).
    ChanInbuf,
    /// Channel receive buffer → the read's relay stage (`queue_relay_cell`).
    RelayStage,
    /// Exit socket bytes → a DATA cell body in its stage slot (`package_data_cell`).
    ExitEncode,
    /// A cell body → an `Action::SendCell` in the node's action buffer.
    ActionPush,
    /// A DATA payload → an `Action::StreamWrite` (`StreamBytes::new`).
    StreamBytes,
    /// An action's cell or bytes moved out of the action buffer to run it.
    ActionTake,
    /// A cell body → a channel's plaintext cell queue (`CellQueue::send_cell`), straight
    /// from the stage or from an action.
    ChanQueue,
    /// Cell queue → a rustls record buffer (`writer().write_all`, inside rustls).
    TlsRecord,
    /// rustls's records → the send pool (`Channel::write_output_into`), or the channel's
    /// TLS output buffer for what does not fit (`write_tls`).
    TlsOut,
    /// Received TLS record bytes → the channel's record buffer, where they are opened in
    /// place (a channel on Fors's record layer): a record split across two reads
    /// (`Channel::read_records_in_place`), or every record when the input is read-only
    /// (`Channel::read_records`).
    RecordInbuf,
    /// Queued cells → a send-pool buffer (`Channel::write_output_into`) or the channel's TLS
    /// output buffer (`pending_output`), behind a record header, sealed there (a channel on
    /// Fors's record layer).
    RecordSeal,
    /// Staged bytes → a send-pool buffer (`shard::Core::send_partial`; the fake shard counts
    /// its stand-in the same way).
    SendPool,
}

/// Number of sites.
pub const SITES: usize = CopySite::SendPool as usize + 1;

/// Every site, in map order.
pub const ALL: [CopySite; SITES] = [
    CopySite::TlsDeframe,
    CopySite::TlsPlaintext,
    CopySite::ChanInbuf,
    CopySite::RelayStage,
    CopySite::ExitEncode,
    CopySite::ActionPush,
    CopySite::StreamBytes,
    CopySite::ActionTake,
    CopySite::ChanQueue,
    CopySite::TlsRecord,
    CopySite::TlsOut,
    CopySite::RecordInbuf,
    CopySite::RecordSeal,
    CopySite::SendPool,
];

/// Whether this build counts (debug assertions or the `copy-count` feature).
pub const ENABLED: bool = cfg!(any(debug_assertions, feature = "copy-count"));

#[cfg(any(debug_assertions, feature = "copy-count"))]
thread_local! {
    // Const-initialised: touching it never allocates (the allocation test counts too).
    static BYTES: [std::cell::Cell<u64>; SITES] =
        const { [const { std::cell::Cell::new(0) }; SITES] };
}

/// `bytes` were copied at `site` on this thread.
#[inline(always)]
pub fn note(site: CopySite, bytes: usize) {
    #[cfg(any(debug_assertions, feature = "copy-count"))]
    BYTES.with(|b| {
        let c = &b[site as usize];
        c.set(c.get() + bytes as u64);
    });
    #[cfg(not(any(debug_assertions, feature = "copy-count")))]
    let _ = (site, bytes);
}

/// Bytes copied at each site on this thread so far (all zero when not [`ENABLED`]).
pub fn snapshot() -> [u64; SITES] {
    #[allow(unused_mut)]
    let mut out = [0u64; SITES];
    #[cfg(any(debug_assertions, feature = "copy-count"))]
    BYTES.with(|b| {
        for (o, c) in out.iter_mut().zip(b.iter()) {
            *o = c.get();
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_site_and_thread() {
        let before = snapshot();
        note(CopySite::ChanQueue, 509);
        note(CopySite::ChanQueue, 509);
        note(CopySite::SendPool, 1028);
        let after = snapshot();
        assert_eq!(
            after[CopySite::ChanQueue as usize] - before[CopySite::ChanQueue as usize],
            1018
        );
        assert_eq!(
            after[CopySite::SendPool as usize] - before[CopySite::SendPool as usize],
            1028
        );
        assert_eq!(
            after[CopySite::TlsOut as usize],
            before[CopySite::TlsOut as usize]
        );
        // Another thread starts from zero.
        let other = std::thread::spawn(snapshot).join().unwrap();
        assert_eq!(other, [0; SITES]);
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
