//! Start-up steps that turn configuration into running parameters: the exit policy, the
//! ORPort to listen on, the open-files limit, the `User` switch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{AddressConfig, Config, ExitRelay as ConfigExitRelay, Location, PortNumber};
use crate::exit::policy::{
    parse_policy_item, ExitPolicy, ExitPolicyBuilder, ExitRelay, PolicyParseError,
};

/// A configuration problem found while setting up (after the torrc itself parsed).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{location}: bad ExitPolicy item {item:?}: {error}")]
    ExitPolicy {
        location: Location,
        item: String,
        error: PolicyParseError,
    },
    #[error("{0}")]
    User(String),
    /// C tor would fail the same way: without the list the policy cannot reject them.
    #[error("ExitPolicyRejectLocalInterfaces: cannot list the network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error("{location}: cannot listen on DirPort {addr}: {source}")]
    DirPort {
        location: Location,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Our exit policy from the torrc, as C tor builds it, plus warnings (with locations) for
/// items C would skip.
pub fn build_exit_policy(config: &Config) -> Result<(ExitPolicy, Vec<String>), SetupError> {
    let mut warnings = Vec::new();
    let mut rules = Vec::with_capacity(config.exit_policy.len());
    for (item, location) in &config.exit_policy {
        match parse_policy_item(item) {
            Ok(r) => rules.push(r),
            Err(e) if !e.is_fatal() => warnings.push(format!("{location}: {e}")),
            Err(error) => {
                return Err(SetupError::ExitPolicy {
                    location: location.clone(),
                    item: item.clone(),
                    error,
                })
            }
        }
    }
    let builder = ExitPolicyBuilder {
        exit_relay: match config.exit_relay {
            ConfigExitRelay::Auto => ExitRelay::Auto,
            ConfigExitRelay::No => ExitRelay::Disabled,
            ConfigExitRelay::Yes => ExitRelay::Enabled,
        },
        exit_policy: (!config.exit_policy.is_empty()).then_some(rules),
        reject_private: config.exit_policy_reject_private,
        reject_local_interfaces: config.exit_policy_reject_local_interfaces,
        reduced_exit_policy: config.reduced_exit_policy,
        ipv6_exit: config.ipv6_exit,
        bridge_relay: false,
        // What the descriptor publishes: `Address`, else an advertised ORPort's address
        // (C rejects the router's own published addresses).
        published_addresses: advertised_addrs(config),
        outbound_bind_addresses: config
            .outbound_bind_addresses
            .iter()
            .chain(&config.outbound_bind_addresses_or)
            .chain(&config.outbound_bind_addresses_exit)
            .copied()
            .collect(),
        // Every configured listener's address (C `get_configured_ports`).
        port_addresses: config
            .or_ports
            .iter()
            .filter_map(|p| p.address)
            .chain(config.control_ports.iter().filter_map(|p| p.address))
            .chain(config.metrics_ports.iter().filter_map(|p| p.address))
            .collect(),
        interface_addresses: if config.exit_policy_reject_local_interfaces {
            match public_interface_addresses() {
                Ok(a) => a,
                Err(e) => return Err(SetupError::Interfaces(e)),
            }
        } else {
            Vec::new()
        },
    };
    Ok((builder.build(), warnings))
}

/// The public addresses of this machine's interfaces, as C tor's
/// `get_interface_address6_list(.., include_internal = 0)` gives them to
/// `ExitPolicyRejectLocalInterfaces`: internal ones (loopback, private, link-local) are
/// left to `ExitPolicyRejectPrivate`.
pub fn public_interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !crate::exit::policy::is_internal(*ip))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses the shards listen on: every ORPort that is not `NoListen`, in torrc order.
/// A port without an address listens on 0.0.0.0 (`[::]` with `IPv6Only`); `auto` picks a
/// free port.
pub fn or_listen_addrs(config: &Config) -> Vec<(SocketAddr, Location)> {
    config
        .or_ports
        .iter()
        .filter(|p| !p.no_listen)
        .map(|p| {
            // A bare port listens on IPv4 (or on IPv6 with `IPv6Only`).
            let any = if p.ipv6_only {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let ip = p.address.unwrap_or(any);
            let port = match p.port {
                PortNumber::Auto => 0,
                PortNumber::Fixed(n) => n.get(),
            };
            (SocketAddr::new(ip, port), p.location.clone())
        })
        .collect()
}

/// The addresses we publish (and advertise in NETINFO): `Address` lines that are IP
/// addresses, else the ORPorts' specific addresses.
pub fn advertised_addrs(config: &Config) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = config
        .addresses
        .iter()
        .filter_map(|a| match a {
            AddressConfig::Ip(ip) => Some(*ip),
            AddressConfig::Hostname(_) => None,
        })
        .collect();
    for p in config.or_ports.iter().filter(|p| !p.no_advertise) {
        if let Some(ip) = p.address.filter(|ip| !ip.is_unspecified()) {
            if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                out.push(ip);
            }
        }
    }
    out
}

