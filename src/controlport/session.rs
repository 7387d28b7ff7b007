//! One controller connection, sans-IO: takes command lines (CRLF already removed) and
//! returns reply bytes and what the relay should do. The server owns sockets and time.
//!
//! Before authentication only PROTOCOLINFO (once), AUTHCHALLENGE, AUTHENTICATE and QUIT are
//! accepted; anything else is answered `514` and the connection closed, and so is a failed
//! AUTHENTICATE (control-spec §3.5). After AUTHCHALLENGE the next command must be
//! AUTHENTICATE with the SAFECOOKIE client hash.

use rand_core::RngCore;

use super::auth::{
    safecookie_hash, AuthConfig, SAFECOOKIE_CLIENT_KEY, SAFECOOKIE_SERVER_KEY, SERVER_NONCE_LEN,
};
use super::events::EventSet;
use super::info::{version_string, InfoError, RelayView};
use super::quote::{hex_upper, quote, split_args, unhex, Arg};
use super::reply::{code, single, Reply};
use crate::config::render::{conf_value, ConfValue};

/// Largest body of a multi-line (`+KEYWORD`) command Fors will buffer.
pub const MAX_DATA_COMMAND: usize = 64 * 1024;

/// SIGNAL names (control-spec §3.7) as what the relay does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlSignal {
    /// RELOAD / HUP.
    Reload,
    /// SHUTDOWN / INT: exit after ShutdownWaitLength.
    Shutdown,
    /// HALT / TERM: exit now.
    Halt,
    /// DUMP / USR1: log a status summary.
    Dump,
    /// DEBUG / USR2.
    Debug,
    /// HEARTBEAT: log a heartbeat now.
    Heartbeat,
}

/// Something the relay must act on after the reply is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Signal(ControlSignal),
    /// The subscribed events changed.
    EventsChanged,
    /// TAKEOWNERSHIP: exit when this connection closes.
    TakeOwnership,
    DropOwnership,
}

/// The result of one line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Vec<u8>,
    /// Close the connection after sending the reply.
    pub close: bool,
    pub action: Option<Action>,
}

