//! The audit log: one writer thread per process appends events to the hash chain in the store
//! (`nanoclaw_core::audit`), in batches, so recording never waits on the disk (but a decision
//! waits until it is durable, [`Audit::durable`]); and `nanoclaw audit verify`.
//!
//! Every string in an event has secret values replaced by `[redacted secret NAME]` before the
//! event is hashed or written. Appends from several processes (the daemon, the CLI answering an
//! approval) serialize on SQLite's write lock; each batch reads the chain's head inside its
//! own transaction.
//!
//! The chain cannot vouch for its own end: cut events from the tail, or delete them all, and
//! what is left still chains. So the writer also appends the newest event's anchor
//! (`SEQ:HASH`) to `audit.anchors` beside the database, at most once a second and when it
//! closes, and `verify` holds the chain to every anchor there without being asked; it also
//! checks that every turn and message the store holds has its events.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::Context;
use nanoclaw_core::audit::{self, Event, GENESIS, Stored};
use nanoclaw_core::secret::Replacer;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Events written in one transaction at most.
const BATCH: usize = 2048;
/// The anchors file, beside the database.
pub const ANCHORS_FILE: &str = "audit.anchors";
/// How long a new turn's first events may take to reach the disk; `verify` does not hold
/// younger turns to the log.
const IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(5);
/// Shortest time between two anchors appended while events keep coming.
const ANCHOR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the writer waits before trying a failed batch again when nothing new comes.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Defines [`EventKind`] from one list: each variant with its name in the log.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $kind:ident = $name:literal,)*) => {
        /// Every kind of event the daemon records: `audit show --kind` takes these names.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $($(#[$doc])* $kind,)*
        }

        impl EventKind {
            pub const ALL: &[EventKind] = &[$(EventKind::$kind,)*];

            /// The kind's name in the log.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$kind => $name,)*
                }
            }
        }
    };
}

event_kinds! {
    /// The configuration in force when a process started.
    ConfigLoaded = "config_loaded",
    /// A message a turn took in.
    MessageReceived = "message_received",
    /// The prompt sent to the model, in full.
    Prompt = "prompt",
    /// One model step's response.
    ModelResponse = "model_response",
    /// A tool call as the model made it.
    ToolCall = "tool_call",
    /// The call in the form its tool reads it, when that differs.
    ToolCallCanonical = "tool_call_canonical",
    /// The gate's decision on a call, with every rule that matched.
    PolicyDecision = "policy_decision",
    /// An approval request was opened.
    ApprovalRequested = "approval_requested",
    /// An approver's vote that counted.
    ApprovalAnswered = "approval_answered",
    /// A vote that did not count (not an approver of the request).
    ApprovalIgnored = "approval_ignored",
    /// A request nobody answered in time (a denial).
    ApprovalExpired = "approval_expired",
    /// An approval let a call run.
    ApprovalUsed = "approval_used",
    /// What a call returned to the model.
    ToolResult = "tool_result",
    /// One network request a sandbox or a tool made.
    Egress = "egress",
    /// A call's network requests, summed up.
    EgressSummary = "egress_summary",
    /// A reply a channel accepted.
    MessageSent = "message_sent",
    /// Secrets withheld from a reply.
    ReplyWithheld = "reply_withheld",
    /// A task's slot began to run.
    TaskRun = "task_run",
    /// A task run ended.
    TaskRunFinished = "task_run_finished",
    /// The owner stopped a group's running turn.
    TurnStopped = "turn_stopped",
    /// A message was withdrawn (Ctrl-C at the terminal) before a turn took it.
    MessageWithdrawn = "message_withdrawn",
    /// An MCP server started, crashed or failed to start in a group.
    McpServer = "mcp_server",
    /// An MCP server's tool list was pinned, changed (tools held back) or trusted.
    McpTools = "mcp_tools",
    /// A group was paused or resumed.
    GroupPaused = "group_paused",
    /// A reload put an edited file in force (digests, never contents of secrets).
    ConfigChanged = "config_changed",
}

