#!/usr/bin/env bash
# Install MCP servers from PyPI where every sandbox can run them: a venv of the system's
# /usr/bin/python3 under /usr/local/lib/nanoclaw-mcp (the sandboxes see /usr read-only, and
# never the host's home). Servers are installed here, never run on the host.
#   scripts/mcp-servers.sh [PACKAGE...]   default: the servers the test suite uses
# Then name one in nanoclaw.toml, e.g.
#   [mcp.servers.git]
#   command = ["/usr/local/lib/nanoclaw-mcp/bin/mcp-server-git", "--repository", "/workspace/repo"]
set -euo pipefail
venv=/usr/local/lib/nanoclaw-mcp
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(mcp-server-time==2026.10.19 mcp-server-git==2026.10.19 mcp-server-fetch==2026.10.24 mcp==2.3.0)
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if [ ! -x "$venv/bin/python3" ] || [ "$(readlink -f "$venv/bin/python3")" != "$(readlink -f /usr/bin/python3)" ]; then
  # A venv of another interpreter (pyenv, a home dir) would not run in a sandbox.
  $sudo_cmd rm -rf "$venv"
  $sudo_cmd /usr/bin/python3 -m venv "$venv" || {
    $sudo_cmd apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    $sudo_cmd /usr/bin/python3 -m venv "$venv"
  }
fi
$sudo_cmd "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
