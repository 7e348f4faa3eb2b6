//! The email channel: IMAP in (IDLE where the server offers it, polling otherwise), SMTP out.
//!
//! - A thread is a group: its root is the first id in `References` (else `In-Reply-To`, else
//!   the message's own `Message-ID`). Every mail routed to the agent starts a turn (a held
//!   sender's waits for admission; an ignored sender's is dropped).
//! - A conversation belongs to whoever started the thread (the owners count as one). Anyone
//!   else writing into it gets a conversation (and group) of their own, keyed by the root and
//!   their address: knowing a thread's Message-ID never lets a sender read its history.
//! - A message is committed to the inbox before the last-seen UID moves past it (both kept in
//!   the store); one seen before is stored once (by `Message-ID`).
//! - Bodies: the text part, else the HTML part converted to text; attachments are listed by
//!   name, type and size, never opened. Mail is outside content unless it is from an owner.
//! - Replies go to the thread's last sender with `In-Reply-To` and `References`, and are
//!   marked sent only after the SMTP server accepted them.
//! - The password is a stored secret, used only here.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mail_parser::{MessageParser, MimeHeaders};
use rusqlite::{OptionalExtension, params};

use crate::agent::queue::Queue;
use crate::config::channels::{EmailConfig, SmtpSecurity};
use crate::store::Store;

pub const CHANNEL: &str = "email";

pub struct Email {
    config: EmailConfig,
    password: String,
    store: Arc<Store>,
}

/// What an inbound mail became, for the inbox.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub message_id: String,
    pub root: String,
    pub from: String,
    pub subject: String,
    pub references: Vec<String>,
    /// The topmost Authentication-Results header (the receiving server's), if any.
    pub authentication_results: Option<String>,
    pub text: String,
}

/// The most text of one mail that enters the inbox; the rest is cut, with a note.
const MAX_TEXT: usize = 64 * 1024;
/// Whether an Authentication-Results value is from `authserv_id` and says DMARC passed for
/// `from_domain` (the domain of the mail's From). Comments and quoted strings are dropped
/// first: they may echo what the sender wrote.
pub fn dmarc_passed(results: Option<&str>, authserv_id: &str, from_domain: &str) -> bool {
    let Some(results) = results else {
        return false;
    };
    let results = without_comments_and_quotes(results);
    let mut parts = results.split(';');
    let issuer = parts
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("");
    issuer.eq_ignore_ascii_case(authserv_id)
        && parts.any(|method| {
            let mut words = method.split_whitespace();
            words
                .next()
                .is_some_and(|result| result.eq_ignore_ascii_case("dmarc=pass"))
                && words.any(|property| {
                    property.split_once('=').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("header.from") && v.eq_ignore_ascii_case(from_domain)
                    })
                })
        })
}

/// `text` without `(comments)` (nested) and `"quoted strings"` (with backslash escapes).
fn without_comments_and_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            c if !quoted && depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Record the mailbox's UIDVALIDITY. When it changed, the mailbox was rebuilt and its UIDs
/// mean nothing any more: the last-seen UID goes back to 0 (mail read again is known by its
/// Message-ID and stored once). Returns whether that happened.
pub fn note_uid_validity(store: &Store, validity: u32) -> Result<bool, crate::store::StoreError> {
    let validity = i64::from(validity);
    let changed = store
        .channel_state(CHANNEL, "uidvalidity")?
        .is_some_and(|known| known != validity);
    // The UID first: stopped in between, the next start sees the old validity and resets again.
    if changed {
        store.set_channel_state(CHANNEL, "uid", 0)?;
    }
    store.set_channel_state(CHANNEL, "uidvalidity", validity)?;
    Ok(changed)
}

/// The most bytes of one mail read from the server (headers, text and attachments).
const MAX_FETCH: usize = 4 << 20;
/// The most references a thread keeps: the root (the first) and the newest.
const MAX_REFERENCES: usize = 32;
/// The longest subject kept.
const MAX_SUBJECT: usize = 1024;

