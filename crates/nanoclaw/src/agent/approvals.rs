//! Approval requests: created when the gate says `ask`, kept in the store (so a restart loses
//! none), shown to approvers through their channels ([`Presenter`]), answered by configured
//! approvers only, and waited on by the turn that asked.
//!
//! A request is bound to the fingerprint of (tool, arguments, group). A request whose call
//! stops waiting first (stopped, timed out, its process ending) is withdrawn; one left pending
//! by a process that died is met again by a turn that asks for the same fingerprint. An approval of
//! scope `once` is used up by the one call it was asked for; `always` stands for every later
//! call with that exact fingerprint. No answer by the deadline means deny.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_core::approval::{self, Tally, Vote};
use nanoclaw_core::policy::{ApprovalSpec, Scope};
use nanoclaw_core::{GroupId, ToolCall};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use crate::audit::Audit;
use crate::store::{Store, StoreError, now};

/// How often a waiting turn looks at its request (answers may come from another process).
const POLL: Duration = Duration::from_millis(200);

/// A request as approvers see it.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: i64,
    pub code: String,
    pub group: String,
    pub tool: String,
    pub arguments: Value,
    pub reason: String,
    pub approvers: Vec<String>,
    pub quorum: usize,
    pub status: Status,
    pub expires_at: i64,
}

/// Where a request stands. The store's `status` column holds these names (its CHECK admits
/// no others); they are read into this type once, in [`read_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    /// A `once` approval its call has used.
    Used,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Used => "used",
        }
    }

    fn named(name: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Expired,
            Status::Used,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn status_column(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Status> {
    let name: String = r.get(idx)?;
    Status::named(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("{name:?} is not an approval status").into(),
        )
    })
}

/// The hook a channel implements to put a request in front of its approvers.
pub trait Presenter: Send + Sync {
    fn present(&self, request: &Request);
}

/// How a waited-on request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `by`: who approved (their names, or which earlier approval stood for them).
    Approved {
        standing: bool,
        by: String,
    },
    Denied {
        by: String,
    },
    Expired {
        after: Duration,
    },
}

/// While a call waits on its request; dropped with the wait (answered, or the call ended
/// first: stopped, timed out, its process ending), it withdraws the request if still pending,
/// so no approver grants, and no later identical call uses, an answer nothing waits for.
struct Withdraw<'a> {
    approvals: &'a Approvals,
    id: i64,
    group: &'a GroupId,
    tool: &'a str,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.approvals.withdraw(self.id, self.group, self.tool);
    }
}

pub struct Approvals {
    store: Arc<Store>,
    audit: Arc<Audit>,
    /// Each surface's presenter, by name. A std Mutex: read to present, written when a channel
    /// starts or restarts; never held across await.
    presenters: std::sync::Mutex<Vec<(&'static str, Arc<dyn Presenter>)>>,
}

fn read_request(r: &rusqlite::Row<'_>) -> rusqlite::Result<Request> {
    let args: String = r.get(4)?;
    let approvers: String = r.get(6)?;
    Ok(Request {
        id: r.get(0)?,
        code: r.get(1)?,
        group: r.get(2)?,
        tool: r.get(3)?,
        arguments: serde_json::from_str(&args).unwrap_or(Value::Null),
        reason: r.get(5)?,
        approvers: serde_json::from_str(&approvers).unwrap_or_default(),
        quorum: r.get::<_, i64>(7)? as usize,
        status: status_column(r, 8)?,
        expires_at: r.get(9)?,
    })
}

const COLUMNS: &str =
    "id, code, group_id, tool, arguments, reason, approvers, quorum, status, expires_at";

impl Approvals {
    pub fn new(
        store: Arc<Store>,
        audit: Arc<Audit>,
        presenters: Vec<(&'static str, Arc<dyn Presenter>)>,
    ) -> Self {
        Approvals {
            store,
            audit,
            presenters: std::sync::Mutex::new(presenters),
        }
    }

    /// Show requests through `presenter` as `name` (a channel that started later), in place of
    /// any presenter of that name before (a restarted channel's); `None` removes it.
    pub fn set_presenter(&self, name: &'static str, presenter: Option<Arc<dyn Presenter>>) {
        let mut all = self.presenters.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(n, _)| *n != name);
        if let Some(presenter) = presenter {
            all.push((name, presenter));
        }
    }

