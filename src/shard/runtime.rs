//! Starting and stopping the shards: listeners, the cross-shard queue mesh, wake-up
//! eventfds, thread pinning.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::RuntimeConfig;
use super::conn::ShardId;
use super::error::ShardError;
use super::event_loop::{Shard, ShardParts, ShardReport};
use super::handler::ConnHandler;
use super::probe::{probe_kernel, KernelFeatures};
use super::ratelimit::SharedBudget;
use super::spsc::{self, Consumer, Producer};

type ShardResult<H> = Result<ShardReport<H>, ShardError>;

/// Running shards. Dropping it stops them too (discarding their reports).
pub struct Runtime<H: ConnHandler> {
    threads: Vec<JoinHandle<ShardResult<H>>>,
    stop: Arc<AtomicBool>,
    wake_fds: Arc<Vec<OwnedFd>>,
    local_addr: Option<SocketAddr>,
    /// Every listening address, `local_addr` first.
    local_addrs: Vec<SocketAddr>,
    features: KernelFeatures,
    /// Duplicates of the shards' listening sockets, for [`Runtime::close_listeners`].
    listen_dups: Vec<Socket>,
}

/// One SO_REUSEPORT listener: the kernel spreads incoming connections over the shards'
/// sockets by 4-tuple hash, so no shard hands connections to another.
fn listener(addr: SocketAddr, backlog: i32) -> Result<Socket, ShardError> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(|e| ShardError::socket("create listener", e))?;
    s.set_reuse_address(true)
        .map_err(|e| ShardError::socket("SO_REUSEADDR", e))?;
    s.set_reuse_port(true)
        .map_err(|e| ShardError::socket("SO_REUSEPORT", e))?;
    // Accepted sockets (inbound channels) inherit TCP_NODELAY. Without it Nagle holds the
    // tail of every burst until the peer's (delayed) ACK: a congestion-controlled exit
    // sends window-sized bursts, so its RTT samples gained ~40 ms and Vegas kept cwnd
    // small (measured on the loopback testnet: 50 MB downloads at 2-3 MB/s instead of
    // 10-11 MB/s).
    s.set_tcp_nodelay(true)
        .map_err(|e| ShardError::socket("TCP_NODELAY", e))?;
    // An IPv6 ORPort listens on IPv6 only, so `[::]:443` and `0.0.0.0:443` both bind, as C
    // tor's listeners do.
    if addr.is_ipv6() {
        s.set_only_v6(true)
            .map_err(|e| ShardError::socket("IPV6_V6ONLY", e))?;
    }
    s.bind(&SockAddr::from(addr))
        .map_err(|e| ShardError::socket("bind", e))?;
    s.listen(backlog)
        .map_err(|e| ShardError::socket("listen", e))?;
    Ok(s)
}