/// A message id with whitespace and control characters replaced: a real one has none, and
/// without them ids join and split on spaces, and a conversation key (`ROOT ADDRESS`) reads
/// one way only.
fn clean_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Read one RFC 5322 message. `None` when it has no sender address or cannot be parsed.
pub fn parse(raw: &[u8]) -> Option<Parsed> {
    let msg = MessageParser::default().parse(raw)?;
    let from = msg.from()?.first()?.address()?.to_ascii_lowercase();
    if !from.contains('@') {
        return None;
    }
    // A mail without a Message-ID is known by a digest of its bytes, so a redelivery is still
    // stored once and two different mails never share an id.
    let message_id = msg.message_id().map(clean_id).unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        format!(
            "no-id-{}@nanoclaw",
            nanoclaw_core::hex::encode(&digest.as_ref()[..12])
        )
    });
    let mut references: Vec<String> = msg
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| clean_id(s)).collect())
        .unwrap_or_default();
    if references.len() > MAX_REFERENCES {
        references.drain(1..references.len() + 1 - MAX_REFERENCES);
    }
    let in_reply_to = msg.in_reply_to().as_text().map(clean_id);
    let root = references
        .first()
        .cloned()
        .or(in_reply_to)
        .unwrap_or_else(|| message_id.clone());
    let mut text = match msg.body_text(0) {
        Some(t) if !t.trim().is_empty() => t.into_owned(),
        _ => msg
            .body_html(0)
            .map(|h| crate::sandbox::web::readable_text(&h))
            .unwrap_or_default(),
    };
    for att in msg.attachments() {
        let name = att.attachment_name().unwrap_or("(unnamed)");
        let kind = att
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_else(|| "application/octet-stream".into());
        text.push_str(&format!(
            "\n[attachment: {name} ({kind}, {} bytes), not opened]",
            att.contents().len()
        ));
    }
    // The topmost one is the last added: the receiving server's. Headers further down may be
    // anyone's, the sender's own forgeries included.
    // Found among all headers, valid UTF-8 or not, so a garbled top one is not skipped.
    let authentication_results = msg
        .headers()
        .iter()
        .find(|h| {
            h.name
                .as_str()
                .eq_ignore_ascii_case("Authentication-Results")
        })
        .map(|h| {
            let bytes = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            String::from_utf8_lossy(bytes).trim().to_owned()
        });
    let subject = msg.subject().unwrap_or("");
    let subject = subject[..subject.floor_char_boundary(MAX_SUBJECT)].to_owned();
    let text = text.trim();
    let cut = text.floor_char_boundary(MAX_TEXT);
    let text = if cut < text.len() {
        format!(
            "{}\n[the mail is longer: {} more bytes were left out]",
            &text[..cut],
            text.len() - cut
        )
    } else {
        text.to_owned()
    };
    Some(Parsed {
        message_id,
        root,
        from,
        subject: subject.clone(),
        references,
        authentication_results,
        text: format!("Subject: {subject}\n\n{text}"),
    })
}

type ImapSession = async_imap::Session<Box<dyn ImapStream>>;

/// The IMAP connection's stream: plain TCP on loopback, TLS elsewhere.
pub trait ImapStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream
    for T
{
}

/// The IMAP server refused the login (a NO to LOGIN).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoginRefused(pub String);

impl Email {
    pub fn new(config: EmailConfig, password: String, store: Arc<Store>) -> Email {
        Email {
            config,
            password,
            store,
        }
    }

    /// `nanoclaw doctor`: log in to the IMAP server and out again; in words naming the host.
    pub async fn check(&self) -> Result<String, String> {
        let imap = &self.config.imap;
        match self.connect().await {
            Ok(mut session) => {
                let _ = session.logout().await;
                Ok(format!(
                    "{}:{} accepts the login as {}",
                    imap.host, imap.port, self.config.username
                ))
            }
            Err(e) if e.downcast_ref::<LoginRefused>().is_some() => {
                Err(format!("LOGIN REJECTED: {e:#}"))
            }
            Err(e) => Err(format!("{}:{}: {e:#}", imap.host, imap.port)),
        }
    }

