//! The heartbeat: C tor's `log_heartbeat` (status.c), every `HeartbeatPeriod`, with only the
//! numbers Fors really keeps. C tor's main heartbeat line reports the uptime, the circuits
//! open, the bytes sent and received, and the connections received and made, each split into
//! IPv4 and IPv6; Fors reports the same numbers, its connection counts without that split
//! (it does not keep one). The DoS line (`dos_log_heartbeat`) follows, as in C tor.

use std::time::Duration;

/// What the heartbeat reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatStats {
    pub uptime: Duration,
    pub circuits_open: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    /// Connections accepted on the ORPort.
    pub conns_accepted: u64,
    /// Connections this relay opened (extends, exit streams).
    pub conns_made: u64,
}

/// C tor's `secs_to_uptime`: `H:MM hours`, `1 day H:MM hours`, `D days H:MM hours`.
pub fn uptime_text(d: Duration) -> String {
    let secs = d.as_secs();
    let days = secs / 86_400;
    let hours = (secs % 86_400) / 3600;
    let minutes = (secs % 3600) / 60;
    match days {
        0 => format!("{hours}:{minutes:02} hours"),
        1 => format!("1 day {hours}:{minutes:02} hours"),
        _ => format!("{days} days {hours}:{minutes:02} hours"),
    }
}

/// C tor's `bytes_to_usage`: whole kB under 1 MiB, else MB or GB with two decimals
/// (binary units, as in C tor).
pub fn usage_text(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} kB", bytes >> 10)
    } else if bytes < 1 << 30 {
        format!("{:.2} MB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.2} GB", bytes as f64 / f64::from(1u32 << 30))
    }
}

/// The first heartbeat line.
pub fn heartbeat_line(s: &HeartbeatStats) -> String {
    format!(
        "Heartbeat: Fors has been up {}, with {} circuits open; {} sent and {} received; {} \
         connections accepted and {} made (IPv4 and IPv6 together).",
        uptime_text(s.uptime),
        s.circuits_open,
        usage_text(s.bytes_written),
        usage_text(s.bytes_read),
        s.conns_accepted,
        s.conns_made
    )
}

/// When the next heartbeat is due, `period` after `from`; `None` when disabled (period 0).
pub fn next_due(from: std::time::Instant, period: Duration) -> Option<std::time::Instant> {
    (!period.is_zero()).then(|| from + period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_like_c_tor() {
        assert_eq!(uptime_text(Duration::from_secs(59)), "0:00 hours");
        assert_eq!(
            uptime_text(Duration::from_secs(3 * 3600 + 7 * 60)),
            "3:07 hours"
        );
        assert_eq!(
            uptime_text(Duration::from_secs(86_400 + 60)),
            "1 day 0:01 hours"
        );
        assert_eq!(
            uptime_text(Duration::from_secs(3 * 86_400 + 23 * 3600 + 59 * 60 + 59)),
            "3 days 23:59 hours"
        );
    }

    #[test]
    fn usage_like_c_tor() {
        assert_eq!(usage_text(0), "0 kB");
        assert_eq!(usage_text(2047), "1 kB");
        assert_eq!(usage_text((1 << 20) - 1), "1023 kB");
        assert_eq!(usage_text(1 << 20), "1.00 MB");
        assert_eq!(usage_text(3 << 29), "1.50 GB");
    }

    #[test]
    fn line_names_every_number() {
        let l = heartbeat_line(&HeartbeatStats {
            uptime: Duration::from_secs(3600),
            circuits_open: 7,
            bytes_written: 5 << 20,
            bytes_read: 4096,
            conns_accepted: 12,
            conns_made: 3,
        });
        assert_eq!(
            l,
            "Heartbeat: Fors has been up 1:00 hours, with 7 circuits open; 5.00 MB sent and 4 \
             kB received; 12 connections accepted and 3 made (IPv4 and IPv6 together)."
        );
    }

    #[test]
    fn zero_period_disables() {
        let t = std::time::Instant::now();
        assert_eq!(next_due(t, Duration::ZERO), None);
        assert_eq!(
            next_due(t, Duration::from_secs(5)),
            Some(t + Duration::from_secs(5))
        );
    }
}