    /// Ask for approval of `call` and wait for the answer.
    pub async fn decide(
        &self,
        group: &GroupId,
        call: &ToolCall,
        spec: &ApprovalSpec,
        reason: &str,
    ) -> Result<Outcome, DecideError> {
        let fp = approval::fingerprint(&call.name, &call.arguments, group.as_str());
        if let Some(outcome) = self.already_approved(&fp)? {
            let standing = matches!(outcome, Outcome::Approved { standing: true, .. });
            self.used(group, call, &fp, standing, None).await?;
            return Ok(outcome);
        }
        let (request, _) = self.open_request(group, call, spec, reason, &fp)?;
        let _withdraw = Withdraw {
            approvals: self,
            id: request.id,
            group,
            tool: &call.name,
        };
        self.present(&request);
        loop {
            tokio::time::sleep(POLL).await;
            let Some(current) = self.get(request.id)? else {
                return Ok(Outcome::Denied {
                    by: "(the request disappeared)".into(),
                });
            };
            match current.status {
                Status::Approved => {
                    let standing = self.store.with_conn(|c| {
                        let always: i64 = c.query_row(
                            "SELECT always FROM approvals WHERE id = ?1",
                            [request.id],
                            |r| r.get(0),
                        )?;
                        if always == 0 {
                            c.execute(
                                "UPDATE approvals SET status = 'used' WHERE id = ?1 AND status = 'approved'",
                                [request.id],
                            )?;
                        }
                        Ok(always != 0)
                    })?;
                    self.used(group, call, &fp, standing, Some(request.id))
                        .await?;
                    let by = self.store.with_conn(|c| {
                        let mut stmt = c.prepare(
                            "SELECT approver FROM approval_votes WHERE approval_id = ?1 AND vote = 'approve' AND counted = 1 ORDER BY id",
                        )?;
                        let names = stmt
                            .query_map([request.id], |r| r.get::<_, String>(0))?
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(names.join(", "))
                    })?;
                    return Ok(Outcome::Approved { standing, by });
                }
                Status::Denied => {
                    let by = self.store.with_conn(|c| {
                        Ok(c.query_row(
                            "SELECT approver FROM approval_votes WHERE approval_id = ?1 AND vote = 'deny' AND counted = 1 ORDER BY id LIMIT 1",
                            [request.id],
                            |r| r.get::<_, String>(0),
                        )
                        .optional()?
                        .unwrap_or_default())
                    })?;
                    return Ok(Outcome::Denied { by });
                }
                Status::Pending if now() >= current.expires_at => {
                    let expired = self.store.with_conn(|c| {
                        Ok(c.execute(
                            "UPDATE approvals SET status = 'expired', decided_at = ?2 WHERE id = ?1 AND status = 'pending'",
                            params![request.id, now()],
                        )? == 1)
                    })?;
                    if expired {
                        self.audit.record(
                            crate::audit::EventKind::ApprovalExpired,
                            Some(group.as_str()),
                            json!({"request": request.id, "code": request.code, "tool": call.name}),
                        );
                        return Ok(Outcome::Expired {
                            after: spec.timeout,
                        });
                    }
                }
                Status::Pending => {}
                other @ (Status::Expired | Status::Used) => {
                    return Ok(Outcome::Denied {
                        by: format!("(request is {other})"),
                    });
                }
            }
        }
    }

    /// Withdraw request `id` if it is still pending: the call waiting on it ended first.
    fn withdraw(&self, id: i64, group: &GroupId, tool: &str) {
        let withdrawn = self.store.with_conn(|c| {
            Ok(c.execute(
                "UPDATE approvals SET status = 'expired', decided_at = ?2 WHERE id = ?1 AND status = 'pending'",
                params![id, now()],
            )? == 1)
        });
        match withdrawn {
            Ok(true) => self.audit.record(
                crate::audit::EventKind::ApprovalExpired,
                Some(group.as_str()),
                json!({"request": id, "tool": tool, "withdrawn": "its call ended before an answer"}),
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(request = id, error = %e, "could not withdraw an approval request")
            }
        }
    }

    /// Record, durably, that an approval lets `call` run: until this is in the log, it does
    /// not run.
    async fn used(
        &self,
        group: &GroupId,
        call: &ToolCall,
        fp: &str,
        standing: bool,
        request: Option<i64>,
    ) -> Result<(), DecideError> {
        self.audit
            .durable(
                crate::audit::EventKind::ApprovalUsed,
                Some(group.as_str()),
                json!({"tool": call.name, "call_id": call.id, "fingerprint": fp, "standing": standing, "request": request}),
            )
            .await?;
        Ok(())
    }

