//! `nanoclaw init`: the data dir (config, policy, API token, local CA) and the secrets key,
//! which lives outside it.

use std::io::Write;
use std::process::ExitCode;

use crate::config::home::Home;

pub fn init(home: &Home) -> anyhow::Result<ExitCode> {
    let mut done = home.init()?;
    if std::env::var_os(crate::store::secrets::KEY_ENV).is_none() {
        // A new key only while no secret is sealed: stored secrets need the key they were
        // sealed with, and a fresh one would silently split them from the next.
        let sealed = !crate::store::secrets::Secrets::load(home)?.is_empty();
        crate::store::secrets::SecretsKey::locate(home, !sealed)?;
        done.push(format!(
            "secrets key in {} (outside the data dir; back it up)",
            crate::store::secrets::key_file_path()?.display()
        ));
    }
    let mut out = std::io::stdout().lock();
    for line in done {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "next: store your model key with `nanoclaw secret set ANTHROPIC_API_KEY --host api.anthropic.com` (value on stdin), or configure [model] in the file above; then `nanoclaw run` or `nanoclaw chat`"
    )?;
    Ok(ExitCode::SUCCESS)
}
