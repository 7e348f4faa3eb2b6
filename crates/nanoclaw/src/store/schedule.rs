//! When a task is due: cron expressions in a time zone, fixed intervals, and one-shot times,
//! each parsed with a precise error and asked one question, "the first slot after this
//! instant". Times are milliseconds since the Unix epoch; nothing here reads a clock.
//!
//! Cron: 5 fields (`minute hour day-of-month month day-of-week`) or 6 (seconds first). Days of
//! the week are written as names (`MON-FRI`): cron dialects disagree on what the numbers mean.
//! Wall-clock times are in the task's zone: a time that a DST change skips fires at the same
//! wall time shifted past the gap (02:30 becomes 03:30); a time that occurs twice fires once,
//! at its later occurrence.

use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A task's schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    Cron {
        expr: Box<jiff_cron::Schedule>,
        tz: TimeZone,
    },
    /// Every `secs` seconds, counted from `anchor`.
    Every { secs: u64, anchor: i64 },
    /// Once, at this instant.
    Once { at: i64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("cron expression {expr:?}: {why}")]
    Cron { expr: String, why: String },
    #[error("unknown time zone {0:?} (an IANA name such as Europe/Berlin, or UTC)")]
    Zone(String),
    #[error("interval {0:?}: expected a number of seconds (at least 1), or 30s, 15m, 2h, 1d")]
    Every(String),
    #[error("interval {0:?} has no unit: say {0}s, {0}m, {0}h or {0}d")]
    EveryUnit(String),
    #[error(
        "time {0:?}: expected an instant such as 2026-12-24T18:00:00Z or 2026-12-24T18:00:00+01:00"
    )]
    At(String),
}

/// A time zone by IANA name, from the system's tz database.
pub fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| ScheduleError::Zone(name.to_owned()))
}

/// Parse a cron expression for `tz`.
pub fn cron(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
    let bad = |why: &str| ScheduleError::Cron {
        expr: expr.to_owned(),
        why: why.to_owned(),
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let full = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 => fields.join(" "),
        n => return Err(bad(&format!("expected 5 or 6 fields, got {n}"))),
    };
    let dow = fields[fields.len() - 1];
    if dow.chars().any(|c| c.is_ascii_digit()) && !dow.starts_with("*/") {
        return Err(bad(
            "write days of the week as names only (SUN, MON-FRI): numbers mean different days in different cron dialects, and nth-weekday forms such as MON#2 are not supported",
        ));
    }
    // Numbers checked here, so the message names the field and its range in the expression as
    // written (the parser's own counts the seconds field this adds).
    const FIELDS: [(&str, u32, u32); 5] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of the month", 1, 31),
        ("month", 1, 12),
    ];
    let offset = 6 - fields.len();
    for (i, field) in fields[..fields.len() - 1].iter().enumerate() {
        let (name, low, high) = FIELDS[i + offset];
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().ok().is_none_or(|n| n == 0)
            {
                return Err(bad(&format!(
                    "the {name} field's step {step:?} is not a whole number from 1"
                )));
            }
            for value in range
                .split('-')
                .filter(|v| v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty())
            {
                match value.parse::<u32>() {
                    Ok(n) if (low..=high).contains(&n) => {}
                    _ => {
                        return Err(bad(&format!(
                            "{value} is outside the {name} field's range {low}-{high}"
                        )));
                    }
                }
            }
        }
    }
    let parsed = jiff_cron::Schedule::from_str(&full)
        .map_err(|e| bad(&point_at(&e.to_string(), &fields, 6 - fields.len())))?;
    Ok(Schedule::Cron {
        expr: Box::new(parsed),
        tz: zone(tz)?,
    })
}

/// A new interval must say its unit (`5` could mean minutes to a person); intervals stored
/// before this rule read a bare number as seconds, through [`every`].
pub fn every_with_unit(text: &str, anchor: i64) -> Result<Schedule, ScheduleError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScheduleError::EveryUnit(t.to_owned()));
    }
    every(text, anchor)
}

