//! Session tests: whole exchanges, byte for byte where the format matters.

use super::*;
use crate::config::{parse_str, Config, MemFs};
use crate::controlport::auth::{Cookie, HashedPassword, COOKIE_LEN};
use crate::crypto::ids::RsaIdentity;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::Sha256;

const FP: &str = "DEADBEEF00112233445566778899AABBCCDDEEFF";

fn config() -> Config {
    parse_str(
        &MemFs::default(),
        "torrc",
        "ORPort 127.0.0.1:9001\nNickname Fred\nContactInfo ops \"x\"\nControlPort 9051\n\
         ExitPolicy accept *:80\nCookieAuthentication 1\n",
    )
    .unwrap()
    .0
}

struct Fixture {
    config: Config,
    or: Vec<std::net::SocketAddr>,
    control: Vec<String>,
    hist: Vec<(u64, u64)>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            config: config(),
            or: vec!["127.0.0.1:9001".parse().unwrap()],
            control: vec!["127.0.0.1:9051".into()],
            hist: vec![(1, 2), (3, 4)],
        }
    }
    fn view(&self) -> RelayView<'_> {
        RelayView {
            config: &self.config,
            config_file: Some(std::path::Path::new("/etc/fors/torrc")),
            fingerprint: RsaIdentity::from_hex(FP).unwrap(),
            address: Some("127.0.0.1".parse().unwrap()),
            exit_policy_full: "accept *:80\nreject *:*",
            or_listeners: &self.or,
            control_listeners: &self.control,
            traffic: (1234, 5678),
            uptime_secs: 42,
            pid: 77,
            uid: 1000,
            user: "fors",
            descriptor_limit: 65536,
            bw_history: &self.hist,
            ns_self: None,
            accounting: None,
            orconns: None,
            dir: (None, 0),
        }
    }
}

fn cookie() -> Cookie {
    Cookie {
        bytes: [0x5a; COOKIE_LEN],
        path: "/var/lib/fors/control_auth_cookie".into(),
    }
}

fn cookie_auth() -> AuthConfig {
    AuthConfig {
        cookie: Some(cookie()),
        passwords: vec![],
    }
}

struct Talk {
    s: Session,
    auth: AuthConfig,
    fx: Fixture,
    rng: StdRng,
}

impl Talk {
    fn new(auth: AuthConfig) -> Talk {
        Talk {
            s: Session::new(),
            auth,
            fx: Fixture::new(),
            rng: StdRng::seed_from_u64(7),
        }
    }
    fn send(&mut self, line: &str) -> Outcome {
        let view = self.fx.view();
        self.s.handle_line(line, &self.auth, &view, &mut self.rng)
    }
    fn text(&mut self, line: &str) -> String {
        String::from_utf8(self.send(line).reply).unwrap()
    }
    fn authed(auth: AuthConfig) -> Talk {
        let mut t = Talk::new(auth);
        let hex = hex_upper(&cookie().bytes);
        let o = t.send(&format!("AUTHENTICATE {hex}"));
        assert_eq!(o.reply, b"250 OK\r\n");
        t
    }
}

#[test]
fn protocolinfo_lists_methods_cookie_file_and_version() {
    let mut t = Talk::new(AuthConfig {
        cookie: Some(cookie()),
        passwords: vec![HashedPassword::parse(
            "16:208DBEED17D8CED360996C11C3BB158CB5326796842DDBE220BA14CC1C",
        )
        .unwrap()],
    });
    assert_eq!(
        t.text("PROTOCOLINFO 1"),
        format!(
            "250-PROTOCOLINFO 1\r\n\
             250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD COOKIEFILE=\"/var/lib/fors/control_auth_cookie\"\r\n\
             250-VERSION Tor=\"{}\"\r\n250 OK\r\n",
            version_string()
        )
    );
    // Only once before authenticating.
    let o = t.send("PROTOCOLINFO");
    assert!(o.close && o.reply.starts_with(b"514 "));
    let mut open = Talk::new(AuthConfig::default());
    assert!(open
        .text("protocolinfo")
        .contains("250-AUTH METHODS=NULL\r\n"));
    assert!(open.text("AUTHENTICATE").starts_with("250 OK"));
}

