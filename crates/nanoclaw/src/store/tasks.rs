//! Scheduled tasks in the store: adding, listing, pausing, resuming and removing them, and the
//! claim that makes a due slot run at most once.
//!
//! A claim is one transaction: it records a run for the task's due slot and moves the task's
//! next due time past both that slot and now, so slots missed while the daemon was down become
//! one catch-up run (or none, for tasks that skip missed slots). A run the daemon was in the
//! middle of when it died is marked abandoned at the next start, never run again. A failed run
//! with attempts left records when to try again (`retry_at`); the retry is claimed like a due
//! slot, so it survives a restart. Pausing or removing a task drops its pending retry.

use nanoclaw_core::policy::SenderRole;
use rusqlite::{OptionalExtension, params};

use crate::store::schedule::{self, Schedule, ScheduleError};
use crate::store::{Store, StoreError};

/// A missed slot this late or later counts as missed (for tasks that skip missed slots); an
/// earlier one is simply a little late.
pub const GRACE_MS: i64 = 60_000;

/// How a task's schedule is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    Cron { expr: String, tz: String },
    Every(String),
    At(String),
}

/// A new task.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub group: String,
    pub name: String,
    pub when: When,
    pub prompt: String,
    /// Run without the group's conversation history.
    pub isolated: bool,
    /// Post the result to the group's chat.
    pub post: bool,
    /// Run a missed slot once on catch-up (else skip it).
    pub catch_up: bool,
    /// Who created it: its runs speak with this role.
    pub role: SenderRole,
    /// It was written by a turn that had read outside content: its prompt is outside content.
    pub tainted: bool,
}

/// A task as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Task {
    pub id: i64,
    pub group: String,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub tz: String,
    pub prompt: String,
    pub isolated: bool,
    pub post: bool,
    pub catch_up: bool,
    pub status: String,
    pub next_due: Option<i64>,
    pub created_at: i64,
    /// The creator's role.
    pub role: SenderRole,
    /// The prompt is outside content (written by a tainted turn).
    pub tainted: bool,
}

impl Task {
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        match self.kind.as_str() {
            "cron" => schedule::cron(&self.spec, &self.tz),
            "every" => schedule::every(&self.spec, self.created_at),
            _ => schedule::once(&self.spec),
        }
    }
}

/// A slot claimed to run now.
#[derive(Clone, Debug)]
pub struct Claim {
    pub run_id: i64,
    pub task: Task,
    pub slot: i64,
    pub attempt: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("the schedule never comes due after now")]
    NeverDue,
    #[error("no task {0}")]
    NotFound(i64),
    #[error("task {id} is {status}")]
    Status { id: i64, status: String },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the name is empty")]
    EmptyName,
    #[error("the name is {0} characters; at most {MAX_NAME_CHARS}")]
    LongName(usize),
    #[error("{0} is in the past")]
    Past(String),
    #[error("task {0} was due once, and that time has passed while it was paused: add a new one")]
    Passed(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLUMNS: &str = "id, group_id, name, kind, spec, tz, prompt, isolated, post, catch_up, status, next_due, created_at, role, tainted";

fn read_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        group: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        spec: r.get(4)?,
        tz: r.get(5)?,
        prompt: r.get(6)?,
        isolated: r.get(7)?,
        post: r.get(8)?,
        catch_up: r.get(9)?,
        status: r.get(10)?,
        next_due: r.get(11)?,
        created_at: r.get(12)?,
        role: crate::store::role_column(r, 13)?,
        tainted: r.get(14)?,
    })
}

/// Validate and store a task; its first slot is the first after `now`.
/// The longest task name (names are shown with every run and in lists).
pub const MAX_NAME_CHARS: usize = 200;
/// How far in the past a one-shot time may be when it is added (a clock a little behind).
const AT_GRACE_MS: i64 = 60_000;

/// A task's schedule as stored: (kind, spec, time zone, first due time).
pub struct Checked {
    kind: &'static str,
    spec: String,
    tz: String,
    next_due: i64,
}

