//! The init: the first program to run inside every sandbox.
//!
//! It is the `nanoclaw` binary itself, mounted read-only at `/.nanoclaw/init` and started as
//! `init exec -- CMD...` (run a command) or `init file` (serve one file request on stdin).
//! This version runs the command as a child and passes its status out; the hardening steps
//! (no_new_privs, seccomp, Landlock, the proxy relay, reaping) are added here, before the
//! command starts, so that every backend gets them.
//!
//! It must never run on the host: the host starts it only through a backend.

use std::process::Command;

/// Exit status when the command could not be started (as a shell would report it).
const EXIT_CANNOT_RUN: i32 = 127;
/// Exit status for a malformed init invocation.
const EXIT_USAGE: i32 = 2;

/// Entry point; `args` are the arguments after the init's own name.
pub fn main(args: &[String]) -> i32 {
    match args.split_first() {
        Some((mode, rest)) if mode == "exec" => {
            let argv = match rest.split_first() {
                Some((dashdash, argv)) if dashdash == "--" && !argv.is_empty() => argv,
                _ => return usage(),
            };
            exec(argv)
        }
        Some((mode, rest)) if mode == "file" && rest.is_empty() => {
            crate::files::serve_one_request()
        }
        _ => usage(),
    }
}

fn usage() -> i32 {
    eprintln!("nanoclaw init: usage: init exec -- CMD [ARG...] | init file");
    EXIT_USAGE
}

fn exec(argv: &[String]) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match Command::new(&argv[0]).args(&argv[1..]).status() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("nanoclaw init: cannot run {:?}: {e}", argv[0]);
            EXIT_CANNOT_RUN
        }
    }
}
