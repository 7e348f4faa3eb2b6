//! The data dir (`$NANOCLAW_HOME`, default `~/.nanoclaw`, or `--home DIR`): where each file
//! lives, creating it with private permissions, the API token, and the lock that keeps two
//! processes from running turns over the same store.
//!
//! Nothing in here is ever mounted into a sandbox except one group's workspace directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nanoclaw_core::GroupId;

use crate::config::{CONFIG_FILE, DEFAULT_CONFIG};

/// Bytes of randomness in the API token.
const TOKEN_BYTES: usize = 32;

#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// The data dir chosen by `--home`, then `$NANOCLAW_HOME`, then `~/.nanoclaw`.
    pub fn locate(flag: Option<PathBuf>) -> anyhow::Result<Home> {
        let dir = match flag.or_else(|| std::env::var_os("NANOCLAW_HOME").map(PathBuf::from)) {
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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating data dir {}", self.dir.display()))?;
        let config = self.config_path();
        if config.exists() {
            done.push(format!("kept existing {}", config.display()));
        } else {
            write_private(&config, DEFAULT_CONFIG.as_bytes())?;
            done.push(format!("wrote {}", config.display()));
        }
        self.api_token()?;
        done.push(format!("API token in {}", self.token_path().display()));
        Ok(done)
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
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
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
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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
