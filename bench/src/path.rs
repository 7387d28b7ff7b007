//! Where the path comes from: `--hop` arguments or a `scripts/testnet.py` `network.json`, and
//! each relay's ntor onion key, fetched from a directory authority's DirPort
//! (dir-spec §"Downloading server descriptors": `/tor/server/fp/<HEX>`).

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::Duration;

use fors::crypto::ids::{Ed25519Identity, RsaIdentity};
use serde::Deserialize;

use crate::cli::{check_reach, parse_curve25519, parse_ed25519, require_loopback, HopArg, Reach};

/// Largest descriptor response read.
const MAX_DESC_LEN: usize = 256 * 1024;
const DIR_TIMEOUT: Duration = Duration::from_secs(10);

/// A relay of the path, with everything the handshakes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub nick: String,
    pub addr: SocketAddrV4,
    pub rsa: RsaIdentity,
    pub ed: Option<Ed25519Identity>,
    pub ntor_key: Option<[u8; 32]>,
    /// Whether its descriptor advertises CGO ([`advertises_cgo`]); `None` when no
    /// descriptor was read (a `--hop` given with its keys).
    pub supports_cgo: Option<bool>,
}

/// What went wrong while working out the path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("reading {file}: {err}")]
    Read { file: String, err: std::io::Error },
    #[error("network.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("network.json: {0}")]
    Invalid(String),
    #[error("no relay named {0:?} in network.json")]
    UnknownNick(String),
    #[error("network.json has no {0} relay for an automatic path")]
    NoRole(&'static str),
    #[error("{0}")]
    Cli(#[from] crate::cli::CliError),
    #[error("fetching the descriptor of {rsa} from {dir}: {why}")]
    Fetch {
        rsa: String,
        dir: SocketAddrV4,
        why: String,
    },
    #[error("no ntor key for {0}: give ntor=... in --hop or --dir-server")]
    NoNtorKey(String),
}

#[derive(Debug, Deserialize)]
struct JsonNode {
    nick: String,
    address: String,
    orport: u16,
    #[serde(default)]
    dirport: Option<u16>,
    fingerprint: String,
    #[serde(default)]
    ed25519_id: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonServer {
    address: String,
    port: u16,
}

#[derive(Debug, Deserialize)]
struct JsonNetwork {
    authorities: Vec<JsonNode>,
    relays: Vec<JsonNode>,
    #[serde(default)]
    http_server: Option<JsonServer>,
}

/// The parts of `network.json` the load generator uses.
#[derive(Debug, Clone)]
pub struct Network {
    /// Authority DirPorts.
    pub dir_servers: Vec<SocketAddrV4>,
    /// (role, relay) of every relay.
    pub relays: Vec<(String, Relay)>,
    pub http_server: Option<SocketAddrV4>,
}

fn loopback_v4(addr: &str, port: u16) -> Result<SocketAddrV4, PathError> {
    let a: SocketAddr = format!("{addr}:{port}")
        .parse()
        .map_err(|_| PathError::Invalid(format!("address {addr:?}")))?;
    require_loopback("network.json", &a)?;
    match a {
        SocketAddr::V4(v) => Ok(v),
        SocketAddr::V6(_) => Err(PathError::Invalid(format!("{addr} is not IPv4"))),
    }
}

fn relay_of(n: &JsonNode) -> Result<Relay, PathError> {
    Ok(Relay {
        nick: n.nick.clone(),
        addr: loopback_v4(&n.address, n.orport)?,
        rsa: RsaIdentity::from_hex(&n.fingerprint.replace(' ', ""))
            .ok_or_else(|| PathError::Invalid(format!("fingerprint of {}", n.nick)))?,
        ed: n.ed25519_id.as_deref().and_then(parse_ed25519),
        ntor_key: None,
        supports_cgo: None,
    })
}

impl Network {
    /// Parses `network.json` text, refusing any non-loopback address.
    pub fn parse(text: &str) -> Result<Network, PathError> {
        let j: JsonNetwork = serde_json::from_str(text)?;
        let mut dir_servers = Vec::new();
        for a in &j.authorities {
            if let Some(p) = a.dirport {
                dir_servers.push(loopback_v4(&a.address, p)?);
            }
        }
        let relays = j
            .relays
            .iter()
            .map(|n| Ok((n.role.clone().unwrap_or_default(), relay_of(n)?)))
            .collect::<Result<Vec<_>, PathError>>()?;
        let http_server = match &j.http_server {
            Some(s) => Some(loopback_v4(&s.address, s.port)?),
            None => None,
        };
        Ok(Network {
            dir_servers,
            relays,
            http_server,
        })
    }

    pub fn load(file: &Path) -> Result<Network, PathError> {
        let text = std::fs::read_to_string(file).map_err(|err| PathError::Read {
            file: file.display().to_string(),
            err,
        })?;
        Self::parse(&text)
    }

    /// The relays named in `nicks`, or (empty) the first middle and the first exit.
    pub fn choose_path(&self, nicks: &[String]) -> Result<Vec<Relay>, PathError> {
        if nicks.is_empty() {
            let find = |role: &'static str| {
                self.relays
                    .iter()
                    .find(|(r, _)| r == role)
                    .map(|(_, x)| x.clone())
                    .ok_or(PathError::NoRole(role))
            };
            return Ok(vec![find("middle")?, find("exit")?]);
        }
        nicks
            .iter()
            .map(|n| {
                self.relays
                    .iter()
                    .find(|(_, r)| {
                        &r.nick == n
                            || r.rsa
                                .to_hex()
                                .eq_ignore_ascii_case(n.trim_start_matches('$'))
                    })
                    .map(|(_, r)| r.clone())
                    .ok_or_else(|| PathError::UnknownNick(n.clone()))
            })
            .collect()
    }
}

impl From<&HopArg> for Relay {
    fn from(h: &HopArg) -> Relay {
        Relay {
            nick: h.rsa.to_hex()[..8].to_string(),
            addr: h.addr,
            rsa: h.rsa,
            ed: h.ed,
            ntor_key: h.ntor_key,
            supports_cgo: None,
        }
    }
}

/// Facts from a server descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorKeys {
    pub ntor_key: [u8; 32],
    pub ed: Option<Ed25519Identity>,
    /// The `proto` line advertises CGO ([`advertises_cgo`]).
    pub supports_cgo: bool,
}

