//! Numbers with units, as C tor's `config_parse_units` (`lib/confmgt/unitparse.c`) reads
//! them: a number (integer or decimal), optional spaces, then a case-insensitive unit.

use std::time::Duration;

/// Memory units and their size in bytes. Note C tor's quirk that the bit units divide by 8
/// ("kbits" is 128 bytes).
const MEMORY_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("byte", 1),
    ("bytes", 1),
    ("kb", 1 << 10),
    ("kbyte", 1 << 10),
    ("kbytes", 1 << 10),
    ("kilobyte", 1 << 10),
    ("kilobytes", 1 << 10),
    ("kilobits", 1 << 7),
    ("kilobit", 1 << 7),
    ("kbits", 1 << 7),
    ("kbit", 1 << 7),
    ("m", 1 << 20),
    ("mb", 1 << 20),
    ("mbyte", 1 << 20),
    ("mbytes", 1 << 20),
    ("megabyte", 1 << 20),
    ("megabytes", 1 << 20),
    ("megabits", 1 << 17),
    ("megabit", 1 << 17),
    ("mbits", 1 << 17),
    ("mbit", 1 << 17),
    ("gb", 1 << 30),
    ("gbyte", 1 << 30),
    ("gbytes", 1 << 30),
    ("gigabyte", 1 << 30),
    ("gigabytes", 1 << 30),
    ("gigabits", 1 << 27),
    ("gigabit", 1 << 27),
    ("gbits", 1 << 27),
    ("gbit", 1 << 27),
    ("tb", 1 << 40),
    ("tbyte", 1 << 40),
    ("tbytes", 1 << 40),
    ("terabyte", 1 << 40),
    ("terabytes", 1 << 40),
    ("terabits", 1 << 37),
    ("terabit", 1 << 37),
    ("tbits", 1 << 37),
    ("tbit", 1 << 37),
];

/// Time units in seconds (C's `time_units`; a month is 2629728 s, about 30.437 days).
const TIME_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("second", 1),
    ("seconds", 1),
    ("minute", 60),
    ("minutes", 60),
    ("hour", 3600),
    ("hours", 3600),
    ("day", 86400),
    ("days", 86400),
    ("week", 7 * 86400),
    ("weeks", 7 * 86400),
    ("month", 2_629_728),
    ("months", 2_629_728),
];

/// Time units in milliseconds for C's `MSEC_INTERVAL` options (a bare number is milliseconds).
const MSEC_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("msec", 1),
    ("millisecond", 1),
    ("milliseconds", 1),
    ("second", 1000),
    ("seconds", 1000),
    ("minute", 60_000),
    ("minutes", 60_000),
    ("hour", 3_600_000),
    ("hours", 3_600_000),
    ("day", 86_400_000),
    ("days", 86_400_000),
    ("week", 7 * 86_400_000),
    ("weeks", 7 * 86_400_000),
];

/// Parses a millisecond interval ("100 msec", "1 second", "250").
pub fn parse_msec_interval(s: &str) -> Result<Duration, String> {
    let ms = parse_units(s, MSEC_UNITS)?;
    if ms > i32::MAX as u64 {
        return Err(format!("interval {s:?} is too large"));
    }
    Ok(Duration::from_millis(ms))
}

/// Parses a memory amount ("1 GB", "512 kbits", "1.5 MB") into bytes.
pub fn parse_memunit(s: &str) -> Result<u64, String> {
    parse_units(s, MEMORY_UNITS)
}

/// Parses an interval ("30 seconds", "2 days") into a duration. C stores intervals in an
/// `int`, so values above `i32::MAX` seconds are refused as C refuses them.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs = parse_units(s, TIME_UNITS)?;
    if secs > i32::MAX as u64 {
        return Err(format!("interval {s:?} is too large"));
    }
    Ok(Duration::from_secs(secs))
}

fn parse_units(s: &str, table: &[(&str, u64)]) -> Result<u64, String> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return Err(format!("unable to parse {s:?} as a number"));
    }
    let unit = rest.trim_start();
    let mult = table
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
        .map(|&(_, m)| m)
        .ok_or_else(|| format!("unknown unit in {s:?}"))?;
    // Results must fit in an i64, as in C.
    let limit = i64::MAX as u64;
    if num.contains('.') {
        let d: f64 = num
            .parse()
            .map_err(|_| format!("unable to parse {s:?} as a number"))?;
        let v = d * mult as f64;
        if !v.is_finite() || v >= limit as f64 {
            return Err(format!("overflow while parsing {s:?}"));
        }
        Ok(v as u64)
    } else {
        let n: u64 = num
            .parse()
            .map_err(|_| format!("overflow while parsing {s:?}"))?;
        match n.checked_mul(mult) {
            Some(v) if v <= limit => Ok(v),
            _ => Err(format!("overflow while parsing {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_as_c_tor() {
        assert_eq!(parse_memunit("1 GB"), Ok(1 << 30));
        assert_eq!(parse_memunit("1GB"), Ok(1 << 30));
        assert_eq!(parse_memunit("5000"), Ok(5000));
        assert_eq!(parse_memunit("100 KBytes"), Ok(102_400));
        assert_eq!(parse_memunit("8 kbits"), Ok(1024));
        assert_eq!(parse_memunit("10 Mbit"), Ok(10 << 17));
        assert_eq!(parse_memunit("1.5 MB"), Ok(1_572_864));
        assert_eq!(parse_memunit("2 TB"), Ok(2 << 40));
        assert!(parse_memunit("1 GiB").unwrap_err().contains("unknown unit"));
        assert!(parse_memunit("lots").unwrap_err().contains("as a number"));
        assert!(parse_memunit("-5 MB").is_err());
        assert!(parse_memunit("99999999999 TB")
            .unwrap_err()
            .contains("overflow"));
    }

    #[test]
    fn intervals_as_c_tor() {
        assert_eq!(parse_interval("30 seconds"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("2 days"), Ok(Duration::from_secs(172_800)));
        assert_eq!(
            parse_interval("1 month"),
            Ok(Duration::from_secs(2_629_728))
        );
        assert_eq!(parse_interval("45"), Ok(Duration::from_secs(45)));
        assert!(parse_interval("3 fortnights").is_err());
        assert!(parse_interval("1000 months")
            .unwrap_err()
            .contains("too large"));
    }
}
