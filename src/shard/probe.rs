//! Start-up probe of the io_uring features the shard loop is built on.
//!
//! A kernel without one of them fails start-up with a typed error naming the feature, instead
//! of failing later on the first connection.

use io_uring::{opcode, register::Probe, IoUring};

use super::error::ShardError;

/// What the running kernel offers beyond the required set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// IORING_SETUP_SINGLE_ISSUER + DEFER_TASKRUN can be used (6.1): completions are processed
    /// only when the owning shard asks, never by interrupting it.
    pub defer_taskrun: bool,
    /// The ring can wait with a timeout argument (IORING_FEAT_EXT_ARG, 5.11).
    pub ext_arg: bool,
    /// Zero-copy sends can report whether the kernel copied anyway
    /// (IORING_SEND_ZC_REPORT_USAGE, 6.2; older kernels reject the flag with EINVAL).
    pub zc_report_usage: bool,
}

fn require(
    probe: &Probe,
    code: u8,
    feature: &'static str,
    needs: &'static str,
) -> Result<(), ShardError> {
    if probe.is_supported(code) {
        Ok(())
    } else {
        Err(ShardError::MissingKernelFeature { feature, needs })
    }
}

/// Probes opcodes, register commands and setup flags. Needs no sockets.
pub fn probe_kernel() -> Result<KernelFeatures, ShardError> {
    let ring: IoUring = IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => ShardError::MissingKernelFeature {
            feature: "io_uring_setup",
            needs: "5.1",
        },
        _ => ShardError::ring("setup (probe ring)", e),
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| ShardError::MissingKernelFeature {
            feature: "IORING_REGISTER_PROBE",
            needs: "5.6",
        })?;
    require(&probe, opcode::Accept::CODE, "IORING_OP_ACCEPT", "5.5")?;
    require(&probe, opcode::Connect::CODE, "IORING_OP_CONNECT", "5.5")?;
    require(
        &probe,
        opcode::LinkTimeout::CODE,
        "IORING_OP_LINK_TIMEOUT",
        "5.5",
    )?;
    require(&probe, opcode::Timeout::CODE, "IORING_OP_TIMEOUT", "5.4")?;
    require(
        &probe,
        opcode::AsyncCancel::CODE,
        "IORING_OP_ASYNC_CANCEL",
        "5.5",
    )?;
    require(&probe, opcode::Read::CODE, "IORING_OP_READ", "5.6")?;
    require(&probe, opcode::Write::CODE, "IORING_OP_WRITE", "5.6")?;
    require(&probe, opcode::Recv::CODE, "IORING_OP_RECV", "5.6")?;
    require(&probe, opcode::Send::CODE, "IORING_OP_SEND", "5.6")?;
    // Multishot accept arrived in 5.19 together with IORING_OP_SOCKET; multishot recv in 6.0
    // together with IORING_OP_SEND_ZC. There is no probe bit for the multishot flags, so the
    // sibling opcode of the same release stands in for them.
    require(
        &probe,
        opcode::Socket::CODE,
        "multishot accept (IORING_ACCEPT_MULTISHOT)",
        "5.19",
    )?;
    require(&probe, opcode::SendZc::CODE, "IORING_OP_SEND_ZC", "6.0")?;
    require(
        &probe,
        opcode::SendZc::CODE,
        "multishot recv (IORING_RECV_MULTISHOT)",
        "6.0",
    )?;

    let sub = ring.submitter();
    // Registered (fixed) files: sparse table + update (5.19 for sparse registration).
    sub.register_files_sparse(4)
        .map_err(|_| ShardError::MissingKernelFeature {
            feature: "IORING_REGISTER_FILES2 (sparse registered files)",
            needs: "5.19",
        })?;
    // Provided buffer rings: register a tiny one and take it down again.
    let mut ring_mem = ProbeBufRing([[0u8; 16]; 8]);
    // SAFETY: `ring_mem` is page-aligned, 8 entries of 16 bytes, and outlives the registration
    // (unregistered two lines below, before it goes out of scope).
    let reg =
        unsafe { sub.register_buf_ring_with_flags(ring_mem.0.as_mut_ptr() as u64, 8, 0x7ff0, 0) };
    reg.map_err(|_| ShardError::MissingKernelFeature {
        feature: "IORING_REGISTER_PBUF_RING (provided buffer rings)",
        needs: "5.19",
    })?;
    sub.unregister_buf_ring(0x7ff0)
        .map_err(|e| ShardError::ring("unregister probe buffer ring", e))?;

    let ext_arg = ring.params().is_feature_ext_arg();
    if !ring.params().is_feature_nodrop() {
        return Err(ShardError::MissingKernelFeature {
            feature: "IORING_FEAT_NODROP",
            needs: "5.5",
        });
    }
    let defer_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .is_ok();
    Ok(KernelFeatures {
        defer_taskrun,
        ext_arg,
        zc_report_usage: kernel_release().is_some_and(|v| v >= (6, 2)),
    })
}

/// The running kernel's (major, minor) from uname, e.g. "6.18.44-fc" → (6, 18).
fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: `uname` fills the zeroed struct it is given; every field is NUL-terminated.
    let name = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    parse_release(&name)
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[repr(C, align(4096))]
struct ProbeBufRing([[u8; 16]; 8]);

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_release_parses_distribution_suffixes() {
        assert_eq!(super::parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(super::parse_release("6.1.0-27-amd64"), Some((6, 1)));
        assert_eq!(super::parse_release("5.15"), Some((5, 15)));
        assert_eq!(super::parse_release("garbage"), None);
        assert!(super::kernel_release().is_some());
    }
}
