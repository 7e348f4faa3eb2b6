#!/usr/bin/env bash
# Install the system packages nanoclaw needs (Debian/Ubuntu): bubblewrap, the sandbox.
set -euo pipefail
if ! command -v bwrap >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq bubblewrap
fi