#[test]
fn commands_before_authentication_close_the_connection() {
    let mut t = Talk::new(cookie_auth());
    let o = t.send("GETINFO version");
    assert_eq!(o.reply, b"514 Authentication required.\r\n");
    assert!(o.close);
    let mut t = Talk::new(cookie_auth());
    let o = t.send("QUIT");
    assert_eq!(
        (o.reply.as_slice(), o.close),
        (&b"250 closing connection\r\n"[..], true)
    );
}

#[test]
fn cookie_and_password_authentication() {
    let mut t = Talk::new(cookie_auth());
    assert_eq!(
        t.text(&format!("AUTHENTICATE {}", hex_upper(&[0x5a; 32]))),
        "250 OK\r\n"
    );
    assert!(t.s.is_authenticated());
    // Quoted form of the same 32 bytes.
    let mut t = Talk::new(cookie_auth());
    assert_eq!(
        t.text(&format!("AUTHENTICATE \"{}\"", "Z".repeat(32))),
        "250 OK\r\n"
    );
    // Wrong cookie: 515 and close.
    let mut t = Talk::new(cookie_auth());
    let o = t.send(&format!("AUTHENTICATE {}", hex_upper(&[0x5b; 32])));
    assert!(o.close && o.reply.starts_with(b"515 Authentication failed: "));
    // Plain text without quotes.
    let mut t = Talk::new(cookie_auth());
    let o = t.send("AUTHENTICATE hunter2");
    assert!(o.close && o.reply.starts_with(b"551 Invalid hexadecimal encoding."));

    // HASHEDPASSWORD with the `tor --hash-password fors-test-password` vector.
    let pw = AuthConfig {
        cookie: None,
        passwords: vec![HashedPassword::parse(
            "16:208DBEED17D8CED360996C11C3BB158CB5326796842DDBE220BA14CC1C",
        )
        .unwrap()],
    };
    let mut t = Talk::new(pw.clone());
    assert_eq!(t.text("AUTHENTICATE \"fors-test-password\""), "250 OK\r\n");
    let mut t = Talk::new(pw.clone());
    assert_eq!(
        t.text(&format!(
            "AUTHENTICATE {}",
            hex_upper(b"fors-test-password")
        )),
        "250 OK\r\n"
    );
    let mut t = Talk::new(pw.clone());
    assert!(t.send("AUTHENTICATE \"fors-test-passwore\"").close);
    // With a password configured, an empty AUTHENTICATE is not NULL authentication.
    let mut t = Talk::new(pw);
    assert!(t.send("AUTHENTICATE").close);
}

/// SAFECOOKIE from the controller's side, with the hashes computed here independently.
#[test]
fn safecookie_exchange() {
    let mut t = Talk::new(cookie_auth());
    let client_nonce = [0xc1u8; 32];
    let reply = t.text(&format!(
        "AUTHCHALLENGE SAFECOOKIE {}",
        hex_upper(&client_nonce)
    ));
    let rest = reply
        .strip_prefix("250 AUTHCHALLENGE SERVERHASH=")
        .unwrap_or_else(|| panic!("{reply}"));
    let (server_hash, nonce) = rest.trim_end().split_once(" SERVERNONCE=").unwrap();
    let server_nonce = unhex(nonce).unwrap();
    assert_eq!(server_nonce.len(), 32);
    let hmac = |key: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(&[0x5a; 32]);
        m.update(&client_nonce);
        m.update(&server_nonce);
        hex_upper(&m.finalize().into_bytes())
    };
    assert_eq!(
        server_hash,
        hmac(b"Tor safe cookie authentication server-to-controller hash")
    );
    let client_hash = hmac(b"Tor safe cookie authentication controller-to-server hash");
    // The plain cookie is no longer accepted once challenged.
    let mut t2 = Talk::new(cookie_auth());
    t2.send(&format!(
        "AUTHCHALLENGE SAFECOOKIE {}",
        hex_upper(&client_nonce)
    ));
    assert!(
        t2.send(&format!("AUTHENTICATE {}", hex_upper(&[0x5a; 32])))
            .close
    );
    // Any other command after AUTHCHALLENGE closes.
    let mut t3 = Talk::new(cookie_auth());
    t3.send("AUTHCHALLENGE SAFECOOKIE \"nonce\"");
    assert!(t3.send("GETINFO version").close);

    assert_eq!(t.text(&format!("AUTHENTICATE {client_hash}")), "250 OK\r\n");
    assert!(t.s.is_authenticated());
    // Without cookie authentication there is no challenge.
    let mut t = Talk::new(AuthConfig::default());
    assert!(t.send("AUTHCHALLENGE SAFECOOKIE 00").close);
}

