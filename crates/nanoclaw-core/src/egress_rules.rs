//! Egress rules: the policy's decisions over the network requests a sandbox makes through its
//! group's proxy, once the group's allowlist has let the host through.
//!
//! ```toml
//! [[egress]]
//! name = "tainted turns ask before posting to GitHub"
//! host = "*.github.com"                 # glob over the host name
//! ports = [443]
//! methods = ["POST", "PUT", "PATCH"]    # the request's method, exactly
//! path = "/repos/*"                     # glob over the path, without the query
//! query = true                          # the URL has a query string
//! body = true                           # the request has a body
//! sends = true                          # it carries data out (see below)
//! tool = "shell"                        # the tool call it belongs to
//! tainted = true
//! action = "ask"
//! ```
//!
//! `group`, `channel`, `sender`, `approvers`, `quorum`, `timeout_secs` and `scope` are as in
//! a `[[rule]]`. A request *sends* data when it has a body, a query, a header beyond the plain
//! reading ones, or a method other than `GET` and `HEAD` (the proxy decides that, once).
//!
//! Evaluation is the tool rules' own: a matching `deny` anywhere wins, otherwise the first
//! match decides. With no match, the default: a tainted turn's request that sends data asks
//! every approver; every other request is allowed (the allowlist already let it through).
//!
//! A `CONNECT` tunnel hides its requests. Rules that name `CONNECT` in `methods` decide the
//! tunnel as a whole (an `allow` lets it through unopened). Otherwise the proxy opens
//! ([`TunnelVerdict::Inspect`]) every tunnel in which some request might not be allowed, and
//! decides each request inside it.
//!
//! What this module must never do: let a tainted turn's request that sends data pass without
//! a rule that says so, or let an unopened tunnel hide a request a rule would refuse.

use crate::gate::Decision;
use crate::policy::{
    ApprovalSpec, DEFAULT_TIMEOUT, Glob, Policy, PolicyError, RawDecision, Reason, Scope,
    SenderRole, TurnMatch, Verdict, Vocabulary,
};

/// Where a request comes from: the turn and tool call its connection is attributed to.
#[derive(Clone, Copy, Debug)]
pub struct EgressContext<'a> {
    pub group: &'a str,
    pub channel: &'a str,
    pub sender: SenderRole,
    pub tainted: bool,
    /// The tool whose call made the request.
    pub tool: &'a str,
}

/// One request, as the proxy read it.
#[derive(Clone, Copy, Debug)]
pub struct EgressRequest<'a> {
    /// Lower case, as the allowlist matched it.
    pub host: &'a str,
    pub port: u16,
    /// As sent: methods are case-sensitive, and `get` is not `GET`.
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub query: bool,
    pub body: bool,
    /// It carries data out: a body, a query, a header beyond the plain reading ones, or a
    /// method other than `GET` and `HEAD`.
    pub sends: bool,
}

/// What happens to a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelVerdict {
    /// Decided as a whole: an `allow` relays it unopened.
    Decided(Verdict),
    /// Some request inside might not be allowed: open it and decide each.
    Inspect,
}

