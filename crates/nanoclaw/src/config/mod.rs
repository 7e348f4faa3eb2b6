//! The configuration file, `nanoclaw.toml` in the data dir: the commented default that
//! `nanoclaw init` writes, and loading it into validated settings.
//!
//! Raw TOML becomes [`Config`] once, here; nothing downstream sees raw values. Unknown keys and
//! bad values stop startup with an error that names the file, the key and what was expected.

pub mod channels;
pub mod home;
pub mod mcp;
pub mod policy_file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_egress::{Policy, Rule};
use nanoclaw_sandbox::{Enforcement, Limits};
use serde::Deserialize;

/// Name of the config file inside the data dir.
pub const CONFIG_FILE: &str = "nanoclaw.toml";

/// Which wire format the model server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Anthropic,
    Openai,
}

impl Provider {
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Openai => "https://api.openai.com/v1",
        }
    }

    /// The environment variable the API key is read from.
    pub fn key_env(self) -> &'static str {
        match self {
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::Openai => "OPENAI_API_KEY",
        }
    }
}

/// Which sandbox backend runs commands; `auto` picks the first that works (bwrap, then Docker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Bwrap,
    Docker,
}

/// Validated model settings.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub provider: Provider,
    pub name: String,
    pub base_url: String,
    pub max_steps: u32,
    pub max_output_tokens: u32,
    pub max_retries: u32,
    pub request_timeout: Duration,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub model: ModelConfig,
    pub system_prompt: String,
    pub context_budget_tokens: usize,
    pub backend: BackendChoice,
    pub landlock: Enforcement,
    pub cgroups: Enforcement,
    pub docker_socket: String,
    pub docker_image: String,
    pub docker_idle_timeout: Duration,
    /// Limits for every group without its own.
    pub limits: Limits,
    /// Groups with limits of their own (`[groups.NAME]`).
    pub group_limits: BTreeMap<GroupId, Limits>,
    pub max_concurrent_turns: usize,
    /// `[scheduler]`: task runs at once, attempts per slot, backoff before the second.
    pub scheduler: SchedulerLimits,
    /// `[channels.webhook]`, when configured.
    pub webhook: Option<channels::WebhookConfig>,
    /// `[channels.telegram]`, when configured.
    pub telegram: Option<channels::TelegramConfig>,
    /// `[channels.email]`, when configured.
    pub email: Option<channels::EmailConfig>,
    pub api_listen: SocketAddr,
    /// Hosts every group's sandbox may reach through the egress proxy.
    pub egress: Policy,
    /// Further hosts for one group (`[egress.groups.NAME]`), added to `egress`.
    pub group_egress: BTreeMap<GroupId, Policy>,
    /// `[mcp.servers.NAME]`: the MCP servers, by name.
    pub mcp: BTreeMap<String, mcp::McpServer>,
    /// PEM files of roots trusted for upstream TLS besides the system's.
    pub extra_roots: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    model: RawModel,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    scheduler: RawScheduler,
    #[serde(default)]
    channels: channels::RawChannels,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    groups: BTreeMap<String, RawLimits>,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    mcp: mcp::RawMcp,
}

/// `[egress]`: `allow` for every group, `groups.NAME.allow` for one.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<RawEgressRule>,
    #[serde(default)]
    groups: BTreeMap<String, RawGroupEgress>,
    #[serde(default)]
    extra_roots: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroupEgress {
    #[serde(default)]
    allow: Vec<RawEgressRule>,
}

/// A rule: `"host[:port]"`, or a table with methods and the private-network flag.
#[derive(Clone)]
pub(super) enum RawEgressRule {
    Host(String),
    Table(RawEgressTable),
}

// By hand rather than `untagged`, so a bad table says which field is wrong.
impl<'de> Deserialize<'de> for RawEgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(RawEgressRule::Host(s)),
            v @ toml::Value::Table(_) => RawEgressTable::deserialize(v)
                .map(RawEgressRule::Table)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected \"host[:port]\" or {{ host = ..., methods = [...], private = ... }}, got {}",
                other.type_str()
            ))),
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgressTable {
    host: String,
    methods: Option<Vec<String>>,
    #[serde(default)]
    private: bool,
}

