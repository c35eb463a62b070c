//! Cron schedules in UTC, and which fire times are due.
//!
//! # Syntax
//! Five fields, `minute hour day-of-month month day-of-week`, or six with a leading
//! `second` field (`*/2 * * * * *` fires every two seconds; meant for tests, a
//! pipeline schedule rarely needs it). Each field is a comma-separated list of `*`,
//! `n`, `a-b`, `*/step`, `a-b/step` or `a/step` (from `a` to the field's end).
//! Months may be written `JAN`–`DEC`, days of week `SUN`–`SAT` (any case); day of
//! week `0` and `7` are both Sunday. `?` is accepted for `*` in the two day fields.
//! Macros: `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//! `@hourly`. Quartz extensions (`L`, `W`, `#`) and `@reboot` are refused.
//!
//! Day of month and day of week combine as in crontab(5): when both are restricted
//! (neither starts with `*` or `?`) a day matches if *either* matches; otherwise
//! only the restricted one counts.
//!
//! # Why not a crate
//! The maintained crates (`cron`, `croner`) are built on `chrono`, which the manager
//! does not otherwise use, and their seconds-field and day-matching rules differ in
//! details we want to pin down. Five fields in UTC over epoch milliseconds are a
//! small amount of code, tested here against a brute-force matcher.

use std::str::FromStr;

/// How far [`Schedule::next_after`] and [`Schedule::prev_at_or_before`] look. The
/// sparsest schedule that parses is `0 0 29 2 *`, eight years apart around 2100.
const SEARCH_YEARS: i64 = 30;

const MONTH_NAMES: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's name, bounds and symbolic names (the first name stands for `min`).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field { name: "second", min: 0, max: 59, names: &[] };
const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[] };
const DAY: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field { name: "month", min: 1, max: 12, names: &MONTH_NAMES };
// 7 is accepted as Sunday and folded onto 0 after parsing.
const WEEKDAY: Field = Field { name: "day-of-week", min: 0, max: 7, names: &WEEKDAY_NAMES };

/// Why a cron expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Nothing but whitespace.
    #[error("cron expression is empty")]
    Empty,
    /// Not 5 or 6 fields.
    #[error(
        "cron expression `{expr}` has {count} fields; expected 5 (minute hour day-of-month month day-of-week) \
         or 6 (a leading second field)"
    )]
    FieldCount {
        /// The expression.
        expr: String,
        /// How many fields it has.
        count: usize,
    },
    /// An `@` macro that does not exist.
    #[error(
        "cron expression `{expr}`: unknown macro (known: @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight, @hourly)"
    )]
    UnknownMacro {
        /// The expression.
        expr: String,
    },
    /// One field is wrong.
    #[error("cron expression `{expr}`: {field} field `{text}`: {reason}")]
    Field {
        /// The expression.
        expr: String,
        /// Which field (`minute`, `day-of-week`…).
        field: &'static str,
        /// The field as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Every field is valid but no date has the named day (`0 0 31 4 *`).
    #[error("cron expression `{expr}` never fires: none of its months has any of its days of month")]
    NeverFires {
        /// The expression.
        expr: String,
    },
}

/// A parsed cron schedule, evaluated in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1–31.
    days: u64,
    /// Bits 1–12.
    months: u64,
    /// Bits 0–6, 0 = Sunday.
    weekdays: u64,
    /// Day of month starts with `*` or `?`.
    days_unrestricted: bool,
    /// Day of week starts with `*` or `?`.
    weekdays_unrestricted: bool,
}

