#!/usr/bin/env bash
# Run nanoclaw's whole test suite: format and lint checks, unit tests, and the end-to-end and
# sandbox tests that start real bwrap sandboxes and a scripted model server.
set -euo pipefail
cd "$(dirname "$0")/.."

# The sandbox tests need bubblewrap; install it if missing, as a fresh machine lacks it.
if ! command -v bwrap >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq bubblewrap
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
