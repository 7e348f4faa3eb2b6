//! The configuration file, `nanoclaw.toml` in the data dir: the commented default that
//! `nanoclaw init` writes, and loading it into validated settings.
//!
//! Raw TOML becomes [`Config`] once, here; nothing downstream sees raw values. Unknown keys and
//! bad values stop startup with an error that names the file, the key and what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Which sandbox backend runs commands. Only `bwrap` exists so far; `auto` picks the first
/// backend that passes its self-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Bwrap,
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
    pub command_timeout: Duration,
    pub output_limit_bytes: usize,
    pub max_concurrent_turns: usize,
    pub api_listen: SocketAddr,
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
    api: RawApi,
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
    command_timeout_secs: i64,
    output_limit_bytes: i64,
}

impl Default for RawSandbox {
    fn default() -> Self {
        RawSandbox {
            backend: BackendChoice::Auto,
            command_timeout_secs: 60,
            output_limit_bytes: 32 * 1024,
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
    #[error("{path}: key `{key}`: {expected}, got {got}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
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
        Ok(Config {
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
            command_timeout: secs(v.range(
                "sandbox.command_timeout_secs",
                raw.sandbox.command_timeout_secs,
                1,
                86_400,
            )?),
            output_limit_bytes: v.range(
                "sandbox.output_limit_bytes",
                raw.sandbox.output_limit_bytes,
                1024,
                16 << 20,
            )? as usize,
            max_concurrent_turns: v.range(
                "daemon.max_concurrent_turns",
                raw.daemon.max_concurrent_turns,
                1,
                256,
            )? as usize,
            api_listen: v.loopback("api.listen", raw.api.listen)?,
        })
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n as u64)
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(
        &self,
        key: &'static str,
        expected: impl Into<String>,
        got: impl std::fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    fn range(&self, key: &'static str, n: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(key, format!("expected an integer from {min} to {max}"), n))
        }
    }

    fn non_empty(&self, key: &'static str, s: String) -> Result<String, ConfigError> {
        if s.trim().is_empty() {
            Err(self.invalid(key, "expected a non-empty string", "\"\""))
        } else {
            Ok(s)
        }
    }

    fn url(&self, key: &'static str, s: String) -> Result<String, ConfigError> {
        match reqwest::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(s.trim_end_matches('/').to_owned())
            }
            _ => Err(self.invalid(key, "expected an http:// or https:// URL", format!("{s:?}"))),
        }
    }

    fn loopback(&self, key: &'static str, s: String) -> Result<SocketAddr, ConfigError> {
        match s.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Ok(addr),
            _ => Err(self.invalid(
                key,
                "expected a loopback address and port such as \"127.0.0.1:7878\"",
                format!("{s:?}"),
            )),
        }
    }
}

/// The commented default config written by `nanoclaw init`. Every key is listed with its default.
pub const DEFAULT_CONFIG: &str = r#"# nanoclaw configuration.
# Every key is optional; the value shown is the default. Unknown keys are an error.

[model]
# Wire format of the model server: "anthropic" (Messages API) or "openai" (Chat Completions,
# also spoken by OpenRouter, Ollama, vLLM and llama.cpp's server).
provider = "anthropic"
# Model name as the server knows it.
name = "claude-sonnet-4-5"
# Base URL of the server. Defaults: https://api.anthropic.com for "anthropic",
# https://api.openai.com/v1 for "openai". Examples: https://openrouter.ai/api/v1,
# http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8000/v1 (vLLM), http://127.0.0.1:8080/v1
# (llama.cpp). The API key is read from ANTHROPIC_API_KEY or OPENAI_API_KEY; a server at a
# custom base URL may need none.
# base_url = "https://api.anthropic.com"
# Most model steps (a step is one model call) in one turn.
max_steps = 20
# Most tokens the model may write in one step.
max_output_tokens = 4096
# Retries after a 429, a 5xx or a connection error, with backoff; Retry-After is honoured.
max_retries = 4
# Seconds one model request may take, streaming included.
request_timeout_secs = 120

[agent]
# The system prompt. The group's MEMORY.md (in its workspace) is appended to it.
# system_prompt = "You are nanoclaw, ..."
# Approximate tokens of history put in the prompt (4 bytes count as one token).
context_budget_tokens = 32000

[sandbox]
# Sandbox backend: "auto" (first that passes its self-test) or "bwrap" (bubblewrap).
backend = "auto"
# Seconds a command may run before its whole process tree is killed.
command_timeout_secs = 60
# Bytes kept from each of a command's stdout and stderr; the rest is dropped with a note.
output_limit_bytes = 32768

[daemon]
# Most agent turns running at once across all groups (one at a time per group).
max_concurrent_turns = 4

[api]
# Where `nanoclaw run` serves the local HTTP API. Must be a loopback address. Requests need
# the bearer token in the data dir's api.token file.
listen = "127.0.0.1:7878"
"#;

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
        assert_eq!(empty.output_limit_bytes, c.output_limit_bytes);
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
    fn openai_default_url_and_custom_base() {
        let c = parse("[model]\nprovider = \"openai\"\n").unwrap();
        assert_eq!(c.model.base_url, "https://api.openai.com/v1");
        let c =
            parse("[model]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1/\"\n")
                .unwrap();
        assert_eq!(c.model.base_url, "http://127.0.0.1:11434/v1");
    }
}