impl Outcome {
    fn reply(reply: Vec<u8>) -> Outcome {
        Outcome {
            reply,
            ..Outcome::default()
        }
    }
    fn close(reply: Vec<u8>) -> Outcome {
        Outcome {
            reply,
            close: true,
            action: None,
        }
    }
    fn act(reply: Vec<u8>, action: Action) -> Outcome {
        Outcome {
            reply,
            close: false,
            action: Some(action),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthState {
    New {
        protocolinfo_sent: bool,
    },
    /// AUTHCHALLENGE answered; the client hash we expect.
    Challenged {
        client_hash: [u8; 32],
    },
    Authenticated,
}

/// A multi-line command being read.
#[derive(Debug)]
struct DataCommand {
    keyword: String,
    size: usize,
}

/// One controller connection's protocol state.
#[derive(Debug)]
pub struct Session {
    auth: AuthState,
    events: EventSet,
    owner: bool,
    data: Option<DataCommand>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

const NOT_SUPPORTED: &str =
    "is not supported by Fors: edit the torrc and send SIGNAL RELOAD (or SIGHUP)";

impl Session {
    pub fn new() -> Session {
        Session {
            auth: AuthState::New {
                protocolinfo_sent: false,
            },
            events: EventSet::EMPTY,
            owner: false,
            data: None,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth == AuthState::Authenticated
    }

    /// The events this connection subscribed to (none before authentication).
    pub fn events(&self) -> EventSet {
        self.events
    }

    /// Whether closing this connection must stop the relay (TAKEOWNERSHIP).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Handles one line (without its CRLF). `view` answers GETINFO and GETCONF.
    pub fn handle_line(
        &mut self,
        line: &str,
        auth: &AuthConfig,
        view: &RelayView<'_>,
        rng: &mut dyn RngCore,
    ) -> Outcome {
        if let Some(d) = &mut self.data {
            // control-spec §2.2: the data ends with a line holding only ".".
            if line != "." {
                d.size += line.len() + 2;
                if d.size > MAX_DATA_COMMAND {
                    return Outcome::close(single(code::SYNTAX, "Command data too long"));
                }
                return Outcome::default();
            }
            let kw = self.data.take().map(|d| d.keyword).unwrap_or_default();
            if !self.is_authenticated() {
                return Outcome::close(single(code::AUTH_REQUIRED, "Authentication required."));
            }
            return match kw.to_ascii_uppercase().as_str() {
                "LOADCONF" => Outcome::reply(single(
                    code::UNIMPLEMENTED,
                    &format!("LOADCONF {NOT_SUPPORTED}"),
                )),
                _ => Outcome::reply(unrecognized(&kw)),
            };
        }
        let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        if let Some(kw) = keyword.strip_prefix('+') {
            self.data = Some(DataCommand {
                keyword: kw.to_string(),
                size: rest.len(),
            });
            return Outcome::default();
        }
        let kw = keyword.to_ascii_uppercase();

        // After AUTHCHALLENGE only AUTHENTICATE (or QUIT) may follow.
        if matches!(self.auth, AuthState::Challenged { .. }) && kw != "AUTHENTICATE" && kw != "QUIT"
        {
            return Outcome::close(single(code::AUTH_REQUIRED, "Authentication required."));
        }
        match kw.as_str() {
            "QUIT" => return Outcome::close(single(code::OK, "closing connection")),
            "PROTOCOLINFO" => return self.protocolinfo(rest, auth),
            "AUTHCHALLENGE" => return self.authchallenge(rest, auth, rng),
            "AUTHENTICATE" => return self.authenticate(rest, auth),
            _ => {}
        }
        if !self.is_authenticated() {
            return Outcome::close(single(code::AUTH_REQUIRED, "Authentication required."));
        }
        match kw.as_str() {
            "GETINFO" => getinfo(rest, view),
            "GETCONF" => getconf(rest, view),
            "SETEVENTS" => self.setevents(rest),
            "SIGNAL" => signal(rest),
            "USEFEATURE" => usefeature(rest),
            "TAKEOWNERSHIP" => {
                self.owner = true;
                Outcome::act(single(code::OK, "OK"), Action::TakeOwnership)
            }
            "DROPOWNERSHIP" => {
                self.owner = false;
                Outcome::act(single(code::OK, "OK"), Action::DropOwnership)
            }
            "SETCONF" | "RESETCONF" | "SAVECONF" | "LOADCONF" => Outcome::reply(single(
                code::UNIMPLEMENTED,
                &format!("{kw} {NOT_SUPPORTED}"),
            )),
            _ => Outcome::reply(unrecognized(keyword)),
        }
    }

    fn protocolinfo(&mut self, rest: &str, auth: &AuthConfig) -> Outcome {
        if let AuthState::New { protocolinfo_sent } = &mut self.auth {
            if std::mem::replace(protocolinfo_sent, true) {
                return Outcome::close(single(
                    code::AUTH_REQUIRED,
                    "No more PROTOCOLINFO commands allowed before authentication.",
                ));
            }
        }
        for w in rest.split_ascii_whitespace() {
            if w.parse::<u32>().is_err() {
                return Outcome::reply(single(
                    code::SYNTAX,
                    &format!(
                        "PROTOCOLINFO argument {} is not a version number",
                        quote(w.as_bytes())
                    ),
                ));
            }
        }
        let mut methods = format!("AUTH METHODS={}", auth.method_names());
        if let Some(c) = &auth.cookie {
            methods.push_str(" COOKIEFILE=");
            methods.push_str(&quote(c.path.as_os_str().as_encoded_bytes()));
        }
        Outcome::reply(
            Reply::new()
                .mid(code::OK, "PROTOCOLINFO 1")
                .mid(code::OK, &methods)
                .mid(
                    code::OK,
                    &format!("VERSION Tor={}", quote(version_string().as_bytes())),
                )
                .end(code::OK, "OK"),
        )
    }

    fn authchallenge(&mut self, rest: &str, auth: &AuthConfig, rng: &mut dyn RngCore) -> Outcome {
        if !matches!(self.auth, AuthState::New { .. }) {
            return Outcome::close(single(
                code::UNRECOGNIZED_ARG,
                "AUTHCHALLENGE is only allowed once, before authenticating",
            ));
        }
        let args = match split_args(rest) {
            Ok(a) => a,
            Err(e) => return Outcome::close(single(code::SYNTAX, &format!("Bad argument: {e}"))),
        };
        match args.first() {
            Some(Arg::Word(m)) if m.eq_ignore_ascii_case("SAFECOOKIE") => {}
            _ => {
                return Outcome::close(single(
                    code::UNRECOGNIZED_ARG,
                    "AUTHCHALLENGE only supports SAFECOOKIE authentication",
                ))
            }
        }
        let Some(cookie) = &auth.cookie else {
            return Outcome::close(single(
                code::UNRECOGNIZED_ARG,
                "Cookie authentication is disabled",
            ));
        };
        let client_nonce = match args.get(1) {
            Some(Arg::Word(h)) => match unhex(h) {
                Ok(n) => n,
                Err(_) => {
                    return Outcome::close(single(code::SYNTAX, "Invalid base16 client nonce"))
                }
            },
            Some(Arg::Quoted(q)) => q.clone(),
            None => return Outcome::close(single(code::SYNTAX, "Missing client nonce")),
        };
        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        rng.fill_bytes(&mut server_nonce);
        let server_hash = safecookie_hash(
            SAFECOOKIE_SERVER_KEY,
            &cookie.bytes,
            &client_nonce,
            &server_nonce,
        );
        let client_hash = safecookie_hash(
            SAFECOOKIE_CLIENT_KEY,
            &cookie.bytes,
            &client_nonce,
            &server_nonce,
        );
        self.auth = AuthState::Challenged { client_hash };
        Outcome::reply(single(
            code::OK,
            &format!(
                "AUTHCHALLENGE SERVERHASH={} SERVERNONCE={}",
                hex_upper(&server_hash),
                hex_upper(&server_nonce)
            ),
        ))
    }

    fn authenticate(&mut self, rest: &str, auth: &AuthConfig) -> Outcome {
        let secret =
            match split_args(rest).as_deref() {
                Ok([]) => Vec::new(),
                Ok([Arg::Quoted(q)]) => q.clone(),
                Ok([Arg::Word(h)]) => match unhex(h) {
                    Ok(b) => b,
                    Err(_) => return Outcome::close(single(
                        code::INTERNAL,
                        "Invalid hexadecimal encoding.  Maybe you tried a plain text password?  \
                         If so, the standard requires that you put it in double quotes.",
                    )),
                },
                _ => {
                    return Outcome::close(single(
                        code::SYNTAX,
                        "AUTHENTICATE takes one hex or quoted-string argument",
                    ))
                }
            };
        let ok = match &self.auth {
            AuthState::Challenged { client_hash } => {
                secret.len() == 32
                    && bool::from(subtle::ConstantTimeEq::ct_eq(&secret[..], &client_hash[..]))
            }
            _ => auth.check_secret(&secret),
        };
        if !ok {
            let why = match &self.auth {
                AuthState::Challenged { .. } => "SAFECOOKIE client hash did not match",
                _ => "Password did not match HashedControlPassword *or* authentication cookie.",
            };
            return Outcome::close(single(
                code::BAD_AUTH,
                &format!("Authentication failed: {why}"),
            ));
        }
        self.auth = AuthState::Authenticated;
        Outcome::reply(single(code::OK, "OK"))
    }

    fn setevents(&mut self, rest: &str) -> Outcome {
        match EventSet::parse(rest.split_ascii_whitespace()) {
            Ok(set) => {
                self.events = set;
                Outcome::act(single(code::OK, "OK"), Action::EventsChanged)
            }
            Err(name) => Outcome::reply(single(
                code::UNRECOGNIZED_ENTITY,
                &format!("Unrecognized event {}", quote(name.as_bytes())),
            )),
        }
    }
}

fn unrecognized(keyword: &str) -> Vec<u8> {
    single(
        code::UNRECOGNIZED_COMMAND,
        &format!("Unrecognized command {}", quote(keyword.as_bytes())),
    )
}

fn getinfo(rest: &str, view: &RelayView<'_>) -> Outcome {
    let keys: Vec<&str> = rest.split_ascii_whitespace().collect();
    if keys.is_empty() {
        return Outcome::reply(single(code::SYNTAX, "GETINFO needs at least one key"));
    }
    let mut r = Reply::new();
    for k in keys {
        match view.getinfo(k) {
            Ok(v) => {
                r.key_value(code::OK, k, &v);
            }
            Err(e @ InfoError::Unrecognized(_)) => {
                return Outcome::reply(single(code::UNRECOGNIZED_ENTITY, &e.to_string()))
            }
            Err(e @ InfoError::Unavailable(_)) => {
                return Outcome::reply(single(code::INTERNAL, &e.to_string()))
            }
        }
    }
    Outcome::reply(r.end(code::OK, "OK"))
}

/// A GETCONF value as C tor writes it: quoted only if it would not survive as a bare word.
fn conf_text(v: &str) -> String {
    if v.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        v.to_string()
    } else {
        quote(v.as_bytes())
    }
}

fn getconf(rest: &str, view: &RelayView<'_>) -> Outcome {
    let mut lines: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for k in rest.split_ascii_whitespace() {
        match conf_value(view.config, k) {
            Some(ConfValue::Set(name, values)) if !values.is_empty() => {
                lines.extend(values.iter().map(|v| format!("{name}={}", conf_text(v))));
            }
            Some(ConfValue::Set(name, _)) | Some(ConfValue::Ignored(name)) => {
                lines.push(name.to_string())
            }
            None => unknown.push(quote(k.as_bytes())),
        }
    }
    if !unknown.is_empty() {
        return Outcome::reply(single(
            code::UNRECOGNIZED_ENTITY,
            &format!("Unrecognized configuration key {}", unknown.join(" ")),
        ));
    }
    let Some(last) = lines.pop() else {
        return Outcome::reply(single(code::OK, "OK"));
    };
    let mut r = Reply::new();
    for l in &lines {
        r.mid(code::OK, l);
    }
    Outcome::reply(r.end(code::OK, &last))
}

fn signal(rest: &str) -> Outcome {
    let name = rest.trim();
    let sig =
        match name.to_ascii_uppercase().as_str() {
            "RELOAD" | "HUP" => ControlSignal::Reload,
            "SHUTDOWN" | "INT" => ControlSignal::Shutdown,
            "HALT" | "TERM" => ControlSignal::Halt,
            "DUMP" | "USR1" => ControlSignal::Dump,
            "DEBUG" | "USR2" => ControlSignal::Debug,
            "HEARTBEAT" => ControlSignal::Heartbeat,
            // Client-side signals: a relay-only Fors has no client circuits to renew, so there
            // is nothing to do, and success is the truthful answer.
            "NEWNYM" | "ACTIVE" | "DORMANT" => return Outcome::reply(single(code::OK, "OK")),
            "CLEARDNSCACHE" => return Outcome::reply(single(
                code::UNRECOGNIZED_ENTITY,
                "CLEARDNSCACHE is not supported by Fors: each shard's exit resolver keeps its own \
                 cache",
            )),
            _ => {
                return Outcome::reply(single(
                    code::UNRECOGNIZED_ENTITY,
                    &format!("Unrecognized signal code {}", quote(name.as_bytes())),
                ))
            }
        };
    Outcome::act(single(code::OK, "OK"), Action::Signal(sig))
}

fn usefeature(rest: &str) -> Outcome {
    for f in rest.split_ascii_whitespace() {
        // Both features are always on since C tor 0.2.2.
        if !f.eq_ignore_ascii_case("EXTENDED_EVENTS") && !f.eq_ignore_ascii_case("VERBOSE_NAMES") {
            return Outcome::reply(single(
                code::UNRECOGNIZED_ENTITY,
                &format!("Unrecognized feature {}", quote(f.as_bytes())),
            ));
        }
    }
    Outcome::reply(single(code::OK, "OK"))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
