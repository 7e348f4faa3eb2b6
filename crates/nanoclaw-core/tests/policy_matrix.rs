//! The policy engine against a matrix of calls: every kind of matcher, order, deny-wins, the
//! defaults, and every way a policy file can be wrong.

use nanoclaw_core::gate::Decision::{self, Allow, Ask, Deny};
use nanoclaw_core::policy::{Context, Policy, Reason, Scope, SenderRole};
use nanoclaw_core::tool::ToolEffect;
use serde_json::{Value, json};

const POLICY: &str = r#"
[approvers.owner]
terminal = true
[approvers.alice]
ids = { telegram = ["1001"] }
[approvers.bob]
ids = { telegram = ["1002"] }

[[rule]]
name = "no force push"
tool = "shell"
args = { command = { regex = "git\\s+push\\s.*--force" } }
action = "deny"

[[rule]]
name = "rm -rf asks"
tool = "shell"
args = { command = { glob = "*rm -rf*" } }
action = "ask"
approvers = ["owner"]

[[rule]]
name = "tainted writes ask"
tool = "http_request"
tainted = true
args = { method = { one_of = ["POST", "PUT", "PATCH", "DELETE"] } }
action = "ask"
quorum = 2
approvers = ["alice", "bob"]
timeout_secs = 30
scope = "always"

[[rule]]
name = "reads are fine"
tool = "http_request"
args = { method = { equals = "GET" } }
action = "allow"

[[rule]]
name = "github issues"
tool = "github.create_issue"
args = { "labels.0" = { equals = "bug" } }
action = "allow"

[[rule]]
name = "github anything else asks"
tool = "github.*"
action = "ask"

[[rule]]
name = "work group cannot fetch"
tool = "web_fetch"
group = "work*"
action = "deny"

[[rule]]
name = "strangers never write files"
tool = "write_file"
sender = "other"
action = "deny"

[[rule]]
name = "telegram shell asks"
tool = "shell"
channel = "telegram"
action = "ask"

[[rule]]
name = "late allow never beats an earlier deny"
tool = "web_fetch"
action = "allow"

[[rule]]
name = "send_message asks"
tool = "send_?essage"
action = "ask"

[[rule]]
name = "nested and numeric"
tool = "schedule_task"
args = { "when.every_secs" = { equals = 60 }, prompt = { regex = "(?i)report" } }
action = "allow"
"#;

struct Case {
    tool: &'static str,
    effect: ToolEffect,
    args: Value,
    group: &'static str,
    channel: &'static str,
    sender: SenderRole,
    tainted: bool,
    want: Decision,
    /// The deciding rule's name, or "" for a default.
    rule: &'static str,
}

fn case(tool: &'static str, args: Value, want: Decision, rule: &'static str) -> Case {
    let effect = match tool {
        "shell" | "read_file" | "write_file" | "edit_file" | "list_files" | "grep"
        | "web_fetch" | "http_request" => ToolEffect::Sandboxed,
        "nonexistent" => ToolEffect::Unknown,
        _ => ToolEffect::OutsideSandbox,
    };
    Case {
        tool,
        effect,
        args,
        group: "main",
        channel: "terminal",
        sender: SenderRole::Owner,
        tainted: false,
        want,
        rule,
    }
}