fn eventfd() -> Result<OwnedFd, ShardError> {
    // SAFETY: plain syscall with constant flags; no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(ShardError::socket(
            "eventfd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a fresh descriptor we own exclusively.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn wake(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live stack buffer to an eventfd we own; a failure (counter
    // saturated) still leaves the eventfd readable, which is all a wake-up needs.
    let _ = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

impl<H: ConnHandler + Send + 'static> Runtime<H> {
    /// Probes the kernel, binds the listeners, builds the queue mesh and starts one pinned
    /// thread per shard; returns once every shard has its ring running (or the first error).
    pub fn start<F>(cfg: RuntimeConfig, make_handler: F) -> Result<Runtime<H>, ShardError>
    where
        F: Fn(ShardId) -> H + Send + Sync + 'static,
    {
        Self::start_limited(cfg, None, make_handler)
    }

    /// [`Runtime::start`] with every shard's traffic charged to `bandwidth` (connections
    /// of class `BwClass::Exempt` excepted): receives pause and sends wait while its
    /// buckets are empty.
    pub fn start_limited<F>(
        cfg: RuntimeConfig,
        bandwidth: Option<Arc<SharedBudget>>,
        make_handler: F,
    ) -> Result<Runtime<H>, ShardError>
    where
        F: Fn(ShardId) -> H + Send + Sync + 'static,
    {
        cfg.validate()?;
        let features = probe_kernel()?;
        let n = cfg.shard_count;

        // Per shard, one socket for each listening address (the shard arms an accept on each).
        let mut listeners: Vec<Vec<Socket>> = (0..n).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for addr in cfg.listen.iter().chain(&cfg.listen_also) {
            // The first bind resolves port 0; the other shards join that port.
            let first = listener(*addr, cfg.shard.listen_backlog)?;
            let bound = first
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| {
                    ShardError::socket("local_addr", std::io::Error::other("not inet"))
                })?;
            local_addrs.push(bound);
            listeners[0].push(first);
            for shard in listeners.iter_mut().skip(1) {
                shard.push(listener(bound, cfg.shard.listen_backlog)?);
            }
        }
        let local_addr = local_addrs.first().copied();

        let listen_dups = listeners
            .iter()
            .flatten()
            .map(Socket::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ShardError::socket("dup listener", e))?;
        let wake_fds = Arc::new((0..n).map(|_| eventfd()).collect::<Result<Vec<_>, _>>()?);

        // Mesh: one SPSC queue per ordered pair of distinct shards.
        let mut producers: Vec<Vec<Option<Producer<H::Msg>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut consumers: Vec<Vec<Option<Consumer<H::Msg>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for (from, prods) in producers.iter_mut().enumerate() {
            for (to, slot) in prods.iter_mut().enumerate() {
                if from != to {
                    let (p, c) = spsc::channel(cfg.shard.cross_queue_capacity as usize);
                    *slot = Some(p);
                    consumers[to][from] = Some(c);
                }
            }
        }

        let cores = if !cfg.pin_threads {
            vec![None; n]
        } else if !cfg.cores.is_empty() {
            cfg.cores.iter().map(|&c| Some(c)).collect()
        } else {
            let ids = core_affinity::get_core_ids().unwrap_or_default();
            (0..n)
                .map(|i| (!ids.is_empty()).then(|| ids[i % ids.len()].id))
                .collect()
        };

        let stop = Arc::new(AtomicBool::new(false));
        let make_handler = Arc::new(make_handler);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), ShardError>)>();
        let mut threads = Vec::with_capacity(n);
        let mut spawn_err = None;
        for (i, ((l, p), c)) in listeners
            .into_iter()
            .zip(producers)
            .zip(consumers)
            .enumerate()
        {
            let parts = ShardParts {
                id: ShardId(i),
                shard_count: n,
                cfg: cfg.shard.clone(),
                features,
                listener: l,
                producers: p,
                consumers: c,
                wake_fds: wake_fds.clone(),
                stop: stop.clone(),
                bandwidth: bandwidth.clone(),
            };
            let core = cores[i];
            let make = make_handler.clone();
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fors-shard-{i}"))
                .spawn(move || -> ShardResult<H> {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            let _ = ready.send((i, Err(ShardError::Pin { shard: i, core })));
                            return Err(ShardError::Thread {
                                shard: i,
                                what: "start-up failed",
                            });
                        }
                    }
                    let shard = match Shard::new(parts, make(ShardId(i))) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready.send((i, Err(e)));
                            return Err(ShardError::Thread {
                                shard: i,
                                what: "start-up failed",
                            });
                        }
                    };
                    let _ = ready.send((i, Ok(())));
                    drop(ready);
                    shard.run()
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => {
                    spawn_err = Some(ShardError::Thread {
                        shard: i,
                        what: "spawn failed",
                    });
                    break;
                }
            }
        }
        drop(ready_tx);
        let mut first_err = spawn_err;
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(ShardError::Thread {
                        shard: 0,
                        what: "died during start-up",
                    });
                    break;
                }
            }
        }
        let rt = Runtime {
            threads,
            stop,
            wake_fds,
            local_addr,
            local_addrs,
            features,
            listen_dups,
        };
        match first_err {
            None => Ok(rt),
            Some(e) => {
                drop(rt);
                Err(e)
            }
        }
    }

    /// The listening address (with the real port if 0 was configured).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Every listening address (`listen`, then `listen_also`), with real ports.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The first shard whose thread has ended (panicked, failed, or returned) although
    /// nobody called [`Runtime::stop`]: the relay must not serve on without it.
    pub fn exited_shard(&self) -> Option<usize> {
        self.threads.iter().position(|t| t.is_finished())
    }

    /// Stops accepting at once: shutting a listening socket down puts it in the CLOSE state,
    /// so new connections are refused from now on and each shard's pending accept ends with
    /// EINVAL (the shard then drops its listener). Established connections are served until
    /// [`Runtime::stop`] (C tor's SIGINT on a relay closes its listeners the same way).
    pub fn close_listeners(&self) -> std::io::Result<()> {
        for l in &self.listen_dups {
            l.shutdown(std::net::Shutdown::Read)?;
        }
        Ok(())
    }

    /// What the kernel probe found.
    pub fn kernel_features(&self) -> KernelFeatures {
        self.features
    }

    /// Sets the stop flag, wakes every shard, joins them and returns their final state.
    pub fn stop(mut self) -> Result<Vec<ShardReport<H>>, ShardError> {
        self.signal_stop();
        let mut reports = Vec::with_capacity(self.threads.len());
        let mut first_err = None;
        for (i, t) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            match t.join() {
                Ok(Ok(r)) => reports.push(r),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(ShardError::Thread {
                        shard: i,
                        what: "panicked",
                    });
                }
            }
        }
        match first_err {
            None => Ok(reports),
            Some(e) => Err(e),
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        for fd in self.wake_fds.iter() {
            wake(fd);
        }
    }
}

impl<H: ConnHandler> Drop for Runtime<H> {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::Release);
        for fd in self.wake_fds.iter() {
            wake(fd);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
