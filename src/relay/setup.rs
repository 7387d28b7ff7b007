//! Start-up steps that turn configuration into running parameters: the exit policy, the
//! ORPort to listen on, the open-files limit, the `User` check.

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
    let ip = |a: &AddressConfig| match a {
        AddressConfig::Ip(ip) => Some(*ip),
        AddressConfig::Hostname(_) => None,
    };
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
        published_addresses: config.addresses.iter().filter_map(ip).collect(),
        outbound_bind_addresses: config
            .outbound_bind_addresses
            .iter()
            .chain(&config.outbound_bind_addresses_or)
            .chain(&config.outbound_bind_addresses_exit)
            .copied()
            .collect(),
        port_addresses: config.or_ports.iter().filter_map(|p| p.address).collect(),
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

/// The address the shards listen on: the first ORPort that is not `NoListen`. A port
/// without an address listens on 0.0.0.0; `auto` picks a free port. Further listening
/// ORPorts are returned separately (the runtime has one listener; see the caller's warning).
pub fn or_listen_addrs(config: &Config) -> Vec<(SocketAddr, Location)> {
    config
        .or_ports
        .iter()
        .filter(|p| !p.no_listen)
        .map(|p| {
            let ip = p.address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
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
/// `set_max_file_descriptors` does) and returns the resulting soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct on our stack.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur)
    }
}

/// `DisableDebuggerAttachment 1`, as C tor on Linux: `PR_SET_DUMPABLE` 0 stops other
/// processes of the same user from attaching with ptrace or reading our memory (the keys),
/// and stops core dumps.
pub fn disable_debugger_attachment() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers and only changes this process's
    // dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Fors does not switch users (run it as the right user, e.g. systemd `User=`). A `User`
/// option naming someone else is refused rather than silently running with more privilege
/// than the operator asked for.
pub fn check_user(config: &Config) -> Result<(), SetupError> {
    let Some(want) = &config.user else {
        return Ok(());
    };
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| SetupError::User(format!("User {want}: cannot find our own uid: {e}")))?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let (name, _, id) = (f.next()?, f.next()?, f.next()?);
        (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
    });
    match name {
        Some(n) if &n == want => Ok(()),
        other => Err(SetupError::User(format!(
            "User {want}: Fors does not switch users, and it runs as {} (uid {uid}); start it as \
             {want} (systemd: User={want}) or remove the User line",
            other.as_deref().unwrap_or("an unnamed user")
        ))),
    }
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
    fn listen_addresses() {
        let c = cfg("ORPort [::1]:9002 NoListen\n");
        let a = or_listen_addrs(&c);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, "0.0.0.0:9001".parse().unwrap());
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
    fn user_must_be_us() {
        let c = cfg("User nobody-such-user-xyz\n");
        let e = check_user(&c).unwrap_err();
        assert!(e.to_string().contains("does not switch users"), "{e}");
        check_user(&cfg("")).unwrap();
    }
}