fn cases() -> Vec<Case> {
    let sh = |c: &str| json!({ "command": c });
    let mut v = vec![
        // Regex deny, and deny wins over any earlier or later match.
        case(
            "shell",
            sh("git push origin main --force"),
            Deny,
            "no force push",
        ),
        case(
            "shell",
            sh("git  push x --force-with-lease"),
            Deny,
            "no force push",
        ),
        case("shell", sh("git push origin main"), Allow, ""),
        case(
            "shell",
            sh("rm -rf / ; git push a --force"),
            Deny,
            "no force push",
        ),
        // Glob ask.
        case("shell", sh("rm -rf build"), Ask, "rm -rf asks"),
        case("shell", sh("sudo rm -rf /tmp/x"), Ask, "rm -rf asks"),
        case("shell", sh("rm -r build"), Allow, ""),
        case("shell", sh("ls"), Allow, ""),
        case("shell", json!({}), Allow, ""),
        case("shell", json!({"command": 5}), Allow, ""),
        // one_of with taint.
        case(
            "http_request",
            json!({"method": "GET", "url": "x"}),
            Allow,
            "reads are fine",
        ),
        case("http_request", json!({"method": "POST"}), Allow, ""),
        case("http_request", json!({"method": "get"}), Allow, ""),
        case("http_request", json!({}), Allow, ""),
        // Dotted paths, array indexes; globbed integration names.
        case(
            "github.create_issue",
            json!({"labels": ["bug"]}),
            Allow,
            "github issues",
        ),
        case(
            "github.create_issue",
            json!({"labels": ["feature"]}),
            Ask,
            "github anything else asks",
        ),
        case(
            "github.create_issue",
            json!({"labels": []}),
            Ask,
            "github anything else asks",
        ),
        case(
            "github.create_issue",
            json!({"labels": "bug"}),
            Ask,
            "github anything else asks",
        ),
        case(
            "github.delete_repo",
            json!({}),
            Ask,
            "github anything else asks",
        ),
        case("gitlab.delete_repo", json!({}), Ask, ""),
        // `?` globs.
        case("send_message", json!({}), Ask, "send_message asks"),
        case("send_xessage", json!({}), Ask, "send_message asks"),
        case("send_mmessage", json!({}), Ask, ""),
        // Nested numeric and case-insensitive regex; both matchers must hold.
        case(
            "schedule_task",
            json!({"when": {"every_secs": 60}, "prompt": "Weekly REPORT"}),
            Allow,
            "nested and numeric",
        ),
        case(
            "schedule_task",
            json!({"when": {"every_secs": 61}, "prompt": "report"}),
            Ask,
            "",
        ),
        case(
            "schedule_task",
            json!({"when": {"every_secs": "60"}, "prompt": "report"}),
            Ask,
            "",
        ),
        case(
            "schedule_task",
            json!({"when": {"every_secs": 60}}),
            Ask,
            "",
        ),
        case(
            "schedule_task",
            json!({"when": 60, "prompt": "report"}),
            Ask,
            "",
        ),
        // Defaults.
        case("read_file", json!({"path": "a"}), Allow, ""),
        case("list_files", json!({}), Allow, ""),
        case("grep", json!({}), Allow, ""),
        case("edit_file", json!({}), Allow, ""),
        case("write_file", json!({}), Allow, ""),
        case(
            "web_fetch",
            json!({"url": "https://x"}),
            Allow,
            "late allow never beats an earlier deny",
        ),
        case("cancel_task", json!({}), Ask, ""),
        case("nonexistent", json!({}), Deny, ""),
        // Unicode and empty values; regexes search, globs match the whole text.
        case(
            "shell",
            sh("écho ; git push é --force"),
            Deny,
            "no force push",
        ),
        case("shell", sh(""), Allow, ""),
        case("shell", sh("rm -rf"), Ask, "rm -rf asks"),
        case("shell", sh("xrm -rfx"), Ask, "rm -rf asks"),
        // Non-string values are matched as JSON text: wrapping cannot dodge a rule.
        case(
            "shell",
            json!({"command": ["rm -rf x"]}),
            Ask,
            "rm -rf asks",
        ),
        case("shell", json!(null), Allow, ""),
        case(
            "github.create_issue",
            json!({"labels": ["bug", "x"]}),
            Allow,
            "github issues",
        ),
        case("github.", json!({}), Ask, "github anything else asks"),
        case("githubx.create_issue", json!({}), Ask, ""),
    ];
    let mut tainted_post = case(
        "http_request",
        json!({"method": "POST"}),
        Ask,
        "tainted writes ask",
    );
    tainted_post.tainted = true;
    v.push(tainted_post);
    for m in ["PUT", "PATCH", "DELETE"] {
        let mut c = case(
            "http_request",
            json!({"method": m}),
            Ask,
            "tainted writes ask",
        );
        c.tainted = true;
        v.push(c);
    }
    let mut tainted_get = case(
        "http_request",
        json!({"method": "GET"}),
        Allow,
        "reads are fine",
    );
    tainted_get.tainted = true;
    v.push(tainted_get);
    let mut tainted_shell = case("shell", sh("ls"), Allow, "");
    tainted_shell.tainted = true;
    v.push(tainted_shell);
    // Groups.
    for (group, want, rule) in [
        ("work", Deny, "work group cannot fetch"),
        ("work-eu", Deny, "work group cannot fetch"),
        ("main", Allow, "late allow never beats an earlier deny"),
        ("homework", Allow, "late allow never beats an earlier deny"),
    ] {
        let mut c = case("web_fetch", json!({}), want, rule);
        c.group = group;
        v.push(c);
    }
    // Senders.
    for (sender, want, rule) in [
        (SenderRole::Other, Deny, "strangers never write files"),
        (SenderRole::Owner, Allow, ""),
        (SenderRole::Approver, Allow, ""),
    ] {
        let mut c = case("write_file", json!({"path": "x"}), want, rule);
        c.sender = sender;
        v.push(c);
    }
    // Channels; a deny still wins on any channel.
    for (channel, cmd, want, rule) in [
        ("telegram", "ls", Ask, "telegram shell asks"),
        ("telegram", "git push o --force", Deny, "no force push"),
        ("telegram", "rm -rf x", Ask, "rm -rf asks"),
        ("api", "ls", Allow, ""),
        ("terminal", "ls", Allow, ""),
        ("telegramx", "ls", Allow, ""),
    ] {
        let mut c = case("shell", sh(cmd), want, rule);
        c.channel = channel;
        v.push(c);
    }
    v
}

