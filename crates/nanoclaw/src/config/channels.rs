//! Each channel's settings: the raw TOML tables, and the validated types the adapters take.
//! Addresses are split into host and port, the SMTP security into an enum, and each channel's
//! routing rules are built here, once; no adapter re-parses a setting.

use std::collections::BTreeMap;

use nanoclaw_core::GroupId;
use serde::Deserialize;

use super::{ConfigError, Validator, is_loopback_host};

/// What to do with senders nobody configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Ignore,
    Allow,
    /// Keep the message, ask the approvers to admit the sender.
    Ask,
}

/// One channel's routing rules, from the config.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Short prefix for group names from this channel (`wh`, `tg`, `mail`).
    pub prefix: String,
    pub main_chat: Option<String>,
    pub owners: Vec<String>,
    pub senders: Vec<String>,
    pub unknown: Unknown,
    pub trigger: String,
    /// A group's own trigger (`[groups.NAME] trigger`), instead of the channel's.
    pub group_triggers: std::collections::BTreeMap<GroupId, String>,
}

/// A `host:port` setting, split once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// As written (brackets kept around an IPv6 address, as rules write it).
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// STARTTLS on a plain connection (submission, port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: loopback only.
    None,
}

/// The webhook channel's settings; its key is a stored secret, named here.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub key_secret: String,
    pub callback_url: Option<String>,
    pub rules: Rules,
}

/// The Telegram channel's settings; its bot token is a stored secret, named here.
#[derive(Clone, Debug)]
pub struct TelegramConfig {
    pub token_secret: String,
    pub api_base: String,
    pub poll_timeout_secs: u64,
    pub rules: Rules,
}

/// The email channel's settings; its password is a stored secret, named here.
#[derive(Clone, Debug)]
pub struct EmailConfig {
    pub imap: HostPort,
    pub imap_tls: bool,
    pub smtp: HostPort,
    pub smtp_security: SmtpSecurity,
    pub username: String,
    pub password_secret: String,
    pub address: String,
    pub poll_secs: u64,
    /// The receiving server's Authentication-Results id. When set, a mail's From counts only
    /// when the topmost Authentication-Results header, under this id, says `dmarc=pass`.
    pub authserv_id: Option<String>,
    pub rules: Rules,
}

/// The validated channels.
pub(super) struct Channels {
    pub webhook: Option<WebhookConfig>,
    pub telegram: Option<TelegramConfig>,
    pub email: Option<EmailConfig>,
}

/// One channel's routing rules.
fn rules(
    prefix: &str,
    main_chat: Option<String>,
    owners: Vec<String>,
    senders: Vec<String>,
    unknown: Unknown,
    trigger: String,
    group_triggers: &BTreeMap<GroupId, String>,
) -> Rules {
    Rules {
        prefix: prefix.into(),
        main_chat,
        owners,
        senders,
        unknown,
        trigger,
        group_triggers: group_triggers.clone(),
    }
}

impl Validator<'_> {
    /// A `host:port` setting.
    fn host_port(&self, key: &str, text: &str) -> Result<HostPort, ConfigError> {
        text.rsplit_once(':')
            .and_then(|(h, p)| {
                let port = p.parse::<u16>().ok().filter(|p| *p != 0)?;
                (!h.is_empty() && !h.contains(char::is_whitespace)).then(|| HostPort {
                    host: h.to_owned(),
                    port,
                })
            })
            .ok_or_else(|| self.invalid(key, "host:port", format!("{text:?}")))
    }
}

pub(super) fn parse(
    v: &Validator<'_>,
    raw: &RawChannels,
    group_triggers: &BTreeMap<GroupId, String>,
) -> Result<Channels, ConfigError> {
    Ok(Channels {
        webhook: raw
            .webhook
            .as_ref()
            .map(|w| webhook(v, w, group_triggers))
            .transpose()?,
        telegram: raw
            .telegram
            .as_ref()
            .map(|t| telegram(v, t, group_triggers))
            .transpose()?,
        email: raw
            .email
            .as_ref()
            .map(|e| email(v, e, group_triggers))
            .transpose()?,
    })
}

fn webhook(
    v: &Validator<'_>,
    w: &RawWebhook,
    group_triggers: &BTreeMap<GroupId, String>,
) -> Result<WebhookConfig, ConfigError> {
    let unknown = v.unknown_senders("channels.webhook.unknown_senders", &w.unknown_senders)?;
    v.filled("channels.webhook.key_secret", &[&w.key_secret])?;
    v.people("webhook", w.main_chat.as_ref(), &w.owners, &w.senders)?;
    // Replies are private: over the network only encrypted.
    let callback_url = match &w.callback_url {
        Some(url) => Some(v.url("channels.webhook.callback_url", url.clone())?),
        None => None,
    };
    Ok(WebhookConfig {
        key_secret: w.key_secret.clone(),
        callback_url,
        rules: rules(
            "wh",
            w.main_chat.clone(),
            w.owners.clone(),
            w.senders.clone(),
            unknown,
            w.trigger.clone(),
            group_triggers,
        ),
    })
}

