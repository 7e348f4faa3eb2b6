//! The egress proxies of this process: one per group, each listening on its own Unix socket in
//! the data dir's `run/` directory, started the first time the group's sandbox needs it. The
//! socket (and only the socket) is mounted into the group's sandboxes, where the init's relay
//! forwards to it; the proxy knows the group from which socket a request arrives on.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use nanoclaw_core::GroupId;

use crate::config::Config;
use crate::home::Home;

pub struct Egress {
    dir: PathBuf,
    config: Arc<Config>,
    /// Sockets of the proxies already running. A std Mutex: nothing async happens under it.
    running: Mutex<HashMap<GroupId, PathBuf>>,
}

impl Egress {
    pub fn new(home: &Home, config: Arc<Config>) -> Egress {
        Egress {
            dir: home.dir.join("run"),
            config,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The group's proxy socket, starting its proxy if needed. Needs a tokio runtime.
    pub fn socket_for(&self, group: &GroupId) -> anyhow::Result<PathBuf> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = running.get(group) {
            return Ok(path.clone());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join(format!("egress-{group}.sock"));
        let policy = Arc::new(self.config.egress_for(group));
        nanoclaw_egress::proxy::spawn(&path, group.to_string(), policy)
            .with_context(|| format!("starting the egress proxy on {}", path.display()))?;
        running.insert(group.clone(), path.clone());
        Ok(path)
    }
}
