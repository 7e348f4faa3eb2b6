#!/usr/bin/env bash
# Run nanoclaw's whole test suite: format and lint checks, unit tests, and the end-to-end and
# sandbox tests that start real bwrap sandboxes and a scripted model server.
set -euo pipefail
cd "$(dirname "$0")/.."

# The sandbox and email tests need system packages; a fresh machine lacks them.
./scripts/deps.sh --test

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