impl EventKind {
    pub fn named(name: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

/// An event could not be made durable: what must wait for it does not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    NotWritten(String),
    #[error("the audit writer has stopped")]
    Stopped,
}

enum Msg {
    Event {
        at: i64,
        kind: EventKind,
        group: Option<String>,
        data: Value,
        /// Told once the event is committed, or why it was not.
        durable: Option<tokio::sync::oneshot::Sender<Result<(), AuditError>>>,
    },
    Flush(Sender<()>),
}

/// The process's audit writer.
pub struct Audit {
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Secret values to `[redacted secret NAME]`; swapped when the secrets change. A std
    /// RwLock: held only to clone or swap the Arc.
    redactor: std::sync::RwLock<std::sync::Arc<Replacer>>,
    /// Set by the writer while it cannot write; shared with it.
    failing: std::sync::Arc<Mutex<Option<String>>>,
}

impl Audit {
    /// Start the writer on its own connection to the store at `db`.
    pub fn open(db: &Path, redactor: Replacer) -> anyhow::Result<Audit> {
        let conn = Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let (tx, rx) = channel();
        let anchors = anchors_path(db);
        let failing = std::sync::Arc::new(Mutex::new(None));
        let writer_failing = std::sync::Arc::clone(&failing);
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer(conn, rx, &anchors, &writer_failing))
            .context("starting the audit writer")?;
        Ok(Audit {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            redactor: std::sync::RwLock::new(std::sync::Arc::new(redactor)),
            failing,
        })
    }

    /// Record an event. Never blocks on the disk: for what may go on without the event being
    /// durable yet (what was seen, said and returned). A decision that lets something run uses
    /// [`Audit::durable`].
    pub fn record(&self, kind: EventKind, group: Option<&str>, data: Value) {
        if let Err(e) = self.send(kind, group, data, None) {
            tracing::error!(kind = kind.as_str(), error = %e, "audit event lost");
        }
    }

    /// Record an event and wait until it is committed. `Err` means it is not in the log, and
    /// what it would vouch for must not happen.
    pub async fn durable(
        &self,
        kind: EventKind,
        group: Option<&str>,
        data: Value,
    ) -> Result<(), AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(kind, group, data, Some(tx))?;
        rx.await.unwrap_or(Err(AuditError::Stopped))
    }

    /// Redact with `redactor` from now on (the secrets changed).
    pub fn set_redactor(&self, redactor: Replacer) {
        *self.redactor.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(redactor);
    }

    /// Why the last batch could not be written, while the writer cannot write (it tries the
    /// events again with every later batch).
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn send(
        &self,
        kind: EventKind,
        group: Option<&str>,
        mut data: Value,
        durable: Option<tokio::sync::oneshot::Sender<Result<(), AuditError>>>,
    ) -> Result<(), AuditError> {
        let redactor =
            std::sync::Arc::clone(&self.redactor.read().unwrap_or_else(|p| p.into_inner()));
        redact(&redactor, &mut data);
        let msg = Msg::Event {
            at: now_ms(),
            kind,
            group: group.map(str::to_owned),
            data,
            durable,
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(msg).map_err(|_| AuditError::Stopped),
            None => Err(AuditError::Stopped),
        }
    }

    /// Wait until every event recorded so far is committed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            match tx.as_ref() {
                Some(tx) if tx.send(Msg::Flush(done_tx)).is_ok() => {}
                _ => return,
            }
        }
        let _ = done_rx.recv();
    }

    /// Flush and stop the writer.
    pub fn close(&self) {
        self.flush();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.close();
    }
}

/// Milliseconds since the epoch. (Not the store's clock: this module stands alone, so the
/// audit benchmark can build it.)
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replace secret values in every string of `value`.
fn redact(redactor: &Replacer, value: &mut Value) {
    if redactor.is_empty() {
        return;
    }
    match value {
        Value::String(s) if redactor.contains(s.as_bytes()) => *s = redactor.replace_str(s),
        Value::Array(items) => items.iter_mut().for_each(|v| redact(redactor, v)),
        Value::Object(map) => map.values_mut().for_each(|v| redact(redactor, v)),
        _ => {}
    }
}

/// Where the anchors of the database at `db` are kept.
pub fn anchors_path(db: &Path) -> std::path::PathBuf {
    db.with_file_name(ANCHORS_FILE)
}

/// Append `head`, the newest event this writer appended, to the anchors file (created 0600)
/// unless it is there already. Failing to is logged: the chain itself is intact, only the
/// outside witness misses a line.
fn write_anchor(head: &Anchor, anchors: &Path, last: &mut Option<u64>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if *last == Some(head.seq) {
        return;
    }
    let line = format!("{head}\n");
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(anchors)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    match written {
        Ok(()) => *last = Some(head.seq),
        Err(e) => {
            tracing::error!(file = %anchors.display(), error = %e, "could not append the audit anchor")
        }
    }
}

type Pending = (i64, EventKind, Option<String>, Value);