/// Whether we may open channels over IPv6 for an extend (C `router_can_extend_over_ipv6` =
/// `routerconf_has_ipv6_orport`): we have an advertised IPv6 ORPort, `[::]` included (a
/// bare port is IPv6 only with `IPv6Only` here, see `or_listen_addrs`). Without one, C
/// uses only an extend's IPv4 address and refuses an IPv6-only extend.
pub fn can_extend_over_ipv6(config: &Config) -> bool {
    config.or_ports.iter().any(|p| {
        !p.no_advertise
            && match p.address {
                Some(ip) => ip.is_ipv6(),
                None => p.ipv6_only,
            }
    })
}

/// Address of a `MetricsPort`: C's default address is 127.0.0.1.
pub fn metrics_listen_addr(p: &crate::config::ListenPort) -> SocketAddr {
    let ip = p.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = match p.port {
        PortNumber::Auto => 0,
        PortNumber::Fixed(n) => n.get(),
    };
    SocketAddr::new(ip, port)
}

/// Raises the soft open-files limit to the hard limit (as C tor's
/// `set_max_file_descriptors` does) and returns the resulting limits (checked by
/// `relay::fdlimit`).
pub fn raise_fd_limit() -> Option<super::fdlimit::FdLimit> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (mut soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        soft = hard;
    }
    Some(super::fdlimit::FdLimit { soft, hard })
}

/// Sets the process's dumpable flag: `DisableDebuggerAttachment 1` clears it, as C tor on
/// Linux, so other processes of the same user cannot attach with ptrace or read our memory
/// (the keys), and no core dump is left. A uid switch resets it to `fs.suid_dumpable`.
pub fn set_dumpable(dumpable: bool) -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(dumpable)?;
    Ok(())
}

/// The user named by `User`, from the system's user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up with getpwnam_r(3) (so NSS sources count, not only /etc/passwd).
pub fn lookup_user(name: &str) -> Result<UserIds, SetupError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(UserIds {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        // An error of the user database counts as not found, as C tor's lookup does.
        Ok(None) | Err(_) => Err(SetupError::User(format!("User {name}: no such user"))),
    }
}