/// The parser's message for the expression as written: it echoes the six-field form with a
/// caret under the bad column; the echo is replaced by the fields as typed, the caret moved to
/// match (or dropped when it points into the seconds field this adds).
fn point_at(message: &str, fields: &[&str], added: usize) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let caret = lines.iter().position(|l| l.trim() == "^");
    let Some(caret) = caret else {
        return message.to_owned();
    };
    let why: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i + 1 != caret && *i != caret)
        .map(|(_, l)| *l)
        .collect();
    let why = why.join(" ");
    // Each added field is "0 ".
    let column = lines[caret].len() - 1;
    match column.checked_sub(2 * added) {
        Some(column) => format!("{why}\n  {}\n  {}^", fields.join(" "), " ".repeat(column)),
        None => why,
    }
}

/// Parse an interval: seconds, or a number with `s`, `m`, `h` or `d`.
pub fn every(text: &str, anchor: i64) -> Result<Schedule, ScheduleError> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(ScheduleError::Every(text.to_owned())),
    };
    let secs = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|s| *s >= 1)
        .ok_or_else(|| ScheduleError::Every(text.to_owned()))?;
    Ok(Schedule::Every { secs, anchor })
}

/// Parse a one-shot instant (RFC 3339 with an offset, or `Z`).
pub fn once(text: &str) -> Result<Schedule, ScheduleError> {
    let ts: Timestamp = text
        .trim()
        .parse()
        .map_err(|_| ScheduleError::At(text.to_owned()))?;
    Ok(Schedule::Once {
        at: ts.as_millisecond(),
    })
}