    fn present(&self, request: &Request) {
        let presenters = self
            .presenters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (_, p) in &presenters {
            p.present(request);
        }
    }

    /// Ask without waiting, for a decision no turn waits on (admitting a new sender): the
    /// request is opened and shown once; asking again finds the same one.
    pub fn ask_later(
        &self,
        group: &GroupId,
        call: &ToolCall,
        spec: &ApprovalSpec,
        reason: &str,
    ) -> Result<Request, DecideError> {
        let fp = approval::fingerprint(&call.name, &call.arguments, group.as_str());
        let (request, created) = self.open_request(group, call, spec, reason, &fp)?;
        if created {
            self.present(&request);
        }
        Ok(request)
    }

    /// Whether this exact call was ever approved.
    pub fn was_approved(&self, group: &GroupId, call: &ToolCall) -> bool {
        let fp = approval::fingerprint(&call.name, &call.arguments, group.as_str());
        self.store
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM approvals WHERE fingerprint = ?1 AND status IN ('approved', 'used'))",
                    [&fp],
                    |r| r.get::<_, bool>(0),
                )?)
            })
            .unwrap_or(false)
    }

    /// A standing grant, or an unused approval of this exact call (used up now).
    fn already_approved(&self, fp: &str) -> Result<Option<Outcome>, StoreError> {
        self.store.with_conn(|c| {
            let standing: Option<i64> = c
                .query_row(
                    "SELECT id FROM approvals WHERE fingerprint = ?1 AND always = 1 AND status IN ('approved', 'used') LIMIT 1",
                    [fp],
                    |r| r.get(0),
                )
                .optional()?;
            if standing.is_some() {
                return Ok(Some(Outcome::Approved {
                    standing: true,
                    by: "a standing approval".into(),
                }));
            }
            let once = c.execute(
                "UPDATE approvals SET status = 'used' WHERE id = (SELECT id FROM approvals WHERE fingerprint = ?1 AND status = 'approved' AND always = 0 ORDER BY id LIMIT 1)",
                [fp],
            )?;
            Ok((once == 1).then(|| Outcome::Approved {
                standing: false,
                by: "an earlier approval of this exact call".into(),
            }))
        })
    }

    /// The pending request for this fingerprint, or a new one.
    fn open_request(
        &self,
        group: &GroupId,
        call: &ToolCall,
        spec: &ApprovalSpec,
        reason: &str,
        fp: &str,
    ) -> Result<(Request, bool), DecideError> {
        let existing = self.store.with_conn(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE fingerprint = ?1 AND status = 'pending' AND expires_at > ?2 ORDER BY id LIMIT 1"),
                params![fp, now()],
                read_request,
            )
            .optional()?)
        })?;
        if let Some(r) = existing {
            return Ok((r, false));
        }
        // A code from a failed randomness source would be guessable: no request without one.
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| DecideError::NoRandomness(e.to_string()))?;
        let code = approval::code(&random);
        let expires_at = now() + spec.timeout.as_millis() as i64;
        let scope = match spec.scope {
            Scope::Once => "once",
            Scope::Always => "always",
        };
        let id = self.store.with_conn(|c| {
            c.execute(
                "INSERT INTO approvals (code, fingerprint, group_id, tool, arguments, reason, approvers, quorum, scope, status, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)",
                params![
                    code,
                    fp,
                    group.as_str(),
                    call.name,
                    call.arguments.to_string(),
                    reason,
                    serde_json::to_string(&spec.approvers).unwrap_or_default(),
                    spec.quorum as i64,
                    scope,
                    now(),
                    expires_at
                ],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        let request = Request {
            id,
            code,
            group: group.to_string(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            reason: reason.to_owned(),
            approvers: spec.approvers.clone(),
            quorum: spec.quorum,
            status: Status::Pending,
            expires_at,
        };
        self.audit.record(
 crate::audit::EventKind::ApprovalRequested,
            Some(group.as_str()),
            json!({"request": id, "code": request.code, "tool": call.name, "arguments": call.arguments, "fingerprint": fp, "reason": reason, "approvers": spec.approvers, "quorum": spec.quorum, "scope": scope, "expires_at": expires_at}),
        );
        Ok((request, true))
    }

    fn get(&self, id: i64) -> Result<Option<Request>, StoreError> {
        get(&self.store, id)
    }
}

fn get(store: &Store, id: i64) -> Result<Option<Request>, StoreError> {
    store.with_conn(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            read_request,
        )
        .optional()?)
    })
}