#[test]
fn getinfo_single_multi_line_and_errors() {
    let mut t = Talk::authed(cookie_auth());
    assert_eq!(
        t.text("GETINFO version fingerprint process/pid"),
        format!(
            "250-version={}\r\n250-fingerprint={FP}\r\n250-process/pid=77\r\n250 OK\r\n",
            version_string()
        )
    );
    assert_eq!(
        t.text("GETINFO exit-policy/full"),
        "250+exit-policy/full=\r\naccept *:80\r\nreject *:*\r\n.\r\n250 OK\r\n"
    );
    assert_eq!(
        t.text("GETINFO net/listeners/or net/listeners/control"),
        "250-net/listeners/or=\"127.0.0.1:9001\"\r\n250-net/listeners/control=\"127.0.0.1:9051\"\r\n250 OK\r\n"
    );
    assert_eq!(
        t.text("GETINFO traffic/read traffic/written uptime accounting/enabled circuit-status"),
        "250-traffic/read=1234\r\n250-traffic/written=5678\r\n250-uptime=42\r\n\
         250-accounting/enabled=0\r\n250-circuit-status=\r\n250 OK\r\n"
    );
    assert_eq!(
        t.text("GETINFO bw-event-cache"),
        "250-bw-event-cache=1,2 3,4\r\n250 OK\r\n"
    );
    assert_eq!(
        t.text("GETINFO version nonsense"),
        "552 Unrecognized key \"nonsense\"\r\n"
    );
    assert!(t
        .text(&format!("GETINFO ns/id/{FP}"))
        .starts_with("552 Unrecognized key \"ns/id/"));
    let names = t.text("GETINFO info/names");
    for k in [
        "version",
        "config-file",
        "process/user",
        "status/version/current",
    ] {
        assert!(
            names.contains(&format!("\r\n{k} -- "))
                || names.contains(&format!("=\r\n{k} -- "))
                || names.contains(&format!("{k} -- ")),
            "{k}"
        );
    }
    // Every listed key answers (ns/id/* aside).
    for (k, _) in crate::controlport::info::INFO_KEYS {
        if !k.ends_with('*') {
            assert!(
                t.text(&format!("GETINFO {k}")).ends_with("250 OK\r\n"),
                "{k}"
            );
        }
    }
}

#[test]
fn getconf_values_defaults_and_unknown() {
    let mut t = Talk::authed(cookie_auth());
    assert_eq!(t.text("GETCONF Nickname"), "250 Nickname=Fred\r\n");
    assert_eq!(
        t.text("GETCONF nickname ORPort ContactInfo PidFile BandwidthRate"),
        "250-Nickname=Fred\r\n250-ORPort=127.0.0.1:9001\r\n250-ContactInfo=\"ops \\\"x\\\"\"\r\n\
         250-PidFile\r\n250 BandwidthRate=1073741824\r\n"
    );
    assert_eq!(t.text("GETCONF Sandbox"), "250 Sandbox\r\n");
    assert_eq!(
        t.text("GETCONF Nickname HiddenServiceDir Bogus"),
        "552 Unrecognized configuration key \"HiddenServiceDir\" \"Bogus\"\r\n"
    );
    for cmd in ["SETCONF Nickname=x", "RESETCONF Nickname", "SAVECONF"] {
        let r = t.text(cmd);
        assert!(
            r.starts_with("511 ") && r.contains("not supported by Fors"),
            "{r}"
        );
    }
}

