//! The data dir (`$NANOCLAW_HOME`, default `~/.nanoclaw`, or `--home DIR`): where each file
//! lives, creating it with private permissions, the API token, and the lock that keeps two
//! processes from running turns over the same store.
//!
//! Nothing in here is ever mounted into a sandbox except one group's workspace directory, its
//! proxy socket, and the trust directory (the CA certificate and bundle; never the CA key).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nanoclaw_core::GroupId;

use crate::config::{CONFIG_FILE, DEFAULT_CONFIG};

/// Where the host's CA bundle may be (Debian, Fedora, Alpine/others).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Bytes of randomness in the API token.
const TOKEN_BYTES: usize = 32;

#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// The data dir chosen by `--home`, then `$NANOCLAW_HOME`, then `~/.nanoclaw`.
    pub fn locate(flag: Option<PathBuf>) -> anyhow::Result<Home> {
        // An empty NANOCLAW_HOME is unset, not the current directory.
        let from_env = std::env::var_os("NANOCLAW_HOME").filter(|d| !d.is_empty());
        let dir = match flag.or_else(|| from_env.map(PathBuf::from)) {
            Some(dir) => dir,
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".nanoclaw"),
                None => {
                    bail!("neither --home, NANOCLAW_HOME nor HOME is set; cannot find the data dir")
                }
            },
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Home { dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("nanoclaw.db")
    }
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("api.token")
    }
    fn lock_path(&self) -> PathBuf {
        self.dir.join("agent.lock")
    }

    /// The host path of a group's workspace, created if missing. Only this directory of the
    /// data dir is ever mounted into a sandbox.
    pub fn workspace(&self, group: &GroupId) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("workspaces").join(group.as_str());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating workspace {}", dir.display()))?;
        Ok(dir)
    }

    /// `nanoclaw init`: create the data dir, a commented config (kept if present) and a token.
    pub fn init(&self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        // A directory holding other things and nothing of nanoclaw's is not a data dir: making
        // it private (mode 700) and filling it would be a surprise (`--home ~`, `--home /tmp`).
        // A data dir whose config was deleted is one (its store, token or CA are there).
        const OURS: &[&str] = &[
            CONFIG_FILE,
            "policy.toml",
            "api.token",
            "nanoclaw.db",
            "ca",
            "secrets.json",
            "workspaces",
        ];
        let names: Vec<std::ffi::OsString> = fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let ours = names.iter().any(|n| OURS.iter().any(|o| n == *o));
        let foreign = names.iter().any(|n| n != "lost+found");
        if foreign && !ours {
            bail!(
                "{} holds other files and no {CONFIG_FILE}: give init a new or empty directory for the data dir",
                self.dir.display()
            );
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating data dir {}", self.dir.display()))?;
        // A data dir that already existed keeps whatever mode it had; the store, history and
        // audit log in it are for this user alone.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 700)", self.dir.display()))?;
        let config = self.config_path();
        if config.exists() {
            done.push(format!("kept existing {}", config.display()));
        } else {
            write_private(&config, DEFAULT_CONFIG.as_bytes())?;
            done.push(format!("wrote {}", config.display()));
        }
        self.api_token()?;
        done.push(format!("API token in {}", self.token_path().display()));
        let policy = self.dir.join(crate::config::policy_file::POLICY_FILE);
        if policy.exists() {
            done.push(format!("kept existing {}", policy.display()));
        } else {
            write_private(
                &policy,
                crate::config::policy_file::DEFAULT_POLICY.as_bytes(),
            )?;
            done.push(format!("wrote {}", policy.display()));
        }
        self.ca()?;
        done.push(format!(
            "local CA for TLS interception in {} (its key never enters a sandbox)",
            self.ca_dir().display()
        ));
        Ok(done)
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The local CA as (certificate PEM, key PEM), made on first use. The key file is 0600
    /// in the data dir, which is never mounted into a sandbox.
    pub fn ca(&self) -> anyhow::Result<(String, String)> {
        let dir = self.ca_dir();
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        match (fs::read_to_string(&cert), fs::read_to_string(&key)) {
            (Ok(c), Ok(k)) => return Ok((c, k)),
            (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("reading the local CA in {}", dir.display()));
            }
            _ => {}
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let (c, k) = nanoclaw_egress::tls::generate_ca()?;
        let _ = fs::remove_file(&cert);
        let _ = fs::remove_file(&key);
        write_private(&key, k.as_bytes())?;
        write_private(&cert, c.as_bytes())?;
        Ok((c, k))
    }

    /// The directory mounted read-only into sandboxes: the CA certificate and a bundle of the
    /// system roots plus the CA. Rewritten from the CA at each start.
    pub fn trust_dir(&self, ca_pem: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("run").join("trust");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let system = SYSTEM_BUNDLES
            .iter()
            .find_map(|p| fs::read_to_string(p).ok());
        let mut bundle = system.unwrap_or_default();
        if !bundle.is_empty() && !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(ca_pem);
        for (name, text) in [
            (nanoclaw_sandbox::CA_CERT_FILE, ca_pem),
            (nanoclaw_sandbox::CA_BUNDLE_FILE, bundle.as_str()),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!("{name}.tmp"));
            fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
            fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(dir)
    }

    /// Fail with a clear message if `init` has not been run.
    pub fn require_initialized(&self) -> anyhow::Result<()> {
        if !self.config_path().is_file() {
            bail!(
                "no config at {}; run `nanoclaw init` first (or pass --home DIR / set NANOCLAW_HOME)",
                self.config_path().display()
            );
        }
        Ok(())
    }

    /// The API token, created (0600) on first use.
    pub fn api_token(&self) -> anyhow::Result<String> {
        let path = self.token_path();
        match fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_owned()),
            Ok(_) => bail!(
                "{}: the API token is too short; delete the file to make a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no OS randomness for the API token: {e}"))?;
        let token = nanoclaw_core::hex::encode(&bytes);
        write_private(&path, token.as_bytes())?;
        Ok(token)
    }

    /// Take the data dir's agent lock, or say who holds it. Held for the life of the process.
    pub fn lock_agent(&self) -> anyhow::Result<File> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another nanoclaw process (run, chat or ask) is using {}; stop it first, or talk to the daemon through its HTTP API",
                self.dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Write a new file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.sync_all()?;
    Ok(())
}