impl Schedule {
    /// Parses a 5- or 6-field expression or a macro (see the module documentation).
    pub fn parse(expr: &str) -> Result<Schedule, CronError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        let expanded = if trimmed.starts_with('@') {
            match trimmed.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(CronError::UnknownMacro { expr: trimmed.to_owned() }),
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            count => return Err(CronError::FieldCount { expr: trimmed.to_owned(), count }),
        };
        let field = |spec: &Field, text: &str| {
            parse_field(spec, text).map_err(|reason| CronError::Field {
                expr: trimmed.to_owned(),
                field: spec.name,
                text: text.to_owned(),
                reason,
            })
        };
        let mut weekdays = field(&WEEKDAY, rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let unrestricted = |text: &str| text.starts_with('*') || text.starts_with('?');
        let schedule = Schedule {
            expr: trimmed.to_owned(),
            seconds: field(&SECOND, second)?,
            minutes: field(&MINUTE, rest[0])?,
            hours: field(&HOUR, rest[1])?,
            days: field(&DAY, rest[2])?,
            months: field(&MONTH, rest[3])?,
            weekdays,
            days_unrestricted: unrestricted(rest[2]),
            weekdays_unrestricted: unrestricted(rest[4]),
        };
        if !schedule.has_a_day() {
            return Err(CronError::NeverFires { expr: trimmed.to_owned() });
        }
        Ok(schedule)
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after_ms` (Unix epoch milliseconds, UTC),
    /// or `None` if there is none within 30 years or it is not representable.
    /// Fire times are whole seconds.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut t = Civil::at(after_ms.div_euclid(1000).checked_add(1)?);
        let last_year = t.year + SEARCH_YEARS;
        loop {
            if t.year > last_year {
                return None;
            }
            match next_bit(self.months, t.month) {
                Some(m) if m == t.month => {}
                Some(m) => {
                    t = Civil { month: m, ..t.start_of_month() };
                    continue;
                }
                None => {
                    t = Civil { year: t.year + 1, month: 1, ..t.start_of_month() };
                    continue;
                }
            }
            if !self.day_matches(&t) {
                t = t.next_day();
                continue;
            }
            let Some(h) = next_bit(self.hours, t.hour) else {
                t = t.next_day();
                continue;
            };
            if h != t.hour {
                t = Civil { hour: h, minute: 0, second: 0, ..t };
            }
            let Some(m) = next_bit(self.minutes, t.minute) else {
                t = t.next_hour();
                continue;
            };
            if m != t.minute {
                t = Civil { minute: m, second: 0, ..t };
            }
            let Some(s) = next_bit(self.seconds, t.second) else {
                t = t.next_minute();
                continue;
            };
            return Civil { second: s, ..t }.epoch_seconds().checked_mul(1000);
        }
    }

    /// The last fire time at or before `at_ms`, or `None` if there is none within
    /// 30 years or it is not representable.
    pub fn prev_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let mut t = Civil::at(at_ms.div_euclid(1000));
        let first_year = t.year - SEARCH_YEARS;
        loop {
            if t.year < first_year {
                return None;
            }
            match prev_bit(self.months, t.month) {
                Some(m) if m == t.month => {}
                Some(m) => {
                    t = Civil { month: m, ..t }.end_of_month();
                    continue;
                }
                None => {
                    t = Civil { year: t.year - 1, month: 12, ..t }.end_of_month();
                    continue;
                }
            }
            if !self.day_matches(&t) {
                t = t.prev_day_end();
                continue;
            }
            let Some(h) = prev_bit(self.hours, t.hour) else {
                t = t.prev_day_end();
                continue;
            };
            if h != t.hour {
                t = Civil { hour: h, minute: 59, second: 59, ..t };
            }
            let Some(m) = prev_bit(self.minutes, t.minute) else {
                t = t.prev_hour_end();
                continue;
            };
            if m != t.minute {
                t = Civil { minute: m, second: 59, ..t };
            }
            let Some(s) = prev_bit(self.seconds, t.second) else {
                t = t.prev_minute_end();
                continue;
            };
            return Civil { second: s, ..t }.epoch_seconds().checked_mul(1000);
        }
    }

    fn day_matches(&self, t: &Civil) -> bool {
        let by_day = self.days & (1 << t.day) != 0;
        let by_weekday = self.weekdays & (1 << t.weekday()) != 0;
        match (self.days_unrestricted, self.weekdays_unrestricted) {
            (false, false) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }

    /// Whether some date matches at all. Only a restricted day of month with an
    /// unrestricted day of week can fail (`31` in April, `30` in February).
    fn has_a_day(&self) -> bool {
        if self.days_unrestricted || !self.weekdays_unrestricted {
            return true;
        }
        (1..=12u32).filter(|m| self.months & (1 << m) != 0).any(|m| {
            // February 29 exists, in leap years.
            let longest = if m == 2 { 29 } else { days_in_month(2001, m) };
            (1..=longest).any(|d| self.days & (1 << d) != 0)
        })
    }
}

impl FromStr for Schedule {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expr)
    }
}

/// The fire times a scheduler should act on at `now_ms`, given that it last fired (or,
/// for a new trigger, was created) at `last_fired_ms`.
///
/// Decision: however many fire times passed in `(last_fired_ms, now_ms]` — one after
/// a normal tick, hundreds after the manager was down — the trigger fires **once**,
/// for the latest of them. A burst of catch-up executions of the same pipeline helps
/// nobody (each would deploy the same thing) and can overload delegates right after a
/// restart; the latest time is the one whose run is still relevant. So the result has
/// at most one element; `max` caps it like any batch limit (`0` asks for nothing).
/// The caller stores the returned time as its new `last_fired_ms`, and uses it in the
/// idempotency key so a repeated tick cannot start a second execution.
pub fn due_fires(schedule: &Schedule, last_fired_ms: i64, now_ms: i64, max: usize) -> Vec<i64> {
    if max == 0 || now_ms <= last_fired_ms {
        return Vec::new();
    }
    match schedule.prev_at_or_before(now_ms) {
        Some(latest) if latest > last_fired_ms => vec![latest],
        _ => Vec::new(),
    }
}

/// Parses one field into a bit set (bit `n` = value `n` allowed).
fn parse_field(spec: &Field, text: &str) -> Result<u64, String> {
    if text.contains(['L', 'W', '#']) && spec.names.is_empty() {
        return Err("`L`, `W` and `#` are not supported".to_owned());
    }
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty list item".to_owned());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("step `{step}` is not a number"))?;
                if step == 0 || step > spec.max {
                    return Err(format!("step {step} is outside 1-{}", spec.max));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let day_field = spec.name == DAY.name || spec.name == WEEKDAY.name;
        let (lo, hi) = if range == "*" || (range == "?" && day_field) {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(spec, a)?, value(spec, b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(spec, range)?;
            (a, if step.is_some() { spec.max } else { a })
        };
        for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// One value: digits, or a month/weekday name where the field has names.
fn value(spec: &Field, text: &str) -> Result<u32, String> {
    let v = match text.parse::<u32>() {
        Ok(v) => v,
        Err(_) => match spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            Some(i) => spec.min + i as u32,
            None if spec.names.is_empty() => return Err(format!("`{text}` is not a number")),
            None => return Err(format!("`{text}` is not a number or a name ({})", spec.names.join(", "))),
        },
    };
    if v < spec.min || v > spec.max {
        return Err(format!("{v} is outside {}-{}", spec.min, spec.max));
    }
    Ok(v)
}

/// The smallest member of `set` that is ≥ `from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    let above = set.checked_shr(from)?.checked_shl(from)?;
    (above != 0).then(|| above.trailing_zeros())
}

/// The largest member of `set` that is ≤ `from`.
fn prev_bit(set: u64, from: u32) -> Option<u32> {
    let below = if from >= 63 { set } else { set & ((2u64 << from) - 1) };
    (below != 0).then(|| 63 - below.leading_zeros())
}

/// A UTC calendar time to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn at(epoch_seconds: i64) -> Civil {
        let days = epoch_seconds.div_euclid(86_400);
        let secs = epoch_seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60 }
    }

    fn epoch_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }

    /// 0 = Sunday. 1970-01-01 was a Thursday.
    fn weekday(&self) -> u32 {
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u32
    }

    fn start_of_month(self) -> Civil {
        Civil { day: 1, hour: 0, minute: 0, second: 0, ..self }
    }

    fn end_of_month(self) -> Civil {
        Civil { day: days_in_month(self.year, self.month), hour: 23, minute: 59, second: 59, ..self }
    }

    fn next_day(self) -> Civil {
        let t = Civil { hour: 0, minute: 0, second: 0, ..self };
        if t.day < days_in_month(t.year, t.month) {
            Civil { day: t.day + 1, ..t }
        } else if t.month < 12 {
            Civil { month: t.month + 1, day: 1, ..t }
        } else {
            Civil { year: t.year + 1, month: 1, day: 1, ..t }
        }
    }

    fn next_hour(self) -> Civil {
        if self.hour < 23 {
            Civil { hour: self.hour + 1, minute: 0, second: 0, ..self }
        } else {
            self.next_day()
        }
    }

    fn next_minute(self) -> Civil {
        if self.minute < 59 { Civil { minute: self.minute + 1, second: 0, ..self } } else { self.next_hour() }
    }

    fn prev_day_end(self) -> Civil {
        let t = Civil { hour: 23, minute: 59, second: 59, ..self };
        if t.day > 1 {
            Civil { day: t.day - 1, ..t }
        } else if t.month > 1 {
            Civil { month: t.month - 1, ..t }.end_of_month()
        } else {
            Civil { year: t.year - 1, month: 12, ..t }.end_of_month()
        }
    }

    fn prev_hour_end(self) -> Civil {
        if self.hour > 0 {
            Civil { hour: self.hour - 1, minute: 59, second: 59, ..self }
        } else {
            self.prev_day_end()
        }
    }

    fn prev_minute_end(self) -> Civil {
        if self.minute > 0 {
            Civil { minute: self.minute - 1, second: 59, ..self }
        } else {
            self.prev_hour_end()
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Counts in 400-year eras
/// starting on March 1st, so the leap day is the last day of its year.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = (if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 }) as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `YYYY-MM-DDTHH:MM:SS` (UTC) to epoch milliseconds.
    fn ms(s: &str) -> i64 {
        let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
        let t = Civil {
            year: i64::from(n(0..4)),
            month: n(5..7),
            day: n(8..10),
            hour: n(11..13),
            minute: n(14..16),
            second: n(17..19),
        };
        t.epoch_seconds() * 1000
    }

    fn next(expr: &str, after: &str) -> String {
        let at = Schedule::parse(expr).unwrap().next_after(ms(after)).unwrap();
        show(at)
    }

    fn show(at_ms: i64) -> String {
        let t = Civil::at(at_ms.div_euclid(1000));
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second)
    }

    #[test]
    fn calendar_conversion_matches_known_dates() {
        // Day numbers and weekdays from an independent calendar implementation.
        for (y, m, d, days, weekday) in [
            (1970, 1, 1, 0, 4),
            (2000, 3, 1, 11_017, 3),
            (2026, 3, 14, 20_526, 6),
            (1969, 12, 31, -1, 3),
            (2100, 3, 1, 47_541, 1),
            (1600, 2, 29, -135_081, 2),
            (9999, 12, 31, 2_932_896, 5),
        ] {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d));
            let t = Civil { year: y, month: m, day: d, hour: 0, minute: 0, second: 0 };
            assert_eq!(t.weekday(), weekday, "{y}-{m}-{d}");
        }
        assert_eq!(ms("2026-03-14T05:06:07"), (20_526 * 86_400 + 5 * 3600 + 6 * 60 + 7) * 1000);
    }

    #[test]
    fn next_fire_within_a_day_and_a_month() {
        assert_eq!(next("0 2 * * *", "2026-03-14T05:00:00"), "2026-03-15T02:00:00");
        assert_eq!(next("0 2 * * *", "2026-03-14T01:59:59"), "2026-03-14T02:00:00");
        assert_eq!(next("*/15 9-17 * * *", "2026-03-14T17:45:00"), "2026-03-15T09:00:00");
        assert_eq!(next("*/15 9-17 * * *", "2026-03-14T10:07:00"), "2026-03-14T10:15:00");
        assert_eq!(next("5,35 * * * *", "2026-03-14T10:35:00"), "2026-03-14T11:05:00");
    }

    #[test]
    fn next_fire_is_strictly_after() {
        assert_eq!(next("0 2 * * *", "2026-03-14T02:00:00"), "2026-03-15T02:00:00");
        let every_two = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(every_two.next_after(1000), Some(2000));
        assert_eq!(every_two.next_after(1500), Some(2000));
        assert_eq!(every_two.next_after(1999), Some(2000));
        assert_eq!(every_two.next_after(2000), Some(4000));
        assert_eq!(every_two.next_after(-1), Some(0));
    }

    #[test]
    fn next_fire_across_month_and_year_boundaries() {
        assert_eq!(next("0 0 1 * *", "2026-01-31T12:00:00"), "2026-02-01T00:00:00");
        assert_eq!(next("0 0 31 * *", "2026-01-31T00:00:00"), "2026-03-31T00:00:00");
        assert_eq!(next("0 0 * * *", "2026-12-31T00:00:01"), "2027-01-01T00:00:00");
        assert_eq!(next("30 23 31 12 *", "2026-12-31T23:30:00"), "2027-12-31T23:30:00");
        assert_eq!(next("0 12 * 2 *", "2026-03-01T00:00:00"), "2027-02-01T12:00:00");
        assert_eq!(next("59 23 28-31 2 *", "2028-02-28T23:59:00"), "2028-02-29T23:59:00");
        assert_eq!(next("59 23 28-31 2 *", "2027-02-28T23:59:00"), "2028-02-28T23:59:00");
        assert_eq!(next("0 0 29 2 *", "2026-03-01T00:00:00"), "2028-02-29T00:00:00");
        // 2100 is not a leap year.
        assert_eq!(next("0 0 29 2 *", "2097-03-01T00:00:00"), "2104-02-29T00:00:00");
        assert_eq!(next("@yearly", "2026-06-01T00:00:00"), "2027-01-01T00:00:00");
        assert_eq!(next("@monthly", "2026-12-15T00:00:00"), "2027-01-01T00:00:00");
        assert_eq!(next("59 59 23 31 12 *", "2026-12-31T23:59:58"), "2026-12-31T23:59:59");
        assert_eq!(next("0 0 0 1 1 *", "2026-12-31T23:59:59"), "2027-01-01T00:00:00");
    }

    #[test]
    fn days_of_week_and_the_either_rule() {
        // 2026-03-13 is a Friday.
        assert_eq!(next("0 9 * * MON-FRI", "2026-03-13T10:00:00"), "2026-03-16T09:00:00");
        assert_eq!(next("0 9 * * 1-5", "2026-03-13T08:00:00"), "2026-03-13T09:00:00");
        assert_eq!(next("0 0 * * 7", "2026-03-13T00:00:00"), "2026-03-15T00:00:00");
        assert_eq!(next("0 0 * * sun", "2026-03-13T00:00:00"), "2026-03-15T00:00:00");
        assert_eq!(next("@weekly", "2026-03-13T00:00:00"), "2026-03-15T00:00:00");
        // Both restricted: the 13th or any Friday.
        assert_eq!(next("0 0 13 * 5", "2026-03-13T00:00:00"), "2026-03-20T00:00:00");
        assert_eq!(next("0 0 13 * 5", "2026-03-28T00:00:00"), "2026-04-03T00:00:00");
        assert_eq!(next("0 0 13 * 1", "2026-03-28T00:00:00"), "2026-03-30T00:00:00");
        // Day of month starting with `*` (even `*/2`) does not count as restricted, so
        // both must match: odd days that are Fridays.
        assert_eq!(next("0 0 */2 * 5", "2026-03-13T00:00:00"), "2026-03-27T00:00:00");
        assert_eq!(next("0 0 ? * FRI", "2026-03-14T00:00:00"), "2026-03-20T00:00:00");
        // Day of week `*`: only the 13th.
        assert_eq!(next("0 0 13 * *", "2026-03-13T00:00:00"), "2026-04-13T00:00:00");
    }

    #[test]
    fn names_steps_and_lists() {
        assert_eq!(next("0 0 1 JAN,jul *", "2026-02-01T00:00:00"), "2026-07-01T00:00:00");
        assert_eq!(next("0 0 1 feb-apr/2 *", "2026-02-01T00:00:00"), "2026-04-01T00:00:00");
        assert_eq!(next("10/20 * * * *", "2026-03-14T10:31:00"), "2026-03-14T10:50:00");
        assert_eq!(next("@hourly", "2026-03-14T10:31:00"), "2026-03-14T11:00:00");
        assert_eq!(next("  @DAILY ", "2026-03-14T10:31:00"), "2026-03-15T00:00:00");
        assert_eq!(Schedule::parse(" 0 2 * * * ").unwrap().to_string(), "0 2 * * *");
    }

    #[test]
    fn previous_fire() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(s.prev_at_or_before(ms("2026-03-14T02:00:00")), Some(ms("2026-03-14T02:00:00")));
        assert_eq!(s.prev_at_or_before(ms("2026-03-14T01:59:59")), Some(ms("2026-03-13T02:00:00")));
        let s = Schedule::parse("0 0 31 * *").unwrap();
        assert_eq!(s.prev_at_or_before(ms("2026-03-01T00:00:00")), Some(ms("2026-01-31T00:00:00")));
        let s = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(s.prev_at_or_before(ms("2104-02-28T00:00:00")), Some(ms("2096-02-29T00:00:00")));
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(s.prev_at_or_before(5999), Some(4000));
        assert_eq!(s.prev_at_or_before(-1), Some(-2000));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = Schedule::parse("* * * * *").unwrap();
        assert_eq!(s.next_after(i64::MAX), None);
        assert_eq!(s.prev_at_or_before(i64::MIN), None);
        assert!(s.next_after(i64::MIN).is_some());
        assert!(s.prev_at_or_before(i64::MAX - 1_000_000_000_000).is_some());
    }

    #[test]
    fn parse_errors_name_the_field_and_why() {
        let field = |expr: &str| match Schedule::parse(expr) {
            Err(CronError::Field { field, text, reason, .. }) => (field, text, reason),
            other => panic!("{expr}: {other:?}"),
        };
        assert_eq!(field("61 * * * *"), ("minute", "61".into(), "61 is outside 0-59".into()));
        assert_eq!(field("* 24 * * *"), ("hour", "24".into(), "24 is outside 0-23".into()));
        assert_eq!(field("* * 0 * *"), ("day-of-month", "0".into(), "0 is outside 1-31".into()));
        assert_eq!(field("* * * 13 *"), ("month", "13".into(), "13 is outside 1-12".into()));
        assert_eq!(field("* * * * 8"), ("day-of-week", "8".into(), "8 is outside 0-7".into()));
        assert_eq!(field("60 * * * * *"), ("second", "60".into(), "60 is outside 0-59".into()));
        assert_eq!(field("*/0 * * * *").2, "step 0 is outside 1-59");
        assert_eq!(field("*/x * * * *").2, "step `x` is not a number");
        assert_eq!(field("30-10 * * * *").2, "range 30-10 runs backwards");
        assert_eq!(field("1,,2 * * * *").2, "empty list item");
        assert_eq!(field("L * * * *").2, "`L`, `W` and `#` are not supported");
        assert_eq!(
            field("* * * * 5#3").2,
            "`5#3` is not a number or a name (SUN, MON, TUE, WED, THU, FRI, SAT)"
        );
        assert_eq!(
            field("* * * FOO *").2,
            "`FOO` is not a number or a name (JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC)"
        );
        assert_eq!(field("? * * * *").2, "`?` is not a number");
        assert_eq!(field("a * * * *").2, "`a` is not a number");

        assert_eq!(Schedule::parse("   "), Err(CronError::Empty));
        assert_eq!(
            Schedule::parse("* * * *"),
            Err(CronError::FieldCount { expr: "* * * *".into(), count: 4 })
        );
        assert!(matches!(Schedule::parse("* * * * * * *"), Err(CronError::FieldCount { count: 7, .. })));
        assert_eq!(Schedule::parse("@reboot"), Err(CronError::UnknownMacro { expr: "@reboot".into() }));
        assert_eq!(
            Schedule::parse("0 0 31 4,6 *"),
            Err(CronError::NeverFires { expr: "0 0 31 4,6 *".into() })
        );
        assert_eq!(Schedule::parse("0 0 30 2 *"), Err(CronError::NeverFires { expr: "0 0 30 2 *".into() }));
        // With a day of week too, the either rule makes it fire on Mondays.
        assert!(Schedule::parse("0 0 30 2 1").is_ok());

        let err = Schedule::parse("0 2 * * 9").unwrap_err();
        assert_eq!(err.to_string(), "cron expression `0 2 * * 9`: day-of-week field `9`: 9 is outside 0-7");
    }

    #[test]
    fn due_fires_once_for_a_missed_window() {
        let daily = Schedule::parse("0 2 * * *").unwrap();
        // Down for three days: only the latest missed time fires.
        let fires = due_fires(&daily, ms("2026-03-10T02:00:00"), ms("2026-03-13T09:30:00"), 10);
        assert_eq!(fires, vec![ms("2026-03-13T02:00:00")]);
        // A normal tick just after a fire time.
        let fires = due_fires(&daily, ms("2026-03-12T02:00:00"), ms("2026-03-13T02:00:00"), 10);
        assert_eq!(fires, vec![ms("2026-03-13T02:00:00")]);
        // Already fired for that time: nothing, however often the scheduler ticks.
        assert!(due_fires(&daily, ms("2026-03-13T02:00:00"), ms("2026-03-13T09:30:00"), 10).is_empty());
        // Nothing due yet.
        assert!(due_fires(&daily, ms("2026-03-13T02:00:00"), ms("2026-03-14T01:59:59"), 10).is_empty());
        // Clock behind the last fire, or no capacity.
        assert!(due_fires(&daily, ms("2026-03-13T02:00:00"), ms("2026-03-12T00:00:00"), 10).is_empty());
        assert!(due_fires(&daily, ms("2026-03-10T02:00:00"), ms("2026-03-13T09:30:00"), 0).is_empty());
        // A dense schedule after a long outage is still one fire, found without walking it.
        let every_two = Schedule::parse("*/2 * * * * *").unwrap();
        let fires = due_fires(&every_two, ms("2026-01-01T00:00:00"), ms("2026-03-13T09:30:01") + 999, 1);
        assert_eq!(fires, vec![ms("2026-03-13T09:30:00")]);
    }

    /// A schedule built from random but valid fields.
    fn expression() -> impl Strategy<Value = String> {
        let list = |max: u32, min: u32| {
            prop_oneof![
                Just("*".to_owned()),
                (1..=max.min(12)).prop_map(|s| format!("*/{s}")),
                prop::collection::vec(min..=max, 1..4).prop_map(|v| v
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            ]
        };
        (list(59, 0), list(23, 0), list(31, 1), list(12, 1), list(7, 0))
            .prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// `next_after` agrees with testing minute after minute for up to 40 days, and
        /// `prev_at_or_before` finds the same instant from the other side.
        #[test]
        fn next_after_matches_brute_force(
            expr in expression(),
            start in ms("2020-01-01T00:00:00")..ms("2030-01-01T00:00:00"),
        ) {
            let Ok(s) = Schedule::parse(&expr) else { return Ok(()) };
            let brute = {
                let mut t = start.div_euclid(60_000) * 60_000 + 60_000;
                let end = start + 40 * 86_400_000;
                loop {
                    if t > end { break None; }
                    let c = Civil::at(t / 1000);
                    let ok = s.minutes & (1 << c.minute) != 0
                        && s.hours & (1 << c.hour) != 0
                        && s.months & (1 << c.month) != 0
                        && s.day_matches(&c);
                    if ok { break Some(t); }
                    t += 60_000;
                }
            };
            let fast = s.next_after(start);
            match brute {
                Some(t) => {
                    prop_assert_eq!(fast, Some(t), "{} after {}", expr, show(start));
                    prop_assert_eq!(s.prev_at_or_before(t), Some(t));
                    prop_assert_eq!(s.prev_at_or_before(t - 1).is_none_or(|p| p <= start), true);
                }
                None => prop_assert!(fast.is_none_or(|t| t > start + 40 * 86_400_000)),
            }
        }

        #[test]
        fn parse_never_panics(expr in "[0-9*/,?@a-zA-Z# -]{0,40}") {
            let _ = Schedule::parse(&expr);
        }
    }
}
