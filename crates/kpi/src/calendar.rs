//! Working days: dates as days since the Unix epoch (as Avro's `date`), a weekly weekend,
//! public holidays and compensatory working days from a TOML file.
//!
//! Everything here is a plain function of its inputs, unit-tested below.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::KpiError;

/// A calendar day: days since 1970-01-01 (Avro's `date` logical type).
pub type Day = i32;

/// The calendar shipped as the default: Viet Nam's 2026 public holidays.
pub const VIETNAM_2026: &str = include_str!("../calendars/vn-2026.toml");

/// Working-day adjustments beyond this many days are refused as absurd (about 40 years); it
/// bounds the work a malformed timestamp can cause.
const MAX_WORKING_DAYS: i32 = 10_000;

/// Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> Day {
    // The contract's arithmetic (the dates of events); a year of an `i32` day fits an `i32`.
    lienthong_contract::json::days_from_civil(i64::from(year), i64::from(month), i64::from(day))
        as Day
}

/// The date of a day since the epoch, as (year, month, day).
pub fn civil_from_days(z: Day) -> (i32, u32, u32) {
    let (y, m, d) = lienthong_contract::json::civil_from_days(i64::from(z));
    (y as i32, m, d)
}

/// `YYYY-MM-DD` to a day.
pub fn parse_date(text: &str) -> Result<Day, String> {
    let bad = || format!("{text:?} is not a date YYYY-MM-DD");
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || d == 0 {
        return Err(bad());
    }
    let day = days_from_civil(y, m, d);
    if civil_from_days(day) != (y, m, d) {
        return Err(bad());
    }
    Ok(day)
}

/// A day as `YYYY-MM-DD`.
pub fn format_date(day: Day) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day of the week, Monday = 0 … Sunday = 6 (1970-01-01 was a Thursday).
pub fn weekday(day: Day) -> usize {
    (day + 3).rem_euclid(7) as usize
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    name: String,
    utc_offset_minutes: i32,
    weekend: Vec<String>,
    #[serde(default)]
    working_days: Vec<String>,
    #[serde(default)]
    holidays: Vec<HolidayEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayEntry {
    date: String,
    #[allow(dead_code)]
    name: String,
}

/// Which days are working days, and the local time zone the day of an event is taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    name: String,
    utc_offset_minutes: i32,
    weekend: [bool; 7],
    holidays: BTreeSet<Day>,
    working_days: BTreeSet<Day>,
}

impl Calendar {
    /// The default: Viet Nam's 2026 public holidays, weekend Saturday and Sunday, UTC+7.
    pub fn vietnam_2026() -> Calendar {
        // The file is part of the crate and tested; parsing it cannot fail at run time.
        Calendar::from_toml(VIETNAM_2026, "built-in vn-2026.toml").unwrap_or_else(|_| Calendar {
            name: "weekends only (built-in calendar unreadable)".into(),
            utc_offset_minutes: 420,
            weekend: [false, false, false, false, false, true, true],
            holidays: BTreeSet::new(),
            working_days: BTreeSet::new(),
        })
    }

