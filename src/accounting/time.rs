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

// The local zone is chrono's `Local`: like C's localtime(3) it follows `TZ` (a zone name, a
// zoneinfo file or a POSIX rule such as `EST5EDT`) and else /etc/localtime.
fn local_civil(t: u64) -> Option<Civil> {
    civil_in(&chrono::Local, t)
}

fn local_mktime(days: i64, hour: i64, minute: i64) -> Option<u64> {
    mktime_in(&chrono::Local, days, hour, minute)
}

/// `localtime_r` in `zone`.
fn civil_in<Z: chrono::TimeZone>(zone: &Z, t: u64) -> Option<Civil> {
    use chrono::{Datelike, Timelike};
    let local = zone.timestamp_opt(i64::try_from(t).ok()?, 0).single()?;
    let (year, month, day) = (
        i64::from(local.year()),
        i64::from(local.month()),
        i64::from(local.day()),
    );
    Some(Civil {
        year,
        month,
        day,
        hour: i64::from(local.hour()),
        minute: i64::from(local.minute()),
        second: i64::from(local.second()),
        days: days_from_civil(year, month, day),
        weekday: i64::from(local.weekday().num_days_from_sunday()),
    })
}

/// `mktime` with `tm_isdst = -1` in `zone`: the fields are normalised as wall-clock time
/// (hour 24 is the next day's midnight); a time that a change to summer time skips is read
/// with the offset in force before the change, so it moves on by the change (02:30 in a
/// gap from 02:00 to 03:00 is 03:30, as glibc gives); of a time that happens twice, the first
/// (glibc's pick there depends on its previous call: after a summer date the first, after a
/// winter one the second).
fn mktime_in<Z: chrono::TimeZone>(zone: &Z, days: i64, hour: i64, minute: i64) -> Option<u64> {
    use chrono::{LocalResult, NaiveDate, Offset, TimeDelta};
    let wall = NaiveDate::from_ymd_opt(1970, 1, 1)?
        .and_hms_opt(0, 0, 0)?
        .checked_add_signed(TimeDelta::try_days(days)?)?
        .checked_add_signed(TimeDelta::try_hours(hour)?)?
        .checked_add_signed(TimeDelta::try_minutes(minute)?)?;
    let t = match zone.from_local_datetime(&wall) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.timestamp(),
        LocalResult::None => {
            // In a gap: the offset a day before is the one the gap left behind.
            let before = wall.checked_sub_signed(TimeDelta::try_days(1)?)?;
            let offset = zone.offset_from_local_datetime(&before).earliest()?;
            wall.and_utc().timestamp() - i64::from(offset.fix().local_minus_utc())
        }
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

    /// A zone one hour east of UTC with summer time (two hours east) in 2024, from 02:00
    /// local on 31 March (clocks jump to 03:00) to 03:00 local on 27 October (back to 02:00).
    #[derive(Clone, Copy, Debug)]
    struct SummerZone;

    impl SummerZone {
        const SUMMER_FROM: i64 = 1_711_846_800; // 2024-03-31 01:00:00 UTC
        const SUMMER_UNTIL: i64 = 1_729_990_800; // 2024-10-27 01:00:00 UTC
        fn at(t: i64) -> chrono::FixedOffset {
            let hours = if (Self::SUMMER_FROM..Self::SUMMER_UNTIL).contains(&t) {
                2
            } else {
                1
            };
            chrono::FixedOffset::east_opt(hours * 3600).unwrap()
        }
    }

    impl chrono::TimeZone for SummerZone {
        type Offset = chrono::FixedOffset;
        fn from_offset(_: &chrono::FixedOffset) -> Self {
            SummerZone
        }
        fn offset_from_local_date(
            &self,
            local: &chrono::NaiveDate,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }
        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            let wall = local.and_utc().timestamp();
            // Each offset that maps some instant to this wall time, earliest instant first.
            let fits: Vec<_> = [2, 1]
                .into_iter()
                .filter(|h| Self::at(wall - h * 3600).local_minus_utc() == (*h as i32) * 3600)
                .map(|h| chrono::FixedOffset::east_opt(h as i32 * 3600).unwrap())
                .collect();
            match fits[..] {
                [one] => chrono::LocalResult::Single(one),
                [first, second] => chrono::LocalResult::Ambiguous(first, second),
                _ => chrono::LocalResult::None,
            }
        }
        fn offset_from_utc_date(&self, utc: &chrono::NaiveDate) -> chrono::FixedOffset {
            Self::at(utc.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp())
        }
        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> chrono::FixedOffset {
            Self::at(utc.and_utc().timestamp())
        }
    }

    #[test]
    fn local_time_follows_summer_time_like_mktime() {
        let z = SummerZone;
        let march31 = days_from_civil(2024, 3, 31);
        let oct27 = days_from_civil(2024, 10, 27);
        // Winter and summer: one and two hours east.
        assert_eq!(mktime_in(&z, march31, 1, 0), Some(1_711_843_200)); // 00:00 UTC
        assert_eq!(mktime_in(&z, march31, 3, 0), Some(1_711_846_800)); // 01:00 UTC
                                                                       // 02:30 does not exist on 31 March: as mktime, it is read with the winter offset and
                                                                       // so is 03:30 summer time.
        let skipped = mktime_in(&z, march31, 2, 30).unwrap();
        assert_eq!(skipped, 1_711_848_600); // 01:30 UTC
        let c = civil_in(&z, skipped).unwrap();
        assert_eq!((c.days, c.hour, c.minute), (march31, 3, 30));
        // 02:30 happens twice on 27 October: the first, still in summer time.
        assert_eq!(mktime_in(&z, oct27, 2, 30), Some(1_729_989_000)); // 00:30 UTC
        let c = civil_in(&z, 1_729_992_600).unwrap(); // 01:30 UTC: the second 02:30
        assert_eq!((c.days, c.hour, c.minute), (oct27, 2, 30));
        // Out-of-range fields are normalised as wall-clock time, as mktime does.
        assert_eq!(
            mktime_in(&z, march31 - 1, 24, 0),
            mktime_in(&z, march31, 0, 0)
        );
        assert_eq!(
            mktime_in(&z, march31, 0, 150),
            mktime_in(&z, march31, 2, 30)
        );
        // Every whole minute outside the two changes maps back to itself, and the local date
        // and weekday are the zone's, not UTC's (23:30 UTC on 30 June is 1 July locally).
        let c = civil_in(&z, 1_719_790_200).unwrap();
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.weekday),
            (2024, 7, 1, 1, 1)
        );
        let mut t = 1_704_067_200u64; // 2024-01-01 00:00:00 UTC
        for _ in 0..800 {
            let c = civil_in(&z, t).unwrap();
            let fold = (1_729_990_800..1_729_994_400).contains(&t); // the second 02:00-03:00
            let back = mktime_in(&z, c.days, c.hour, c.minute).unwrap() + c.second as u64;
            if !fold {
                assert_eq!(back, t, "{c:?}");
            }
            t += 43_200 - 60 * 7;
        }
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
