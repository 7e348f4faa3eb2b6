//! The secrets store: `secrets.json` in the data dir (mode 0600), each value sealed with
//! ChaCha20-Poly1305 under a key kept outside the data dir, bound to its secret's name.
//!
//! The key comes from `$NANOCLAW_SECRETS_KEY` (64 hex digits), or else from a key file:
//! `$NANOCLAW_SECRETS_KEY_FILE`, default `$XDG_CONFIG_HOME/nanoclaw/secrets.key` (or
//! `~/.config/nanoclaw/secrets.key`), mode 0600, never inside the data dir. Stealing the data
//! dir alone (a backup, a synced folder) yields no secret.
//!
//! This module never logs a value, and never puts one in an error message.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nanoclaw_core::GroupId;
use nanoclaw_core::secret::{self as core_secret, MIN_VALUE_LEN};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::config::home::Home;

pub const KEY_ENV: &str = "NANOCLAW_SECRETS_KEY";
pub const KEY_FILE_ENV: &str = "NANOCLAW_SECRETS_KEY_FILE";
const FILE: &str = "secrets.json";
const FORMAT_VERSION: u32 = 1;

/// One secret as stored: everything but the value is in the clear (names, hosts, groups and
/// placeholders are not secret); the value is sealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSecret {
    pub name: String,
    pub hosts: Vec<String>,
    /// Groups whose sandboxes get the placeholder. Empty: only the host uses it (a model key).
    pub groups: Vec<GroupId>,
    /// A header the proxy sets toward the bound hosts, and its format (`{}` is the value).
    pub header: Option<String>,
    pub format: Option<String>,
    pub in_query: bool,
    pub in_body: bool,
    pub placeholder: String,
    nonce: String,
    sealed: String,
}

/// A secret with its value, in the daemon's memory only.
pub struct OpenSecret {
    pub meta: StoredSecret,
    pub value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    version: u32,
    secrets: Vec<StoredSecret>,
}

/// How a secret is bound: from `secret set`, or as the file holds it.
#[derive(Clone, Debug)]
pub struct Binding {
    pub hosts: Vec<String>,
    pub groups: Vec<GroupId>,
    pub header: Option<String>,
    pub format: Option<String>,
    pub in_query: bool,
    pub in_body: bool,
}

/// Headers the proxy owns: they frame the request or steer where it goes, so no secret may
/// set them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

impl Binding {
    /// The one check of a binding, for `secret set`, for a file loaded (edited by hand, or
    /// written by an older version) and for the egress setup: hosts that are host rules
    /// without ports, a header that is a header name the proxy does not own, a format with
    /// one `{}` and no control character. The error names the part at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("it is bound to no host".into());
        }
        for h in &self.hosts {
            let rule = nanoclaw_egress::Rule::parse(h, None, false)
                .map_err(|e| format!("host {h:?}: {e}"))?;
            if rule.ports != nanoclaw_egress::policy::DEFAULT_PORTS {
                return Err(format!(
                    "host {h:?}: a secret is bound to host names, not ports"
                ));
            }
        }
        if let Some(h) = &self.header {
            if h.parse::<hyper::header::HeaderName>().is_err() {
                return Err(format!("header {h:?} is not a valid header name"));
            }
            if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "header {h:?}: the proxy sets that header itself; a secret cannot"
                ));
            }
        }
        if let Some(f) = &self.format {
            if self.header.is_none() {
                return Err(format!("format {f:?} is given without a header"));
            }
            if f.matches("{}").count() != 1 {
                return Err(format!(
                    "format {f:?} must hold {{}} exactly once, where the value goes"
                ));
            }
            if f.chars().any(char::is_control) {
                return Err(format!(
                    "format {f:?} holds a control character (a line break would end the header)"
                ));
            }
        }
        Ok(())
    }
}

