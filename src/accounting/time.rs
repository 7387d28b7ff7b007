//! Civil (calendar) time in UTC, enough for accounting intervals and the state file's
//! `YYYY-MM-DD HH:MM:SS` times. Days are counted from 1970-01-01 (proleptic Gregorian).

/// Days since 1970-01-01 of a civil date; `month` may be any integer (it is normalised
/// into the year, as C's `mktime` normalises `tm_mon`), `day` 1..=31.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Normalise the month first: month 0 is December of the previous year.
    let y0 = year + (month - 1).div_euclid(12);
    let m = (month - 1).rem_euclid(12) + 1;
    // Howard Hinnant's algorithm: years start in March so the leap day is last.
    let y = if m <= 2 { y0 - 1 } else { y0 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1..=12, day 1..=31) of a day number.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// Day number since 1970-01-01.
    pub days: i64,
    /// 0 = Sunday … 6 = Saturday (`struct tm`'s `tm_wday`).
    pub weekday: i64,
}

impl Civil {
    pub fn from_unix(t: u64) -> Civil {
        let t = t as i64;
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
            days,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7),
        }
    }
}

/// The clock accounting intervals are reckoned in. C tor uses the machine's local time
/// (`tor_localtime_r`, `mktime`); tests use UTC so that they do not depend on the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Zone {
    Utc,
    /// The process's time zone (`TZ`, `/etc/localtime`), daylight saving time included.
    #[default]
    Local,
}

impl Zone {
    /// The broken-down time of `t` in this zone (`days` and `weekday` are of the local date).
    pub fn civil(self, t: u64) -> Civil {
        match self {
            Zone::Utc => Civil::from_unix(t),
            Zone::Local => local_civil(t).unwrap_or_else(|| Civil::from_unix(t)),
        }
    }

    /// Unix seconds of local day number `days` (as in [`Civil::days`]) at `hour:minute`,
    /// like C's `mktime` with `tm_isdst = -1` (a time skipped by a DST change moves on).
    pub fn unix(self, days: i64, hour: i64, minute: i64) -> u64 {
        match self {
            Zone::Utc => unix_of(days, hour, minute, 0),
            Zone::Local => {
                local_mktime(days, hour, minute).unwrap_or_else(|| unix_of(days, hour, minute, 0))
            }
        }
    }
}

// localtime_r(3): std has no safe local-time conversion (the module root denies unsafe).
#[allow(unsafe_code)]
fn local_civil(t: u64) -> Option<Civil> {
    let tt = libc::time_t::try_from(t).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the
    // call and localtime_r is the thread-safe variant.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&tt, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let (year, month, day) = (
        i64::from(tm.tm_year) + 1900,
        i64::from(tm.tm_mon) + 1,
        i64::from(tm.tm_mday),
    );
    let days = days_from_civil(year, month, day);
    Some(Civil {
        year,
        month,
        day,
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        days,
        weekday: i64::from(tm.tm_wday),
    })
}

// mktime(3): as for `local_civil`.
#[allow(unsafe_code)]
fn local_mktime(days: i64, hour: i64, minute: i64) -> Option<u64> {
    let (y, m, d) = civil_from_days(days);
    // SAFETY: a zeroed `tm` is valid; mktime only reads and normalises the struct we own.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = i32::try_from(y - 1900).ok()?;
        tm.tm_mon = (m - 1) as i32;
        tm.tm_mday = d as i32;
        tm.tm_hour = hour as i32;
        tm.tm_min = minute as i32;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    u64::try_from(t).ok()
}

/// Unix seconds of a day number plus a time of day (clamped at 0 before 1970).
pub fn unix_of(days: i64, hour: i64, minute: i64, second: i64) -> u64 {
    (days * 86_400 + hour * 3600 + minute * 60 + second).max(0) as u64
}

/// `YYYY-MM-DD HH:MM:SS` (C `format_iso_time`, UTC).
pub fn format_iso(t: u64) -> String {
    let c = Civil::from_unix(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses `YYYY-MM-DD HH:MM:SS` (C `parse_iso_time`, UTC); `None` if malformed or out of
/// range.
pub fn parse_iso(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-');
    let mut t = time.trim().split(':');
    let num = |it: &mut std::str::Split<'_, char>, lo: i64, hi: i64| -> Option<i64> {
        let p = it.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 4 {
            return None;
        }
        let v: i64 = p.parse().ok()?;
        (lo..=hi).contains(&v).then_some(v)
    };
    let year = num(&mut d, 1970, 9999)?;
    let month = num(&mut d, 1, 12)?;
    let day = num(&mut d, 1, 31)?;
    let hour = num(&mut t, 0, 23)?;
    let minute = num(&mut t, 0, 59)?;
    // C allows a leap second (60).
    let second = num(&mut t, 0, 60)?;
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // Refuse 31 February and the like.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    Some(unix_of(days, hour, minute, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // Month 13 of 2023 is January 2024; month 0 is December of the year before.
        assert_eq!(days_from_civil(2023, 13, 1), days_from_civil(2024, 1, 1));
        assert_eq!(days_from_civil(2024, 0, 15), days_from_civil(2023, 12, 15));
        for z in (-1000..30_000).step_by(7) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let c = Civil::from_unix(1_709_164_800); // 2024-02-29 00:00:00, a Thursday
        assert_eq!((c.year, c.month, c.day, c.weekday), (2024, 2, 29, 4));
    }

    #[test]
    fn local_zone_round_trips_whatever_the_machine_zone() {
        // Whole minutes a day apart over two years: each maps back to itself, so intervals
        // reckoned in local time start where C's mktime would put them.
        let mut t = 1_700_000_040u64;
        for _ in 0..800 {
            let c = Zone::Local.civil(t);
            assert_eq!(
                Zone::Local.unix(c.days, c.hour, c.minute) + c.second as u64,
                t
            );
            t += 86_400 - 60 * 7;
        }
        let c = Zone::Utc.civil(1_709_164_800);
        assert_eq!(Zone::Utc.unix(c.days, 0, 0), 1_709_164_800);
    }

    #[test]
    fn iso_times() {
        assert_eq!(format_iso(1_709_164_800), "2024-02-29 00:00:00");
        assert_eq!(parse_iso("2024-02-29 00:00:00"), Some(1_709_164_800));
        assert_eq!(parse_iso("2023-02-29 00:00:00"), None);
        assert_eq!(parse_iso("2024-02-29"), None);
        assert_eq!(parse_iso("2024-02-29 24:00:00"), None);
        assert_eq!(parse_iso("2024-2-29 1:2:3x"), None);
        assert_eq!(parse_iso("2024-02-29 01:02:03:04"), None);
        let t = 1_800_000_123;
        assert_eq!(parse_iso(&format_iso(t)), Some(t));
    }
}
