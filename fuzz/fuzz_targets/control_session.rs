//! ControlPort command lines (control-spec §2–3) through a `Session`, as the server feeds them:
//! no panic; a reply never grows without bound; after a close nothing more is handled. Both
//! before and after authentication (NULL auth is allowed when no method is configured), so
//! GETINFO/GETCONF/SETEVENTS/SIGNAL/… parsing is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use fors::config::{parse_str, Config, MemFs};
use fors::controlport::{AuthConfig, RelayView, Session};
use fors::crypto::ids::RsaIdentity;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        parse_str(
            &MemFs::default(),
            "torrc",
            "ORPort 127.0.0.1:9001\nNickname Fuzz\nControlPort 9051\nExitPolicy accept *:80\n",
        )
        .expect("fixed torrc parses")
        .0
    })
}

fuzz_target!(|data: &[u8]| {
    let or = ["127.0.0.1:9001".parse().unwrap()];
    let control = ["127.0.0.1:9051".to_string()];
    let hist = [(1u64, 2u64)];
    let view = RelayView {
        config: config(),
        config_file: None,
        fingerprint: RsaIdentity::from_hex("DEADBEEF00112233445566778899AABBCCDDEEFF").unwrap(),
        address: Some("127.0.0.1".parse().unwrap()),
        exit_policy_full: "accept *:80\nreject *:*",
        or_listeners: &or,
        control_listeners: &control,
        traffic: (1, 2),
        uptime_secs: 3,
        pid: 4,
        uid: 5,
        user: "fuzz",
        descriptor_limit: 65536,
        bw_history: &hist,
        ns_self: None,
        accounting: None,
        dir: (None, 0),
        orconns: None,
    };
    let auth = AuthConfig::default();
    let mut rng = StdRng::seed_from_u64(0);
    let mut session = Session::new();
    // The server splits on LF and strips one CR, at most 16 KiB per line.
    for line in data.split(|&b| b == b'\n').take(64) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.len() > 16 * 1024 {
            break;
        }
        let out = session.handle_line(line, &auth, &view, &mut rng);
        assert!(
            out.reply.len() < 1 << 20,
            "reply of {} bytes",
            out.reply.len()
        );
        if out.close {
            break;
        }
    }
});