/// Whether `method` only reads (as sent: `get` is not `GET`).
pub fn reads_only(method: &str) -> bool {
    matches!(method, "GET" | "HEAD")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgressRule {
    name: Option<String>,
    host: Option<String>,
    ports: Option<Vec<u16>>,
    methods: Option<Vec<String>>,
    path: Option<String>,
    query: Option<bool>,
    body: Option<bool>,
    sends: Option<bool>,
    tool: Option<String>,
    group: Option<String>,
    channel: Option<String>,
    sender: Option<String>,
    tainted: Option<bool>,
    action: String,
    approvers: Option<Vec<String>>,
    quorum: Option<usize>,
    timeout_secs: Option<u64>,
    scope: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct EgressRule {
    name: String,
    line: usize,
    host: Option<Glob>,
    ports: Option<Vec<u16>>,
    methods: Option<Vec<String>>,
    path: Option<Glob>,
    query: Option<bool>,
    body: Option<bool>,
    sends: Option<bool>,
    tool: Option<Glob>,
    turn: TurnMatch,
    action: Decision,
    approval: ApprovalSpec,
}

impl EgressRule {
    /// Parse the `index`-th (0-based) `[[egress]]` table, found at `line`.
    pub(crate) fn parse(
        index: usize,
        line: usize,
        r: RawEgressRule,
        all_names: &[String],
    ) -> Result<EgressRule, PolicyError> {
        let err = |k: &str, message: String| PolicyError {
            line,
            key: format!("egress[{}].{k}", index + 1),
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
        .parse(all_names, &err)?;
        if let Some(methods) = &r.methods {
            if methods.is_empty() {
                return Err(err(
                    "methods",
                    "is empty (leave it out to match every method)".into(),
                ));
            }
            if let Some(bad) = methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(err(
                    "methods",
                    format!("{bad:?} is not a method (upper-case letters, as sent: \"POST\")"),
                ));
            }
        }
        if let Some(ports) = &r.ports
            && (ports.is_empty() || ports.contains(&0))
        {
            return Err(err(
                "ports",
                "give ports from 1 to 65535 (leave it out to match every port)".into(),
            ));
        }
        if let Some(host) = &r.host
            && (host.is_empty() || host.contains(['/', ':']))
        {
            return Err(err(
                "host",
                format!("{host:?}: a host name or glob, without scheme, port or path"),
            ));
        }
        if let Some(path) = &r.path
            && !path.starts_with(['/', '*'])
        {
            return Err(err(
                "path",
                format!("{path:?}: a path starts with '/' (or a glob with '*')"),
            ));
        }
        Ok(EgressRule {
            name: r
                .name
                .unwrap_or_else(|| format!("egress rule {}", index + 1)),
            line,
            host: r.host.map(|h| Glob::new(&h.to_ascii_lowercase())),
            ports: r.ports,
            methods: r.methods,
            path: r.path.as_deref().map(Glob::new),
            query: r.query,
            body: r.body,
            sends: r.sends,
            tool: r.tool.as_deref().map(Glob::new),
            turn: TurnMatch::new(r.group.as_deref(), r.channel.as_deref(), sender, r.tainted),
            action,
            approval,
        })
    }

    /// Refuse what could never match: a tool glob naming no tool that reaches the network, a
    /// channel glob naming no channel.
    pub(crate) fn check(&self, index: usize, vocabulary: &Vocabulary) -> Result<(), PolicyError> {
        let err = |k: &str, message: String| PolicyError {
            line: self.line,
            key: format!("egress[{}].{k}", index + 1),
            message,
        };
        if let Some(tool) = &self.tool
            && !vocabulary.network_tools.iter().any(|t| tool.matches(t))
        {
            return Err(err(
                "tool",
                format!(
                    "{:?} names no tool that reaches the network (those are: {})",
                    tool.text(),
                    vocabulary.network_tools.join(", ")
                ),
            ));
        }
        self.turn.check_channel(vocabulary, &err)
    }

    /// The keys about where the request comes from and where it goes.
    fn matches_context(&self, ctx: &EgressContext<'_>, host: &str, port: u16) -> bool {
        self.host.as_ref().is_none_or(|g| g.matches(host))
            && self.ports.as_ref().is_none_or(|p| p.contains(&port))
            && self.tool.as_ref().is_none_or(|g| g.matches(ctx.tool))
            && self
                .turn
                .matches(ctx.group, ctx.channel, ctx.sender, ctx.tainted)
    }

    fn matches(&self, ctx: &EgressContext<'_>, req: &EgressRequest<'_>) -> bool {
        self.matches_context(ctx, req.host, req.port)
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|m| m == req.method))
            && self.path.as_ref().is_none_or(|g| g.matches(req.path))
            && self.query.is_none_or(|q| q == req.query)
            && self.body.is_none_or(|b| b == req.body)
            && self.sends.is_none_or(|s| s == req.sends)
    }

    /// The rule speaks of tunnels as a whole.
    fn names_tunnels(&self) -> bool {
        self.methods
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m == "CONNECT"))
    }

    /// The rule looks at the request itself, not only at where it comes from and goes.
    fn looks_inside(&self) -> bool {
        self.methods.is_some()
            || self.path.is_some()
            || self.query.is_some()
            || self.body.is_some()
            || self.sends.is_some()
    }

    fn verdict(&self, index: usize) -> Verdict {
        Verdict {
            decision: self.action,
            reason: Reason::EgressRule {
                index: index + 1,
                name: self.name.clone(),
                line: self.line,
            },
            matched: Vec::new(),
            approval: (self.action == Decision::Ask).then(|| self.approval.clone()),
        }
    }
}