#[test]
fn the_matrix() {
    let policy = Policy::parse(POLICY).unwrap();
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    for (n, c) in cases.iter().enumerate() {
        let ctx = Context {
            tool: c.tool,
            args: &c.args,
            group: c.group,
            channel: c.channel,
            sender: c.sender,
            tainted: c.tainted,
            effect: c.effect,
        };
        let v = policy.decide(&ctx);
        let rule = match &v.reason {
            Reason::Rule { name, .. } => name.as_str(),
            _ => "",
        };
        assert_eq!(
            (v.decision, rule),
            (c.want, c.rule),
            "case {n}: {} {} group={} channel={} sender={:?} tainted={}",
            c.tool,
            c.args,
            c.group,
            c.channel,
            c.sender,
            c.tainted
        );
        assert_eq!(v.approval.is_some(), v.decision == Ask, "case {n}");
    }
}

#[test]
fn ask_rules_carry_their_approval_terms() {
    let policy = Policy::parse(POLICY).unwrap();
    let args = json!({"method": "DELETE"});
    let v = policy.decide(&Context {
        tool: "http_request",
        args: &args,
        group: "main",
        channel: "terminal",
        sender: SenderRole::Owner,
        tainted: true,
        effect: ToolEffect::Sandboxed,
    });
    let a = v.approval.unwrap();
    assert_eq!(a.approvers, ["alice", "bob"]);
    assert_eq!(
        (a.quorum, a.timeout.as_secs(), a.scope),
        (2, 30, Scope::Always)
    );
    assert!(
        matches!(
            v.reason,
            Reason::Rule {
                index: 3,
                line: 22,
                ..
            }
        ),
        "{:?}",
        v.reason
    );
    // A default ask goes to every configured approver.
    let v = policy.decide(&Context {
        tool: "cancel_task",
        args: &args,
        group: "main",
        channel: "terminal",
        sender: SenderRole::Owner,
        tainted: false,
        effect: ToolEffect::OutsideSandbox,
    });
    assert_eq!(v.approval.unwrap().approvers, ["alice", "bob", "owner"]);
}

#[test]
fn an_empty_policy_is_the_design_defaults() {
    let p = Policy::parse("").unwrap();
    let args = json!({});
    let mut ctx = Context {
        tool: "shell",
        args: &args,
        group: "main",
        channel: "terminal",
        sender: SenderRole::Owner,
        tainted: false,
        effect: ToolEffect::Sandboxed,
    };
    assert_eq!(p.decide(&ctx).decision, Allow);
    ctx.effect = ToolEffect::OutsideSandbox;
    assert_eq!(p.decide(&ctx).decision, Ask);
    ctx.effect = ToolEffect::Unknown;
    assert_eq!(p.decide(&ctx).decision, Deny);
}

#[test]
fn bad_policies_name_the_line_and_key() {
    for (text, line, key, msg) in [
        (
            "[[rule]]\ntool = \"x\"\naction = \"maybe\"\n",
            1,
            "rule[1].action",
            "maybe",
        ),
        (
            "\n\n[[rule]]\ntool = \"x\"\naction = \"ask\"\napprovers = [\"eve\"]\n",
            3,
            "rule[1].approvers",
            "unknown approver \"eve\"",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"deny\"\nargs = { c = { regex = \"(\" } }\n",
            1,
            "rule[1].args.c",
            "bad regex",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"deny\"\nargs = { c = { regex = \"a\", glob = \"b\" } }\n",
            1,
            "rule[1].args.c",
            "exactly one",
        ),
        (
            "[approvers.a]\nterminal = true\n[[rule]]\ntool = \"x\"\naction = \"ask\"\nquorum = 2\n",
            3,
            "rule[1].quorum",
            "between 1",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"allow\"\nscope = \"forever\"\n",
            1,
            "rule[1].scope",
            "forever",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"allow\"\nsender = \"boss\"\n",
            1,
            "rule[1].sender",
            "boss",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"allow\"\ntimeout_secs = 0\n",
            1,
            "rule[1].timeout_secs",
            "at least 1",
        ),
        (
            "[[rule]]\ntool = \"x\"\naction = \"allow\"\ntimeout_secs = 99999999999\n",
            1,
            "rule[1].timeout_secs",
            "at most",
        ),
        (
            "[approvers.a]\nterminal = true\n[[rule]]\ntool = \"x\"\naction = \"ask\"\napprovers = [\"a\", \"a\"]\nquorum = 2\n",
            3,
            "rule[1].approvers",
            "named twice",
        ),
        ("[[rule]]\naction = \"allow\"\n", 1, "policy", "tool"),
        (
            "[[rule]]\ntool = \"x\"\naction = \"allow\"\ncolour = \"red\"\n",
            4,
            "policy",
            "colour",
        ),
        ("[[rule]\n", 1, "policy", ""),
    ] {
        let e = Policy::parse(text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line, key), "{text}: {e}");
        assert!(e.message.contains(msg), "{text}: {e}");
    }
}
