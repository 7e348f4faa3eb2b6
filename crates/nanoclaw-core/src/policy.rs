//! The policy engine: ordered TOML rules over a tool call and where it came from, each saying
//! `allow`, `ask` or `deny`, and who may approve an `ask`.
//!
//! Evaluation: the first rule that matches decides, except that a matching `deny` anywhere in
//! the list wins. With no match, the design's defaults apply: tools that run inside the sandbox
//! are allowed, anything else asks. A call naming no tool at all is always refused.
//!
//! ```toml
//! [approvers.owner]
//! terminal = true                       # the owner at this machine (chat, ask, the CLI)
//! ids = { telegram = ["12345"] }        # identities on chat channels
//!
//! [[rule]]
//! name = "no force pushes"
//! tool = "shell"                        # glob: `*`, `?`
//! args = { command = { regex = "git push .*--force" } }
//! action = "deny"
//!
//! [[rule]]
//! tool = "http_request"
//! tainted = true                        # only once the turn has read outside content
//! args = { method = { one_of = ["POST", "PUT", "PATCH", "DELETE"] } }
//! action = "ask"
//! approvers = ["owner"]                 # default: every configured approver
//! quorum = 1                            # distinct approvers needed
//! timeout_secs = 600                    # no answer in time means deny
//! scope = "once"                        # or "always" for this exact call
//! ```
//!
//! Other rule keys: `group`, `channel` (globs), `sender` (`owner`, `approver`, `other`).
//! `[[egress]]` tables are rules over a sandbox's network requests ([`crate::egress_rules`]).
//! Argument matchers (`args.FIELD`, a dotted path into the arguments): `equals`, `glob`,
//! `regex`, `one_of`. Parsing never panics; every error names the line and the key.
//!
//! [`Policy::check`] then holds the file against what the daemon has ([`Vocabulary`]): a rule
//! whose tool, channel or argument names nothing that exists could never match, so a `deny`
//! with a typo in it would silently allow; it is refused instead.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::gate::Decision;
use crate::tool::ToolEffect;

/// How long an `ask` waits for its approvers unless a rule says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest an approval may wait.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// Who sent a message, as the channel that received it decided (the router for chats; the
/// terminal and the token-guarded API speak for the owner). Decided once where the message
/// comes in, stored with it, and carried to the gate: never derived again from a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderRole {
    Owner,
    Approver,
    Other,
}

impl SenderRole {
    /// The role's name in policy files, the store and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderRole::Owner => "owner",
            SenderRole::Approver => "approver",
            SenderRole::Other => "other",
        }
    }
}

/// A name that is not one of the three roles.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sender role: owner, approver or other")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for SenderRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "owner" => Ok(SenderRole::Owner),
            "approver" => Ok(SenderRole::Approver),
            "other" => Ok(SenderRole::Other),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

impl std::fmt::Display for SenderRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long an approval counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This one call.
    Once,
    /// Every later call with the same fingerprint (tool, arguments, group).
    Always,
}

/// A person who may answer approval requests, and how each channel knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    pub name: String,
    /// The owner at this machine: the terminal, `ask`, and `nanoclaw approvals`.
    pub terminal: bool,
    /// Channel name -> identities on that channel.
    pub ids: BTreeMap<String, Vec<String>>,
}

/// Where a call comes from, as the gate is told (never as the model says).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub tool: &'a str,
    pub args: &'a Value,
    pub group: &'a str,
    pub channel: &'a str,
    pub sender: SenderRole,
    pub tainted: bool,
    /// The tool's effect class from the tool registry.
    pub effect: ToolEffect,
}

/// What an `ask` needs to be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalSpec {
    pub approvers: Vec<String>,
    pub quorum: usize,
    pub timeout: Duration,
    pub scope: Scope,
}

/// Why the gate decided what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A rule: its position (1-based), name and line in the policy file.
    Rule {
        index: usize,
        name: String,
        line: usize,
    },
    /// An `[[egress]]` rule: its position among them (1-based), name and line.
    EgressRule {
        index: usize,
        name: String,
        line: usize,
    },
    DefaultSandboxed,
    DefaultOutsideSandbox,
    UnknownTool,
    /// No egress rule matched and the request sends nothing, or the turn is not tainted: the
    /// group's allowlist alone decides.
    DefaultEgress,
    /// No egress rule matched, the turn is tainted and the request sends data out.
    DefaultTaintedSend,
}