/// Everything that makes a task unable to run, found before it is stored (or, for the
/// agent's `schedule_task`, before anyone is asked to approve it): an empty name or prompt, a
/// name too long, a schedule that does not parse, a one-shot time in the past, a schedule that
/// never comes due.
pub fn check(name: &str, prompt: &str, when: &When, now: i64) -> Result<Checked, TaskError> {
    if prompt.trim().is_empty() {
        return Err(TaskError::EmptyPrompt);
    }
    if name.trim().is_empty() {
        return Err(TaskError::EmptyName);
    }
    let name_chars = name.chars().count();
    if name_chars > MAX_NAME_CHARS {
        return Err(TaskError::LongName(name_chars));
    }
    let (kind, spec, tz, schedule) = match when {
        When::Cron { expr, tz } => ("cron", expr.clone(), tz.clone(), schedule::cron(expr, tz)?),
        When::Every(text) => (
            "every",
            text.clone(),
            "UTC".into(),
            schedule::every_with_unit(text, now)?,
        ),
        When::At(text) => ("once", text.clone(), "UTC".into(), schedule::once(text)?),
    };
    // A one-shot time must lie ahead when it is added (a typo in the year would otherwise run
    // at once); one that passes while the daemon is down still runs, as a catch-up.
    if let (Schedule::Once { at }, When::At(text)) = (&schedule, when)
        && *at < now - AT_GRACE_MS
    {
        return Err(TaskError::Past(text.clone()));
    }
    let next_due = match &schedule {
        Schedule::Once { at } => Some(*at),
        s => s.next_after(now),
    }
    .ok_or(TaskError::NeverDue)?;
    Ok(Checked {
        kind,
        spec,
        tz,
        next_due,
    })
}

pub fn add(store: &Store, new: &NewTask, now: i64) -> Result<Task, TaskError> {
    let Checked {
        kind,
        spec,
        tz,
        next_due,
    } = check(&new.name, &new.prompt, &new.when, now)?;
    let id = store.with_conn(|c| {
        c.execute(
            "INSERT INTO tasks (group_id, name, kind, spec, tz, prompt, isolated, post, catch_up, status, next_due, created_at, role, tainted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?12, ?13)",
            params![new.group, new.name, kind, spec, tz, new.prompt, new.isolated, new.post, new.catch_up, next_due, now, new.role.as_str(), new.tainted],
        )?;
        Ok(c.last_insert_rowid())
    })?;
    get(store, id)?.ok_or(TaskError::NotFound(id))
}

pub fn get(store: &Store, id: i64) -> Result<Option<Task>, StoreError> {
    store.with_conn(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
            [id],
            read_task,
        )
        .optional()?)
    })
}

/// Tasks not removed, of one group or all.
pub fn list(store: &Store, group: Option<&str>) -> Result<Vec<Task>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE status != 'removed' AND (?1 IS NULL OR group_id = ?1) ORDER BY id"
        ))?;
        let rows = stmt.query_map([group], read_task)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// Pause, resume or remove a task (`group`: only a task of that group, for the agent's own
/// tools). Resuming computes the next slot from now: paused slots are not caught up.
pub fn set_status(
    store: &Store,
    id: i64,
    status: &str,
    group: Option<&str>,
    now: i64,
) -> Result<Task, TaskError> {
    let task = get(store, id)?
        .filter(|t| t.status != "removed" && group.is_none_or(|g| g == t.group))
        .ok_or(TaskError::NotFound(id))?;
    let next_due = match status {
        // Resuming what runs already changes nothing (its pending slot stays).
        "active" if task.status == "active" => return Ok(task),
        "active" => {
            if task.status == "done" {
                return Err(TaskError::Status {
                    id,
                    status: task.status,
                });
            }
            Some(
                task.schedule()?
                    .next_after(now)
                    .ok_or(TaskError::Passed(id))?,
            )
        }
        _ => task.next_due,
    };
    store.with_conn(|c| {
        let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE tasks SET status = ?2, next_due = ?3 WHERE id = ?1",
            params![id, status, next_due],
        )?;
        if status != "active" {
            tx.execute(
                "UPDATE task_runs SET retry_at = NULL WHERE task_id = ?1 AND retry_at IS NOT NULL",
                [id],
            )?;
        }
        tx.commit()?;
        Ok(())
    })?;
    get(store, id)?.ok_or(TaskError::NotFound(id))
}

/// The earliest time something comes due: an active task's next slot or a pending retry.
pub fn next_due(store: &Store) -> Result<Option<i64>, StoreError> {
    store.with_conn(|c| {
        Ok(c.query_row(
            "SELECT min(due) FROM (
                SELECT min(next_due) AS due FROM tasks WHERE status = 'active'
                UNION ALL SELECT min(retry_at) FROM task_runs WHERE retry_at IS NOT NULL)",
            [],
            |r| r.get(0),
        )?)
    })
}

/// Claim every slot due at `now` (recording a run for it and moving its task past it) and
/// every retry due by then, in one transaction. A slot or retry claimed here never runs
/// again, whatever happens next.
pub fn claim_due(store: &Store, now: i64) -> Result<Vec<Claim>, StoreError> {
    store.with_conn(|c| {
        let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
        let mut claims = claim_slots(&tx, now)?;
        claims.extend(claim_retries(&tx, now)?);
        tx.commit()?;
        Ok(claims)
    })
}

