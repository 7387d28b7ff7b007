use rand::rngs::StdRng;
use rand::SeedableRng;

use super::time::{format_iso, parse_iso, Zone};
use super::*;

fn t(s: &str) -> u64 {
    parse_iso(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn start(s: &str) -> AccountingStart {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn interval(spec: &str, now: &str) -> (String, String) {
    let st = start(spec);
    let s = st.start_of_interval_containing(Zone::Utc, t(now));
    (
        format_iso(s),
        format_iso(st.start_of_interval_after(Zone::Utc, s)),
    )
}

fn seeded(tag: &str) -> RngWakeup<StdRng> {
    let seed: u64 = rand::random();
    println!("{tag}: wake-up RNG seed {seed}");
    RngWakeup(StdRng::seed_from_u64(seed))
}

fn cfg(max: u64, rule: AccountingRule, spec: &str) -> AccountingConfig {
    AccountingConfig {
        max,
        rule,
        start: start(spec),
        bandwidth_rate: 1 << 30,
        zone: Zone::Utc,
    }
}

#[test]
fn accounting_start_parses_as_c() {
    assert_eq!(
        start("month 3 12:30"),
        AccountingStart {
            unit: IntervalUnit::Month,
            day: 3,
            hour: 12,
            minute: 30
        }
    );
    assert_eq!(start("WEEK 7 0:05").to_string(), "week 7 00:05");
    assert_eq!(start("day 23:59").to_string(), "day 23:59");
    assert_eq!(AccountingStart::default().to_string(), "month 1 00:00");
    for (bad, why) in [
        ("month", "Too few arguments"),
        ("year 1 00:00", "Unrecognized accounting unit 'year'"),
        ("month 29 00:00", "between 1 and 28"),
        ("month 0 00:00", "between 1 and 28"),
        ("week 8 00:00", "1 (Monday) and 7 (Sunday)"),
        ("day 1 00:00", "requires 1 argument."),
        ("month 1", "requires 2 arguments."),
        ("day 24:00", "bad hour"),
        ("day 12", "not in HH:MM format"),
        ("day 12:60", "bad minute"),
        ("day 12:30pm", "not in HH:MM format"),
    ] {
        let e = bad.parse::<AccountingStart>().unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert_eq!("sum".parse(), Ok(AccountingRule::Sum));
    assert!("SUM".parse::<AccountingRule>().is_err());
}

#[test]
fn monthly_intervals_across_month_and_year_ends() {
    let iv = |s, n| interval(s, n);
    assert_eq!(
        iv("month 1 00:00", "2024-02-29 12:00:00"),
        ("2024-02-01 00:00:00".into(), "2024-03-01 00:00:00".into())
    );
    // Before the 15th 10:30: the interval began last month (last year, here).
    assert_eq!(
        iv("month 15 10:30", "2024-01-15 10:29:59"),
        ("2023-12-15 10:30:00".into(), "2024-01-15 10:30:00".into())
    );
    assert_eq!(
        iv("month 15 10:30", "2024-01-15 10:30:00"),
        ("2024-01-15 10:30:00".into(), "2024-02-15 10:30:00".into())
    );
    assert_eq!(
        iv("month 15 10:30", "2023-12-31 23:59:59"),
        ("2023-12-15 10:30:00".into(), "2024-01-15 10:30:00".into())
    );
    // Leap year: 29 February lies in the interval from the 28th.
    assert_eq!(
        iv("month 28 00:00", "2024-02-29 00:00:00"),
        ("2024-02-28 00:00:00".into(), "2024-03-28 00:00:00".into())
    );
    assert_eq!(
        iv("month 28 00:00", "2023-03-01 00:00:00"),
        ("2023-02-28 00:00:00".into(), "2023-03-28 00:00:00".into())
    );
    // The length follows the calendar: February 2024 has 29 days, 2023 has 28.
    let len = |y| {
        let st = start("month 1 00:00");
        let s = st.start_of_interval_containing(Zone::Utc, t(&format!("{y}-02-10 00:00:00")));
        (st.start_of_interval_after(Zone::Utc, s) - s) / 86_400
    };
    assert_eq!(
        (len(2024), len(2023), len(2000), len(1900 + 200)),
        (29, 28, 29, 28)
    );
}

#[test]
fn weekly_and_daily_intervals() {
    // 2024-02-29 is a Thursday; weeks from Monday 00:00.
    assert_eq!(
        interval("week 1 00:00", "2024-02-29 12:00:00"),
        ("2024-02-26 00:00:00".into(), "2024-03-04 00:00:00".into())
    );
    // Sunday (7) 06:00, asked on a Sunday before 06:00: the week before.
    assert_eq!(
        interval("week 7 06:00", "2024-03-03 05:59:00"),
        ("2024-02-25 06:00:00".into(), "2024-03-03 06:00:00".into())
    );
    assert_eq!(
        interval("week 7 06:00", "2024-03-03 06:00:00"),
        ("2024-03-03 06:00:00".into(), "2024-03-10 06:00:00".into())
    );
    // Across a year end.
    assert_eq!(
        interval("week 3 12:00", "2025-01-01 11:00:00"),
        ("2024-12-25 12:00:00".into(), "2025-01-01 12:00:00".into())
    );
    assert_eq!(
        interval("day 04:00", "2024-03-01 03:59:59"),
        ("2024-02-29 04:00:00".into(), "2024-03-01 04:00:00".into())
    );
    assert_eq!(
        interval("day 00:00", "2023-12-31 23:59:59"),
        ("2023-12-31 00:00:00".into(), "2024-01-01 00:00:00".into())
    );
}

#[test]
fn each_rule_counts_its_bytes() {
    let now = t("2024-05-05 10:00:00");
    let mut w = seeded("rules");
    for (rule, bytes, left) in [
        (AccountingRule::Max, 700, (300, 600)),
        (AccountingRule::Sum, 1100, (0, 0)),
        (AccountingRule::In, 700, (300, 1000)),
        (AccountingRule::Out, 400, (1000, 600)),
    ] {
        let mut a = Accounting::new(cfg(1000, rule, "day 00:00"), None, now, &mut w);
        a.add_bytes(700, 400, 1);
        assert_eq!(a.bytes(), bytes, "{rule:?}");
        assert_eq!(a.bytes_left(), left, "{rule:?}");
        assert_eq!(a.read_written(), (700, 400));
    }
}

#[test]
fn soft_limit_as_c_computes_it() {
    let now = t("2024-05-05 10:00:00");
    let mut w = seeded("soft");
    let a = Accounting::new(
        cfg(1000, AccountingRule::Max, "day 00:00"),
        None,
        now,
        &mut w,
    );
    assert_eq!(a.soft_limit(), 950);
    // Large quotas: 500 MB left is reached before 95%.
    let g = 10u64 << 30;
    let a = Accounting::new(cfg(g, AccountingRule::Max, "day 00:00"), None, now, &mut w);
    assert_eq!(a.soft_limit(), g - (500 << 20));
    // All must hold: with an estimate of 1 MB a minute, also less than three hours (180 MB)
    // of expected use left.
    let mut stored = StoredAccounting {
        interval_start: t("2024-05-05 00:00:00"),
        expected_usage: 1 << 20,
        ..Default::default()
    };
    let c = cfg(g, AccountingRule::Max, "day 00:00");
    let a = Accounting::new(c, Some(stored), now, &mut w);
    assert_eq!(a.soft_limit(), g - 180 * (1 << 20));
    // 10 MB a minute (1800 MB in three hours): the 500 MB rule is the later one.
    stored.expected_usage = 10 << 20;
    let a = Accounting::new(c, Some(stored), now, &mut w);
    assert_eq!(a.soft_limit(), g - (500 << 20));
}

#[test]
fn soft_then_hard_then_wake_at_next_interval() {
    let now = t("2024-05-05 10:00:00");
    let mut w = seeded("soft-hard");
    let mut a = Accounting::new(
        cfg(1000, AccountingRule::Sum, "day 00:00"),
        None,
        now,
        &mut w,
    );
    assert_eq!(a.hibernation(), Hibernation::Initial);
    assert_eq!(a.interval_wakeup(), t("2024-05-05 00:00:00"));
    let o = a.tick(now, &mut w);
    assert_eq!(o.changed_from, Some(Hibernation::Initial));
    assert!(o.save, "first tick records usage");
    assert_eq!(a.hibernation(), Hibernation::Awake);

    a.add_bytes(500, 449, 1);
    assert_eq!(a.tick(now + 1, &mut w).changed_from, None);
    a.add_bytes(1, 0, 1);
    let o = a.tick(now + 2, &mut w);
    assert_eq!(o.changed_from, Some(Hibernation::Awake));
    assert!(o.save);
    assert_eq!(a.hibernation(), Hibernation::Soft);
    assert!(a.hibernation().refuses_new_work());
    assert_eq!(a.hibernate_end(), t("2024-05-06 00:00:00"));
    let st = a.stored();
    assert_eq!(st.soft_limit_hit_at, now + 2);
    assert_eq!(st.bytes_at_soft_limit, 950);
    assert_eq!(st.seconds_to_soft_limit, 2);
    assert_eq!(st.bytes_read, 1024, "rounded up as C rounds");

    // Old circuits keep using bytes until the hard limit.
    a.add_bytes(0, 49, 1);
    assert_eq!(a.tick(now + 3, &mut w).changed_from, None);
    a.add_bytes(0, 1, 1);
    let o = a.tick(now + 4, &mut w);
    assert_eq!(o.changed_from, Some(Hibernation::Soft));
    assert_eq!(a.hibernation(), Hibernation::Hard);
    assert_eq!(a.hibernate_end(), t("2024-05-06 00:00:00"));
    assert_eq!(a.bytes_left(), (0, 0));

    // Dormant until the interval ends...
    assert_eq!(a.tick(t("2024-05-05 23:59:59"), &mut w).changed_from, None);
    // ...then a new interval; 950 bytes in ten hours round to 0 bytes a minute, so no
    // estimate: we wake at its start.
    let o = a.tick(t("2024-05-06 00:00:00"), &mut w);
    assert!(o.new_interval && o.save);
    assert_eq!(o.changed_from, Some(Hibernation::Hard));
    assert_eq!(a.hibernation(), Hibernation::Awake);
    assert_eq!(a.read_written(), (0, 0));
    assert_eq!(a.interval_start(), t("2024-05-06 00:00:00"));
    assert_eq!(a.interval_end(), t("2024-05-07 00:00:00"));
    assert_eq!(a.stored().soft_limit_hit_at, 0);
}

#[test]
fn wakeup_is_random_within_the_interval_and_dormant_until_then() {
    // Last interval: 60 MB in an hour of activity = 1 MB a minute. A 100 MB quota lasts
    // 100 minutes, so in a day we may wake anywhere in the first 1340 minutes.
    let prev = StoredAccounting {
        interval_start: t("2024-05-04 00:00:00"),
        bytes_read: 60 << 20,
        bytes_written: 1 << 20,
        seconds_active: 3600,
        ..Default::default()
    };
    let now = t("2024-05-05 00:00:10");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let mut w = seeded(&format!("wakeup #{i}"));
        let mut a = Accounting::new(
            cfg(100 << 20, AccountingRule::Max, "day 00:00"),
            Some(prev),
            now,
            &mut w,
        );
        assert_eq!(a.expected_usage(), 1 << 20);
        assert_eq!(a.read_written(), (0, 0), "a new interval");
        let start = t("2024-05-05 00:00:00");
        let wake = a.interval_wakeup();
        assert!(
            wake >= start && wake < start + 1340 * 60,
            "{}",
            format_iso(wake)
        );
        seen.insert(wake);
        a.tick(now, &mut w);
        if now < wake {
            assert_eq!(a.hibernation(), Hibernation::Hard);
            assert_eq!(a.hibernate_end(), wake);
            assert_eq!(a.tick(wake - 1, &mut w).changed_from, None);
            let o = a.tick(wake, &mut w);
            assert_eq!(o.changed_from, Some(Hibernation::Hard));
        }
        assert_eq!(a.hibernation(), Hibernation::Awake);
    }
    assert!(seen.len() > 10, "wake-up times are spread");

    // C's source: the same interval and identity give the same time.
    let mk = |id| {
        Accounting::new(
            cfg(100 << 20, AccountingRule::Max, "day 00:00"),
            Some(prev),
            now,
            &mut IdentityWakeup(id),
        )
        .interval_wakeup()
    };
    assert_eq!(mk([1; 20]), mk([1; 20]));
    assert_ne!(mk([1; 20]), mk([2; 20]));
}

#[test]
fn restart_continues_the_stored_interval() {
    let mut w = seeded("restart");
    let c = cfg(1 << 30, AccountingRule::Max, "month 1 00:00");
    let now = t("2024-03-10 12:00:00");
    let mut a = Accounting::new(c, None, now, &mut w);
    a.add_bytes(5000, 7000, 3);
    let st = a.stored();
    let mut b = Accounting::new(c, Some(st), now + 3600, &mut w);
    assert_eq!(b.read_written(), (5120, 7168));
    assert_eq!(b.interval_start(), t("2024-03-01 00:00:00"));
    assert_eq!(b.interval_end(), t("2024-04-01 00:00:00"));
    b.tick(now + 3600, &mut w);
    assert_eq!(b.hibernation(), Hibernation::Awake);

    // State from an interval long past: a fresh interval.
    let old = StoredAccounting {
        interval_start: t("2023-11-01 00:00:00"),
        bytes_read: 99,
        ..Default::default()
    };
    let b = Accounting::new(c, Some(old), now, &mut w);
    assert_eq!(b.read_written(), (0, 0));
    assert_eq!(b.interval_start(), t("2024-03-01 00:00:00"));

    // A start moved by less than half an interval keeps the counts (C errs on the side of
    // the limit) and ends at the new boundary.
    let mut b = Accounting::new(c, Some(st), now, &mut w);
    b.reconfigure(
        cfg(1 << 30, AccountingRule::Max, "month 3 00:00"),
        now,
        &mut w,
    );
    assert_eq!(b.read_written(), (5120, 7168));
    assert_eq!(b.interval_start(), t("2024-03-01 00:00:00"));
    assert_eq!(b.interval_end(), t("2024-04-03 00:00:00"));
    // A different unit altogether (delta > 0.5 of a day): a fresh interval.
    b.reconfigure(cfg(1 << 30, AccountingRule::Max, "day 00:00"), now, &mut w);
    assert_eq!(b.read_written(), (0, 0));
    assert_eq!(b.interval_start(), t("2024-03-10 00:00:00"));
}

#[test]
fn usage_is_recorded_every_ten_minutes_or_twenty_megabytes() {
    let mut w = seeded("record");
    let now = t("2024-03-10 12:00:00");
    let mut a = Accounting::new(
        cfg(1 << 40, AccountingRule::Max, "month 1 00:00"),
        None,
        now,
        &mut w,
    );
    assert!(a.tick(now, &mut w).save);
    assert!(!a.tick(now + 1, &mut w).save);
    a.add_bytes(20 << 20, 0, 1);
    assert!(a.tick(now + 2, &mut w).save);
    assert!(!a.tick(now + 601, &mut w).save);
    assert!(a.tick(now + 602, &mut w).save);
}

#[test]
fn expected_usage_is_capped_by_the_bandwidth_rate() {
    let mut w = seeded("cap");
    let prev = StoredAccounting {
        interval_start: t("2024-05-04 00:00:00"),
        bytes_read: 600 << 20,
        seconds_active: 3600,
        ..Default::default()
    };
    let mut c = cfg(1 << 40, AccountingRule::Max, "day 00:00");
    c.bandwidth_rate = 1000;
    let a = Accounting::new(c, Some(prev), t("2024-05-05 01:00:00"), &mut w);
    assert_eq!(a.expected_usage(), 60_000);
    c.rule = AccountingRule::Sum;
    let a = Accounting::new(c, Some(prev), t("2024-05-05 01:00:00"), &mut w);
    assert_eq!(a.expected_usage(), 120_000);
}