impl Schedule {
    /// The first slot strictly after `after`, or `None` when there is none (a one-shot time
    /// already passed, a cron expression that never matches again).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Schedule::Once { at } => (*at > after).then_some(*at),
            Schedule::Every { secs, anchor } => {
                let step = i64::try_from(*secs).ok()?.checked_mul(1000)?;
                if after < *anchor {
                    return Some(*anchor);
                }
                let k = (after - anchor) / step + 1;
                anchor.checked_add(k.checked_mul(step)?)
            }
            Schedule::Cron { expr, tz } => {
                let start = Timestamp::from_millisecond(after)
                    .ok()?
                    .to_zoned(tz.clone());
                expr.after(start)
                    .map(|z| z.timestamp().as_millisecond())
                    .find(|ms| *ms > after)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn at(ms: i64, tz: &str) -> String {
        Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned(zone(tz).unwrap())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }

    fn slots(s: &Schedule, from: &str, n: usize, tz: &str) -> Vec<String> {
        let mut t = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            match s.next_after(t) {
                Some(next) => {
                    out.push(at(next, tz));
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn five_and_six_fields_with_a_zone() {
        let s = cron("30 9 * * MON-FRI", "Europe/Berlin").unwrap();
        assert_eq!(
            slots(&s, "2026-11-27T00:00:00Z", 3, "Europe/Berlin"),
            [
                "2026-11-27 09:30:00 +01:00",
                "2026-11-30 09:30:00 +01:00",
                "2026-12-01 09:30:00 +01:00"
            ]
        );
        let s = cron("15 0 12 * * *", "UTC").unwrap();
        assert_eq!(
            slots(&s, "2026-11-27T12:00:20Z", 1, "UTC"),
            ["2026-11-28 12:00:15 +00:00"]
        );
    }

    #[test]
    fn spring_forward_skipped_time_fires_once_after_the_gap() {
        // Europe/Berlin, 2026-03-29: 02:00 jumps to 03:00; 02:30 does not exist that day.
        let s = cron("30 2 * * *", "Europe/Berlin").unwrap();
        let got = slots(&s, "2026-03-27T12:00:00Z", 4, "Europe/Berlin");
        assert_eq!(got[0], "2026-03-28 02:30:00 +01:00");
        assert_eq!(got[1], "2026-03-29 03:30:00 +02:00", "{got:?}");
        assert_eq!(got[2], "2026-03-30 02:30:00 +02:00");
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn fall_back_repeated_time_fires_once_at_its_later_occurrence() {
        // Europe/Berlin, 2026-10-25: 03:00 falls back to 02:00; 02:30 happens twice.
        let s = cron("30 2 * * *", "Europe/Berlin").unwrap();
        let got = slots(&s, "2026-10-24T12:00:00Z", 3, "Europe/Berlin");
        assert_eq!(
            got,
            [
                "2026-10-25 02:30:00 +01:00",
                "2026-10-26 02:30:00 +01:00",
                "2026-10-27 02:30:00 +01:00"
            ]
        );
        // An hourly task stays hourly in real time across the repeated hour.
        let s = cron("0 * * * *", "Europe/Berlin").unwrap();
        let got = slots(&s, "2026-10-24T23:30:00Z", 4, "UTC");
        assert_eq!(
            got,
            [
                "2026-10-25 00:00:00 +00:00",
                "2026-10-25 01:00:00 +00:00",
                "2026-10-25 02:00:00 +00:00",
                "2026-10-25 03:00:00 +00:00"
            ]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        let s = cron("0 12 31 * *", "UTC").unwrap();
        assert_eq!(
            slots(&s, "2027-01-31T13:00:00Z", 3, "UTC"),
            [
                "2027-03-31 12:00:00 +00:00",
                "2027-05-31 12:00:00 +00:00",
                "2027-07-31 12:00:00 +00:00"
            ]
        );
        let s = cron("0 0 29 FEB *", "UTC").unwrap();
        assert_eq!(
            slots(&s, "2026-11-27T00:00:00Z", 2, "UTC"),
            ["2028-02-29 00:00:00 +00:00", "2032-02-29 00:00:00 +00:00"]
        );
    }

    #[test]
    fn intervals_and_one_shots() {
        let anchor = ms("2026-11-27T10:00:00Z");
        let s = every("15m", anchor).unwrap();
        assert_eq!(s.next_after(anchor - 1), Some(anchor));
        assert_eq!(s.next_after(anchor), Some(anchor + 900_000));
        assert_eq!(s.next_after(anchor + 900_001), Some(anchor + 1_800_000));
        assert_eq!(every("90", 0).unwrap().next_after(0), Some(90_000));
        let s = once("2026-12-24T18:00:00+01:00").unwrap();
        assert_eq!(
            s.next_after(ms("2026-12-24T16:59:59Z")),
            Some(ms("2026-12-24T17:00:00Z"))
        );
        assert_eq!(s.next_after(ms("2026-12-24T17:00:00Z")), None);
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (e, want) in [
            (cron("* * *", "UTC").unwrap_err(), "5 or 6 fields"),
            (cron("0 9 * * 1-5", "UTC").unwrap_err(), "as names"),
            (cron("61 * * * *", "UTC").unwrap_err(), "61 * * * *"),
            (
                cron("60 * * * *", "UTC").unwrap_err(),
                "60 is outside the minute field's range 0-59",
            ),
            (
                cron("0 0 24 * * *", "UTC").unwrap_err(),
                "24 is outside the hour field's range 0-23",
            ),
            (
                cron("0 9 0 * MON", "UTC").unwrap_err(),
                "0 is outside the day of the month field's range 1-31",
            ),
            (
                cron("0 9 * 1-13 *", "UTC").unwrap_err(),
                "13 is outside the month field's range 1-12",
            ),
            (cron("*/0 * * * *", "UTC").unwrap_err(), "step \"0\""),
            (cron("0 0 * * MON#2", "UTC").unwrap_err(), "MON#2"),
            (
                cron("0 9 * * MON", "Mars/Olympus").unwrap_err(),
                "unknown time zone",
            ),
            // The caret stands under the bad word of the expression as typed.
            (
                cron("0 9 * * MOX", "UTC").unwrap_err(),
                "\n  0 9 * * MOX\n          ^",
            ),
            (every("0", 0).unwrap_err(), "at least 1"),
            (every_with_unit("5", 0).unwrap_err(), "no unit: say 5s"),
            (every("5w", 0).unwrap_err(), "5w"),
            (every("-3", 0).unwrap_err(), "-3"),
            (once("tomorrow").unwrap_err(), "tomorrow"),
            (
                once("2026-12-24T18:00:00").unwrap_err(),
                "2026-12-24T18:00:00",
            ),
        ] {
            assert!(e.to_string().contains(want), "{e}");
        }
        assert!(cron("*/15 * * * *", "UTC").is_ok());
    }
}