impl Reason {
    pub fn describe(&self) -> String {
        match self {
            Reason::Rule { index, name, line } => {
                format!("policy rule {index} ({name:?}, line {line})")
            }
            Reason::DefaultSandboxed => {
                "default: tools that run inside the sandbox are allowed".into()
            }
            Reason::DefaultOutsideSandbox => {
                "default: tools with effects outside the sandbox need a human's approval".into()
            }
            Reason::UnknownTool => "no tool of that name exists".into(),
            Reason::EgressRule { index, name, line } => {
                format!("egress rule {index} ({name:?}, line {line})")
            }
            Reason::DefaultEgress => {
                "default: requests the group's allowlist lets through are allowed".into()
            }
            Reason::DefaultTaintedSend => "default: a turn that has read outside content asks before it sends data out (a body, a query, a header beyond the plain reading ones, or a method other than GET and HEAD)".into(),
        }
    }
}

/// The gate's answer for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// What made the decision: the deciding rule, or the default that applied.
    pub reason: Reason,
    /// Every rule that matched, in file order (the deciding one among them), for the audit
    /// log: a reviewer sees which other rules a call touched.
    pub matched: Vec<Reason>,
    /// Set when the decision is `Ask`.
    pub approval: Option<ApprovalSpec>,
}

/// How the rules of one kind combine: of the rules that match, a `deny` anywhere decides;
/// otherwise the first match decides (so a narrow `allow` above a broad `ask` wins). Returns
/// the deciding rule's index and the indices of every match, or `None` when none matched.
pub(crate) fn combine<R>(
    rules: &[R],
    matches: impl Fn(&R) -> bool,
    action: impl Fn(&R) -> Decision,
) -> Option<(usize, Vec<usize>)> {
    let matched: Vec<usize> = (0..rules.len()).filter(|&i| matches(&rules[i])).collect();
    let deciding = matched
        .iter()
        .copied()
        .find(|&i| action(&rules[i]) == Decision::Deny)
        .or_else(|| matched.first().copied())?;
    Some((deciding, matched))
}

/// Why a policy file was refused: the line and key at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {key}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// A `*`/`?` glob, matched against the whole text. Without wildcards it is a plain string
/// comparison.
#[derive(Clone, Debug)]
pub(crate) enum Glob {
    Literal(String),
    Pattern(Vec<char>),
}

impl Glob {
    pub(crate) fn text(&self) -> String {
        match self {
            Glob::Literal(l) => l.clone(),
            Glob::Pattern(p) => p.iter().collect(),
        }
    }

    pub(crate) fn new(pattern: &str) -> Glob {
        if pattern.contains(['*', '?']) {
            Glob::Pattern(pattern.chars().collect())
        } else {
            Glob::Literal(pattern.to_owned())
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Literal(l) => l == text,
            Glob::Pattern(p) => wildcard(p, &text.chars().collect::<Vec<_>>()),
        }
    }
}

