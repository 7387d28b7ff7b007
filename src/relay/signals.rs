//! Signals as events: SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 are blocked in every thread
//! and read from a `signalfd` by the main thread, so no code runs in signal-handler context.
//!
//! [`SignalEvents::block_and_open`] must run before any other thread is spawned: threads
//! inherit the mask, and a signal that is unblocked anywhere would be delivered there with
//! its default action (terminate) instead of reaching the signalfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// What a signal asks of the relay (C tor's meanings, see docs/operating.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelaySignal {
    /// SIGTERM: exit cleanly now.
    Terminate,
    /// SIGINT: stop accepting now, exit cleanly after `ShutdownWaitLength` (a second SIGINT:
    /// now).
    Interrupt,
    /// SIGHUP: reload the configuration, reopen log files.
    Reload,
    /// SIGUSR1: log a short status summary (C tor dumps statistics).
    DumpStats,
    /// SIGUSR2: C tor switches to debug logging; Fors logs that it does not.
    Debug,
    /// [`heartbeat_signal`], raised by the ControlPort's `SIGNAL HEARTBEAT`: log a heartbeat
    /// now (C tor has no Unix signal for it).
    Heartbeat,
}

/// The real-time signal the ControlPort raises for `SIGNAL HEARTBEAT`.
pub fn heartbeat_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// The signalfd the main thread waits on.
pub struct SignalEvents {
    fd: OwnedFd,
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write to the set we pass, which lives on this stack
    // frame; a zeroed sigset_t is a valid starting value for sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigaddset(&mut set, heartbeat_signal());
        set
    }
}

impl SignalEvents {
    /// Blocks the relay's signals in the calling thread (and so in every thread it spawns
    /// later) and opens a signalfd for them.
    pub fn block_and_open() -> io::Result<SignalEvents> {
        let set = handled_set();
        // SAFETY: `set` is a valid, initialised signal set; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new descriptor; `set` is valid for the duration of the call.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(SignalEvents {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Waits up to `timeout` for one signal.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<RelaySignal>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd on the stack, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`, which is exactly that large.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if n as usize != size {
            return Ok(None);
        }
        Ok(match info.ssi_signo as i32 {
            libc::SIGTERM => Some(RelaySignal::Terminate),
            libc::SIGINT => Some(RelaySignal::Interrupt),
            libc::SIGHUP => Some(RelaySignal::Reload),
            libc::SIGUSR1 => Some(RelaySignal::DumpStats),
            libc::SIGUSR2 => Some(RelaySignal::Debug),
            n if n == heartbeat_signal() => Some(RelaySignal::Heartbeat),
            _ => None,
        })
    }
}