impl StoredSecret {
    /// Whether this secret may go to `host`, which the setting `config_key` names (nanoclaw's
    /// own clients: the model, Telegram, mail); the refusal says how to bind it.
    pub fn may_go_to(&self, config_key: &str, host: &str) -> Result<(), String> {
        let host = nanoclaw_egress::policy::normalize_host(host);
        let bound = self.hosts.iter().any(|h| {
            nanoclaw_egress::Rule::parse(h, None, false).is_ok_and(|r| r.pattern.matches(&host))
        });
        if bound {
            return Ok(());
        }
        Err(format!(
            "secret {} is bound to {}, but {config_key} would send it to {host}: store it again with \
             --host {host} (nanoclaw secret set {} --host {host} ...), or change {config_key}",
            self.name,
            self.hosts.join(", "),
            self.name
        ))
    }

    pub fn binding(&self) -> Binding {
        Binding {
            hosts: self.hosts.clone(),
            groups: self.groups.clone(),
            header: self.header.clone(),
            format: self.format.clone(),
            in_query: self.in_query,
            in_body: self.in_body,
        }
    }
}

/// The sealing key. Never printed.
pub struct SecretsKey(LessSafeKey);

impl SecretsKey {
    /// The key from the environment or the key file. `create`: make a key file if there is
    /// neither (only when the store holds no secret yet, so no sealed value is orphaned).
    pub fn locate(home: &Home, create: bool) -> anyhow::Result<SecretsKey> {
        if let Ok(hex) = std::env::var(KEY_ENV) {
            return Self::from_hex(hex.trim())
                .with_context(|| format!("${KEY_ENV} must be 64 hex digits (32 bytes)"));
        }
        let path = key_file_path()?;
        check_outside(home, &path)?;
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "the secrets key file {} is readable by others (mode {:o}); run chmod 600 on it",
                        path.display(),
                        mode & 0o777
                    );
                }
                Self::from_hex(text.trim()).with_context(|| {
                    format!(
                        "the secrets key file {} must hold 64 hex digits",
                        path.display()
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| anyhow::anyhow!("no OS randomness for the secrets key: {e}"))?;
                if let Some(dir) = path.parent() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::config::home::write_private(
                    &path,
                    nanoclaw_core::hex::encode(&bytes).as_bytes(),
                )?;
                tracing::info!(path = %path.display(), "created the secrets key file");
                Self::from_hex(&nanoclaw_core::hex::encode(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no secrets key: set ${KEY_ENV}, or restore the key file {} (set ${KEY_FILE_ENV} to use another path)",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn from_hex(text: &str) -> anyhow::Result<SecretsKey> {
        let bytes = nanoclaw_core::hex::decode(text).filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            bail!("not a 32-byte hex key");
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| anyhow::anyhow!("not a valid key"))?;
        Ok(SecretsKey(LessSafeKey::new(key)))
    }
}

/// Where the key file is looked for.
pub fn key_file_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(KEY_FILE_ENV) {
        return Ok(PathBuf::from(p));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("neither ${KEY_FILE_ENV}, XDG_CONFIG_HOME nor HOME is set"),
        },
    };
    Ok(config.join("nanoclaw").join("secrets.key"))
}

/// The key must not sit beside what it protects.
fn check_outside(home: &Home, key: &Path) -> anyhow::Result<()> {
    let canon = |p: &Path| {
        p.canonicalize().unwrap_or_else(|_| match p.parent() {
            Some(parent) => parent
                .canonicalize()
                .map(|d| d.join(p.file_name().unwrap_or_default()))
                .unwrap_or_else(|_| p.to_path_buf()),
            None => p.to_path_buf(),
        })
    };
    if canon(key).starts_with(canon(&home.dir)) {
        bail!(
            "the secrets key file {} is inside the data dir {}; keep it elsewhere (set ${KEY_FILE_ENV})",
            key.display(),
            home.dir.display()
        );
    }
    Ok(())
}

/// The store file: metadata in the clear, values sealed.
pub struct Secrets {
    path: PathBuf,
    file: SecretsFile,
}