    /// Parse a calendar file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Calendar, KpiError> {
        let bad = |message: String| KpiError::Config(format!("calendar {origin}: {message}"));
        let file: CalendarFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !(-14 * 60..=14 * 60).contains(&file.utc_offset_minutes) {
            return Err(bad(format!(
                "utc_offset_minutes {} is not a time zone",
                file.utc_offset_minutes
            )));
        }
        let mut weekend = [false; 7];
        for name in &file.weekend {
            let i = WEEKDAYS
                .iter()
                .position(|w| w.eq_ignore_ascii_case(name))
                .ok_or_else(|| bad(format!("weekend day {name:?} is not a weekday name")))?;
            weekend[i] = true;
        }
        if weekend.iter().all(|w| *w) {
            return Err(bad("every day of the week is a weekend day".into()));
        }
        let holidays = file
            .holidays
            .iter()
            .map(|h| parse_date(&h.date))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(bad)?;
        let working_days = file
            .working_days
            .iter()
            .map(|d| parse_date(d))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(bad)?;
        if let Some(both) = holidays.intersection(&working_days).next() {
            return Err(bad(format!(
                "{} is both a holiday and a working day",
                format_date(*both)
            )));
        }
        Ok(Calendar {
            name: file.name,
            utc_offset_minutes: file.utc_offset_minutes,
            weekend,
            holidays,
            working_days,
        })
    }

    /// The calendar's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Minutes east of UTC of the calendar's local time.
    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    /// The local day of an instant in milliseconds since the epoch.
    pub fn local_day(&self, millis: i64) -> Day {
        let secs = millis.div_euclid(1000) + i64::from(self.utc_offset_minutes) * 60;
        let day = secs.div_euclid(86_400);
        day.clamp(i64::from(Day::MIN), i64::from(Day::MAX)) as Day
    }

    /// Whether `day` is a working day.
    pub fn is_working_day(&self, day: Day) -> bool {
        if self.working_days.contains(&day) {
            return true;
        }
        !self.weekend[weekday(day)] && !self.holidays.contains(&day)
    }

    /// How many working days `d` there are with `from <= d < to` (0 when `to <= from`).
    pub fn working_days_between(&self, from: Day, to: Day) -> i32 {
        if to <= from {
            return 0;
        }
        let (from64, to64) = (i64::from(from), i64::from(to));
        let span = to64 - from64;
        let working_per_week = self.weekend.iter().filter(|w| !**w).count() as i64;
        let mut count = span / 7 * working_per_week;
        let rest_start = from64 + span / 7 * 7;
        for d in rest_start..to64 {
            if !self.weekend[weekday(d as Day)] {
                count += 1;
            }
        }
        // Holidays on a weekday take a day off; compensatory days on a weekend add one.
        count -= self
            .holidays
            .range(from..to)
            .filter(|d| !self.weekend[weekday(**d)])
            .count() as i64;
        count += self
            .working_days
            .range(from..to)
            .filter(|d| self.weekend[weekday(**d)])
            .count() as i64;
        count.clamp(0, i64::from(i32::MAX)) as i32
    }

    /// The `n`-th working day after `day` (`day` itself when `n <= 0`). `n` is capped at about
    /// forty years of working days.
    pub fn add_working_days(&self, day: Day, n: i32) -> Day {
        let mut left = n.min(MAX_WORKING_DAYS);
        let mut d = day;
        while left > 0 {
            d = d.saturating_add(1);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        parse_date(s).unwrap()
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(day("2025-11-02"), 20_394);
        assert_eq!(day("2026-11-02"), 20_759);
        for d in [-800_000, -1, 0, 59, 60, 11_016, 20_394, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(format_date(day("2024-02-29")), "2024-02-29");
        assert!(parse_date("2026-02-29").is_err());
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("26-01-01").is_err());
        assert!(parse_date("2026-01-01-01").is_err());
        assert!(parse_date("").is_err());
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday(0), 3); // Thursday
        assert_eq!(weekday(day("2026-11-28")), 5); // Saturday
        assert_eq!(weekday(day("2026-02-17")), 1); // Tuesday, Tết
    }

    #[test]
    fn the_default_calendar_is_vietnam_2026() {
        let c = Calendar::vietnam_2026();
        assert!(c.name().contains("2026"), "{}", c.name());
        assert!(!c.is_working_day(day("2026-01-01")));
        for d in 16..=20 {
            assert!(!c.is_working_day(day(&format!("2026-02-{d}"))));
        }
        assert!(c.is_working_day(day("2026-02-23")));
        assert!(!c.is_working_day(day("2026-04-30")));
        assert!(!c.is_working_day(day("2026-05-01")));
        assert!(!c.is_working_day(day("2026-09-02")));
        assert!(!c.is_working_day(day("2026-11-28"))); // Saturday
        assert!(c.is_working_day(day("2026-11-27"))); // Friday
        assert_eq!(c.holidays.len(), 11);
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let c = Calendar::vietnam_2026();
        // Friday 13 Feb + 1 working day: the whole Tết week is off, so Monday 23 Feb.
        assert_eq!(c.add_working_days(day("2026-02-13"), 1), day("2026-02-23"));
        // Thursday 29 Apr + 1: 30 Apr, 1 May holidays, 2–3 May weekend → Monday 4 May.
        assert_eq!(c.add_working_days(day("2026-04-29"), 1), day("2026-05-04"));
        assert_eq!(c.add_working_days(day("2026-11-23"), 5), day("2026-11-30"));
        assert_eq!(c.add_working_days(day("2026-11-23"), 0), day("2026-11-23"));
        assert_eq!(c.add_working_days(day("2026-11-23"), -3), day("2026-11-23"));
        // [Mon 23 Nov, Mon 30 Nov): five working days.
        assert_eq!(
            c.working_days_between(day("2026-11-23"), day("2026-11-30")),
            5
        );
        // Across Tết: 9 Feb … 27 Feb is 15 weekdays, 5 of them Tết.
        assert_eq!(
            c.working_days_between(day("2026-02-09"), day("2026-02-28")),
            10
        );
        assert_eq!(
            c.working_days_between(day("2026-02-09"), day("2026-02-09")),
            0
        );
        assert_eq!(
            c.working_days_between(day("2026-02-10"), day("2026-02-09")),
            0
        );
    }

    #[test]
    fn counting_and_adding_agree() {
        let c = Calendar::vietnam_2026();
        let start = day("2025-12-20");
        for n in 0..300 {
            let end = c.add_working_days(start, n);
            assert_eq!(c.working_days_between(start + 1, end + 1), n, "n = {n}");
        }
        // A long, absurd span is counted without walking it day by day.
        assert!(c.working_days_between(-2_000_000, 2_000_000) > 2_000_000);
    }

    #[test]
    fn custom_calendars_and_their_errors() {
        let text = r#"
            name = "test"
            utc_offset_minutes = 0
            weekend = ["Friday", "saturday"]
            working_days = ["2026-11-28"]
            [[holidays]]
            date = "2026-11-26"
            name = "x"
        "#;
        let c = Calendar::from_toml(text, "t").unwrap();
        assert!(c.is_working_day(day("2026-11-29"))); // Sunday works here
        assert!(!c.is_working_day(day("2026-11-27"))); // Friday
        assert!(c.is_working_day(day("2026-11-28"))); // compensatory Saturday
        assert!(!c.is_working_day(day("2026-11-26"))); // holiday
        assert_eq!(
            c.working_days_between(day("2026-11-23"), day("2026-11-30")),
            5
        );
        for (bad, needle) in [
            (text.replace("Friday", "Fryday"), "weekday name"),
            (text.replace("2026-11-26", "2026-11-31"), "not a date"),
            (text.replace("= 0", "= 9999"), "time zone"),
            (text.replace("2026-11-26", "2026-11-28"), "both"),
            (format!("{text}\nextra = 1"), "unknown field"),
            ("name = 3".to_string(), "invalid type"),
        ] {
            let err = Calendar::from_toml(&bad, "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn local_days_use_the_offset() {
        let c = Calendar::vietnam_2026();
        // 2026-11-27T17:30:00Z is already 28 Nov in Ho Chi Minh City.
        let millis = i64::from(day("2026-11-27")) * 86_400_000 + 17 * 3_600_000 + 1_800_000;
        assert_eq!(c.local_day(millis), day("2026-11-28"));
        assert_eq!(c.local_day(millis - 3_600_000), day("2026-11-27"));
        assert_eq!(c.local_day(i64::MIN), Day::MIN);
    }
}