fn writer(conn: Connection, rx: Receiver<Msg>, anchors: &Path, failing: &Mutex<Option<String>>) {
    // The newest event this writer appended, and the last one written to the anchors file.
    let mut head: Option<Anchor> = None;
    let mut anchored = None;
    let mut anchored_at = std::time::Instant::now();
    // Events a failed batch could not write: tried again, first, with the next batch, so
    // nothing recorded is dropped while the disk refuses.
    let mut backlog: Vec<Pending> = Vec::new();
    loop {
        let first = if backlog.is_empty() {
            match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(RETRY_AFTER) {
                Ok(msg) => Some(msg),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut events = std::mem::take(&mut backlog);
        let mut durable = Vec::new();
        let mut waiting = Vec::new();
        let mut next = first;
        while let Some(msg) = next {
            match msg {
                Msg::Event {
                    at,
                    kind,
                    group,
                    data,
                    durable: tell,
                } => {
                    events.push((at, kind, group, data));
                    durable.extend(tell);
                }
                Msg::Flush(done) => waiting.push(done),
            }
            next = if events.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !events.is_empty() {
            match append(&conn, &events) {
                Ok(appended) => {
                    head = Some(appended);
                    *failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    for tell in durable {
                        let _ = tell.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, events = events.len(), "audit events could not be written; trying again");
                    let why = e.to_string();
                    *failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                    for tell in durable {
                        let _ = tell.send(Err(AuditError::NotWritten(why.clone())));
                    }
                    backlog = events;
                }
            }
        }
        if let Some(head) = &head
            && (anchored_at.elapsed() >= ANCHOR_EVERY || anchored.is_none())
        {
            write_anchor(head, anchors, &mut anchored);
            anchored_at = std::time::Instant::now();
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
    if !backlog.is_empty() && append(&conn, &backlog).is_err() {
        tracing::error!(
            events = backlog.len(),
            "audit events could not be written before the writer stopped"
        );
    }
    if let Some(head) = &head {
        write_anchor(head, anchors, &mut anchored);
    }
}

fn not_stored(seq: u64) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        format!("audit event {seq} was not stored (the database dropped the row)").into(),
    )
}

/// Append a batch to the chain in one transaction; returns the chain's new head.
fn append(conn: &Connection, events: &[Pending]) -> rusqlite::Result<Anchor> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let head: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (mut seq, mut prev) = match head {
        Some((seq, hash)) => {
            let mut prev = GENESIS;
            if hash.len() == prev.len() {
                prev.copy_from_slice(&hash);
            }
            (seq as u64, prev)
        }
        None => (0, GENESIS),
    };
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, at, kind, group_id, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (at, kind, group, data) in events {
            seq += 1;
            let event = Event {
                seq,
                at: *at,
                kind: kind.as_str().to_owned(),
                group: group.clone(),
                data: data.clone(),
            };
            let body = event.body();
            let hash = audit::hash(&prev, &body);
            let stored = insert.execute(params![
                seq as i64,
                event.at,
                event.kind,
                event.group,
                body,
                &prev[..],
                &hash[..]
            ])?;
            // A trigger that drops a row quietly (`RAISE(IGNORE)`) must not pass for a write.
            if stored != 1 {
                return Err(not_stored(seq));
            }
            prev = hash;
        }
    }
    // And the head is what was just written, read back in the same transaction.
    let head: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if head != Some((seq as i64, prev.to_vec())) {
        return Err(not_stored(seq));
    }
    tx.commit()?;
    Ok(Anchor {
        seq,
        hash: prev.to_vec(),
    })
}

pub fn read_stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        kind: r.get(2)?,
        group: r.get(3)?,
        body: r.get(4)?,
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
    })
}

/// An event's position and hash, written `SEQ:HEX`. The newest event's, kept outside the data
/// dir, later proves that nothing up to it was changed or removed: the chain alone cannot show
/// that its newest events were cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: Vec<u8>,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, nanoclaw_core::hex::encode(&self.hash))
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{text:?} is not an anchor (SEQ:HASH, as `audit verify` prints it): {why}")
        };
        let (seq, hex) = text.trim().split_once(':').ok_or_else(|| bad("no ':'"))?;
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| bad("SEQ is not an event number"))?;
        let hash = nanoclaw_core::hex::decode(hex)
            .filter(|h| h.len() == 32)
            .ok_or_else(|| bad("HASH is not 64 hex digits"))?;
        Ok(Anchor { seq, hash })
    }
}

/// A chain that verified: how many events, its newest event, and how many anchors of the
/// anchors file it was held to.
#[derive(Debug)]
pub struct Verified {
    pub events: u64,
    pub head: Option<Anchor>,
    pub anchors: usize,
}