/// Whom to switch to after binding (C tor's `User`), or `None` when there is nothing to do:
/// no `User`, or we already run as that user (C tor refuses that case; Fors accepts it, so a
/// torrc with `User` works under systemd's `User=` too). Started as someone else than root,
/// Fors cannot switch and refuses to start. As in C tor the DataDirectory must belong to the
/// user; a missing one is created for it (mode 0700).
pub fn plan_user_switch(config: &Config) -> Result<Option<UserIds>, SetupError> {
    let Some(want) = &config.user else {
        return Ok(None);
    };
    let ids = lookup_user(want)?;
    let euid = nix::unistd::geteuid().as_raw();
    if euid == ids.uid {
        return Ok(None);
    }
    if euid != 0 {
        return Err(SetupError::User(format!(
            "User {want}: switching to another user needs root, and Fors runs as uid {euid}; \
             start it as root or as {want} (systemd: User={want})"
        )));
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = &config.data_directory;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .and_then(|()| std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid)))
                .map_err(|e| {
                    SetupError::User(format!(
                        "User {want}: cannot create DataDirectory {} for it: {e}",
                        dir.display()
                    ))
                })?;
            std::fs::metadata(dir)
                .map_err(|e| SetupError::User(format!("DataDirectory {}: {e}", dir.display())))?
        }
        Err(e) => {
            return Err(SetupError::User(format!(
                "DataDirectory {}: {e}",
                dir.display()
            )))
        }
    };
    if meta.uid() != ids.uid {
        return Err(SetupError::User(format!(
            "User {want}: DataDirectory {} belongs to uid {}, not to {want} (uid {}); \
             chown it to {want}",
            dir.display(),
            meta.uid(),
            ids.uid
        )));
    }
    Ok(Some(ids))
}

/// While alive, the effective uid and gid are the `User`'s (real and saved stay root), so
/// files made during start-up (PidFile, keys, cookie) belong to the user who will run the
/// relay; dropping it returns to root for binding.
pub struct ActingAs(());

/// Takes the user's effective ids until the guard drops (only between binds, as root).
pub fn act_as(ids: &UserIds) -> Result<ActingAs, SetupError> {
    use nix::unistd::{setegid, seteuid, Gid, Uid};
    // gid first: once the euid is not 0 we may no longer change it. glibc applies both to
    // every thread.
    let taken = setegid(Gid::from_raw(ids.gid)).and_then(|()| seteuid(Uid::from_raw(ids.uid)));
    if let Err(e) = taken {
        // Back to root's group if only the gid changed.
        let _ = setegid(Gid::from_raw(0));
        return Err(SetupError::User(format!(
            "User {}: cannot take its effective ids: {}",
            ids.name,
            std::io::Error::from(e)
        )));
    }
    Ok(ActingAs(()))
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        use nix::unistd::{setegid, seteuid, Gid, Uid};
        // The saved uid is still 0, so this cannot fail; if it did, the binds that follow
        // fail with a clear error. euid before egid (changing the gid needs root).
        let _ = seteuid(Uid::from_raw(0));
        let _ = setegid(Gid::from_raw(0));
    }
}

/// C tor's `switch_id` (lib/process/setuid.c): supplementary groups set to the user's
/// primary group only, then gid, then uid (real, effective and saved), then a check that
/// root cannot be taken back. Called once every listener is bound and every io_uring ring is
/// open: both may need root (ports under 1024, locked-memory limits), and the kernel checks
/// neither again. There is no SQPOLL thread, which would keep the creator's credentials; the
/// shards' later submissions carry the new ones.
pub fn switch_user(ids: &UserIds) -> Result<(), SetupError> {
    use nix::unistd::{
        getegid, geteuid, getgid, getuid, seteuid, setgid, setgroups, setuid, Gid, Uid,
    };
    let fail = |what: &str, e: nix::Error| {
        SetupError::User(format!(
            "User {}: {what}: {}",
            ids.name,
            std::io::Error::from(e)
        ))
    };
    let (uid, gid) = (Uid::from_raw(ids.uid), Gid::from_raw(ids.gid));
    // nix calls glibc's functions, which apply each change to every thread of the process
    // (not the raw syscalls, which would change only this thread's credentials).
    setgroups(&[gid]).map_err(|e| fail("setgroups", e))?;
    setgid(gid).map_err(|e| fail("setgid", e))?;
    // As root this sets the real, effective and saved uid.
    setuid(uid).map_err(|e| fail("setuid", e))?;
    if ids.uid != 0 {
        // Both must fail now.
        let regained = setuid(Uid::from_raw(0)).is_ok() || seteuid(Uid::from_raw(0)).is_ok();
        if regained {
            return Err(SetupError::User(format!(
                "User {}: root could be taken back after switching; refusing to run",
                ids.name
            )));
        }
    }
    let now = (
        getuid().as_raw(),
        geteuid().as_raw(),
        getgid().as_raw(),
        getegid().as_raw(),
    );
    if now != (ids.uid, ids.uid, ids.gid, ids.gid) {
        return Err(SetupError::User(format!(
            "User {}: ids after switching are {now:?}, not uid {} gid {}",
            ids.name, ids.uid, ids.gid
        )));
    }
    Ok(())
}

