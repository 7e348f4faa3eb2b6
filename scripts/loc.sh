#!/usr/bin/env bash
# Lines of Rust a reviewer must read: non-blank, non-comment lines outside tests, per crate and
# for the trust path (the three library crates plus the daemon modules a message and a tool call
# pass through). Test code is left out: `#[cfg(test)]` items to the end of their file, files
# named *_test.rs or tests.rs, and the tests/ and benches/ directories.
set -euo pipefail
cd "$(dirname "$0")/.."

# The daemon's modules on the trust path: a message's way in (accept, router, admission), the
# agent (turn, prompt, queue, the tool table and call path, approvals, the egress gate, memory),
# the host side of sandbox and egress (backend choice, proxies and credentials, the web tools'
# client), MCP tool pinning and the argument check before the gate, the audit writer and
# verifier, and the store (its tables, the secrets file). Outside it: the channel adapters, the
# CLI, the scheduler's runner and time math, the config, the model clients, the MCP transport
# (starting servers and carrying calls the gate passed), and the audit log's readers (show,
# export), which only read.
DAEMON_TRUST=(
  crates/nanoclaw/src/channels/mod.rs
  crates/nanoclaw/src/channels/router.rs
  crates/nanoclaw/src/channels/admission.rs
  crates/nanoclaw/src/agent
  crates/nanoclaw/src/sandbox
  crates/nanoclaw/src/mcp/pins.rs
  crates/nanoclaw/src/mcp/schema.rs
  crates/nanoclaw/src/audit/log.rs
  crates/nanoclaw/src/store/mod.rs
  crates/nanoclaw/src/store/inbox.rs
  crates/nanoclaw/src/store/turns.rs
  crates/nanoclaw/src/store/outbox.rs
  crates/nanoclaw/src/store/migrations.rs
  crates/nanoclaw/src/store/tasks.rs
  crates/nanoclaw/src/store/secrets.rs
)

count() {
  # Every .rs file under the arguments, minus test files; comments and blanks dropped, and a
  # file's #[cfg(test)] tail.
  find "$@" -name '*.rs' ! -name '*_test.rs' ! -name 'tests.rs' ! -path '*/tests/*' ! -path '*/benches/*' -print0 2>/dev/null |
    xargs -0 -r awk '
      FNR == 1 { in_test = 0; pending = 0 }
      # `#[cfg(test)] mod x;` leaves only that line out; `#[cfg(test)]` before anything else
      # starts the test tail of the file.
      pending && /^[[:space:]]*(pub )?mod [a-z_]+;/ { pending = 0; next }
      pending { in_test = 1 }
      /^[[:space:]]*#\[cfg\(test\)\]/ { pending = 1; next }
      in_test { next }
      /^[[:space:]]*$/ { next }
      /^[[:space:]]*\/\// { next }
      { n++ }
      END { print n + 0 }'
}

printf '%-28s %7s\n' "part" "lines"
total=0
for crate in crates/*/; do
  name=$(basename "$crate")
  n=$(count "$crate/src")
  total=$((total + n))
  printf '%-28s %7d\n' "$name" "$n"
done
printf '%-28s %7d\n' "all crates" "$total"
libs=$(count crates/nanoclaw-core/src crates/nanoclaw-sandbox/src crates/nanoclaw-egress/src)
daemon=$(count "${DAEMON_TRUST[@]}")
printf '%-28s %7d\n' "trust path: library crates" "$libs"
printf '%-28s %7d\n' "trust path: daemon modules" "$daemon"
printf '%-28s %7d\n' "trust path" "$((libs + daemon))"