#[test]
fn events_signals_features_ownership() {
    let mut t = Talk::authed(cookie_auth());
    let o = t.send("SETEVENTS EXTENDED BW NOTICE circ");
    assert_eq!(o.reply, b"250 OK\r\n");
    assert_eq!(o.action, Some(Action::EventsChanged));
    assert!(t.s.events().contains("BW") && t.s.events().contains("NOTICE"));
    assert_eq!(
        t.text("SETEVENTS BW FOO"),
        "552 Unrecognized event \"FOO\"\r\n"
    );
    assert!(
        t.s.events().contains("BW"),
        "a failed SETEVENTS keeps the old set"
    );
    for (name, sig) in [
        ("RELOAD", ControlSignal::Reload),
        ("hup", ControlSignal::Reload),
        ("SHUTDOWN", ControlSignal::Shutdown),
        ("INT", ControlSignal::Shutdown),
        ("HALT", ControlSignal::Halt),
        ("TERM", ControlSignal::Halt),
        ("DUMP", ControlSignal::Dump),
        ("DEBUG", ControlSignal::Debug),
    ] {
        let o = t.send(&format!("SIGNAL {name}"));
        assert_eq!(
            (o.reply.as_slice(), o.action),
            (&b"250 OK\r\n"[..], Some(Action::Signal(sig)))
        );
    }
    assert_eq!(t.send("SIGNAL NEWNYM").action, None);
    assert!(t.text("SIGNAL CLEARDNSCACHE").starts_with("552 "));
    assert_eq!(
        t.text("SIGNAL WHATEVER"),
        "552 Unrecognized signal code \"WHATEVER\"\r\n"
    );
    assert_eq!(
        t.text("USEFEATURE EXTENDED_EVENTS VERBOSE_NAMES"),
        "250 OK\r\n"
    );
    assert_eq!(
        t.text("USEFEATURE TELEPORT"),
        "552 Unrecognized feature \"TELEPORT\"\r\n"
    );
    assert_eq!(t.send("TAKEOWNERSHIP").action, Some(Action::TakeOwnership));
    assert!(t.s.is_owner());
    t.send("DROPOWNERSHIP");
    assert!(!t.s.is_owner());
    assert_eq!(
        t.text("EXTENDCIRCUIT 0"),
        "510 Unrecognized command \"EXTENDCIRCUIT\"\r\n"
    );
}

#[test]
fn multi_line_commands_are_consumed_then_answered() {
    let mut t = Talk::authed(cookie_auth());
    assert_eq!(t.send("+LOADCONF").reply, b"");
    assert_eq!(t.send("Nickname x").reply, b"");
    let r = t.text(".");
    assert!(
        r.starts_with("511 LOADCONF is not supported by Fors"),
        "{r}"
    );
    t.send("+POSTDESCRIPTOR purpose=general");
    t.send("router x");
    assert_eq!(
        t.text("."),
        "510 Unrecognized command \"POSTDESCRIPTOR\"\r\n"
    );
    // Bounded.
    t.send("+LOADCONF");
    let line = "x".repeat(1000);
    let closed = (0..100).any(|_| t.send(&line).close);
    assert!(closed);
}

#[test]
fn getinfo_accounting_keys_as_c() {
    use crate::accounting::{AccountingReport, Hibernation};
    let f = Fixture::new();
    let mut v = f.view();
    // Off: C still answers every key, from zeroed values.
    for (k, want) in [
        ("accounting/enabled", "0"),
        ("accounting/hibernating", "awake"),
        ("accounting/bytes", "0 0"),
        ("accounting/bytes-left", "0 0"),
        ("accounting/interval-start", "1970-01-01 00:00:00"),
    ] {
        assert_eq!(v.getinfo(k).unwrap(), want, "{k}");
    }
    v.accounting = Some(AccountingReport {
        hibernation: Hibernation::Soft,
        read_written: (1000, 2000),
        bytes_left: (24, 0),
        interval_start: 1_709_164_800,
        interval_wake: 1_709_164_800 + 3600,
        interval_end: 1_709_251_200,
    });
    for (k, want) in [
        ("accounting/enabled", "1"),
        ("accounting/hibernating", "soft"),
        ("accounting/bytes", "1000 2000"),
        ("accounting/bytes-left", "24 0"),
        ("accounting/interval-start", "2024-02-29 00:00:00"),
        ("accounting/interval-wake", "2024-02-29 01:00:00"),
        ("accounting/interval-end", "2024-03-01 00:00:00"),
    ] {
        assert_eq!(v.getinfo(k).unwrap(), want, "{k}");
    }
    let names = v.getinfo("info/names").unwrap();
    assert!(names.contains("accounting/interval-wake -- "), "{names}");
}