/// Requests, newest first; only pending ones unless `all`.
pub fn list(store: &Store, all: bool) -> Result<Vec<Request>, StoreError> {
    store.with_conn(|c| {
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals {} ORDER BY id DESC LIMIT 200",
            if all { "" } else { "WHERE status = 'pending'" }
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map([], read_request)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// The request with this id or code (a code that is all digits is taken as the code).
pub fn find(store: &Store, key: &str) -> Result<Option<Request>, StoreError> {
    let key = key.trim();
    store.with_conn(|c| {
        let by_id = key.parse::<i64>().ok();
        Ok(c.query_row(
            &format!(
                "SELECT {COLUMNS} FROM approvals WHERE id = ?1 OR code = ?2 ORDER BY code = ?2 DESC LIMIT 1"
            ),
            params![by_id, approval::normalize_code(key)],
            read_request,
        )
        .optional()?)
    })
}

/// Why a wait for approval ended without an outcome: the call does not run.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("no OS randomness for an approval code: {0}")]
    NoRandomness(String),
}

/// Where a request stands, in words, for the log and the people reading it.
fn tally_words(tally: &Tally) -> String {
    match tally {
        Tally::Pending { approvals } => format!("{approvals} approval(s) so far, more needed"),
        Tally::Approved { always: false } => "approved once".into(),
        Tally::Approved { always: true } => "approved always".into(),
        Tally::Denied { by } => format!("denied by {by}"),
    }
}

/// Deny every pending request of `group` (its turn was stopped). Returns how many.
pub fn deny_pending(store: &Store, group: &GroupId) -> Result<usize, StoreError> {
    store.with_conn(|c| {
        Ok(c.execute(
            "UPDATE approvals SET status = 'denied', decided_at = ?2 WHERE group_id = ?1 AND status = 'pending'",
            params![group.as_str(), now()],
        )?)
    })
}

/// Why an answer did not count.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no approval request {0:?}")]
    NotFound(String),
    #[error("request {id} is already {status}")]
    Decided { id: i64, status: Status },
    /// The answer came from someone at this machine, but which approver they are is unclear.
    #[error("{0}")]
    WhichApprover(String),
    /// A chat user who is no approver: nothing is stored and nothing is said to them.
    #[error("only approvers answer approval requests")]
    Stranger,
    #[error(
        "{approver} is not an approver for request {id} (its approvers: {approvers}); the answer was recorded and ignored"
    )]
    NotAnApprover {
        id: i64,
        approver: String,
        approvers: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who answers, as the surface the answer came through knows them.
pub enum Answerer<'a> {
    /// Someone with the owner's own access (the CLI, the terminal, the token-guarded API),
    /// answering as `named` or as the one terminal approver (see [`terminal_approver`]).
    AtTerminal {
        channel: &'a str,
        named: Option<&'a str>,
    },
    /// A chat user on `channel`: the approver whose `ids` list them there, if any.
    InChat { channel: &'a str, user: &'a str },
}

