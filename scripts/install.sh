#!/usr/bin/env bash
# Install what nanoclaw needs on a Debian/Ubuntu machine, build it, and start the agent.
#
#   ./scripts/install.sh            install, build, `nanoclaw init` (if needed), then `nanoclaw run`
#   NANOCLAW_NO_RUN=1 ./scripts/install.sh   the same without starting the daemon
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. System packages: bubblewrap is the sandbox.
./scripts/deps.sh

# 2. The build.
cargo build --release --locked -p nanoclaw
mkdir -p "$HOME/.local/bin"
install -m 0755 target/release/nanoclaw "$HOME/.local/bin/nanoclaw"
echo "installed $HOME/.local/bin/nanoclaw"

# 3. The data dir and config, kept if they exist.
"$HOME/.local/bin/nanoclaw" init

# 4. Start the agent (it says what to set if no model is configured).
if [ -z "${NANOCLAW_NO_RUN:-}" ]; then
  exec "$HOME/.local/bin/nanoclaw" run
fi