fn telegram(
    v: &Validator<'_>,
    t: &RawTelegram,
    group_triggers: &BTreeMap<GroupId, String>,
) -> Result<TelegramConfig, ConfigError> {
    let unknown = v.unknown_senders("channels.telegram.unknown_senders", &t.unknown_senders)?;
    v.filled("channels.telegram.token_secret", &[&t.token_secret])?;
    v.people("telegram", t.main_chat.as_ref(), &t.owners, &t.senders)?;
    // The bot token is part of every request's URL.
    let api_base = v.url("channels.telegram.api_base", t.api_base.clone())?;
    Ok(TelegramConfig {
        token_secret: t.token_secret.clone(),
        api_base,
        // At least 1: with 0, getUpdates returns at once and polling spins.
        poll_timeout_secs: v.range(
            "channels.telegram.poll_timeout_secs",
            t.poll_timeout_secs,
            1,
            50,
        )? as u64,
        rules: rules(
            "tg",
            t.main_chat.clone(),
            t.owners.clone(),
            t.senders.clone(),
            unknown,
            t.trigger.clone(),
            group_triggers,
        ),
    })
}

fn email(
    v: &Validator<'_>,
    e: &RawEmail,
    group_triggers: &BTreeMap<GroupId, String>,
) -> Result<EmailConfig, ConfigError> {
    let unknown = v.unknown_senders("channels.email.unknown_senders", &e.unknown_senders)?;
    v.filled("channels.email.password_secret", &[&e.password_secret])?;
    v.filled("channels.email.username", &[&e.username])?;
    v.people("email", None, &e.owners, &e.senders)?;
    for (key, addresses) in [
        ("channels.email.address", std::slice::from_ref(&e.address)),
        ("channels.email.owners", e.owners.as_slice()),
        ("channels.email.senders", e.senders.as_slice()),
    ] {
        if let Some(bad) = addresses.iter().find(|a| {
            let parts = a.rsplit_once('@');
            parts.is_none_or(|(local, domain)| {
                local.is_empty() || domain.is_empty() || a.contains(char::is_whitespace)
            })
        }) {
            return Err(v.invalid(
                key,
                "a mail address such as \"you@example.com\"",
                format!("{bad:?}"),
            ));
        }
    }
    let smtp_security = match e.smtp_security.as_str() {
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        "none" => SmtpSecurity::None,
        other => {
            return Err(v.invalid(
                "channels.email.smtp_security",
                "\"starttls\", \"tls\" or \"none\" (loopback only)",
                format!("{other:?}"),
            ));
        }
    };
    let imap = v.host_port("channels.email.imap", &e.imap)?;
    let smtp = v.host_port("channels.email.smtp", &e.smtp)?;
    // The password goes over these connections: in the clear only to this machine.
    if !e.imap_tls && !is_loopback_host(&imap.host) {
        return Err(v.invalid(
            "channels.email.imap_tls",
            "true for a server that is not on loopback (the password would go in the clear)",
            "false",
        ));
    }
    if smtp_security == SmtpSecurity::None && !is_loopback_host(&smtp.host) {
        return Err(v.invalid(
            "channels.email.smtp_security",
            "\"starttls\" or \"tls\" for a server that is not on loopback (the password would go in the clear)",
            "\"none\"",
        ));
    }
    let lower = |people: &[String]| -> Vec<String> {
        people.iter().map(|p| p.to_ascii_lowercase()).collect()
    };
    Ok(EmailConfig {
        imap,
        imap_tls: e.imap_tls,
        smtp,
        smtp_security,
        username: e.username.clone(),
        password_secret: e.password_secret.clone(),
        address: e.address.clone(),
        poll_secs: v.range("channels.email.poll_secs", e.poll_secs, 1, 3600)? as u64,
        authserv_id: match e.authserv_id.as_deref().map(str::trim) {
            Some("") => {
                return Err(v.invalid(
                    "channels.email.authserv_id",
                    "the receiving server's Authentication-Results id, such as \"mx.example.com\"",
                    "\"\"",
                ));
            }
            other => other.map(str::to_owned),
        },
        // No trigger: every mail is addressed to the agent.
        rules: rules(
            "mail",
            None,
            lower(&e.owners),
            lower(&e.senders),
            unknown,
            String::new(),
            group_triggers,
        ),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawChannels {
    webhook: Option<RawWebhook>,
    telegram: Option<RawTelegram>,
    email: Option<RawEmail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    imap: String,
    #[serde(default = "default_true")]
    imap_tls: bool,
    smtp: String,
    #[serde(default = "default_smtp_security")]
    smtp_security: String,
    username: String,
    password_secret: String,
    address: String,
    #[serde(default)]
    owners: Vec<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default = "default_unknown")]
    unknown_senders: String,
    #[serde(default = "default_poll_secs")]
    poll_secs: i64,
    #[serde(default)]
    authserv_id: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_smtp_security() -> String {
    "starttls".into()
}

fn default_poll_secs() -> i64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    token_secret: String,
    #[serde(default = "default_telegram_api")]
    api_base: String,
    #[serde(default = "default_poll_timeout")]
    poll_timeout_secs: i64,
    main_chat: Option<String>,
    #[serde(default)]
    owners: Vec<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default = "default_unknown")]
    unknown_senders: String,
    #[serde(default = "default_trigger")]
    trigger: String,
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}

fn default_poll_timeout() -> i64 {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    key_secret: String,
    callback_url: Option<String>,
    main_chat: Option<String>,
    #[serde(default)]
    owners: Vec<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default = "default_unknown")]
    unknown_senders: String,
    #[serde(default = "default_trigger")]
    trigger: String,
}

fn default_unknown() -> String {
    "ignore".into()
}

fn default_trigger() -> String {
    "@nanoclaw".into()
}
