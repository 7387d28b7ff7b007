//! `YYYY-MM-DD HH:MM:SS` UTC timestamps as directory documents write them (dir-spec §2.1.1
//! `published`, §3.4.1 `valid-after`; C tor `format_iso_time` / `parse_iso_time`).

use std::time::SystemTime;

use crate::keys::time::{civil_from_days, days_from_civil, from_unix_secs, unix_secs};

/// Formats `t` (UTC, whole seconds).
pub fn format(t: SystemTime) -> String {
    format_secs(unix_secs(t))
}

/// Formats seconds since the epoch.
pub fn format_secs(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses exactly `YYYY-MM-DD HH:MM:SS` (C's strict `parse_iso_time`); `None` if malformed
/// or before 1970.
pub fn parse_secs(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    // Reject dates like 02-31 that the day arithmetic would silently roll over.
    if civil_from_days(days) != (i64::from(y), mo, d) || days < 0 {
        return None;
    }
    Some(days as u64 * 86400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(sec))
}

/// As [`parse_secs`], as a `SystemTime`.
pub fn parse(s: &str) -> Option<SystemTime> {
    parse_secs(s).map(from_unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_known_values() {
        assert_eq!(format_secs(0), "1970-01-01 00:00:00");
        // 2024-02-29 12:34:56 UTC = 1709210096.
        assert_eq!(format_secs(1_709_210_096), "2024-02-29 12:34:56");
        assert_eq!(parse_secs("2024-02-29 12:34:56"), Some(1_709_210_096));
        for s in (0..4_000_000_000u64).step_by(77_777_777) {
            assert_eq!(parse_secs(&format_secs(s)), Some(s));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "2024-02-30 00:00:00",
            "2024-13-01 00:00:00",
            "2024-1-01 00:00:00",
            "2024-01-01T00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 00:00",
            "+024-01-01 00:00:00",
            "",
        ] {
            assert_eq!(parse_secs(bad), None, "{bad}");
        }
    }
}