fn claim_slots(tx: &rusqlite::Transaction<'_>, now: i64) -> Result<Vec<Claim>, StoreError> {
    let due: Vec<Task> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE status = 'active' AND next_due <= ?1 ORDER BY next_due"
        ))?;
        stmt.query_map([now], read_task)?
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut claims = Vec::new();
    for task in due {
        let Some(slot) = task.next_due else { continue };
        let next = task
            .schedule()
            .ok()
            .and_then(|s| s.next_after(slot.max(now)));
        let status = if next.is_some() { "active" } else { "done" };
        tx.execute(
            "UPDATE tasks SET next_due = ?2, status = ?3 WHERE id = ?1",
            params![task.id, next, status],
        )?;
        let missed = now - slot >= GRACE_MS;
        if missed && !task.catch_up {
            tx.execute(
                "INSERT INTO task_runs (task_id, slot, attempt, status, started_at, finished_at, error)
                 VALUES (?1, ?2, 1, 'skipped', ?3, ?3, 'missed while the daemon was down; this task skips missed slots')",
                params![task.id, slot, now],
            )?;
            continue;
        }
        claims.push(start_run(tx, task, slot, 1, now)?);
    }
    Ok(claims)
}

/// Record a run of `task`'s `slot` as running, and claim it.
fn start_run(
    tx: &rusqlite::Transaction<'_>,
    task: Task,
    slot: i64,
    attempt: u32,
    now: i64,
) -> Result<Claim, StoreError> {
    tx.execute(
        "INSERT INTO task_runs (task_id, slot, attempt, status, started_at) VALUES (?1, ?2, ?3, 'running', ?4)",
        params![task.id, slot, attempt, now],
    )?;
    Ok(Claim {
        run_id: tx.last_insert_rowid(),
        task,
        slot,
        attempt,
    })
}

/// The next attempt of each failed run whose retry is due, for the same slot.
fn claim_retries(tx: &rusqlite::Transaction<'_>, now: i64) -> Result<Vec<Claim>, StoreError> {
    let due: Vec<(i64, i64, i64, u32)> = {
        let mut stmt = tx.prepare(
            "SELECT id, task_id, slot, attempt FROM task_runs WHERE retry_at <= ?1 ORDER BY retry_at",
        )?;
        stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut claims = Vec::new();
    for (failed_run, task_id, slot, attempt) in due {
        tx.execute(
            "UPDATE task_runs SET retry_at = NULL WHERE id = ?1",
            [failed_run],
        )?;
        let task = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
                [task_id],
                read_task,
            )
            .optional()?;
        // A one-shot is done once claimed; its retries still run. Pausing and removing drop
        // retries, so another status here is only a guard.
        let Some(task) = task.filter(|t| t.status == "active" || t.status == "done") else {
            continue;
        };
        claims.push(start_run(tx, task, slot, attempt.saturating_add(1), now)?);
    }
    Ok(claims)
}

/// How a run ended.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    Ok(&'a str),
    /// Failed for good.
    Failed(&'a str),
    /// Failed; to be tried again at this time (ms since the epoch).
    Retry(&'a str, i64),
}

/// Record how a run ended.
pub fn finish(
    store: &Store,
    run_id: i64,
    outcome: Outcome<'_>,
    now: i64,
) -> Result<(), StoreError> {
    let (status, result, error, retry_at) = match outcome {
        Outcome::Ok(r) => ("ok", Some(r), None, None),
        Outcome::Failed(e) => ("failed", None, Some(e), None),
        Outcome::Retry(e, at) => ("failed", None, Some(e), Some(at)),
    };
    store.with_conn(|c| {
        c.execute(
            "UPDATE task_runs SET status = ?2, result = ?3, error = ?4, finished_at = ?5, retry_at = ?6 WHERE id = ?1",
            params![run_id, status, result, error, now, retry_at],
        )?;
        Ok(())
    })
}

/// At start: runs left running by a process that died are abandoned, not run again.
pub fn abandon_running(store: &Store, now: i64) -> Result<usize, StoreError> {
    store.with_conn(|c| {
        Ok(c.execute(
            "UPDATE task_runs SET status = 'abandoned', finished_at = ?1, error = 'the daemon stopped during this run' WHERE status = 'running'",
            [now],
        )?)
    })
}

/// A task's run log, newest first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub id: i64,
    pub slot: i64,
    pub attempt: i64,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub result: Option<String>,
    /// When a failed run is to be tried again.
    pub retry_at: Option<i64>,
}