impl Policy {
    /// Decide one request (plain HTTP, or one inside an opened tunnel).
    pub fn decide_egress(&self, ctx: &EgressContext<'_>, req: &EgressRequest<'_>) -> Verdict {
        if let Some(verdict) = self.first_egress_match(|r| r.matches(ctx, req)) {
            return verdict;
        }
        if ctx.tainted && req.sends {
            return Verdict {
                decision: Decision::Ask,
                reason: Reason::DefaultTaintedSend,
                matched: Vec::new(),
                approval: Some(self.default_approval()),
            };
        }
        Verdict {
            decision: Decision::Allow,
            reason: Reason::DefaultEgress,
            matched: Vec::new(),
            approval: None,
        }
    }

    /// Decide a `CONNECT` to `host:port`: as a whole where a rule names `CONNECT`; otherwise
    /// opened wherever a request inside might not be allowed.
    pub fn decide_tunnel(&self, ctx: &EgressContext<'_>, host: &str, port: u16) -> TunnelVerdict {
        let tunnel = EgressRequest {
            host,
            port,
            method: "CONNECT",
            path: "",
            query: false,
            body: false,
            // Whatever it carries is out of sight.
            sends: true,
        };
        if let Some(verdict) =
            self.first_egress_match(|r| r.names_tunnels() && r.matches(ctx, &tunnel))
        {
            return TunnelVerdict::Decided(verdict);
        }
        let may_refuse = self
            .egress
            .iter()
            .any(|r| r.action != Decision::Allow && r.matches_context(ctx, host, port));
        let allowed_whole = self.egress.iter().enumerate().find(|(_, r)| {
            r.action == Decision::Allow && !r.looks_inside() && r.matches_context(ctx, host, port)
        });
        match (may_refuse, ctx.tainted, allowed_whole) {
            (true, _, _) | (false, true, None) => TunnelVerdict::Inspect,
            (false, true, Some((i, rule))) => TunnelVerdict::Decided(rule.verdict(i)),
            (false, false, _) => TunnelVerdict::Decided(Verdict {
                decision: Decision::Allow,
                reason: Reason::DefaultEgress,
                matched: Vec::new(),
                approval: None,
            }),
        }
    }

    /// A matching `deny` anywhere, else the first match.
    fn first_egress_match(
        &self,
        matches: impl Fn(&crate::egress_rules::EgressRule) -> bool,
    ) -> Option<Verdict> {
        let (deciding, matched) =
            crate::policy::combine(&self.egress, matches, |r: &EgressRule| r.action)?;
        let mut verdict = self.egress[deciding].verdict(deciding);
        verdict.matched = matched
            .into_iter()
            .map(|i| self.egress[i].verdict(i).reason)
            .collect();
        Some(verdict)
    }