/// Whether a `proto` list advertises what a client needs to ask for CGO, as C tor's
/// `supports_cgo` (versions.c) decides: FlowCtrl=2 (congestion control), Relay=5 (subprotocol
/// requests in ntor-v3) and Relay=6 (CGO).
pub fn advertises_cgo(protocols: &str) -> bool {
    use fors::dir::protover::ProtoList;
    let (Ok(have), Ok(need)) = (
        ProtoList::parse(protocols),
        ProtoList::parse("FlowCtrl=2 Relay=5-6"),
    ) else {
        return false;
    };
    need.missing_from(&have).is_empty()
}

/// Reads `ntor-onion-key`, `master-key-ed25519` and `proto` from a server descriptor
/// (dir-spec §"Server descriptor format").
pub fn parse_descriptor_keys(desc: &str) -> Option<DescriptorKeys> {
    let mut ntor = None;
    let mut ed = None;
    let mut supports_cgo = false;
    for line in desc.lines() {
        if let Some(k) = line.strip_prefix("ntor-onion-key ") {
            ntor = parse_curve25519(k.trim());
        } else if let Some(k) = line.strip_prefix("master-key-ed25519 ") {
            ed = Ed25519Identity::from_base64(k.trim());
        } else if let Some(p) = line.strip_prefix("proto ") {
            supports_cgo = advertises_cgo(p);
        }
    }
    Some(DescriptorKeys {
        ntor_key: ntor?,
        ed,
        supports_cgo,
    })
}