    async fn connect(&self) -> anyhow::Result<ImapSession> {
        let imap = &self.config.imap;
        let tcp = tokio::net::TcpStream::connect((imap.host.as_str(), imap.port)).await?;
        let stream: Box<dyn ImapStream> = if self.config.imap_tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(imap.host.clone())?;
            Box::new(
                tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(name, tcp)
                    .await?,
            )
        } else {
            Box::new(tcp)
        };
        let mut client = async_imap::Client::new(stream);
        // The server's greeting comes first.
        let _ = client.read_response().await;
        let mut session = client
            .login(&self.config.username, &self.password)
            .await
            .map_err(|(e, _)| match e {
                // The server answered NO: the credentials are refused; retrying cannot help.
                async_imap::error::Error::No(why) => anyhow::Error::new(LoginRefused(format!(
                    "{} refused the IMAP login as {}: {why}",
                    imap.host, self.config.username
                ))),
                e => anyhow::anyhow!("IMAP login as {}: {e}", self.config.username),
            })?;
        let mailbox = session.select("INBOX").await?;
        if let Some(validity) = mailbox.uid_validity
            && note_uid_validity(&self.store, validity)?
        {
            tracing::warn!(
                channel = CHANNEL,
                validity,
                "the mailbox was rebuilt (new UIDVALIDITY): reading it again from the start; mail seen before is stored once"
            );
        }
        Ok(session)
    }

    fn last_uid(&self) -> u32 {
        self.store
            .channel_state(CHANNEL, "uid")
            .ok()
            .flatten()
            .unwrap_or(0) as u32
    }

    fn set_last_uid(&self, uid: u32) {
        let _ = self.store.set_channel_state(CHANNEL, "uid", i64::from(uid));
    }

    /// Receive until the process ends, reconnecting with backoff; a login the server refuses
    /// ends it (a new secret restarts the channel).
    async fn receive_mail(self: Arc<Self>, queue: Arc<Queue>, health: super::health::Health) {
        let mut backoff = Duration::from_secs(1);
        health.starting(CHANNEL);
        loop {
            match self.session(&queue, &health).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) if e.downcast_ref::<LoginRefused>().is_some() => {
                    tracing::error!(channel = CHANNEL, error = %format!("{e:#}"), "the mail password was rejected; receiving stops until the secret changes");
                    health.rejected(CHANNEL, &format!("{e:#}"));
                    return;
                }
                Err(e) => {
                    health.retrying(
                        CHANNEL,
                        &format!("{}:{}: {e:#}", self.config.imap.host, self.config.imap.port),
                    );
                    tracing::warn!(channel = CHANNEL, error = %format!("{e:#}"), ?backoff, "IMAP connection failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(120));
                }
            }
        }
    }

    async fn session(
        &self,
        queue: &Arc<Queue>,
        health: &super::health::Health,
    ) -> anyhow::Result<()> {
        let mut session = self.connect().await?;
        health.connected(CHANNEL);
        let idle = session
            .capabilities()
            .await
            .map(|c| c.has_str("IDLE"))
            .unwrap_or(false);
        loop {
            self.fetch_new(&mut session, queue).await?;
            if idle {
                let mut handle = session.idle();
                handle.init().await?;
                let (wait, _stop) = handle.wait_with_timeout(Duration::from_secs(300));
                let _ = wait.await?;
                session = handle.done().await?;
            } else {
                tokio::time::sleep(Duration::from_secs(self.config.poll_secs)).await;
            }
        }
    }

    async fn fetch_new(&self, session: &mut ImapSession, queue: &Arc<Queue>) -> anyhow::Result<()> {
        let last = self.last_uid();
        let mut uids: Vec<u32> = session
            .uid_search(format!("UID {}:*", last + 1))
            .await?
            .into_iter()
            .filter(|u| *u > last)
            .collect();
        uids.sort_unstable();
        for uid in uids {
            // At most MAX_FETCH bytes of one mail are read: its text is cut far below that
            // anyway, and a mail bomb must not fill the daemon's memory.
            let fetches: Vec<_> = session
                .uid_fetch(uid.to_string(), format!("(UID BODY.PEEK[]<0.{MAX_FETCH}>)"))
                .await?
                .try_collect()
                .await?;
            for f in &fetches {
                let Some(raw) = f.body() else { continue };
                match parse(raw) {
                    Some(mail) => {
                        if !self.store_mail(&mail, queue) {
                            anyhow::bail!("could not store mail {}", mail.message_id);
                        }
                    }
                    None => tracing::warn!(channel = CHANNEL, uid, "unreadable mail skipped"),
                }
            }
            // Only once stored does the last-seen UID move past it.
            self.set_last_uid(uid);
            let _ = session
                .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                .await?
                .try_collect::<Vec<_>>()
                .await;
        }
        Ok(())
    }

    /// The conversation a mail belongs to: its thread's root, unless someone else started
    /// that thread; then the root and this sender's party, a conversation of their own.
    /// `from` is the sender as routing sees it (`(unverified)` when DMARC did not vouch).
    fn conversation(&self, mail: &Parsed, from: &str) -> Result<String, crate::store::StoreError> {
        let party = |sender: &str| -> String {
            // "owner" (a starter recorded before conversations were kept apart) is not an
            // address (no `@`): no sender can be this party but the owners.
            if sender == "owner" || self.config.rules.owners.iter().any(|o| o == sender) {
                "owner".to_owned()
            } else {
                sender.to_owned()
            }
        };
        let starter: Option<String> = self.store.with_conn(|c| {
            Ok(c.query_row(
                "SELECT starter FROM mail_threads WHERE root = ?1",
                [&mail.root],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        Ok(match starter {
            Some(starter) if party(&starter) != party(from) => {
                format!("{} {}", mail.root, party(from))
            }
            _ => mail.root.clone(),
        })
    }

    fn store_mail(&self, mail: &Parsed, queue: &Arc<Queue>) -> bool {
        // A From the receiving server did not vouch for is nobody's: it matches no owner, no
        // sender and no admission.
        let from = match &self.config.authserv_id {
            Some(id)
                if !dmarc_passed(
                    mail.authentication_results.as_deref(),
                    id,
                    mail.from.rsplit_once('@').map_or("", |(_, domain)| domain),
                ) =>
            {
                format!("{} (unverified)", mail.from)
            }
            _ => mail.from.clone(),
        };
        let chat = match self.conversation(mail, &from) {
            Ok(chat) => chat,
            Err(e) => {
                tracing::error!(channel = CHANNEL, error = %e, "could not read the thread");
                return false;
            }
        };
        let msg = crate::channels::Inbound {
            channel: CHANNEL,
            text: &mail.text,
            external_id: Some(&mail.message_id),
            from: crate::channels::From::Chat {
                rules: &self.config.rules,
                chat: &chat,
                sender: &from,
                named: &mail.from,
                addressed: false,
            },
        };
        let accepted = crate::channels::accept(queue.agent(), Some(queue), &msg, |routed| {
            self.remember_thread(mail, &chat, &from, routed.held)
        });
        match accepted {
            Ok(crate::channels::Accepted::Ignored { why }) => {
                // Debug-quoted: a sender's words must not forge log lines.
                tracing::info!(channel = CHANNEL, from = ?mail.from, why = ?why, "mail ignored");
                true
            }
            Ok(crate::channels::Accepted::Stored { .. }) => true,
            Ok(crate::channels::Accepted::Stopped { group, was_running }) => {
                tracing::info!(channel = CHANNEL, %group, was_running, "the owner stopped the group's turn by mail");
                true
            }
            Err(e) => {
                tracing::error!(channel = CHANNEL, error = %e, "could not store mail");
                false
            }
        }
    }

    /// The thread a mail belongs to, for replies: they go to the thread's last sender. A held
    /// mail (a sender not yet admitted) may start a thread but never take over one: the thread
    /// names its own root, so anyone could otherwise point the next reply in someone else's
    /// thread at themselves. (`root` holds the conversation's key.)
    fn remember_thread(
        &self,
        mail: &Parsed,
        chat: &str,
        from: &str,
        held: bool,
    ) -> Result<(), crate::store::StoreError> {
        let mut refs = mail.references.clone();
        refs.push(mail.message_id.clone());
        let upsert = if held {
            "INSERT INTO mail_threads (root, subject, reply_to, last_message_id, refs, starter) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (root) DO NOTHING"
        } else {
            "INSERT INTO mail_threads (root, subject, reply_to, last_message_id, refs, starter) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (root) DO UPDATE SET reply_to = excluded.reply_to, last_message_id = excluded.last_message_id, refs = excluded.refs"
        };
        self.store.with_conn(|c| {
            c.execute(
                upsert,
                params![
                    chat,
                    mail.subject,
                    mail.from,
                    mail.message_id,
                    refs.join(" "),
                    from
                ],
            )?;
            Ok(())
        })
    }

    fn transport(&self) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
        let smtp = &self.config.smtp;
        let builder = match self.config.smtp_security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
            }
        };
        let mut builder = builder.port(smtp.port);
        if self.config.smtp_security != SmtpSecurity::None {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    self.config.username.clone(),
                    self.password.clone(),
                ));
        }
        Ok(builder.build())
    }

    /// Deliver the outbox's email replies until the process ends.
    async fn deliver_mail(self: Arc<Self>, audit: Arc<crate::audit::Audit>) {
        let transport = match self.transport() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(channel = CHANNEL, error = %e, "email sending cannot start");
                return;
            }
        };
        let (me, transport) = (&*self, &transport);
        crate::channels::outbox::deliver(&me.store, &audit, CHANNEL, |reply| async move {
            me.send(transport, &reply.group, &reply.text)
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await;
    }

    /// Send one reply. A reply that can never go (no thread, an address mail cannot reach, a
    /// permanent SMTP refusal) is `Undeliverable`, so it does not hold up the replies behind
    /// it; an error is worth trying again (the server down, a temporary refusal).
    async fn send(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        group: &str,
        text: &str,
    ) -> anyhow::Result<crate::channels::outbox::Sent> {
        use crate::channels::outbox::Sent;
        let Some(root) = self.store.chat_of(CHANNEL, group)? else {
            return Ok(Sent::Undeliverable("no thread to answer".into()));
        };
        let thread: Option<(String, String, String, String)> = self.store.with_conn(|c| {
            Ok(c.query_row(
                "SELECT subject, reply_to, last_message_id, refs FROM mail_threads WHERE root = ?1",
                [&root],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
        })?;
        let Some((subject, to, last, refs)) = thread else {
            return Ok(Sent::Undeliverable("no thread to answer".into()));
        };
        let to: lettre::message::Mailbox = match to.parse() {
            Ok(to) => to,
            Err(e) => {
                return Ok(Sent::Undeliverable(format!(
                    "the thread's reply address {to:?} is not one mail can be sent to: {e}"
                )));
            }
        };
        let subject = if subject.to_ascii_lowercase().starts_with("re:") {
            subject
        } else {
            format!("Re: {subject}")
        };
        let angle = |id: &str| format!("<{id}>");
        let built = lettre::Message::builder()
            .from(self.config.address.parse()?)
            .to(to)
            .subject(subject)
            .in_reply_to(angle(&last))
            .references(
                refs.split_whitespace()
                    .map(angle)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .body(text.to_owned());
        let mut message = match built {
            Ok(m) => m,
            Err(e) => {
                return Ok(Sent::Undeliverable(format!(
                    "the reply is not a valid mail: {e}"
                )));
            }
        };
        message.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-replied".into(),
        ));
        match transport.send(message).await {
            Ok(_) => Ok(Sent::Delivered),
            Err(e) if e.is_permanent() => Ok(Sent::Undeliverable(format!(
                "the mail server refused it for good: {e}"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

impl crate::channels::Channel for Email {
    fn name(&self) -> &'static str {
        CHANNEL
    }
    fn receive(
        self: Arc<Self>,
        queue: Arc<Queue>,
        health: super::health::Health,
    ) -> crate::channels::Running {
        Box::pin(self.receive_mail(queue, health))
    }
    fn deliver(
        self: Arc<Self>,
        _store: Arc<Store>,
        audit: Arc<crate::audit::Audit>,
    ) -> crate::channels::Running {
        Box::pin(self.deliver_mail(audit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_receiving_servers_dmarc_pass_counts() {
        let id = "mx.test.local";
        let passed = |results: Option<&str>| dmarc_passed(results, id, "test.local");
        assert!(passed(Some(
            "mx.test.local; spf=pass smtp.mailfrom=test.local; dmarc=pass (p=reject) header.from=test.local"
        )));
        assert!(passed(Some(
            "MX.test.local 1; DMARC=Pass header.from=TEST.local"
        )));
        for bad in [
            None,
            Some("mx.test.local; dmarc=fail header.from=test.local"),
            Some("mx.test.local; spf=pass; dkim=pass"),
            Some("evil.example; dmarc=pass header.from=test.local"),
            // Passed for another domain than the From's.
            Some("mx.test.local; dmarc=pass header.from=evil.example"),
            // What the sender wrote, echoed in a comment or a quoted string.
            Some("mx.test.local; spf=none (\"x; dmarc=pass header.from=test.local\")"),
            Some(
                "mx.test.local; spf=none smtp.mailfrom=\"a; dmarc=pass header.from=test.local\"@evil",
            ),
        ] {
            assert!(!passed(bad), "{bad:?}");
        }
        // The topmost header is the receiving server's; a forged one below it is not read.
        let raw = b"Authentication-Results: mx.test.local; dmarc=fail\r\nAuthentication-Results: mx.test.local; dmarc=pass header.from=test.local\r\nFrom: owner@test.local\r\nMessage-ID: <a@x>\r\n\r\nhi\r\n";
        let p = parse(raw).unwrap();
        assert!(!passed(p.authentication_results.as_deref()));
    }

    #[test]
    fn a_rebuilt_mailbox_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let uid = |s: &Store| -> i64 {
            s.with_conn(|c| {
                Ok(c.query_row(
                    "SELECT value FROM channel_state WHERE channel = 'email' AND key = 'uid'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
        };
        assert!(
            !note_uid_validity(&store, 7).unwrap(),
            "first sight is no change"
        );
        store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO channel_state (channel, key, value) VALUES ('email', 'uid', 42)",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        assert!(!note_uid_validity(&store, 7).unwrap());
        assert_eq!(uid(&store), 42);
        assert!(note_uid_validity(&store, 8).unwrap());
        assert_eq!(uid(&store), 0);
    }

    #[test]
    fn a_huge_mail_is_cut_to_size() {
        let refs: Vec<String> = (0..1000).map(|i| format!("<r{i}@x>")).collect();
        let raw = format!(
            "From: a@test.local\r\nSubject: {}\r\nMessage-ID: <big@x>\r\nReferences: {}\r\n\r\n{}\r\n",
            "s".repeat(5000),
            refs.join(" "),
            "é".repeat(100_000)
        );
        let p = parse(raw.as_bytes()).unwrap();
        assert!(
            p.text.len() < MAX_TEXT + MAX_SUBJECT + 200,
            "{}",
            p.text.len()
        );
        assert!(
            p.text.ends_with("more bytes were left out]"),
            "{}",
            &p.text[p.text.len() - 80..]
        );
        assert_eq!(p.subject.len(), MAX_SUBJECT);
        assert_eq!(p.references.len(), MAX_REFERENCES);
        assert_eq!(p.root, "r0@x", "the thread's root is kept");
        assert_eq!(p.references.last().unwrap(), "r999@x");
    }

    #[test]
    fn threads_html_and_attachments() {
        let first = b"From: Owner <Owner@test.local>\r\nTo: agent@test.local\r\nSubject: Plans\r\nMessage-ID: <root@x>\r\nContent-Type: text/html\r\n\r\n<p>Lunch <b>at noon</b>?</p><script>x()</script>\r\n";
        let p = parse(first).unwrap();
        assert_eq!(
            (p.root.as_str(), p.from.as_str()),
            ("root@x", "owner@test.local")
        );
        assert!(
            p.text.contains("Lunch at noon?") && !p.text.contains("x()"),
            "{}",
            p.text
        );
        let reply = b"From: owner@test.local\r\nTo: agent@test.local\r\nSubject: Re: Plans\r\nMessage-ID: <second@x>\r\nIn-Reply-To: <first-reply@x>\r\nReferences: <root@x> <first-reply@x>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let p = parse(reply).unwrap();
        assert_eq!(p.root, "root@x");
        assert_eq!(p.references, ["root@x", "first-reply@x"]);
        assert!(p.text.contains("see attached"));
        assert!(
            p.text
                .contains("[attachment: plan.pdf (application/pdf, 5 bytes), not opened]"),
            "{}",
            p.text
        );
        assert!(parse(b"not a mail at all").is_none());
        // Without a Message-ID: a digest of the bytes, distinct for distinct mails.
        let a = parse(b"From: a@x\r\nSubject: one\r\n\r\nbody one\r\n").unwrap();
        let b = parse(b"From: a@x\r\nSubject: two\r\n\r\nbody two\r\n").unwrap();
        assert!(a.message_id.starts_with("no-id-"));
        assert_ne!(a.message_id, b.message_id);
    }

    /// Mails with random bytes overwritten, inserted and cut, MIME structure and headers
    /// included: parsing never panics, and what it returns stays within the caps.
    #[test]
    fn mangled_mail_never_panics_and_stays_within_the_caps() {
        let seed: &[u8] = b"From: Owner <owner@test.local>\r\nTo: agent@test.local\r\nSubject: =?utf-8?q?Pl=C3=A4ne?=\r\nMessage-ID: <m@x>\r\nReferences: <root@x> <a@x>\r\nAuthentication-Results: mx.test.local; dmarc=pass (p=none) header.from=test.local\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Lunch =C3=A9 &amp; <b>noon</b></p>\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"p.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let noise = b"\r\n:;=?<>\"\\-(){}&#\xc3\xa9\xff\x00 abB";
        let mut rng = fastrand::Rng::with_seed(0xe3a1);
        for case in 0..3_000 {
            let mut raw = seed.to_vec();
            for _ in 0..rng.usize(1..12) {
                let at = rng.usize(..=raw.len());
                let byte = noise[rng.usize(..noise.len())];
                match rng.u8(..8) {
                    0..4 if at < raw.len() => raw[at] = byte,
                    0..7 => raw.insert(at, byte),
                    _ => raw.truncate(at.max(1)),
                }
            }
            if let Some(p) = parse(&raw) {
                assert!(
                    p.text.len() < MAX_TEXT + 200 && p.subject.len() <= MAX_SUBJECT,
                    "case {case}"
                );
                assert!(p.references.len() <= MAX_REFERENCES, "case {case}");
                let _ = dmarc_passed(
                    p.authentication_results.as_deref(),
                    "mx.test.local",
                    "test.local",
                );
            }
        }
    }
}
