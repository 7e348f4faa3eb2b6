//! The audit log's readers for people: `audit show` and `audit export`, and the time formats
//! they use. They only read (the database is opened read-only) and decide nothing.

use std::path::Path;

use anyhow::Context;
use nanoclaw_core::audit::Stored;
use rusqlite::{Connection, params};

use super::read_stored;

/// Filters for `audit show`.
#[derive(Default)]
pub struct Filter {
    pub group: Option<String>,
    pub kind: Option<String>,
    /// Milliseconds since the epoch.
    pub since: Option<i64>,
}

/// Each matching event's body (canonical JSON), in order, to `out`.
pub fn export(
    db: &Path,
    filter: &Filter,
    mut out: impl FnMut(&Stored) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))?;
    let mut stmt = conn.prepare(
        "SELECT seq, at, kind, group_id, body, prev_hash, hash FROM audit
         WHERE (?1 IS NULL OR group_id = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR at >= ?3)
         ORDER BY seq",
    )?;
    let rows = stmt.query_map(
        params![filter.group, filter.kind, filter.since],
        read_stored,
    )?;
    for row in rows {
        out(&row?)?;
    }
    Ok(())
}

/// `at` (milliseconds since the epoch) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(at: i64) -> String {
    match jiff::Timestamp::from_millisecond(at) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Beyond the years jiff represents (±9999): no stored time is, but say something.
        Err(_) => format!("{at} ms since the epoch"),
    }
}

/// `--since`: unix seconds, a date (`YYYY-MM-DD`, UTC midnight), an RFC 3339 time
/// (`2026-11-18T11:06:40Z`; a zone offset is required), or an age (`30m`, `2h`, `7d`, `45s`)
/// before `now_ms`. Milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return secs.checked_mul(1000);
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: i64 = t[..t.len() - 1].parse().ok()?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        return now_ms.checked_sub(n.checked_mul(secs * 1000)?);
    }
    // Only a bare date is read as a date: jiff would also take the date out of a longer
    // string and drop its time.
    let at = if t.len() == "YYYY-MM-DD".len() {
        let date = t.parse::<jiff::civil::Date>().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
    } else {
        t.parse::<jiff::Timestamp>().ok()?
    };
    Some(at.as_millisecond())
}