/// Address a `DirPort` listens on: C tor's default address is 0.0.0.0.
pub fn dir_listen_addr(p: &crate::config::ListenPort) -> SocketAddr {
    let ip = p.address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port = match p.port {
        PortNumber::Auto => 0,
        PortNumber::Fixed(n) => n.get(),
    };
    SocketAddr::new(ip, port)
}

/// Binds the `DirPort` listeners (those without `NoListen`) and, with `DirCache 1`, the
/// internal listener for BEGIN_DIR, and starts the directory server on them, serving
/// `store`. `None` when there is nothing to serve.
pub fn start_dir_server(
    config: &Config,
    store: crate::dircache::SharedStore,
) -> Result<Option<crate::relay::dirserver::DirServer>, SetupError> {
    let mut listeners = Vec::new();
    for p in config
        .dir_ports
        .iter()
        .filter(|p| !p.flags.iter().any(|f| f.eq_ignore_ascii_case("NoListen")))
    {
        let addr = dir_listen_addr(p);
        let l = std::net::TcpListener::bind(addr).map_err(|source| SetupError::DirPort {
            location: p.location.clone(),
            addr,
            source,
        })?;
        listeners.push(l);
    }
    // BEGIN_DIR streams reach the server through a loopback listener of its own, as an
    // exit stream reaches a server (docs/architecture.md "Directory cache: serving").
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let io_error = |source| SetupError::DirPort {
        location: Location::new("DirCache", 0),
        addr: loopback,
        source,
    };
    let internal = if config.dir_cache {
        Some(std::net::TcpListener::bind(loopback).map_err(io_error)?)
    } else {
        None
    };
    if listeners.is_empty() && internal.is_none() {
        return Ok(None);
    }
    let inputs = crate::relay::dirserver::DirServerInputs {
        front_page: config
            .dir_port_front_page
            .as_ref()
            .map(|f| f.contents.clone()),
        ..Default::default()
    };
    let server = crate::relay::dirserver::DirServer::start(listeners, internal, store, inputs)
        .map_err(io_error)?;
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, MemFs};

    fn cfg(extra: &str) -> Config {
        parse_str(
            &MemFs::default(),
            "torrc",
            &format!("ORPort 9001\nDataDirectory /tmp/x\nPublishServerDescriptor 0\n{extra}"),
        )
        .unwrap()
        .0
    }

    #[test]
    fn extends_over_ipv6_only_with_an_advertised_ipv6_orport() {
        assert!(!can_extend_over_ipv6(&cfg("")));
        assert!(can_extend_over_ipv6(&cfg("ORPort [::1]:9002\n")));
        assert!(can_extend_over_ipv6(&cfg("ORPort [::]:9002\n")));
        assert!(can_extend_over_ipv6(&cfg("ORPort 9002 IPv6Only\n")));
        assert!(!can_extend_over_ipv6(&cfg(
            "ORPort [::1]:9002 NoAdvertise\n"
        )));
        assert!(!can_extend_over_ipv6(&cfg("ORPort 127.0.0.1:9002\n")));
    }

    #[test]
    fn default_is_not_an_exit() {
        let (p, w) = build_exit_policy(&cfg("")).unwrap();
        assert!(p.is_reject_star());
        assert!(w.is_empty());
    }

    #[test]
    fn configured_policy_and_errors_with_lines() {
        let (p, _) = build_exit_policy(&cfg("ExitPolicy accept *:80,reject *:*\n")).unwrap();
        assert!(p.permits_exit_to("93.184.216.34".parse().unwrap(), 80));
        assert!(!p.permits_exit_to("93.184.216.34".parse().unwrap(), 81));
        // Private addresses are rejected by default.
        assert!(!p.permits_exit_to("10.0.0.1".parse().unwrap(), 80));
        let e = build_exit_policy(&cfg("ExitPolicy accept *:80\nExitPolicy acept *:443\n"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("torrc:5: bad ExitPolicy item"),
            "{e}"
        );
        let (_, w) = build_exit_policy(&cfg("ExitPolicy accept6 1.2.3.4:80\n")).unwrap();
        assert!(w[0].starts_with("torrc:4: "), "{w:?}");
    }

    #[test]
    fn interface_addresses_are_public_only() {
        // Whatever this machine has, loopback and private addresses are never listed (they
        // are ExitPolicyRejectPrivate's), and listing works.
        let a = public_interface_addresses().unwrap();
        assert!(
            a.iter().all(|ip| !crate::exit::policy::is_internal(*ip)),
            "{a:?}"
        );
        let c = cfg("ExitPolicy accept *:80\nExitPolicyRejectLocalInterfaces 1\n");
        let (p, w) = build_exit_policy(&c).unwrap();
        assert!(w.is_empty(), "{w:?}");
        for ip in a.iter().filter(|ip| ip.is_ipv4()) {
            assert!(!p.permits_exit_to(*ip, 80), "{ip} not rejected");
        }
    }

    #[test]
    fn own_published_and_listener_addresses_are_rejected() {
        // No Address line: the advertised ORPort's address is what is published, and C
        // rejects it under ExitPolicyRejectPrivate.
        let c = cfg("ORPort 198.51.100.3:9002\nExitPolicy accept *:80\n");
        let (p, _) = build_exit_policy(&c).unwrap();
        assert!(!p.permits_exit_to("198.51.100.3".parse().unwrap(), 80));
        assert!(p.permits_exit_to("198.51.100.4".parse().unwrap(), 80));
    }

    #[test]
    fn listen_addresses() {
        let c = cfg("ORPort [::1]:9002\nORPort 9003 IPv6Only\nORPort 127.0.0.1:9004 NoListen\n");
        let a: Vec<SocketAddr> = or_listen_addrs(&c).into_iter().map(|(a, _)| a).collect();
        assert_eq!(
            a,
            ["0.0.0.0:9001", "[::1]:9002", "[::]:9003"].map(|s| s.parse::<SocketAddr>().unwrap())
        );
        let c = parse_str(
            &MemFs::default(),
            "torrc",
            "ORPort 127.0.0.1:auto\nDataDirectory /tmp/x\nPublishServerDescriptor 0\n",
        )
        .unwrap()
        .0;
        assert_eq!(or_listen_addrs(&c)[0].0, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn user_must_exist_and_none_means_no_switch() {
        let e = plan_user_switch(&cfg("User nobody-such-user-xyz\n")).unwrap_err();
        assert!(e.to_string().contains("no such user"), "{e}");
        assert_eq!(plan_user_switch(&cfg("")).unwrap(), None);
        // Already running as the named user: nothing to switch.
        let me = nix::unistd::geteuid().as_raw();
        if let Some(name) = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == me.to_string()).then(|| f[0].to_string())
            })
        {
            let c = cfg(&format!("User {name}\n"));
            assert_eq!(plan_user_switch(&c).unwrap(), None);
            assert_eq!(lookup_user(&name).unwrap().uid, me);
        }
    }
}