/// Fetches a relay's descriptor over HTTP/1.0 from an authority's DirPort.
pub fn fetch_descriptor_keys(
    dir: SocketAddrV4,
    rsa: &RsaIdentity,
    reach: Reach,
) -> Result<DescriptorKeys, PathError> {
    let fail = |why: String| PathError::Fetch {
        rsa: rsa.to_hex(),
        dir,
        why,
    };
    check_reach("--dir-server", &SocketAddr::V4(dir), reach)?;
    let mut s =
        TcpStream::connect_timeout(&dir.into(), DIR_TIMEOUT).map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(Some(DIR_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    write!(
        s,
        "GET /tor/server/fp/{} HTTP/1.0\r\nHost: {dir}\r\n\r\n",
        rsa.to_hex()
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut body = Vec::new();
    s.take(MAX_DESC_LEN as u64)
        .read_to_end(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let status = text.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        return Err(fail(format!("answer {status:?}")));
    }
    parse_descriptor_keys(&text).ok_or_else(|| fail("no ntor-onion-key in the descriptor".into()))
}

/// Fills in missing ntor keys (and ed25519 ids) from the first authority that answers.
pub fn complete_keys(
    path: &mut [Relay],
    dirs: &[SocketAddrV4],
    reach: Reach,
) -> Result<(), PathError> {
    for r in path.iter_mut() {
        if r.ntor_key.is_some() && r.ed.is_some() {
            continue;
        }
        let mut last = None;
        for d in dirs {
            match fetch_descriptor_keys(*d, &r.rsa, reach) {
                Ok(k) => {
                    r.ntor_key.get_or_insert(k.ntor_key);
                    r.supports_cgo = Some(k.supports_cgo);
                    if r.ed.is_none() {
                        r.ed = k.ed;
                    }
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if r.ntor_key.is_none() {
            return Err(last.unwrap_or_else(|| PathError::NoNtorKey(r.rsa.to_hex())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = r#"{
      "authorities": [{"nick":"auth0","address":"127.0.0.1","orport":5000,"dirport":5001,
        "v3ident":"AA","fingerprint":"0123456789ABCDEF0123456789ABCDEF01234567","ed25519_id":null}],
      "relays": [
        {"nick":"exit1","kind":"ctor","role":"exit","address":"127.0.0.1","orport":5010,
         "fingerprint":"1111111111111111111111111111111111111111","ed25519_id":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"nick":"mid1","kind":"ctor","role":"middle","address":"127.0.0.1","orport":5011,
         "fingerprint":"2222222222222222222222222222222222222222"}],
      "client": {"socks_port": 1}, "http_server": {"address":"127.0.0.2","port":5020,"pid":1}
    }"#;

    #[test]
    fn parses_network_json_and_chooses_paths() {
        let n = Network::parse(NET).unwrap();
        assert_eq!(n.dir_servers, vec!["127.0.0.1:5001".parse().unwrap()]);
        assert_eq!(n.http_server, Some("127.0.0.2:5020".parse().unwrap()));
        let p = n.choose_path(&[]).unwrap();
        assert_eq!(
            p.iter().map(|r| r.nick.as_str()).collect::<Vec<_>>(),
            ["mid1", "exit1"]
        );
        assert_eq!(p[1].ed, Some(Ed25519Identity([0; 32])));
        assert!(p[0].ed.is_none());
        let p = n
            .choose_path(&[
                "exit1".into(),
                "$2222222222222222222222222222222222222222".into(),
            ])
            .unwrap();
        assert_eq!(p[1].nick, "mid1");
        assert!(matches!(
            n.choose_path(&["nope".into()]),
            Err(PathError::UnknownNick(_))
        ));
    }

    #[test]
    fn refuses_non_loopback_relays() {
        let bad = NET
            .replace("\"orport\":5010", "\"orport\":5010,\"x\":0")
            .replacen(
                "127.0.0.1\",\"orport\":5010",
                "10.1.1.1\",\"orport\":5010",
                1,
            );
        assert!(Network::parse(&bad).is_err());
    }

    #[test]
    fn reads_keys_from_a_descriptor() {
        let d = "router x 127.0.0.1 5000 0 0\nmaster-key-ed25519 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n\
                 ntor-onion-key AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nrouter-signature\n";
        let k = parse_descriptor_keys(d).unwrap();
        assert_eq!(k.ntor_key, [2; 32]);
        assert_eq!(k.ed, Some(Ed25519Identity([1; 32])));
        assert!(!k.supports_cgo, "no proto line");
        let with = |proto: &str| {
            parse_descriptor_keys(&format!("{d}proto {proto}\n"))
                .unwrap()
                .supports_cgo
        };
        // C tor 0.4.9's list, and lists missing one of FlowCtrl=2, Relay=5, Relay=6.
        assert!(with(
            "Conflux=1 Cons=2 Desc=2-4 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 \
             Link=1-5 LinkAuth=1,3 Microdesc=2-3 Padding=2 Relay=1-6"
        ));
        assert!(!with("FlowCtrl=1 Relay=1-6"));
        assert!(!with("FlowCtrl=1-2 Relay=1-5"));
        assert!(!with("FlowCtrl=1-2 Relay=1-4,6"));
        assert!(parse_descriptor_keys("router x\n").is_none());
        assert!(parse_descriptor_keys("ntor-onion-key !!!\n").is_none());
    }
}