/// Iterative `*`/`?` matching with one backtrack point: linear in practice, never exponential.
fn wildcard(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` in the pattern is always a wildcard, even facing a `*` in the text: taking it
        // as that literal character would drop the backtrack point, and `*rm -rf*` would miss
        // `*; rm -rf /`.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[derive(Clone, Debug)]
enum Matcher {
    Equals(Value),
    Glob(Glob),
    Regex(regex::Regex),
    OneOf(Vec<Value>),
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        let text = || match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self {
            Matcher::Equals(v) => v == value,
            Matcher::OneOf(vs) => vs.contains(value),
            Matcher::Glob(g) => g.matches(&text()),
            Matcher::Regex(r) => r.is_match(&text()),
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    line: usize,
    tool: Glob,
    turn: TurnMatch,
    args: Vec<(Vec<String>, Matcher)>,
    action: Decision,
    approval: ApprovalSpec,
}

impl Rule {
    fn matches(&self, ctx: &Context<'_>) -> bool {
        self.tool.matches(ctx.tool)
            && self
                .turn
                .matches(ctx.group, ctx.channel, ctx.sender, ctx.tainted)
            && self
                .args
                .iter()
                .all(|(path, m)| lookup(ctx.args, path).is_some_and(|v| m.matches(v)))
    }
}

/// The keys every rule shares about the turn a call or request belongs to.
#[derive(Clone, Debug)]
pub(crate) struct TurnMatch {
    group: Option<Glob>,
    channel: Option<Glob>,
    sender: Option<SenderRole>,
    tainted: Option<bool>,
}

impl TurnMatch {
    pub(crate) fn new(
        group: Option<&str>,
        channel: Option<&str>,
        sender: Option<SenderRole>,
        tainted: Option<bool>,
    ) -> TurnMatch {
        TurnMatch {
            group: group.map(Glob::new),
            channel: channel.map(Glob::new),
            sender,
            tainted,
        }
    }

    pub(crate) fn matches(
        &self,
        group: &str,
        channel: &str,
        sender: SenderRole,
        tainted: bool,
    ) -> bool {
        self.group.as_ref().is_none_or(|g| g.matches(group))
            && self.channel.as_ref().is_none_or(|g| g.matches(channel))
            && self.sender.is_none_or(|s| s == sender)
            && self.tainted.is_none_or(|t| t == tainted)
    }

    /// A channel glob that names no channel could never match: refused.
    pub(crate) fn check_channel(
        &self,
        vocabulary: &Vocabulary,
        err: &dyn Fn(&str, String) -> PolicyError,
    ) -> Result<(), PolicyError> {
        match &self.channel {
            Some(channel) if !vocabulary.channels.iter().any(|c| channel.matches(c)) => Err(err(
                "channel",
                format!(
                    "{:?} names no channel (channels: {})",
                    channel.text(),
                    vocabulary.channels.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A dotted path into JSON: object keys, and array indexes as numbers.
fn lookup<'a>(mut value: &'a Value, path: &[String]) -> Option<&'a Value> {
    for key in path {
        value = match value {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A parsed policy: approvers and ordered rules.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The `[[egress]]` rules, over the network requests of a sandbox (see
    /// [`crate::egress_rules`]).
    pub(crate) egress: Vec<crate::egress_rules::EgressRule>,
    approvers: Vec<Approver>,
    /// The line of each approver's table, for errors found by [`Policy::check`].
    approver_lines: Vec<usize>,
}

/// What a policy's rules may name, as the daemon has it: each tool with the arguments it takes,
/// the channels messages arrive on, and the channels that reach approvers.
#[derive(Clone, Debug, Default)]
pub struct Vocabulary {
    pub tools: Vec<(String, Vec<String>)>,
    /// Prefixes of tool names known only at run time (an MCP server's `NAME.`): a rule whose
    /// tool starts with one is accepted, its arguments unchecked (the server's tools, and so
    /// their arguments, are listed only once it runs).
    pub open_prefixes: Vec<String>,
    /// The tools whose requests pass the egress proxy (what an egress rule's `tool` may name).
    pub network_tools: Vec<String>,
    pub channels: Vec<String>,
    pub approver_channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    approvers: BTreeMap<String, toml::Spanned<RawApprover>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
    #[serde(default)]
    egress: Vec<toml::Spanned<crate::egress_rules::RawEgressRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprover {
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    ids: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    tool: String,
    group: Option<String>,
    channel: Option<String>,
    sender: Option<String>,
    tainted: Option<bool>,
    #[serde(default)]
    args: BTreeMap<String, RawMatcher>,
    action: String,
    approvers: Option<Vec<String>>,
    quorum: Option<usize>,
    timeout_secs: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    equals: Option<Value>,
    glob: Option<String>,
    regex: Option<String>,
    one_of: Option<Vec<Value>>,
}

/// The keys every rule shares: what it decides, for whom, and how an `ask` is answered.
pub(crate) struct RawDecision<'a> {
    pub action: &'a str,
    pub sender: Option<&'a str>,
    pub approvers: Option<Vec<String>>,
    pub quorum: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub scope: Option<&'a str>,
}

impl RawDecision<'_> {
    /// `all_names` are the configured approvers; `err` names the rule's key at fault.
    pub(crate) fn parse(
        self,
        all_names: &[String],
        err: &dyn Fn(&str, String) -> PolicyError,
    ) -> Result<(Decision, Option<SenderRole>, ApprovalSpec), PolicyError> {
        let r = self;
        let action = match r.action {
            "allow" => Decision::Allow,
            "ask" => Decision::Ask,
            "deny" => Decision::Deny,
            other => {
                return Err(err(
                    "action",
                    format!("expected \"allow\", \"ask\" or \"deny\", got {other:?}"),
                ));
            }
        };
        let sender = match r.sender.map(str::parse::<SenderRole>).transpose() {
            Ok(sender) => sender,
            Err(e) => return Err(err("sender", e.to_string())),
        };
        let scope = match r.scope {
            None | Some("once") => Scope::Once,
            Some("always") => Scope::Always,
            Some(other) => {
                return Err(err(
                    "scope",
                    format!("expected \"once\" or \"always\", got {other:?}"),
                ));
            }
        };
        let names = match r.approvers {
            Some(names) => {
                for (i, n) in names.iter().enumerate() {
                    // A name twice would count toward the quorum once: a quorum of two
                    // from ["owner", "owner"] could never be met.
                    if names[..i].contains(n) {
                        return Err(err("approvers", format!("approver {n:?} is named twice")));
                    }
                    if !all_names.contains(n) {
                        return Err(err(
                            "approvers",
                            format!(
                                "unknown approver {n:?} (configured: {})",
                                if all_names.is_empty() {
                                    "none; add [approvers.NAME]".to_owned()
                                } else {
                                    all_names.join(", ")
                                }
                            ),
                        ));
                    }
                }
                names
            }
            None => all_names.to_vec(),
        };
        let quorum = r.quorum.unwrap_or(1);
        if action == Decision::Ask && (quorum == 0 || quorum > names.len()) {
            return Err(err(
                "quorum",
                format!(
                    "needs between 1 and the number of approvers ({}), got {quorum}",
                    names.len()
                ),
            ));
        }
        let timeout = match r.timeout_secs {
            Some(0) => return Err(err("timeout_secs", "must be at least 1".into())),
            Some(s) if s > MAX_TIMEOUT_SECS => {
                return Err(err(
                    "timeout_secs",
                    format!("must be at most {MAX_TIMEOUT_SECS} (30 days), got {s}"),
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_TIMEOUT,
        };
        Ok((
            action,
            sender,
            ApprovalSpec {
                approvers: names,
                quorum,
                timeout,
                scope,
            },
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Policy {
    /// Parse a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            key: "policy".into(),
            message: e.message().to_owned(),
        })?;
        let mut approvers = Vec::new();
        let mut approver_lines = Vec::new();
        for (name, spanned) in raw.approvers {
            let line = line_of(text, spanned.span().start);
            let a = spanned.into_inner();
            let err = |message: String| PolicyError {
                line,
                key: format!("approvers.{name:?}"),
                message,
            };
            if name.trim().is_empty() {
                return Err(err("an approver needs a name".into()));
            }
            if !a.terminal && a.ids.values().all(Vec::is_empty) {
                return Err(err(
                    "can never answer a request: give terminal = true, or ids on a channel".into(),
                ));
            }
            if let Some(channel) = a
                .ids
                .iter()
                .find(|(_, ids)| ids.iter().any(|id| id.trim().is_empty()))
                .map(|(channel, _)| channel)
            {
                return Err(err(format!("an empty id in ids.{channel}")));
            }
            approvers.push(Approver {
                name,
                terminal: a.terminal,
                ids: a.ids,
            });
            approver_lines.push(line);
        }
        let all_names: Vec<String> = approvers.iter().map(|a| a.name.clone()).collect();
        let mut rules = Vec::new();
        for (i, spanned) in raw.rule.into_iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let r = spanned.into_inner();
            let key = |k: &str| format!("rule[{}].{k}", i + 1);
            let err = |k: &str, message: String| PolicyError {
                line,
                key: key(k),
                message,
            };
            let (action, sender, approval) = RawDecision {
                action: &r.action,
                sender: r.sender.as_deref(),
                approvers: r.approvers,
                quorum: r.quorum,
                timeout_secs: r.timeout_secs,
                scope: r.scope.as_deref(),
            }
            .parse(&all_names, &err)?;
            let mut args = Vec::new();
            for (field, m) in r.args {
                let k = format!("args.{field}");
                let given = [
                    m.equals.is_some(),
                    m.glob.is_some(),
                    m.regex.is_some(),
                    m.one_of.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(err(
                        &k,
                        "give exactly one of equals, glob, regex, one_of".into(),
                    ));
                }
                let matcher = if let Some(v) = m.equals {
                    Matcher::Equals(v)
                } else if let Some(g) = m.glob {
                    Matcher::Glob(Glob::new(&g))
                } else if let Some(re) = m.regex {
                    Matcher::Regex(
                        regex::Regex::new(&re).map_err(|e| err(&k, format!("bad regex: {e}")))?,
                    )
                } else {
                    let values = m.one_of.unwrap_or_default();
                    if values.is_empty() {
                        return Err(err(&k, "one_of needs at least one value".into()));
                    }
                    Matcher::OneOf(values)
                };
                args.push((field.split('.').map(str::to_owned).collect(), matcher));
            }
            rules.push(Rule {
                name: r.name.unwrap_or_else(|| format!("rule {}", i + 1)),
                line,
                tool: Glob::new(&r.tool),
                turn: TurnMatch::new(r.group.as_deref(), r.channel.as_deref(), sender, r.tainted),
                args,
                action,
                approval,
            });
        }
        let mut egress = Vec::new();
        for (i, spanned) in raw.egress.into_iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            egress.push(crate::egress_rules::EgressRule::parse(
                i,
                line,
                spanned.into_inner(),
                &all_names,
            )?);
        }
        Ok(Policy {
            rules,
            egress,
            approvers,
            approver_lines,
        })
    }

    /// Refuse what could never match or never be answered: a rule's tool glob that names no
    /// tool, a channel glob that names no channel, an argument no tool it matches takes, and
    /// approver ids on a channel that cannot reach approvers.
    pub fn check(&self, vocabulary: &Vocabulary) -> Result<(), PolicyError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let err = |k: &str, message: String| PolicyError {
                line: rule.line,
                key: format!("rule[{}].{k}", i + 1),
                message,
            };
            let tools: Vec<&(String, Vec<String>)> = vocabulary
                .tools
                .iter()
                .filter(|(name, _)| rule.tool.matches(name))
                .collect();
            let open = vocabulary
                .open_prefixes
                .iter()
                .any(|p| rule.tool.text().starts_with(p.as_str()));
            if tools.is_empty() && open {
                rule.turn.check_channel(vocabulary, &err)?;
                continue;
            }
            if tools.is_empty() {
                let names: Vec<&str> = vocabulary.tools.iter().map(|(n, _)| n.as_str()).collect();
                return Err(err(
                    "tool",
                    format!(
                        "{:?} names no tool (tools: {})",
                        rule.tool.text(),
                        names.join(", ")
                    ),
                ));
            }
            rule.turn.check_channel(vocabulary, &err)?;
            let takes = || {
                tools
                    .iter()
                    .map(|(name, args)| format!("{name} takes {}", args.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let first = |path: &[String]| path.first().cloned().unwrap_or_default();
            for (path, _) in &rule.args {
                let arg = first(path);
                if !tools.iter().any(|(_, args)| args.contains(&arg)) {
                    return Err(err(
                        &format!("args.{}", path.join(".")),
                        format!(
                            "no tool this rule matches has an argument {arg:?} ({})",
                            takes()
                        ),
                    ));
                }
            }
            // Every matcher must find its argument in the same call.
            if !rule.args.is_empty()
                && !tools
                    .iter()
                    .any(|(_, args)| rule.args.iter().all(|(p, _)| args.contains(&first(p))))
            {
                let named: Vec<String> = rule.args.iter().map(|(p, _)| p.join(".")).collect();
                return Err(err(
                    "args",
                    format!(
                        "no one tool this rule matches takes all of {} ({})",
                        named.join(", "),
                        takes()
                    ),
                ));
            }
        }
        for (i, rule) in self.egress.iter().enumerate() {
            rule.check(i, vocabulary)?;
        }
        for (approver, line) in self.approvers.iter().zip(&self.approver_lines) {
            if let Some(channel) = approver
                .ids
                .keys()
                .find(|c| !vocabulary.approver_channels.contains(c))
            {
                return Err(PolicyError {
                    line: *line,
                    key: format!("approvers.{:?}.ids", approver.name),
                    message: format!(
                        "approvers cannot be reached on {channel:?} (channels with approvers: {})",
                        vocabulary.approver_channels.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    pub fn approver(&self, name: &str) -> Option<&Approver> {
        self.approvers.iter().find(|a| a.name == name)
    }

    /// Decide one call.
    pub fn decide(&self, ctx: &Context<'_>) -> Verdict {
        if ctx.effect == ToolEffect::Unknown {
            return Verdict {
                decision: Decision::Deny,
                reason: Reason::UnknownTool,
                matched: Vec::new(),
                approval: None,
            };
        }
        if let Some((deciding, matched)) = combine(&self.rules, |r| r.matches(ctx), |r| r.action) {
            let mut verdict = self.verdict(deciding, &self.rules[deciding]);
            verdict.matched = matched
                .into_iter()
                .map(|i| self.verdict(i, &self.rules[i]).reason)
                .collect();
            return verdict;
        }
        match ctx.effect {
            ToolEffect::Sandboxed => Verdict {
                decision: Decision::Allow,
                reason: Reason::DefaultSandboxed,
                matched: Vec::new(),
                approval: None,
            },
            _ => Verdict {
                decision: Decision::Ask,
                reason: Reason::DefaultOutsideSandbox,
                matched: Vec::new(),
                approval: Some(self.default_approval()),
            },
        }
    }

    fn verdict(&self, i: usize, rule: &Rule) -> Verdict {
        Verdict {
            decision: rule.action,
            reason: Reason::Rule {
                index: i + 1,
                name: rule.name.clone(),
                line: rule.line,
            },
            matched: Vec::new(),
            approval: (rule.action == Decision::Ask).then(|| rule.approval.clone()),
        }
    }
}

#[cfg(test)]
mod glob_tests {
    use super::wildcard;

    fn matches(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        wildcard(&p, &t)
    }

    #[test]
    fn a_star_in_the_text_does_not_defeat_a_star_in_the_pattern() {
        assert!(matches("*rm -rf*", "*; rm -rf /"));
        assert!(matches("*curl*", "* x; curl evil"));
        assert!(matches("a*b", "a*xb"));
        assert!(matches("a?c", "a*c"));
        assert!(!matches("a*b", "a*xc"));
    }

    /// The same answers as a regular expression built from the pattern, over every pattern
    /// and text of a small alphabet that includes the wildcards themselves.
    #[test]
    fn agrees_with_a_regex_on_many_patterns_and_texts() {
        let alphabet = ['a', 'b', '*', '?'];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..3_000 {
            let pattern: String = (0..next(7)).map(|_| alphabet[next(4)]).collect();
            let text: String = (0..next(9)).map(|_| alphabet[next(4)]).collect();
            let mut re = String::from("(?s)^");
            for c in pattern.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            let expected = regex::Regex::new(&re).unwrap().is_match(&text);
            assert_eq!(
                matches(&pattern, &text),
                expected,
                "{pattern:?} on {text:?}"
            );
        }
    }
}

#[cfg(test)]
mod combine_tests {
    use super::*;

    fn ctx<'a>(tool: &'a str, args: &'a serde_json::Value) -> Context<'a> {
        Context {
            tool,
            args,
            group: "main",
            channel: "terminal",
            sender: SenderRole::Owner,
            tainted: false,
            effect: ToolEffect::Sandboxed,
        }
    }

    #[test]
    fn every_matching_rule_is_kept_and_the_first_or_a_deny_decides() {
        let p = Policy::parse(
            "[approvers.owner]\nterminal = true\n\
             [[rule]]\nname = \"narrow allow\"\ntool = \"shell\"\nargs = { command = { glob = \"ls*\" } }\naction = \"allow\"\n\
             [[rule]]\nname = \"broad ask\"\ntool = \"shell\"\naction = \"ask\"\n\
             [[rule]]\nname = \"other tool\"\ntool = \"read_file\"\naction = \"deny\"\n\
             [[rule]]\nname = \"no rm\"\ntool = \"shell\"\nargs = { command = { glob = \"*rm *\" } }\naction = \"deny\"\n",
        )
        .unwrap();
        let names = |v: &Verdict| -> Vec<String> {
            v.matched
                .iter()
                .map(|r| match r {
                    Reason::Rule { name, .. } => name.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let ls = serde_json::json!({"command": "ls -l"});
        let v = p.decide(&ctx("shell", &ls));
        assert_eq!(v.decision, Decision::Allow);
        assert!(matches!(&v.reason, Reason::Rule { index: 1, .. }));
        assert_eq!(names(&v), ["narrow allow", "broad ask"]);
        // A deny further down still wins, and the earlier matches are kept beside it.
        let rm = serde_json::json!({"command": "ls; rm -rf x"});
        let v = p.decide(&ctx("shell", &rm));
        assert_eq!(v.decision, Decision::Deny);
        assert!(matches!(&v.reason, Reason::Rule { index: 4, .. }));
        assert_eq!(names(&v), ["narrow allow", "broad ask", "no rm"]);
        // No rule: the default, and nothing matched.
        let v = p.decide(&ctx("grep", &ls));
        assert_eq!(v.decision, Decision::Allow);
        assert!(v.matched.is_empty());
    }
}