pub fn runs(store: &Store, task: i64, limit: usize) -> Result<Vec<Run>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare(
            "SELECT id, slot, attempt, status, started_at, finished_at, error, result, retry_at FROM task_runs WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![task, limit as i64], |r| {
            Ok(Run {
                id: r.get(0)?,
                slot: r.get(1)?,
                attempt: r.get(2)?,
                status: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                error: r.get(6)?,
                result: r.get(7)?,
                retry_at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    fn every_minute(catch_up: bool) -> NewTask {
        NewTask {
            group: "main".into(),
            name: "t".into(),
            when: When::Every("1m".into()),
            prompt: "do it".into(),
            isolated: false,
            post: true,
            catch_up,
            role: SenderRole::Owner,
            tainted: false,
        }
    }

    #[test]
    fn a_due_slot_is_claimed_once() {
        let (_d, s) = store();
        let t = add(&s, &every_minute(true), 0).unwrap();
        assert_eq!(t.next_due, Some(MIN));
        assert!(claim_due(&s, MIN - 1).unwrap().is_empty());
        let c = claim_due(&s, MIN).unwrap();
        assert_eq!((c.len(), c[0].slot), (1, MIN));
        // Claiming again at the same instant finds nothing: the slot is taken.
        assert!(claim_due(&s, MIN).unwrap().is_empty());
        assert_eq!(get(&s, t.id).unwrap().unwrap().next_due, Some(2 * MIN));
        assert_eq!(next_due(&s).unwrap(), Some(2 * MIN));
    }

    #[test]
    fn missed_slots_run_once_on_catch_up_or_are_skipped() {
        let (_d, s) = store();
        let catch = add(&s, &every_minute(true), 0).unwrap();
        let skip = add(&s, &every_minute(false), 0).unwrap();
        // Down for an hour: sixty slots missed.
        let now = 60 * MIN + 30_000;
        let claims = claim_due(&s, now).unwrap();
        assert_eq!(claims.len(), 1, "only the catch-up task runs");
        assert_eq!((claims[0].task.id, claims[0].slot), (catch.id, MIN));
        for t in [catch.id, skip.id] {
            assert_eq!(get(&s, t).unwrap().unwrap().next_due, Some(61 * MIN));
        }
        assert_eq!(runs(&s, skip.id, 10).unwrap()[0].status, "skipped");
        assert!(claim_due(&s, now).unwrap().is_empty());
    }

    #[test]
    fn a_little_late_is_not_missed() {
        let (_d, s) = store();
        add(&s, &every_minute(false), 0).unwrap();
        assert_eq!(claim_due(&s, MIN + 5_000).unwrap().len(), 1);
    }

    #[test]
    fn one_shots_run_once_then_are_done() {
        let (_d, s) = store();
        let mut t = every_minute(true);
        t.when = When::At("1970-01-01T00:02:00Z".into());
        let task = add(&s, &t, 0).unwrap();
        assert_eq!(claim_due(&s, 2 * MIN).unwrap().len(), 1);
        assert_eq!(get(&s, task.id).unwrap().unwrap().status, "done");
        assert!(claim_due(&s, 10 * MIN).unwrap().is_empty());
        assert!(matches!(
            set_status(&s, task.id, "active", None, 10 * MIN),
            Err(TaskError::Status { .. })
        ));
    }

    #[test]
    fn bad_names_past_times_and_passed_one_shots_are_refused() {
        let (_d, s) = store();
        let mut t = every_minute(true);
        t.name = " ".into();
        assert!(matches!(add(&s, &t, 0), Err(TaskError::EmptyName)));
        t.name = "n".repeat(MAX_NAME_CHARS + 1);
        assert!(matches!(add(&s, &t, 0), Err(TaskError::LongName(_))));
        t.name = "once".into();
        t.when = When::At("1970-01-01T00:02:00Z".into());
        let e = add(&s, &t, 10 * MIN).unwrap_err();
        assert_eq!(e.to_string(), "1970-01-01T00:02:00Z is in the past");
        // A minute behind is a slow clock, not a mistake.
        let task = add(&s, &t, 2 * MIN + 30_000).unwrap();
        // Resuming a running task keeps its slot; resuming one whose time passed while paused
        // says so instead of leaving it active and never due.
        let same = set_status(&s, task.id, "active", None, 2 * MIN + 40_000).unwrap();
        assert_eq!(same.next_due, Some(2 * MIN));
        set_status(&s, task.id, "paused", None, 2 * MIN + 40_000).unwrap();
        assert!(matches!(
            set_status(&s, task.id, "active", None, 3 * MIN),
            Err(TaskError::Passed(_))
        ));
    }

    #[test]
    fn pause_and_resume_skip_what_was_paused() {
        let (_d, s) = store();
        let t = add(&s, &every_minute(true), 0).unwrap();
        set_status(&s, t.id, "paused", None, 0).unwrap();
        assert!(claim_due(&s, 10 * MIN).unwrap().is_empty());
        let resumed = set_status(&s, t.id, "active", None, 10 * MIN + 1).unwrap();
        assert_eq!(resumed.next_due, Some(11 * MIN));
        // Another group cannot touch it through the agent's tools.
        assert!(matches!(
            set_status(&s, t.id, "removed", Some("work"), 0),
            Err(TaskError::NotFound(_))
        ));
    }

    #[test]
    fn runs_left_running_are_abandoned_at_start() {
        let (_d, s) = store();
        add(&s, &every_minute(true), 0).unwrap();
        let c = claim_due(&s, MIN).unwrap().remove(0);
        assert_eq!(abandon_running(&s, 2 * MIN).unwrap(), 1);
        assert_eq!(runs(&s, c.task.id, 1).unwrap()[0].status, "abandoned");
    }

    #[test]
    fn a_failed_run_is_claimed_again_when_its_retry_is_due() {
        let (_d, s) = store();
        let t = add(&s, &every_minute(true), 0).unwrap();
        let first = claim_due(&s, MIN).unwrap().remove(0);
        finish(
            &s,
            first.run_id,
            Outcome::Retry("boom", MIN + 500),
            MIN + 100,
        )
        .unwrap();
        assert_eq!(next_due(&s).unwrap(), Some(MIN + 500));
        assert!(claim_due(&s, MIN + 499).unwrap().is_empty());
        let again = claim_due(&s, MIN + 500).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].slot, again[0].attempt), (MIN, 2));
        assert_eq!(again[0].task.id, t.id);
        // Claimed once: the retry is gone.
        assert!(claim_due(&s, MIN + 600).unwrap().is_empty());
        assert_eq!(next_due(&s).unwrap(), Some(2 * MIN));
        finish(
            &s,
            again[0].run_id,
            Outcome::Failed("boom again"),
            MIN + 700,
        )
        .unwrap();
        let log = runs(&s, t.id, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert!(
            log.iter()
                .all(|r| r.status == "failed" && r.retry_at.is_none())
        );
    }

    #[test]
    fn a_done_one_shot_is_retried_and_pausing_drops_a_retry() {
        let (_d, s) = store();
        let mut once = every_minute(true);
        once.when = When::At("1970-01-01T00:01:00Z".into());
        let once = add(&s, &once, 0).unwrap();
        let c = claim_due(&s, MIN).unwrap().remove(0);
        finish(&s, c.run_id, Outcome::Retry("boom", MIN + 1), MIN).unwrap();
        assert_eq!(get(&s, once.id).unwrap().unwrap().status, "done");
        assert_eq!(claim_due(&s, MIN + 1).unwrap().len(), 1);

        let t = add(&s, &every_minute(true), MIN).unwrap();
        let c = claim_due(&s, 2 * MIN).unwrap().remove(0);
        assert_eq!(c.task.id, t.id);
        finish(&s, c.run_id, Outcome::Retry("boom", 2 * MIN + 1), 2 * MIN).unwrap();
        set_status(&s, t.id, "paused", None, 2 * MIN).unwrap();
        assert!(claim_due(&s, 3 * MIN).unwrap().is_empty());
        assert_eq!(runs(&s, t.id, 1).unwrap()[0].retry_at, None);
    }

    #[test]
    fn ten_thousand_tasks_claim_quickly() {
        let (_d, s) = store();
        for i in 0..10_000 {
            let mut t = every_minute(true);
            t.when = When::Every(format!("{}m", 1 + i % 7));
            add(&s, &t, 0).unwrap();
        }
        let started = std::time::Instant::now();
        let claims = claim_due(&s, MIN).unwrap();
        assert_eq!(claims.len(), 10_000 / 7 + 1);
        assert_eq!(next_due(&s).unwrap(), Some(2 * MIN));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn bad_tasks_are_refused() {
        let (_d, s) = store();
        let mut t = every_minute(true);
        t.prompt = " ".into();
        assert!(matches!(add(&s, &t, 0), Err(TaskError::EmptyPrompt)));
        let mut t = every_minute(true);
        t.when = When::Cron {
            expr: "0 9 * * 1".into(),
            tz: "UTC".into(),
        };
        assert!(add(&s, &t, 0).unwrap_err().to_string().contains("names"));
    }
}