/// Why the log did not verify.
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    #[error(transparent)]
    Broken(#[from] audit::Broken),
    #[error(
        "the audit log ends at event {last}, before the anchor's event {anchored}: events were removed from its end"
    )]
    Cut { last: u64, anchored: u64 },
    #[error(
        "event {0} does not have the anchor's hash: the log up to it was rewritten (its chain was recomputed)"
    )]
    Rewritten(u64),
    #[error(
        "the store holds {what} {id}, but the audit log has no event of it (the newest it records is {newest}): events were removed"
    )]
    Unrecorded {
        what: &'static str,
        id: i64,
        newest: String,
    },
}

/// The anchors kept in the anchors file of `db` (none if there is no file).
fn read_anchors(db: &Path) -> anyhow::Result<Vec<Anchor>> {
    let path = anchors_path(db);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            l.parse::<Anchor>()
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))
        })
        .collect()
}

/// Check the whole chain; that it still holds `anchor` if one is given and every anchor of
/// the anchors file; and that every turn and message of the store has its events.
pub fn verify(db: &Path, anchor: Option<&Anchor>) -> anyhow::Result<Result<Verified, Unverified>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))?;
    let mut anchors = read_anchors(db)?;
    let kept = anchors.len();
    anchors.extend(anchor.cloned());
    let wanted: std::collections::HashMap<u64, Vec<u8>> =
        anchors.iter().map(|a| (a.seq, a.hash.clone())).collect();
    let mut found: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    // The newest turn and message the log records.
    let (mut newest_turn, mut newest_message) = (0i64, 0i64);
    let mut stmt = conn
        .prepare("SELECT seq, at, kind, group_id, body, prev_hash, hash FROM audit ORDER BY seq")?;
    let mut failure = None;
    let mut head = None;
    let rows = stmt
        .query_map([], read_stored)?
        .map_while(|r| match r {
            Ok(s) => Some(s),
            Err(e) => {
                failure = Some(e);
                None
            }
        })
        .inspect(|s| {
            if wanted.contains_key(&s.seq) {
                found.insert(s.seq, s.hash.clone());
            }
            if s.kind == "message_received"
                && let Ok(body) = serde_json::from_str::<Value>(&s.body)
            {
                let field = |k: &str| body["data"][k].as_i64().unwrap_or(0);
                newest_turn = newest_turn.max(field("turn"));
                newest_message = newest_message.max(field("inbox_id"));
            }
            head = Some(Anchor {
                seq: s.seq,
                hash: s.hash.clone(),
            });
        });
    let result = audit::verify(rows);
    if let Some(e) = failure {
        return Err(e).context("reading the audit log");
    }
    let events = match result {
        Ok(n) => n,
        Err(broken) => return Ok(Err(broken.into())),
    };
    // The newest anchor first: a cut tail is named as such.
    anchors.sort_by_key(|a| std::cmp::Reverse(a.seq));
    for a in &anchors {
        match found.get(&a.seq) {
            None => {
                return Ok(Err(Unverified::Cut {
                    last: events,
                    anchored: a.seq,
                }));
            }
            Some(hash) if *hash != a.hash => return Ok(Err(Unverified::Rewritten(a.seq))),
            Some(_) => {}
        }
    }
    // What the store holds beyond what the log records was recorded once and removed since:
    // a turn's messages are recorded as it starts.
    let newest = |turn: i64| {
        if turn == 0 {
            "none".to_owned()
        } else {
            format!("turn {turn}")
        }
    };
    // A turn that started a moment ago may have its first events still on their way to the
    // disk (the writer batches): only turns older than this are held to the log.
    let settled = now_ms() - IN_FLIGHT.as_millis() as i64;
    let beyond = |sql: &str, after: i64| -> anyhow::Result<Option<i64>> {
        conn.query_row(sql, [after, settled], |r| r.get(0))
            .optional()
            .context("reading the store to cross-check the audit log")
    };
    if let Some(id) = beyond(
        "SELECT id FROM turns WHERE id > ?1 AND started_at < ?2 AND EXISTS (SELECT 1 FROM inbox WHERE inbox.turn_id = turns.id) ORDER BY id LIMIT 1",
        newest_turn,
    )? {
        return Ok(Err(Unverified::Unrecorded {
            what: "turn",
            id,
            newest: newest(newest_turn),
        }));
    }
    if let Some(id) = beyond(
        "SELECT id FROM inbox WHERE id > ?1 AND turn_id IN (SELECT id FROM turns WHERE started_at < ?2) ORDER BY id LIMIT 1",
        newest_message,
    )? {
        return Ok(Err(Unverified::Unrecorded {
            what: "message",
            id,
            newest: newest(newest_turn),
        }));
    }
    Ok(Ok(Verified {
        events,
        head,
        anchors: kept,
    }))
}