/// The one way an approval request is answered, from every surface: find the request (by id or
/// code), decide which approver is answering, record the vote, and return where the request
/// stands after it.
pub fn answer(
    store: &Store,
    audit: &Audit,
    policy: &nanoclaw_core::Policy,
    key: &str,
    answerer: &Answerer<'_>,
    vote: Vote,
) -> Result<Tally, AnswerError> {
    let request = find(store, key)?;
    let (approver, channel) = match answerer {
        Answerer::AtTerminal { channel, named } => {
            // At this machine, an unknown code is said first (no secret is kept from the owner).
            let Some(found) = request.as_ref() else {
                return Err(AnswerError::NotFound(key.trim().to_owned()));
            };
            (
                terminal_approver(policy, *named, Some(found))
                    .map_err(AnswerError::WhichApprover)?,
                *channel,
            )
        }
        Answerer::InChat { channel, user } => {
            // Nothing is stored for a stranger: they can neither fill the store nor learn which
            // requests are open.
            let approver = policy
                .approvers()
                .iter()
                .find(|a| {
                    a.ids
                        .get(*channel)
                        .is_some_and(|ids| ids.iter().any(|i| i == user))
                })
                .ok_or(AnswerError::Stranger)?;
            (approver.name.clone(), *channel)
        }
    };
    let request = request.ok_or_else(|| AnswerError::NotFound(key.trim().to_owned()))?;
    let approver = approver.as_str();
    let counted = request.approvers.iter().any(|a| a == approver);
    let vote_text = match vote {
        Vote::Approve { always: false } => "approve",
        Vote::Approve { always: true } => "approve_always",
        Vote::Deny => "deny",
    };
    // Whether the request is still open is read in the same transaction that records the
    // vote: an answer racing the deadline cannot turn an expired request into an approval.
    let decided = store.with_conn(|c| {
        let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
        let (status, expires_at): (Status, i64) = tx.query_row(
            "SELECT status, expires_at FROM approvals WHERE id = ?1",
            [request.id],
            |r| Ok((status_column(r, 0)?, r.get(1)?)),
        )?;
        let at = now();
        if status == Status::Pending && at >= expires_at {
            tx.execute(
                "UPDATE approvals SET status = 'expired', decided_at = ?2 WHERE id = ?1 AND status = 'pending'",
                params![request.id, at],
            )?;
            tx.commit()?;
            return Ok(Err(Status::Expired));
        }
        if status != Status::Pending {
            return Ok(Err(status));
        }
        tx.execute(
            "INSERT INTO approval_votes (approval_id, approver, channel, vote, counted, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![request.id, approver, channel, vote_text, counted as i64, at],
        )?;
        let mut stmt = tx.prepare(
            "SELECT approver, vote FROM approval_votes WHERE approval_id = ?1 AND counted = 1 ORDER BY id",
        )?;
        let votes: Vec<(String, Vote)> = stmt
            .query_map([request.id], |r| {
                let v: String = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    match v.as_str() {
                        "deny" => Vote::Deny,
                        "approve_always" => Vote::Approve { always: true },
                        _ => Vote::Approve { always: false },
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let tally = approval::tally(&request.approvers, request.quorum, &votes);
        match &tally {
            Tally::Approved { always } => {
                tx.execute(
                    "UPDATE approvals SET status = 'approved', always = (?2 OR scope = 'always'), decided_at = ?3 WHERE id = ?1 AND status = 'pending'",
                    params![request.id, *always, at],
                )?;
            }
            Tally::Denied { .. } => {
                tx.execute(
                    "UPDATE approvals SET status = 'denied', decided_at = ?2 WHERE id = ?1 AND status = 'pending'",
                    params![request.id, at],
                )?;
            }
            Tally::Pending { .. } => {}
        }
        tx.commit()?;
        Ok(Ok(tally))
    })?;
    let tally = decided.map_err(|status| AnswerError::Decided {
        id: request.id,
        status,
    })?;
    audit.record(
        if counted {
 crate::audit::EventKind::ApprovalAnswered
 } else {
 crate::audit::EventKind::ApprovalIgnored
 },
        Some(&request.group),
        json!({"request": request.id, "code": request.code, "approver": approver, "channel": channel, "vote": vote_text, "counted": counted, "result": tally_words(&tally)}),
    );
    if !counted {
        return Err(AnswerError::NotAnApprover {
            id: request.id,
            approver: approver.to_owned(),
            approvers: request.approvers.join(", "),
        });
    }
    Ok(tally)
}

/// Who is answering at this machine (the CLI, or the HTTP API, both behind the owner's own
/// access): `named` if given and an approver with `terminal = true`; otherwise the one terminal
/// approver among the request's approvers (or the only terminal approver at all). A name that
/// is not a terminal approver is recorded as given, and does not count.
pub fn terminal_approver(
    policy: &nanoclaw_core::Policy,
    named: Option<&str>,
    request: Option<&Request>,
) -> Result<String, String> {
    let terminal: Vec<&str> = policy
        .approvers()
        .iter()
        .filter(|a| a.terminal)
        .map(|a| a.name.as_str())
        .collect();
    if let Some(name) = named {
        return Ok(if terminal.contains(&name) {
            name.to_owned()
        } else {
            format!("{name} (not a terminal approver)")
        });
    }
    let for_request: Vec<&str> = match request {
        Some(r) => terminal
            .iter()
            .copied()
            .filter(|t| r.approvers.iter().any(|a| a == t))
            .collect(),
        None => Vec::new(),
    };
    match (for_request.as_slice(), terminal.as_slice()) {
        ([one], _) | ([], [one]) => Ok((*one).to_owned()),
        ([], []) => Err("no approver has terminal = true in policy.toml".into()),
        (several, _) if several.len() > 1 => Err(format!(
            "several approvers of this request answer at this terminal ({}); pick one with --as NAME",
            several.join(", ")
        )),
        _ => Err(format!(
            "several approvers answer at this terminal ({}); pick one with --as NAME",
            terminal.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_whose_call_ended_first_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Arc::new(Store::open(&db).unwrap());
        let audit = Arc::new(Audit::open(&db, Default::default()).unwrap());
        let approvals = Approvals::new(Arc::clone(&store), Arc::clone(&audit), Vec::new());
        let group: GroupId = "main".parse().unwrap();
        let call = ToolCall {
            id: "c1".into(),
            name: "shell".into(),
            arguments: json!({"command": "echo deploy"}),
        };
        let spec = ApprovalSpec {
            approvers: vec!["owner".into()],
            quorum: 1,
            timeout: Duration::from_secs(600),
            scope: Scope::Once,
        };
        let status = || list(&store, true).unwrap().first().map(|r| r.status);
        // The call gives up (its turn ends, it is stopped) while the request is pending.
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            approvals.decide(&group, &call, &spec, "why"),
        )
        .await;
        assert!(waited.is_err());
        assert_eq!(status(), Some(Status::Expired));
        // An approver's answer now finds it decided; nothing is left to grant.
        assert!(list(&store, false).unwrap().is_empty());
        audit.close();
    }

    #[test]
    fn a_strangers_answer_in_chat_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db).unwrap();
        let audit = Audit::open(&db, Default::default()).unwrap();
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO approvals (code, fingerprint, group_id, tool, arguments, reason, approvers, quorum, scope, status, created_at, expires_at)
                     VALUES ('PEND0001', 'f', 'main', 'shell', '{}', 'r', '[\"remote\"]', 1, 'once', 'pending', ?1, ?2)",
                    params![now(), now() + 60_000],
                )?;
                Ok(())
            })
            .unwrap();
        let policy =
            nanoclaw_core::Policy::parse("[approvers.remote]\nids = { telegram = [\"42\"] }\n")
                .unwrap();
        let vote = |user: &str| {
            answer(
                &store,
                &audit,
                &policy,
                "PEND0001",
                &Answerer::InChat {
                    channel: "telegram",
                    user,
                },
                Vote::Approve { always: false },
            )
        };
        // Someone else on the channel, or the approver's id on another channel: not stored.
        assert!(matches!(vote("7"), Err(AnswerError::Stranger)));
        let votes = |store: &Store| -> i64 {
            store
                .with_conn(|c| {
                    Ok(c.query_row("SELECT count(*) FROM approval_votes", [], |r| r.get(0))?)
                })
                .unwrap()
        };
        assert_eq!(votes(&store), 0);
        // The approver's own id counts, once.
        assert!(matches!(vote("42"), Ok(Tally::Approved { .. })));
        assert_eq!(votes(&store), 1);
        assert!(matches!(
            vote("42"),
            Err(AnswerError::Decided {
                status: Status::Approved,
                ..
            })
        ));
        audit.close();
    }

    #[test]
    fn an_answer_after_the_deadline_finds_the_request_expired() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db).unwrap();
        let audit = Audit::open(&db, Default::default()).unwrap();
        let at = now();
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO approvals (code, fingerprint, group_id, tool, arguments, reason, approvers, quorum, scope, status, created_at, expires_at)
                     VALUES ('XPRD0001', 'f', 'main', 'shell', '{}', 'r', '[\"owner\"]', 1, 'once', 'pending', ?1, ?2)",
                    params![at - 10_000, at - 1],
                )?;
                Ok(())
            })
            .unwrap();
        let policy = nanoclaw_core::Policy::parse("[approvers.owner]\nterminal = true\n").unwrap();
        let late = answer(
            &store,
            &audit,
            &policy,
            "XPRD0001",
            &Answerer::AtTerminal {
                channel: "cli",
                named: Some("owner"),
            },
            Vote::Approve { always: false },
        );
        assert!(
            matches!(
                &late,
                Err(AnswerError::Decided {
                    status: Status::Expired,
                    ..
                })
            ),
            "{late:?}"
        );
        let status: String = store
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT status FROM approvals WHERE code = 'XPRD0001'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(status, "expired");
        audit.close();
    }
}
