//! Signals as events: SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 are blocked in every thread
//! and read from a `signalfd` by the main thread, so no code runs in signal-handler context.
//!
//! [`SignalEvents::block_and_open`] must run before any other thread is spawned: threads
//! inherit the mask, and a signal that is unblocked anywhere would be delivered there with
//! its default action (terminate) instead of reaching the signalfd.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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
    /// [`request_heartbeat`], from the ControlPort's `SIGNAL HEARTBEAT`: log a heartbeat now
    /// (C tor has no Unix signal for it).
    Heartbeat,
}

/// The signalfd the main thread waits on, and the socket that [`request_heartbeat`] writes
/// to.
pub struct SignalEvents {
    fd: SignalFd,
    heartbeat: UnixDatagram,
}

/// Where [`request_heartbeat`] sends: the writing end of the newest [`SignalEvents`]'
/// socket pair. Used only by the ControlPort thread, far off the per-cell path.
static HEARTBEAT_SENDER: Mutex<Option<UnixDatagram>> = Mutex::new(None);

/// Asks the main thread to log a heartbeat now (the ControlPort's `SIGNAL HEARTBEAT`; C tor
/// has no Unix signal for it, so it is one datagram to the main thread, not a signal).
pub fn request_heartbeat() -> io::Result<()> {
    let sender = HEARTBEAT_SENDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match sender.as_ref() {
        Some(s) => s.send(&[1]).map(drop),
        None => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "no main thread waits for signals",
        )),
    }
}

fn handled_set() -> SigSet {
    [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ]
    .into_iter()
    .collect()
}

impl SignalEvents {
    /// Blocks the relay's signals in the calling thread (and so in every thread it spawns
    /// later) and opens a signalfd for them.
    pub fn block_and_open() -> io::Result<SignalEvents> {
        let set = handled_set();
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        let (sender, heartbeat) = UnixDatagram::pair()?;
        heartbeat.set_nonblocking(true)?;
        // A full queue (a flood of SIGNAL HEARTBEAT) refuses the extra requests instead of
        // blocking the ControlPort thread.
        sender.set_nonblocking(true)?;
        *HEARTBEAT_SENDER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sender);
        Ok(SignalEvents { fd, heartbeat })
    }

    /// Waits up to `timeout` for one signal.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<RelaySignal>> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.heartbeat.as_fd(), PollFlags::POLLIN),
        ];
        let ready = match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if ready == 0 {
            return Ok(None);
        }
        let readable = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        if readable(&fds[0]) {
            if let Some(info) = self.fd.read_signal()? {
                return Ok(Self::meaning(info.ssi_signo));
            }
        }
        if readable(&fds[1]) {
            let mut byte = [0u8; 1];
            return match self.heartbeat.recv(&mut byte) {
                Ok(_) => Ok(Some(RelaySignal::Heartbeat)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            };
        }
        Ok(None)
    }

    fn meaning(signo: u32) -> Option<RelaySignal> {
        let signal = Signal::try_from(i32::try_from(signo).ok()?).ok()?;
        match signal {
            Signal::SIGTERM => Some(RelaySignal::Terminate),
            Signal::SIGINT => Some(RelaySignal::Interrupt),
            Signal::SIGHUP => Some(RelaySignal::Reload),
            Signal::SIGUSR1 => Some(RelaySignal::DumpStats),
            Signal::SIGUSR2 => Some(RelaySignal::Debug),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test harness runs tests on threads of one process, so a signal sent to the process
    // could land on another thread with its default action (terminate). raise(3) sends to
    // this thread alone, which blocked it; its signalfd reads what is pending for it.
    #[test]
    fn signals_and_heartbeat_requests_become_events() {
        let events = SignalEvents::block_and_open().unwrap();
        assert_eq!(events.wait(Duration::ZERO).unwrap(), None);
        for (signal, meaning) in [
            (Signal::SIGHUP, RelaySignal::Reload),
            (Signal::SIGUSR1, RelaySignal::DumpStats),
            (Signal::SIGUSR2, RelaySignal::Debug),
            (Signal::SIGINT, RelaySignal::Interrupt),
            (Signal::SIGTERM, RelaySignal::Terminate),
        ] {
            nix::sys::signal::raise(signal).unwrap();
            assert_eq!(
                events.wait(Duration::from_secs(5)).unwrap(),
                Some(meaning),
                "{signal}"
            );
            assert_eq!(events.wait(Duration::ZERO).unwrap(), None);
        }
        // Two requests, two heartbeats: none is lost or merged.
        request_heartbeat().unwrap();
        request_heartbeat().unwrap();
        for _ in 0..2 {
            assert_eq!(
                events.wait(Duration::from_secs(5)).unwrap(),
                Some(RelaySignal::Heartbeat)
            );
        }
        assert_eq!(events.wait(Duration::from_millis(10)).unwrap(), None);
    }
}