impl Secrets {
    /// Hold this while reading, changing and saving, so two `secret set` at once cannot lose
    /// one's change.
    pub fn lock(home: &Home) -> anyhow::Result<fs::File> {
        let path = home.dir.join("secrets.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    pub fn load(home: &Home) -> anyhow::Result<Secrets> {
        let path = home.dir.join(FILE);
        let file = match fs::read(&path) {
            Ok(bytes) => {
                let file: SecretsFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a valid secrets file", path.display()))?;
                if file.version != FORMAT_VERSION {
                    bail!(
                        "{}: unknown format version {} (this nanoclaw reads {FORMAT_VERSION})",
                        path.display(),
                        file.version
                    );
                }
                // A name twice could not be told apart by `secret rm`. Names and hosts that
                // `secret set` now refuses are checked when the secrets are put to use
                // ([`Secrets::check`]), so `secret rm` can still remove them.
                for (i, s) in file.secrets.iter().enumerate() {
                    if file.secrets[..i].iter().any(|o| o.name == s.name) {
                        bail!("{}: secret {:?} is stored twice", path.display(), s.name);
                    }
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecretsFile {
                version: FORMAT_VERSION,
                secrets: Vec::new(),
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Secrets { path, file })
    }

    pub fn is_empty(&self) -> bool {
        self.file.secrets.is_empty()
    }

    /// Hold every stored secret to what `secret set` accepts today (a file edited by hand, or
    /// written by an older version): its name, and its binding ([`Binding::check`]).
    /// The error names the secret and how to replace it.
    pub fn check(&self) -> anyhow::Result<()> {
        for s in &self.file.secrets {
            let fix = format!("remove it (nanoclaw secret rm {}) and set it again", s.name);
            let at = self.path.display();
            core_secret::check_name(&s.name).map_err(|e| anyhow::anyhow!("{at}: {e}; {fix}"))?;
            s.binding()
                .check()
                .map_err(|e| anyhow::anyhow!("{at}: secret {}: {e}; {fix}", s.name))?;
            if !core_secret::is_placeholder_of(&s.name, &s.placeholder) {
                bail!(
                    "{at}: secret {}: its placeholder {:?} is not one nanoclaw made; {fix}",
                    s.name,
                    s.placeholder
                );
            }
        }
        Ok(())
    }

    pub fn list(&self) -> &[StoredSecret] {
        &self.file.secrets
    }

    /// Add or replace a secret. A replaced secret keeps its placeholder, so sandboxes and
    /// scripts that hold it keep working.
    pub fn set(
        &mut self,
        key: &SecretsKey,
        name: &str,
        value: &str,
        binding: Binding,
    ) -> anyhow::Result<()> {
        core_secret::check_name(name)?;
        binding
            .check()
            .map_err(|e| anyhow::anyhow!("secret {name}: {e}"))?;
        if value.len() < MIN_VALUE_LEN {
            bail!(
                "the value of {name} is {} bytes; at least {MIN_VALUE_LEN} are needed so leaks can be recognized",
                value.len()
            );
        }
        if value.contains(['\r', '\n']) {
            bail!("the value of {name} holds a line break; secrets are single-line");
        }
        if value.chars().any(char::is_control) {
            bail!("the value of {name} holds a control character (a NUL, a tab, an escape)");
        }
        if value.trim() != value {
            // Kept, they would be sent as part of the value and would mark every run of
            // spaces in tool output as a leak of it.
            bail!("the value of {name} begins or ends with whitespace");
        }
        let placeholder = match self.file.secrets.iter().find(|s| s.name == name) {
            Some(old) => old.placeholder.clone(),
            None => {
                let mut random = [0u8; 16];
                getrandom::fill(&mut random)
                    .map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
                core_secret::placeholder(name, &random)
            }
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let mut sealed = value.as_bytes().to_vec();
        key.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("sealing {name} failed"))?;
        let stored = StoredSecret {
            name: name.to_owned(),
            hosts: binding.hosts,
            groups: binding.groups,
            header: binding.header,
            format: binding.format,
            in_query: binding.in_query,
            in_body: binding.in_body,
            placeholder,
            nonce: nanoclaw_core::hex::encode(&nonce),
            sealed: nanoclaw_core::hex::encode(&sealed),
        };
        self.file.secrets.retain(|s| s.name != name);
        self.file.secrets.push(stored);
        self.file.secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Remove a secret; false when there was none by that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.file.secrets.len();
        self.file.secrets.retain(|s| s.name != name);
        before != self.file.secrets.len()
    }

    /// Every secret with its value.
    pub fn open_all(&self, key: &SecretsKey) -> anyhow::Result<Vec<OpenSecret>> {
        self.file
            .secrets
            .iter()
            .map(|s| {
                let fail = || {
                    anyhow::anyhow!(
                        "cannot decrypt secret {} in {}: wrong key (${KEY_ENV} or the key file) or a damaged file",
                        s.name,
                        self.path.display()
                    )
                };
                let nonce: [u8; NONCE_LEN] = nanoclaw_core::hex::decode(&s.nonce)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(fail)?;
                let mut sealed = nanoclaw_core::hex::decode(&s.sealed).ok_or_else(fail)?;
                let plain = key
                    .0
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(s.name.as_bytes()),
                        &mut sealed,
                    )
                    .map_err(|_| fail())?;
                let value = String::from_utf8(plain.to_vec()).map_err(|_| fail())?;
                Ok(OpenSecret {
                    meta: s.clone(),
                    value,
                })
            })
            .collect()
    }

    /// Write the store atomically: a new file (0600), synced, renamed over the old one.
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let bytes = serde_json::to_vec_pretty(&self.file)?;
        crate::config::home::write_private(&tmp, &bytes)?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_hex(&"11".repeat(32)).unwrap()
    }

    fn binding() -> Binding {
        Binding {
            hosts: vec!["api.example.com".into()],
            groups: vec![GroupId::main()],
            header: None,
            format: None,
            in_query: false,
            in_body: false,
        }
    }

    fn store() -> (tempfile::TempDir, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_owned(),
        };
        let s = Secrets::load(&home).unwrap();
        (dir, s)
    }

    #[test]
    fn values_round_trip_and_are_not_in_the_file() {
        let (_dir, mut s) = store();
        s.set(&key(), "TOKEN", "s3cret-value-xyz", binding())
            .unwrap();
        s.save().unwrap();
        let text = fs::read_to_string(&s.path).unwrap();
        assert!(!text.contains("s3cret-value-xyz"));
        let mode = fs::metadata(&s.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let home = Home {
            dir: s.path.parent().unwrap().to_owned(),
        };
        let again = Secrets::load(&home).unwrap();
        let open = again.open_all(&key()).unwrap();
        assert_eq!(open[0].value, "s3cret-value-xyz");
        assert!(
            open[0]
                .meta
                .placeholder
                .starts_with("NANOCLAW_SECRET_TOKEN_")
        );
    }

    #[test]
    fn a_wrong_key_or_swapped_entry_fails_to_open() {
        let (_dir, mut s) = store();
        s.set(&key(), "A_ONE", "value-number-one", binding())
            .unwrap();
        s.set(&key(), "B_TWO", "value-number-two", binding())
            .unwrap();
        let other = SecretsKey::from_hex(&"22".repeat(32)).unwrap();
        let e = s.open_all(&other).err().unwrap().to_string();
        assert!(
            e.contains("wrong key") && !e.contains("value-number"),
            "{e}"
        );
        // Moving one sealed value under another name does not open.
        let sealed = s.file.secrets[0].sealed.clone();
        let nonce = s.file.secrets[0].nonce.clone();
        s.file.secrets[1].sealed = sealed;
        s.file.secrets[1].nonce = nonce;
        assert!(s.open_all(&key()).is_err());
    }

    #[test]
    fn replacing_keeps_the_placeholder_and_bad_input_is_named() {
        let (_dir, mut s) = store();
        s.set(&key(), "TOKEN", "first-value-123", binding())
            .unwrap();
        let p = s.list()[0].placeholder.clone();
        s.set(&key(), "TOKEN", "second-value-456", binding())
            .unwrap();
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.list()[0].placeholder, p);
        let e = s
            .set(&key(), "bad-name", "long-enough-value", binding())
            .unwrap_err();
        assert!(e.to_string().contains("bad-name"), "{e}");
        let e = s.set(&key(), "SHORT", "abc", binding()).unwrap_err();
        assert!(e.to_string().contains("at least"), "{e}");
        assert!(s.remove("TOKEN"));
        assert!(!s.remove("TOKEN"));
    }

    #[test]
    fn a_hand_edited_file_is_held_to_what_set_accepts() {
        let (_dir, mut s) = store();
        s.set(&key(), "TOKEN", "first-value-123", binding())
            .unwrap();
        s.save().unwrap();
        let home = Home {
            dir: s.path.parent().unwrap().to_owned(),
        };
        let text = fs::read_to_string(&s.path).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entry = file["secrets"][0].clone();
        for (edit, expected) in [
            (
                serde_json::json!({"version": 1, "secrets": [entry.clone(), entry.clone()]}),
                "is stored twice",
            ),
            (
                {
                    let mut e = entry.clone();
                    e["hosts"] = serde_json::json!(["*"]);
                    serde_json::json!({"version": 1, "secrets": [e]})
                },
                "egress rule \"*\"",
            ),
            (
                {
                    let mut e = entry.clone();
                    e["colour"] = serde_json::json!("red");
                    serde_json::json!({"version": 1, "secrets": [e]})
                },
                "not a valid secrets file",
            ),
            (
                {
                    let mut e = entry.clone();
                    e["name"] = serde_json::json!("PATH");
                    serde_json::json!({"version": 1, "secrets": [e]})
                },
                "the sandbox sets itself",
            ),
        ] {
            fs::write(&s.path, edit.to_string()).unwrap();
            // Structure is checked on load; names and hosts when the secrets are used, so
            // `secret rm` can still take a bad one out.
            let e = match Secrets::load(&home) {
                Err(e) => format!("{e:#}"),
                Ok(loaded) => format!("{:#}", loaded.check().unwrap_err()),
            };
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn hand_edited_secret_with_reserved_header_is_refused() {
        // `secret set` refuses `--header Host`; a file edited to say so is refused the same way
        // when it is loaded for use.
        let (_dir, mut s) = store();
        s.set(&key(), "TOKEN", "first-value-123", binding())
            .unwrap();
        s.save().unwrap();
        let home = Home {
            dir: s.path.parent().unwrap().to_owned(),
        };
        // A placeholder edited to something short would match everywhere.
        {
            let text = fs::read_to_string(&s.path).unwrap();
            let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
            file["secrets"][0]["placeholder"] = serde_json::json!("a");
            fs::write(&s.path, file.to_string()).unwrap();
            let e = format!("{:#}", Secrets::load(&home).unwrap().check().unwrap_err());
            assert!(e.contains("not one nanoclaw made"), "{e}");
            fs::write(&s.path, text).unwrap();
        }
        for (header, format, expected) in [
            ("host", None, "the proxy sets that header itself"),
            (
                "Transfer-Encoding",
                None,
                "the proxy sets that header itself",
            ),
            ("x-token", Some("{} and {}"), "exactly once"),
            ("bad header", None, "not a valid header name"),
        ] {
            let text = fs::read_to_string(&s.path).unwrap();
            let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
            file["secrets"][0]["header"] = serde_json::json!(header);
            file["secrets"][0]["format"] = serde_json::json!(format);
            fs::write(&s.path, file.to_string()).unwrap();
            let e = format!("{:#}", Secrets::load(&home).unwrap().check().unwrap_err());
            assert!(e.contains(expected) && e.contains("secret TOKEN"), "{e}");
            let mut bad = binding();
            bad.header = Some(header.into());
            bad.format = format.map(Into::into);
            let set = format!(
                "{:#}",
                s.set(&key(), "OTHER", "other-value-123", bad).unwrap_err()
            );
            assert!(set.contains(expected), "{set}");
            s = Secrets::load(&home).unwrap();
        }
    }

    #[test]
    fn a_key_file_inside_the_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_owned(),
        };
        let e = check_outside(&home, &dir.path().join("k")).unwrap_err();
        assert!(e.to_string().contains("inside the data dir"), "{e}");
        assert!(check_outside(&home, Path::new("/elsewhere/k")).is_ok());
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(
            nanoclaw_core::hex::decode(&nanoclaw_core::hex::encode(&[0, 1, 254, 255])).unwrap(),
            [0, 1, 254, 255]
        );
        assert!(nanoclaw_core::hex::decode("abc").is_none());
        assert!(nanoclaw_core::hex::decode("zz").is_none());
        assert!(SecretsKey::from_hex("00").is_err());
    }
}