    /// Who answers an `ask` no rule shaped: every configured approver, one of them, once.
    pub fn default_approval(&self) -> ApprovalSpec {
        ApprovalSpec {
            approvers: self.approvers().iter().map(|a| a.name.clone()).collect(),
            quorum: 1,
            timeout: DEFAULT_TIMEOUT,
            scope: Scope::Once,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPROVERS: &str = "[approvers.owner]\nterminal = true\n";

    fn ctx(tainted: bool) -> EgressContext<'static> {
        EgressContext {
            group: "main",
            channel: "telegram",
            sender: SenderRole::Owner,
            tainted,
            tool: "shell",
        }
    }

    fn request<'a>(method: &'a str, query: bool, body: bool) -> EgressRequest<'a> {
        EgressRequest {
            host: "api.example.com",
            port: 443,
            method,
            path: "/v1/items",
            query,
            body,
            sends: !reads_only(method) || query || body,
        }
    }

    fn policy(rules: &str) -> Policy {
        Policy::parse(&format!("{APPROVERS}{rules}")).unwrap()
    }

    #[test]
    fn by_default_a_tainted_turn_reads_but_asks_before_sending() {
        let p = policy("");
        for (method, query, body) in [
            ("GET", true, false),
            ("GET", false, true),
            ("PROPFIND", false, false),
            ("OPTIONS", false, false),
            ("POST", false, false),
            ("get", false, false),
        ] {
            let v = p.decide_egress(&ctx(true), &request(method, query, body));
            assert_eq!(
                v.decision,
                Decision::Ask,
                "{method} query={query} body={body}"
            );
            assert_eq!(v.reason, Reason::DefaultTaintedSend);
            assert_eq!(v.approval.unwrap().approvers, vec!["owner".to_owned()]);
            let v = p.decide_egress(&ctx(false), &request(method, query, body));
            assert_eq!(v.decision, Decision::Allow, "untainted {method}");
        }
        for method in ["GET", "HEAD"] {
            let v = p.decide_egress(&ctx(true), &request(method, false, false));
            assert_eq!(v.decision, Decision::Allow, "tainted plain {method}");
        }
    }

    #[test]
    fn a_tainted_turns_tunnels_are_opened_and_an_untainted_turns_are_not() {
        let p = policy("");
        assert_eq!(
            p.decide_tunnel(&ctx(true), "api.example.com", 443),
            TunnelVerdict::Inspect
        );
        assert!(matches!(
            p.decide_tunnel(&ctx(false), "api.example.com", 443),
            TunnelVerdict::Decided(Verdict {
                decision: Decision::Allow,
                ..
            })
        ));
    }

    #[test]
    fn a_rule_that_might_refuse_opens_even_an_untainted_turns_tunnel() {
        let p = policy(
            "[[egress]]\nhost = \"*.example.com\"\nmethods = [\"DELETE\"]\naction = \"deny\"\n",
        );
        assert_eq!(
            p.decide_tunnel(&ctx(false), "api.example.com", 443),
            TunnelVerdict::Inspect
        );
        // Another host is untouched by the rule.
        assert!(matches!(
            p.decide_tunnel(&ctx(false), "other.org", 443),
            TunnelVerdict::Decided(_)
        ));
        let v = p.decide_egress(&ctx(false), &request("DELETE", false, false));
        assert_eq!(v.decision, Decision::Deny);
        assert!(v.reason.describe().starts_with("egress rule 1"));
    }

    #[test]
    fn rules_naming_connect_decide_a_tunnel_whole() {
        let p = policy(
            "[[egress]]\nhost = \"git.example.com\"\nports = [22]\nmethods = [\"CONNECT\"]\ntainted = true\naction = \"allow\"\n",
        );
        assert!(matches!(
            p.decide_tunnel(&ctx(true), "git.example.com", 22),
            TunnelVerdict::Decided(Verdict {
                decision: Decision::Allow,
                ..
            })
        ));
        assert_eq!(
            p.decide_tunnel(&ctx(true), "git.example.com", 443),
            TunnelVerdict::Inspect
        );
    }

    #[test]
    fn an_allow_over_a_whole_host_keeps_its_tunnels_closed_and_a_deny_still_wins() {
        let p =
            policy("[[egress]]\nhost = \"api.example.com\"\ntainted = true\naction = \"allow\"\n");
        assert!(matches!(
            p.decide_tunnel(&ctx(true), "api.example.com", 443),
            TunnelVerdict::Decided(_)
        ));
        let v = p.decide_egress(&ctx(true), &request("POST", false, true));
        assert_eq!(v.decision, Decision::Allow);
        let p = policy(
            "[[egress]]\nhost = \"api.example.com\"\ntainted = true\naction = \"allow\"\n[[egress]]\nsends = true\ntool = \"web_fetch\"\naction = \"deny\"\n",
        );
        let web = EgressContext {
            tool: "web_fetch",
            ..ctx(true)
        };
        let v = p.decide_egress(&web, &request("GET", true, false));
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(
            p.decide_tunnel(&web, "api.example.com", 443),
            TunnelVerdict::Inspect
        );
    }

    #[test]
    fn rules_match_path_query_body_and_sender() {
        let p = policy(
            "[[egress]]\nname = \"uploads\"\npath = \"/upload/*\"\nbody = true\nsender = \"other\"\naction = \"ask\"\ntimeout_secs = 30\n",
        );
        let other = EgressContext {
            sender: SenderRole::Other,
            ..ctx(false)
        };
        let mut req = request("PUT", false, true);
        req.path = "/upload/a.txt";
        let v = p.decide_egress(&other, &req);
        assert_eq!(v.decision, Decision::Ask);
        assert_eq!(v.approval.unwrap().timeout.as_secs(), 30);
        assert_eq!(p.decide_egress(&ctx(false), &req).decision, Decision::Allow);
        req.body = false;
        assert_eq!(p.decide_egress(&other, &req).decision, Decision::Allow);
    }

    #[test]
    fn bad_egress_rules_name_their_key() {
        for (rule, key) in [
            ("methods = []\naction = \"deny\"", "egress[1].methods"),
            (
                "methods = [\"post\"]\naction = \"deny\"",
                "egress[1].methods",
            ),
            ("ports = [0]\naction = \"deny\"", "egress[1].ports"),
            (
                "host = \"https://x.org\"\naction = \"deny\"",
                "egress[1].host",
            ),
            ("path = \"upload\"\naction = \"deny\"", "egress[1].path"),
            ("action = \"maybe\"", "egress[1].action"),
            (
                "action = \"ask\"\napprovers = [\"nobody\"]",
                "egress[1].approvers",
            ),
        ] {
            let e = Policy::parse(&format!("{APPROVERS}[[egress]]\n{rule}\n")).unwrap_err();
            assert_eq!(e.key, key, "{rule}: {e}");
            assert_eq!(e.line, 3, "{rule}: {e}");
        }
        let e = Policy::parse("[[egress]]\nhots = \"x\"\naction = \"deny\"\n").unwrap_err();
        assert!(e.message.contains("hots"), "{e}");
    }

    #[test]
    fn check_refuses_a_tool_that_never_reaches_the_network() {
        let vocabulary = Vocabulary {
            open_prefixes: Vec::new(),
            tools: vec![("shell".into(), vec![]), ("read_file".into(), vec![])],
            network_tools: vec!["shell".into()],
            channels: vec!["telegram".into()],
            approver_channels: vec![],
        };
        let p = policy("[[egress]]\ntool = \"read_file\"\naction = \"deny\"\n");
        let e = p.check(&vocabulary).unwrap_err();
        assert_eq!(e.key, "egress[1].tool");
        let p = policy("[[egress]]\nchannel = \"irc\"\naction = \"deny\"\n");
        assert_eq!(p.check(&vocabulary).unwrap_err().key, "egress[1].channel");
        policy("[[egress]]\ntool = \"sh*\"\naction = \"deny\"\n")
            .check(&vocabulary)
            .unwrap();
    }
}
