//! Asynchronous events (control-spec §4.1): which names SETEVENTS accepts, and the `650`
//! lines for the events Fors emits (BW and the log events).

use super::reply::{code, push_data};
use crate::config::LogSeverity;

/// Every event name C tor 0.4.9 accepts in SETEVENTS. Fors accepts them all, so that
/// controllers which subscribe to many at once (nyx) keep working, but emits only
/// [`EMITTED`].
pub const EVENT_NAMES: &[&str] = &[
    "CIRC",
    "CIRC_MINOR",
    "STREAM",
    "ORCONN",
    "BW",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARN",
    "ERR",
    "NEWDESC",
    "ADDRMAP",
    "DESCCHANGED",
    "NS",
    "STATUS_GENERAL",
    "STATUS_CLIENT",
    "STATUS_SERVER",
    "GUARD",
    "STREAM_BW",
    "CLIENTS_SEEN",
    "NEWCONSENSUS",
    "BUILDTIMEOUT_SET",
    "SIGNAL",
    "CONF_CHANGED",
    "CONN_BW",
    "CELL_STATS",
    "CIRC_BW",
    "TRANSPORT_LAUNCHED",
    "HS_DESC",
    "HS_DESC_CONTENT",
    "NETWORK_LIVENESS",
    "PT_LOG",
    "PT_STATUS",
];

/// The events Fors actually sends. CIRC and STREAM are never sent: C tor sends them only for origin circuits and AP
/// streams, and Fors, a relay without a SocksPort, builds neither.
pub const EMITTED: &[&str] = &["ORCONN", "BW", "DEBUG", "INFO", "NOTICE", "WARN", "ERR"];

/// A set of subscribed events (bit i = `EVENT_NAMES[i]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventSet(u64);

impl EventSet {
    pub const EMPTY: EventSet = EventSet(0);

    /// Parses SETEVENTS arguments (case-insensitive names; `EXTENDED` is accepted and
    /// means nothing, as in C tor ≥ 0.2.2). The name that is not an event on error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<EventSet, String> {
        let mut set = 0u64;
        for n in names {
            if n.eq_ignore_ascii_case("EXTENDED") {
                continue;
            }
            let i = EVENT_NAMES
                .iter()
                .position(|e| e.eq_ignore_ascii_case(n))
                .ok_or_else(|| n.to_string())?;
            set |= 1 << i;
        }
        Ok(EventSet(set))
    }

    pub fn contains(self, name: &str) -> bool {
        EVENT_NAMES
            .iter()
            .position(|e| *e == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union of two sets.
    pub fn union(self, other: EventSet) -> EventSet {
        EventSet(self.0 | other.0)
    }

    /// The least severe log event in the set, if any.
    pub fn min_log_severity(self) -> Option<LogSeverity> {
        [
            LogSeverity::Debug,
            LogSeverity::Info,
            LogSeverity::Notice,
            LogSeverity::Warn,
            LogSeverity::Err,
        ]
        .into_iter()
        .find(|s| self.contains(log_event_name(*s)))
    }
}

/// The event name of a log severity.
pub fn log_event_name(s: LogSeverity) -> &'static str {
    match s {
        LogSeverity::Debug => "DEBUG",
        LogSeverity::Info => "INFO",
        LogSeverity::Notice => "NOTICE",
        LogSeverity::Warn => "WARN",
        LogSeverity::Err => "ERR",
    }
}

/// `650 BW read written` (§4.1.4): bytes in the last second.
pub fn bw_event(read: u64, written: u64) -> Vec<u8> {
    format!("650 BW {read} {written}\r\n").into_bytes()
}

/// `650 STATUS_SERVER NOTICE HIBERNATION_STATUS STATUS=AWAKE|SOFT|HARD` (control-spec
/// §4.1.10), sent by C tor's `on_hibernate_state_change`.
pub fn hibernation_status_event(h: crate::accounting::Hibernation) -> Vec<u8> {
    format!(
        "650 STATUS_SERVER NOTICE HIBERNATION_STATUS STATUS={}\r\n",
        h.as_str().to_ascii_uppercase()
    )
    .into_bytes()
}

/// `650 NOTICE message` (§4.1.5); a message spanning lines uses the data form.
pub fn log_event(sev: LogSeverity, message: &str) -> Vec<u8> {
    let name = log_event_name(sev);
    let message = message.trim_end_matches(['\r', '\n']);
    if message.contains(['\r', '\n']) {
        let mut out = format!("{}+{name}\r\n", code::EVENT).into_bytes();
        push_data(&mut out, message);
        out.extend_from_slice(b"650 OK\r\n");
        out
    } else {
        format!("650 {name} {message}\r\n").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sets_and_severities() {
        let s = EventSet::parse(["extended", "bw", "Warn", "CIRC"]).unwrap();
        assert!(s.contains("BW") && s.contains("WARN") && s.contains("CIRC"));
        assert!(!s.contains("NOTICE"));
        assert_eq!(s.min_log_severity(), Some(LogSeverity::Warn));
        assert_eq!(EventSet::parse(["BW", "BOGUS"]), Err("BOGUS".into()));
        assert!(EventSet::parse([]).unwrap().is_empty());
        assert_eq!(
            EventSet::parse(["INFO", "ERR"]).unwrap().min_log_severity(),
            Some(LogSeverity::Info)
        );
        assert!(EVENT_NAMES.len() <= 64);
        for e in EMITTED {
            assert!(EVENT_NAMES.contains(e));
        }
    }

    #[test]
    fn event_lines() {
        assert_eq!(bw_event(10, 20), b"650 BW 10 20\r\n");
        assert_eq!(
            log_event(LogSeverity::Notice, "hello world\n"),
            b"650 NOTICE hello world\r\n"
        );
        assert_eq!(
            log_event(LogSeverity::Warn, "two\n.lines"),
            b"650+WARN\r\ntwo\r\n..lines\r\n.\r\n650 OK\r\n"
        );
    }
}