/// Limit keys, in `[limits]` and in each `[groups.NAME]`. Absent keys inherit.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    command_timeout_secs: Option<i64>,
    output_limit_bytes: Option<i64>,
    memory_mb: Option<i64>,
    max_processes: Option<i64>,
    cpu_time_secs: Option<i64>,
    cpus: Option<f64>,
    file_size_mb: Option<i64>,
    tmp_size_mb: Option<i64>,
    workspace_quota_mb: Option<i64>,
    /// Only in `[groups.NAME]`: what a chat message must mention to start a turn there.
    trigger: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawModel {
    provider: Provider,
    name: String,
    base_url: Option<String>,
    max_steps: i64,
    max_output_tokens: i64,
    max_retries: i64,
    request_timeout_secs: i64,
}

impl Default for RawModel {
    fn default() -> Self {
        RawModel {
            provider: Provider::Anthropic,
            name: "claude-sonnet-4-5".into(),
            base_url: None,
            max_steps: 20,
            max_output_tokens: 4096,
            max_retries: 4,
            request_timeout_secs: 120,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAgent {
    system_prompt: Option<String>,
    context_budget_tokens: i64,
}

impl Default for RawAgent {
    fn default() -> Self {
        RawAgent {
            system_prompt: None,
            context_budget_tokens: 32_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSandbox {
    backend: BackendChoice,
    landlock: Enforcement,
    cgroups: Enforcement,
    docker_socket: Option<String>,
    docker_image: String,
    docker_idle_secs: i64,
}

impl Default for RawSandbox {
    fn default() -> Self {
        RawSandbox {
            backend: BackendChoice::Auto,
            landlock: Enforcement::BestEffort,
            cgroups: Enforcement::BestEffort,
            docker_socket: None,
            docker_image: "nanoclaw-agent:latest".into(),
            docker_idle_secs: 600,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    max_concurrent_turns: i64,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            max_concurrent_turns: 4,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawScheduler {
    max_concurrent_runs: i64,
    max_attempts: i64,
    retry_backoff_secs: i64,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler {
            max_concurrent_runs: 2,
            max_attempts: 3,
            retry_backoff_secs: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: String,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:7878".into(),
        }
    }
}

/// The system prompt used when the config sets none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are nanoclaw, a personal assistant. You can run \
shell commands and read and write files with your tools; they run in a sandbox whose working \
directory, /workspace, persists between conversations. Keep notes worth remembering in \
/workspace/MEMORY.md. Answer concisely.";

/// The task runner's bounds (`[scheduler]`).
#[derive(Clone, Copy, Debug)]
pub struct SchedulerLimits {
    pub max_concurrent_runs: usize,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
}

/// A config error: which file, which key, what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} is missing: {hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("{path}: key `{key}`: {expected}, got {got}")]
    Invalid {
        path: PathBuf,
        key: String,
        expected: String,
        got: String,
    },
}

impl Config {
    /// Load and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let v = Validator { path };
        let model = ModelConfig {
            provider: raw.model.provider,
            name: v.non_empty("model.name", raw.model.name)?,
            base_url: match raw.model.base_url {
                None => raw.model.provider.default_base_url().to_owned(),
                Some(url) => v.url("model.base_url", url)?,
            },
            max_steps: v.range("model.max_steps", raw.model.max_steps, 1, 200)? as u32,
            max_output_tokens: v.range(
                "model.max_output_tokens",
                raw.model.max_output_tokens,
                1,
                1_000_000,
            )? as u32,
            max_retries: v.range("model.max_retries", raw.model.max_retries, 0, 10)? as u32,
            request_timeout: secs(v.range(
                "model.request_timeout_secs",
                raw.model.request_timeout_secs,
                1,
                3600,
            )?),
        };
        if raw.limits.trigger.is_some() {
            return Err(v.invalid(
                "limits.trigger",
                "no trigger here: a trigger belongs to one group, in [groups.NAME]",
                "a trigger",
            ));
        }
        let mut group_triggers = BTreeMap::new();
        for (name, g) in &raw.groups {
            if let (Some(t), Ok(group)) = (&g.trigger, name.parse::<GroupId>()) {
                if t.trim().is_empty() {
                    return Err(v.invalid(
                        format!("groups.{name}.trigger"),
                        "a word or prefix such as \"@nanoclaw\"",
                        "an empty string",
                    ));
                }
                group_triggers.insert(group, t.clone());
            }
        }
        let channels = channels::parse(&v, &raw.channels, &group_triggers)?;
        let config = Config {
            model,
            system_prompt: match raw.agent.system_prompt {
                Some(p) => v.non_empty("agent.system_prompt", p)?,
                None => DEFAULT_SYSTEM_PROMPT.to_owned(),
            },
            context_budget_tokens: v.range(
                "agent.context_budget_tokens",
                raw.agent.context_budget_tokens,
                1000,
                10_000_000,
            )? as usize,
            backend: raw.sandbox.backend,
            landlock: raw.sandbox.landlock,
            cgroups: raw.sandbox.cgroups,
            docker_socket: match raw.sandbox.docker_socket {
                None => nanoclaw_sandbox::docker::default_socket(),
                Some(s) if s.starts_with("unix://") && s.len() > 7 => s,
                Some(s) => {
                    return Err(v.invalid(
                        "sandbox.docker_socket",
                        "expected a unix:// socket path",
                        format!("{s:?}"),
                    ));
                }
            },
            docker_image: v.non_empty("sandbox.docker_image", raw.sandbox.docker_image)?,
            docker_idle_timeout: secs(v.range(
                "sandbox.docker_idle_secs",
                raw.sandbox.docker_idle_secs,
                1,
                86_400,
            )?),
            limits: v.limits("limits", &raw.limits, Limits::DEFAULT)?,
            group_limits: {
                let base = v.limits("limits", &raw.limits, Limits::DEFAULT)?;
                let mut map = BTreeMap::new();
                for (name, raw_limits) in &raw.groups {
                    let group: GroupId = name.parse().map_err(|e| {
                        v.invalid(format!("groups.{name}"), "a valid group name", e)
                    })?;
                    map.insert(
                        group,
                        v.limits(&format!("groups.{name}"), raw_limits, base)?,
                    );
                }
                map
            },
            webhook: channels.webhook,
            telegram: channels.telegram,
            email: channels.email,
            scheduler: SchedulerLimits {
                max_concurrent_runs: v.range(
                    "scheduler.max_concurrent_runs",
                    raw.scheduler.max_concurrent_runs,
                    1,
                    64,
                )? as usize,
                max_attempts: v.range(
                    "scheduler.max_attempts",
                    raw.scheduler.max_attempts,
                    1,
                    10,
                )? as u32,
                retry_backoff: std::time::Duration::from_secs(v.range(
                    "scheduler.retry_backoff_secs",
                    raw.scheduler.retry_backoff_secs,
                    1,
                    3600,
                )? as u64),
            },
            max_concurrent_turns: v.range(
                "daemon.max_concurrent_turns",
                raw.daemon.max_concurrent_turns,
                1,
                256,
            )? as usize,
            api_listen: v.loopback("api.listen", raw.api.listen)?,
            egress: v.egress("egress.allow", &raw.egress.allow)?,
            group_egress: {
                let mut map = BTreeMap::new();
                for (name, g) in &raw.egress.groups {
                    let key = format!("egress.groups.{name}");
                    let group: GroupId = name
                        .parse()
                        .map_err(|e| v.invalid(key.clone(), "a valid group name", e))?;
                    map.insert(group, v.egress(&format!("{key}.allow"), &g.allow)?);
                }
                map
            },
            mcp: v.mcp(&raw.mcp)?,
            extra_roots: {
                for (i, p) in raw.egress.extra_roots.iter().enumerate() {
                    if !p.is_absolute() {
                        return Err(v.invalid(
                            format!("egress.extra_roots[{i}]"),
                            "an absolute path to a PEM file",
                            p.display(),
                        ));
                    }
                }
                raw.egress.extra_roots.clone()
            },
        };
        v.api_out_of_reach(&config)?;
        Ok(config)
    }
}

impl Config {
    /// The egress policy of `group`: the common rules, then the group's own.
    pub fn egress_for(&self, group: &GroupId) -> Policy {
        let mut rules = self.egress.rules.clone();
        if let Some(own) = self.group_egress.get(group) {
            rules.extend(own.rules.iter().cloned());
        }
        Policy { rules }
    }

    /// The limits that apply to `group`'s sandbox.
    pub fn limits_for(&self, group: &GroupId) -> Limits {
        self.group_limits.get(group).copied().unwrap_or(self.limits)
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n as u64)
}

pub(crate) struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    /// A channel's `unknown_senders`.
    pub(super) fn unknown_senders(
        &self,
        key: &str,
        text: &str,
    ) -> Result<channels::Unknown, ConfigError> {
        match text {
            "ignore" => Ok(channels::Unknown::Ignore),
            "allow" => Ok(channels::Unknown::Allow),
            "ask" => Ok(channels::Unknown::Ask),
            other => Err(self.invalid(
                key,
                "\"ignore\", \"ask\" or \"allow\"",
                format!("{other:?}"),
            )),
        }
    }

    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        expected: impl Into<String>,
        got: impl std::fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// Validate egress rules under `key`.
    pub(super) fn egress(&self, key: &str, raw: &[RawEgressRule]) -> Result<Policy, ConfigError> {
        let rules = raw
            .iter()
            .map(|r| {
                let parsed = match r {
                    RawEgressRule::Host(h) => Rule::parse(h, None, false),
                    RawEgressRule::Table(t) => {
                        Rule::parse(&t.host, t.methods.as_deref(), t.private)
                    }
                };
                parsed.map_err(|e| {
                    self.invalid(key.to_owned(), "a host, host:port or *.suffix rule", e)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { rules })
    }

    /// Refuse an egress rule that would let a sandbox's proxy connect to this daemon's own API
    /// (`api.listen`): a private rule naming `localhost` or the API's address at its port.
    fn api_out_of_reach(&self, config: &Config) -> Result<(), ConfigError> {
        let api = config.api_listen;
        let names = [
            "localhost".to_owned(),
            match api.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            },
        ];
        let lists = std::iter::once(("egress.allow".to_owned(), &config.egress))
            .chain(
                config
                    .group_egress
                    .iter()
                    .map(|(g, p)| (format!("egress.groups.{g}.allow"), p)),
            )
            .chain(
                config
                    .mcp
                    .iter()
                    .map(|(name, s)| (format!("mcp.servers.{name}.egress"), &s.egress)),
            );
        for (key, policy) in lists {
            for rule in &policy.rules {
                // An address literal in another spelling of the API's (IPv4-mapped IPv6), or
                // the unspecified one, which the kernel takes for this host: as the proxy
                // judges it.
                let same_address = match &rule.pattern {
                    nanoclaw_egress::HostPattern::Exact(h) => h
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| {
                            nanoclaw_egress::addr::reaches_listener(
                                std::net::SocketAddr::new(ip, api.port()),
                                api,
                            )
                        }),
                    nanoclaw_egress::HostPattern::Suffix(_) => false,
                };
                if rule.private
                    && rule.ports.contains(&api.port())
                    && (same_address || names.iter().any(|n| rule.pattern.matches(n)))
                {
                    return Err(self.invalid(
                        key,
                        format!("a rule that leaves out nanoclaw's own API (api.listen = {api})"),
                        &rule.text,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Validate a set of limit keys under `section`, inheriting absent ones from `base`.
    fn limits(&self, section: &str, raw: &RawLimits, base: Limits) -> Result<Limits, ConfigError> {
        const MIB: u64 = 1024 * 1024;
        let int = |key: &str, value: Option<i64>, min: i64, max: i64| match value {
            None => Ok(None),
            Some(n) if (min..=max).contains(&n) => Ok(Some(n as u64)),
            Some(n) => Err(self.invalid(
                format!("{section}.{key}"),
                format!("expected an integer from {min} to {max}"),
                n,
            )),
        };
        let cpu_millis = match raw.cpus {
            None => base.cpu_millis,
            Some(c) if c.is_finite() && (0.01..=256.0).contains(&c) => (c * 1000.0).round() as u32,
            Some(c) => {
                let key = format!("{section}.cpus");
                return Err(self.invalid(key, "expected a number of cores from 0.01 to 256", c));
            }
        };
        let mib = |key, value, min, max, base_bytes: u64| -> Result<u64, ConfigError> {
            Ok(int(key, value, min, max)?.map_or(base_bytes, |n| n * MIB))
        };
        Ok(Limits {
            wall_time: int("command_timeout_secs", raw.command_timeout_secs, 1, 86_400)?
                .map_or(base.wall_time, Duration::from_secs),
            output_bytes: int("output_limit_bytes", raw.output_limit_bytes, 1024, 16 << 20)?
                .map_or(base.output_bytes, |n| n as usize),
            memory_bytes: mib("memory_mb", raw.memory_mb, 16, 1 << 20, base.memory_bytes)?,
            max_processes: int("max_processes", raw.max_processes, 8, 1 << 16)?
                .map_or(base.max_processes, |n| n as u32),
            cpu_time: int("cpu_time_secs", raw.cpu_time_secs, 1, 86_400)?
                .map_or(base.cpu_time, Duration::from_secs),
            cpu_millis,
            file_size_bytes: mib(
                "file_size_mb",
                raw.file_size_mb,
                1,
                1 << 20,
                base.file_size_bytes,
            )?,
            tmp_size_bytes: mib(
                "tmp_size_mb",
                raw.tmp_size_mb,
                1,
                1 << 20,
                base.tmp_size_bytes,
            )?,
            workspace_quota_bytes: mib(
                "workspace_quota_mb",
                raw.workspace_quota_mb,
                1,
                1 << 24,
                base.workspace_quota_bytes,
            )?,
        })
    }

    pub(super) fn range(
        &self,
        key: &'static str,
        n: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(key, format!("expected an integer from {min} to {max}"), n))
        }
    }

    pub(super) fn non_empty(&self, key: &'static str, s: String) -> Result<String, ConfigError> {
        if s.trim().is_empty() {
            Err(self.invalid(key, "expected a non-empty string", "\"\""))
        } else {
            Ok(s)
        }
    }

    /// An https:// URL, or http:// to this machine only (credentials go with the requests).
    pub(super) fn url(&self, key: &'static str, s: String) -> Result<String, ConfigError> {
        match reqwest::Url::parse(&s) {
            Ok(u)
                if u.scheme() == "https"
                    || (u.scheme() == "http"
                        && u.host_str().is_some_and(|h| {
                            is_loopback_host(h.trim_start_matches('[').trim_end_matches(']'))
                        })) =>
            {
                Ok(s.trim_end_matches('/').to_owned())
            }
            _ => Err(self.invalid(
                key,
                "expected an https:// URL (http:// only to this machine's loopback)",
                format!("{s:?}"),
            )),
        }
    }

    /// Refuse an empty (or blank) name: an owner `""` or a secret `""` is a mistake, never a
    /// meaning.
    pub(super) fn filled(&self, key: &str, values: &[&String]) -> Result<(), ConfigError> {
        match values.iter().find(|v| v.trim().is_empty()) {
            Some(v) => Err(self.invalid(key.to_owned(), "a non-empty value", format!("{v:?}"))),
            None => Ok(()),
        }
    }

    /// The senders and chat settings every channel has.
    pub(super) fn people(
        &self,
        channel: &str,
        main_chat: Option<&String>,
        owners: &[String],
        senders: &[String],
    ) -> Result<(), ConfigError> {
        self.filled(
            &format!("channels.{channel}.main_chat"),
            &main_chat.into_iter().collect::<Vec<_>>(),
        )?;
        self.filled(
            &format!("channels.{channel}.owners"),
            &owners.iter().collect::<Vec<_>>(),
        )?;
        self.filled(
            &format!("channels.{channel}.senders"),
            &senders.iter().collect::<Vec<_>>(),
        )
    }

    pub(super) fn loopback(&self, key: &'static str, s: String) -> Result<SocketAddr, ConfigError> {
        match s.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() && addr.port() != 0 => Ok(addr),
            _ => Err(self.invalid(
                key,
                "expected a loopback address and port such as \"127.0.0.1:7878\"",
                format!("{s:?}"),
            )),
        }
    }
}

/// The commented default config written by `nanoclaw init`. Every key is listed with its default.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// `localhost` or a loopback address: a connection that never leaves this machine.
pub(super) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("nanoclaw.toml"), text)
    }

    #[test]
    fn default_file_parses_to_defaults() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.model.provider, Provider::Anthropic);
        assert_eq!(c.model.base_url, "https://api.anthropic.com");
        assert_eq!(c.model.max_steps, 20);
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:7878");
        let empty = parse("").unwrap();
        assert_eq!(empty.model.name, c.model.name);
        assert_eq!(empty.limits, c.limits);
        assert_eq!(c.limits, Limits::DEFAULT);
    }

    #[test]
    fn unknown_key_names_the_key_and_file() {
        let e = parse("[model]\nnmae = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("nanoclaw.toml"), "{e}");
        assert!(e.contains("nmae"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[modle]\n").unwrap_err().to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        let e = parse("[model]\nmax_steps = 0\n").unwrap_err().to_string();
        assert!(
            e.contains("model.max_steps") && e.contains("from 1 to 200") && e.contains("got 0"),
            "{e}"
        );
        let e = parse("[model]\nprovider = \"gemini\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemini") && e.contains("anthropic"), "{e}");
        let e = parse("[model]\nbase_url = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.base_url"), "{e}");
        // Credentials and private text never go in the clear past this machine.
        let e = parse("[model]\nbase_url = \"http://api.example.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.base_url") && e.contains("https://"),
            "{e}"
        );
        assert!(parse("[model]\nbase_url = \"http://127.0.0.1:9\"\n").is_ok());
        assert!(parse("[model]\nbase_url = \"http://[::1]:9\"\n").is_ok());
        let e = parse("[channels.webhook]\nkey_secret = \"K\"\ncallback_url = \"http://hooks.example.com/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels.webhook.callback_url"), "{e}");
        let e =
            parse("[channels.telegram]\ntoken_secret = \"T\"\napi_base = \"http://tg.example\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("channels.telegram.api_base"), "{e}");
        let mail = |extra: &str| {
            parse(&format!(
                "[channels.email]\nimap = \"mail.example.com:143\"\nsmtp = \"mail.example.com:25\"\nusername = \"a\"\npassword_secret = \"P\"\naddress = \"a@example.com\"\n{extra}"
            ))
        };
        assert!(mail("").is_ok());
        let e = mail("imap_tls = false\n").unwrap_err().to_string();
        assert!(e.contains("channels.email.imap_tls"), "{e}");
        let e = mail("smtp_security = \"none\"\n").unwrap_err().to_string();
        assert!(e.contains("channels.email.smtp_security"), "{e}");
        let e = parse("[channels.telegram]\ntoken_secret = \"T\"\npoll_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("poll_timeout_secs"), "{e}");
        // Empty names, addresses that are not addresses, port 0.
        for (text, key) in [
            (
                "[channels.telegram]\ntoken_secret = \"T\"\nowners = [\"\"]\n",
                "channels.telegram.owners",
            ),
            (
                "[channels.telegram]\ntoken_secret = \"T\"\nmain_chat = \"\"\n",
                "channels.telegram.main_chat",
            ),
            (
                "[channels.webhook]\nkey_secret = \"\"\n",
                "channels.webhook.key_secret",
            ),
            ("[api]\nlisten = \"127.0.0.1:0\"\n", "api.listen"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        for (extra, key) in [
            ("owners = [\"nobody\"]\n", "channels.email.owners"),
            ("senders = [\"a b@x\"]\n", "channels.email.senders"),
        ] {
            let e = mail(extra).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = parse("[channels.email]\nimap = \"mail.example.com:0\"\nsmtp = \"mail.example.com:25\"\nusername = \"a\"\npassword_secret = \"P\"\naddress = \"a@example.com\"\n").unwrap_err().to_string();
        assert!(e.contains("channels.email.imap"), "{e}");
        let e = parse("[channels.email]\nimap = \"mail.example.com:993\"\nsmtp = \"mail.example.com:25\"\nusername = \"a\"\npassword_secret = \"P\"\naddress = \"not-an-address\"\n").unwrap_err().to_string();
        assert!(e.contains("channels.email.address"), "{e}");
        let e = parse("[api]\nlisten = \"0.0.0.0:80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.listen") && e.contains("loopback"), "{e}");
        let e = parse("[model]\nmax_steps = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_steps"), "{e}");
    }

    #[test]
    fn group_triggers_belong_to_groups() {
        let c = parse("[groups.team]\ntrigger = \"!ai\"\n").unwrap();
        assert!(c.webhook.is_none());
        let e = parse("[limits]\ntrigger = \"!ai\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.trigger"), "{e}");
        let e = parse("[groups.team]\ntrigger = \" \"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups.team.trigger"), "{e}");
    }

    #[test]
    fn group_limits_override_and_inherit() {
        let c = parse("[limits]\nmemory_mb = 512\n[groups.work]\nmax_processes = 64\ncpus = 0.5\n")
            .unwrap();
        let work = c.limits_for(&"work".parse().unwrap());
        assert_eq!(work.max_processes, 64);
        assert_eq!(work.cpu_millis, 500);
        assert_eq!(
            work.memory_bytes,
            512 * 1024 * 1024,
            "inherited from [limits]"
        );
        assert_eq!(
            c.limits_for(&GroupId::main()).max_processes,
            Limits::DEFAULT.max_processes
        );
        let e = parse("[groups.work]\nmemory_mb = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("groups.work.memory_mb") && e.contains("from 16"),
            "{e}"
        );
        let e = parse("[groups.\"../x\"]\nmemory_mb = 64\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups"), "{e}");
        let e = parse("[groups.work]\nmemroy_mb = 64\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memroy_mb"), "{e}");
        let e = parse("[sandbox]\nlandlock = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe") && e.contains("required"), "{e}");
    }

    #[test]
    fn no_egress_rule_reaches_the_daemons_own_api() {
        for (text, key) in [
            (
                "[egress]\nallow = [{ host = \"localhost:7878\", private = true }]\n",
                "egress.allow",
            ),
            (
                "[egress.groups.work]\nallow = [{ host = \"127.0.0.1:7878\", private = true }]\n",
                "egress.groups.work.allow",
            ),
            (
                "[api]\nlisten = \"[::1]:9000\"\n[egress]\nallow = [{ host = \"[::1]:9000\", private = true }]\n",
                "egress.allow",
            ),
            (
                "[mcp.servers.loop]\nurl = \"http://localhost:7878/mcp\"\negress = [{ host = \"localhost:7878\", private = true }]\n",
                "mcp.servers.loop.egress",
            ),
            (
                "[egress]\nallow = [{ host = \"0.0.0.0:7878\", private = true }]\n",
                "egress.allow",
            ),
            (
                "[egress]\nallow = [{ host = \"[::ffff:7f00:1]:7878\", private = true }]\n",
                "egress.allow",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("own API"), "{text}: {e}");
        }
        // Another port of the same host, or the address without `private`, is not the API.
        assert!(
            parse("[egress]\nallow = [{ host = \"localhost:8080\", private = true }, \"127.0.0.1:7878\"]\n")
                .is_ok()
        );
    }

    #[test]
    fn egress_rules_parse_and_merge_per_group() {
        let c = parse(
            "[egress]\nallow = [\"api.github.com\", { host = \"nas.lan:5000\", methods = [\"GET\"], private = true }]\n[egress.groups.work]\nallow = [\"*.example.com\"]\n",
        )
        .unwrap();
        let work = c.egress_for(&"work".parse().unwrap());
        assert_eq!(work.rules.len(), 3);
        assert!(work.allow("x.example.com", 443, "GET").is_ok());
        assert!(
            c.egress_for(&GroupId::main())
                .allow("x.example.com", 443, "GET")
                .is_err()
        );
        assert!(c.egress_for(&GroupId::main()).rules[1].private);
        let e = parse("[egress]\nallow = [\"bad host\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("egress.allow") && e.contains("bad host"), "{e}");
        let e = parse("[egress]\nallow = [{ host = \"x.com\", port = 1 }]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `port`") && e.contains("line 2"),
            "{e}"
        );
        let e = parse("[egress]\nallow = [3]\n").unwrap_err().to_string();
        assert!(e.contains("expected \"host[:port]\""), "{e}");
        let e = parse("[egress.groups.\"Bad\"]\nallow = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("egress.groups.Bad"), "{e}");
    }

    #[test]
    fn openai_default_url_and_custom_base() {
        let c = parse("[model]\nprovider = \"openai\"\n").unwrap();
        assert_eq!(c.model.base_url, "https://api.openai.com/v1");
        let c =
            parse("[model]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1/\"\n")
                .unwrap();
        assert_eq!(c.model.base_url, "http://127.0.0.1:11434/v1");
    }
}
