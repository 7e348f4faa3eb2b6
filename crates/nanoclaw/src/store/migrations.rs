//! The store's schema, as numbered migrations.

/// Migrations, in order. Entry `n` moves the schema from version `n` to `n + 1`. Never edit one
/// that has shipped; add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE TABLE turns (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    channel     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done')),
    turn_id     INTEGER REFERENCES turns(id),
    received_at INTEGER NOT NULL
);
CREATE INDEX inbox_pending ON inbox(group_id, status);
CREATE TABLE history (
    id            INTEGER PRIMARY KEY,
    turn_id       INTEGER NOT NULL REFERENCES turns(id),
    seq           INTEGER NOT NULL,
    message       TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    UNIQUE (turn_id, seq)
);
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    channel     TEXT NOT NULL,
    turn_id     INTEGER NOT NULL REFERENCES turns(id),
    text        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX outbox_unsent ON outbox(group_id, channel, sent_at);
"#,
    r#"
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    group_id    TEXT,
    body        TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX audit_group ON audit(group_id, at);
CREATE INDEX audit_kind ON audit(kind, at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    approvers   TEXT NOT NULL,
    quorum      INTEGER NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('once', 'always')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    always      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    decided_at  INTEGER
);
CREATE INDEX approvals_fingerprint ON approvals(fingerprint, status);
CREATE TABLE approval_votes (
    id          INTEGER PRIMARY KEY,
    approval_id INTEGER NOT NULL REFERENCES approvals(id),
    approver    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    vote        TEXT NOT NULL CHECK (vote IN ('approve', 'approve_always', 'deny')),
    counted     INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('cron', 'every', 'once')),
    spec        TEXT NOT NULL,
    tz          TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    isolated    INTEGER NOT NULL,
    post        INTEGER NOT NULL,
    catch_up    INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done', 'removed')),
    next_due    INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tasks_due ON tasks(status, next_due);
CREATE TABLE task_runs (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    slot        INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'abandoned', 'skipped')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    result      TEXT,
    UNIQUE (task_id, slot, attempt)
);
"#,
    r#"
ALTER TABLE inbox ADD COLUMN triggered INTEGER NOT NULL DEFAULT 1;
ALTER TABLE inbox ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX inbox_external ON inbox(channel, external_id) WHERE external_id IS NOT NULL;
CREATE TABLE chats (
    channel     TEXT NOT NULL,
    chat        TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    PRIMARY KEY (channel, chat)
);
"#,
    r#"
CREATE TABLE channel_state (
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
);
"#,
    r#"
CREATE TABLE mail_threads (
    root            TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    reply_to        TEXT NOT NULL,
    last_message_id TEXT NOT NULL,
    refs            TEXT NOT NULL
);
"#,
    // A failed task run with attempts left names when to try again, so a restart does not
    // forget it.
    r#"
ALTER TABLE task_runs ADD COLUMN retry_at INTEGER;
CREATE INDEX task_runs_retry ON task_runs(retry_at) WHERE retry_at IS NOT NULL;
"#,
    // A turn that read outside content; a later turn with it in its history starts tainted.
    r#"
ALTER TABLE turns ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
"#,
    // The group's memory as each turn began, and the judgement of its current content.
    r#"
ALTER TABLE turns ADD COLUMN memory_hash TEXT;
CREATE TABLE memory_state (
    group_id    TEXT PRIMARY KEY,
    hash        TEXT NOT NULL,
    tainted     INTEGER NOT NULL
);
"#,
    // Who started each mail conversation: anyone else writing into the thread gets a
    // conversation of their own. Rows so far: the sender of the first mail stored in the
    // thread's group ("owner" stands for the owners), else the last sender.
    r#"
ALTER TABLE mail_threads ADD COLUMN starter TEXT NOT NULL DEFAULT '';
UPDATE mail_threads SET starter = COALESCE(
    (SELECT CASE WHEN i.sender LIKE 'email:%' THEN substr(i.sender, 7) ELSE i.sender END
       FROM chats c JOIN inbox i ON i.group_id = c.group_id AND i.channel = 'email'
      WHERE c.channel = 'email' AND c.chat = mail_threads.root
      ORDER BY i.id LIMIT 1),
    reply_to);
"#,
    // Each message carries the role its channel decided for its sender, and whether its text is
    // outside content; a task carries its creator's role and whether the turn that wrote it had
    // read outside content. Rows so far: the labels the channels wrote ("owner" and the API's
    // "api" for the owner) become the owner's role, everything else another's; tasks stored
    // so far run as they did (as another's, outside content).
    r#"
ALTER TABLE inbox ADD COLUMN role TEXT NOT NULL DEFAULT 'other' CHECK (role IN ('owner', 'approver', 'other'));
ALTER TABLE inbox ADD COLUMN outside INTEGER NOT NULL DEFAULT 1;
UPDATE inbox SET role = 'owner', outside = 0 WHERE sender IN ('owner', 'api');
ALTER TABLE tasks ADD COLUMN role TEXT NOT NULL DEFAULT 'other' CHECK (role IN ('owner', 'approver', 'other'));
ALTER TABLE tasks ADD COLUMN tainted INTEGER NOT NULL DEFAULT 1;
"#,
    // Groups kept from starting turns (`nanoclaw pause`) until resumed.
    r#"
CREATE TABLE group_pauses (
    group_id    TEXT PRIMARY KEY,
    paused_at   INTEGER NOT NULL
);
"#,
    // MCP tools as first seen (pinned), and a later list that differs, waiting to be trusted.
    r#"
CREATE TABLE mcp_pins (
    server      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    pinned_at   INTEGER NOT NULL,
    PRIMARY KEY (server, tool)
);
CREATE TABLE mcp_pending (
    server      TEXT PRIMARY KEY,
    list_hash   TEXT NOT NULL,
    tools       TEXT NOT NULL,
    seen_at     INTEGER NOT NULL
);
"#,
];
